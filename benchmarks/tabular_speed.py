"""Fit, score and sample speed of MAFDensity against zuko's MAF + a hand loop.

Equal architecture (skflow's defaults: 5 transforms, hidden (128, 128)),
equal epochs (fixed: ``validation_fraction=0``, no early stopping), batch
size, learning rate and optimizer. The contenders run alternately
(A, B, C, A, B, C, ...) so that load from other processes hits them alike;
medians and ratios are reported. A third contender, skflow's own flow module
trained by the same hand-written loop as zuko, splits skflow's overhead into
the training loop (skorch) and the module.

Run (from the repository root)::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=. python benchmarks/tabular_speed.py
"""

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _tabular_data import ZukoMAF, split_set
from skflow.tabular import MAFDensity

RESULTS = Path(__file__).resolve().parent / "results"


class SkflowModuleByHand(ZukoMAF):
    """skflow's MAF module (as MAFDensity builds it) in ZukoMAF's hand loop."""

    def fit(self, X):
        torch.manual_seed(self.random_state)
        self.mean_, self.scale_ = X.mean(axis=0), X.std(axis=0)
        Z = torch.as_tensor((X - self.mean_) / self.scale_, dtype=torch.float32)
        estimator = MAFDensity(
            n_transforms=self.n_transforms, hidden_features=self.hidden_features, base="normal"
        )
        self.module_ = estimator._build_flow(X.shape[1], 0)
        optimizer = torch.optim.AdamW(self.module_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        self.module_.train()
        for _ in range(self.max_epochs):
            for batch in Z[torch.randperm(len(Z))].split(self.batch_size):
                loss = -self.module_.log_prob(batch).mean()
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.module_.parameters(), 10.0)
                optimizer.step()
        return self


def _contenders(args):
    common = dict(
        n_transforms=5,
        hidden_features=(128, 128),
        batch_size=args.batch_size,
        lr=1e-3,
        weight_decay=1e-5,
        validation_fraction=0.0,
    )
    # zuko's MAF has a standard-normal base: skflow's MAF gets the same (its default is a MADE mixture)
    skflow = dict(common, base="normal", device="cpu")
    return {
        "skflow MAFDensity": lambda seed, epochs: MAFDensity(**skflow, max_epochs=epochs, random_state=seed),
        "skflow MAFDensity, compile=True": lambda seed, epochs: MAFDensity(
            **skflow, compile=True, max_epochs=epochs, random_state=seed
        ),
        "zuko MAF + loop": lambda seed, epochs: ZukoMAF(**common, max_epochs=epochs, random_state=seed),
        "skflow module + loop": lambda seed, epochs: SkflowModuleByHand(
            **common, max_epochs=epochs, random_state=seed
        ),
    }


def _cumulative(stats, file_part, name):
    """Summed cumulative time of functions ``name`` in files containing ``file_part``."""
    return sum(v[3] for (file, _, func), v in stats.items() if file_part in file and func == name)


def profile_fit(X, epochs, batch_size):
    """cProfile one MAFDensity fit; seconds per part of the training step."""
    import cProfile
    import pstats

    model = MAFDensity(
        max_epochs=epochs,
        batch_size=batch_size,
        validation_fraction=0.0,
        device="cpu",
        base="normal",
        random_state=0,
    )
    profiler = cProfile.Profile()
    profiler.enable()
    model.fit(X)
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    total = _cumulative(stats, "skflow/base.py", "fit")
    closure = _cumulative(stats, "skorch/net.py", "step_fn")
    parts = {
        "forward (flow log_prob, loss)": _cumulative(stats, "skflow/training/net.py", "infer"),
        "backward": _cumulative(stats, "torch/_tensor.py", "backward"),
        "AdamW step (without the closure)": _cumulative(stats, "torch/optim/adam.py", "step") - closure,
        "callbacks: DivergenceGuard.on_grad_computed (clipping + finiteness check)": _cumulative(
            stats, "skflow/training/callbacks.py", "on_grad_computed"
        ),
        "callbacks: DivergenceGuard.on_batch_end (loss check)": _cumulative(
            stats, "skflow/training/callbacks.py", "on_batch_end"
        ),
        "callbacks: all notify() calls": _cumulative(stats, "skorch/net.py", "notify"),
        "zero_grad": _cumulative(stats, "skorch/net.py", "_zero_grad_optimizer"),
        "history.record_batch": _cumulative(stats, "skorch/history.py", "record_batch"),
        "batch iterator": _cumulative(stats, "skflow/training/net.py", "__iter__"),
    }
    return total, parts


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="magic")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--score-rows", type=int, default=200_000)
    parser.add_argument("--sample-rows", type=int, default=20_000)
    parser.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Add a cProfile breakdown of one MAFDensity fit.",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "tabular_speed.md")
    args = parser.parse_args(argv)

    X_train, X_test = split_set(args.set, 0)
    X_score = np.resize(X_test, (args.score_rows, X_test.shape[1]))
    contenders = _contenders(args)
    warm_up = {}
    for name, make in contenders.items():  # untimed warm-up: first-call costs and torch.compile's compilation
        warm_up[name] = _timed(lambda: make(0, 1).fit(X_train))[0]
    fit_times = {k: [] for k in contenders}
    fitted = {}
    for repeat in range(args.repeats):
        for name, make in contenders.items():
            seconds, model = _timed(lambda: make(repeat, args.epochs).fit(X_train))
            fit_times[name].append(seconds)
            fitted[name] = model
            print(f"fit {name} repeat {repeat}: {seconds:.2f} s", flush=True)

    scorers = {"skflow MAFDensity": fitted["skflow MAFDensity"], "zuko MAF + loop": fitted["zuko MAF + loop"]}
    score_times = {k: [] for k in scorers}
    sample_times = {k: [] for k in scorers}
    for repeat in range(args.repeats):
        for name, model in scorers.items():
            score_times[name].append(_timed(lambda: model.score_samples(X_score))[0])
            sample_times[name].append(_timed(lambda: model.sample(args.sample_rows, random_state=repeat))[0])

    fit_med = {k: float(np.median(v)) for k, v in fit_times.items()}
    score_med = {k: float(np.median(v)) for k, v in score_times.items()}
    sample_med = {k: float(np.median(v)) for k, v in sample_times.items()}
    sk, zk, hand = "skflow MAFDensity", "zuko MAF + loop", "skflow module + loop"
    compiled = "skflow MAFDensity, compile=True"
    n_train = len(X_train)
    command = (
        "OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=. python benchmarks/tabular_speed.py "
        + shlex.join(sys.argv[1:] if argv is None else argv)
    )
    lines = [
        "# Tabular speed: skflow MAFDensity vs zuko MAF + hand-written loop",
        "",
        "Command (repository root):",
        "",
        f"    {command.strip()}",
        "",
        f"Data: {args.set}, training split of seed 0 ({n_train} x {X_train.shape[1]}). Architecture of the "
        "default MAFDensity for all (5 MADE affine layers, hidden (128, 128)) with zuko's standard-normal base "
        '(`base="normal"`; MAFDensity\'s default base is a MADE mixture, which the runs before 2026-11-30 '
        "left in, so those ratios compared a larger skflow model); "
        f"{args.epochs} epochs, no validation split or early stopping, batch {args.batch_size}, AdamW lr 1e-3, "
        "weight decay 1e-5, gradient norm clipped to 10. CPU, torch "
        f"{torch.__version__}, OMP_NUM_THREADS=1 (the machine has 2 cores shared with other jobs). "
        f"Contenders alternated in one process, {args.repeats} repeats; medians (min-max).",
        "",
        "## Fit",
        "",
        "| contender | median fit (s) | min-max (s) | per epoch (ms) | ratio to zuko | warm-up fit (s) |",
        "|---|---|---|---|---|---|",
    ]
    for name in contenders:
        v = fit_times[name]
        lines.append(
            f"| {name} | {fit_med[name]:.2f} | {min(v):.2f}-{max(v):.2f} | "
            f"{1000 * fit_med[name] / args.epochs:.0f} | {fit_med[name] / fit_med[zk]:.3f} | "
            f"{warm_up[name]:.1f} |"
        )
    lines += [
        "",
        "The warm-up fit (one epoch on the training rows, untimed in the medians) carries first-call costs and, for "
        "`compile=True`, torch.compile's compilation; later fits in the process reuse the compiled code.",
        "",
        f"Fit-time ratio skflow / zuko: **{fit_med[sk] / fit_med[zk]:.3f}** eager, "
        f"**{fit_med[compiled] / fit_med[zk]:.3f}** with `compile=True` (target <= 0.8). "
        f"skorch loop overhead (MAFDensity / same module by hand): {fit_med[sk] / fit_med[hand]:.3f}; "
        f"module cost (skflow module / zuko module, same loop): {fit_med[hand] / fit_med[zk]:.3f}.",
        "",
        "## Score and sample",
        "",
        "| contender | score_samples of {0} rows (s) | rows/s | sample {1} rows (s) | rows/s |".format(
            args.score_rows, args.sample_rows
        ),
        "|---|---|---|---|---|",
    ]
    for name in scorers:
        lines.append(
            f"| {name} | {score_med[name]:.3f} | {args.score_rows / score_med[name]:,.0f} | "
            f"{sample_med[name]:.3f} | {args.sample_rows / sample_med[name]:,.0f} |"
        )
    lines += [
        "",
        f"Time ratios skflow / zuko: score {score_med[sk] / score_med[zk]:.3f}, "
        f"sample {sample_med[sk] / sample_med[zk]:.3f} (below 1: skflow faster).",
        "",
    ]
    if args.profile:
        total, parts = profile_fit(X_train, args.epochs, args.batch_size)
        lines += [
            "## Where MAFDensity's fit time goes (cProfile, one extra fit)",
            "",
            f"Total under the profiler: {total:.2f} s (profiling inflates Python-heavy parts). "
            "The notify() row contains the callback rows above it.",
            "",
            "| part | s | share |",
            "|---|---|---|",
            *[f"| {k} | {v:.2f} | {100 * v / total:.1f} % |" for k, v in parts.items()],
            "",
        ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(args.out.read_text())


if __name__ == "__main__":
    main()
