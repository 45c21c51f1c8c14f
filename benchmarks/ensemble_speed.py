"""What an ensemble of small flows costs, and what its members are worth, stacked or one by one.

Parts: ``stack``, one ``NSFDensity(n_transforms=2, hidden_features=(16, 16))`` against ``FlowMixture``
of five, stacked (the default) and one by one, on 1,000 training rows of three ADBench sets;
``regressor``, the default ``FlowRegressor()`` against one zuko conditional NSF on the conditional
benchmark's tasks; ``step``, one training step of five stacked members against one. Wall seconds on
one thread. Protocol and results: ``results/ensemble_speed.md``.

    OMP_NUM_THREADS=1 python -m benchmarks.ensemble_speed --seeds 0 1 2
"""

from functools import partial

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from benchmarks import conditional_density
from benchmarks.harness import data, peers, report, runner
from skflow import FlowMixture, MAFDensity, NSFDensity
from skflow.training.inference import resolve_device
from skflow.training.stacked import StackedMembers

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
    five = {"n_estimators": 5, "stack": None, "random_state": seed}  # the flows' cost, no classical densities
    models = {"one": small_nsf(seed, args.epochs),
              "stacked": FlowMixture(small_nsf(None, args.epochs), **five),
              "one_by_one": FlowMixture(small_nsf(None, args.epochs), n_jobs=1, **five)}
    for key, model in models.items():
        timer, _ = runner.timed(model.fit, train)
        record[f"{key}_s"], record[key] = timer.wall, model.score(test)
        if key != "one":
            record[f"{key}_members"] = float(np.mean([m.score(test) for m in model.estimators_]))
            record[f"{key}_epochs"] = [int(m.n_iter_) for m in model.estimators_]
    return record


def run_regressor(task, seed, args):
    X_train, X_test, Y_train, Y_test, _ = conditional_density.split_task(task, seed, args.max_rows)
    flow = conditional_density.Flow(partial(small_nsf, None), 5, seed)  # FlowRegressor()'s flows
    zuko = peers.ZukoRegressor(seed, max_epochs=args.epochs or 300)
    zuko.device, record = DEVICE, {"n_train": len(X_train)}
    for key, model in (("flow", conditional_density.shorten(flow, args.epochs)), ("zuko", zuko)):
        timer, _ = runner.timed(model.fit, X_train, Y_train)
        record.update({f"{key}_s": timer.wall, key: float(np.mean(model.log_density(X_test, Y_test)))})
    return record


def run_step(name, args):
    estimator = {"NSF(2, 16x16)": small_nsf(0), "MAFDensity()": MAFDensity()}[name]
    estimator.table_ = None  # the module builder reads it (no mixed table)
    modules = [estimator._build_module(12, 0).to(DEVICE) for _ in range(5)]
    stack = StackedMembers(modules)
    one, five = torch.randn(64, 12, device=DEVICE), torch.randn(5, 64, 12, device=DEVICE)
    steps = {"one_ms": lambda: (-modules[0](one).mean()).backward(),
             "stacked_ms": lambda: (-stack(five).mean(-1).sum()).backward()}
    record = {}
    for key, step in steps.items():
        for _ in range(5):
            step()
        with runner.Timer() as timer:  # (it synchronises CUDA on entry and exit)
            for _ in range(args.steps):
                step()
        record[key] = 1e3 * timer.wall / args.steps
    return record


def column(records, key):
    return np.array([r[key] for r in records], dtype=float)


def stack_report(records, sets):
    rows = []
    for name in sets:
        if rs := [r for r in records if r["set"] == name]:
            one, stacked, one_by_one = (column(rs, f"{key}_s") for key in ("one", "stacked", "one_by_one"))
            paired = column(rs, "stacked_members") - column(rs, "one_by_one_members")
            rows.append([report.seeds_label(name, len(rs)), report.fmt(one, 1), report.fmt(stacked, 1),
                         report.fmt(stacked / one), report.fmt(one_by_one, 1), report.fmt(one_by_one / one),
                         report.fmt(stacked / one_by_one), *(report.fmt(column(rs, k)) for k in
                                                             ("one", "stacked", "one_by_one")),
                         report.fmt(paired, 3)])
    return report.table(["set", "one fit (s)", "5 stacked (s)", "stacked / one", "5 one by one (s)",
                         "one by one / one", "stacked / one by one", "one NSF (nats)", "stacked mixture",
                         "one-by-one mixture", "members: stacked - one by one"], rows)


def regressor_report(records, tasks):
    rows = []
    for task in tasks:
        if rs := [r for r in records if r["task"] == task]:
            flow, zuko = column(rs, "flow_s"), column(rs, "zuko_s")
            rows.append([report.seeds_label(task, len(rs)), rs[0]["n_train"], report.fmt(flow, 1),
                         report.fmt(zuko, 1), report.fmt(flow / zuko), report.fmt(column(rs, "flow")),
                         report.fmt(column(rs, "zuko"))])
    return report.table(["task", "n_train", "FlowRegressor() (s)", "zuko NSF (s)", "ratio",
                         "FlowRegressor() (nats)", "zuko NSF (nats)"], rows)


def main(argv=None):
    global DEVICE
    p = runner.parser(__doc__, seeds=[0, 1, 2], sets=SETS, cache=True)
    p.add_argument("--part", nargs="+", choices=["stack", "regressor", "step"],
                   default=["stack", "regressor", "step"])
    p.add_argument("--device", default="cpu", help='torch device of every model ("auto": CUDA if present)')
    p.add_argument("--steps", type=int, default=200, help="training steps timed per model in --part step")
    p.add_argument("--tasks", nargs="+", choices=list(conditional_density.TASKS),
                   default=list(conditional_density.TASKS))
    tiny = {"sets": ["vowels"], "tasks": ["engel"], "max_rows": 120, "steps": 3}
    args = runner.parse(p, argv, __name__, tiny=tiny)
    DEVICE = resolve_device(args.device)
    cache = runner.Cache(args.cache, ["part", "set", "task", "seed"], args.report_only)
    warm = np.random.default_rng(0).normal(size=(64, 2))  # first-call costs (imports, allocators) untimed
    FlowMixture(small_nsf(0, 2), n_estimators=2, stack=None, random_state=0).fit(warm)
    lines = []
    if "stack" in args.part:
        records = [cache.run(partial(run_stack, name, seed, args), part="stack", set=name, task=None,
                             seed=seed) for name in args.sets for seed in args.seeds]
        lines += ["## Five NSF(2, 16x16) on 1,000 rows: fit time and held-out log-likelihood (nats/row)", "",
                  *stack_report([r for r in records if r], args.sets), ""]
    if "regressor" in args.part:
        records = [cache.run(partial(run_regressor, task, seed, args), part="regressor", set=None, task=task,
                             seed=seed) for task in args.tasks for seed in args.seeds
                   if seed in conditional_density.TASK_SEEDS.get(task, args.seeds)]
        lines += [("## Default FlowRegressor against one zuko conditional NSF (hand loop): fit time and "
                   "log p(y | x)"), "", *regressor_report([r for r in records if r], args.tasks), ""]
    if "step" in args.part:
        steps = {name: cache.run(partial(run_step, name, args), part="step", set=name, task=None, seed=0)
                 for name in ("NSF(2, 16x16)", "MAFDensity()")}
        rows = [[name, f"{r['one_ms']:.2f}", f"{r['stacked_ms']:.2f}", f"{r['stacked_ms'] / r['one_ms']:.2f}"]
                for name, r in steps.items() if r]
        lines += ["## One training step: five stacked members against one (ms)", "",
                  *report.table(["model", "one member", "five stacked", "ratio"], rows), ""]
    report.publish(args, "Ensembles of small flows: stacked training", __doc__, lines)


if __name__ == "__main__":
    runner.cli(main)
