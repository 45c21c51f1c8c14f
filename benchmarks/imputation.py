"""Missing values: FlowImputer against scikit-learn's imputers, and incomplete rows in training.

Four complete numeric tables, cells removed completely at random (``mcar``, 20%) or at random given
the first column (``mar``), and the penguins with their own empty cells. Reported: point imputation
(NRMSE), 20 posterior draws (CRPS), held-out log-likelihood of the observed cells with and without
the incomplete training rows, and time. Protocol and results: ``results/imputation.md``.

    OMP_NUM_THREADS=1 python -m benchmarks.imputation --seeds 0 1 2
"""

from functools import partial

import numpy as np
from sklearn.base import clone
from sklearn.datasets import load_diabetes, load_wine
from sklearn.ensemble import ExtraTreesRegressor
from sklearn.experimental import enable_iterative_imputer  # noqa: F401
from sklearn.impute import IterativeImputer, KNNImputer
from sklearn.model_selection import train_test_split

from benchmarks.harness import data, report, runner
from skflow import FlowImputer

TABLES = ["wine", "diabetes", "breast_cancer", "pima", "penguins"]
PATTERNS = ["mcar", "mar"]
POINT = ["FlowImputer", "IterativeImputer", "missForest", "KNNImputer"]
N_DRAWS = 20


def load(name):
    if name == "wine":
        return load_wine().data
    if name == "diabetes":
        return load_diabetes(scaled=False).data
    if name == "pima":
        X, y = data.adbench("29_Pima")
        return X[y == 0]
    if name == "penguins":  # as published: strings, and empty cells in numbers and in sex
        return data.read_table("penguins")
    return data.load_set(name)


def remove(X, pattern, rng, reference):
    """X with cells removed in ``pattern`` (``reference``: the training rows, for the MAR threshold)."""
    if pattern == "mcar":
        hidden = rng.random(X.shape) < 0.2
    else:
        z = (X[:, 0] - reference[:, 0].mean()) / reference[:, 0].std()
        hidden = rng.random(X.shape) < 0.4 / (1 + np.exp(-2 * z[:, None]))
        hidden[:, 0] = False
    out = X.copy()
    out[hidden] = np.nan
    return out[~np.isnan(out).all(axis=1)], X[~np.isnan(out).all(axis=1)]


def crps(draws, truth):
    """Sample CRPS per cell: ``mean|X - y| - mean|X - X'| / 2`` over the draws (axis 0)."""
    spread = np.abs(draws[:, None] - draws[None]).mean(axis=(0, 1))
    return np.abs(draws - truth).mean(axis=0) - 0.5 * spread


def run_one(name, pattern, seed, args):
    rng = np.random.default_rng(seed)
    if name == "penguins":  # its own missing cells
        frame = load(name)
        frame = frame.iloc[: args.max_rows] if args.max_rows else frame
        train, test = train_test_split(frame, test_size=0.25, random_state=seed)
        return likelihoods(train, test, args, seed)
    X = data.subsample(load(name), args.max_rows, seed)
    train, test = train_test_split(X, test_size=0.25, random_state=seed)
    train_m, _ = remove(train, pattern, rng, train)
    test_m, test = remove(test, pattern, rng, train)
    hidden, scale = np.isnan(test_m), train.std(axis=0)
    imputers = {
        "FlowImputer": runner.shorten(FlowImputer(random_state=seed), args.epochs),
        "IterativeImputer": IterativeImputer(max_iter=10, random_state=seed),
        "missForest": IterativeImputer(ExtraTreesRegressor(n_estimators=10 if args.tiny else 100,
                                                           random_state=seed),  # --tiny: a smoke run
                                       max_iter=2 if args.tiny else 10, random_state=seed),
        "KNNImputer": KNNImputer(),
    }
    record = {"n_train": len(train), "n_features": X.shape[1], "missing": float(hidden.mean())}
    for key, imputer in imputers.items():
        with runner.Timer() as timer:
            filled = imputer.fit(train_m).transform(test_m)
        error = ((filled - test) / scale)[hidden]
        record.update({f"{key}_nrmse": float(np.sqrt(np.mean(error**2))), f"{key}_s": timer.wall})
    flow = imputers["FlowImputer"]
    draws = flow.sample(test_m, n_samples=N_DRAWS, random_state=seed)
    bayes = np.stack([IterativeImputer(max_iter=10, sample_posterior=True, random_state=s).fit(train_m)
                      .transform(test_m) for s in range(N_DRAWS)])
    cells = lambda D: (D / scale)[:, hidden]
    record["FlowImputer_crps"] = float(crps(cells(draws), (test / scale)[hidden]).mean())
    record["IterativeImputer_crps"] = float(crps(cells(bayes), (test / scale)[hidden]).mean())
    record.update(likelihoods(train_m, test_m, args, seed, flow.estimator_))
    return record


def likelihoods(train, test, args, seed, incomplete=None):
    """Held-out log-likelihood of the test rows' observed cells: fitted with incomplete rows, and on
    complete rows only."""
    template = FlowImputer(random_state=seed)._template().set_params(random_state=seed, stack=None)
    make = lambda: runner.shorten(clone(template), args.epochs)  # the same flows on complete rows, unstacked
    if incomplete is None:
        incomplete = make().fit(train)
    complete = train.dropna() if hasattr(train, "dropna") else train[~np.isnan(train).any(axis=1)]
    record = {"loglik_incomplete": incomplete.score(test), "n_complete": len(complete)}
    if len(complete) >= 20:
        record["loglik_complete_only"] = make().fit(complete).score(test)
    return record


def main(argv=None):
    p = runner.parser(__doc__, seeds=[0, 1, 2], sets=TABLES, cache=True)
    p.add_argument("--patterns", nargs="+", choices=PATTERNS, default=PATTERNS)
    args = runner.parse(p, argv, __name__, tiny={"sets": ["wine", "penguins"], "max_rows": 120})
    cache = runner.Cache(args.cache, ["set", "pattern", "seed"], args.report_only)
    for name in args.sets:
        for pattern in (["own"] if name == "penguins" else args.patterns):
            for seed in args.seeds:
                cache.run(partial(run_one, name, pattern, seed, args), set=name, pattern=pattern, seed=seed)
    records = [dict(r, case=f"{r['set']} {r['pattern']}") for r in cache.select(set=args.sets, seed=args.seeds)]
    cases = [f"{n} {p}" for n in args.sets for p in (["own"] if n == "penguins" else args.patterns)]
    rows = lambda key: report.grid(
        [dict(r, model=m, value=r.get(f"{m}_{key}")) for r in records for m in POINT], "value", cases, POINT,
        row="case", corner="table, pattern", best=min)
    loglik = report.grid([dict(r, model=m, value=r.get(k)) for r in records
                          for m, k in [("with incomplete rows", "loglik_incomplete"),
                                       ("complete rows only", "loglik_complete_only")]],
                         "value", cases, ["with incomplete rows", "complete rows only"], row="case",
                         corner="table, pattern", best=max)
    paired = []
    for case in cases:
        rs = [r for r in records if r["case"] == case and "FlowImputer_crps" in r]
        if rs:
            cells = [case]
            for key, peer in [("crps", "IterativeImputer"), ("nrmse", "IterativeImputer"), ("nrmse", "missForest")]:
                d = np.array([r[f"FlowImputer_{key}"] - r[f"{peer}_{key}"] for r in rs])
                se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else np.nan
                cells.append(f"{d.mean():+.3f} (z {d.mean() / se:+.1f})")
            paired.append(cells)
    report.write(args.out / f"{args.name}.md", [
        *report.header("Missing values: imputation and incomplete rows", args.command, __doc__),
        "## Point imputation: NRMSE on the removed test cells (lower is better)", "", *rows("nrmse"), "",
        f"## {N_DRAWS} posterior draws: CRPS on the removed test cells (lower is better)", "",
        *rows("crps"), "",
        "## Paired differences, FlowImputer minus a peer, over seeds (negative: FlowImputer better)", "",
        *report.table(["table, pattern", "CRPS - IterativeImputer's", "NRMSE - IterativeImputer's",
                       "NRMSE - missForest's"], paired), "",
        "## Held-out log-likelihood of the test rows' observed cells (nats per row)", "", *loglik, "",
        "## Fit + fill time (s)", "", *rows("s"), ""])


if __name__ == "__main__":
    runner.cli(main)
