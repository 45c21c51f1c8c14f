"""The one registry of peers: what a user would fit instead of skflow, each written once.

zuko's flows (:class:`ZukoFlow`, trained by :func:`hand_loop`), scikit-learn densities, outlier
detectors, mixed-table models and conditional densities. A missing optional package (zuko, pyod,
stepmix, ngboost) raises ``runner.Unavailable`` when the peer is fitted; the runner skips the peer.
"""

import copy
import math
import warnings

import numpy as np
import torch
from scipy.special import logsumexp
from scipy.stats import norm
from sklearn.base import BaseEstimator
from sklearn.ensemble import HistGradientBoostingRegressor, IsolationForest
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.neighbors import KernelDensity, LocalOutlierFactor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM

from skflow import MAFDensity

from .runner import need


def moments(A):
    """Column means and standard deviations (1 where a column is constant)."""
    scale = A.std(axis=0)
    return A.mean(axis=0), np.where(scale > 1e-12, scale, 1.0)


def hand_loop(module, epoch_losses, valid_loss=None, *, max_epochs, lr, weight_decay=0.0, patience=20):
    """The peers' training loop: AdamW on each loss of ``epoch_losses()``, gradient norm clipped to 10;
    stops ``patience`` epochs after the best ``valid_loss()`` (None: never), restores the best weights.
    Returns the number of epochs run."""
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay)
    best, best_state, waited, n_epochs = math.inf, None, 0, 0
    while n_epochs < max_epochs:
        module.train()
        for loss in epoch_losses():
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 10.0)
            optimizer.step()
        n_epochs += 1
        if valid_loss is None:
            continue
        module.eval()
        with torch.no_grad():
            loss = valid_loss()
        if loss < best:
            best, best_state, waited = loss, copy.deepcopy(module.state_dict()), 0
        elif (waited := waited + 1) >= patience:
            break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return n_epochs


def zuko_flow(flow, features, context=0, n_transforms=5, hidden_features=(128, 128), spline_bins=8):
    """zuko's MAF, or its NSF (MAF's layers with monotone splines, as skflow's NSFDensity)."""
    options = {"bins": spline_bins} if flow == "NSF" else {}
    return getattr(need("zuko").flows, flow)(features, context, transforms=n_transforms,
                                             hidden_features=tuple(hidden_features), **options)


class ZukoFlow(BaseEstimator):
    """zuko's MAF or NSF trained by :func:`hand_loop` with skflow's defaults (architecture, and training
    up to 20,000 rows) on standardised columns, a seeded validation split; scores in the units of X.
    ``fit(X, context)`` fits ``p(x | context)``. ``noise`` (per column; NaN: none) is the lower end ``a``
    of uniform noise ``U(a, a + 1)`` added to the training rows afresh every epoch."""

    def __init__(self, flow="MAF", n_transforms=5, hidden_features=(128, 128), spline_bins=8,
                 max_epochs=300, batch_size=64, lr=1e-3, weight_decay=1e-5, validation_fraction=0.1,
                 patience=20, noise=None, random_state=0, device="cpu"):
        self.flow, self.n_transforms, self.hidden_features = flow, n_transforms, hidden_features
        self.spline_bins, self.max_epochs, self.batch_size = spline_bins, max_epochs, batch_size
        self.lr, self.weight_decay, self.validation_fraction = lr, weight_decay, validation_fraction
        self.patience, self.noise, self.random_state, self.device = patience, noise, random_state, device

    def _jitter(self, X, rng):
        if self.noise is None:
            return X
        return X + ~np.isnan(self.noise) * (np.nan_to_num(self.noise) + rng.random(X.shape))

    def _tensor(self, A, mean, scale):
        return torch.as_tensor((np.asarray(A, float) - mean) / scale, dtype=torch.float32, device=self.device)

    def _log_prob(self, Z, C):
        return torch.cat([self.flow_(None if C is None else C[i:i + 8192]).log_prob(Z[i:i + 8192])
                          for i in range(0, len(Z), 8192)])

    def _context(self, context):
        return None if context is None else self._tensor(context, self.context_mean_, self.context_scale_)

    def fit(self, X, context=None):
        X, rng = np.asarray(X, dtype=np.float64), np.random.default_rng(self.random_state)
        torch.manual_seed(self.random_state)
        self.mean_, self.scale_ = moments(self._jitter(X, rng))
        if context is not None:
            self.context_mean_, self.context_scale_ = moments(np.asarray(context, dtype=np.float64))
        C, order = self._context(context), rng.permutation(len(X))
        n_valid = round(self.validation_fraction * len(X))
        valid, train = order[:n_valid], torch.as_tensor(order[n_valid:], device=self.device)
        Z, Z_valid = (self._tensor(A, self.mean_, self.scale_) for A in (X, self._jitter(X[valid], rng)))
        self.flow_ = zuko_flow(self.flow, X.shape[1], 0 if C is None else C.shape[1], self.n_transforms,
                               self.hidden_features, self.spline_bins).to(self.device)

        def epoch():
            Z_train = Z[train] if self.noise is None else self._tensor(
                self._jitter(X[train.cpu().numpy()], rng), self.mean_, self.scale_)
            for batch in torch.randperm(len(train), device=self.device).split(self.batch_size):
                context = None if C is None else C[train[batch]]
                yield -self.flow_(context).log_prob(Z_train[batch]).mean()

        def valid_loss():
            return -float(self._log_prob(Z_valid, None if C is None else C[valid]).mean())

        self.n_iter_ = hand_loop(self.flow_, epoch, valid_loss if n_valid else None, lr=self.lr,
                                 max_epochs=self.max_epochs, weight_decay=self.weight_decay,
                                 patience=self.patience)
        return self

    def score_samples(self, X, context=None):
        with torch.no_grad():
            log_prob = self._log_prob(self._tensor(X, self.mean_, self.scale_), self._context(context))
        return log_prob.double().cpu().numpy() - np.log(self.scale_).sum()

    def sample(self, n_samples, context=None, random_state=0):
        """``(n_samples, n_features)`` draws; given a context ``(n_samples, len(context), n_features)``."""
        torch.manual_seed(random_state)
        with torch.no_grad():
            Z = self.flow_(self._context(context)).sample((n_samples,))
        return Z.double().cpu().numpy() * self.scale_ + self.mean_


class MeanField(torch.nn.Module):
    """A diagonal Gaussian q, the classical variational baseline."""

    def __init__(self, n_features):
        super().__init__()
        self.loc = torch.nn.Parameter(torch.zeros(n_features))
        self.log_scale = torch.nn.Parameter(torch.zeros(n_features))

    def rsample_and_log_prob(self, n):
        eps = torch.randn(n, len(self.loc))
        log_q = (-0.5 * eps**2 - 0.5 * math.log(2 * math.pi)).sum(1) - self.log_scale.sum()
        return self.loc + torch.exp(self.log_scale) * eps, log_q


class ReverseKL:
    """q (``"mean-field"``, or ``"zuko NSF"``: 3 spline layers of 64x64) fitted to ``exp(log_prob)`` by
    :func:`hand_loop` on the negative ELBO, ``max_steps`` steps of ``batch_size`` draws."""

    def __init__(self, q, max_steps=800, lr=1e-2, batch_size=256):
        self.q, self.max_steps, self.lr, self.batch_size = q, max_steps, lr, batch_size

    def fit(self, log_prob, n_features):
        if self.q == "mean-field":
            self.module_ = MeanField(n_features)
            self.draw_ = self.module_.rsample_and_log_prob
        else:
            self.module_ = zuko_flow("NSF", n_features, n_transforms=3, hidden_features=(64, 64))
            self.draw_ = lambda n: self.module_().rsample_and_log_prob((n,))

        def step():
            x, log_q = self.draw_(self.batch_size)
            yield -(log_prob(x) - log_q).mean()

        self.log_prob = log_prob
        self.n_iter_ = hand_loop(self.module_, step, max_epochs=self.max_steps, lr=self.lr)
        return self

    def log_weights(self, n):
        """``(samples, log_prob(x) - log q(x))`` of ``n`` draws from q."""
        with torch.no_grad():
            draws = [self.draw_(min(8192, n - start)) for start in range(0, n, 8192)]
            return (np.concatenate([x.double().numpy() for x, _ in draws]),
                    np.concatenate([(self.log_prob(x) - log_q).double().numpy() for x, log_q in draws]))


class Standardized:
    """A scikit-learn density search fitted on standardised X; scores in the units of X."""

    def __init__(self, search):
        self.search = search

    def fit(self, X):
        self.mean_, self.scale_ = moments(X)
        self.params_ = self.search.fit((X - self.mean_) / self.scale_).best_params_
        return self

    def score_samples(self, X):
        log_density = self.search.best_estimator_.score_samples((X - self.mean_) / self.scale_)
        return log_density - np.log(self.scale_).sum()


def gmm_cv(seed):
    grid = {"n_components": [1, 2, 5, 10, 20, 40], "covariance_type": ["full", "diag", "tied", "spherical"]}
    return Standardized(GridSearchCV(GaussianMixture(max_iter=300, random_state=seed), grid, cv=3))


def kde_cv(seed):
    grid = {"bandwidth": np.logspace(-1.5, 0.3, 13)}
    return Standardized(GridSearchCV(KernelDensity(rtol=1e-6), grid, cv=3))


def bic_gmm(Z, seed, max_components=10, **params):
    """The GaussianMixture (full covariance unless ``params`` say) of 1..max_components picked by BIC."""
    fits = [GaussianMixture(k, random_state=seed, **params).fit(Z)
            for k in range(1, min(max_components, len(Z)) + 1)]
    return min(fits, key=lambda gmm: gmm.bic(Z))


class BICGaussianMixture(BaseEstimator):
    """A GaussianMixture of 1..8 components picked by BIC (the outlier peer)."""

    def __init__(self, random_state=0, max_components=8):
        self.random_state, self.max_components = random_state, max_components

    def fit(self, X, y=None):
        self.model_ = bic_gmm(X, self.random_state, max(1, min(self.max_components, len(X) // 10)),
                              reg_covar=1e-4)
        return self

    def score_samples(self, X):
        return self.model_.score_samples(X)


def dequantized_log_prob(score_samples, X, n_draws=4, seed=0):
    """``log mean_k p(x + u_k)`` over uniform ``u_k``: the bound of a discrete x under a density of x + u."""
    noise = np.random.default_rng(seed).random((n_draws, *X.shape))
    return logsumexp([score_samples(X + u) for u in noise], axis=0) - math.log(n_draws)


class PixelGMM:
    """A full-covariance GaussianMixture on flattened pixels dequantized ``x + u``, scored by the bound;
    ``n_components`` picked from ``grid`` on a validation tenth, then refitted on ``n_copies`` draws."""

    def __init__(self, n_bins, grid=(1, 5, 10, 20), n_copies=2, random_state=0):
        self.n_bins, self.grid, self.n_copies, self.random_state = n_bins, grid, n_copies, random_state

    def _fit(self, X, n_components):
        rng = np.random.default_rng(self.random_state)
        Y = np.concatenate([X + rng.random(X.shape) for _ in range(self.n_copies)])
        return GaussianMixture(n_components, reg_covar=1e-3, random_state=self.random_state).fit(Y)

    def fit(self, X):
        part, valid = train_test_split(X.reshape(len(X), -1), test_size=0.1, random_state=self.random_state)
        score = {k: dequantized_log_prob(self._fit(part, k).score_samples, valid).mean() for k in self.grid}
        self.gmm_ = self._fit(X.reshape(len(X), -1), max(score, key=score.get))
        return self

    def score_samples(self, X):
        return dequantized_log_prob(self.gmm_.score_samples, X.reshape(len(X), -1))

    def sample(self, n, random_state=0):
        self.gmm_.random_state = random_state
        return np.clip(np.floor(self.gmm_.sample(n)[0]), 0, self.n_bins - 1)


class PixelMAF:
    """skflow's MAFDensity on flattened pixels (it dequantizes integer columns by ``U(-1/2, 1/2)``)."""

    def __init__(self, n_bins, **params):
        self.n_bins, self.maf = n_bins, MAFDensity(**params)

    def get_params(self, deep=True):
        return self.maf.get_params(deep)

    def set_params(self, **params):
        self.maf.set_params(**params)
        return self

    def fit(self, X):
        self.n_iter_ = self.maf.fit(X.reshape(len(X), -1)).n_iter_
        return self

    def score_samples(self, X):  # the cell of x is [x - 1/2, x + 1/2)
        return dequantized_log_prob(lambda Y: self.maf.score_samples(Y - 0.5), X.reshape(len(X), -1))

    def sample(self, n, random_state=0):
        return np.clip(self.maf.sample(n, random_state=random_state), 0, self.n_bins - 1)


def pyod(name, scaled=False):
    model = getattr(need(f"pyod.models.{name.lower()}"), name)()
    return make_pipeline(StandardScaler(), model) if scaled else model


#: name -> factory(seed, protocol); distance and kernel methods see standardised X.
OUTLIER_PEERS = {
    "IForest": lambda seed, protocol: IsolationForest(random_state=seed),
    "LOF": lambda seed, protocol: make_pipeline(
        StandardScaler(), LocalOutlierFactor(novelty=protocol == "semi-supervised")),
    "OCSVM": lambda seed, protocol: make_pipeline(StandardScaler(), OneClassSVM()),
    "GMM-BIC": lambda seed, protocol: make_pipeline(StandardScaler(), BICGaussianMixture(random_state=seed)),
    "KDE": lambda seed, protocol: make_pipeline(StandardScaler(), KernelDensity(bandwidth="scott")),
    "ECOD": lambda seed, protocol: pyod("ECOD"),
    "COPOD": lambda seed, protocol: pyod("COPOD"),
    "KNN": lambda seed, protocol: pyod("KNN", scaled=True),
}


def normality(model, protocol):
    """Higher-is-more-normal scores of a fitted detector; in the unsupervised protocol (the scored rows
    are the training rows) neighbour methods use their leave-one-out training scores."""
    last = model[-1] if hasattr(model, "steps") else model
    if protocol == "unsupervised" and hasattr(last, "negative_outlier_factor_"):
        return lambda X: last.negative_outlier_factor_
    if protocol == "unsupervised" and hasattr(last, "decision_scores_"):
        return lambda X: -last.decision_scores_
    if hasattr(model, "score_samples"):  # scikit-learn's convention (skflow's detector too)
        return model.score_samples
    return lambda X: -model.decision_function(X)  # PyOD's: higher is more abnormal


# Mixed tables: fit(codes, C, cardinalities) on discrete codes (n, p) and continuous columns (n, k);
# score(codes, C_draws) is the per-row log-likelihood averaged over the draws C_draws (n_draws, n, k).
class StepMixPeer:
    """StepMix latent classes (1..10 by BIC): categorical codes, ``gaussian_diag`` standardised columns."""

    def __init__(self, seed, max_components=10):
        self.seed, self.max_components = seed, max_components

    def fit(self, codes, C, cardinalities):
        StepMix = need("stepmix.stepmix").StepMix
        self.mean_, self.scale_ = moments(C)
        descriptor = {"categorical": {"model": "categorical", "n_columns": codes.shape[1],
                                      "max_n_outcomes": max(cardinalities, default=0),
                                      "total_outcomes": sum(cardinalities)},
                      "continuous": {"model": "gaussian_diag", "n_columns": C.shape[1]}}
        descriptor = {k: v for k, v in descriptor.items() if v["n_columns"]}
        X, fits = self._design(codes, C), []
        for k in range(1, self.max_components + 1):
            model = StepMix(n_components=k, measurement=descriptor, n_steps=1, n_init=2, max_iter=500,
                            abs_tol=1e-6, random_state=self.seed, progress_bar=0, verbose=0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fits.append(model.fit(X))
        self.model_ = min(fits, key=lambda model: model.bic(X))
        if not np.isclose(self._per_row(X).mean(), self.model_.score(X)):
            raise RuntimeError("StepMix's per-row log-likelihood does not average to its score.")
        return self

    def _design(self, codes, C):
        return np.hstack([codes.astype(np.float64), (C - self.mean_) / self.scale_])

    def _per_row(self, X):  # logsumexp_k(log w_k + log p(x | k)) from the fitted measurement model
        return logsumexp(self.model_._mm.log_likelihood(X) + np.log(self.model_.weights_), axis=1)

    def score(self, codes, C_draws):
        draws = [self._per_row(self._design(codes, C)) for C in C_draws]
        return np.mean(draws, axis=0) - np.log(self.scale_).sum()

    def info(self):
        return f"k={self.model_.n_components}"


class ProductPeer:
    """Smoothed frequencies of the joint discrete cells times a BIC GaussianMixture of the standardised
    continuous columns, per cell with >= ``min_rows`` training rows, else pooled over all rows."""

    def __init__(self, seed, alpha=0.5, min_rows=30):
        self.seed, self.alpha, self.min_rows = seed, alpha, min_rows

    def fit(self, codes, C, cardinalities):
        self.mean_, self.scale_ = moments(C)
        cells, counts = np.unique(codes, axis=0, return_counts=True) if codes.shape[1] else ([], [])
        self.counts_ = {tuple(cell): n for cell, n in zip(cells, counts)}
        self.n_cells_, self.n_train_ = np.prod(cardinalities), len(codes)
        self.mixtures_, self.pooled_ = {}, None
        if C.shape[1]:
            Z = (C - self.mean_) / self.scale_
            self.pooled_ = bic_gmm(Z, self.seed, max_iter=300)
            self.mixtures_ = {cell: bic_gmm(Z[np.all(codes == cell, axis=1)], self.seed, max_iter=300)
                              for cell, n in self.counts_.items() if n >= self.min_rows}
        return self

    def score(self, codes, C_draws):
        log_p = np.zeros(len(codes))
        if codes.shape[1]:
            total = self.n_train_ + self.alpha * self.n_cells_
            log_p += np.log([(self.counts_.get(tuple(row), 0) + self.alpha) / total for row in codes])
        if self.pooled_ is not None:
            draws = []
            for Z in ((C - self.mean_) / self.scale_ for C in C_draws):
                part = self.pooled_.score_samples(Z)
                for cell, gmm in self.mixtures_.items():
                    if (rows := np.all(codes == cell, axis=1)).any():
                        part[rows] = gmm.score_samples(Z[rows])
                draws.append(part)
            log_p += np.mean(draws, axis=0) - np.log(self.scale_).sum()
        return log_p

    def info(self):
        ks = ",".join(str(g.n_components) for g in self.mixtures_.values()) or "-"
        pooled = "none" if self.pooled_ is None else self.pooled_.n_components
        return (f"{len(self.counts_)} cells seen, {len(self.mixtures_)} with own GMM (k={ks}), "
                f"pooled k={pooled}")


# Conditional densities: fit(X, Y) with Y (n, k); log_density(X, Y), interval(X, coverage), mean(X) and
# info(); a peer without one of them sets it to None.
class NormalPeer:
    """A peer predicting a Normal per row and target: ``normal(X)``, its ``(loc, scale)``, each (n, k)."""

    def log_density(self, X, Y):
        return norm.logpdf(Y, *self.normal(X)).sum(axis=1)

    def interval(self, X, coverage):
        (loc, scale), z = self.normal(X), norm.ppf(0.5 + coverage / 2)
        return np.stack([loc[:, 0] - z * scale[:, 0], loc[:, 0] + z * scale[:, 0]], axis=1)

    def mean(self, X):
        return self.normal(X)[0]


class NGBoostPeer(NormalPeer, BaseEstimator):
    """NGBRegressor(Dist=Normal), 1-D y. ``early_stopping``: the flows' protocol (a seeded 10% validation
    split, stop 50 iterations after the best, predict with the best iteration)."""

    def __init__(self, seed=0, early_stopping=False, n_estimators=500):
        self.seed, self.early_stopping, self.n_estimators = seed, early_stopping, n_estimators

    def fit(self, X, Y):
        ngboost = need("ngboost")
        if Y.shape[1] != 1:
            raise NotImplementedError("NGBoost's Normal models one target column.")
        self.model_ = ngboost.NGBRegressor(Dist=ngboost.distns.Normal, n_estimators=self.n_estimators,
                                           verbose=False, random_state=self.seed)
        self.max_iter_ = None
        if not self.early_stopping:
            self.model_.fit(X, Y[:, 0])
            return self
        order = np.random.default_rng(self.seed).permutation(len(X))
        valid, train = order[:round(0.1 * len(X))], order[round(0.1 * len(X)):]
        self.model_.fit(X[train], Y[train, 0], X_val=X[valid], Y_val=Y[valid, 0], early_stopping_rounds=50)
        self.max_iter_ = self.model_.best_val_loss_itr + 1
        return self

    def normal(self, X):
        params = self.model_.pred_dist(X, max_iter=self.max_iter_).params
        return params["loc"][:, None], params["scale"][:, None]

    def info(self):
        return f"{self.max_iter_ or self.model_.n_estimators} boosting iterations"


def log_normal(D, chol):
    """``log N(d; 0, L L^T)`` per row of D."""
    solved = np.linalg.solve(chol, D.T).T
    return (-0.5 * np.sum(solved**2, axis=1) - np.log(np.diag(chol)).sum()
            - 0.5 * D.shape[1] * math.log(2 * math.pi))


class ConditionalGMM:
    """A full-covariance GaussianMixture on standardised ``[x, y]`` (1..10 components by BIC), conditioned
    on x: ``p(y | x) = sum_k w_k(x) N(y; m_k(x), S_k)`` by the Gaussian conditioning formulas."""

    def __init__(self, seed):
        self.seed = seed

    def fit(self, X, Y):
        (self.x_mean_, self.x_scale_), (self.y_mean_, self.y_scale_) = moments(X), moments(Y)
        Z = np.hstack([(X - self.x_mean_) / self.x_scale_, (Y - self.y_mean_) / self.y_scale_])
        self.gmm_, p, self.parts_ = bic_gmm(Z, self.seed, max_iter=300), X.shape[1], []
        for mu, S in zip(self.gmm_.means_, self.gmm_.covariances_):
            gain = np.linalg.solve(S[:p, :p], S[:p, p:]).T  # S_yx S_xx^-1, (q, p)
            cov = S[p:, p:] - gain @ S[:p, p:]
            self.parts_.append((mu[:p], mu[p:], np.linalg.cholesky(S[:p, :p]), gain,
                                np.linalg.cholesky(0.5 * (cov + cov.T))))
        return self

    def _conditional(self, X):
        """Log-weights (n, K), means (n, K, q) and Cholesky factors of the components given x (std units)."""
        Zx = (X - self.x_mean_) / self.x_scale_
        log_w = np.stack([np.log(pi) + log_normal(Zx - mu_x, chol_x)
                          for (mu_x, _, chol_x, _, _), pi in zip(self.parts_, self.gmm_.weights_)], axis=1)
        means = np.stack([mu_y + (Zx - mu_x) @ gain.T for mu_x, mu_y, _, gain, _ in self.parts_], axis=1)
        return log_w - logsumexp(log_w, axis=1, keepdims=True), means, [part[4] for part in self.parts_]

    def log_density(self, X, Y):
        log_w, means, chols = self._conditional(X)
        Zy = (Y - self.y_mean_) / self.y_scale_
        parts = np.stack([log_normal(Zy - means[:, k], chol) for k, chol in enumerate(chols)], axis=1)
        return logsumexp(log_w + parts, axis=1) - np.log(self.y_scale_).sum()

    def interval(self, X, coverage):
        log_w, means, chols = self._conditional(X)
        w, m, s = np.exp(log_w), means[:, :, 0], np.array([c[0, 0] for c in chols])
        bounds = []
        for q in (0.5 - coverage / 2, 0.5 + coverage / 2):
            lo, hi = (m - 12 * s).min(axis=1), (m + 12 * s).max(axis=1)
            for _ in range(80):  # bisection on the mixture's CDF
                mid = 0.5 * (lo + hi)
                below = np.sum(w * norm.cdf((mid[:, None] - m) / s), axis=1) < q
                lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
            bounds.append(0.5 * (lo + hi))
        return np.stack(bounds, axis=1) * self.y_scale_[0] + self.y_mean_[0]

    def mean(self, X):
        log_w, means, _ = self._conditional(X)
        return np.einsum("nk,nkq->nq", np.exp(log_w), means) * self.y_scale_ + self.y_mean_

    def info(self):
        return f"{self.gmm_.n_components} components"


class GPPeer(NormalPeer):
    """GaussianProcessRegressor (constant * ARD RBF + white noise, normalize_y) on standardised X, for
    training sets of at most ``max_rows`` rows; several targets share the kernel."""

    def __init__(self, seed, max_rows=2000):
        self.seed, self.max_rows = seed, max_rows

    def fit(self, X, Y):
        if len(X) > self.max_rows:
            raise NotImplementedError(f"GP only for training sets of at most {self.max_rows} rows.")
        self.x_mean_, self.x_scale_ = moments(X)
        kernel = ConstantKernel(1.0, (1e-3, 1e3)) * RBF(np.ones(X.shape[1]), (1e-2, 1e3)) + WhiteKernel(
            0.1, (1e-6, 10))
        self.model_ = GaussianProcessRegressor(kernel, normalize_y=True, n_restarts_optimizer=2,
                                               random_state=self.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model_.fit((X - self.x_mean_) / self.x_scale_, Y)
        return self

    def normal(self, X):
        mean, std = self.model_.predict((X - self.x_mean_) / self.x_scale_, return_std=True)
        return mean.reshape(len(X), -1), std.reshape(len(X), -1)

    def info(self):
        return str(self.model_.kernel_)


class QuantileHGB:
    """Two HistGradientBoostingRegressor(loss="quantile") at the interval's ends: intervals only (1-D y)."""

    log_density = mean = None

    def __init__(self, seed, coverage=0.9):
        self.seed, self.coverage = seed, coverage

    def fit(self, X, Y):
        if Y.shape[1] != 1:
            raise NotImplementedError("Quantile HGB models one target column.")
        self.models_ = [HistGradientBoostingRegressor(loss="quantile", quantile=q, random_state=self.seed)
                        .fit(X, Y[:, 0]) for q in (0.5 - self.coverage / 2, 0.5 + self.coverage / 2)]
        return self

    def interval(self, X, coverage):
        return np.stack([m.predict(X) for m in self.models_], axis=1)

    def info(self):
        return "/".join(f"{m.n_iter_} iters" for m in self.models_)


class ZukoRegressor(ZukoFlow):
    """zuko's conditional NSF (5 layers, 64x64) by the hand loop: :class:`ZukoFlow` of y given x."""

    interval = None

    def __init__(self, seed=0, max_epochs=300):
        super().__init__("NSF", hidden_features=(64, 64), max_epochs=max_epochs, random_state=seed)
        self.seed = seed

    def fit(self, X, Y):
        return super().fit(Y, context=X)

    def log_density(self, X, Y):
        return self.score_samples(Y, context=X)

    def mean(self, X, n_draws=500):
        return self.sample(n_draws, context=X, random_state=self.random_state).mean(axis=0)

    def info(self):
        return f"{self.n_iter_} epochs"
