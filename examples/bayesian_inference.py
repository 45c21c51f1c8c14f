"""Bayesian logistic regression on breast_cancer with a flow fitted by reverse KL.

The posterior over the 31 weights (30 standardised features and an
intercept) under a N(0, I) prior is known only up to its normalizer, the
evidence p(y | X). ``VariationalDensity`` fits an inverse autoregressive flow
to it without any posterior samples, then gives:

- posterior samples, hence a posterior predictive on a held-out split;
- the ELBO and an importance-sampling estimate of the log-evidence.

References for the checks printed alongside: the Laplace approximation
around the MAP (the MAP is scikit-learn's L2 logistic regression with C equal
to the prior variance and the intercept column penalised like the rest), and
importance sampling with the Laplace Gaussian as the proposal, an estimator
independent of the flow.

Run:  OMP_NUM_THREADS=1 python examples/bayesian_inference.py   (about 2-4 min on one core)
"""

import math

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from skflow import VariationalDensity

PRIOR_SCALE = 1.0

X, y = load_breast_cancer(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
scaler = StandardScaler().fit(X_train)
A_train = np.column_stack([np.ones(len(X_train)), scaler.transform(X_train)])  # intercept column first
A_test = np.column_stack([np.ones(len(X_test)), scaler.transform(X_test)])
n_features = A_train.shape[1]

A = torch.tensor(A_train, dtype=torch.float32)
signs = torch.tensor(2.0 * y_train - 1.0, dtype=torch.float32)  # labels as -1 / +1


def log_joint(w):
    """log p(y | X, w) + log N(w; 0, PRIOR_SCALE^2 I), for a batch of weight vectors w (n, 31)."""
    log_lik = -torch.nn.functional.softplus(-signs * (w @ A.T)).sum(dim=1)
    log_prior = -0.5 * ((w / PRIOR_SCALE) ** 2).sum(dim=1) - n_features * math.log(
        PRIOR_SCALE * math.sqrt(2 * math.pi)
    )
    return log_lik + log_prior


def laplace(log_joint_np):
    """MAP (scikit-learn), Laplace log-evidence, and the Laplace Gaussian (mean, covariance)."""
    lr = LogisticRegression(C=PRIOR_SCALE**2, fit_intercept=False, tol=1e-10, max_iter=10000)
    w_map = lr.fit(A_train, y_train).coef_[0]
    p = 1 / (1 + np.exp(-A_train @ w_map))
    hessian = A_train.T @ (A_train * (p * (1 - p))[:, None]) + np.eye(n_features) / PRIOR_SCALE**2
    log_z = (
        log_joint_np(w_map[None])[0]
        + 0.5 * n_features * math.log(2 * math.pi)
        - 0.5 * np.linalg.slogdet(hessian)[1]
    )
    return w_map, log_z, np.linalg.inv(hessian)


def log_joint_np(w):
    with torch.no_grad():
        return log_joint(torch.as_tensor(w, dtype=torch.float64).float()).double().numpy()


def laplace_importance_sampling(mean, cov, n_samples, seed):
    """log-evidence by importance sampling from the Laplace Gaussian (independent of the flow)."""
    rng = np.random.default_rng(seed)
    chol = np.linalg.cholesky(cov)
    eps = rng.standard_normal((n_samples, n_features))
    w = mean + eps @ chol.T
    log_q = -0.5 * (eps**2).sum(1) - np.log(np.diag(chol)).sum() - 0.5 * n_features * math.log(2 * math.pi)
    log_w = log_joint_np(w) - log_q
    top = log_w.max()
    ess = np.exp(2 * np.logaddexp.reduce(log_w) - np.logaddexp.reduce(2 * log_w)) / n_samples
    return top + math.log(np.mean(np.exp(log_w - top))), ess


def predictive_accuracy(weights):
    """Accuracy and mean log predictive density on the test split, averaging sigmoid over weights."""
    prob = (1 / (1 + np.exp(-A_test @ weights.T))).mean(axis=1)
    prob = np.clip(prob, 1e-12, 1 - 1e-12)
    log_pred = np.where(y_test == 1, np.log(prob), np.log(1 - prob)).mean()
    return np.mean((prob > 0.5) == y_test), log_pred


def main():
    torch.set_num_threads(1)
    vd = VariationalDensity(
        log_joint,
        n_features,
        flow="iaf",
        n_transforms=4,
        hidden_features=(64, 64),
        max_steps=3000,
        lr=3e-3,
        patience=300,
        random_state=0,
        device="cpu",
    ).fit()
    log_evidence, ess = vd.estimate_log_normalizer(20000, random_state=1, return_ess=True)
    samples = vd.sample(20000, random_state=2)

    w_map, laplace_log_z, laplace_cov = laplace(log_joint_np)
    laplace_is, laplace_ess = laplace_importance_sampling(w_map, laplace_cov, 20000, seed=3)

    flow_acc, flow_lpd = predictive_accuracy(samples[:4000])
    map_acc, map_lpd = predictive_accuracy(w_map[None])
    laplace_samples = np.random.default_rng(4).multivariate_normal(w_map, laplace_cov, 4000)
    laplace_acc, laplace_lpd = predictive_accuracy(laplace_samples)
    sk = LogisticRegression(max_iter=5000).fit(scaler.transform(X_train), y_train)
    sk_acc = sk.score(scaler.transform(X_test), y_test)

    print(
        f"breast_cancer: {len(X_train)} train / {len(X_test)} test rows, {n_features} weights, prior N(0, I)"
    )
    print(f"flow fitted in {vd.n_iter_} steps")
    print()
    print("| log-evidence estimate | value |")
    print("|---|---|")
    print(f"| flow (IAF) ELBO (a lower bound) | {vd.elbo_:.3f} |")
    print(f"| flow (IAF) importance sampling, 20000 draws (ESS {ess:.2f}) | {log_evidence:.3f} |")
    print(f"| Laplace approximation | {laplace_log_z:.3f} |")
    print(f"| Laplace-proposal importance sampling, 20000 draws (ESS {laplace_ess:.2f}) | {laplace_is:.3f} |")
    print()
    print("| predictive on the test split | accuracy | mean log predictive density |")
    print("|---|---|---|")
    print(f"| flow posterior predictive (4000 draws) | {flow_acc:.4f} | {flow_lpd:.4f} |")
    print(f"| Laplace posterior predictive (4000 draws) | {laplace_acc:.4f} | {laplace_lpd:.4f} |")
    print(f"| MAP plug-in | {map_acc:.4f} | {map_lpd:.4f} |")
    print(f"| sklearn LogisticRegression (default C=1) | {sk_acc:.4f} | - |")
    print()
    post_mean, post_sd = samples.mean(axis=0), samples.std(axis=0)
    print(f"max |posterior mean - MAP| / posterior sd: {np.max(np.abs(post_mean - w_map) / post_sd):.3f}")


if __name__ == "__main__":
    main()
