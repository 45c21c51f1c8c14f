"""Bits/dim of skflow's image flows beside a Gaussian mixture; sample grids; one-class outliers.

Parts: ``digits`` (scikit-learn's 8x8 digits, 1437 train / 360 test), ``mnist`` (the 10,000 MNIST test
images, 8000 / 2000) and ``outliers`` (a Glow detector and IsolationForest fitted on one digit class,
ROC AUC on the test digits). Every model is scored by the bound ``log mean_k p(x + u_k)`` over 4
uniform draws, in bits per dimension. Each model's row is cached, so ``--only`` runs models in
separate processes. Protocol and results: ``results/image_density.md``.

    OMP_NUM_THREADS=1 python -m benchmarks.image_density digits mnist outliers
"""

from functools import partial

import numpy as np
import torch
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score

from benchmarks.harness import data, peers, report, runner
from skflow import FlowOutlierDetector, GlowDensity, RealNVPImageDensity, bits_per_dim

PARTS = ("digits", "mnist", "outliers")
SPLITS = {"digits": (data.digits_split, 17, (8, 8)), "mnist": (data.mnist_split, 256, (28, 28))}


def models(part):
    """The part's models: label -> factory."""
    cpu = {"random_state": 0, "device": "cpu"}
    if part == "digits":
        common = {"n_bins": 17, "batch_size": 64, "lr": 1e-3, "patience": 10, **cpu}
        glow = {"n_levels": 3, "n_steps": 4, "hidden_channels": 32, "n_blocks": 1, "max_epochs": 60, **common}
        return {"GaussianMixture (full cov.)": lambda: peers.PixelGMM(17),
                "MAF (5 x MADE 256x2)": lambda: peers.PixelMAF(17, hidden_features=(256, 256), max_epochs=200,
                                                                batch_size=64, **cpu),
                "RealNVP (2 levels, 32 ch.)": lambda: RealNVPImageDensity(
                    n_levels=2, hidden_channels=32, n_blocks=1, max_epochs=60, **common),
                "Glow (3 levels x 4 steps, 32 ch.)": lambda: GlowDensity(**glow),
                "Glow + variational deq.": lambda: GlowDensity(**glow, dequantization="variational")}
    common = {"n_bins": 256, "batch_size": 64, "lr": 1e-3, **cpu}

    def glow(steps, channels, epochs, patience=2):
        return lambda: GlowDensity(n_levels=2, n_steps=steps, hidden_channels=channels, n_blocks=1,
                                   max_epochs=epochs, patience=patience, **common)

    return {"GaussianMixture (full cov.)": lambda: peers.PixelGMM(256, grid=(1, 4, 8), n_copies=1),
            "MAF (5 x MADE 512)": lambda: peers.PixelMAF(256, hidden_features=(512,), max_epochs=20,
                                                          batch_size=128, patience=3, **cpu),
            "RealNVP (2 levels, 16 ch.)": lambda: RealNVPImageDensity(
                n_levels=2, hidden_channels=16, n_blocks=1, max_epochs=4, patience=2, **common),
            "Glow (2 levels x 3 steps, 32 ch.)": glow(3, 32, 6),
            "Glow, 20 epochs (2 levels x 3 steps, 32 ch.)": glow(3, 32, 20, 3),
            # TarFlow's MNIST budget (about 850 CPU s): more epochs, or a wider Glow
            "Glow, 50 epochs (2 levels x 3 steps, 32 ch.)": glow(3, 32, 50, 6),
            "Glow, 14 epochs (2 levels x 4 steps, 64 ch.)": glow(4, 64, 14, 6),
            "Glow, 45 epochs (2 levels x 4 steps, 64 ch.)": glow(4, 64, 45, 6)}


def fit_density(make, X_train, X_test, epochs, image_shape):
    torch.manual_seed(0)
    model = runner.shorten(make(), epochs)
    timer, _ = runner.timed(model.fit, X_train)
    return {"test_bpd": bits_per_dim(model, X_test), "train_bpd": bits_per_dim(model, X_train[:1000]),
            "epochs": getattr(model, "n_iter_", 0), "cpu": timer.cpu, "wall": timer.wall,
            "samples": np.asarray(model.sample(16, random_state=0)).reshape(16, *image_shape).tolist()}


def density_part(part, cache, args):
    """Fit and score each model (or read its cached row); the part's markdown and sample grid."""
    split, n_bins, shape = SPLITS[part]
    X_train, X_test, _, _ = split(args.max_rows)
    rows, grids = [], {"training images": X_train[:16]}
    for label, make in models(part).items():
        if args.only is None or args.only.lower() in label.lower():
            fit = partial(fit_density, make, X_train, X_test, args.epochs, shape)
            r = cache.run(fit, part=part, model=label)
        else:
            r = cache.get(part=part, model=label)
        if r is not None:
            rows.append([label, f"{r['test_bpd']:.3f}", f"{r['train_bpd']:.3f}", r["epochs"] or "-",
                         f"{r['cpu']:.0f}", f"{r['wall']:.0f}"])
            grids[label] = np.asarray(r["samples"])
    report.save_grids(args.out / f"{args.name}_samples_{part}.png", grids, 4, n_bins - 1)
    gmm = [float(r[1]) for r in rows if r[0].startswith("Gaussian")] or [np.nan]
    gap = gmm[0] - min([float(r[1]) for r in rows if not r[0].startswith("Gaussian")] or [np.nan])
    return [f"## {part}: bits/dim on held-out images (lower is better)", "",
            *report.table(["model", "test bits/dim", "train bits/dim (<=1000 images)", "epochs", "fit CPU s",
                           "fit wall s"], rows), "",
            (f"Best skflow flow beats the Gaussian mixture by {gap:.3f} bits/dim (target: >= 0.5). Samples: "
             f"`{args.name}_samples_{part}.png`.")]


def outlier_part(args):
    X_train, X_test, y_train, y_test = data.digits_split(args.max_rows)
    flat_train, flat_test = X_train.reshape(len(X_train), -1), X_test.reshape(len(X_test), -1)
    rows = []
    for digit in args.classes:
        inliers, is_outlier = flat_train[y_train == digit], (y_test != digit).astype(int)
        glow = GlowDensity(image_shape=(1, 8, 8), n_bins=17, n_levels=3, n_steps=2, hidden_channels=16,
                           n_blocks=1, max_epochs=80, patience=10, batch_size=32, device="cpu")
        detector = runner.shorten(FlowOutlierDetector(glow, random_state=0), args.epochs)
        timer, _ = runner.timed(detector.fit, inliers)
        forest = IsolationForest(random_state=0).fit(inliers)
        aucs = [roc_auc_score(is_outlier, -model.score_samples(flat_test)) for model in (detector, forest)]
        rows.append(report.show([digit, len(inliers), *aucs, timer.cpu]))
    mean = np.mean([r[2:4] for r in rows], axis=0)
    return ["## One-class outlier detection on digits (ROC AUC, higher is better)", "",
            *report.table(["inlier digit", "training images", "Glow AUC", "IsolationForest AUC",
                           "Glow fit CPU s"],
                          [[d, n, f"{a:.3f}", f"{b:.3f}", f"{c:.0f}"] for d, n, a, b, c in rows]
                          + [["**mean**", "", f"**{mean[0]:.3f}**", f"**{mean[1]:.3f}**", ""]])]


def main(argv=None):
    p = runner.parser(__doc__, cache=True, parts=PARTS)
    p.add_argument("--only", help="fit only the models whose name contains this (the others: cached rows)")
    p.add_argument("--classes", type=int, nargs="+", default=list(range(10)), help="outliers: inlier digits")
    tiny = {"parts": ["digits", "outliers"], "classes": [0, 1], "max_rows": 120}
    args = runner.parse(p, argv, __name__, tiny=tiny)
    cache = runner.Cache(args.cache, ("part", "model"), args.report_only)
    for part in args.parts:
        lines = outlier_part(args) if part == "outliers" else density_part(part, cache, args)
        if args.only is None:
            report.write(args.out / f"{args.name}_{part}.md", lines)
    report.join_parts(args, "Image densities: bits/dim, samples, one-class outliers", __doc__, PARTS)


if __name__ == "__main__":
    runner.cli(main)
