"""TarFlowDensity: bits/dim, guided class-conditional samples, the KV cache, tabular densities.

Runs on the CPU with one thread; every peer is run in this script.

* ``digits``: bits/dim on held-out scikit-learn digits (the split of
  ``benchmarks/image_density.py``: stratified 1437 train / 360 test,
  ``random_state=0``) for an unconditional TarFlow, the class-conditional
  TarFlow's marginal, and a GaussianMixture on uniformly dequantized pixels
  (``GMMOnPixels`` of ``image_density.py``, same bound, 4 draws per image).
* ``conditional``: a class-conditional TarFlow (noise_std=0.05, denoised
  samples) on the digits training split. Samples at several guidance weights
  are read by an RBF SVM trained on the real training digits (fraction read
  as the requested class); generative-classifier accuracy on the test split
  beside logistic regression and the SVM; sample grids as PNG.
* ``cache``: seconds to sample 32 rows with and without the key/value cache
  as the number of tokens grows (a freshly initialised TarFlow; the cost
  does not depend on the weights).
* ``tabular``: mean test log-likelihood (nats, raw units) on ADBench sets
  from ``../shared/data`` (split of ``benchmarks/_tabular_data.py``, seed 0),
  TarFlow beside MAFDensity.
* ``mnist``: bits/dim on the MNIST split of ``image_density.py`` (8000 of the
  10k test images for training, 2000 held out) beside the Gaussian mixture.
* ``screen``: short runs of TarFlow variants on digits or MNIST, one variant
  per call (``--data mnist --variant NAME``, see ``SCREEN``), each appending
  a row to ``results/tarflow_screen_<data>.md``: which changes are worth a
  full run.

Usage::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=. python benchmarks/tarflow.py digits conditional cache tabular

Writes ``benchmarks/results/tarflow_<part>.md``, joins them into
``benchmarks/results/tarflow.md``, and saves
``benchmarks/results/tarflow_samples_digits.png``.
"""

import argparse
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tabular_data import split_set
from image_density import GMMOnPixels, digits_split, mnist_split

from skflow import MAFDensity
from skflow.metrics import bits_per_dim
from skflow.tarflow import TarFlowDensity
from skflow import GlowDensity
from skflow.distributions import StandardNormal
from skflow.flows import Flow
from skflow.transforms.tarflow import TarFlowBlock, tarflow

RESULTS = Path(__file__).resolve().parent / "results"
PARTS = ("digits", "conditional", "cache", "tabular", "mnist", "screen")
GUIDANCE = (0.0, 1.0, 2.0, 4.0)
DIGITS_TARFLOW = dict(
    n_bins=17,
    patch_size=2,
    channels=64,
    n_blocks=4,
    n_layers=2,
    n_heads=4,
    mixing=True,
    logit_alpha=0.05,
    max_epochs=60,
    batch_size=32,
    lr=1e-3,
    patience=10,
    random_state=0,
    device="cpu",
)


def _timed_fit(model, *args):
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(*args)
    return time.process_time() - cpu, time.perf_counter() - wall


def _write(part, lines):
    (RESULTS / f"tarflow_{part}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


# ------------------------------------------------------------------ parts
def run_digits():
    X_train, X_test, y_train, _ = digits_split()
    models = {
        "GaussianMixture (full cov., dequantized pixels)": (lambda: GMMOnPixels(17), False),
        "TarFlow 2-64-4-2, mixing, logit (unconditional)": (lambda: TarFlowDensity(**DIGITS_TARFLOW), False),
    }
    rows = [
        "| model | test bits/dim | train bits/dim | epochs | CPU s | wall s |",
        "|---|---|---|---|---|---|",
    ]
    for label, (make, labelled) in models.items():
        model = make()
        cpu, wall = _timed_fit(model, X_train, y_train) if labelled else _timed_fit(model, X_train)
        test, train = bits_per_dim(model, X_test), bits_per_dim(model, X_train)
        rows.append(
            f"| {label} | {test:.3f} | {train:.3f} | {getattr(model, 'n_iter_', '-')} | {cpu:.0f} | {wall:.0f} |"
        )
        print(rows[-1], flush=True)
    _write(
        "digits",
        [
            "## Digits: bits/dim (lower is better)",
            "",
            "scikit-learn digits (8x8, 17 levels, `n_bins=17`), stratified split 1437 train / 360 test "
            "(`random_state=0`, as `image_density.py`). Every model: the bound `log mean_k p(x + u_k)` over 4 "
            "uniform draws per image. TarFlow P-Ch-T-K = patch 2 (16 tokens of 4 pixels), 64 channels, 4 blocks, "
            "2 layers, a TokenMixing before every block, pixels in logit space (alpha 0.05); AdamW lr 1e-3, "
            "batch 32, at most 60 epochs, early stopping (patience 10) on a 10% validation split; no Gaussian "
            "noise.",
            "",
            *rows,
            "",
            "The previous settings (no mixing, pixels in [-1, 1], batch 64) gave 2.183; the changes one at a "
            "time are in `tarflow_screen_digits.md`.",
        ],
    )


def _grid(images_by_guidance, path):
    fig, axes = plt.subplots(1, len(images_by_guidance), figsize=(3.6 * len(images_by_guidance), 4.6))
    for ax, (title, images) in zip(axes, images_by_guidance.items()):
        padded = np.pad(images, ((0, 0), (0, 0), (1, 1), (1, 1)))  # images: (10 classes, k, 8, 8)
        rows = [np.concatenate(list(row), axis=1) for row in padded]
        ax.imshow(np.concatenate(rows, axis=0), cmap="gray_r", vmin=0, vmax=16, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_conditional():
    X_train, X_test, y_train, y_test = digits_split()
    flat_train, flat_test = X_train.reshape(len(X_train), -1), X_test.reshape(len(X_test), -1)
    judge = SVC(gamma="scale").fit(flat_train, y_train)
    logistic = LogisticRegression(max_iter=5000).fit(flat_train / 16, y_train)
    flow = TarFlowDensity(**{**DIGITS_TARFLOW, "noise_std": 0.05})
    cpu, wall = _timed_fit(flow, X_train, y_train)
    others = {  # the same class-conditional path (labels as the flow's context) in other skflow flows
        "MAF generative classifier (5 x MADE 256x2, flat pixels)": MAFDensity(
            hidden_features=(256, 256), patience=10, random_state=0, device="cpu"
        ),
        "Glow generative classifier (3 levels x 4 steps, 32 ch.)": GlowDensity(
            n_levels=3, n_steps=4, hidden_channels=32, n_blocks=1, max_epochs=60, n_bins=17, patience=10,
            random_state=0, device="cpu",
        ),
    }
    other_rows = []
    for name, model in others.items():
        other_cpu, other_wall = _timed_fit(model, flat_train if "MAF" in name else X_train, y_train)
        test = flat_test if "MAF" in name else X_test
        other_rows.append((name, np.mean(model.predict(test) == y_test), model.n_iter_, other_cpu, other_wall))
        print(other_rows[-1], flush=True)
    accuracy = {
        "TarFlow generative classifier (Bayes rule on log p(x \\| c))": np.mean(
            flow.predict(X_test) == y_test
        ),
        **{name: acc for name, acc, *_ in other_rows},
        "LogisticRegression on pixels": logistic.score(flat_test / 16, y_test),
        "SVC (RBF) on pixels (the judge)": judge.score(flat_test, y_test),
    }
    n_per_class = 50
    requested = np.repeat(np.arange(10), n_per_class)
    rows = ["| guidance w | read as requested class | per class (0..9) |", "|---|---|---|"]
    grids = {"real training digits": np.stack([X_train[y_train == c][:8] for c in range(10)])}
    for w in GUIDANCE:
        start = time.perf_counter()
        samples = flow.sample(len(requested), y=requested, guidance=w, random_state=0)
        seconds = time.perf_counter() - start
        read = judge.predict(samples.reshape(len(samples), -1)) == requested
        per_class = " ".join(f"{read[requested == c].mean():.2f}" for c in range(10))
        rows.append(f"| {w:g} | {read.mean():.3f} | {per_class} |")
        print(rows[-1], f"({seconds:.1f} s for {len(requested)} samples)", flush=True)
        grids[f"guidance {w:g}"] = np.stack([samples[requested == c][:8] for c in range(10)])
    raw = flow.sample(len(requested), y=requested, guidance=0.0, random_state=0, denoise=False)
    raw_read = np.mean(judge.predict(raw.reshape(len(raw), -1)) == requested)
    _grid(grids, RESULTS / "tarflow_samples_digits.png")
    _write(
        "conditional",
        [
            "## Digits: class-conditional samples and generative classification",
            "",
            f"Class-conditional TarFlow 2-64-4-2 with token mixing, batch 32, noise_std 0.05 (pixels scaled to "
            "[-1, 1], no logit with noise), label dropout 0.1, "
            f"fitted on the 1437 training digits ({flow.n_iter_} epochs, {cpu:.0f} s CPU, {wall:.0f} s wall); "
            f"test bits/dim of its marginal (noise-augmented model): {bits_per_dim(flow, X_test):.3f}. "
            f"{n_per_class} samples per class at each guidance weight (denoised by one Tweedie step), read by an "
            f"RBF SVM trained on the real training digits (its test accuracy: {accuracy['SVC (RBF) on pixels (the judge)']:.3f}). "
            f"Without denoising, at w = 0: {raw_read:.3f}. Grids: `tarflow_samples_digits.png` "
            "(rows: classes 0-9).",
            "",
            *rows,
            "",
            "Accuracy on the 360 held-out digits:",
            "",
            "| classifier | test accuracy |",
            "|---|---|",
            *[f"| {name} | {acc:.3f} |" for name, acc in accuracy.items()],
            "",
            "The MAF and Glow classifiers are the same estimators as in `image_density_digits.md`, fitted with "
            "`fit(X, y)`: " + "; ".join(
                f"{name.split(' generative')[0]} {epochs} epochs, {cpu_s:.0f} s CPU, {wall_s:.0f} s wall"
                for name, _, epochs, cpu_s, wall_s in other_rows
            ) + ".",
        ],
    )


def _use_cache(flow, cache):
    for block in flow.modules():
        if isinstance(block, TarFlowBlock):
            block.use_cache = cache


def _sample_seconds(flow, n_samples, cache):
    _use_cache(flow, cache)
    start = time.perf_counter()
    with torch.no_grad():
        flow.sample(n_samples, generator=torch.Generator().manual_seed(0))
    return time.perf_counter() - start


def run_cache():
    rows = ["| tokens N | cached s | uncached s | speed-up | max abs difference |", "|---|---|---|---|---|"]
    for side in (8, 16, 32):
        torch.manual_seed(0)
        transform = tarflow(side * side, (1, side, side), patch_size=2, channels=64, n_blocks=4, n_layers=2)
        patches = transform.transforms[0]
        flow = Flow(transform, StandardNormal(patches.n_tokens, patches.token_features))
        blocks = [m for m in flow.modules() if isinstance(m, TarFlowBlock)]
        with torch.no_grad():  # non-zero output projections, so the blocks are not the identity
            for block in blocks:
                block.out_proj.weight.normal_(0, 0.01)
        flow.eval()
        with torch.no_grad():
            _use_cache(flow, True)
            a = flow.sample(32, generator=torch.Generator().manual_seed(1))
            _use_cache(flow, False)
            b = flow.sample(32, generator=torch.Generator().manual_seed(1))
        cached = _sample_seconds(flow, 32, True)
        uncached = _sample_seconds(flow, 32, False)
        n_tokens = patches.n_tokens
        rows.append(
            f"| {n_tokens} | {cached:.2f} | {uncached:.2f} | {uncached / cached:.1f}x | {(a - b).abs().max():.1e} |"
        )
        print(rows[-1], flush=True)
    _write(
        "cache",
        [
            "## Sampling with and without the key/value cache",
            "",
            "32 samples from a TarFlow with 4 blocks of 2 layers, 64 channels, 2x2 patches of 1-channel images of "
            "side 8, 16, 32 (16, 64, 256 tokens); float32, one CPU thread, one timing each.",
            "",
            *rows,
        ],
    )


def run_tabular():
    small = {"channels": 32, "n_layers": 1, "mixing": False}
    sets = {
        "vowels": {
            "MAFDensity (5 x 128-128)": lambda: MAFDensity(max_epochs=300, random_state=0, device="cpu"),
            "TarFlow 1-64-4-2 (default size)": lambda: TarFlowDensity(
                max_epochs=300, mixing=False, random_state=0, device="cpu"
            ),
            "TarFlow 1-32-4-1": lambda: TarFlowDensity(max_epochs=300, random_state=0, device="cpu", **small),
        },
        "magic": {
            "MAFDensity (5 x 128-128)": lambda: MAFDensity(max_epochs=60, random_state=0, device="cpu"),
            "TarFlow 1-32-4-1": lambda: TarFlowDensity(max_epochs=60, random_state=0, device="cpu", **small),
        },
    }
    rows = [
        "| set (train shape) | model | test log-lik. (nats) | train log-lik. | epochs | CPU s |",
        "|---|---|---|---|---|---|",
    ]
    for name, models in sets.items():
        X_train, X_test = split_set(name, 0)
        for label, make in models.items():
            model = make()
            cpu, _ = _timed_fit(model, X_train)
            rows.append(
                f"| {name} {X_train.shape} | {label} | {model.score(X_test):.3f} | {model.score(X_train):.3f} "
                f"| {model.n_iter_} | {cpu:.0f} |"
            )
            print(rows[-1], flush=True)
    _write(
        "tabular",
        [
            "## Tabular densities: TarFlow beside MAF",
            "",
            "ADBench sets (labels ignored), 80/20 split with seed 0 (`_tabular_data.split_set`), one token per "
            "feature. Estimator defaults except `max_epochs` (300 on vowels, 60 on magic, both models), "
            "`mixing=False` for TarFlow (the table predates token mixing) and, for "
            "'1-32-4-1', 32 channels and 1 layer per block (a transformer step costs about 8x less; the default "
            "1-64-4-2 costs about 0.27 CPU s per batch of 256 rows of 12 features). Early stopping on 10% of "
            "the training rows.",
            "",
            *rows,
        ],
    )


MNIST_EPOCHS = 7
MNIST_TARFLOW = dict(
    n_bins=256,
    patch_size=2,
    channels=64,
    n_blocks=8,
    n_layers=1,
    mixing=True,
    logit_alpha=0.05,
    lr_schedule="cosine",
    max_epochs=MNIST_EPOCHS,
    batch_size=32,
    lr=1e-3,
    patience=5,
    random_state=0,
    device="cpu",
)


def run_mnist():
    X_train, X_test, _, _ = mnist_split()
    models = {
        "Gaussian (full cov., dequantized pixels)": lambda: GMMOnPixels(256, grid=(1,)),
        f"TarFlow 2-64-8-1, mixing, logit, cosine lr, {MNIST_EPOCHS} epochs": lambda: TarFlowDensity(
            **MNIST_TARFLOW
        ),
    }
    rows = [
        "| model | test bits/dim | train bits/dim (1000 images) | epochs | CPU s | wall s |",
        "|---|---|---|---|---|---|",
    ]
    grids = {}
    for label, make in models.items():
        model = make()
        cpu, wall = _timed_fit(model, X_train)
        rows.append(
            f"| {label} | {bits_per_dim(model, X_test):.3f} | {bits_per_dim(model, X_train[:1000]):.3f} "
            f"| {getattr(model, 'n_iter_', '-')} | {cpu:.0f} | {wall:.0f} |"
        )
        print(rows[-1], flush=True)
        grids[label] = np.asarray(model.sample(8, random_state=0)).reshape(8, 28, 28)
    fig, axes = plt.subplots(len(grids), 1, figsize=(8, 1.3 * len(grids)))
    for ax, (label, images) in zip(axes, grids.items()):
        ax.imshow(np.concatenate(list(images), axis=1), cmap="gray", vmin=0, vmax=255)
        ax.set_title(label, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(RESULTS / "tarflow_samples_mnist.png", dpi=100)
    plt.close(fig)
    _write(
        "mnist",
        [
            "## MNIST: bits/dim (lower is better)",
            "",
            "The 10k MNIST test images of ../shared/data, shuffled with seed 0: 8000 to train, 2000 held out "
            "(the split of `image_density.py`; published figures train on 60k images). TarFlow: 2x2 patches "
            "(196 tokens of 4 pixels), 64 channels, 8 blocks of 1 layer, a TokenMixing (LU-parametrised "
            "4x4 linear map of the patch pixels) before every block, pixels in logit space (alpha 0.05, "
            f"as RealNVP and Glow here), AdamW lr 1e-3 with a cosine decay over {MNIST_EPOCHS} epochs, batch 32, "
            "early stopping (patience 5) on 10% of the training images. Baseline: one full-covariance "
            "Gaussian on dequantized pixels (a mixture with more components costs too much here). Glow "
            "(2 levels x 3 steps, 32 ch.) reached 1.985 in 204 CPU s on this split (`image_density_mnist.md`); "
            "see the CPU seconds column for the budget TarFlow used.",
            "",
            *rows,
            "",
            "The previous settings of this part (4x4 patches, 4 blocks of 2 layers, pixels in [-1, 1], no "
            "mixing, constant lr, batch 64, 10 epochs) gave 3.326 bits/dim in 295 CPU s. Which change bought "
            "what: `tarflow_screen_mnist.md` (3-epoch runs). At Glow's budget, the screen's "
            "`glow_budget_b12l1_bs32_5ep` (4x4 patches, 12 blocks of 1 layer, mixing, logit, cosine lr, batch "
            "32, 5 epochs) reached 1.971 in 207 CPU s (Glow: 1.985 in 204 CPU s).",
        ],
    )


#: Screened variants: overrides of the base settings of ``SCREEN_BASE``.
SCREEN = {
    "base": {},
    "mix": {"mixing": True},
    "logit": {"logit_alpha": 0.05},
    "mix_logit": {"mixing": True, "logit_alpha": 0.05},
    "ml_cos": {"mixing": True, "logit_alpha": 0.05, "lr_schedule": "cosine"},
    "ml_lr2e-3": {"mixing": True, "logit_alpha": 0.05, "lr": 2e-3},
    "ml_bs32": {"mixing": True, "logit_alpha": 0.05, "batch_size": 32},
    "ml_bs16": {"mixing": True, "logit_alpha": 0.05, "batch_size": 16},
    "ml_bs32_wd1e-2": {"mixing": True, "logit_alpha": 0.05, "batch_size": 32, "weight_decay": 1e-2},
    "ml_b8l1": {"mixing": True, "logit_alpha": 0.05, "n_blocks": 8, "n_layers": 1},
    "ml_b8l1_cos": {
        "mixing": True,
        "logit_alpha": 0.05,
        "n_blocks": 8,
        "n_layers": 1,
        "lr_schedule": "cosine",
    },
    "ml_b12l1_cos": {
        "mixing": True,
        "logit_alpha": 0.05,
        "n_blocks": 12,
        "n_layers": 1,
        "lr_schedule": "cosine",
    },
    "ml_b8l1_ch96_cos": {
        "mixing": True,
        "logit_alpha": 0.05,
        "n_blocks": 8,
        "n_layers": 1,
        "channels": 96,
        "lr_schedule": "cosine",
    },
    "glow_budget_b12l1_bs32_5ep": {
        "mixing": True,
        "logit_alpha": 0.05,
        "n_blocks": 12,
        "n_layers": 1,
        "lr_schedule": "cosine",
        "batch_size": 32,
        "max_epochs": 5,
    },
    "l_b8l1_p2_cos": {
        "logit_alpha": 0.05,
        "n_blocks": 8,
        "n_layers": 1,
        "patch_size": 2,
        "lr_schedule": "cosine",
    },
    "ml_b8l1_p2_cos_bs32_14ep": {
        "mixing": True,
        "logit_alpha": 0.05,
        "n_blocks": 8,
        "n_layers": 1,
        "patch_size": 2,
        "lr_schedule": "cosine",
        "batch_size": 32,
        "max_epochs": 14,
    },
    "ml_b8l1_p2_cos": {
        "mixing": True,
        "logit_alpha": 0.05,
        "n_blocks": 8,
        "n_layers": 1,
        "patch_size": 2,
        "lr_schedule": "cosine",
    },
}
#: The paper's TarFlow: no token mixing, pixels in [-1, 1], constant learning rate.
PLAIN = {"mixing": False, "logit_alpha": None, "lr_schedule": "constant"}
SCREEN_BASE = {
    "mnist": dict(
        n_bins=256,
        patch_size=4,
        channels=64,
        n_blocks=4,
        n_layers=2,
        max_epochs=3,
        batch_size=64,
        lr=1e-3,
        **PLAIN,
    ),
    "digits": dict(
        n_bins=17,
        patch_size=2,
        channels=64,
        n_blocks=4,
        n_layers=2,
        max_epochs=60,
        batch_size=64,
        lr=1e-3,
        **PLAIN,
    ),
}


def run_screen(data, variant):
    X_train, X_test, _, _ = mnist_split() if data == "mnist" else digits_split()
    params = {**SCREEN_BASE[data], "patience": 10, "random_state": 0, "device": "cpu", **SCREEN[variant]}
    model = TarFlowDensity(**params)
    cpu, wall = _timed_fit(model, X_train)
    path = RESULTS / f"tarflow_screen_{data}.md"
    if not path.exists():
        path.write_text(
            f"## TarFlow variants on {data}, short runs (screen)\n\nBase settings {SCREEN_BASE[data]}, "
            "patience 10, random_state 0; each row one call of "
            f"`python benchmarks/tarflow.py screen --data {data} --variant NAME`.\n\n"
            "| variant | overrides | test bits/dim | epochs | CPU s | wall s |\n|---|---|---|---|---|---|\n"
        )
    row = (
        f"| {variant} | {SCREEN[variant]} | {bits_per_dim(model, X_test):.3f} | {model.n_iter_} | {cpu:.0f} "
        f"| {wall:.0f} |"
    )
    with path.open("a") as f:
        f.write(row + "\n")
    print(row, flush=True)


def join():
    done = [p for p in PARTS if p != "screen" and (RESULTS / f"tarflow_{p}.md").exists()]
    parts = [RESULTS / f"tarflow_{p}.md" for p in done]
    command = "OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=. python benchmarks/tarflow.py " + " ".join(
        done
    )
    text = [
        "# TarFlowDensity benchmark",
        "",
        f"Produced by `{command}` (the parts may run in separate invocations; each writes "
        "`results/tarflow_<part>.md` and they are joined here), on the CPU with one thread; 2 cores were "
        "shared with other jobs, so wall times are inflated; CPU times are the process's own. "
        "RealNVP, Glow and MAF on the same digits and MNIST splits, with the same bound, are in "
        "`image_density.md` (run by `image_density.py`, not repeated here).",
        "",
    ]
    text += [p.read_text() for p in parts]
    (RESULTS / "tarflow.md").write_text("\n".join(text))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("parts", nargs="+", choices=PARTS)
    parser.add_argument("--data", choices=tuple(SCREEN_BASE), default="mnist", help="screen: the data set")
    parser.add_argument("--variant", choices=tuple(SCREEN), default="base", help="screen: the variant")
    args = parser.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    torch.set_num_threads(1)
    runners = {
        "digits": run_digits,
        "conditional": run_conditional,
        "cache": run_cache,
        "tabular": run_tabular,
        "mnist": run_mnist,
        "screen": lambda: run_screen(args.data, args.variant),
    }
    for part in args.parts:
        runners[part]()
        join()


if __name__ == "__main__":
    main()
