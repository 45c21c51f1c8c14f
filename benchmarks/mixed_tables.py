"""Held-out log-likelihood of skflow on real mixed-type tables, against peers that model them too.

Data: the five tables in ``../shared/data/tables`` beside the repository root
(penguins, cars, fair, randhie, anes96), read with ``pandas.read_csv`` and fed
to skflow as they are: rows with an empty cell dropped, randhie subsampled to
5000 rows (the same rows for every seed and method), no hand encoding. String
columns are discrete, every numeric column continuous; integer-valued
continuous columns are the ones skflow dequantizes (its ``Standardizer`` rule:
every training value a whole number, at least two distinct values).

Two variants of each table:

raw
    the table as loaded.
cat
    every numeric column with at most 10 distinct values cast to the pandas
    ``category`` dtype first (codes such as ratings, binary flags, fair's age
    brackets), so that skflow models them as discrete. Every method then
    treats those columns as discrete.

The measure, the same for every method: ``log P(discrete cells) + log p(continuous
cells | discrete)`` per held-out row, in nats, continuous parts in data units.
Integer-valued continuous columns are dequantized the same way for everyone:
each held-out row is scored at ``N_DRAWS`` = 16 points ``x + u``, ``u ~ U(-1/2,
1/2)`` on those columns only (the same draws for every method), and the
log-densities are averaged over the draws, i.e. ``E_u log p(x + u)``, a lower
bound of the log-probability each model gives the integer's unit cell. skflow
trains on ``x + u`` itself (fresh ``u`` every epoch); the peers' training rows
get one such draw (the zuko flow a fresh draw every epoch, as skflow). skflow's
own ``score_samples`` at the integers is reported beside, for information.

Methods (3 seeds of 80/20 train/test splits; 1 for randhie):

MAF, NSF
    ``MAFDensity()`` and ``NSFDensity()`` with default parameters on the DataFrame.
StepMix
    a latent class model (``stepmix.StepMix``, one step): ``categorical``
    measurement for the discrete columns and ``gaussian_diag`` for the
    standardised continuous ones (its nested descriptor), ``n_components``
    chosen by BIC over 1..10 on the training split; per-row log-likelihood
    ``logsumexp_k(log w_k + log p(x | k))`` from its fitted measurement model.
product
    a frequency table of the joint discrete cells with additive smoothing 0.5
    (over every combination of the categories seen in the table) times a
    full-covariance GaussianMixture (BIC over 1..10 components) of the
    standardised continuous columns, fitted per discrete cell that has >= 30
    training rows, else a mixture pooled over all rows.
zuko MAF (one-hot)
    zuko's MAF (skflow's default MAF architecture and training recipe, as in
    ``tabular_density.py``) on one-hot discrete columns plus ``U(0, 1)``
    noise, integer columns plus ``U(-1/2, 1/2)``, fresh noise every epoch: the
    workaround flow maintainers suggest. Scored by the dequantization bound
    ``E_v log p(one-hot + v, ...)`` over the same 16 draws: a *lower bound* of
    the measure above, not the measure itself.

Also: ``FlowOutlierDetector()`` fitted on penguins' raw DataFrame without the
species column, trained on Adelie and Gentoo rows, scored on held-out Adelie,
Gentoo and every Chinstrap (ROC AUC); and a figure of real against sampled
marginals on penguins from ``MAFDensity().fit(penguins).sample(len(penguins))``.

Run (from the repository root; runs are cached in --cache, so an interrupted run resumes)::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=. python benchmarks/mixed_tables.py

About 75 min of one core (fair's flows are most of it); ``--tables``/``--seeds`` split it over
processes with their own ``--cache`` files, and a last call with every cache rewrites the report
(``RUN_COMMANDS`` below are the calls behind ``results/mixed_tables.md``). The prototype
``"MAF + marginal init (prototype)"`` runs only when named in ``--methods``.
"""

import argparse
import json
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _tabular_data import DATA_DIR, fit_with_early_stopping
from pandas.api import types
from scipy.special import logsumexp
from sklearn.metrics import roc_auc_score
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import train_test_split

from skflow import FlowMixture, FlowOutlierDetector
from skflow.tabular import MAFDensity, NSFDensity

RESULTS = Path(__file__).resolve().parent / "results"
TABLE_DIR = DATA_DIR / "tables"

TABLES = ("penguins", "cars", "fair", "randhie", "anes96")
VARIANTS = ("raw", "cat")
#: Rows kept (a fixed random subset) of the large tables.
SUBSAMPLE = {"randhie": 5000}
#: Seeds per table (fewer for the large ones).
MAX_SEEDS = {"randhie": 1}
#: Numeric columns with at most this many distinct values become categories in the "cat" variant.
MAX_LEVELS = 10
#: Dequantization draws per held-out row.
N_DRAWS = 16
TEST_FRACTION = 0.2
#: Training rows of a discrete cell needed for its own Gaussian mixture (product baseline).
MIN_CELL_ROWS = 30
MAX_COMPONENTS = 10


# ----------------------------------------------------------------------------- data
def _is_discrete(dtype):
    return not types.is_numeric_dtype(dtype) or types.is_bool_dtype(dtype)


def load_table(name, variant="raw"):
    """The table as skflow gets it, and what was done to it."""
    path = TABLE_DIR / f"{name}.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: the benchmark needs ../shared/data beside the repo root.")
    df = pd.read_csv(path)
    n_read = len(df)
    df = df.dropna().reset_index(drop=True)
    info = {"n_read": n_read, "n_dropped": n_read - len(df)}
    if name in SUBSAMPLE:
        df = df.sample(n=SUBSAMPLE[name], random_state=0).reset_index(drop=True)
    info["n_used"] = len(df)
    cast = []
    if variant == "cat":
        for column in df.columns:
            if not _is_discrete(df[column].dtype) and df[column].nunique() <= MAX_LEVELS:
                integer = bool(np.all(df[column] == np.round(df[column])))
                df[column] = df[column].astype(pd.CategoricalDtype(sorted(df[column].unique())))
                cast.append(column if integer else f"{column} (non-integer)")
    info["cast"] = cast
    return df, info


class Split:
    """One seeded 80/20 split with the encodings and dequantization noise every method shares."""

    def __init__(self, name, variant, seed):
        self.df, self.info = load_table(name, variant)
        self.train, self.test = train_test_split(self.df, test_size=TEST_FRACTION, random_state=seed)
        self.train, self.test = self.train.reset_index(drop=True), self.test.reset_index(drop=True)
        columns = list(self.df.columns)
        self.discrete = [c for c in columns if _is_discrete(self.df[c].dtype)]
        self.continuous = [c for c in columns if c not in self.discrete]
        # Categories of the whole table (a peer knows the category set; unseen-in-train ones get
        # whatever mass its own smoothing gives them).
        self.categories = [
            list(self.df[c].dtype.categories) if isinstance(self.df[c].dtype, pd.CategoricalDtype)
            else sorted(self.df[c].unique(), key=str) for c in self.discrete
        ]
        self.codes_train, self.codes_test = (self._codes(part) for part in (self.train, self.test))
        C_train = self.train[self.continuous].to_numpy(np.float64)
        C_test = self.test[self.continuous].to_numpy(np.float64)
        # skflow's rule: integer-valued, non-constant training columns are dequantized.
        self.integer = (np.all(C_train == np.round(C_train), axis=0) & (C_train.std(axis=0) > 1e-12)
                        if self.continuous else np.zeros(0, bool))
        rng = np.random.default_rng([seed, 2024])
        n_int = int(self.integer.sum())
        self.C_train = C_train.copy()
        self.C_train[:, self.integer] += rng.uniform(-0.5, 0.5, (len(C_train), n_int))
        self.n_draws = N_DRAWS if n_int else 1
        self.C_test = np.repeat(C_test[None], self.n_draws, axis=0)
        self.C_test[:, :, self.integer] += rng.uniform(-0.5, 0.5, (self.n_draws, len(C_test), n_int))
        self.C_test_clean = C_test

    def _codes(self, part):
        codes = np.empty((len(part), len(self.discrete)), dtype=np.int64)
        for j, (column, known) in enumerate(zip(self.discrete, self.categories)):
            lookup = {value: k for k, value in enumerate(known)}
            codes[:, j] = [lookup[v] for v in part[column].astype(object)]
        return codes

    def test_frames(self):
        """The held-out DataFrame once per draw, integer columns replaced by their noisy values."""
        frames = []
        for k in range(self.n_draws):
            frame = self.test.copy()
            for j, column in enumerate(self.continuous):
                if self.integer[j]:
                    frame[column] = self.C_test[k, :, j]
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)

    @property
    def cardinalities(self):
        return [len(c) for c in self.categories]

    def one_hot(self, codes):
        blocks = [np.eye(k)[codes[:, j]] for j, k in enumerate(self.cardinalities)]
        return np.hstack(blocks) if blocks else np.zeros((len(codes), 0))


def _standardize(split):
    mean, scale = split.C_train.mean(axis=0), split.C_train.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return mean, scale


# -------------------------------------------------------------------------- methods
class SkflowMethod:
    def __init__(self, estimator):
        self.estimator = estimator

    def fit(self, split):
        self.estimator.fit(split.train)
        members = getattr(self.estimator, "estimators_", [self.estimator])  # a FlowMixture's copies
        self.n_iter_ = "+".join(str(member.n_iter_) for member in members)
        return self

    def score(self, split):
        log_p = self.estimator.score_samples(split.test_frames()).reshape(split.n_draws, -1)
        return log_p.mean(axis=0)

    def extra(self, split):
        """skflow's own score at the integers, and whether it dequantized the columns we did."""
        standardizer = getattr(self.estimator, "estimator_", self.estimator).standardizer_
        integer = standardizer.integer_[~standardizer.discrete_]
        return {
            "skflow_at_integer": float(np.mean(self.estimator.score_samples(split.test))),
            "same_integer_columns": bool(np.array_equal(integer, split.integer)),
            "info": f"{self.n_iter_} epochs",
        }


class StepMixMethod:
    """StepMix latent class model, n_components by BIC over 1..10."""

    def __init__(self, seed):
        self.seed = seed

    def _design(self, split, codes, C):
        mean, scale = self.mean_, self.scale_
        return np.hstack([codes.astype(np.float64), (C - mean) / scale])

    def fit(self, split):
        from stepmix.stepmix import StepMix

        self.mean_, self.scale_ = _standardize(split)
        descriptor = {}
        if split.discrete:
            descriptor["categorical"] = {"model": "categorical", "n_columns": len(split.discrete),
                                         "max_n_outcomes": max(split.cardinalities),
                                         "total_outcomes": sum(split.cardinalities)}
        if split.continuous:
            descriptor["continuous"] = {"model": "gaussian_diag", "n_columns": len(split.continuous)}
        X = self._design(split, split.codes_train, split.C_train)
        best = None
        self.bics_ = {}
        for k in range(1, MAX_COMPONENTS + 1):
            model = StepMix(n_components=k, measurement=descriptor, n_steps=1, n_init=2, max_iter=500,
                            abs_tol=1e-6, random_state=self.seed, progress_bar=0, verbose=0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(X)
            bic = model.bic(X)
            self.bics_[k] = bic
            if best is None or bic < best[0]:
                best = (bic, k, model)
        self.bic_, self.k_, self.model_ = best
        self._check(X)
        return self

    def _per_row(self, X):
        return logsumexp(self.model_._mm.log_likelihood(X) + np.log(self.model_.weights_), axis=1)

    def _check(self, X):
        assert np.isclose(self._per_row(X).mean(), self.model_.score(X)), "per-row StepMix log-lik != score"

    def score(self, split):
        draws = [self._per_row(self._design(split, split.codes_test, C)) for C in split.C_test]
        return np.mean(draws, axis=0) - np.log(self.scale_).sum()

    def extra(self, split):
        return {"info": f"k={self.k_}"}


def _bic_gmm(Z, seed):
    best = None
    for k in range(1, min(MAX_COMPONENTS, len(Z)) + 1):
        gmm = GaussianMixture(k, covariance_type="full", max_iter=300, random_state=seed).fit(Z)
        bic = gmm.bic(Z)
        if best is None or bic < best[0]:
            best = (bic, gmm)
    return best[1]


class ProductMethod:
    """Smoothed frequency table of the discrete cells x per-cell (or pooled) Gaussian mixture."""

    def __init__(self, seed, alpha=0.5):
        self.seed, self.alpha = seed, alpha

    def fit(self, split):
        self.mean_, self.scale_ = _standardize(split)
        keys = [tuple(row) for row in split.codes_train]
        self.counts_ = pd.Series(keys, dtype=object).value_counts().to_dict() if keys else {}
        self.n_cells_total_ = float(np.prod(split.cardinalities)) if split.discrete else 1.0
        self.n_train_ = len(keys)
        self.mixtures_, self.pooled_ = {}, None
        if split.continuous:
            Z = (split.C_train - self.mean_) / self.scale_
            self.pooled_ = _bic_gmm(Z, self.seed)
            if split.discrete:
                for cell, count in self.counts_.items():
                    if count >= MIN_CELL_ROWS:
                        rows = np.array([k == cell for k in map(tuple, split.codes_train)])
                        self.mixtures_[cell] = _bic_gmm(Z[rows], self.seed)
        return self

    def score(self, split):
        n = len(split.test)
        log_p = np.zeros(n)
        keys = [tuple(row) for row in split.codes_test]
        if split.discrete:
            denominator = self.n_train_ + self.alpha * self.n_cells_total_
            log_p += np.log([(self.counts_.get(k, 0) + self.alpha) / denominator for k in keys])
        if split.continuous:
            draws = []
            for C in split.C_test:
                Z = (C - self.mean_) / self.scale_
                part = self.pooled_.score_samples(Z)
                for cell, gmm in self.mixtures_.items():
                    rows = np.array([k == cell for k in keys])
                    if rows.any():
                        part[rows] = gmm.score_samples(Z[rows])
                draws.append(part)
            log_p += np.mean(draws, axis=0) - np.log(self.scale_).sum()
        return log_p

    def extra(self, split):
        ks = [g.n_components for g in self.mixtures_.values()]
        pooled = "none" if self.pooled_ is None else self.pooled_.n_components
        return {"info": f"{len(self.counts_)} cells seen, {len(self.mixtures_)} with own GMM "
                        f"(k={','.join(map(str, ks)) or '-'}), pooled k={pooled}"}


class ZukoOneHotMAF:
    """zuko's MAF on [one-hot + U(0,1), continuous (+ U(-1/2,1/2) on integer columns)], hand loop.

    The recipe of ``_tabular_data.ZukoMAF`` (standardisation, AdamW, clipping at 10, early
    stopping on a 10% validation split with the best weights restored), with fresh
    dequantization noise every epoch.
    """

    def __init__(self, n_transforms=5, hidden_features=(128, 128), max_epochs=300, batch_size=64, lr=1e-3,
                 weight_decay=1e-5, validation_fraction=0.1, patience=20, random_state=0):
        self.n_transforms, self.hidden_features = n_transforms, hidden_features
        self.max_epochs, self.batch_size, self.lr = max_epochs, batch_size, lr
        self.weight_decay, self.validation_fraction = weight_decay, validation_fraction
        self.patience, self.random_state = patience, random_state

    def _rows(self, split, codes, C_clean, generator):
        """Dequantized rows: one-hot + U(0,1); integer continuous columns + U(-1/2,1/2)."""
        H = torch.as_tensor(split.one_hot(codes), dtype=torch.float32)
        H = H + torch.rand(H.shape, generator=generator)
        C = torch.tensor(np.array(C_clean, dtype=np.float32))
        mask = torch.as_tensor(split.integer)
        if mask.any():
            C[:, mask] += torch.rand((len(C), int(mask.sum())), generator=generator) - 0.5
        return torch.cat([H, C], dim=1)

    def fit(self, split):
        import zuko

        torch.manual_seed(self.random_state)
        generator = torch.Generator().manual_seed(self.random_state)
        C_clean = split.train[split.continuous].to_numpy(np.float64)
        codes = split.codes_train
        n = len(codes)
        order = np.random.default_rng(self.random_state).permutation(n)
        n_valid = round(self.validation_fraction * n)
        valid, train = order[:n_valid], order[n_valid:]
        first = self._rows(split, codes, C_clean, generator).double().numpy()
        self.mean_, self.scale_ = first.mean(axis=0), first.std(axis=0)
        scale = lambda Y: (Y - torch.as_tensor(self.mean_, dtype=torch.float32)) / torch.as_tensor(
            self.scale_, dtype=torch.float32)
        Z_valid = scale(self._rows(split, codes[valid], C_clean[valid], generator))
        self.flow_ = zuko.flows.MAF(first.shape[1], transforms=self.n_transforms,
                                    hidden_features=tuple(self.hidden_features))

        def epoch():  # fresh dequantization noise every epoch, then shuffled batches
            Z_train = scale(self._rows(split, codes[train], C_clean[train], generator))
            for batch in Z_train[torch.randperm(len(Z_train))].split(self.batch_size):
                yield -self.flow_().log_prob(batch).mean()

        def valid_nll():
            with torch.no_grad():
                return -float(self.flow_().log_prob(Z_valid).mean())

        self.n_iter_ = fit_with_early_stopping(
            self.flow_, epoch, valid_nll if n_valid else None, max_epochs=self.max_epochs, lr=self.lr,
            weight_decay=self.weight_decay, patience=self.patience)
        return self

    def score(self, split):
        generator = torch.Generator().manual_seed(10_000 + self.random_state)
        H = torch.as_tensor(split.one_hot(split.codes_test), dtype=torch.float32)
        draws = []
        for k in range(N_DRAWS):
            C = torch.as_tensor(split.C_test[k % split.n_draws], dtype=torch.float32)
            Y = torch.cat([H + torch.rand(H.shape, generator=generator), C], dim=1)
            Z = (Y - torch.as_tensor(self.mean_, dtype=torch.float32)) / torch.as_tensor(
                self.scale_, dtype=torch.float32)
            with torch.no_grad():
                draws.append(self.flow_().log_prob(Z).double().numpy())
        return np.mean(draws, axis=0) - np.log(self.scale_).sum()

    def extra(self, split):
        return {"info": f"{self.n_iter_} epochs"}


class MarginalInitMAF(MAFDensity):
    """A prototype for skflow (not in the package): CategoricalMADE's output bias starts at the log
    marginal frequencies of the training codes (+0.5 smoothing) instead of zero.

    The first discrete column's logits are that bias alone (no earlier column to see), and Adam moves
    a bias by about ``lr`` per step, so on a small table, where early stopping ends training after a
    few hundred steps, its marginal stays close to uniform (see the report).
    """

    def _fit_rows(self, X, context):
        self._codes_for_init = None if self.table_ is None else X[:, self.table_.discrete_].astype(np.int64)
        return super()._fit_rows(X, context)

    def _build_module(self, n_features, context_features):
        module = super()._build_module(n_features, context_features)
        if getattr(self, "_codes_for_init", None) is not None:
            bias = []
            for j, k in enumerate(self.table_.cardinalities_):
                counts = np.bincount(self._codes_for_init[:, j][self._codes_for_init[:, j] >= 0], minlength=k) + 0.5
                bias.append(np.log(counts / counts.sum()))
            with torch.no_grad():
                module.categorical.net[-1].bias.copy_(torch.as_tensor(np.concatenate(bias)))
        return module


_ZUKO_DEFAULTS = {k: MAFDensity().get_params()[k] for k in (
    "n_transforms", "hidden_features", "max_epochs", "batch_size", "lr", "weight_decay", "validation_fraction",
    "patience")}

METHODS = {
    "MAF": lambda seed: SkflowMethod(MAFDensity(random_state=seed)),
    "NSF": lambda seed: SkflowMethod(NSFDensity(random_state=seed)),
    "MAF x5": lambda seed: SkflowMethod(FlowMixture(MAFDensity(), n_estimators=5, random_state=seed)),
    "StepMix": StepMixMethod,
    "product": ProductMethod,
    "zuko MAF (one-hot, bound)": lambda seed: ZukoOneHotMAF(**_ZUKO_DEFAULTS, random_state=seed),
    "MAF + marginal init (prototype)": lambda seed: SkflowMethod(MarginalInitMAF(random_state=seed)),
}
SKFLOW = ("MAF", "NSF", "MAF x5")
#: The methods that are not skflow's (the issue's peers).
PEERS = ("StepMix", "product", "zuko MAF (one-hot, bound)")
#: Not in skflow: run on request (--methods), reported apart and left out of the comparisons.
PROTOTYPES = ("MAF + marginal init (prototype)",)
DEFAULT_METHODS = tuple(m for m in METHODS if m not in PROTOTYPES)


def run_one(name, variant, seed, method):
    split = Split(name, variant, seed)
    model = METHODS[method](seed)
    start = time.perf_counter()
    model.fit(split)
    fit_time = time.perf_counter() - start
    log_p = model.score(split)
    return {
        "table": name, "variant": variant, "seed": seed, "method": method,
        "shape": [len(split.train), len(split.test), len(split.df.columns)],
        "mean": float(np.mean(log_p)), "min": float(np.min(log_p)), "finite": bool(np.all(np.isfinite(log_p))),
        "fit_s": fit_time, **model.extra(split),
    }


# -------------------------------------------------------------- outliers and figure
def outlier_check(seeds=(0, 1, 2)):
    """FlowOutlierDetector() on penguins without the species column: Chinstrap as the outliers."""
    df, _ = load_table("penguins")
    species, X = df["species"], df.drop(columns="species")
    normal = np.flatnonzero(species != "Chinstrap")
    aucs = []
    start = time.perf_counter()
    for seed in seeds:
        train, held = train_test_split(normal, test_size=0.3, random_state=seed)
        test = np.concatenate([held, np.flatnonzero(species == "Chinstrap")])
        detector = FlowOutlierDetector(random_state=seed).fit(X.iloc[train])
        outlier = (species.iloc[test] == "Chinstrap").to_numpy()
        aucs.append(roc_auc_score(outlier, -detector.score_samples(X.iloc[test])))
        n_flagged = int((detector.predict(X.iloc[test]) == -1).sum())
    return {"aucs": aucs, "n_train": len(train), "n_test": len(test),
            "n_outliers": int(outlier.sum()), "n_flagged_last": n_flagged,
            "seconds": time.perf_counter() - start}


def sample_figure(path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df, _ = load_table("penguins")
    model = MAFDensity(random_state=0).fit(df)
    samples = model.sample(len(df), random_state=0)
    fig, axes = plt.subplots(2, 4, figsize=(13, 5.5))
    for ax, column in zip(axes.ravel(), df.columns):
        if _is_discrete(df[column].dtype):
            levels = sorted(set(df[column]) | set(samples[column]), key=str)
            x = np.arange(len(levels))
            real = df[column].value_counts(normalize=True).reindex(levels, fill_value=0)
            fake = samples[column].value_counts(normalize=True).reindex(levels, fill_value=0)
            ax.bar(x - 0.2, real, 0.4, label="real")
            ax.bar(x + 0.2, fake, 0.4, label="MAFDensity sample")
            ax.set_xticks(x, levels, fontsize=8)
            ax.set_ylabel("fraction")
        else:
            values = np.concatenate([df[column], samples[column]]).astype(float)
            if np.all(values == np.round(values)) and len(np.unique(values)) <= 20:
                bins = np.arange(values.min() - 0.5, values.max() + 1.5)
            else:
                bins = np.linspace(values.min(), values.max(), 25)
            ax.hist(df[column], bins=bins, alpha=0.55, density=True, label="real")
            ax.hist(samples[column], bins=bins, alpha=0.55, density=True, label="MAFDensity sample")
        ax.set_title(column, fontsize=9)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"penguins: {len(df)} real rows vs MAFDensity(random_state=0).fit(df).sample({len(df)})",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    same = {c: str(df[c].dtype) == str(samples[c].dtype) for c in df.columns}
    marginals = {c: {str(k): [float(df[c].eq(k).mean()), float(samples[c].eq(k).mean())]
                     for k in sorted(df[c].unique(), key=str)}
                 for c in df.columns if _is_discrete(df[c].dtype)}
    outside = {c: float(((samples[c] < df[c].min()) | (samples[c] > df[c].max())).mean())
               for c in df.columns if not _is_discrete(df[c].dtype)}
    return {"dtypes_match": all(same.values()), "marginals": marginals, "outside": outside,
            "dtypes": {c: [str(df[c].dtype), str(samples[c].dtype)] for c in df.columns},
            "epochs": model.n_iter_}


# ------------------------------------------------------------------------- report
def _fmt(values, digits=2):
    values = np.asarray(values, dtype=float)
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std():.{digits}f}"


def _means(records, tables, methods, variant, key="mean"):
    out = {}
    for name in tables:
        out[name] = {}
        for method in methods:
            values = [r[key] for r in records if r["table"] == name and r["variant"] == variant
                      and r["method"] == method and r.get(key) is not None]
            if values:
                out[name][method] = values
    return out


def _table(records, tables, methods, variant, key="mean", reduce=None, header="table"):
    values = _means(records, tables, methods, variant, key)
    lines = [f"| {header} | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for name in tables:
        if not values[name]:
            continue
        best = max(values[name], key=lambda m: np.mean(values[name][m])) if reduce is None else None
        cells = []
        n_seeds = len({r["seed"] for r in records if r["table"] == name and r["variant"] == variant})
        for method in methods:
            v = values[name].get(method)
            if v is None:
                cells.append("—")
                continue
            cell = f"{reduce(v):.4g}" if reduce is not None else _fmt(v)
            if len(v) != n_seeds:
                cell += f" ({len(v)} seed{'s' * (len(v) > 1)})"
            cells.append(f"**{cell}**" if method == best else cell)
        lines.append(f"| {name} ({n_seeds} seed{'s' * (n_seeds > 1)}) | " + " | ".join(cells) + " |")
    return lines


def _verdict(records, tables, methods, variant, model="MAF", against=None):
    """Where ``model`` has the best mean, against every other method or only those in ``against``."""
    if against is not None:
        methods = [m for m in methods if m == model or m in against]
    values = _means(records, tables, methods, variant)
    won, lost = [], []
    for name in tables:
        means = {m: np.mean(v) for m, v in values[name].items()}
        if model not in means or len(means) < 2:
            continue
        best = max(means, key=means.get)
        (won if best == model else lost).append(name if best == model else f"{name}: {best}")
    n = len(won) + len(lost)
    target = "met" if len(won) >= 4 else "NOT met"
    paired = []
    for name in tables:
        runs = {(r["method"], r["seed"]): r["mean"] for r in records if r["table"] == name
                and r["variant"] == variant and r["method"] in methods}
        seeds = sorted({seed for (m, seed) in runs if m == model})
        others = [m for m in methods if m != model and any(key[0] == m for key in runs)]
        if not others:
            continue
        gaps = [runs[(model, seed)] - max(runs[(m, seed)] for m in others) for seed in seeds
                if all((m, seed) in runs for m in others)]
        if gaps:
            paired.append(f"{name} {_fmt(gaps)}")
    rivals = "" if against is None else " against the peers only (" + ", ".join(
        m for m in methods if m != model) + ")"
    return (f"`{model}`{rivals} has the best mean held-out log-likelihood on {len(won)} of {n} tables"
            + (f" ({', '.join(won)})" if won else "")
            + (f"; best elsewhere: {'; '.join(lost)}" if lost else "")
            + f". Target (best on >= 4 of 5): **{target}**. Paired by seed, `{model}` minus the best "
            f"other method of that seed (nats/row, mean ± std over seeds): " + "; ".join(paired) + ".")


def _point_masses(name, variant):
    """Continuous, non-integer columns where one value holds >= 10% of the rows (unbounded densities)."""
    df, _ = load_table(name, variant)
    out = []
    for column in df.columns:
        if _is_discrete(df[column].dtype):
            continue
        values = df[column].to_numpy(np.float64)
        if np.all(values == np.round(values)):
            continue
        top = df[column].value_counts(normalize=True).iloc[0]
        if top >= 0.1:
            out.append(f"{column} ({top:.0%} at {df[column].value_counts().index[0]:.4g})")
    return out


_RUN = "OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=. python benchmarks/mixed_tables.py "
#: How the committed results were produced (three processes at once, then the prototype).
RUN_COMMANDS = [
    _RUN + "--tables penguins cars anes96 --cache /tmp/mixed_B.json",
    _RUN + "--tables fair randhie --seeds 0 1 --cache /tmp/mixed_A.json --skip-extras --out /tmp/mixed_A.md",
    _RUN + "--tables fair --seeds 2 --cache /tmp/mixed_C.json --skip-extras --out /tmp/mixed_C.md",
    _RUN + "--tables penguins cars anes96 --methods 'MAF + marginal init (prototype)' --cache /tmp/mixed_D.json "
    "--skip-extras --out /tmp/mixed_D.md",
    "# after the CategoricalMADE fix: the skflow rows of every table with discrete columns, again",
    _RUN + "--tables penguins cars anes96 --methods MAF NSF --cache /tmp/mixed_E.json --skip-extras --out /tmp/mixed_E.md",
    _RUN + "--tables randhie --variants cat --methods MAF NSF --seeds 0 --cache /tmp/mixed_F.json --skip-extras",
    _RUN + "--tables fair --variants cat --methods MAF NSF --seeds 0 1 2 --cache /tmp/mixed_F.json --skip-extras",
    "# the first run's caches without those rows (/tmp/mixed_{A,B,C}_filtered.json), then the figure:",
    _RUN + "--cache /tmp/mixed_G.json /tmp/mixed_E.json /tmp/mixed_F.json /tmp/mixed_A_filtered.json "
    "/tmp/mixed_B_filtered.json /tmp/mixed_C_filtered.json /tmp/mixed_D.json",
    "# third run: every skflow row again with the current code, and FlowMixture (MAF x5), chosen on seeds 10-12",
    "# (results/mixed_tables_other_splits.md); the peers' rows are the first run's:",
    _RUN + "--tables fair --variants raw --methods MAF 'MAF x5' NSF --cache /root/skflow_mt/rep_fair.json "
    "--skip-extras --out /root/skflow_mt/rep_fair.md",
    _RUN + "--tables penguins cars anes96 --variants raw --methods MAF 'MAF x5' NSF "
    "--cache /root/skflow_mt/rep_small.json --skip-extras --out /root/skflow_mt/rep_small.md",
    _RUN + "--tables randhie --variants raw --methods MAF 'MAF x5' NSF --seeds 0 "
    "--cache /root/skflow_mt/rep_randhie.json --skip-extras --out /root/skflow_mt/rep_randhie.md",
    _RUN + "--tables penguins cars anes96 --variants cat --methods MAF 'MAF x5' NSF "
    "--cache /root/skflow_mt/rep_cat_small.json --skip-extras --out /root/skflow_mt/rep_cat_small.md",
    _RUN + "--tables fair randhie --variants cat --methods MAF 'MAF x5' NSF "
    "--cache /root/skflow_mt/rep_cat_large.json --skip-extras --out /root/skflow_mt/rep_cat_large.md",
    _RUN + "--tables penguins cars anes96 --methods 'MAF + marginal init (prototype)' "
    "--cache /root/skflow_mt/rep_proto.json --skip-extras --out /root/skflow_mt/rep_proto.md",
    "# all caches copied to benchmarks/results/cache/mixed_tables/ (git-ignored, as every benchmark cache is)",
]
RUN_NOTE = ("Every run used OMP_NUM_THREADS=1 on a shared 2-core CPU with other jobs running (load average 4-6). "
            "The first three processes ran side by side: 41 min wall in all (penguins, cars, anes96 with both "
            "variants, 3 seeds, the outlier check and the figure: 15 min; fair and randhie: 41 min); the "
            "prototype runs took 5 min more. Fit times in the tables are wall seconds under that load. (The "
            "fair/randhie process was started with the default seeds 0 1 2 and stopped once seed 1 was done, "
            "which is what `--seeds 0 1` runs; seed 2 of fair ran in the third process.) No seed or table "
            "was dropped: 3 seeds everywhere, 1 for randhie as planned. The third run (two or three processes side "
            "by side) refitted every skflow row with the current training loop (fused "
            "AdamW). No row came out bit-identical: 52 rows refitted, some agree to 0.001 nats, others moved by up "
            "to 0.9 nats (anes96 raw, NSF seed 2) and, on tables with atoms, by up to 5.3 (fair raw, NSF seed 0: "
            "-8.36 then -3.07), which shows how much of a single fit is seed and numerics. The tables below are "
            "the third run's for skflow and the first run's for the peers.")

#: The hand-written reading of the results (kept here so that --report-only reproduces the file).
SUMMARY = [
    "## Summary",
    "",
    ("- **Third run: every skflow row refitted with the current code, and `FlowMixture()` added as "
    "`MAF x5`** (five `MAFDensity()` seeded from the split's seed, their equal-weight mixture, exact). "
    "It was added after `mixed_tables_other_splits.md` measured, on other splits (seeds 10-12) of the "
    "three small tables, that five seeded copies gain 0.1-0.4 nats/row over one flow; it was then run "
    "once on these splits, untuned. The peers' rows are the first run's (their code did not change). "
    "Before this run the single MAF was best on 3 of 5 raw tables (penguins, fair, anes96); refitted, "
    "anes96 went to NSF by 0.05 nats."),
    ("- **Target (the default skflow density best on >= 4 of 5 raw tables): met by `FlowMixture()`, the "
    "density the README recommends for tables, on 4 of 5** (penguins -17.14, cars -24.13, fair -1.86, "
    "anes96 -22.64; `NSFDensity` wins randhie, 3.83 against 1.71, a spike contest). The single "
    "`MAFDensity()` is best on none of the 5 once the mixture is in the table, and on 2 of 5 without it "
    "(penguins, fair; NSF takes cars by 0.07 and anes96 by 0.05 nats). Against the issue's peers only "
    "(StepMix, product, zuko) MAF, NSF and the mixture are each best on 5 of 5 raw tables. On the other "
    "splits (seeds 10-12, small tables only) the mixture beat every single flow and StepMix on penguins "
    "and anes96 and trailed the single NSF by 0.07 nats on cars (conservative scoring); scored exactly on "
    "all five tables of seeds 10-12 it is best on 3 of 5 (penguins, cars, fair; NSF takes anes96 within the "
    "seed spread and randhie), see `mixed_tables_other_splits.md`. In the cat variant the mixture is best "
    "on 3 of 5 (penguins by 0.003 over StepMix, cars, anes96; StepMix wins fair by 0.15, NSF randhie)."),
    ("- **Most margins are small or are spike contests.** Where no continuous column has an atom "
    "(penguins, cars) the skflow densities and StepMix lie within 0.1-1 nat/row of each other; the "
    "mixture's paired lead over the best other method is +0.07 ± 0.07 (penguins raw), +0.19 ± 0.19 "
    "(cars raw) and +0.20 ± 0.53 (anes96 raw): positive on average everywhere, within the seed spread on "
    "each table alone. The large margins on fair (mixture -1.86, MAF -2.77, NSF -4.53, StepMix -9.26) "
    "and randhie (NSF +2.1 over the mixture) come from tables with atoms in continuous columns (listed "
    "above): they say how tall a spike a model grows, not how well it models the table, and they move by "
    "up to 5.3 nats between refits of the same model (fair)."),
    ("- **Where skflow loses.** In the cat variant StepMix (a latent class model with BIC-chosen "
    "classes) wins fair (-8.29 against -8.44 for the mixture and -8.59 for MAF) and ties the mixture on "
    "penguins (-17.23 each; the single MAF -17.43). The product baseline (-23.00) beats the single MAF "
    "(-23.34) on anes96 cat, but not the mixture (-22.92): its discrete part is nearly uniform (the joint "
    "table over 268 912 cells has seen about 705 of them), but its pooled full-covariance GMM fits the "
    "four continuous columns (popul, age, income and the degenerate logpopul) better than MAF's "
    "conditional flow (first run, seed 0: -10.6 against -13.5 nats for that part; MAF fitted to those "
    "four columns alone: -12.6)."),
    ("- **Integers as categories: mixed.** With the third run's refits, MAF scores anes96's ordinal "
    "codes better as dequantized integers (raw -22.97, a lower bound of the log-probability) than as "
    "categories (cat -23.34, exact), and penguins' year too (-17.21 against -17.43); on cars (Cylinders) "
    "the category is ahead by 0.49 nats (-23.96 against -24.45). The mixture shows the same pattern "
    "(anes96 -22.64 raw vs -22.92 cat; penguins -17.14 vs -17.23; cars -24.13 vs -23.64). skflow keeps "
    "integers numeric by default; casting a column to `category` is one line where it helps."),
    ("- **The one-hot workaround is clearly worse than MixedFlow.** zuko's MAF on dequantized one-hot columns "
    "trails skflow's MAF by 1.0-2.8 nats on penguins and cars and by 8.6-12.9 nats on the "
    "many-category cat variants (fair, anes96); part of that is the bound (mass between one-hot cells is lost), but it is "
    "the number a user of the workaround gets."),
    ("- **A skflow weakness found by the first run, now fixed.** The first discrete column's distribution in "
    "`CategoricalMADE` is the output bias alone (no earlier column to condition on), initialised at zero; "
    "Adam moves it by about `lr` = 1e-3 per step, and on small tables early stopping ends training after one or "
    "two hundred steps, so that marginal stays near uniform: penguins' species is sampled 0.35/0.31/0.34 "
    "against 0.44/0.20/0.36 in the data (figure below). Starting the bias at the log marginal "
    "frequencies (prototype below) gains +0.43 ± 0.06 nats on cars cat, +0.28 ± 0.19 on anes96 cat, "
    "+0.17 ± 0.03 on cars raw and nothing measurable on penguins (first run). skflow now starts every "
    "conditional at the category frequencies; the prototype table below, rerun against the fixed default, "
    "shows no difference left, and the figure's species frequencies now match (0.43/0.20/0.37 sampled)."),
    ("- **StepMix, product baseline.** StepMix is the strongest peer, though its worst held-out rows are "
    "among the worst (-89 nats on randhie raw, -66 on anes96 cat). The product baseline is weak: its "
    "per-cell full-covariance mixtures (e.g. 87 training rows, up to 10 components) have near-degenerate "
    "components (variance about `reg_covar` along some direction), so a held-out row off their support "
    "scores -82 497 nats (randhie cat), and its joint frequency table is near uniform when there are many "
    "discrete columns (fair cat, anes96 cat)."),
    ("- `FlowOutlierDetector()` runs unchanged on a mixed DataFrame (ROC AUC 0.98 for Chinstrap as the "
    "outlier class, below), and `sample` returns a DataFrame with the training dtypes. Sampled "
    "marginals of the measurements and categories look right; 5% of the sampled `year`s "
    "fall outside 2007-2009 (a dequantized three-value integer column; as a `category` it would be exact)."),
    "",
]


def write_report(records, extras, tables, methods, variants, command, path):
    infos = {name: load_table(name, "cat")[1] for name in tables}
    lines = [
        "# Mixed-type tables: held-out log-likelihood",
        "",
        "Commands (repository root). The runs, split over parallel processes with their own caches:",
        "",
        *(f"    {c}" for c in RUN_COMMANDS),
        "",
        "then this report (every run cached: it only redraws the figure; `--report-only` rewrites the text alone):",
        "",
        f"    {command}",
        "",
        RUN_NOTE,
        "",
        "## Data",
        "",
        ("The CSVs of `../shared/data/tables`, read with `pandas.read_csv` and given to skflow as they are. "
        "String columns (penguins species/island/sex, cars Origin) are discrete, all others numeric. "
        "Rows with an empty cell are dropped; randhie is subsampled to 5000 rows (one fixed subset)."),
        "",
        "| table | rows read | rows dropped (empty cells) | rows used | columns | cast to `category` in variant `cat` |",
        "|---|---|---|---|---|---|",
    ]
    for name in tables:
        info, df = infos[name], load_table(name)[0]
        lines.append(f"| {name} | {info['n_read']} | {info['n_dropped']} | {info['n_used']}"
                     f"{' (subsample)' if name in SUBSAMPLE else ''} | {df.shape[1]} | {', '.join(info['cast']) or '—'} |")
    lines += [
        "",
        (f"Variant `cat` casts every numeric column with at most {MAX_LEVELS} distinct values to `category`. "
        "The brief asked for low-cardinality *integer* columns; fair's age, yrs_married, children and "
        "randhie's lncoins are codes with non-integer values (e.g. age bracket 17.5, children 5.5 = '5+', "
        "log coinsurance levels), so they are cast too, marked '(non-integer)'. Without the cast they are "
        "continuous columns with a handful of values and no dequantization (skflow dequantizes integer-valued "
        "columns only), i.e. atoms that a continuous density can make arbitrarily tall."),
        "",
        ("**Atoms in continuous columns.** Non-integer continuous columns where one value holds >= 10% of the "
        "rows (skflow's point-mass rule) give an unbounded likelihood: a model scores higher the taller "
        "the spike it grows there, limited only by its regularisation (GaussianMixture's and StepMix's "
        "`reg_covar=1e-6` on standardised data, the flows' bounded scales, early stopping). On these tables "
        "the numbers measure spike height as much as fit:"),
        "",
    ]
    for variant in variants:
        for name in tables:
            atoms = _point_masses(name, variant)
            if atoms:
                lines.append(f"- {name} ({variant}): {', '.join(atoms)}")
    lines += [
        ("- anes96 (both): `logpopul` is exactly `log(popul + 0.1)`, a function of another (dequantized integer) "
        "column: `popul + u` rounds back to `popul`, which fixes `logpopul`, so a model can make the "
        "conditional density of `logpopul` as tall as its regularisation allows."),
        "",
        "## Measure",
        "",
        ("Per held-out row: `log P(discrete cells) + log p(continuous cells | discrete)` in nats, continuous parts in "
        "the units of the data (higher is better); mean over the test rows, then mean ± std over seeds "
        "(80/20 splits, `train_test_split(random_state=seed)`). Integer-valued continuous columns "
        "(skflow's rule: all training values whole, >= 2 values) are dequantized identically for every "
        f"method: each test row is scored at {N_DRAWS} points `x + u`, `u ~ U(-1/2, 1/2)` on those columns (the "
        "same draws for all methods) and the log-densities averaged: `E_u log p(x + u)`, a lower bound of "
        "the log-probability of the integer's unit cell under each model. skflow trains on `x + u` "
        "(fresh noise each epoch) and its `score_samples` takes the noisy DataFrame as it is; its "
        "own default score, at the integer itself, is listed separately (it is the density at the cell's "
        "centre, not a bound). StepMix, the product baseline and the GMMs are trained on one noisy "
        "draw of the training rows; zuko on fresh noise each epoch."),
        "",
        ("zuko MAF (one-hot) reports `E_v log p(one-hot + v, continuous)` with `v ~ U(0,1)` on the one-hot "
        f"columns ({N_DRAWS} draws): a **lower bound** of the measure, not the measure (the mass a flow "
        "puts between and outside the one-hot cells is lost)."),
        "",
        ("StepMix gives a category that a latent class never saw probability 1e-15 (its clipping), so a "
        "test row with a category absent from the training split costs it ~34.5 nats; skflow gives such "
        "a value 1e-3/(K+1); the product table has its 0.5 smoothing."),
        "",
        *SUMMARY,
    ]
    prototypes = [m for m in methods if m in PROTOTYPES]
    methods = [m for m in methods if m not in PROTOTYPES]
    for variant in variants:
        title = {"raw": "Variant raw (tables as loaded)",
                 "cat": f"Variant cat (numeric columns with <= {MAX_LEVELS} values as `category`)"}[variant]
        fitted = [m for m in SKFLOW if m in methods
                  and any(r["method"] == m and r["variant"] == variant for r in records)]
        lines += [f"## {title}", "", "Mean held-out log-likelihood (nats/row; best in bold):", "",
                  *_table(records, tables, methods, variant), "",
                  *[line for model in fitted for line in (_verdict(records, tables, methods, variant, model), "")],
                  *[line for model in fitted
                    for line in (_verdict(records, tables, methods, variant, model, against=PEERS), "")]]
        skflow = [m for m in SKFLOW if m in methods]
        if skflow:
            lines += [("skflow's own `score_samples` at the integers (no noise; not comparable with the peers' "
                      "column above when a table has integer columns):"), "",
                      *_table(records, tables, skflow, variant, key="skflow_at_integer"), ""]
        lines += ["Worst held-out row (minimum over seeds, nats):", "",
                  *_table(records, tables, methods, variant, key="min", reduce=np.min), "",
                  "Fit time (s, mean over seeds):", "",
                  *_table(records, tables, methods, variant, key="fit_s", reduce=np.mean), ""]
    if prototypes:
        lines += ["## Prototype: CategoricalMADE bias at the marginal frequencies (not in skflow)", "",
                  ("`MarginalInitMAF` (in this script): `MAFDensity()` whose categorical output bias starts at "
                  "the log marginal frequencies of the training codes instead of zero; everything else default. "
                  "Paired by seed against the default MAF (same splits, same measure; nats/row):"), "",
                  "| table / variant | default MAF | prototype | prototype - MAF |", "|---|---|---|---|"]
        for variant in variants:
            for name in tables:
                runs = {(r["method"], r["seed"]): r["mean"] for r in records
                        if r["table"] == name and r["variant"] == variant}
                for proto in prototypes:
                    seeds = [sd for (m, sd) in runs if m == proto and ("MAF", sd) in runs]
                    if seeds:
                        base = [runs[("MAF", sd)] for sd in seeds]
                        new = [runs[(proto, sd)] for sd in seeds]
                        lines.append(f"| {name} / {variant} ({len(seeds)} seeds) | {_fmt(base)} | {_fmt(new)} | "
                                     f"{_fmt(np.subtract(new, base))} |")
        lines.append("")
    lines += ["## What was fitted", ""]
    for variant in variants:
        for name in tables:
            rs = [r for r in records if r["table"] == name and r["variant"] == variant]
            if rs:
                mismatch = [f"{r['method']} seed {r['seed']}" for r in rs if r.get("same_integer_columns") is False]
                lines.append(f"- {name} / {variant} (train/test/columns {rs[0]['shape']}): "
                             + "; ".join(f"{r['method']} s{r['seed']}: {r['info']}" for r in rs)
                             + (f". skflow dequantized other columns than the benchmark in: {mismatch}" if mismatch
                                else ""))
    lines.append("")
    if "outliers" in extras:
        o = extras["outliers"]
        lines += [
            "## FlowOutlierDetector on a mixed table",
            "",
            ("`FlowOutlierDetector(random_state=seed).fit(X)` on penguins' raw DataFrame without `species` "
            "(island and sex stay strings), unchanged otherwise. Trained on 70% of the Adelie and Gentoo "
            f"rows ({o['n_train']}); tested on the other 30% plus all {o['n_outliers']} Chinstrap rows "
            f"({o['n_test']} rows); outlier score `-score_samples`. ROC AUC over seeds 0, 1, 2: "
            f"{', '.join(f'{a:.3f}' for a in o['aucs'])} (mean {np.mean(o['aucs']):.3f}); "
            f"{o['n_flagged_last']} test rows predicted -1 in the last seed; {o['seconds']:.0f} s in all. "
            "(Keeping `species` would make it trivial: Chinstrap is then a category unseen in fit.)"),
            "",
        ]
    if "figure" in extras:
        f = extras["figure"]
        lines += [
            "## Samples",
            "",
            "![penguins: real vs sampled marginals](mixed_tables_penguins.png)",
            "",
            (f"`MAFDensity(random_state=0).fit(penguins)` ({f['epochs']} epochs) then `.sample(len(penguins), "
            f"random_state=0)`: the sample's dtypes match the training dtypes: {f['dtypes_match']} "
            f"({', '.join(f'{c}: {a}' for c, (a, b) in f['dtypes'].items())})."),
            "",
            "Category frequencies, real / sampled: " + "; ".join(
                f"{c}: " + ", ".join(f"{k} {a:.2f}/{b:.2f}" for k, (a, b) in m.items())
                for c, m in f.get("marginals", {}).items()) + ".",
            "",
            "Sampled values outside the real column's range: " + ", ".join(
                f"{c} {v:.1%}" for c, v in f.get("outside", {}).items()) + ".",
            "",
        ]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", nargs="+", default=list(TABLES), choices=TABLES)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--cache", type=Path, nargs="+", default=[Path("/tmp/skflow_mixed_tables.json")],
                        help="JSON files of finished runs: new runs go to the first; all are read (so "
                             "processes with their own --cache can split a run, e.g. by --tables).")
    parser.add_argument("--report-only", action="store_true",
                        help="Write the report from the cache without fitting what is missing.")
    parser.add_argument("--skip-extras", action="store_true", help="No outlier check and no figure.")
    parser.add_argument("--out", type=Path, default=RESULTS / "mixed_tables.md")
    args = parser.parse_args(argv)
    cache = json.loads(args.cache[0].read_text()) if args.cache[0].exists() else {"runs": [], "extras": {}}
    others = [json.loads(path.read_text()) for path in args.cache[1:] if path.exists()]
    done = {(r["table"], r["variant"], r["seed"], r["method"]) for c in [cache, *others] for r in c["runs"]}
    save = lambda: args.cache[0].write_text(json.dumps(cache, indent=1))
    for k, seed in enumerate(args.seeds):
        for name in args.tables:
            if k >= MAX_SEEDS.get(name, len(args.seeds)):
                continue
            for variant in args.variants:
                for method in args.methods:
                    if (name, variant, seed, method) in done or args.report_only:
                        continue
                    record = run_one(name, variant, seed, method)
                    print(json.dumps(record), flush=True)
                    cache["runs"].append(record)
                    save()
    extras = lambda: {k: v for c in [*reversed(others), cache] for k, v in c["extras"].items()}
    if not (args.report_only or args.skip_extras):
        if "outliers" not in extras():
            cache["extras"]["outliers"] = outlier_check()
            print(json.dumps(cache["extras"]["outliers"]), flush=True)
            save()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        cache["extras"]["figure"] = sample_figure(args.out.parent / "mixed_tables_penguins.png")
        save()
    unique = {}  # the same run in several caches: the earliest --cache file wins
    for c in [cache, *others]:
        for r in c["runs"]:
            unique.setdefault((r["table"], r["variant"], r["seed"], r["method"]), r)
    records = [r for r in unique.values() if r["table"] in args.tables and r["variant"] in args.variants
               and (r["method"] in args.methods or r["method"] in PROTOTYPES) and r["seed"] in args.seeds]
    methods = [*args.methods, *(m for m in PROTOTYPES if m not in args.methods and any(r["method"] == m for r in records))]
    command = "OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=. python benchmarks/mixed_tables.py " + shlex.join(
        sys.argv[1:] if argv is None else argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_report(records, extras(), args.tables, methods, args.variants, command.strip(), args.out)
    print(args.out.read_text())


if __name__ == "__main__":
    main()
