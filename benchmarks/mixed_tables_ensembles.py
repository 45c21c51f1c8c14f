"""Mixed tables: single flows against equal-weight mixtures of 5 seeded flows (not the reported splits).

For each table (raw variant of ``mixed_tables.py``) and seed, fits five seeded
``MAFDensity()`` and five seeded ``NSFDensity()`` at their defaults (member seeds
drawn from ``RandomState(seed)``) and scores the held-out rows by the benchmark's
measure (integer columns dequantized with the split's shared noise, averaged
over its draws). Reports, per family: member 0 alone, the mean over the five
single members, and the mixture ``logsumexp_k log p_k - log 5``. The mixture is
scored per dequantization draw average (``logsumexp`` of each member's
draw-averaged log-density), which by Jensen's inequality is at most the
mixture's own draw-averaged score: a conservative figure.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=. python benchmarks/mixed_tables_ensembles.py --tables cars penguins --seeds 10 11 12
"""

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.special import logsumexp

from mixed_tables import Split
from skflow import MAFDensity, NSFDensity

N_MEMBERS = 5


def run(tables, seeds):
    results = {}
    for name in tables:
        for seed in seeds:
            split = Split(name, "raw", seed)
            frames = split.test_frames()
            row = {}
            for label, density in [("MAF", MAFDensity), ("NSF", NSFDensity)]:
                member_seeds = np.random.RandomState(seed).randint(2**31 - 1, size=N_MEMBERS)
                scores = []
                for member_seed in member_seeds:
                    fitted = density(random_state=int(member_seed)).fit(split.train)
                    scores.append(fitted.score_samples(frames).reshape(split.n_draws, -1).mean(axis=0))
                scores = np.array(scores)
                row[f"{label} member 0"] = float(scores[0].mean())
                row[f"{label} single (mean of 5)"] = float(scores.mean())
                row[f"{label} x5 mixture"] = float(np.mean(logsumexp(scores, axis=0) - np.log(N_MEMBERS)))
            results[f"{name}|{seed}"] = row
            print(name, seed, {k: round(v, 2) for k, v in row.items()}, flush=True)
    return results


def table(results, tables, seeds):
    names = list(next(iter(results.values())))
    lines = ["| table | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for name in tables:
        cells = []
        for column in names:
            values = np.array([results[f"{name}|{seed}"][column] for seed in seeds])
            cells.append(f"{values.mean():.2f} ± {values.std():.2f}")
        lines.append(f"| {name} ({len(seeds)} seeds) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", nargs="+", default=["penguins", "cars", "anes96"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[10, 11, 12])
    parser.add_argument("--json", type=Path, default=Path("/tmp/skflow_mixed_ensembles.json"))
    args = parser.parse_args()
    results = run(args.tables, args.seeds)
    args.json.write_text(json.dumps(results))
    print(table(results, args.tables, args.seeds))
