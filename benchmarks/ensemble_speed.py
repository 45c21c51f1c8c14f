"""What an ensemble of small flows costs, and what its members are worth, stacked or one by one.

Part 1 (``--part stack``): on tables of 1,000 training rows (ADBench vowels, cardio and pendigits,
each subsampled to 1,250 rows and split 1,000 / 250 per seed), the fit time of one
``NSFDensity(n_transforms=2, hidden_features=(16, 16))`` against ``FlowMixture`` of five of them
trained as one stacked module (the default) and fitted one by one (``n_jobs=1``), with the
held-out log-likelihood of the mixtures and the mean of their members' (stacked against one by
one: the same seeds, so a paired difference).

Part 2 (``--part regressor``): on the conditional benchmark's tasks (``benchmarks.conditional_density``:
same splits and dequantized targets), the fit time of the default ``FlowRegressor()`` (five stacked
2-layer 16x16 NSFs) against one zuko conditional NSF trained by the hand loop, and both held-out
log p(y | x).

Part 3 (``--part step``): one training step (forward and backward of a 64-row batch, 12 features),
five stacked members against one member, for the small NSF and for the default ``MAFDensity()``:
what stacking saves per step when nothing else (epochs, early stopping) differs.

Timings are wall-clock seconds on one thread; the ratios come from the same run and machine.

    OMP_NUM_THREADS=1 python -m benchmarks.ensemble_speed --seeds 0 1 2
"""

from functools import partial

import numpy as np
from sklearn.model_selection import train_test_split

from benchmarks import conditional_density
from benchmarks.harness import data, peers, report, runner
from skflow import FlowMixture, FlowRegressor, MAFDensity, NSFDensity
from skflow.training.inference import resolve_device

SETS = ["vowels", "cardio", "pendigits"]
N_ROWS, N_TRAIN = 1250, 1000


DEVICE = "cpu"  # main() sets --device


def small_nsf(seed, epochs=None):
    nsf = NSFDensity(n_transforms=2, hidden_features=(16, 16), random_state=seed, device=DEVICE)
    return nsf if epochs is None else nsf.set_params(max_epochs=epochs)


def run_stack(name, seed, args):
    X = data.subsample(data.load_set(name), args.max_rows or N_ROWS, seed=seed)
    train, test = train_test_split(X, train_size=min(N_TRAIN, int(0.8 * len(X))), random_state=seed)
    record = {"n_train": len(train), "n_features": X.shape[1]}
    models = {
        "one": small_nsf(seed, args.epochs),
        "stacked": FlowMixture(small_nsf(None, args.epochs), n_estimators=5, random_state=seed),
        "one_by_one": FlowMixture(small_nsf(None, args.epochs), n_estimators=5, random_state=seed, n_jobs=1),
    }
    for key, model in models.items():
        with runner.Timer() as timer:
            model.fit(train)
        record[f"{key}_s"] = timer.wall
        record[key] = model.score(test)
        if key != "one":
            record[f"{key}_members"] = float(np.mean([m.score(test) for m in model.estimators_]))
            record[f"{key}_epochs"] = [int(m.n_iter_) for m in model.estimators_]
    return record


def run_regressor(task, seed, args):
    X_train, X_test, Y_train, Y_test, _ = conditional_density.split_task(task, seed, args.max_rows)

    def y(Y):
        return Y if Y.shape[1] > 1 else Y[:, 0]

    record = {"n_train": len(X_train)}
    flow = runner.shorten(FlowRegressor(small_nsf(None), random_state=seed), args.epochs)
    if args.epochs is not None:
        flow.set_params(estimator=small_nsf(None, args.epochs))
    with runner.Timer() as timer:
        flow.fit(X_train, y(Y_train))
    record.update(flow_s=timer.wall, flow=float(np.mean(flow.score_samples(X_test, y(Y_test)))))
    zuko = peers.ZukoRegressor(seed, max_epochs=args.epochs or 300)
    zuko.device = DEVICE
    with runner.Timer() as timer:
        zuko.fit(X_train, Y_train)
    record.update(zuko_s=timer.wall, zuko=float(np.mean(zuko.log_density(X_test, Y_test))))
    return record


def run_step(name, args):
    import torch

    from skflow.training.stacked import StackedMembers

    estimator = {"NSF(2, 16x16)": small_nsf(0), "MAFDensity()": MAFDensity()}[name]
    estimator.table_ = None  # the module builder reads it (no mixed table)
    modules = [estimator._build_module(12, 0).to(DEVICE) for _ in range(5)]
    stack = StackedMembers(modules)
    one, five = torch.randn(64, 12, device=DEVICE), torch.randn(5, 64, 12, device=DEVICE)
    steps = {
        "one_ms": lambda: (-modules[0](one).mean()).backward(),
        "stacked_ms": lambda: (-stack(five).mean(-1).sum()).backward(),
    }
    record = {}
    for key, step in steps.items():
        for _ in range(5):
            step()
        sync = torch.cuda.synchronize if torch.device(DEVICE).type == "cuda" else lambda: None
        sync()
        with runner.Timer() as timer:
            for _ in range(args.steps):
                step()
            sync()
        record[key] = 1e3 * timer.wall / args.steps
    return record


def _column(records, key):
    return np.array([r[key] for r in records], dtype=float)


def stack_report(records, args):
    rows = []
    for name in args.sets:
        rs = [r for r in records if r["set"] == name]
        if not rs:
            continue
        one = _column(rs, "one_s")
        paired = _column(rs, "stacked_members") - _column(rs, "one_by_one_members")
        rows.append(
            [
                report.seeds_label(name, len(rs)),
                report.fmt(one, 1),
                report.fmt(_column(rs, "stacked_s"), 1),
                report.fmt(_column(rs, "stacked_s") / one),
                report.fmt(_column(rs, "one_by_one_s"), 1),
                report.fmt(_column(rs, "one_by_one_s") / one),
                report.fmt(_column(rs, "stacked_s") / _column(rs, "one_by_one_s")),
                report.fmt(_column(rs, "one")),
                report.fmt(_column(rs, "stacked")),
                report.fmt(_column(rs, "one_by_one")),
                report.fmt(paired, 3),
            ]
        )
    header = [
        "set",
        "one fit (s)",
        "5 stacked (s)",
        "stacked / one",
        "5 one by one (s)",
        "one by one / one",
        "stacked / one by one",
        "one NSF (nats)",
        "stacked mixture",
        "one-by-one mixture",
        "members: stacked - one by one",
    ]
    return report.table(header, rows)


def regressor_report(records, args):
    rows = []
    for task in args.tasks:
        rs = [r for r in records if r["task"] == task]
        if rs:
            ratio = _column(rs, "flow_s") / _column(rs, "zuko_s")
            rows.append(
                [
                    report.seeds_label(task, len(rs)),
                    rs[0]["n_train"],
                    report.fmt(_column(rs, "flow_s"), 1),
                    report.fmt(_column(rs, "zuko_s"), 1),
                    report.fmt(ratio),
                    report.fmt(_column(rs, "flow")),
                    report.fmt(_column(rs, "zuko")),
                ]
            )
    header = [
        "task",
        "n_train",
        "FlowRegressor() (s)",
        "zuko NSF (s)",
        "ratio",
        "FlowRegressor() (nats)",
        "zuko NSF (nats)",
    ]
    return report.table(header, rows)


def main(argv=None):
    p = runner.parser(__doc__, seeds=[0, 1, 2], sets=SETS, cache=True)
    p.add_argument(
        "--part", nargs="+", choices=["stack", "regressor", "step"], default=["stack", "regressor", "step"]
    )
    p.add_argument("--device", default="cpu", help='torch device of every model ("auto": CUDA if present)')
    p.add_argument("--steps", type=int, default=200, help="training steps timed per model in --part step")
    p.add_argument(
        "--tasks", nargs="+", choices=list(conditional_density.TASKS), default=list(conditional_density.TASKS)
    )
    args = runner.parse(
        p, argv, __name__, tiny={"sets": ["vowels"], "tasks": ["engel"], "max_rows": 120, "steps": 3}
    )
    global DEVICE
    DEVICE = resolve_device(args.device)
    cache = runner.Cache(args.cache, ["part", "set", "task", "seed"], args.report_only)
    warm = np.random.default_rng(0).normal(
        size=(64, 2)
    )  # first-call costs (imports, allocators) out of the timings
    FlowMixture(small_nsf(0, 2), n_estimators=2, random_state=0).fit(warm)
    lines = report.header("Ensembles of small flows: stacked training", args.command, __doc__)
    if "stack" in args.part:
        records = [
            cache.run(partial(run_stack, name, seed, args), part="stack", set=name, task=None, seed=seed)
            for name in args.sets
            for seed in args.seeds
        ]
        lines += [
            "## Five NSF(2, 16x16) on 1,000 rows: fit time and held-out log-likelihood (nats/row)",
            "",
            *stack_report([r for r in records if r], args),
            "",
        ]
    if "regressor" in args.part:
        runs = [
            (task, seed)
            for task in args.tasks
            for seed in args.seeds
            if seed in conditional_density.TASK_SEEDS.get(task, args.seeds)
        ]
        records = [
            cache.run(
                partial(run_regressor, task, seed, args), part="regressor", set=None, task=task, seed=seed
            )
            for task, seed in runs
        ]
        title = (
            "## Default FlowRegressor against one zuko conditional NSF (hand loop): fit time and log p(y | x)"
        )
        lines += [title, "", *regressor_report([r for r in records if r], args), ""]
    if "step" in args.part:
        rows = []
        for name in ("NSF(2, 16x16)", "MAFDensity()"):
            r = cache.run(partial(run_step, name, args), part="step", set=name, task=None, seed=0)
            if r:
                rows.append(
                    [
                        name,
                        f"{r['one_ms']:.2f}",
                        f"{r['stacked_ms']:.2f}",
                        f"{r['stacked_ms'] / r['one_ms']:.2f}",
                    ]
                )
        lines += [
            "## One training step: five stacked members against one (ms)",
            "",
            *report.table(["model", "one member", "five stacked", "ratio"], rows),
            "",
        ]
    report.write(args.out / f"{args.name}.md", lines)


if __name__ == "__main__":
    runner.cli(main)
