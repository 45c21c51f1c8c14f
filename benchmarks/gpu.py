"""GPU benchmark: MAF fit throughput against zuko, and TarFlow and Glow on MNIST at a fixed time budget.

1. MAF throughput: ADBench magic replicated to ``--maf-rows`` rows, batch 4096, the same architecture
   for all, ``--maf-epochs`` epochs without validation; skflow's ``MAFDensity(base="normal")``
   (float32, bfloat16, compiled) against zuko's MAF in the peers' hand loop, alternating ``--repeats``
   times: median rows per second and the ratio of fit times.
2. MNIST: TarFlow and Glow trained for ``--budget`` wall seconds each on 8000 images, bits/dim on the
   other 2000, and a sample grid. Without a GPU it runs on the CPU.

    python -m benchmarks.gpu                  # on a GPU machine
    python -m benchmarks.gpu --tiny --device cpu
"""

import json

import numpy as np
import torch

from benchmarks.harness import data, peers, report, runner
from skflow import GlowDensity, MAFDensity, TarFlowDensity, bits_per_dim
from skflow.training import TimeLimit

ZUKO = "zuko MAF + loop"


def maf_throughput(args, device):
    X = data.load_set("magic")
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    X = np.tile(X, (-(-args.maf_rows // len(X)), 1))[:args.maf_rows].astype(np.float32)
    common = {"base": "normal", "batch_size": 4096, "lr": 1e-3, "max_epochs": args.maf_epochs,
              "validation_fraction": 0.0, "device": device, "random_state": 0}
    contenders = {
        ZUKO: lambda: peers.ZukoFlow(batch_size=4096, max_epochs=args.maf_epochs, validation_fraction=0.0,
                                     device=device).fit(X),
        "skflow MAFDensity": lambda: MAFDensity(**common).fit(X),
        "skflow MAFDensity, bf16": lambda: MAFDensity(**common, precision="bfloat16").fit(X),
        "skflow MAFDensity, compile": lambda: MAFDensity(**common, compile=True).fit(X),
    }
    times = {}
    for name, make in contenders.items():  # warm-up: CUDA context, kernels, the compile cache
        try:
            make()
            times[name] = []
        except runner.Unavailable as error:
            print(f"skipped {name}: {error}", flush=True)
    for _ in range(args.repeats):
        for name, values in times.items():
            values.append(runner.timed(contenders[name])[0].wall)
    rows_seen, reference = args.maf_rows * args.maf_epochs, np.median(times.get(ZUKO, [np.nan]))
    medians = {name: np.median(v) for name, v in times.items()}
    rows = [[name, f"{m:.2f}", f"{rows_seen / m:,.0f}", f"{m / reference:.3f}"]
            for name, m in medians.items()]
    return [(f"## MAF fit throughput, batch 4096 ({args.maf_rows:,} rows x {X.shape[1]} features, "
             f"{args.maf_epochs} epochs, {args.repeats} alternating repeats after a warm-up)"), "",
            *report.table(["contender", "median fit (s)", "rows/s", "fit time / zuko's"], rows)], times


def image_models(args, device):
    """MNIST's TarFlow and Glow (``--tiny``: small ones); ``make(budget)`` with the time budget callback."""
    if args.tiny:
        tarflow = {"patch_size": 4, "channels": 16, "n_blocks": 2, "n_layers": 1, "n_heads": 2,
                   "batch_size": 64}
        glow = {"n_levels": 2, "n_steps": 1, "hidden_channels": 8, "n_blocks": 1, "batch_size": 64}
    else:
        tarflow = {"patch_size": 2, "channels": 128, "n_blocks": 8, "n_layers": 2, "n_heads": 4,
                   "batch_size": 256}
        glow = {"n_levels": 3, "n_steps": 8, "hidden_channels": 128, "n_blocks": 1, "batch_size": 256}
    common = {"n_bins": 256, "max_epochs": 10_000, "patience": 5, "lr": 1e-3, "random_state": 0,
              "device": device}  # the time budget ends training
    return {"TarFlow": lambda budget: TarFlowDensity(**tarflow, mixing=True, logit_alpha=0.05, **common,
                                                     callbacks=[budget]),
            "Glow": lambda budget: GlowDensity(**glow, **common, callbacks=[budget])}


def mnist_budget(args, device):
    X_train, X_test, _, _ = data.mnist_split(500 if args.tiny else None)
    rows, grids = [], {}
    for name, make in image_models(args, device).items():
        model = make(TimeLimit(args.budget))
        timer, _ = runner.timed(model.fit, X_train)
        bits = bits_per_dim(model, X_test)
        sampling, samples = runner.timed(model.sample, 64, random_state=0)
        grids[name] = np.asarray(samples).reshape(64, 28, 28)
        rows.append(report.show([name, model.n_iter_, f"{timer.wall:.0f}", f"{bits:.3f}",
                                 f"{sampling.wall:.1f}"]))
    return [f"## MNIST at a fixed budget of {args.budget:g} s of training per model", "",
            f"{len(X_train)} training images, {len(X_test)} held out (bits/dim of the 256-level images).", "",
            *report.table(["model", "epochs in budget", "fit incl. scoring setup (s)", "test bits/dim",
                           "samples (s, 64 images)"], rows)], grids


def main(argv=None):
    p = runner.parser(__doc__)
    p.add_argument("--device", default="auto")
    p.add_argument("--maf-rows", type=int, default=400_000)
    p.add_argument("--maf-epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--budget", type=float, default=150.0, help="training seconds per MNIST model")
    tiny = {"maf_rows": 8192, "maf_epochs": 1, "repeats": 1, "budget": 1.0}
    args = runner.parse(p, argv, __name__, tiny=tiny, threads=0)
    device = args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else "CPU"
    with runner.Timer() as total:
        maf_lines, maf_times = maf_throughput(args, device)
        mnist_lines, grids = mnist_budget(args, device)
        report.save_grids(args.out / f"{args.name}_samples.png", grids, 8, 255, cmap="gray", width=4)
    report.publish(args, "GPU benchmark", __doc__, [
        f"Device: {name}; torch {torch.__version__}; whole script {total.wall:.0f} s.", "",
        *maf_lines, "", *mnist_lines, "", f"![samples]({args.name}_samples.png)", "",
        "Raw MAF fit times (s):", "", "    " + json.dumps(maf_times)])


if __name__ == "__main__":
    runner.cli(main)
