"""The benchmarks' data: ``../shared/data`` beside the repository root, and scikit-learn's bundled sets.

Nothing is downloaded. A missing file raises :class:`MissingData`, which says where the file was
looked for; a script stops with that message, and the tests skip.
"""

import gzip
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.model_selection import train_test_split

ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = ROOT.parent / "shared" / "data"

#: Short names of the ADBench sets the density benchmarks use.
ADBENCH = {"magic": "22_magic.gamma", "pendigits": "28_pendigits", "vowels": "40_vowels",
           "cardio": "6_cardio", "shuttle": "32_shuttle"}
#: The tabular density sets, in report order.
SETS = ("magic", "pendigits", "vowels", "cardio", "breast_cancer")
#: Fraction of rows held out for scoring.
TEST_FRACTION = 0.2


class MissingData(FileNotFoundError):
    """A file of ``../shared/data`` is absent, so the benchmark cannot run."""


def data_path(*parts):
    """The path of a file under ``../shared/data``; :class:`MissingData` when it is absent."""
    path = DATA_DIR.joinpath(*parts)
    if not path.exists():
        raise MissingData(f"{path} not found: the benchmarks read ../shared/data beside the repository root "
                          "(see its README.md).")
    return path


def adbench(name):
    """``(X, y)`` of an ADBench set (file stem such as ``"40_vowels"``, or a short name of ``ADBENCH``)."""
    data = np.load(data_path("adbench", f"{ADBENCH.get(name, name)}.npz"))
    return data["X"].astype(np.float64), data["y"].astype(int)


def adbench_names():
    """The stems of every ADBench set, in the order of their numbers."""
    paths = data_path("adbench").glob("*.npz")
    return sorted((p.stem for p in paths), key=lambda stem: int(stem.split("_")[0]))


def subsample(X, max_rows, seed=0):
    """A fixed random subset of ``max_rows`` rows (all of X when None or when X is smaller)."""
    if max_rows is None or len(X) <= max_rows:
        return X
    return X[np.sort(np.random.default_rng(seed).choice(len(X), max_rows, replace=False))]


def load_set(name, max_rows=None):
    """All rows of a tabular density set as float64 (outlier labels dropped)."""
    X = load_breast_cancer().data.astype(np.float64) if name == "breast_cancer" else adbench(name)[0]
    return subsample(X, max_rows)


def split_set(name, seed, max_rows=None):
    """``(X_train, X_test)``: a seeded random split of a set, ``TEST_FRACTION`` held out."""
    return train_test_split(load_set(name, max_rows), test_size=TEST_FRACTION, random_state=seed)


def read_table(name):
    """A CSV of ``../shared/data/tables`` as a DataFrame, as published (empty cells are NaN)."""
    import pandas as pd

    return pd.read_csv(data_path("tables", f"{name}.csv"))


def digits_split(max_rows=None):
    """scikit-learn's 8x8 digits, stratified 1437 train / 360 test: ``(X_train, X_test, y_train, y_test)``."""
    digits = load_digits()
    X, y = digits.images.astype(np.int64), digits.target
    if max_rows is not None:
        X, _, y, _ = train_test_split(X, y, train_size=max_rows, stratify=y, random_state=0)
    return train_test_split(X, y, test_size=0.2 if max_rows else 360, stratify=y, random_state=0)


def _read_idx(path, header):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read()[header:], dtype=np.uint8)


def mnist_split(max_rows=None):
    """The 10k MNIST test images shuffled with seed 0: 8000 train / 2000 test, as ``digits_split``."""
    X = _read_idx(data_path("mnist", "t10k-images-idx3-ubyte.gz"), 16).reshape(-1, 28, 28).astype(np.int64)
    y = _read_idx(data_path("mnist", "t10k-labels-idx1-ubyte.gz"), 8).astype(np.int64)
    order = np.random.default_rng(0).permutation(len(X))
    X, y = X[order], y[order]
    n_train = 8000 if max_rows is None else max_rows * 4 // 5
    n_test = 2000 if max_rows is None else max_rows - n_train
    return X[:n_train], X[n_train:n_train + n_test], y[:n_train], y[n_train:n_train + n_test]
