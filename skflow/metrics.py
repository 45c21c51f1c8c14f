"""Measures of fitted densities."""

import math

import numpy as np

__all__ = ["bits_per_dim", "conditional_log_likelihood", "crps", "interval_score"]


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


def crps(estimator, X, y):
    """Scorer: minus the mean continuous ranked probability score of a FlowRegressor's predictions.

    ``CRPS(F, y) = int (F(t) - 1{t >= y})^2 dt = E|Y - y| - E|Y - Y'| / 2``
    (Gneiting and Raftery 2007), in the units of y, computed from each row's
    predictive cdf (:meth:`skflow.estimators.predictive.FlowDistribution.crps`).
    Negated so that greater is better, as ``GridSearchCV`` expects. One
    target column.

    Parameters
    ----------
    estimator : fitted FlowRegressor or Pipeline whose last step is one
        Anything with ``predict_proba(X)`` returning a distribution with ``crps``.
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)

    Returns
    -------
    score : float
        ``-mean(CRPS)``.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.stats import norm
    >>> class Normal:  # a stand-in: CRPS of N(0, 1) at 0 is 2 phi(0) - 1 / sqrt(pi)
    ...     def predict_proba(self, X):
    ...         return self
    ...     def crps(self, y):
    ...         z = np.asarray(y)
    ...         return z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / np.sqrt(np.pi)
    >>> round(crps(Normal(), np.zeros((1, 1)), [0.0]), 4)
    -0.2337
    """
    return -float(np.mean(estimator.predict_proba(X).crps(y)))


def interval_score(estimator, X, y, coverage=0.9):
    """Scorer: minus the mean interval score of the central ``coverage`` interval (default 90%).

    For the central interval ``[l, u]`` between the ``alpha / 2`` and
    ``1 - alpha / 2`` quantiles (``alpha = 1 - coverage``), Gneiting and
    Raftery's (2007) interval score is
    ``(u - l) + (2 / alpha) (l - y) 1{y < l} + (2 / alpha) (y - u) 1{y > u}``:
    width plus a penalty for every miss, minimised in expectation by the
    true quantiles. Negated so that greater is better. One target column.

    Parameters
    ----------
    estimator : fitted FlowRegressor or Pipeline whose last step is one
        Anything with ``predict_quantiles(X, quantiles)``.
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    coverage : float in (0, 1), default=0.9
        Use ``functools.partial(interval_score, coverage=0.8)`` for another.

    Returns
    -------
    score : float
        ``-mean(interval score)``, in the units of y.

    Examples
    --------
    >>> import numpy as np
    >>> class Fixed:  # the interval [0, 1] for every row
    ...     def predict_quantiles(self, X, quantiles):
    ...         return np.tile([0.0, 1.0], (len(X), 1))
    >>> round(interval_score(Fixed(), np.zeros((3, 1)), [0.5, -0.1, 1.2]), 6)  # widths 1, misses 0.1, 0.2
    -3.0
    """
    if not 0 < coverage < 1:
        raise ValueError(f"coverage must lie strictly between 0 and 1, got {coverage!r}.")
    alpha = 1 - coverage
    if hasattr(estimator, "steps"):
        X = estimator[:-1].transform(X)
        estimator = estimator[-1]
    lower, upper = estimator.predict_quantiles(X, [alpha / 2, 1 - alpha / 2]).T
    y = np.asarray(y, dtype=np.float64).reshape(len(lower))
    score = (upper - lower) + 2 / alpha * (np.maximum(lower - y, 0) + np.maximum(y - upper, 0))
    return -float(np.mean(score))
