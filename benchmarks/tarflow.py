"""TarFlowDensity: bits/dim, guided class-conditional samples, the KV cache, tabular densities.

Parts, on the CPU with one thread, each written to ``tarflow_<part>.md`` and joined into
``tarflow.md``: ``digits`` and ``mnist`` (bits/dim on ``image_density``'s splits beside a Gaussian
mixture), ``conditional`` (class-conditional digits: guided samples read by an SVM, generative
classifiers), ``cache`` (sampling with and without the key/value cache) and ``tabular`` (TarFlow
beside MAFDensity on ADBench sets). Protocol and results: ``results/tarflow.md``.

    OMP_NUM_THREADS=1 python -m benchmarks.tarflow digits conditional cache tabular mnist
"""

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC

from benchmarks.harness import data, peers, report, runner
from skflow import GlowDensity, MAFDensity, TarFlowDensity, bits_per_dim

PARTS = ("digits", "conditional", "cache", "tabular", "mnist")
CPU = {"random_state": 0, "device": "cpu"}
DIGITS_TARFLOW = {"n_bins": 17, "patch_size": 2, "channels": 64, "n_blocks": 4, "n_layers": 2, "n_heads": 4,
                  "mixing": True, "logit_alpha": 0.05, "max_epochs": 60, "batch_size": 32, "lr": 1e-3,
                  "patience": 10, **CPU}
MNIST_TARFLOW = {"n_bins": 256, "patch_size": 2, "channels": 64, "n_blocks": 8, "n_layers": 1, "mixing": True,
                 "logit_alpha": 0.05, "lr_schedule": "cosine", "max_epochs": 7, "batch_size": 32, "lr": 1e-3,
                 "patience": 5, **CPU}
BPD_COLUMNS = ["model", "test bits/dim", "train bits/dim", "epochs", "CPU s", "wall s"]


def bpd_rows(models, X_train, X_test, epochs, n_train_scored=None):
    """One row per model (fitted here): bits/dim on the test and training images, epochs, seconds."""
    rows, fitted = [], {}
    for label, make in models.items():
        model = fitted[label] = runner.shorten(make(), epochs)
        timer, _ = runner.timed(model.fit, X_train)
        rows.append(report.show([label, f"{bits_per_dim(model, X_test):.3f}",
                                 f"{bits_per_dim(model, X_train[:n_train_scored]):.3f}",
                                 getattr(model, "n_iter_", "-"), f"{timer.cpu:.0f}", f"{timer.wall:.0f}"]))
    return rows, fitted


def run_digits(args):
    X_train, X_test, _, _ = data.digits_split(args.max_rows)
    rows, _ = bpd_rows({"GaussianMixture (full cov., dequantized pixels)": lambda: peers.PixelGMM(17),
                        "TarFlow 2-64-4-2, mixing, logit (unconditional)": lambda: TarFlowDensity(
                            **DIGITS_TARFLOW)}, X_train, X_test, args.epochs)
    return ["## Digits: bits/dim (lower is better)", "", *report.table(BPD_COLUMNS, rows)]


def run_conditional(args):
    X_train, X_test, y_train, y_test = data.digits_split(args.max_rows)
    flat_train, flat_test = X_train.reshape(len(X_train), -1), X_test.reshape(len(X_test), -1)
    judge = SVC(gamma="scale").fit(flat_train, y_train)
    flow = runner.shorten(TarFlowDensity(**{**DIGITS_TARFLOW, "noise_std": 0.05}), args.epochs)
    timer, _ = runner.timed(flow.fit, X_train, y_train)
    others = {  # the same class-conditional path (labels as the flow's context) in other skflow flows
        "MAF": (MAFDensity(hidden_features=(256, 256), patience=10, **CPU), flat_train, flat_test,
                "5 x MADE 256x2, flat pixels"),
        "Glow": (GlowDensity(n_levels=3, n_steps=4, hidden_channels=32, n_blocks=1, max_epochs=60, n_bins=17,
                             patience=10, **CPU), X_train, X_test, "3 levels x 4 steps, 32 ch.")}
    fitted, others_accuracy = [], {}
    for name, (model, train, test, size) in others.items():
        fit, _ = runner.timed(runner.shorten(model, args.epochs).fit, train, y_train)
        others_accuracy[f"{name} generative classifier ({size})"] = np.mean(model.predict(test) == y_test)
        fitted.append(f"{name} {model.n_iter_} epochs, {fit.cpu:.0f} s CPU, {fit.wall:.0f} s wall")
    logistic = LogisticRegression(max_iter=5000).fit(flat_train / 16, y_train)
    accuracy = {"TarFlow generative classifier (Bayes rule on log p(x \\| c))": np.mean(
        flow.predict(X_test) == y_test), **others_accuracy,
        "LogisticRegression on pixels": logistic.score(flat_test / 16, y_test),
        "SVC (RBF) on pixels (the judge)": judge.score(flat_test, y_test)}
    requested, k = np.repeat(np.arange(10), args.per_class), min(8, args.per_class)
    rows, grids = [], {"real training digits": np.concatenate([X_train[y_train == c][:k] for c in range(10)])}
    for w in args.guidance:
        samples = flow.sample(len(requested), y=requested, guidance=w, random_state=0)
        read = judge.predict(samples.reshape(len(samples), -1)) == requested
        per_class = " ".join(f"{read[requested == c].mean():.2f}" for c in range(10))
        rows.append(report.show([f"{w:g}", f"{read.mean():.3f}", per_class]))
        grids[f"guidance {w:g}"] = np.concatenate([samples[requested == c][:k] for c in range(10)])
    raw = flow.sample(len(requested), y=requested, guidance=0.0, random_state=0, denoise=False)
    raw_read = np.mean(judge.predict(raw.reshape(len(raw), -1)) == requested)
    report.save_grids(args.out / "tarflow_samples_digits.png", grids, k, 16, width=3.6)
    return ["## Digits: class-conditional samples and generative classification", "",
            (f"Class-conditional TarFlow fitted on {len(X_train)} training digits ({flow.n_iter_} epochs, "
             f"{timer.cpu:.0f} s CPU, {timer.wall:.0f} s wall); test bits/dim of its marginal "
             f"(noise-augmented model): {bits_per_dim(flow, X_test):.3f}. {args.per_class} samples per class "
             f"and guidance weight; without denoising, at w = 0: {raw_read:.3f}. Grids: "
             "`tarflow_samples_digits.png`."), "",
            *report.table(["guidance w", "read as requested class", "per class (0..9)"], rows), "",
            f"Accuracy on the {len(X_test)} held-out digits:", "",
            *report.table(["classifier", "test accuracy"], [[n, f"{a:.3f}"] for n, a in accuracy.items()]),
            "", f"The MAF and Glow classifiers: {'; '.join(fitted)}."]


def sample_seconds(flow, cache):
    """Seconds to sample 32 rows, and the sample, with the key/value cache on or off."""
    for block in (m for m in flow.modules() if hasattr(m, "use_cache")):
        block.use_cache = cache
    with torch.no_grad():
        timer, x = runner.timed(flow.sample, 32, generator=torch.Generator().manual_seed(1))
    return timer.wall, x


def run_cache(args):
    rows = []
    for side in args.sides:
        images = np.random.default_rng(0).normal(size=(64, 1, side, side))
        model = TarFlowDensity(patch_size=2, channels=64, n_blocks=4, n_layers=2, mixing=False, max_epochs=1,
                               validation_fraction=0.0, **CPU).fit(images)
        flow = model.net_.module_.eval()  # the fitted torch flow (a public attribute)
        with torch.no_grad():  # non-zero output projections, so the blocks are not the identity
            for block in (m for m in flow.modules() if hasattr(m, "use_cache")):
                block.out_proj.weight.normal_(0, 0.01)
        (cached, a), (uncached, b) = sample_seconds(flow, True), sample_seconds(flow, False)
        rows.append(report.show([(side // 2) ** 2, f"{cached:.2f}", f"{uncached:.2f}",
                                 f"{uncached / cached:.1f}x", f"{(a - b).abs().max():.1e}"]))
    return ["## Sampling with and without the key/value cache", "",
            f"Image sides {', '.join(map(str, args.sides))}; float32, one CPU thread, one timing each.", "",
            *report.table(["tokens N", "cached s", "uncached s", "speed-up", "max abs difference"], rows)]


def tabular_models(epochs):
    small = {"channels": 32, "n_layers": 1, "mixing": False}
    return {"MAFDensity (5 x 128-128)": lambda: MAFDensity(max_epochs=epochs, **CPU),
            "TarFlow 1-64-4-2 (default size)": lambda: TarFlowDensity(max_epochs=epochs, mixing=False, **CPU),
            "TarFlow 1-32-4-1": lambda: TarFlowDensity(max_epochs=epochs, **CPU, **small)}


def run_tabular(args):
    rows = []
    for name in args.sets:
        X_train, X_test = data.split_set(name, 0, args.max_rows)
        for label, make in tabular_models({"vowels": 300, "magic": 60}.get(name, 300)).items():
            if name == "magic" and "default size" in label:
                continue  # too slow on magic
            model = runner.shorten(make(), args.epochs)
            timer, _ = runner.timed(model.fit, X_train)
            rows.append(report.show([f"{name} {X_train.shape}", label, f"{model.score(X_test):.3f}",
                                     f"{model.score(X_train):.3f}", model.n_iter_, f"{timer.cpu:.0f}"]))
    return ["## Tabular densities: TarFlow beside MAF", "",
            *report.table(["set (train shape)", "model", "test log-lik. (nats)", "train log-lik.", "epochs",
                           "CPU s"], rows)]


def run_mnist(args):
    X_train, X_test, _, _ = data.mnist_split(args.max_rows)
    models = {"Gaussian (full cov., dequantized pixels)": lambda: peers.PixelGMM(256, grid=(1,)),
              "TarFlow 2-64-8-1, mixing, logit, cosine lr, 7 epochs": lambda: TarFlowDensity(**MNIST_TARFLOW)}
    rows, fitted = bpd_rows(models, X_train, X_test, args.epochs, 1000)
    grids = {label: np.asarray(model.sample(8, random_state=0)).reshape(8, 28, 28)
             for label, model in fitted.items()}
    report.save_grids(args.out / "tarflow_samples_mnist.png", grids, 8, 255, cmap="gray", width=4)
    columns = [*BPD_COLUMNS[:2], "train bits/dim (1000 images)", *BPD_COLUMNS[3:]]
    return ["## MNIST: bits/dim (lower is better)", "", *report.table(columns, rows)]


def main(argv=None):
    p = runner.parser(__doc__, sets=data.SETS, default_sets=["vowels", "magic"], parts=PARTS)
    p.add_argument("--guidance", type=float, nargs="+", default=[0.0, 1.0, 2.0, 4.0])
    p.add_argument("--per-class", type=int, default=50, help="conditional: samples per class and weight")
    p.add_argument("--sides", type=int, nargs="+", default=[8, 16, 32], help="cache: image sides")
    tiny = {"parts": ["digits", "conditional", "cache", "tabular"], "sets": ["breast_cancer"],
            "guidance": [0.0, 1.0], "per_class": 2, "sides": [4, 8], "max_rows": 100}
    args = runner.parse(p, argv, __name__, tiny=tiny)
    for part in args.parts:
        report.write(args.out / f"tarflow_{part}.md", globals()[f"run_{part}"](args))
    report.join_parts(args, "TarFlowDensity benchmark", __doc__, PARTS, prefix="tarflow")


if __name__ == "__main__":
    runner.cli(main)
