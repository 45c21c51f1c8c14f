"""skflow's main job: ``python -m skflow.demo``.

Fits the README's small-table default ``FlowMixture()`` (five seeded MAFs
stacked with a tuned Gaussian mixture and kernel density) and single
MADEDensity, MAFDensity and RealNVPDensity flows with their default settings
on data that ships with scikit-learn, prints held-out log-likelihoods beside a
tuned GaussianMixture, and writes a figure (``skflow_demo.png``).
"""

import argparse
import time

import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV, train_test_split

from . import FlowMixture, MADEDensity, MAFDensity, RealNVPDensity

DATASETS = {
    "iris": lambda: load_iris().data,
    "wine": lambda: load_wine().data,
    "diabetes": lambda: load_diabetes(scaled=False).data,
    "breast_cancer": lambda: load_breast_cancer().data,
}


def _models(random_state):
    return {
        "FlowMixture()": FlowMixture(random_state=random_state),
        "MAFDensity": MAFDensity(random_state=random_state),
        "RealNVPDensity": RealNVPDensity(random_state=random_state),
        "MADEDensity (MoG)": MADEDensity(n_components=5, random_state=random_state),
        "GaussianMixture (tuned)": GridSearchCV(
            GaussianMixture(random_state=random_state, reg_covar=1e-4, max_iter=500),
            {"n_components": [1, 2, 3, 5, 8], "covariance_type": ["full", "diag"]},
            cv=3,
        ),
    }


def _dequantized(X, random_state):
    """X with U(-1/2, 1/2) noise on its integer-valued columns, as skflow trains on."""
    integer = np.all(X == np.round(X), axis=0)
    noise = np.random.default_rng(random_state).uniform(-0.5, 0.5, X.shape)
    return X + noise * integer


def run_benchmark(random_state=0):
    """Held-out mean log-likelihood (nats per row, raw units) per dataset and model.

    The flows dequantize integer-valued columns themselves; the Gaussian
    mixture is fitted on the same uniformly dequantized training data, so both
    are densities of the same continuous variable, evaluated at the same
    held-out points.
    """
    results = {}
    for name, load in DATASETS.items():
        X_train, X_test = train_test_split(load(), test_size=0.25, random_state=random_state)
        for model_name, model in _models(random_state).items():
            start = time.perf_counter()
            is_flow = not isinstance(model, GridSearchCV)
            model.fit(X_train if is_flow else _dequantized(X_train, random_state))
            results[name, model_name] = (model.score(X_test), time.perf_counter() - start)
    return results


def _plot(results, path, random_state=0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(DATASETS)
    models = list(dict.fromkeys(m for _, m in results))
    fig, (ax_bar, ax_density) = plt.subplots(1, 2, figsize=(13, 4.8))
    width = 0.8 / len(models)
    gmm = np.array([results[d, "GaussianMixture (tuned)"][0] for d in datasets])
    for i, model in enumerate(models):
        gain = np.array([results[d, model][0] for d in datasets]) - gmm
        ax_bar.bar(np.arange(len(datasets)) + i * width, gain, width, label=model)
    ax_bar.axhline(0, color="k", lw=0.8)
    ax_bar.set_xticks(np.arange(len(datasets)) + 0.4 - width / 2, datasets)
    ax_bar.set_ylabel("held-out log-likelihood minus GaussianMixture's (nats/row)")
    ax_bar.legend(fontsize=8)
    ax_bar.set_title("Held-out log-likelihood gain over a tuned Gaussian mixture")

    data = load_breast_cancer()
    X = data.data[:, :2]
    maf = MAFDensity(random_state=random_state).fit(X)
    lo, hi = X.min(0) - X.std(0), X.max(0) + X.std(0)
    gx, gy = np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200)
    xx, yy = np.meshgrid(gx, gy)
    density = np.exp(maf.score_samples(np.c_[xx.ravel(), yy.ravel()])).reshape(xx.shape)
    ax_density.contourf(xx, yy, density, levels=20, cmap="viridis")
    ax_density.scatter(X[:, 0], X[:, 1], s=4, c="w", alpha=0.6, label="data")
    ax_density.set_xlabel(data.feature_names[0])
    ax_density.set_ylabel(data.feature_names[1])
    ax_density.set_title("MAFDensity on two breast_cancer features")
    ax_density.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="skflow_demo.png", help="where to write the figure")
    parser.add_argument("--random-state", type=int, default=0)
    args = parser.parse_args(argv)

    results = run_benchmark(args.random_state)
    models = list(dict.fromkeys(m for _, m in results))
    print("Held-out mean log-likelihood (nats per row, units of the raw data; higher is better;")
    print("integer-valued columns uniformly dequantized for every model; fit time in brackets)")
    print(f"{'dataset':<15}" + "".join(f"{m:>26}" for m in models))
    for name in DATASETS:
        row = "".join(f"{results[name, m][0]:>18.2f} ({results[name, m][1]:4.0f}s)" for m in models)
        print(f"{name:<15}{row}")
    try:
        _plot(results, args.output, args.random_state)
        print(f"figure written to {args.output}")
    except ImportError:
        print("matplotlib is not installed: no figure (pip install matplotlib)")


if __name__ == "__main__":
    main()
