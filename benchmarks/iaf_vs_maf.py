"""IAF against MAF: sampling, scoring and training time as the dimension grows, and fit quality.

Both estimators stack the same MADE-parametrised affine layers (5 layers,
hidden (128, 128)); MAF scores in one pass per layer and samples in D, IAF
the reverse. Timings are the best of three on one CPU thread, after a short
fit on a synthetic correlated, skewed data set of the given dimension.

The quality part fits both to a real data set (ADBench's magic.gamma, d=10,
normal rows) with the same hyperparameters and compares held-out
log-likelihood and total fit time.

Run:  python benchmarks/iaf_vs_maf.py
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch

from skflow import IAFDensity
from skflow.tabular import MAFDensity

RESULTS = Path(__file__).resolve().parent / "results"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DIMS = (2, 8, 32, 64)
N_ROWS = 10000  # rows scored / sampled per timing


def _synthetic(n_samples, n_features, seed=0):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(n_features, n_features)) / np.sqrt(n_features)
    z = rng.normal(size=(n_samples, n_features))
    return np.tanh(z @ mixing) + 0.3 * z**2


def _best_of(fn, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _timings(n_features):
    X = _synthetic(2000, n_features)
    X_eval = _synthetic(N_ROWS, n_features, seed=1)
    out = {}
    for name, cls in [("MAF", MAFDensity), ("IAF", IAFDensity)]:
        est = cls(max_epochs=2, batch_size=256, validation_fraction=0, device="cpu", random_state=0)
        start = time.perf_counter()
        est.fit(X)
        out[name] = {
            "epoch": (time.perf_counter() - start) / 2,
            "score": _best_of(lambda est=est: est.score_samples(X_eval)),
            "sample": _best_of(lambda est=est: est.sample(N_ROWS, random_state=0)),
        }
    return out


def _quality():
    path = DATA / "adbench" / "22_magic.gamma.npz"
    if not path.exists():
        return None
    data = np.load(path)
    X = data["X"][data["y"] == 0]
    order = np.random.default_rng(0).permutation(len(X))
    train, test = X[order[: len(X) * 4 // 5]], X[order[len(X) * 4 // 5 :]]
    rows = {}
    for name, cls in [("MAF", MAFDensity), ("IAF", IAFDensity)]:
        est = cls(max_epochs=40, batch_size=256, patience=10, device="cpu", random_state=0)
        start = time.perf_counter()
        est.fit(train)
        rows[name] = (est.score(test), time.perf_counter() - start, est.n_iter_)
    return rows, len(train), len(test)


def main():
    torch.set_num_threads(1)
    MAFDensity(max_epochs=1, random_state=0, device="cpu").fit(_synthetic(300, 2))  # warm-up, untimed
    lines = [
        "# IAF against MAF",
        "",
        "Command: `OMP_NUM_THREADS=1 python benchmarks/iaf_vs_maf.py` (CPU, one thread; "
        "5 layers, hidden (128, 128), batch 256).",
        "",
        "## Time as the dimension grows",
        "",
        f"Seconds to score / sample {N_ROWS} rows (best of 3) and per training epoch (2000 rows). "
        "Ratio = IAF / MAF.",
        "",
        "| d | MAF score | IAF score | score ratio | MAF sample | IAF sample | sample ratio "
        "| MAF epoch | IAF epoch | epoch ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d in DIMS:
        t = _timings(d)
        m, i = t["MAF"], t["IAF"]
        line = (
            f"| {d} | {m['score']:.3f} | {i['score']:.3f} | {i['score'] / m['score']:.1f} | {m['sample']:.3f} "
            f"| {i['sample']:.3f} | {i['sample'] / m['sample']:.2f} | {m['epoch']:.2f} | {i['epoch']:.2f} "
            f"| {i['epoch'] / m['epoch']:.1f} |"
        )
        print(line, flush=True)
        lines.append(line)
    quality = _quality()
    lines += ["", "## Fit quality on magic.gamma (d=10)", ""]
    if quality is None:
        lines.append("Skipped: ../shared/data/adbench/22_magic.gamma.npz not found.")
    else:
        rows, n_train, n_test = quality
        lines += [
            f"Normal rows only, {n_train} train / {n_test} test (seeded split); max_epochs=40, patience 10, "
            "10% validation for early stopping.",
            "",
            "| model | test log-likelihood (nats) | fit time (s) | epochs |",
            "|---|---|---|---|",
        ]
        for name, (ll, seconds, epochs) in rows.items():
            lines.append(f"| {name} | {ll:.3f} | {seconds:.0f} | {epochs} |")
    lines.append("")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "iaf_vs_maf.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
