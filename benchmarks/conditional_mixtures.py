"""Choosing FlowRegressor's default, continued: mixtures across flow families and feature noise.

Fits, on the five small tasks of ``conditional_density.py`` and on splits that are
not the reported ones (seeds 10 and 11 by default), five FlowRegressors (each a
mixture of 5 seeded flows): 64x64 MAFs and the default 2x16 NSFs, each with and
without ``feature_noise``. Every pair is also scored as the equal-weight mixture
of its two members (10 flows), ``log p = logsumexp(log p_a, log p_b) - log 2``,
exact per row. Prints one markdown table of mean held-out ``log p(y | x)``
(nats/row, mean over the seeds) and writes it to ``--out``.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=. python benchmarks/conditional_mixtures.py --seeds 10 11
"""

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
from scipy.special import logsumexp

from conditional_density import split_task
from skflow import FlowRegressor, MAFDensity

TASKS = ["engel", "penguins mass", "penguins bills", "cars", "diabetes"]


def _maf():
    return MAFDensity(hidden_features=(64, 64), base="normal")


MODELS = {
    "MAF x5": lambda s: FlowRegressor(_maf(), random_state=s),
    "MAF x5, feature_noise 0.1": lambda s: FlowRegressor(_maf(), feature_noise=0.1, random_state=s),
    "NSF 2x16 x5 (default)": lambda s: FlowRegressor(random_state=s),
    "NSF 2x16 x5, feature_noise 0.05": lambda s: FlowRegressor(feature_noise=0.05, random_state=s),
    "NSF 2x16 x5, feature_noise 0.1": lambda s: FlowRegressor(feature_noise=0.1, random_state=s),
}


def run(seeds):
    results = {}
    for task in TASKS:
        for seed in seeds:
            X_train, X_test, Y_train, Y_test, _ = split_task(task, seed)
            target = lambda Y: Y if Y.shape[1] > 1 else Y[:, 0]  # noqa: E731
            rows = {}
            for name, make in MODELS.items():
                rows[name] = make(seed).fit(X_train, target(Y_train)).score_samples(X_test, target(Y_test))
            for a, b in itertools.combinations(MODELS, 2):
                rows[f"{a} + {b}"] = logsumexp([rows[a], rows[b]], axis=0) - np.log(2)
            results[f"{task}|{seed}"] = {name: float(np.mean(v)) for name, v in rows.items()}
            print(task, seed, flush=True)
    return results


def table(results, seeds):
    names = list(next(iter(results.values())))
    lines = ["| model | " + " | ".join(TASKS) + " | mean of the 5 |", "|---" * (len(TASKS) + 2) + "|"]
    scored = []
    for name in names:
        per_task = [np.mean([results[f"{t}|{s}"][name] for s in seeds]) for t in TASKS]
        scored.append((np.mean(per_task), name, per_task))
    for mean, name, per_task in sorted(scored, reverse=True):
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in per_task) + f" | {mean:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[10, 11])
    parser.add_argument("--json", type=Path, default=Path("/tmp/skflow_conditional_mixtures.json"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/skflow_conditional_mixtures.md"))
    args = parser.parse_args()
    results = run(args.seeds)
    args.json.write_text(json.dumps(results))
    args.out.write_text(table(results, args.seeds) + "\n")
    print(table(results, args.seeds))
