"""Held-out log-likelihood of skflow's tabular flows against tuned peers.

Seeded 80/20 splits of each set, nats per held-out row in the units of the raw data. Peers: a
GaussianMixture and a KernelDensity tuned by 3-fold CV on standardised data, and zuko's MAF and NSF
with skflow's architecture and recipe in the hand loop (``harness.peers.ZukoFlow``).

    OMP_NUM_THREADS=1 python -m benchmarks.tabular_density --seeds 0 1 2
"""

from functools import partial

import numpy as np

from benchmarks.harness import data, peers, report, runner
from skflow import FlowMixture, MADEDensity, MAFDensity, NSFDensity, RealNVPDensity

MODELS = {
    "MAF": lambda seed: MAFDensity(random_state=seed),
    "RealNVP": lambda seed: RealNVPDensity(random_state=seed),
    "MADE": lambda seed: MADEDensity(random_state=seed),
    "MADE MoG10": lambda seed: MADEDensity(n_components=10, random_state=seed),
    "zuko MAF": lambda seed: peers.ZukoFlow("MAF", random_state=seed),
    "NSF": lambda seed: NSFDensity(random_state=seed),
    "MAF x5": lambda seed: FlowMixture(MAFDensity(), n_estimators=5, stack=None, random_state=seed),
    "zuko NSF": lambda seed: peers.ZukoFlow("NSF", random_state=seed),
    "GMM (CV)": peers.gmm_cv,
    "KDE (CV)": peers.kde_cv,
}
PEERS = ("zuko MAF", "zuko NSF", "GMM (CV)", "KDE (CV)")
DEFAULT_MODELS = ("MAF", "NSF", "RealNVP", "MADE", "MADE MoG10", *PEERS)


def describe(model):
    if isinstance(model, peers.Standardized):
        return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in model.params_.items())
    return report.epochs(model)


def run_one(name, seed, model_name, args):
    X_train, X_test = data.split_set(name, seed, args.max_rows)
    model = runner.shorten(MODELS[model_name](seed), args.epochs)
    timer, _ = runner.timed(model.fit, X_train)
    log_density = model.score_samples(X_test)
    outside = np.any((X_test < X_train.min(axis=0)) | (X_test > X_train.max(axis=0)), axis=1)
    return {"shape": [*X_train.shape, len(X_test)], "mean": float(np.mean(log_density)),
            "min": float(np.min(log_density)), "p1": float(np.percentile(log_density, 1)),
            "finite": bool(np.all(np.isfinite(log_density))),
            "mean_outside": float(np.mean(log_density[outside])) if outside.any() else None,
            "n_outside": int(outside.sum()), "fit_s": timer.wall, "info": describe(model)}


def beats_peers(means, sets, model):
    """One line: on how many sets ``model`` beats every peer."""
    verdicts = [(n, means[n][model] > max(means[n][p] for p in PEERS if p in means[n])) for n in sets
                if model in means[n] and any(p in means[n] for p in PEERS)]
    won = [n for n, v in verdicts if v]
    return (f"Default {model} beats every peer ({', '.join(PEERS)}) on {len(won)} of {len(verdicts)} sets"
            + (f" ({', '.join(won)})." if won else "."))


def write_report(records, args, sets):
    shapes = {r["set"]: r["shape"] for r in records}
    means = {n: {m: np.mean(v) for m in args.models
                 if (v := [r["mean"] for r in records if r["set"] == n and r["model"] == m])} for n in sets}

    def grid(key, reduce=None):
        cell = report.reduced(reduce) if reduce else report.fmt
        return report.grid(records, key, sets, args.models, cell=cell)

    outside = ", ".join(f"{n} {np.mean([r['n_outside'] for r in records if r['set'] == n]):.0f}"
                        for n in sets)
    rows = ", ".join(f"{n} {shapes[n][0]}/{shapes[n][2]}x{shapes[n][1]}" for n in sets)
    winners = "; ".join(f"{n}: {max(means[n], key=means[n].get)}" for n in sets)
    report.publish(args, "Tabular density: held-out log-likelihood", __doc__, [
        (f"Seeds {', '.join(map(str, args.seeds))} (each its own 80/20 split and model seeds; mean ± std "
         f"over seeds, nats per held-out row, raw units; higher is better). Rows (train/test): {rows}"), "",
        "## Mean held-out log-likelihood (nats/row)", "",
        (f"Plot: `{args.name}.png` (per set and model, median over seeds of the difference to the tuned GMM, "
         "clipped at +-10 nats)."), "", *grid("mean"), "",
        f"Winner per set (mean over seeds): {winners}", "", beats_peers(means, sets, "MAF"), "",
        beats_peers(means, sets, "NSF"), "", "## Tails: worst held-out rows", "",
        "Minimum per-row held-out log-density (the worst over seeds):", "", *grid("min", np.min), "",
        "1st percentile of per-row held-out log-density (mean over seeds):", "", *grid("p1", np.mean), "",
        (f"Mean log-density of the held-out rows with at least one value outside the training range "
         f"(mean over seeds; count per seed: {outside}):"), "", *grid("mean_outside", np.mean), "",
        "## Fit time (s, mean over seeds) and what was fitted", "", *grid("fit_s", np.mean), "",
        *(f"- {n}: " + "; ".join(f"{r['model']} (seed {r['seed']}): {r['info']}"
                                 for r in records if r["set"] == n) for n in sets)])


def plot(records, sets, models, path, limit=10.0):
    """Bars: median over seeds of (held-out log-likelihood - tuned GMM's), clipped to +-limit."""
    plt = report.pyplot()
    models = [m for m in models if m != "GMM (CV)"]
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(models)
    for j, model in enumerate(models):
        x = np.arange(len(sets)) + (j - (len(models) - 1) / 2) * width
        gaps = []
        for name in sets:
            ref = {r["seed"]: r["mean"] for r in records if r["set"] == name and r["model"] == "GMM (CV)"}
            diff = [r["mean"] - ref[r["seed"]] for r in records
                    if r["set"] == name and r["model"] == model and r["seed"] in ref]
            gaps.append(np.median(diff) if diff else np.nan)
        ax.bar(x, np.clip(gaps, -limit, limit), width, label=model)
        for xi, g in zip(x, gaps):
            if np.isfinite(g) and abs(g) > limit:
                ax.text(xi, np.sign(g) * limit, f"{g:.3g}", rotation=90, fontsize=6, ha="center",
                        va="top" if g < 0 else "bottom")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(sets)), sets)
    ax.set(ylabel="held-out log-lik. - tuned GMM\n(nats/row, median over seeds)",
           ylim=(-limit * 1.1, limit * 1.1))
    ax.legend(ncol=3, fontsize=7, loc="upper left")
    report.save(fig, path, dpi=120)


def main(argv=None):
    p = runner.parser(__doc__, seeds=(0, 1, 2), sets=data.SETS, cache=True)
    p.add_argument("--models", nargs="*", default=list(DEFAULT_MODELS), choices=list(MODELS))
    tiny = {"sets": ["breast_cancer"], "models": ["MAF", "NSF", "zuko MAF", "GMM (CV)", "KDE (CV)"]}
    args = runner.parse(p, argv, __name__, tiny=tiny)
    cache = runner.Cache(args.cache, ("set", "seed", "model"), args.report_only)
    for seed in args.seeds:
        for name in args.sets:
            for model in args.models:
                cache.run(partial(run_one, name, seed, model, args), set=name, seed=seed, model=model)
    records = cache.select(set=args.sets, model=args.models, seed=args.seeds)
    sets = [s for s in args.sets if any(r["set"] == s for r in records)]
    write_report(records, args, sets)
    if "GMM (CV)" in args.models:
        plot(records, sets, args.models, args.out / f"{args.name}.png")


if __name__ == "__main__":
    runner.cli(main)
