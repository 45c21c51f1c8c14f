"""FlowRegressor.predict on 10,000 rows: the predictive distribution against the per-row draws it replaced.

Five-member FlowRegressors fitted to 300 rows of a heteroscedastic task; ``predict`` (best of three)
against per-row means of 1,000 ``sample_y`` draws, with the mean absolute difference of the two.

    OMP_NUM_THREADS=1 python -m benchmarks.predict_speed
"""

import hashlib

import numpy as np

from benchmarks.harness import report, runner
from skflow import FlowRegressor, MAFDensity, NSFDensity

MODELS = {
    "MAF(2, 16) x5": lambda epochs: MAFDensity(n_transforms=2, hidden_features=(16,), max_epochs=epochs),
    "NSF(2, 16x16) x5 (default)": lambda epochs: NSFDensity(n_transforms=2, hidden_features=(16, 16),
                                                          max_epochs=epochs),
}


def per_row_draws(regressor, X, n_draws=1000, seed=0):
    """The previous predict: each row's mean of ``n_draws`` draws, seeded by the row's own values."""
    means = np.empty(len(X))
    for i, row in enumerate(np.ascontiguousarray(X)):
        key = int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=4).digest(), "little")
        draws = regressor.sample_y(row[None], n_draws, random_state=np.random.RandomState([key, seed]))
        means[i] = draws.mean()
    return means


def main(argv=None):
    p = runner.parser(__doc__)
    p.add_argument("--rows", type=int, default=10_000)
    args = runner.parse(p, argv, __name__, tiny={"rows": 20})
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(300, 2))
    y = X[:, 0] ** 2 + (0.2 + 0.3 * np.abs(X[:, 0])) * rng.normal(size=300)
    X_new = rng.uniform(-2, 2, size=(args.rows, 2))
    rows = []
    for name, make in MODELS.items():
        regressor = FlowRegressor(make(args.epochs or 100), random_state=0).fit(X, y)
        times = []
        for _ in range(3):
            with runner.Timer() as timer:
                new = regressor.predict(X_new)
            times.append(timer.wall)
        with runner.Timer() as timer:
            old = per_row_draws(regressor, X_new)
        sd = np.sqrt(regressor.predict_proba(X_new[:2000]).var())
        rows.append([name, f"{timer.wall:.1f}", f"{min(times):.2f}", f"{timer.wall / min(times):.0f}x",
                     f"{np.mean(np.abs(old - new)):.4f}", f"{np.mean(sd) / np.sqrt(1000):.4f}"])
    report.publish(args, "FlowRegressor.predict: speed", __doc__, [
        f"## predict on {args.rows:,} rows (seconds, one thread)", "",
        *report.table(["model", "per-row draws", "predictive distribution (best of 3)", "speed-up",
                       "mean abs. difference", "draws' Monte Carlo s.e."], rows)])


if __name__ == "__main__":
    runner.cli(main)
