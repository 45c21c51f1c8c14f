"""Held-out conditional log-likelihood ``log p(y | x)`` of FlowRegressor against peers.

Seven regression tasks (``../shared/data/tables`` and scikit-learn's diabetes): the same one-hot X,
80/20 split and targets for every method, integer targets dequantized once per task and seed. The
``Flow`` methods are FlowRegressor candidates (``xK``: ``n_estimators=K``), the others the peers of
``harness.peers``; ``--mixtures`` adds the cross-family mixtures. Protocol and results:
``results/conditional_density.md``.

    OMP_NUM_THREADS=1 python -m benchmarks.conditional_density --seeds 0 1 2
"""

import itertools
from functools import partial

import numpy as np
import pandas as pd
from scipy.special import logsumexp
from sklearn.datasets import load_diabetes
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split

from benchmarks.harness import data, peers, report, runner
from skflow import FlowRegressor, MAFDensity, NSFDensity

COVERAGE = 0.9
#: task -> (table, target columns, rows kept); diabetes comes with scikit-learn.
TASKS = {"engel": ("engel", ["foodexp"], None), "fair": ("fair", ["affairs"], None),
         "randhie": ("randhie", ["mdvis"], 5000), "penguins mass": ("penguins", ["body_mass_g"], None),
         "penguins bills": ("penguins", ["bill_length_mm", "bill_depth_mm"], None),
         "cars": ("cars", ["Miles_per_Gallon"], None), "diabetes": (None, ["target"], None)}
SMALL = ["engel", "penguins mass", "penguins bills", "cars", "diabetes"]
TASK_SEEDS = {"randhie": [0]}


def split_task(name, seed, max_rows=None):
    """``(X_train, X_test, Y_train, Y_test, notes)``: one-hot features and targets (n, k) of a seeded
    split, integer targets with the same dequantization noise for every method."""
    table, targets, keep = TASKS[name]
    frame = load_diabetes(as_frame=True).frame if table is None else data.read_table(table)
    notes, n = [], len(frame)
    for rows in (keep, max_rows):
        if rows is not None and len(frame) > rows:
            frame = frame.sample(n=rows, random_state=0)
            notes.append(f"subsampled to {rows} of {n} rows (seeded)")
    dropped = len(frame) - len(frame := frame.dropna())
    Y, features = frame[targets].to_numpy(dtype=np.float64), frame.drop(columns=targets)
    categorical = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    X = pd.get_dummies(features, columns=categorical, drop_first=True, dtype=np.float64).to_numpy(np.float64)
    integer = np.all(Y == np.round(Y), axis=0)
    notes.append(f"{dropped} rows with empty cells dropped" if dropped else "no empty cells")
    notes += [f"one-hot: {', '.join(categorical)}"] * bool(categorical)
    notes += [f"dequantized: {', '.join(t for t, i in zip(targets, integer) if i)}"] * bool(integer.any())
    Y = Y + np.random.default_rng([seed, 2024]).uniform(-0.5, 0.5, size=Y.shape) * integer
    return (*train_test_split(X, Y, test_size=data.TEST_FRACTION, random_state=seed), "; ".join(notes))


def column(Y):
    return Y if Y.shape[1] > 1 else Y[:, 0]


class Flow:
    """A FlowRegressor in the peers' interface: ``FlowRegressor()`` where ``make()`` is None, else
    ``n_estimators`` flows of the estimator ``make()``."""

    def __init__(self, make, n_estimators, seed):
        estimator = make()
        options = {} if estimator is None else {"n_estimators": n_estimators}
        self.model = FlowRegressor(estimator, random_state=seed, **options)

    def fit(self, X, Y):
        self.model.fit(X, column(Y))
        return self

    def log_density(self, X, Y):
        return self.model.score_samples(X, column(Y))

    def interval(self, X, coverage, kind="central"):
        return self.model.predict_interval(X, coverage, kind=kind)

    def mean(self, X):
        return self.model.predict(X).reshape(len(X), -1)

    def info(self):
        return report.epochs(self.model)


def nsf(n_transforms, hidden, **params):
    return NSFDensity(n_transforms=n_transforms, hidden_features=(hidden, hidden), **params)


def maf64():
    return MAFDensity(hidden_features=(64, 64), base="normal")


FLOWS = {  # name -> (estimator factory, n_estimators)
    "Flow default": (lambda: None, 1), "Flow NSF 3x32": (lambda: nsf(3, 32), 1),
    "Flow NSF 5x64": (lambda: nsf(5, 64), 1), "Flow MAF": (maf64, 1),
    "Flow NSF 3x32 x5": (lambda: nsf(3, 32), 5),
    "Flow NSF 3x32 wd1e-2": (lambda: nsf(3, 32, weight_decay=1e-2), 1),
    "Flow NSF 3x32 4 bins": (lambda: nsf(3, 32, spline_bins=4), 1),
    "Flow NSF 3x32 val 0.2": (lambda: nsf(3, 32, validation_fraction=0.2, patience=30), 1),
    "Flow NSF 2x16": (lambda: nsf(2, 16), 1), "Flow NSF 2x16 x5": (lambda: nsf(2, 16), 5),
    "Flow NSF 2x16 x10": (lambda: nsf(2, 16), 10), "Flow NSF 1x16 x5": (lambda: nsf(1, 16), 5),
    "Flow NSF 2x16 wd1 x5": (lambda: nsf(2, 16, weight_decay=1.0), 5),
    "Flow NSF 3x32 4 bins x5": (lambda: nsf(3, 32, spline_bins=4), 5),
    "Flow NSF 2x16 4 bins x5": (lambda: nsf(2, 16, spline_bins=4), 5),
}
METHODS = {**{name: partial(Flow, *spec) for name, spec in FLOWS.items()},
           "zuko NSF": peers.ZukoRegressor, "NGBoost": peers.NGBoostPeer,
           "NGBoost (val. stop)": partial(peers.NGBoostPeer, early_stopping=True, n_estimators=2000),
           "GMM (BIC)": peers.ConditionalGMM, "GP": peers.GPPeer, "HGB quantile": peers.QuantileHGB}
DEFAULT_METHODS = ["Flow default", "Flow NSF 3x32", "Flow NSF 5x64", "Flow MAF", "zuko NSF", "NGBoost",
                   "NGBoost (val. stop)", "GMM (BIC)", "GP", "HGB quantile"]
DEFAULT = "Flow default"
#: The fifth run's FlowRegressors (each five flows), scored alone and in pairs.
MIXTURES = {"MAF x5": lambda s: FlowRegressor(maf64(), random_state=s),
            "MAF x5, feature_noise 0.1": lambda s: FlowRegressor(maf64(), feature_noise=0.1, random_state=s),
            "NSF 2x16 x5 (default)": lambda s: FlowRegressor(random_state=s),
            "NSF 2x16 x5, feature_noise 0.05": lambda s: FlowRegressor(feature_noise=0.05, random_state=s),
            "NSF 2x16 x5, feature_noise 0.1": lambda s: FlowRegressor(feature_noise=0.1, random_state=s)}


def shorten(model, epochs):
    """``--tiny``: as ``runner.shorten``; a default FlowRegressor gets its NSF with ``epochs`` epochs."""
    regressor = model.model if isinstance(model, Flow) else model
    if epochs and isinstance(regressor, FlowRegressor) and regressor.estimator is None:
        regressor.set_params(estimator=nsf(2, 16))
    runner.shorten(regressor, epochs)
    return model


def covered(interval, y):
    return {"coverage": float(np.mean((interval[:, 0] <= y) & (y <= interval[:, 1]))),
            "width": float(np.mean(interval[:, 1] - interval[:, 0]))}


def run_one(task, seed, method, args):
    X_train, X_test, Y_train, Y_test, notes = split_task(task, seed, args.max_rows)
    record = {"n_train": len(X_train), "n_test": len(X_test), "n_features": X_train.shape[1],
              "n_targets": Y_train.shape[1], "notes": notes}
    model = shorten(METHODS[method](seed), args.epochs)
    try:
        timer, _ = runner.timed(model.fit, X_train, Y_train)
    except NotImplementedError as error:
        return {**record, "skipped": str(error)}
    record.update(fit_s=timer.wall, info=model.info())
    if model.log_density is not None:
        log_density = np.asarray(model.log_density(X_test, Y_test), dtype=np.float64)
        record.update(mean=float(np.mean(log_density)), min=float(np.min(log_density)))
        values, counts = np.unique(Y_train[:, 0], return_counts=True)
        if Y_train.shape[1] == 1 and counts.max() >= 0.1 * len(Y_train):  # a point mass (fair: affairs == 0)
            atom = Y_test[:, 0] == values[counts.argmax()]
            record.update(atom=float(values[counts.argmax()]), atom_fraction=float(atom.mean()),
                          mean_atom=float(np.mean(log_density[atom])),
                          mean_rest=float(np.mean(log_density[~atom])))
    if model.interval is not None and Y_train.shape[1] == 1:
        timer, interval = runner.timed(model.interval, X_test, COVERAGE)
        record.update(covered(interval, Y_test[:, 0]), interval_s=timer.wall)
        if isinstance(model, Flow):  # the shortest intervals, beside the central ones
            shortest = covered(model.interval(X_test, COVERAGE, kind="shortest"), Y_test[:, 0])
            record.update({f"{k}_shortest": v for k, v in shortest.items()})
    if model.mean is not None:
        record["r2"] = float(r2_score(Y_test, model.mean(X_test)))
    return record


def run_mixtures(task, seed, args):
    """Each FlowRegressor of ``MIXTURES`` and each pair as one equal-weight mixture: held-out log p(y | x)."""
    X_train, X_test, Y_train, Y_test, _ = split_task(task, seed, args.max_rows)
    rows = {name: shorten(make(seed), args.epochs).fit(X_train, column(Y_train)).score_samples(
        X_test, column(Y_test)) for name, make in MIXTURES.items()}
    rows.update({f"{a} + {b}": logsumexp([rows[a], rows[b]], axis=0) - np.log(2)
                 for a, b in itertools.combinations(MIXTURES, 2)})
    return {"scores": {name: float(np.mean(v)) for name, v in rows.items()}}


def means(records, task, methods, key="mean"):
    values = {m: [r[key] for r in records if r["task"] == task and r["method"] == m and key in r]
              for m in methods}
    return {m: float(np.mean(v)) for m, v in values.items() if v}


def listed(items):
    return f" ({', '.join(items)})." if items else "."


def summary(records, tasks, methods):
    per_task = {t: means(records, t, methods) for t in tasks}
    best = lambda m: max(m, key=m.get)
    won = [t for t, m in per_task.items() if m and best(m) == DEFAULT]
    lines = [f"- {DEFAULT} has the best mean held-out log-likelihood on {len(won)} of {len(tasks)} tasks"
             + listed(won)]
    for flow in (m for m in methods if m in FLOWS and m != DEFAULT):
        beat = [t for t, m in per_task.items() if flow in m and DEFAULT in m and m[flow] > m[DEFAULT]]
        lines.append(f"- {flow} beats {DEFAULT} on {len(beat)} of {len(tasks)} tasks" + listed(beat))
    flows = {t: {k: v for k, v in m.items() if k in FLOWS} for t, m in per_task.items()}
    coverage = {t: c[DEFAULT] for t in tasks if DEFAULT in (c := means(records, t, [DEFAULT], "coverage"))}
    inside = "yes" if all(0.87 <= c <= 0.93 for c in coverage.values()) else "no"
    best_of = lambda per: "; ".join(f"{t}: {best(m)}" for t, m in per.items() if m) + "."
    return [*lines, "- Best per task: " + best_of(per_task),
            "- Best FlowRegressor per task: " + best_of(flows),
            f"- {DEFAULT} 90% coverage (mean over seeds) in [0.87, 0.93] on every task with a 1-D target: "
            f"{inside} (" + ", ".join(f"{t} {c:.3f}" for t, c in coverage.items()) + ")."]


def paired(records, tasks, methods):
    """Per seed, method minus the default on the same split; mean ± std over seeds."""
    rows = []
    for task in tasks:
        rs = [r for r in records if r["task"] == task and "mean" in r]
        ref = {r["seed"]: r["mean"] for r in rs if r["method"] == DEFAULT}
        diffs = [[r["mean"] - ref[r["seed"]] for r in rs if r["method"] == m and r["seed"] in ref]
                 for m in methods]
        if ref:
            rows.append([report.seeds_label(task, len(ref)), *(report.fmt(d) if d else "—" for d in diffs)])
    return report.table(["task", *methods], rows)


def point_mass(records, task, methods):
    atoms = [r for r in records if r["task"] == task and "atom" in r]
    ms = [m for m in methods if any(r["method"] == m for r in atoms)]
    share = np.mean([r["atom_fraction"] for r in atoms])
    rows = [[f"{task}, {label}", *(report.fmt([r[key] for r in atoms if r["method"] == m]) for m in ms)]
            for label, key in (("y at the atom", "mean_atom"), ("other y", "mean_rest"))]
    return [f"## Point mass on {task}: y = {atoms[0]['atom']:g} on {share:.0%} of the test rows", "",
            *report.table(["part", *ms], rows), ""]


def mixtures_table(mixtures):
    small = [t for t in SMALL if any(r["task"] == t for r in mixtures)]
    scored = [(np.mean(v), name, v) for name in mixtures[0]["scores"]
              for v in [[np.mean([r["scores"][name] for r in mixtures if r["task"] == t]) for t in small]]]
    rows = [[name, *(f"{v:.3f}" for v in per_task), f"{mean:.3f}"]
            for mean, name, per_task in sorted(scored, reverse=True)]
    return ["", "## Mixtures across flow families (each pair of five-flow FlowRegressors as one mixture)", "",
            *report.table(["model", *small, f"mean of the {len(small)}"], rows)]


def write_report(records, mixtures, args, tasks):
    methods = [m for m in args.methods if any(r["method"] == m and "skipped" not in r for r in records)]
    flows = [m for m in methods if m in FLOWS]

    def grid(key, digits=2, columns=None, **options):
        columns = [m for m in columns or methods if any(r["method"] == m and key in r for r in records)]
        return report.grid(records, key, tasks, columns, row="task", col="method",
                           cell=lambda v: report.fmt(v, digits), **options)

    notes = {t: next(r for r in records if r["task"] == t) for t in tasks}
    fitted = {t: "; ".join(f"{m}: " + " / ".join(r["info"] for r in sorted(records, key=lambda r: r["seed"])
                                                 if r["task"] == t and r["method"] == m and "info" in r)
                           for m in methods if any(r["task"] == t and r["method"] == m for r in records))
              for t in tasks}
    skipped = "; ".join(f"{m} ({s})" for m, s in sorted({(r["method"], r["skipped"]) for r in records
                                                         if "skipped" in r}))
    lines = ["Tasks (train/test rows, encoded features, targets; notes):", "",
             *(f"- {t}: {r['n_train']}/{r['n_test']}, {r['n_features']} features, {r['n_targets']} "
               f"target(s); {r['notes']}" for t, r in notes.items())]
    if records:
        lines += [
            "", ("## Mean held-out log p(y | x) (nats per row, in y's units; higher is better; mean ± std "
                 "over seeds)"), "", *grid("mean", best=max), "", *summary(records, tasks, methods), "",
            (f"Difference to {DEFAULT}, paired by seed (same split; nats per row; > 0: better than the "
             "default):"), "", *paired(records, tasks, [m for m in methods if m != DEFAULT and any(
                r["method"] == m and "mean" in r for r in records)]), "",
            "## Coverage of the predicted 90% intervals (1-D targets)", "", *grid("coverage", 3), "",
            "## Mean width of the predicted 90% intervals (y's units)", "", *grid("width"), "",
            ("## FlowRegressor's shortest 90% intervals (`predict_interval(X, 0.9, kind=\"shortest\")`): "
             "coverage, then mean width"), "", *grid("coverage_shortest", 3, flows), "",
            *grid("width_shortest", 2, flows), "", "## R^2 of the conditional mean", "", *grid("r2", 3), "",
            "## Fit time (s)", "", *grid("fit_s", 1), "",
            "## Interval time (s, on the test split)", "", *grid("interval_s"), "",
            *(line for t in tasks if any(r["task"] == t and "atom" in r for r in records)
              for line in point_mass(records, t, methods)),
            "## What was fitted", "", *(f"- {t} (per seed): {text}" for t, text in fitted.items()),
            *(["", f"Not run: {skipped}"] if skipped else [])]
    if mixtures:
        lines += mixtures_table(mixtures)
    report.publish(args, "Conditional density p(y | x): held-out log-likelihood", __doc__, lines)


def plot_engel(path_density, path_intervals, epochs, seed=0):
    """Two figures on engel's seed-0 split: densities at four incomes, and 90% intervals against income."""
    plt = report.pyplot()
    X_train, X_test, Y_train, Y_test, _ = split_task("engel", seed)
    flow = shorten(METHODS[DEFAULT](seed), epochs).fit(X_train, Y_train)
    ngb = shorten(peers.NGBoostPeer(seed), epochs).fit(X_train, Y_train)
    hgb = peers.QuantileHGB(seed).fit(X_train, Y_train)
    X_all, Y_all = np.vstack([X_train, X_test]), np.vstack([Y_train, Y_test])
    incomes, grid = np.quantile(X_all[:, 0], [0.1, 0.5, 0.9, 0.98]), np.linspace(0, Y_all.max() * 1.3, 600)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    left.scatter(X_all[:, 0], Y_all[:, 0], s=8, color="0.6", label=f"all {len(X_all)} households")
    for k, (income, color) in enumerate(zip(incomes, plt.cm.viridis(np.linspace(0, 0.85, len(incomes))))):
        X = np.full((len(grid), 1), income)
        p_flow, p_ngb = np.exp(flow.log_density(X, grid[:, None])), np.exp(ngb.log_density(X, grid[:, None]))
        width = 0.12 * (X_all.max() - X_all.min()) / max(p_flow.max(), p_ngb.max())
        left.plot(income + width * p_flow, grid, color=color, lw=1.8)
        left.plot(income + width * p_ngb, grid, color=color, lw=1.2, ls="--")
        left.axvline(income, color=color, lw=0.6, ls=":")
        right.plot(grid, p_flow, color=color, lw=1.8, label=f"income {income:.0f}: FlowRegressor")
        right.plot(grid, p_ngb, color=color, lw=1.2, ls="--", label=f"income {income:.0f}: NGBoost")
        near = np.abs(X_all[:, 0] - income) < 0.05 * income
        right.plot(Y_all[near, 0], np.zeros(near.sum()) - 0.0004 * (1 + k), "|", color=color, ms=8)
    left.set(xlabel="income", ylabel="foodexp", title="engel, seed-0 training split: p(foodexp | income) "
             "drawn sideways;\nFlowRegressor() solid, NGBRegressor(Dist=Normal) at its defaults dashed")
    right.set(xlabel="foodexp", ylabel="p(foodexp | income)",
              title="Conditional densities (ticks: households within 5% of that income)")
    for ax in (left, right):
        ax.title.set_fontsize(9)
    right.legend(fontsize=7)
    report.save(fig, path_density, dpi=120)
    line = np.linspace(X_all[:, 0].min(), X_all[:, 0].max(), 300)[:, None]
    flow_iv, hgb_iv = flow.interval(line, COVERAGE), hgb.interval(line, COVERAGE)
    cover = {name: covered(model.interval(X_test, COVERAGE), Y_test[:, 0])["coverage"]
             for name, model in (("flow", flow), ("hgb", hgb))}
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    ax.fill_between(line[:, 0], flow_iv[:, 0], flow_iv[:, 1], color="C0", alpha=0.25,
                    label="FlowRegressor 90% interval")
    ax.plot(line[:, 0], hgb_iv[:, 0], color="C3", lw=1.5, label="quantile HGB 5% / 95%")
    ax.plot(line[:, 0], hgb_iv[:, 1], color="C3", lw=1.5)
    ax.scatter(X_train[:, 0], Y_train[:, 0], s=6, color="0.7", label="train")
    ax.scatter(X_test[:, 0], Y_test[:, 0], s=14, color="k", label="test (seed 0)")
    ax.set(xlabel="income", ylabel="foodexp", title=f"engel, seed 0: test coverage FlowRegressor "
           f"{cover['flow']:.2f}, quantile HGB {cover['hgb']:.2f}")
    ax.legend(fontsize=8)
    report.save(fig, path_intervals, dpi=120)


def main(argv=None):
    p = runner.parser(__doc__, seeds=(0, 1, 2), cache=True)
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--methods", nargs="*", default=DEFAULT_METHODS, choices=list(METHODS))
    p.add_argument("--mixtures", action="store_true", help="the cross-family mixtures on the small tasks")
    p.add_argument("--no-figures", action="store_true", help="skip the engel figures")
    tiny = {"tasks": ["engel", "diabetes"], "mixtures": True,
            "methods": ["Flow default", "Flow MAF", "zuko NSF", "NGBoost", "GMM (BIC)", "GP", "HGB quantile"]}
    args = runner.parse(p, argv, __name__, tiny=tiny)
    cache = runner.Cache(args.cache, ("task", "seed", "method"), args.report_only)
    for seed in args.seeds:
        for task in (t for t in args.tasks if seed in TASK_SEEDS.get(t, args.seeds)):
            for method in args.methods:
                cache.run(partial(run_one, task, seed, method, args), task=task, seed=seed, method=method)
            if args.mixtures and task in SMALL:
                cache.run(partial(run_mixtures, task, seed, args), task=task, seed=seed, method="mixtures")
    records = cache.select(task=args.tasks, seed=args.seeds, method=args.methods)
    mixtures = cache.select(task=args.tasks, seed=args.seeds, method=["mixtures"]) if args.mixtures else []
    write_report(records, mixtures, args, [t for t in args.tasks if any(r["task"] == t for r in records)])
    figures = [args.out / f"{args.name}_{kind}.png" for kind in ("engel", "intervals")]
    try:
        if "engel" in args.tasks and not args.no_figures:
            plot_engel(*figures, args.epochs)
    except runner.Unavailable as error:  # the figures show NGBoost
        print(f"no engel figures: {error}")


if __name__ == "__main__":
    runner.cli(main)
