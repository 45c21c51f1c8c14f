"""Held-out log-likelihood of skflow on real mixed-type tables, against peers that model them too.

The five tables of ``../shared/data/tables`` as pandas reads them (variant ``raw``; ``cat``: numeric
columns of at most 10 values cast to ``category``), rows with an empty cell dropped. Measure:
``log P(discrete) + log p(continuous | discrete)`` per held-out row, integer columns dequantized alike
for every method (``--draws`` points per row). Methods: skflow's MAF, NSF and ``FlowMixture``;
StepMix, a product of cell frequencies and Gaussian mixtures, and zuko's MAF on one-hot columns. Also
a FlowOutlierDetector check and sampled marginals on penguins. Protocol and results:
``results/mixed_tables.md``.

    OMP_NUM_THREADS=1 python -m benchmarks.mixed_tables --seeds 0 1 2
"""

from functools import partial

import numpy as np
import pandas as pd
from pandas.api import types
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from benchmarks.harness import data, peers, report, runner
from skflow import FlowMixture, FlowOutlierDetector, MAFDensity, NSFDensity

TABLES = ("penguins", "cars", "fair", "randhie", "anes96")
VARIANTS = ("raw", "cat")
SUBSAMPLE, MAX_SEEDS, MAX_LEVELS = {"randhie": 5000}, {"randhie": 1}, 10
SKFLOW = {"MAF": lambda seed: MAFDensity(random_state=seed),
          "NSF": lambda seed: NSFDensity(random_state=seed),
          "MAF x5": lambda seed: FlowMixture(MAFDensity(), n_estimators=5, random_state=seed)}
PEERS = {"StepMix": peers.StepMixPeer, "product": peers.ProductPeer, "zuko MAF (one-hot, bound)": None}


def is_discrete(dtype):
    return not types.is_numeric_dtype(dtype) or types.is_bool_dtype(dtype)


def load_table(name, variant="raw", max_rows=None):
    """The table as skflow gets it, and what was done to it."""
    df = data.read_table(name)
    info = {"n_read": len(df)}
    df = df.dropna().reset_index(drop=True)
    info["n_dropped"] = info["n_read"] - len(df)
    for n in (SUBSAMPLE.get(name), max_rows):
        if n is not None and len(df) > n:
            df = df.sample(n=n, random_state=0).reset_index(drop=True)
    info["n_used"], info["cast"] = len(df), []
    for column in df.columns if variant == "cat" else []:
        if not is_discrete(df[column].dtype) and df[column].nunique() <= MAX_LEVELS:
            integer = bool(np.all(df[column] == np.round(df[column])))
            df[column] = df[column].astype(pd.CategoricalDtype(sorted(df[column].unique())))
            info["cast"].append(column if integer else f"{column} (non-integer)")
    return df, info


class Split:
    """One seeded 80/20 split with the encodings and dequantization draws every method shares."""

    def __init__(self, name, variant, seed, n_draws=16, max_rows=None):
        self.df, self.info = load_table(name, variant, max_rows)
        train, test = train_test_split(self.df, test_size=data.TEST_FRACTION, random_state=seed)
        self.train, self.test = train.reset_index(drop=True), test.reset_index(drop=True)
        self.discrete = [c for c in self.df.columns if is_discrete(self.df[c].dtype)]
        self.continuous = [c for c in self.df.columns if c not in self.discrete]
        # the categories of the whole table (a peer knows the category set)
        self.categories = [list(self.df[c].cat.categories) if self.df[c].dtype == "category"
                           else sorted(self.df[c].unique(), key=str) for c in self.discrete]
        self.cardinalities = [len(c) for c in self.categories]
        self.codes_train, self.codes_test = self._codes(self.train), self._codes(self.test)
        C_train, C_test = (part[self.continuous].to_numpy(np.float64) for part in (self.train, self.test))
        self.integer = np.all(C_train == np.round(C_train), axis=0) & (C_train.std(axis=0) > 1e-12)
        rng, n_int = np.random.default_rng([seed, 2024]), int(self.integer.sum())
        self.C_train, self.C_clean = C_train.copy(), C_train
        self.C_train[:, self.integer] += rng.uniform(-0.5, 0.5, (len(C_train), n_int))
        self.n_draws = n_draws if n_int else 1
        self.C_test = np.repeat(C_test[None], self.n_draws, axis=0)
        self.C_test[:, :, self.integer] += rng.uniform(-0.5, 0.5, (self.n_draws, len(C_test), n_int))

    def _codes(self, part):
        codes = [pd.Categorical(part[c].astype(object), categories=known).codes
                 for c, known in zip(self.discrete, self.categories)]
        return np.stack(codes, axis=1).astype(np.int64) if codes else np.zeros((len(part), 0), np.int64)

    def test_frames(self):
        """The held-out DataFrame once per draw, integer columns replaced by their noisy values."""
        columns = [(j, c) for j, c in enumerate(self.continuous) if self.integer[j]]
        return pd.concat([self.test.assign(**{c: self.C_test[k, :, j] for j, c in columns})
                          for k in range(self.n_draws)], ignore_index=True)

    def one_hot(self, codes):
        blocks = [np.eye(k)[codes[:, j]] for j, k in enumerate(self.cardinalities)]
        return np.hstack(blocks) if blocks else np.zeros((len(codes), 0))


def score_zuko(split, seed, epochs, n_draws):
    """zuko's MAF on [one-hot + U(0, 1), continuous (+ U(-1/2, 1/2) on integer columns)], by the hand loop."""
    noise = np.concatenate([np.zeros(sum(split.cardinalities)), np.where(split.integer, -0.5, np.nan)])
    model = runner.shorten(peers.ZukoFlow(noise=noise, random_state=seed), epochs)
    model.fit(np.hstack([split.one_hot(split.codes_train), split.C_clean]))
    rng, H = np.random.default_rng(10_000 + seed), split.one_hot(split.codes_test)
    draws = [model.score_samples(np.hstack([H + rng.random(H.shape), split.C_test[k % split.n_draws]]))
             for k in range(n_draws)]
    return np.mean(draws, axis=0), {"info": f"{model.n_iter_} epochs"}


def run_one(name, variant, seed, method, args):
    split = Split(name, variant, seed, args.draws, args.max_rows)
    with runner.Timer() as timer:
        if method in SKFLOW:
            model = runner.shorten(SKFLOW[method](seed), args.epochs).fit(split.train)
            log_p = model.score_samples(split.test_frames()).reshape(split.n_draws, -1).mean(axis=0)
            extra = {"skflow_at_integer": float(np.mean(model.score_samples(split.test))),
                     "info": report.epochs(model)}
        elif method.startswith("zuko"):
            log_p, extra = score_zuko(split, seed, args.epochs, args.draws)
        else:
            model = PEERS[method](seed).fit(split.codes_train, split.C_train, split.cardinalities)
            log_p, extra = model.score(split.codes_test, split.C_test), {"info": model.info()}
    return {"shape": [len(split.train), len(split.test), len(split.df.columns)], "fit_s": timer.wall,
            "mean": float(np.mean(log_p)), "min": float(np.min(log_p)),
            "finite": bool(np.all(np.isfinite(log_p))), **extra}


def outlier_check(seeds, epochs, max_rows):
    """FlowOutlierDetector() on penguins without the species column: Chinstrap as the outliers."""
    df, _ = load_table("penguins", max_rows=max_rows)
    species, X = df["species"], df.drop(columns="species")
    normal, aucs = np.flatnonzero(species != "Chinstrap"), []
    with runner.Timer() as timer:
        for seed in seeds:
            train, held = train_test_split(normal, test_size=0.3, random_state=seed)
            test = np.concatenate([held, np.flatnonzero(species == "Chinstrap")])
            detector = runner.shorten(FlowOutlierDetector(random_state=seed), epochs).fit(X.iloc[train])
            outlier = species.iloc[test] == "Chinstrap"
            aucs.append(roc_auc_score(outlier, -detector.score_samples(X.iloc[test])))
    flagged = int((detector.predict(X.iloc[test]) == -1).sum())
    return [(f"`FlowOutlierDetector(random_state=seed).fit(X)` on penguins' raw DataFrame without "
             f"`species` (island and sex stay strings). Trained on 70% of the Adelie and Gentoo rows "
             f"({len(train)}); tested on the other 30% plus every Chinstrap row ({len(test)} rows); outlier "
             f"score `-score_samples`. ROC AUC over seeds {', '.join(map(str, seeds))}: "
             f"{', '.join(f'{a:.3f}' for a in aucs)} (mean {np.mean(aucs):.3f}); {flagged} test rows "
             f"predicted -1 in the last seed; {timer.wall:.0f} s in all.")]


def sample_figure(path, epochs, max_rows):
    """Real against sampled marginals of penguins, from ``MAFDensity(random_state=0)``'s samples."""
    plt = report.pyplot()
    df, _ = load_table("penguins", max_rows=max_rows)
    model = runner.shorten(MAFDensity(random_state=0), epochs).fit(df)
    samples = model.sample(len(df), random_state=0)
    discrete = [c for c in df.columns if is_discrete(df[c].dtype)]
    fig, axes = plt.subplots(2, 4, figsize=(13, 5.5))
    for ax, column in zip(axes.ravel(), df.columns):
        if column in discrete:
            levels = sorted(set(df[column]) | set(samples[column]), key=str)
            for shift, part, label in ((-0.2, df, "real"), (0.2, samples, "MAFDensity sample")):
                frequencies = part[column].value_counts(normalize=True).reindex(levels, fill_value=0)
                ax.bar(np.arange(len(levels)) + shift, frequencies, 0.4, label=label)
            ax.set_xticks(np.arange(len(levels)), levels, fontsize=8)
        else:
            values = np.concatenate([df[column], samples[column]]).astype(float)
            integer = np.all(values == np.round(values)) and len(np.unique(values)) <= 20
            bins = (np.arange(values.min() - 0.5, values.max() + 1.5) if integer
                    else np.linspace(values.min(), values.max(), 25))
            for part, label in ((df, "real"), (samples, "MAFDensity sample")):
                ax.hist(part[column], bins=bins, alpha=0.55, density=True, label=label)
        ax.set_title(column, fontsize=9)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"penguins: {len(df)} real rows vs MAFDensity(random_state=0).fit(df).sample({len(df)})",
                 fontsize=10)
    report.save(fig, path, dpi=110)
    frequencies = "; ".join(f"{c}: " + ", ".join(f"{k} {df[c].eq(k).mean():.2f}/{samples[c].eq(k).mean():.2f}"
                                                  for k in sorted(df[c].unique(), key=str)) for c in discrete)
    outside = ", ".join(f"{c} {((samples[c] < df[c].min()) | (samples[c] > df[c].max())).mean():.1%}"
                        for c in df.columns if c not in discrete)
    same = all(str(df[c].dtype) == str(samples[c].dtype) for c in df.columns)
    return [f"![penguins: real vs sampled marginals]({path.name})", "",
            (f"`MAFDensity(random_state=0).fit(penguins)` ({model.n_iter_} epochs) then "
             f"`.sample(len(penguins), random_state=0)`: the sample's dtypes match the training dtypes: "
             f"{same}."), "", f"Category frequencies, real / sampled: {frequencies}.", "",
            f"Sampled values outside the real column's range: {outside}."]


def verdict(records, tables, methods, model, against=None):
    """Where ``model`` has the best mean, against every other method or only those in ``against``."""
    methods = [m for m in methods if against is None or m == model or m in against]
    won, lost, paired = [], [], []
    for name in tables:
        runs = {(r["method"], r["seed"]): r["mean"] for r in records
                if r["table"] == name and r["method"] in methods}
        means = {m: np.mean([v for (k, _), v in runs.items() if k == m]) for m in {k for k, _ in runs}}
        if model not in means or len(means) < 2:
            continue
        best = max(means, key=means.get)
        (won if best == model else lost).append(name if best == model else f"{name}: {best}")
        others = [m for m in means if m != model]
        gaps = [runs[model, s] - max(runs[m, s] for m in others) for (m, s) in runs
                if m == model and all((o, s) in runs for o in others)]
        paired += [f"{name} {report.fmt(gaps)}"] if gaps else []
    rivals = ", ".join(m for m in methods if m != model)
    rivals = "" if against is None else f" against the peers only ({rivals})"
    return (f"`{model}`{rivals} has the best mean held-out log-likelihood on {len(won)} of "
            f"{len(won) + len(lost)} tables" + (f" ({', '.join(won)})" if won else "")
            + (f"; best elsewhere: {'; '.join(lost)}" if lost else "")
            + f". Target (best on >= 4 of 5): **{'met' if len(won) >= 4 else 'NOT met'}**. Paired by seed, "
            f"`{model}` minus the best other method of that seed (nats/row, mean ± std over seeds): "
            + "; ".join(paired) + ".")


def point_masses(name, variant):
    """Continuous, non-integer columns where one value holds >= 10% of the rows (unbounded densities)."""
    df, out = load_table(name, variant)[0], []
    for column in (c for c in df.columns if not is_discrete(df[c].dtype)):
        counts = df[column].value_counts(normalize=True)
        if not np.all(df[column] == np.round(df[column])) and counts.iloc[0] >= 0.1:
            out.append(f"{column} ({counts.iloc[0]:.0%} at {counts.index[0]:.4g})")
    return out


def variant_section(records, tables, methods, variant):
    rs = [r for r in records if r["variant"] == variant and r["method"] in methods]
    skflow = [m for m in SKFLOW if any(r["method"] == m for r in rs)]
    grid = partial(report.grid, rs, rows=tables, row="table", col="method")
    fitted = "; ".join(f"{r['table']} {r['method']} s{r['seed']}: {r['info']}" for r in rs)
    return ["", f"## Variant {variant}", "", "Mean held-out log-likelihood (nats/row; best in bold):", "",
            *grid("mean", cols=methods, best=max), "",
            *(line for m in skflow for line in (verdict(rs, tables, methods, m), "")),
            *(line for m in skflow for line in (verdict(rs, tables, methods, m, against=PEERS), "")),
            "skflow's own `score_samples` at the integers (no noise):", "",
            *grid("skflow_at_integer", cols=skflow, best=max), "",
            "Worst held-out row (minimum over seeds, nats):", "",
            *grid("min", cols=methods, cell=report.reduced(np.min)), "", "Fit time (s, mean over seeds):", "",
            *grid("fit_s", cols=methods, cell=report.reduced(np.mean)), "", f"What was fitted: {fitted}"]


def write_report(records, args, extras):
    tables = [t for t in args.tables if any(r["table"] == t for r in records)]
    data_rows = [[t, i["n_read"], i["n_dropped"], f"{i['n_used']}{' (subsample)' if t in SUBSAMPLE else ''}",
                  len(load_table(t)[0].columns), ", ".join(i["cast"]) or "—"]
                 for t in tables for i in [load_table(t, "cat", args.max_rows)[1]]]
    lines = ["## Data", "",
             *report.table(["table", "rows read", "rows dropped (empty cells)", "rows used", "columns",
                            "cast to `category` in variant `cat`"], data_rows), "",
             "Continuous non-integer columns where one value holds >= 10% of the rows (unbounded):", "",
             *(f"- {t} ({v}): {', '.join(atoms)}" for v in args.variants for t in tables
               if (atoms := point_masses(t, v)))]
    for variant in args.variants:
        lines += variant_section(records, tables, args.methods, variant)
    for title, text in extras.items():
        lines += ["", f"## {title}", "", *text]
    report.publish(args, "Mixed-type tables: held-out log-likelihood", __doc__, lines)


def main(argv=None):
    p = runner.parser(__doc__, seeds=(0, 1, 2), cache=True)
    p.add_argument("--tables", nargs="+", default=list(TABLES), choices=TABLES)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--methods", nargs="*", default=[*SKFLOW, *PEERS], choices=[*SKFLOW, *PEERS])
    p.add_argument("--draws", type=int, default=16, help="dequantization draws per held-out row")
    p.add_argument("--skip-extras", action="store_true", help="no outlier check and no figure")
    args = runner.parse(p, argv, __name__, tiny={"tables": ["penguins"], "draws": 2})
    cache = runner.Cache(args.cache, ("table", "variant", "seed", "method"), args.report_only)
    for k, seed in enumerate(args.seeds):
        for name in (t for t in args.tables if k < MAX_SEEDS.get(t, len(args.seeds))):
            for variant in args.variants:
                for method in args.methods:
                    cache.run(partial(run_one, name, variant, seed, method, args), table=name,
                              variant=variant, seed=seed, method=method)
    extras = {}
    if not (args.report_only or args.skip_extras):
        extras["FlowOutlierDetector on a mixed table"] = outlier_check(args.seeds, args.epochs, args.max_rows)
        extras["Samples"] = sample_figure(args.out / "mixed_tables_penguins.png", args.epochs, args.max_rows)
    records = cache.select(table=args.tables, variant=args.variants, seed=args.seeds, method=args.methods)
    write_report(records, args, extras)


if __name__ == "__main__":
    runner.cli(main)
