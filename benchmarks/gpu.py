"""GPU benchmark: MAF fit throughput against zuko, and TarFlow and Glow on MNIST at a fixed time budget.

Made to finish in under 8 minutes on one GPU (defaults: 3 x 3 MAF fits of
a few seconds, then two image models of ``--budget`` seconds each, 150 s):

1. **MAF throughput, batch 4096.** Rows of ADBench magic replicated to
   ``--maf-rows`` rows (standardised, float32, on the device), the same
   architecture for all (5 affine MADE layers, hidden (128, 128), normal
   base), ``--maf-epochs`` epochs without validation: skflow's
   ``MAFDensity(base="normal")`` (float32; with ``precision="bfloat16"``;
   with ``compile=True``) against zuko's MAF trained by a hand-written loop
   (AdamW, clipping to 10). Contenders alternate, ``--repeats`` times;
   median rows per second and the ratio of fit times.
2. **MNIST at a fixed budget.** TarFlow and Glow trained for ``--budget``
   wall seconds each (``skflow.training.TimeLimit``; cosine schedules are
   stretched over the epochs that fit in the budget, estimated from the
   first epoch) on 8000 of the 10k MNIST test images of ``../shared/data``
   (the split of ``image_density.py``), bits/dim on the other 2000, and a
   sample grid.

On a machine without a GPU it runs on the CPU; ``--tiny`` shrinks every
part so that the whole script takes about a minute there (what the test
suite runs). Run (from the repository root)::

    PYTHONPATH=. python benchmarks/gpu.py            # on a GPU machine
    PYTHONPATH=. python benchmarks/gpu.py --tiny --device cpu --out /tmp/gpu.md
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
from _tabular_data import fit_with_early_stopping, load_set
from image_density import mnist_split

from skflow import GlowDensity, MAFDensity
from skflow.metrics import bits_per_dim
from skflow.tarflow import TarFlowDensity
from skflow.training import TimeLimit

RESULTS = Path(__file__).resolve().parent / "results"


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def maf_data(n_rows):
    X = load_set("magic")
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    reps = -(-n_rows // len(X))
    return np.tile(X, (reps, 1))[:n_rows].astype(np.float32)


def zuko_fit(X, device, epochs, batch_size, seed=0):
    """zuko's MAF (the same architecture) by a hand-written loop; the data already on the device."""
    import zuko

    torch.manual_seed(seed)
    flow = zuko.flows.MAF(X.shape[1], transforms=5, hidden_features=(128, 128)).to(device)
    Z = torch.as_tensor(X, device=device)
    epoch = lambda: (
        -flow().log_prob(b).mean() for b in Z[torch.randperm(len(Z), device=device)].split(batch_size)
    )
    fit_with_early_stopping(flow, epoch, None, max_epochs=epochs, lr=1e-3, weight_decay=1e-5, patience=1)
    return flow


def maf_throughput(args, device):
    X = maf_data(args.maf_rows)
    common = dict(
        base="normal",
        batch_size=4096,
        lr=1e-3,
        max_epochs=args.maf_epochs,
        validation_fraction=0.0,
        device=device,
    )
    contenders = {
        "zuko MAF + loop": lambda: zuko_fit(X, device, args.maf_epochs, 4096),
        "skflow MAFDensity": lambda: MAFDensity(**common, random_state=0).fit(X),
        "skflow MAFDensity, bf16": lambda: MAFDensity(**common, precision="bfloat16", random_state=0).fit(X),
        "skflow MAFDensity, compile": lambda: MAFDensity(**common, compile=True, random_state=0).fit(X),
    }
    for make in contenders.values():  # warm-up: CUDA context, kernels, the compile cache
        make()
    times = {name: [] for name in contenders}
    for _ in range(args.repeats):
        for name, make in contenders.items():
            _sync(device)
            start = time.perf_counter()
            make()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    rows_seen = args.maf_rows * args.maf_epochs
    zuko = np.median(times["zuko MAF + loop"])
    lines = [
        f"## MAF fit throughput, batch 4096 ({args.maf_rows:,} rows x {X.shape[1]} features, "
        f"{args.maf_epochs} epochs, {args.repeats} alternating repeats after a warm-up)",
        "",
        "| contender | median fit (s) | rows/s | fit time / zuko's |",
        "|---|---|---|---|",
    ]
    for name, values in times.items():
        median = float(np.median(values))
        lines.append(f"| {name} | {median:.2f} | {rows_seen / median:,.0f} | {median / zuko:.3f} |")
    return lines, {name: [float(v) for v in values] for name, values in times.items()}


def image_models(args, device):
    epochs = 10_000  # the time limit ends training
    if args.tiny:
        tarflow = dict(patch_size=4, channels=16, n_blocks=2, n_layers=1, n_heads=2, batch_size=64)
        glow = dict(n_levels=2, n_steps=1, hidden_channels=8, n_blocks=1, batch_size=64)
    else:
        tarflow = dict(patch_size=2, channels=128, n_blocks=8, n_layers=2, n_heads=4, batch_size=256)
        glow = dict(n_levels=3, n_steps=8, hidden_channels=128, n_blocks=1, batch_size=256)
    common = dict(n_bins=256, max_epochs=epochs, patience=5, random_state=0, device=device)
    return {
        "TarFlow": lambda limit: TarFlowDensity(
            **tarflow, mixing=True, logit_alpha=0.05, lr=1e-3, **common, callbacks=[limit]
        ),
        "Glow": lambda limit: GlowDensity(**glow, lr=1e-3, **common, callbacks=[limit]),
    }


def mnist_budget(args, device):
    X_train, X_test, _, _ = mnist_split()
    if args.tiny:
        X_train, X_test = X_train[:400], X_test[:100]
    lines = [
        f"## MNIST at a fixed budget of {args.budget:g} s of training per model",
        "",
        f"{len(X_train)} training images, {len(X_test)} held out (bits/dim of the 256-level images).",
        "",
        "| model | epochs in budget | fit incl. scoring setup (s) | test bits/dim | samples (s, 64 images) |",
        "|---|---|---|---|---|",
    ]
    grids = {}
    for name, make in image_models(args, device).items():
        limit = TimeLimit(args.budget)
        model = make(limit)
        start = time.perf_counter()
        model.fit(X_train)
        fit_time = time.perf_counter() - start
        bits = bits_per_dim(model, X_test)
        start = time.perf_counter()
        grids[name] = np.asarray(model.sample(64, random_state=0)).reshape(64, 28, 28)
        sample_time = time.perf_counter() - start
        lines.append(f"| {name} | {model.n_iter_} | {fit_time:.0f} | {bits:.3f} | {sample_time:.1f} |")
        print(lines[-1], flush=True)
    return lines, grids


def save_grids(grids, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(grids), figsize=(4 * len(grids), 4.3))
    for ax, (name, images) in zip(np.atleast_1d(axes), grids.items()):
        rows = [np.concatenate(list(images[i : i + 8]), axis=1) for i in range(0, 64, 8)]
        ax.imshow(np.concatenate(rows, axis=0), cmap="gray", vmin=0, vmax=255)
        ax.set_title(name)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--maf-rows", type=int, default=400_000)
    parser.add_argument("--maf-epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget", type=float, default=150.0, help="training seconds per MNIST model")
    parser.add_argument("--tiny", action="store_true", help="a one-minute CPU check of the script")
    parser.add_argument("--out", default=str(RESULTS / "gpu.md"))
    args = parser.parse_args(argv)
    if args.tiny:
        args.maf_rows, args.maf_epochs, args.repeats, args.budget = 8192, 1, 1, min(args.budget, 3.0)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = "cpu" if device == "auto" else device
    start = time.perf_counter()
    name = torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else "CPU"
    maf_lines, maf_times = maf_throughput(args, device)
    print("\n".join(maf_lines), flush=True)
    mnist_lines, grids = mnist_budget(args, device)
    out = Path(args.out)
    grid_path = out.with_name(out.stem + "_samples.png")
    save_grids(grids, grid_path)
    total = time.perf_counter() - start
    report = [
        "# GPU benchmark",
        "",
        f"Command: `PYTHONPATH=. python {shlex.join(['benchmarks/gpu.py', *(argv or sys.argv[1:])])}`",
        "",
        f"Device: {name}; torch {torch.__version__}; whole script {total:.0f} s.",
        "",
        *maf_lines,
        "",
        *mnist_lines,
        "",
        f"![samples]({grid_path.name})",
        "",
        "Raw MAF fit times (s):",
        "",
        "    " + json.dumps(maf_times),
    ]
    out.write_text("\n".join(report) + "\n")
    print(f"wrote {out} and {grid_path} in {total:.0f} s")


if __name__ == "__main__":
    main()
