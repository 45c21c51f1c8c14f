"""Measures of fitted densities."""

import math

import numpy as np

__all__ = ["bits_per_dim", "conditional_log_likelihood"]


def bits_per_dim(estimator, X):
    """Mean negative log-likelihood of X in bits per dimension.

    ``-mean(estimator.score_samples(X)) / (D log 2)`` with ``D`` the number of
    values per sample (``C*H*W`` for images, whatever X's layout). For an
    estimator fitted with ``n_bins`` this is the bits per dimension of the
    discrete images.

    Parameters
    ----------
    estimator : fitted estimator with ``score_samples``
    X : array-like of shape (n_samples, ...)

    Returns
    -------
    bits : float

    Examples
    --------
    >>> import numpy as np
    >>> class Uniform:
    ...     def score_samples(self, X):
    ...         return np.full(len(X), -64 * np.log(17))
    >>> round(bits_per_dim(Uniform(), np.zeros((3, 8, 8))), 4)  # log2(17)
    4.0875
    """
    n_dims = int(np.prod(np.shape(X)[1:]))
    return float(-np.mean(estimator.score_samples(X)) / (n_dims * math.log(2)))


def conditional_log_likelihood(estimator, X, y):
    """Scorer: mean held-out ``log p(y | x)`` of a fitted FlowRegressor, or of a Pipeline ending in one.

    Pass it as ``scoring=`` to ``GridSearchCV`` or ``cross_val_score`` to
    select conditional densities by held-out log-likelihood (higher is
    better); the regressor's own ``score`` is R^2.

    Parameters
    ----------
    estimator : fitted FlowRegressor or Pipeline whose last step is one
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,) or (n_samples, n_outputs)

    Returns
    -------
    score : float
        Mean of ``score_samples(X, y)`` in nats.
    """
    if hasattr(estimator, "steps"):
        X = estimator[:-1].transform(X)
        estimator = estimator[-1]
    return float(np.mean(estimator.score_samples(X, y)))
