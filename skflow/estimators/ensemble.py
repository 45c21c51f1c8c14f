"""The ensemble engine: seeded copies of one density, fitted together, combined exactly.

Every skflow meta-estimator that holds several copies of a density
(:class:`~skflow.FlowMixture`, :class:`~skflow.FlowRegressor`,
:class:`~skflow.FlowOutlierDetector`) builds, fits and combines them here:

- :func:`member_seeds` draws one ``random_state`` per copy;
- :func:`fit_members` fits the copies: as one stacked module (weights with a
  member axis, :mod:`skflow.training.stacked`) when the density allows it,
  which costs far less than fitting them one by one, otherwise one by one or
  in parallel with joblib (``n_jobs``; dask through ``parallel_config``);
- :func:`mixture_log_density` combines their log-densities into the exact
  equal-weight mixture, and :func:`pick_members` chooses the copy that draws
  each sample.
"""

import numpy as np
from joblib import Parallel, delayed
from scipy.special import logsumexp
from sklearn.base import clone
from sklearn.utils import check_random_state

from .density import FlowDensity

__all__ = ["fit_members", "member_seeds", "mixture_log_density", "pick_members", "sample_members"]


def member_seeds(n_members, random_state):
    """``n_members`` integer seeds drawn from ``random_state`` (as scikit-learn's ensembles do)."""
    rng = check_random_state(random_state)
    return [int(seed) for seed in rng.randint(np.iinfo(np.int32).max, size=n_members)]


def _fit_one(estimator, random_state, X, y, fit_params):
    member = clone(estimator)
    if random_state is not None and "random_state" in member.get_params():
        member.set_params(random_state=random_state)
    return member.fit(X, y, **fit_params) if y is not None else member.fit(X, **fit_params)


def fit_members(estimator, seeds, X, y=None, *, context=None, sample_weight=None, n_jobs=None, stack="auto"):
    """Fit one copy of ``estimator`` per seed in ``seeds``; return the fitted copies.

    Parameters
    ----------
    estimator : estimator
        Unfitted; each copy is a clone with ``random_state`` set to its seed
        (None keeps the estimator's own).
    seeds : list of int or None
    X, y : training data and optional class labels, as ``estimator.fit`` takes them.
    context : array-like of shape (n_samples, n_context_features), default=None
        Passed to every copy's ``fit`` (a conditional density).
    sample_weight : array-like of shape (n_samples,), default=None
        Passed to every copy's ``fit``.
    n_jobs : int, default=None
        Copies fitted in parallel by joblib when they are not stacked.
    stack : "auto" or bool, default="auto"
        "auto": train the copies as one stacked module when there are
        several, the estimator is a skflow density that supports it
        (tabular, no accelerator, no ``compile``, no user callbacks) and
        ``n_jobs`` is None. False: always fit one by one.
    """
    fit_params = {
        key: value
        for key, value in {"context": context, "sample_weight": sample_weight}.items()
        if value is not None
    }
    stackable = isinstance(estimator, FlowDensity) and estimator._can_stack()
    if stack == "auto":
        stack = stackable and len(seeds) > 1 and n_jobs is None and None not in seeds
    if stack:
        return clone(estimator)._fit_members(X, y, context, seeds, sample_weight)
    return Parallel(n_jobs=n_jobs)(delayed(_fit_one)(estimator, seed, X, y, fit_params) for seed in seeds)


def mixture_log_density(log_densities):
    """``log((1/K) sum_k exp(l_k))`` per row of the ``K`` members' log-densities ``(K, n)``."""
    log_densities = np.asarray(log_densities, dtype=np.float64)
    if len(log_densities) == 1:
        return log_densities[0]
    return logsumexp(log_densities, axis=0) - np.log(len(log_densities))


def pick_members(n_members, n_samples, rng, weights=None):
    """The rows each of ``n_members`` copies draws, every row's copy picked with ``rng``: uniformly,
    or with probabilities ``weights``.

    Returns one index array per copy (possibly empty); together they cover
    ``range(n_samples)``.
    """
    if weights is None:
        member = rng.randint(n_members, size=n_samples)
    else:
        member = rng.choice(n_members, size=n_samples, p=np.asarray(weights) / np.sum(weights))
    return [np.flatnonzero(member == k) for k in range(n_members)]


def sample_members(members, n_samples, rng, draw, weights=None):
    """Samples of the mixture of ``members`` (equal weights, or ``weights``): row ``i`` from a copy
    picked at random.

    ``draw(member, rows)`` returns the draws of ``member`` for the sample
    indices ``rows`` (a non-empty index array); the parts come back as a list
    in member order with the permutation that restores the drawn order:
    ``(parts, order)`` with ``concatenate(parts)[order]`` the samples.
    """
    picked = pick_members(len(members), n_samples, rng, weights)
    parts = [draw(member, rows) for member, rows in zip(members, picked) if rows.size]
    return parts, np.argsort(np.concatenate(picked))
