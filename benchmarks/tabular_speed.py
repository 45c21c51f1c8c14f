"""Fit, score and sample speed of MAFDensity against zuko's MAF + a hand-written loop.

Equal architecture (5 transforms, hidden (128, 128), normal base), epochs, batch, learning rate and
optimizer, no early stopping; contenders alternate and medians are reported. ``skflow module + loop``
(skflow's module in the peers' loop) splits skflow's overhead into loop and module; ``--profile``
adds a cProfile breakdown of one MAFDensity fit.

    OMP_NUM_THREADS=1 python -m benchmarks.tabular_speed --epochs 3 --repeats 5 --score-rows 100000 \\
        --sample-rows 10000
"""

import argparse
import copy

import numpy as np
import torch

from benchmarks.harness import data, peers, report, runner
from skflow import MAFDensity

SK, COMPILED, ZUKO, HAND = ("skflow MAFDensity", "skflow MAFDensity, compile=True", "zuko MAF + loop",
                            "skflow module + loop")
#: skflow's MAF modules (``net_.module_`` of a one-epoch MAFDensity fit), one per shape.
MODULES = {}


class ModuleByHand(peers.ZukoFlow):
    """skflow's MAF module trained by the peers' hand loop on standardised rows."""

    def fit(self, X):
        key = (X.shape[1], self.n_transforms, tuple(self.hidden_features))
        if key not in MODULES:
            MODULES[key] = MAFDensity(n_transforms=self.n_transforms, hidden_features=self.hidden_features,
                                      base="normal", max_epochs=1, validation_fraction=0.0, device="cpu",
                                      random_state=0).fit(X[:64]).net_.module_
        torch.manual_seed(self.random_state)
        module = copy.deepcopy(MODULES[key])
        Z = torch.as_tensor((X - X.mean(axis=0)) / X.std(axis=0), dtype=torch.float32)

        def epoch():
            return (-module.log_prob(b).mean() for b in Z[torch.randperm(len(Z))].split(self.batch_size))

        self.n_iter_ = peers.hand_loop(module, epoch, max_epochs=self.max_epochs, lr=self.lr,
                                       weight_decay=self.weight_decay)
        return self


def contenders(batch_size):
    common = {"n_transforms": 5, "hidden_features": (128, 128), "batch_size": batch_size, "lr": 1e-3,
              "weight_decay": 1e-5, "validation_fraction": 0.0}
    skflow = {**common, "base": "normal", "device": "cpu"}
    return {SK: lambda seed, epochs: MAFDensity(**skflow, max_epochs=epochs, random_state=seed),
            COMPILED: lambda seed, epochs: MAFDensity(**skflow, compile=True, max_epochs=epochs,
                                                      random_state=seed),
            ZUKO: lambda seed, epochs: peers.ZukoFlow(**common, max_epochs=epochs, random_state=seed),
            HAND: lambda seed, epochs: ModuleByHand(**common, max_epochs=epochs, random_state=seed)}


def profile_fit(X, epochs, batch_size):
    """cProfile one MAFDensity fit: seconds per part of the training step (functions found by name)."""
    import cProfile
    import pstats

    model = MAFDensity(max_epochs=epochs, batch_size=batch_size, validation_fraction=0.0, device="cpu",
                       base="normal", random_state=0)
    profiler = cProfile.Profile()
    profiler.runcall(model.fit, X)
    stats = pstats.Stats(profiler).stats

    def seconds(part, name):
        return sum(v[3] for (file, _, func), v in stats.items() if part in file and func == name)

    total = max(v[3] for (file, _, func), v in stats.items() if "/skflow/" in file and func == "fit")
    return total, {
        "forward (flow log_prob, loss)": seconds("/skflow/", "infer"),
        "backward": seconds("torch/_tensor.py", "backward"),
        "AdamW step (without the closure)": seconds("torch/optim/adam", "step")
        - seconds("skorch/", "step_fn"),
        "callbacks: DivergenceGuard.on_grad_computed (clipping + finiteness check)": seconds(
            "/skflow/", "on_grad_computed"),
        "callbacks: DivergenceGuard.on_batch_end (loss check)": seconds("/skflow/", "on_batch_end"),
        "callbacks: all notify() calls": seconds("skorch/net.py", "notify"),
        "zero_grad": seconds("skorch/net.py", "_zero_grad_optimizer"),
        "history.record_batch": seconds("skorch/history.py", "record_batch"),
        "batch iterator": seconds("/skflow/", "__iter__"),
    }


def main(argv=None):
    p = runner.parser(__doc__)
    p.add_argument("--set", default="magic", choices=data.SETS)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--score-rows", type=int, default=200_000)
    p.add_argument("--sample-rows", type=int, default=20_000)
    p.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--contenders", nargs="+", default=[SK, COMPILED, ZUKO, HAND],
                   choices=[SK, COMPILED, ZUKO, HAND])
    tiny = {"set": "breast_cancer", "epochs": 1, "repeats": 1, "score_rows": 500, "sample_rows": 200,
            "contenders": [SK, ZUKO, HAND]}
    args = runner.parse(p, argv, __name__, tiny=tiny)
    X_train, X_test = data.split_set(args.set, 0, args.max_rows)
    X_score = np.resize(X_test, (args.score_rows, X_test.shape[1]))
    makers = {name: make for name, make in contenders(args.batch_size).items() if name in args.contenders}
    # an untimed warm-up fit of one epoch: first-call costs and torch.compile's compilation
    warm_up = {name: runner.timed(make(0, 1).fit, X_train)[0].wall for name, make in makers.items()}
    fit_times, fitted = {name: [] for name in makers}, {}
    for repeat in range(args.repeats):
        for name, make in makers.items():
            timer, fitted[name] = runner.timed(make(repeat, args.epochs).fit, X_train)
            fit_times[name].append(timer.wall)
            print(f"fit {name} repeat {repeat}: {timer.wall:.2f} s", flush=True)
    score_times, sample_times = {SK: [], ZUKO: []}, {SK: [], ZUKO: []}
    for repeat in range(args.repeats):
        for name, times in score_times.items():
            times.append(runner.timed(fitted[name].score_samples, X_score)[0].wall)
            timer, _ = runner.timed(fitted[name].sample, args.sample_rows, random_state=repeat)
            sample_times[name].append(timer.wall)
    fit, score, sample = ({k: float(np.median(v)) for k, v in times.items()}
                          for times in (fit_times, score_times, sample_times))
    lines = [
        (f"Data: {args.set}, training split of seed 0 ({len(X_train)} x {X_train.shape[1]}); {args.epochs} "
         f"epochs, batch {args.batch_size}, AdamW lr 1e-3, weight decay 1e-5, gradient norm clipped to 10. "
         f"CPU, torch {torch.__version__}; {args.repeats} repeats, medians (min-max)."), "", "## Fit", "",
        *report.table(["contender", "median fit (s)", "min-max (s)", "per epoch (ms)", "ratio to zuko",
                       "warm-up fit (s)"],
                      [[name, f"{fit[name]:.2f}", f"{min(v):.2f}-{max(v):.2f}",
                        f"{1000 * fit[name] / args.epochs:.0f}", f"{fit[name] / fit[ZUKO]:.3f}",
                        f"{warm_up[name]:.1f}"] for name, v in fit_times.items()]), "",
        "The warm-up fit (one epoch, untimed) carries first-call costs and torch.compile's compilation.", "",
        (f"Fit-time ratio skflow / zuko: **{fit[SK] / fit[ZUKO]:.3f}** eager, "
         f"**{fit.get(COMPILED, np.nan) / fit[ZUKO]:.3f}** with `compile=True` (target <= 0.8). skorch loop "
         f"overhead (MAFDensity / same module by hand): {fit[SK] / fit.get(HAND, np.nan):.3f}; module cost "
         f"(skflow module / zuko module, same loop): {fit.get(HAND, np.nan) / fit[ZUKO]:.3f}."), "",
        "## Score and sample", "",
        *report.table(["contender", f"score_samples of {args.score_rows} rows (s)", "rows/s",
                       f"sample {args.sample_rows} rows (s)", "rows/s"],
                      [[name, f"{score[name]:.3f}", f"{args.score_rows / score[name]:,.0f}",
                        f"{sample[name]:.3f}", f"{args.sample_rows / sample[name]:,.0f}"]
                       for name in score]), "",
        (f"Time ratios skflow / zuko: score {score[SK] / score[ZUKO]:.3f}, sample "
         f"{sample[SK] / sample[ZUKO]:.3f} (below 1: skflow faster).")]
    if args.profile:
        total, parts = profile_fit(X_train, args.epochs, args.batch_size)
        lines += ["", "## Where MAFDensity's fit time goes (cProfile, one extra fit)", "",
                  (f"Total under the profiler: {total:.2f} s (profiling inflates Python-heavy parts). The "
                   "notify() row contains the callback rows above it."), "",
                  *report.table(["part", "s", "share"],
                                [[k, f"{v:.2f}", f"{100 * v / total:.1f} %"] for k, v in parts.items()])]
    report.publish(args, "Tabular speed: skflow MAFDensity vs zuko MAF + hand-written loop", __doc__, lines)


if __name__ == "__main__":
    runner.cli(main)
