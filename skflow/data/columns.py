"""Mixed-type tables: which columns are discrete, their categories, and the way back.

A DataFrame with boolean, ``category`` or string (object) columns is a mixed
table. :class:`TableEncoder` turns it into one float array: continuous
columns (floats, and integers, which keep the tabular estimators' uniform
dequantization) as they are, discrete columns as integer codes
``0 .. K_i - 1`` into their categories (-1 for a category not seen in fit).
The estimators then model ``log P(discrete) + log p(continuous | discrete)``
(:class:`skflow.models.flow.MixedFlow`) and give samples back with the training
dtypes.

Integer columns stay continuous (dequantized, scored at the integer) rather
than becoming categories: counts such as doctor visits take dozens of values,
are ordered, and may take values unseen in training; a softmax over observed
values would ignore all three. Give a column the ``category`` dtype to model
it as discrete.
"""

import numpy as np
import pandas as pd
from pandas.api import types
from sklearn.utils.validation import validate_data

__all__ = ["TableEncoder", "is_mixed_table", "check_table"]


def _is_discrete(dtype):
    return (
        types.is_bool_dtype(dtype)
        or isinstance(dtype, pd.CategoricalDtype)
        or types.is_object_dtype(dtype)
        or types.is_string_dtype(dtype)
    )


def is_mixed_table(X):
    """Whether X is a DataFrame with at least one boolean, category or string column."""
    return isinstance(X, pd.DataFrame) and any(_is_discrete(dtype) for dtype in X.dtypes)


def check_table(estimator, X, reset):
    """Record (``reset``) or check a mixed table's feature names and count on ``estimator``; return X.

    The cells themselves are checked by :class:`TableEncoder`.
    """
    validate_data(estimator, X, skip_check_array=True, reset=reset)
    if reset and len(X) < 2:
        raise ValueError(f"Found {len(X)} sample(s) while a minimum of 2 is required.")
    return X


def _categories(column):
    if isinstance(column.dtype, pd.CategoricalDtype):
        return np.asarray(column.dtype.categories, dtype=object)
    if types.is_bool_dtype(column.dtype):
        return np.array([False, True], dtype=object)
    return np.asarray(sorted(column.dropna().unique(), key=str), dtype=object)


class TableEncoder:
    """Split a DataFrame into continuous values and discrete codes, and back.

    Attributes (after ``fit``)
    --------------------------
    columns_ : list
        Column names, in order.
    dtypes_ : pandas.Series
        Their dtypes, restored by :meth:`inverse_transform`.
    discrete_ : ndarray of bool
        Which columns are discrete.
    categories_ : list of ndarray
        The categories of each discrete column (codes index into them).
    """

    def fit(self, df):
        self.columns_ = list(df.columns)
        self.dtypes_ = df.dtypes
        self.discrete_ = np.array([_is_discrete(dtype) for dtype in df.dtypes])
        self.categories_ = [_categories(df[c]) for c, d in zip(df.columns, self.discrete_) if d]
        return self

    @property
    def cardinalities_(self):
        return [len(c) for c in self.categories_]

    def transform(self, df):
        """Float array ``(n, n_columns)``: continuous values and category codes (-1: unseen; NaN: missing)."""
        if not isinstance(df, pd.DataFrame) or list(df.columns) != self.columns_:
            raise ValueError(f"X must be a DataFrame with the columns seen in fit: {self.columns_}.")
        out = np.empty((len(df), len(self.columns_)))
        categories = iter(self.categories_)
        for j, (name, discrete) in enumerate(zip(self.columns_, self.discrete_)):
            column = df[name]
            if discrete:
                known = next(categories)
                lookup = {value: code for code, value in enumerate(known)}
                codes = [lookup.get(value, -1) for value in column.astype(object)]
                out[:, j] = np.where(column.isna().to_numpy(), np.nan, codes)
                continue
            try:
                values = column.to_numpy(dtype=np.float64, na_value=np.nan)
            except (TypeError, ValueError) as error:
                raise ValueError(f"Column {name!r} is neither numeric nor discrete: {error}") from None
            if np.isinf(values).any():
                raise ValueError(f"Column {name!r} contains infinite values.")
            out[:, j] = values
        return out

    def one_hot(self, df):
        """Float array of the continuous values and, per discrete column, one indicator per category.

        The encoding of a mixed table used as a *conditioning input* (a context); a category
        unseen in fit, or missing, gets all-zero indicators.
        """
        A = self.transform(df)
        parts, categories = [], iter(self.categories_)
        for j, discrete in enumerate(self.discrete_):
            if discrete:
                codes = np.nan_to_num(A[:, j], nan=-1).astype(np.int64)
                parts.append((codes[:, None] == np.arange(len(next(categories)))[None, :]).astype(np.float64))
            else:
                parts.append(A[:, j : j + 1])
        return np.hstack(parts)

    def inverse_transform(self, A, index=None):
        """A DataFrame with the training columns and dtypes from values and codes (rows labelled by
        ``index``, e.g. that of the frame the rows came from; None: 0, 1, ...)."""
        data = {}
        categories = iter(self.categories_)
        for j, (name, discrete) in enumerate(zip(self.columns_, self.discrete_)):
            dtype = self.dtypes_[name]
            if discrete:
                values = next(categories)[np.clip(A[:, j].astype(np.int64), 0, None)]
            elif types.is_integer_dtype(dtype):
                values = np.round(A[:, j])
            else:
                values = A[:, j]
            data[name] = pd.Series(values, index=index).astype(dtype)
        return pd.DataFrame(data, columns=self.columns_, index=index)
