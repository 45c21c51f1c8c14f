"""Discrete levels: their validation and the noise that dequantizes them.

:func:`check_levels` checks that values are integers in ``[0, n_bins)``;
:func:`scoring_noise` draws the uniform noise a dequantized model is scored
with, as a function of each row (so a score does not depend on the other rows
scored with it); :func:`uniform_dequantized_score_samples` turns a continuous
density into the importance-weighted bound of ``log P(x)`` of discrete
values. The dequantizer modules themselves are models
(:mod:`skflow.models.dequantization`).
"""

import hashlib
import math

import numpy as np

__all__ = [
    "check_levels",
    "row_uniforms",
    "scoring_noise",
    "uniform_dequantized_score_samples",
]


def scoring_noise(X, n_draws=1, seed=0):
    """Uniform noise in ``[0, 1)`` of shape ``(n_draws, *X.shape)``, a function of each row.

    Row ``i``'s noise comes from a numpy generator seeded by a hash of its
    values and ``seed``, so a score depends neither on which other rows are
    scored with it nor on any global random state.
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    return np.moveaxis(row_uniforms(X, (n_draws, *X.shape[1:]), seed), 0, 1)


def row_uniforms(X, shape, seed=0):
    """Uniforms in ``[0, 1)`` of shape ``(len(X), *shape)``: row ``i``'s from a generator seeded by a
    hash of row ``i``'s values and ``seed`` (see :func:`scoring_noise`)."""
    X = np.ascontiguousarray(X, dtype=np.float64)
    out = np.empty((len(X), *shape))
    for i, row in enumerate(X):
        key = int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little")
        out[i] = np.random.default_rng([key, seed]).random(shape)
    return out


def check_levels(X, n_bins):
    """Raise a ValueError unless every value of X is an integer in ``[0, n_bins)``."""
    X = np.asarray(X)
    integer = np.all(X == np.round(X))
    if not (integer and np.all((X >= 0) & (X < n_bins))):
        raise ValueError(
            f"With n_bins={n_bins}, values must be integers in [0, {n_bins}); got values in "
            f"[{X.min()}, {X.max()}]{'' if integer else ' that are not all integers'}."
        )


def uniform_dequantized_score_samples(score_samples, X, n_bins, n_draws=1, seed=0):
    """``log P(x)`` bound of any density fitted on uniformly dequantized values ``x + u``.

    For a density ``p`` over ``x + u`` (units of x, ``u`` in ``[0, 1)``),
    ``log P(x) >= log mean_k p(x + u_k)`` in expectation (importance weighting
    with the uniform proposal): the bookkeeping of skflow's dequantized
    models applied to any ``score_samples``, e.g. a GaussianMixture's.

    Parameters
    ----------
    score_samples : callable
        Maps an array like X to log-densities per row.
    X : ndarray of shape (n_samples, n_features)
        Integers in ``[0, n_bins)``.
    n_bins : int
    n_draws : int, default=1
    seed : int, default=0

    Returns
    -------
    log_prob : ndarray of shape (n_samples,)
    """
    X = np.asarray(X, dtype=np.float64)
    check_levels(X, n_bins)
    draws = np.stack([score_samples(X + u) for u in scoring_noise(X, n_draws, seed)])
    return np.logaddexp.reduce(draws, axis=0) - math.log(n_draws)
