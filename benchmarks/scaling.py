"""Default fit time and held-out log-likelihood against the number of rows (10k, 100k, 1M).

Data: ADBench shuttle (49,097 real rows, 9 integer-valued columns). A seeded
80/20 split keeps 9,820 rows for testing; the training sizes come from the
other 39,277 rows: 10k is a subsample, 100k and 1M replicate them (2.5x and
25.5x). Every column is dequantized once, ``x + u`` with ``u ~ U(-1/2, 1/2)``
drawn afresh for each replicated row and for the test rows, so the data are
continuous for every contender and nobody scores an integer grid.

Contenders (one process, run one after the other):

- ``skflow default``: ``MAFDensity()``, whose ``"auto"`` training settings
  adapt to the number of rows (:mod:`skflow.training.sizing`).
- ``skflow base=normal``: the same with a standard-normal base, i.e. the same
  architecture as zuko's MAF (5 affine MADE layers, hidden (128, 128)).
- ``zuko MAF + loop``: zuko's MAF trained by the hand-written loop of
  ``_tabular_data`` with the same resolved settings (batch, rate, epochs,
  patience, 10% validation split, early stopping).
- ``skflow fixed recipe``: ``MAFDensity`` with the small-data recipe that was
  the default before (batch 64, rate 1e-3, 300 epochs, patience 20), stopped
  by a wall-clock budget (``--budget``) when it would run longer.

Run (from the repository root)::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=. python benchmarks/scaling.py
"""

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tabular_data import DATA_DIR, ZukoMAF

from skflow import MAFDensity
from skflow.training import TimeLimit, training_settings

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = (10_000, 100_000, 1_000_000)
CONTENDERS = ("skflow default", "skflow base=normal", "zuko MAF + loop", "skflow fixed recipe")


def shuttle_rows(n, seed=0):
    """``(X_train, X_test)``: ``n`` dequantized training rows and the dequantized test rows."""
    path = DATA_DIR / "adbench" / "32_shuttle.npz"
    if not path.exists():
        raise SystemExit(f"{path} not found: the benchmark needs ../shared/data beside the repository root.")
    X = np.load(path)["X"].astype(np.float64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(X))
    n_test = int(round(0.2 * len(X)))
    test, pool = X[order[:n_test]], X[order[n_test:]]
    if n <= len(pool):
        train = pool[rng.choice(len(pool), n, replace=False)]
    else:
        train = pool[np.concatenate([rng.permutation(len(pool)) for _ in range(-(-n // len(pool)))])[:n]]
    noise = np.random.default_rng(seed + 1)
    return train + noise.uniform(-0.5, 0.5, train.shape), test + noise.uniform(-0.5, 0.5, test.shape)


def run(name, n, budget, seed=0):
    X_train, X_test = shuttle_rows(n, seed)
    settings = training_settings(int(round(0.9 * n)))
    stopped = None
    torch.manual_seed(seed)
    start = time.perf_counter()
    if name == "skflow default":
        model = MAFDensity(random_state=seed).fit(X_train)
    elif name == "skflow base=normal":
        model = MAFDensity(base="normal", random_state=seed).fit(X_train)
    elif name == "zuko MAF + loop":
        model = ZukoMAF(random_state=seed, **settings).fit(X_train)
    else:
        budget_callback = TimeLimit(budget)
        model = MAFDensity(
            batch_size=64,
            lr=1e-3,
            max_epochs=300,
            patience=20,
            callbacks=[budget_callback],
            random_state=seed,
        ).fit(X_train)
        stopped = budget_callback.stopped_
        settings = model.training_settings_
    fit_time = time.perf_counter() - start
    if hasattr(model, "training_settings_"):
        settings = model.training_settings_
    return {
        "contender": name,
        "n": n,
        "fit_s": fit_time,
        "held_out": float(np.mean(log_density := model.score_samples(X_test))),
        "held_out_median": float(np.median(log_density)),
        "held_out_min": float(np.min(log_density)),
        "epochs": int(model.n_iter_),
        "settings": settings,
        "stopped_by_budget": stopped,
    }


def _load(paths):
    records = {}
    for path in paths:
        if Path(path).exists():
            for record in json.loads(Path(path).read_text()):
                records.setdefault((record["contender"], record["n"]), record)
    return records


def write_report(records, commands, out):
    sizes = sorted({n for _, n in records})
    lines = [
        "# Scaling: default fit time and held-out log-likelihood against n",
        "",
        "Command(s) (repository root):",
        "",
        *[f"    {c}" for c in commands],
        "",
        "Data: ADBench shuttle (9 integer-valued columns), dequantized once with U(-1/2, 1/2) noise (fresh for",
        "every replicated row); 9,820 held-out real rows; training rows from the other 39,277 (10k: subsample;",
        "100k and 1M: replicated 2.5x and 25.5x). One seed (0). CPU, torch "
        f"{torch.__version__}, one thread per process, shared 2-core machine.",
        "",
        "| n | contender | batch | lr | max epochs | patience | epochs run | fit (s) | s per 1k rows | held-out "
        "mean log-lik. (nats) | median | worst row |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in sizes:
        for name in CONTENDERS:
            r = records.get((name, n))
            if r is None:
                continue
            s = r["settings"]
            epochs = f"{r['epochs']}" + (" (time budget)" if r.get("stopped_by_budget") else "")
            lines.append(
                f"| {n:,} | {name} | {s['batch_size']} | {s['lr']:g} | {s['max_epochs']} | {s['patience']} | "
                f"{epochs} | {r['fit_s']:.0f} | {1000 * r['fit_s'] / n:.2f} | {r['held_out']:.3f} | "
                f"{r['held_out_median']:.3f} | {r['held_out_min']:.4g} |"
            )
    Path(out).write_text("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    parser.add_argument("--budget", type=float, default=900.0, help="seconds for the fixed recipe")
    parser.add_argument("--cache", nargs="+", default=[str(RESULTS / "cache" / "scaling.json")])
    parser.add_argument("--command", nargs="*", default=None, help="commands to list in the report")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "scaling.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    records = _load(args.cache)
    if not args.report_only:
        for n in args.sizes:
            for name in args.contenders:
                if (name, n) in records:
                    continue
                if (
                    name == "skflow fixed recipe"
                    and training_settings(int(round(0.9 * n)))["batch_size"] == 64
                ):
                    continue  # the same settings as the default at this size
                record = run(name, n, args.budget)
                print(json.dumps(record), flush=True)
                records[(name, n)] = record
                Path(args.cache[0]).parent.mkdir(parents=True, exist_ok=True)
                Path(args.cache[0]).write_text(json.dumps(list(records.values()), indent=1))
    command = args.command or [
        "OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=. python " + shlex.join(sys.argv)
    ]
    write_report(records, command, args.out)


if __name__ == "__main__":
    main()
