"""Affine scaling of the data with its Jacobian, and detection of integer columns.

Every scaler follows one protocol: ``fit(X)`` returns the scaler;
``transform(X)`` and ``inverse_transform(Z)`` map between the user's units
and the flow's; ``log_det_`` is ``log|det dZ/dX|`` per row, which every
log-density adds; ``noise_width`` (per feature, or None) is the width of the
uniform training noise on integer columns; ``point_mass_`` (per feature, or
None) flags columns with a point mass. :class:`Standardizer` scales each
column (tabular data); :class:`GlobalScaler` applies one mean and scale to
every value (continuous images), or nothing (discrete pixels, which a
dequantizer inside the model handles).

The tabular estimators model ``z = (x - mean_) / scale_``. Since this map is affine,
``log p(x) = log p(z) - sum(log scale_)`` exactly, so densities come back in
the units of the X the user passed.

Missing cells (NaN) are left out of every statistic and pass through the map
as NaN; :meth:`Standardizer.log_det` counts a row's observed cells only.

Integer-valued columns (every value a whole number, at least two distinct
values) are uniformly dequantized during training: each epoch sees
``x + u`` with ``u ~ U(-1/2, 1/2)``. The model is then a continuous density
whose integral over the unit cell around an integer approximates the
probability of that integer, and ``score_samples`` evaluates it at the cell's
centre (the integer itself). Samples of such columns are rounded back to
integers. Constant columns are treated the same way, at a resolution of one
unit: they contribute about 0 to ``log p(x)`` at their value and fall off
smoothly away from it; samples return the constant.

A column where one value holds at least ``POINT_MASS_FRACTION`` of the rows
(a missing-value code, a clipped or censored reading, a common count) has a
point mass, which no density can fit: a flow answers with a spike whose
height grows with training. Such columns are recorded in ``point_mass_``;
the estimators' ``point_mass_noise`` smooths them during training.
"""

import numpy as np

__all__ = ["POINT_MASS_FRACTION", "GlobalScaler", "Standardizer"]

#: A column whose most frequent value holds at least this fraction of rows has a point mass.
POINT_MASS_FRACTION = 0.1


def _integer_columns(X):
    return np.all((X == np.round(X)) | np.isnan(X), axis=0)


def _moments(X, weight, axis=None):
    """Mean and standard deviation of X along ``axis`` (None: all values), rows weighted by ``weight``;
    missing (NaN) cells are left out."""
    if weight is None:
        weight = np.ones(len(X))
    if axis is None:
        X, weight = X.ravel(), np.repeat(weight, X.shape[1])
    else:
        weight = np.broadcast_to(weight[:, None], X.shape)
    weight = np.where(np.isnan(X), 0.0, weight)
    X = np.nan_to_num(X)
    total = weight.sum(axis=axis)
    mean = (X * weight).sum(axis=axis) / total
    return mean, np.sqrt(((X - mean) ** 2 * weight).sum(axis=axis) / total)


def weighted_percentile(values, weight, q):
    """``np.percentile(values, q)`` of the values each repeated ``weight`` times (fractional weights too).

    Linear interpolation between the order statistics of the repeated values,
    as ``np.percentile`` does; None weights give ``np.percentile`` itself.
    """
    if weight is None:
        return np.percentile(values, q)
    order = np.argsort(values, kind="stable")
    order = order[weight[order] > 0]
    values, cumulative = values[order], np.cumsum(weight[order])
    position = max(q / 100.0 * (cumulative[-1] - 1.0), 0.0)
    below = np.floor(position)
    lo, hi = np.minimum(np.searchsorted(cumulative, [below, below + 1], side="right"), len(values) - 1)
    return values[lo] + (position - below) * (values[hi] - values[lo])


def _mode_fractions(X, weight=None):
    """(Weighted) fraction of a column's observed rows holding its most frequent value."""
    weight = np.ones(len(X)) if weight is None else weight
    fractions = []
    for column in X.T:
        observed = ~np.isnan(column)
        _, inverse = np.unique(column[observed], return_inverse=True)
        counts = np.bincount(inverse.ravel(), weights=weight[observed])
        fractions.append(counts.max() / weight[observed].sum())
    return np.array(fractions)


class Standardizer:
    """Centre and scale each feature; remember which columns are integers.

    Parameters
    ----------
    dequantize : {"auto", True, False}
        "auto" and True dequantize integer-valued columns; False treats every
        column as continuous.
    discrete : array-like of bool, default=None
        Columns holding category codes (mixed tables): passed through
        unchanged, with no noise and no Jacobian.
    """

    def __init__(self, dequantize="auto", discrete=None):
        self.dequantize = dequantize
        self.discrete = discrete

    def fit(self, X, sample_weight=None):
        """Fit to X (rows weighted by ``sample_weight``: a weight of 2 counts as the row twice)."""
        self.discrete_ = (
            np.zeros(X.shape[1], bool) if self.discrete is None else np.asarray(self.discrete, bool)
        )
        continuous = ~self.discrete_
        mean, scale = _moments(X, sample_weight, axis=0)
        self.mean_ = np.where(continuous, mean, 0.0)
        # constant: no spread beyond rounding relative to the column's own magnitude (a relative test,
        # so that a column of tiny values with a real spread is scaled like any other)
        self.constant_ = ~(scale > 1e-12 * np.abs(self.mean_)) & continuous
        self.integer_ = _integer_columns(X) & ~self.constant_ & continuous
        point_mass = _mode_fractions(X, sample_weight) >= POINT_MASS_FRACTION
        self.point_mass_ = point_mass & ~self.constant_ & continuous
        if not self.dequantize:
            self.integer_[:] = False
        # Dequantization adds variance 1/12 to integer columns.
        scale = np.sqrt(scale**2 + self.integer_ / 12.0)
        self.scale_ = np.where(self.constant_ | self.discrete_, 1.0, scale)
        self.log_det_ = -float(np.sum(np.log(self.scale_)))
        return self

    def transform(self, X):
        """Standardised X (float64); its log|det J| is ``log_det_`` for every row (see :meth:`log_det`)."""
        return np.ascontiguousarray((X - self.mean_) / self.scale_)

    def log_det(self, Z):
        """``log|det dZ/dX|`` of each row of ``Z``, counting its observed (not NaN) cells only: the
        Jacobian of the marginal density of the cells a row has. ``log_det_`` for complete rows."""
        missing = np.isnan(Z)
        if not missing.any():
            return np.full(len(Z), self.log_det_)
        return self.log_det_ + missing @ np.log(self.scale_)

    def inverse_transform(self, Z):
        X = Z * self.scale_ + self.mean_
        X[:, self.integer_] = np.round(X[:, self.integer_])
        X[:, self.constant_] = self.mean_[self.constant_]
        return X

    @property
    def noise_width(self):
        """Width of the dequantization noise per standardised feature."""
        dequantized = self.integer_ | (self.constant_ & bool(self.dequantize))
        return np.where(dequantized, 1.0 / self.scale_, 0.0)


class GlobalScaler:
    """One mean and scale for every value (continuous images), or the identity.

    Parameters
    ----------
    scale : bool, default=True
        False: the identity map (values that a dequantizer handles).
    """

    noise_width = None
    point_mass_ = None

    def __init__(self, scale=True):
        self.scale = scale

    def fit(self, X, sample_weight=None):
        self.discrete_ = np.zeros(X.shape[1], bool)  # every value continuous to the flow
        self.mean_, self.scale_ = 0.0, 1.0
        if self.scale:
            mean, scale = _moments(X, sample_weight)
            self.mean_, self.scale_ = float(mean), float(scale) or 1.0
        self.log_det_ = -X.shape[1] * float(np.log(self.scale_))
        return self

    def transform(self, X):
        return (X - self.mean_) / self.scale_

    def log_det(self, Z):
        """``log|det dZ/dX|`` per row (``log_det_`` for every row: images have no missing cells)."""
        return np.full(len(Z), self.log_det_)

    def inverse_transform(self, Z):
        return Z * self.scale_ + self.mean_
