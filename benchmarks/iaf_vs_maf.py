"""IAF against MAF: sampling, scoring and training time as the dimension grows, and fit quality.

Both estimators stack the same MADE-parametrised affine layers (5 layers, hidden (128, 128), batch
256); MAF scores in one pass per layer and samples in D, IAF the reverse. Timings are the best of
three on one CPU thread, after a short fit on a synthetic correlated, skewed data set of the given
dimension. The quality part fits both to ADBench's magic.gamma (d=10, normal rows) with the same
hyperparameters and compares held-out log-likelihood and fit time.

    OMP_NUM_THREADS=1 python -m benchmarks.iaf_vs_maf
"""

import numpy as np

from benchmarks.harness import data, report, runner
from skflow import IAFDensity, MAFDensity

ESTIMATORS = {"MAF": MAFDensity, "IAF": IAFDensity}


def synthetic(n_samples, n_features, seed=0):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(n_features, n_features)) / np.sqrt(n_features)
    z = rng.normal(size=(n_samples, n_features))
    return np.tanh(z @ mixing) + 0.3 * z**2


def timings(n_features, n_train, n_rows):
    """Per estimator: seconds per training epoch, and to score / sample ``n_rows`` rows (best of 3)."""
    X, X_eval, out = synthetic(n_train, n_features), synthetic(n_rows, n_features, seed=1), {}
    for name, cls in ESTIMATORS.items():
        est = cls(max_epochs=2, batch_size=256, validation_fraction=0, device="cpu", random_state=0)
        fit, _ = runner.timed(est.fit, X)
        score = min(runner.timed(est.score_samples, X_eval)[0].wall for _ in range(3))
        out[name] = {"epoch": fit.wall / 2, "score": score,
                     "sample": min(runner.timed(est.sample, n_rows)[0].wall for _ in range(3))}
    return out


def quality(max_rows, epochs):
    X, y = data.adbench("magic")
    X = data.subsample(X[y == 0], max_rows)
    order = np.random.default_rng(0).permutation(len(X))
    train, test = X[order[: len(X) * 4 // 5]], X[order[len(X) * 4 // 5:]]
    rows = []
    for name, cls in ESTIMATORS.items():
        est = cls(max_epochs=epochs or 40, batch_size=256, patience=10, device="cpu", random_state=0)
        timer, _ = runner.timed(est.fit, train)
        rows.append([name, f"{est.score(test):.3f}", f"{timer.wall:.0f}", est.n_iter_])
    return rows, len(train), len(test)


def main(argv=None):
    p = runner.parser(__doc__)
    p.add_argument("--dims", type=int, nargs="+", default=[2, 8, 32, 64])
    p.add_argument("--rows", type=int, default=10_000, help="rows scored and sampled per timing")
    p.add_argument("--train-rows", type=int, default=2000)
    args = runner.parse(p, argv, __name__, tiny={"dims": [2, 4], "rows": 300, "train_rows": 300})
    MAFDensity(max_epochs=1, random_state=0, device="cpu").fit(synthetic(300, 2))  # warm-up, untimed
    rows = []
    for d in args.dims:
        m, i = (timings(d, args.train_rows, args.rows)[name] for name in ESTIMATORS)
        cells = [cell for k, digits, ratio in (("score", 3, 1), ("sample", 3, 2), ("epoch", 2, 1))
                 for cell in (f"{m[k]:.{digits}f}", f"{i[k]:.{digits}f}", f"{i[k] / m[k]:.{ratio}f}")]
        rows.append(report.show([d, *cells]))
    lines = [
        "## Time as the dimension grows", "",
        (f"Seconds to score / sample {args.rows} rows (best of 3) and per training epoch ({args.train_rows} "
         "rows). Ratio = IAF / MAF."), "",
        *report.table(["d", "MAF score", "IAF score", "score ratio", "MAF sample", "IAF sample",
                       "sample ratio", "MAF epoch", "IAF epoch", "epoch ratio"], rows),
        "", "## Fit quality on magic.gamma (d=10)", "",
    ]
    try:
        fits, n_train, n_test = quality(args.max_rows, args.epochs)
        lines += [(f"Normal rows only, {n_train} train / {n_test} test (seeded split); max_epochs="
                   f"{args.epochs or 40}, patience 10, 10% validation for early stopping."), "",
                  *report.table(["model", "test log-likelihood (nats)", "fit time (s)", "epochs"], fits)]
    except data.MissingData as error:
        lines.append(f"Skipped: {error}")
    report.publish(args, "IAF against MAF", __doc__, lines)


if __name__ == "__main__":
    runner.cli(main)
