"""Held-out log-likelihood of skflow's tabular flows against tuned peers.

Every model is fit on the same training split (80 %) and scored on the same
test split (20 %) of each set, in nats per row in the units of the raw data.
Peers: a GaussianMixture and a KernelDensity tuned by 3-fold GridSearchCV on
the training split (fit on standardised data, the standardisation's
log-determinant added back), and zuko's MAF with skflow's default
architecture trained by a hand-written loop (see ``_tabular_data.ZukoMAF``).

Run (from the repository root; results are cached per run in --cache)::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=. python benchmarks/tabular_density.py --seeds 0 1 2
"""

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KernelDensity

from _tabular_data import SETS, ZukoMAF, split_set
from skflow import FlowMixture
from skflow.tabular import MADEDensity, MAFDensity, NSFDensity, RealNVPDensity

RESULTS = Path(__file__).resolve().parent / "results"


class Standardized:
    """Fit a scikit-learn density on standardised X; score in raw units."""

    def __init__(self, search):
        self.search = search

    def fit(self, X):
        self.mean_, self.scale_ = X.mean(axis=0), X.std(axis=0)
        self.search.fit((X - self.mean_) / self.scale_)
        self.params_ = self.search.best_params_
        return self

    def score_samples(self, X):
        return self.search.best_estimator_.score_samples((X - self.mean_) / self.scale_) - np.log(self.scale_).sum()


class TailGuarded:
    """A prototype of a tail guard for skflow (not in the package).

    Scores the mixture ``(1 - w) p_flow + w N(z; 0, s^2 I)`` in the flow's
    standardised space (``w = 1e-3``, ``s = 3``), so a held-out row far from
    every training row costs at most a Gaussian tail plus ``log w``, while a
    typical row loses at most ``-log(1 - w) = 0.001`` nats.
    """

    def __init__(self, estimator, weight=1e-3, scale=3.0):
        self.estimator, self.weight, self.scale = estimator, weight, scale

    def fit(self, X):
        self.estimator.fit(X)
        self.n_iter_ = self.estimator.n_iter_
        return self

    def score_samples(self, X):
        standardizer = self.estimator.standardizer_
        Z = standardizer.transform(X)
        log_flow = self.estimator.score_samples(X) - standardizer.log_det_
        d = Z.shape[1]
        log_wide = -0.5 * np.sum((Z / self.scale) ** 2, axis=1) - d * np.log(self.scale * np.sqrt(2 * np.pi))
        mixed = np.logaddexp(np.log1p(-self.weight) + log_flow, np.log(self.weight) + log_wide)
        return mixed + standardizer.log_det_


def _gmm(seed):
    grid = {"n_components": [1, 2, 5, 10, 20, 40], "covariance_type": ["full", "diag", "tied", "spherical"]}
    return Standardized(GridSearchCV(GaussianMixture(max_iter=300, random_state=seed), grid, cv=3))


def _kde(seed):
    grid = {"bandwidth": np.logspace(-1.5, 0.3, 13)}
    return Standardized(GridSearchCV(KernelDensity(rtol=1e-6), grid, cv=3))


#: The zuko peer copies the default MAFDensity's architecture and training settings.
_MAF_DEFAULTS = {k: MAFDensity().get_params()[k] for k in (
    "n_transforms", "hidden_features", "max_epochs", "batch_size", "lr", "weight_decay", "validation_fraction",
    "patience")}

#: zuko's NSF copies the default NSFDensity's architecture and training settings.
_NSF_DEFAULTS = {k: NSFDensity().get_params()[k] for k in (
    "n_transforms", "hidden_features", "max_epochs", "batch_size", "lr", "weight_decay", "validation_fraction",
    "patience")}

MODELS = {
    "MAF": lambda seed: MAFDensity(random_state=seed),
    "RealNVP": lambda seed: RealNVPDensity(random_state=seed),
    "MADE": lambda seed: MADEDensity(random_state=seed),
    "MADE MoG10": lambda seed: MADEDensity(n_components=10, random_state=seed),
    "zuko MAF": lambda seed: ZukoMAF(**_MAF_DEFAULTS, random_state=seed),
    "NSF": lambda seed: NSFDensity(random_state=seed),
    "MAF x5": lambda seed: FlowMixture(MAFDensity(), n_estimators=5, random_state=seed),
    "zuko NSF": lambda seed: ZukoMAF(**_NSF_DEFAULTS, flow="NSF", random_state=seed),
    "MAF + tail guard (prototype)": lambda seed: TailGuarded(MAFDensity(random_state=seed)),
    "RealNVP + tail guard (prototype)": lambda seed: TailGuarded(RealNVPDensity(random_state=seed)),
    "GMM (CV)": _gmm,
    "KDE (CV)": _kde,
}
PEERS = ("zuko MAF", "zuko NSF", "GMM (CV)", "KDE (CV)")
#: Run by default (the tail-guard prototypes only on request).
DEFAULT_MODELS = ("MAF", "NSF", "RealNVP", "MADE", "MADE MoG10", "zuko MAF", "zuko NSF", "GMM (CV)", "KDE (CV)")


_ESTIMATORS = {"MAFDensity": MAFDensity, "NSFDensity": NSFDensity, "RealNVPDensity": RealNVPDensity,
               "MADEDensity": MADEDensity}


def _variant(params):
    """A skflow estimator with non-default parameters (``"estimator"`` picks the class; MAF if absent)."""
    params = dict(params)
    estimator = _ESTIMATORS[params.pop("estimator", "MAFDensity")]
    return lambda seed: estimator(**{**params, "random_state": seed})


def _describe(model):
    if isinstance(model, Standardized):
        return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in model.params_.items())
    members = getattr(model, "estimators_", [model])  # a FlowMixture's copies
    return "+".join(str(member.n_iter_) for member in members) + " epochs"


def run_one(name, seed, model_name):
    X_train, X_test = split_set(name, seed)
    model = MODELS[model_name](seed)
    start = time.perf_counter()
    model.fit(X_train)
    fit_time = time.perf_counter() - start
    log_density = model.score_samples(X_test)
    outside = np.any((X_test < X_train.min(axis=0)) | (X_test > X_train.max(axis=0)), axis=1)
    return {
        "set": name, "seed": seed, "model": model_name, "shape": list(X_train.shape) + [len(X_test)],
        "mean": float(np.mean(log_density)), "min": float(np.min(log_density)),
        "p1": float(np.percentile(log_density, 1)), "finite": bool(np.all(np.isfinite(log_density))),
        "mean_outside": float(np.mean(log_density[outside])) if outside.any() else None,
        "n_outside": int(outside.sum()), "fit_s": fit_time, "info": _describe(model),
    }


def _fmt(values, digits=2):
    values = np.asarray(values, dtype=float)
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std():.{digits}f}"


def _table(records, sets, models, key, header, reduce=None):
    lines = [f"| {header} | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
    for name in sets:
        cells = []
        for model in models:
            values = [r[key] for r in records if r["set"] == name and r["model"] == model and r[key] is not None]
            if not values:
                cells.append("—")
            elif reduce is None:
                cells.append(_fmt(values))
            else:
                cells.append(f"{reduce(values):.4g}")
        n_seeds = len({r["seed"] for r in records if r["set"] == name})
        lines.append(f"| {name} ({n_seeds} seed{'s' * (n_seeds > 1)}) | " + " | ".join(cells) + " |")
    return lines


def _beats_peers(means, sets, model="MAF"):
    """One line: on how many sets the default ``model`` beats every peer."""
    verdicts = []
    for name in sets:
        peers = [means[name][p] for p in PEERS if p in means[name]]
        if model in means[name] and peers:
            verdicts.append((name, means[name][model] > max(peers)))
    won = [n for n, v in verdicts if v]
    return (f"Default {model} beats every peer ({', '.join(PEERS)}) on {len(won)} of {len(verdicts)} sets"
            + (f" ({', '.join(won)})." if won else "."))


def write_report(records, sets, models, seeds, command, path):
    shapes = {r["set"]: r["shape"] for r in records}
    best_peer = {}
    for name in sets:
        means = {m: np.mean([r["mean"] for r in records if r["set"] == name and r["model"] == m]) for m in models
                 if any(r["set"] == name and r["model"] == m for r in records)}
        best_peer[name] = means
    lines = [
        "# Tabular density: held-out log-likelihood",
        "",
        "Command (repository root):",
        "",
        f"    {command}",
        "",
        f"Seeds: {', '.join(map(str, seeds))}, as many per set as the row says (each seed draws its own 80/20 "
        "train/test split and model seeds). "
        "All rows of each set are used, outlier labels ignored. Mean log-density per held-out row, in nats, "
        "in the units of the raw data (higher is better); mean ± std over seeds. Every run used "
        "OMP_NUM_THREADS=1 on a shared 2-core CPU.",
        "",
        "Rows (train/test): " + ", ".join(f"{n} {shapes[n][0]}/{shapes[n][2]}x{shapes[n][1]}" for n in sets if n in shapes),
        "",
        "## Mean held-out log-likelihood (nats/row)",
        "",
        f"Plot: `{path.with_suffix('.png').name}` (per set and model, median over seeds of the difference to the tuned GMM, "
        "clipped at +-10 nats).",
        "",
        *_table(records, sets, models, "mean", "set"),
        "",
        "Winner per set (mean over seeds): "
        + "; ".join(f"{n}: {max(best_peer[n], key=best_peer[n].get)}" for n in sets if best_peer[n]),
        "",
        _beats_peers(best_peer, sets),
        "",
        _beats_peers(best_peer, sets, "NSF"),
        "",
        "## Tails: worst held-out rows",
        "",
        "Minimum per-row held-out log-density (the worst over seeds):",
        "",
        *_table(records, sets, models, "min", "set", reduce=np.min),
        "",
        "1st percentile of per-row held-out log-density (mean over seeds):",
        "",
        *_table(records, sets, models, "p1", "set", reduce=np.mean),
        "",
        "Mean log-density of the held-out rows with at least one value outside the training range "
        "(mean over seeds; count per seed: "
        + ", ".join(f"{n} {np.mean([r['n_outside'] for r in records if r['set'] == n]):.0f}" for n in sets if n in shapes)
        + "):",
        "",
        *_table(records, sets, models, "mean_outside", "set", reduce=np.mean),
        "",
        "## Fit time (s, mean over seeds) and what was fitted",
        "",
        *_table(records, sets, models, "fit_s", "set", reduce=np.mean),
        "",
    ]
    for name in sets:
        infos = [f"{r['model']} (seed {r['seed']}): {r['info']}" for r in records if r["set"] == name]
        lines.append(f"- {name}: " + "; ".join(infos))
    path.write_text("\n".join(lines) + "\n")


def plot_report(records, sets, models, path, limit=10.0):
    """Bars: median over seeds of (held-out log-likelihood - tuned GMM's), clipped to +-limit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
        gaps = np.asarray(gaps)
        ax.bar(x, np.clip(gaps, -limit, limit), width, label=model)
        for xi, g in zip(x, gaps):
            if np.isfinite(g) and abs(g) > limit:
                ax.text(xi, np.sign(g) * limit, f"{g:.3g}", rotation=90, fontsize=6, ha="center",
                        va="top" if g < 0 else "bottom")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(sets)), sets)
    ax.set_ylabel("held-out log-lik. - tuned GMM\n(nats/row, median over seeds)")
    ax.set_ylim(-limit * 1.1, limit * 1.1)
    ax.legend(ncol=3, fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    parser.add_argument("--models", nargs="*", default=list(DEFAULT_MODELS), choices=list(MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--variant", nargs="+", default=[], metavar="NAME=JSON",
                        help='Extra skflow variants, e.g. \'MADE bs64={"estimator": "MADEDensity", "batch_size": 64}\'.')
    parser.add_argument("--cache", type=Path, default=Path("/tmp/skflow_tabular_density.json"),
                        help="JSON file of finished runs; reused so an interrupted run can resume.")
    parser.add_argument("--report-only", action="store_true",
                        help="Write the report from the cache without fitting what is missing.")
    parser.add_argument("--out", type=Path, default=RESULTS / "tabular_density.md")
    args = parser.parse_args(argv)
    for spec in args.variant:
        label, params = spec.split("=", 1)
        MODELS[label] = _variant(json.loads(params))
        args.models.append(label)
    cache = json.loads(args.cache.read_text()) if args.cache.exists() else []
    done = {(r["set"], r["seed"], r["model"]) for r in cache}
    for seed in args.seeds:
        for name in args.sets:
            for model in args.models:
                if (name, seed, model) in done or args.report_only:
                    continue
                record = run_one(name, seed, model)
                print(json.dumps(record), flush=True)
                cache.append(record)
                args.cache.write_text(json.dumps(cache, indent=1))
    records = [r for r in cache if r["set"] in args.sets and r["model"] in args.models and r["seed"] in args.seeds]
    command = "OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=. python benchmarks/tabular_density.py " + shlex.join(
        sys.argv[1:] if argv is None else argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_report(records, args.sets, args.models, args.seeds, command.strip(), args.out)
    if "GMM (CV)" in args.models:
        plot_report(records, args.sets, args.models, args.out.with_suffix(".png"))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
