"""ROC AUC of FlowOutlierDetector and of the detectors users already have, on the 16 ADBench sets.

Protocols: ``semi-supervised`` (fit on half the normal rows, score the rest and every outlier) and
``unsupervised`` (fit and score all rows); training sets over ``--max-train`` rows subsampled alike
for every method. Peers: ``harness.peers.OUTLIER_PEERS`` at their defaults. Protocol and results:
``results/outlier_detection.md``; the committed scores are ``results/outlier_detection.json``:

    OMP_NUM_THREADS=1 python -m benchmarks.outlier_detection --seeds 0 1 2 3 4 --max-train 2000
    OMP_NUM_THREADS=1 python -m benchmarks.outlier_detection --report-only \\
        --cache benchmarks/results/outlier_detection.json --methods skflow skflow-plain skflow-pm0.2 \\
        skflow-normal skflow-normal-pm IForest LOF OCSVM GMM-BIC KDE ECOD COPOD KNN
"""

import warnings
from functools import partial

import numpy as np
from sklearn.metrics import roc_auc_score

from benchmarks.harness import data, peers, report, runner
from skflow import FlowOutlierDetector, MAFDensity
from skflow.estimators.ensemble import mixture_log_density

SKFLOW = {  # name -> (MAFDensity parameters or None for the default detector, detector parameters)
    "skflow": (None, {}), "skflow-plain": ({}, {}), "skflow-pm0.2": ({"point_mass_noise": 0.2}, {}),
    "skflow-normal": ({"base": "normal"}, {}),
    "skflow-normal-pm": ({"base": "normal", "point_mass_noise": 0.4}, {}),
    "skflow-ens5": (None, {"n_estimators": 5}),  # its records also hold the copies' exact-mixture AUC
    # faster densities for the default (issue #19: median fit+score <= 10 s)
    "skflow-3x64": ({"point_mass_noise": 0.4, "n_transforms": 3, "hidden_features": (64, 64)}, {}),
    "skflow-b256": ({"point_mass_noise": 0.4, "batch_size": 256, "lr": 2e-3}, {}),
    "skflow-3x64-b256": ({"point_mass_noise": 0.4, "n_transforms": 3, "hidden_features": (64, 64),
                         "batch_size": 256, "lr": 2e-3}, {}),
    # the README's choice for contaminated rows, at the default's fast settings, on both protocols
    "skflow-normal-b256": ({"base": "normal", "batch_size": 256, "lr": 2e-3}, {}),
    # five stacked seeded copies of the normal-base flow (issue #19: both protocols)
    "skflow-normal-ens5-b256": ({"base": "normal", "batch_size": 256, "lr": 2e-3}, {"n_estimators": 5}),
}
METHODS = [*SKFLOW, *peers.OUTLIER_PEERS]
PROTOCOLS = ("semi-supervised", "unsupervised")


def detector(method, seed, protocol):
    if method not in SKFLOW:
        return peers.OUTLIER_PEERS[method](seed, protocol)
    density, params = SKFLOW[method]
    estimator = None if density is None else MAFDensity(**density)
    return FlowOutlierDetector(estimator, random_state=seed, **params)


def split(y, protocol, seed, max_train):
    """(train rows, test rows) of one seed of one protocol (unsupervised: the same rows)."""
    rng, train, test = np.random.RandomState(seed), np.arange(len(y)), None
    if protocol == "semi-supervised":
        normal = rng.permutation(np.flatnonzero(y == 0))
        half = len(normal) // 2
        train, test = normal[:half], np.concatenate([normal[half:], np.flatnonzero(y == 1)])
    if len(train) > max_train:
        train = np.sort(rng.choice(train, max_train, replace=False))
    return train, train if test is None else test


def run_one(method, protocol, X, y, seed, args):
    train, test = split(y, protocol, seed, args.max_train)
    model = runner.shorten(detector(method, seed, protocol), args.epochs)
    with runner.Timer() as timer, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X[train])
        normality = peers.normality(model, protocol)(X[test])
    record = {"auc": float(roc_auc_score(y[test], -normality)), "seconds": timer.wall}
    if isinstance(model, FlowOutlierDetector) and len(model.estimators_) > 1:  # the copies' exact mixture
        mixture = mixture_log_density([member.score_samples(X[test]) for member in model.estimators_])
        record["auc_mixture"] = float(roc_auc_score(y[test], -mixture))
    return record


def combination_table(records):
    """Per set, ROC AUC of the copies' mean log-density (the detector's rule) and of their exact mixture."""
    rows, sets = [], sorted({r["set"] for r in records}, key=lambda s: int(s.split("_")[0]))
    for name in sets:
        rs = [r for r in records if r["set"] == name]
        mean, mixture = np.array([r["auc"] for r in rs]), np.array([r["auc_mixture"] for r in rs])
        rows.append([report.seeds_label(name, len(rs)), report.fmt(mean, 3), report.fmt(mixture, 3),
                     report.fmt(mixture - mean, 3)])
    mean, mixture = np.array([r["auc"] for r in records]), np.array([r["auc_mixture"] for r in records])
    diff = mixture - mean
    z = diff.mean() / (diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 and diff.std() > 0 else np.nan
    rows.append(["all (paired over sets and seeds)", f"{mean.mean():.3f}", f"{mixture.mean():.3f}",
                 f"{diff.mean():+.4f} (z = {z:.2f})"])
    return report.table(["set", "mean of log-densities", "exact mixture", "mixture - mean"], rows)


def bold_best(row, methods):
    return [f"**{row[m]:.3f}**" if row[m] == max(row.values()) else f"{row[m]:.3f}" for m in methods]


def protocol_table(records, sets, methods):
    """Mean AUC per set and method (best in bold; gap = best peer - skflow), the means and the gaps."""
    auc = {(m, s): [r["auc"] for r in records if r["method"] == m and r["set"] == s]
           for m in methods for s in sets}
    present = [m for m in methods if any(auc[m, s] for s in sets)]
    rows, means, gaps = [], {m: [] for m in present}, {}
    for name in sets:
        row = {m: np.mean(auc[m, name]) for m in present if auc[m, name]}
        if len(row) < len(present):
            continue
        peer_best = max((v for m, v in row.items() if not m.startswith("skflow")), default=np.nan)
        gaps[name] = peer_best - row["skflow"] if "skflow" in row else np.nan
        rows.append([name, *bold_best(row, present), f"{gaps[name]:+.3f}"])
        for m in present:
            means[m].append(row[m])
    mean = {m: float(np.mean(v)) for m, v in means.items()}
    seconds = [f"{np.median([r['seconds'] for r in records if r['method'] == m]):.2f}" for m in present]
    rows += [["**mean**", *bold_best(mean, present), ""], ["median seconds per fit+score", *seconds, ""]]
    return report.table(["set", *present, "gap"], rows), mean, gaps, present


def target_check(mean, gaps):
    """One sentence: does skflow have the best mean and no set 0.05 behind?"""
    peer_means = {m: v for m, v in mean.items() if not m.startswith("skflow")}
    if "skflow" not in mean or not peer_means:
        return ""
    best = max(peer_means, key=peer_means.get)
    behind = ", ".join(f"{name} ({gap:+.3f})" for name, gap in gaps.items() if gap > 0.05) or "none"
    met = mean["skflow"] > peer_means[best] and behind == "none"
    return (f"Target (skflow's default has the best mean and trails the best peer by at most 0.05 on every "
            f"set): **{'met' if met else 'NOT met'}**. skflow mean {mean['skflow']:.3f}, best peer {best} "
            f"{peer_means[best]:.3f}; sets more than 0.05 behind: {behind}.")


def plot(summary, path):
    plt = report.pyplot()
    fig, axes = plt.subplots(len(summary), 1, figsize=(12, 4.2 * len(summary)), squeeze=False)
    for ax, (protocol, (records, sets, mean, present)) in zip(axes[:, 0], summary.items()):
        for method in present:
            auc = [np.mean([r["auc"] for r in records if r["method"] == method and r["set"] == s] or [np.nan])
                   for s in sets]
            style = ({"color": "crimson", "marker": "*", "s": 140, "zorder": 3} if method == "skflow" else
                     {"color": plt.cm.tab20(METHODS.index(method) % 20), "marker": "o", "s": 25,
                      "alpha": 0.7})
            ax.scatter(np.arange(len(sets)), auc, label=f"{method} (mean {mean[method]:.3f})", **style)
        ax.set_xticks(np.arange(len(sets)), [n.split("_", 1)[1] for n in sets], rotation=35, ha="right")
        ax.set(ylabel="ROC AUC", title=f"ADBench, {protocol} protocol")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=3, loc="lower left")
    report.save(fig, path, dpi=120)


def main(argv=None):
    p = runner.parser(__doc__, seeds=range(3), cache=True)
    p.add_argument("--unsupervised-seeds", type=int, nargs="*", default=[0])
    p.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS)
    p.add_argument("--max-train", type=int, default=5000, help="subsample larger training sets to this")
    p.add_argument("--sets", nargs="*", default=None, help="ADBench file stems (default: all 16)")
    p.add_argument("--methods", nargs="*", default=["skflow", *peers.OUTLIER_PEERS], choices=METHODS)
    tiny = {"sets": ["42_WBC", "45_wine"], "max_train": 60,
            "methods": ["skflow", "IForest", "LOF", "GMM-BIC", "KNN"]}
    args = runner.parse(p, argv, __name__, tiny=tiny)
    sets = args.sets or data.adbench_names()
    cache = runner.Cache(args.cache, ("protocol", "method", "set", "seed"), args.report_only)
    for protocol, seeds in zip(PROTOCOLS, (args.seeds, args.unsupervised_seeds)):
        for name in sets if protocol in args.protocols else []:
            X, y = data.adbench(name)
            for seed in seeds:
                for method in args.methods:
                    cache.run(partial(run_one, method, protocol, X, y, seed, args), protocol=protocol,
                              method=method, set=name, seed=seed)
    lines = [("Entries are means over seeds (count in the header); best per row in bold; `gap` = best peer "
              "minus skflow (positive: a peer is better).")]
    summary = {}
    for protocol in PROTOCOLS:
        records = cache.select(protocol=[protocol], method=args.methods, set=sets)
        if records:
            n_seeds = max(len({r["seed"] for r in records if r["method"] == m}) for m in args.methods)
            table, mean, gaps, present = protocol_table(records, sets, args.methods)
            lines += ["", f"## {report.seeds_label(protocol, n_seeds)}", "", *table, "",
                      target_check(mean, gaps)]
            summary[protocol] = (records, sets, mean, present)
    for protocol in PROTOCOLS:
        combined = [r for r in cache.select(protocol=[protocol], method=["skflow-ens5"], set=sets)
                    if "auc_mixture" in r]
        if combined:
            lines += ["", f"## Five seeded copies ({protocol}): mean of log-densities or exact mixture", "",
                      *combination_table(combined)]
    report.publish(args, "Outlier detection: ROC AUC on the 16 ADBench sets", __doc__, lines)
    plot(summary, args.out / f"{args.name}.png")


if __name__ == "__main__":
    runner.cli(main)
