"""Small numeric tables: seeded flow ensembles against a cross-validated GaussianMixture and KernelDensity.

Twelve real tables of 150 to 2,000 rows: scikit-learn's iris, wine, diabetes and breast_cancer; the
numeric columns of the shared tables penguins (without year), cars, engel, anes96 and fair
(2,000 rows); the inliers of ADBench's yeast, Pima and breastw. A confirming run (``--sets`` of
``CONFIRM``) takes the inliers of six other ADBench sets (at most 2,000 rows). Rows with an empty
cell are dropped (this compares complete-data densities). Each is split 75 / 25 per seed. Held-out mean
log-likelihood in nats per row, in the units of the data:

- ``FlowMixture()``, the README's small-table default: five seeded ``MAFDensity()`` stacked with a
  CV-tuned GaussianMixture and KernelDensity by held-out likelihood (``stack="auto"``), and the same
  five flows alone with equal weights (``FlowMixture(stack=None)``, scored from the same fit); the
  flows dequantize integer-valued columns themselves;
- ``GaussianMixture`` tuned by 3-fold CV over 1, 2, 3, 5, 8 components and full / diagonal
  covariances, and ``KernelDensity`` (Gaussian) tuned by 3-fold CV over 12 bandwidths from 0.03 to
  3, both on standardised columns (the scaling's log-determinant added back), fitted on training
  rows whose integer-valued columns carry the same uniform noise the flows train on.

    OMP_NUM_THREADS=1 python -m benchmarks.small_tables --seeds 0 1 2 3 4
"""

from functools import partial

import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.neighbors import KernelDensity

from benchmarks.harness import data, report, runner
from skflow import FlowMixture
from skflow.estimators.ensemble import mixture_log_density

SKLEARN = {"iris": load_iris, "wine": load_wine, "breast_cancer": load_breast_cancer,
           "diabetes": lambda: load_diabetes(scaled=False)}
TABLES = ["iris", "wine", "diabetes", "breast_cancer", "penguins", "cars", "engel", "anes96", "fair",
          "yeast", "Pima", "breastw"]
#: Tables no default was chosen on (``--sets`` them for a confirming run): ADBench inliers.
CONFIRM = ["vowels", "WBC", "cardio", "thyroid", "mammography", "Lymphography"]
ADBENCH = {"yeast": "47_yeast", "Pima": "29_Pima", "breastw": "4_breastw", "vowels": "40_vowels",
           "WBC": "42_WBC", "cardio": "6_cardio", "thyroid": "38_thyroid", "mammography": "23_mammography",
           "Lymphography": "21_Lymphography"}
METHODS = ["FlowMixture()", "FlowMixture(stack=None)", "GaussianMixture (CV)", "KernelDensity (CV)"]


def load(name):
    if name in SKLEARN:
        return SKLEARN[name]().data.astype(float)
    if name in ADBENCH:
        X, y = data.adbench(ADBENCH[name])
        return data.subsample(X[y == 0], 2000)
    frame = data.read_table(name).select_dtypes("number").dropna()
    frame = frame.drop(columns="year") if name == "penguins" else frame
    return data.subsample(frame.to_numpy(float), 2000)


def peers(seed):
    gmm = GridSearchCV(GaussianMixture(reg_covar=1e-4, max_iter=500, random_state=seed),
                       {"n_components": [1, 2, 3, 5, 8], "covariance_type": ["full", "diag"]}, cv=3)
    kde = GridSearchCV(KernelDensity(), {"bandwidth": np.logspace(-1.5, 0.5, 12)}, cv=3)
    return {"GaussianMixture (CV)": gmm, "KernelDensity (CV)": kde}


def run_one(name, seed, args):
    X = data.subsample(load(name), args.max_rows, seed)
    train, test = train_test_split(X, test_size=0.25, random_state=seed)
    record = {"n_train": len(train), "n_features": X.shape[1]}
    model = runner.shorten(FlowMixture(random_state=seed), args.epochs)
    with runner.Timer() as timer:
        record["FlowMixture()"] = model.fit(train).score(test)
    record["FlowMixture()_s"] = record["FlowMixture(stack=None)_s"] = timer.wall
    flows = mixture_log_density([m.score_samples(test) for m in model.estimators_])
    record["FlowMixture(stack=None)"] = flows.mean()
    record["weights"] = model.weights_.tolist()
    integer = np.all(train == np.round(train), axis=0)
    noisy = train + integer * np.random.default_rng(seed).uniform(-0.5, 0.5, train.shape)
    mean, scale = noisy.mean(axis=0), noisy.std(axis=0)
    for key, model in peers(seed).items():
        with runner.Timer() as timer:
            model.fit((noisy - mean) / scale)
        record[key] = model.score_samples((test - mean) / scale).mean() - np.log(scale).sum()
        record[f"{key}_s"] = timer.wall
    return record


def main(argv=None):
    p = runner.parser(__doc__, seeds=[0, 1, 2, 3, 4], sets=TABLES + CONFIRM, default_sets=TABLES,
                      cache=True)
    args = runner.parse(p, argv, __name__, tiny={"sets": ["iris", "engel"]})
    cache = runner.Cache(args.cache, ["set", "seed"], args.report_only)
    for name in args.sets:
        for seed in args.seeds:
            cache.run(partial(run_one, name, seed, args), set=name, seed=seed)
    records = cache.select(set=args.sets, seed=args.seeds)
    long = [dict(r, model=m, value=r[m]) for r in records for m in METHODS]
    wins = []
    for flow in METHODS[:2]:  # the stack=None column's fit time is the stacked fit's
        beat = [name for name in args.sets if (rs := [r for r in records if r["set"] == name])
                and all(np.mean([r[flow] for r in rs]) > np.mean([r[m] for r in rs]) for m in METHODS[2:])]
        wins.append(f"- {flow} beats both peers (mean over seeds) on {len(beat)} of "
                    f"{len({r['set'] for r in records})} tables: {', '.join(beat)}")
    times = [dict(r, model=m, value=r[f"{m}_s"]) for r in records for m in METHODS]
    report.write(args.out / f"{args.name}.md", [
        *report.header("Small numeric tables: flow ensembles against tuned GMM and KDE", args.command, __doc__),
        "## Held-out log-likelihood (nats per row, higher is better)", "",
        *report.grid(long, "value", args.sets, METHODS, best=max), "", *wins, "",
        "## FlowMixture() against the better peer, paired by split", "",
        *paired_table(records, args.sets), "",
        "## Fit time (s)", "", *report.grid(times, "value", args.sets, METHODS, best=min)])


def paired_table(records, sets):
    """Per table: FlowMixture() minus the peer with the better mean, split by split (mean, sd, z), and
    the stacking weights (flows' total, GaussianMixture's, KernelDensity's) averaged over splits."""
    rows = []
    for name in sets:
        if not (rs := [r for r in records if r["set"] == name]):
            continue
        peer = max(METHODS[2:], key=lambda m: np.mean([r[m] for r in rs]))
        diff = np.array([r["FlowMixture()"] - r[peer] for r in rs])
        z = diff.mean() / (diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else np.nan
        weights = np.mean([[sum(r["weights"][:-2]), *r["weights"][-2:]] for r in rs], axis=0)
        rows.append([report.seeds_label(name, len(rs)), peer, f"{diff.mean():+.3f} ± {diff.std(ddof=1):.3f}",
                     f"{z:+.1f}", " / ".join(f"{w:.2f}" for w in weights)])
    return report.table(["set", "better peer", "FlowMixture() - peer (nats/row)", "z",
                         "weights: flows / GMM / KDE"], rows)


if __name__ == "__main__":
    runner.cli(main)
