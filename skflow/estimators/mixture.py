"""``FlowMixture``: an equal-weight mixture of independently seeded flows.

``p(x) = (1/K) sum_k p_k(x)`` with each ``p_k`` a clone of one skflow density
fitted with its own seed (initialisation, validation split, batches). The
mixture is still an exact density: ``log p(x)`` is a ``logsumexp`` of the
members' exact log-densities, in the units of the data, and it integrates to 1
because each member does. Sampling picks a member uniformly for each row.
"""

from dataclasses import field
from numbers import Integral

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, DensityMixin, _fit_context, clone
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from .density import FlowDensity, parameters
from .ensemble import fit_members, member_seeds, mixture_log_density, sample_members
from .tabular import MAFDensity

__all__ = ["FlowMixture"]


@parameters
class FlowMixture(DensityMixin, BaseEstimator):
    """Equal-weight mixture of ``n_estimators`` independently seeded flows.

    A single flow fitted to a few hundred or thousand rows is noisy: its
    density depends on the seed, with spikes and gaps that held-out rows pay
    for. Averaging the densities of several seeded fits removes much of that
    variance, as bagging does for trees. The result is an exact density with
    the same interface as its members (``score_samples``, ``score``,
    ``sample``), usable wherever a skflow density is.

    Parameters
    ----------
    estimator : skflow density, default=None
        The unfitted density to fit ``n_estimators`` times, e.g.
        :class:`skflow.MAFDensity` or :class:`skflow.NSFDensity`; its
        parameters tune in a grid search as ``estimator__<name>``. None uses
        ``MAFDensity()``.
    n_estimators : int, default=5
        Number of seeded copies. Scoring and memory cost grow
        ``n_estimators``-fold; fitting much less (see Notes). 1 is a single flow.
    random_state : int, RandomState instance or None, default=None
        Seeds the copies: each gets its own ``random_state`` drawn from this
        one, overriding the estimator's. Fix it for reproducible results.
    verbose : int, default=0
        Passed to the copies: > 0 prints each epoch's losses (for stacked
        copies, their sum, once per epoch).
    n_jobs : int, default=None
        None: the copies train as one stacked module when the density allows
        it, else one at a time. An integer fits them in parallel by joblib
        instead (-1: all cores); under
        ``joblib.parallel_config(backend="dask")`` they run on a dask cluster.

    Attributes
    ----------
    estimators_ : list of FlowDensity
        The fitted copies.
    estimator_ : FlowDensity
        The first copy.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names, when X was a DataFrame with string column names.

    Notes
    -----
    The copies of a tabular density (MADE, MAF, IAF, NSF, RealNVP, mixed
    tables) train together as one stacked module, each with its own
    initialisation, validation split, shuffles and early stopping
    (:mod:`skflow.estimators.ensemble`): five copies cost about two fits of
    one, not five. Other densities, and any with ``n_jobs`` set, are fitted
    one by one or in parallel. Measured gains over a single flow on small
    tables are in ``benchmarks/results/defaults.md``.

    Examples
    --------
    >>> from sklearn.datasets import load_wine
    >>> from skflow import FlowMixture, MAFDensity
    >>> X = load_wine().data
    >>> mixture = FlowMixture(MAFDensity(n_transforms=2, max_epochs=10), n_estimators=3,
    ...                       random_state=0).fit(X)
    >>> mixture.score_samples(X[:2]).shape
    (2,)
    >>> mixture.sample(4, random_state=0).shape
    (4, 13)
    """

    _parameter_constraints = {
        "estimator": [FlowDensity, None],
        "n_estimators": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "n_jobs": [Integral, None],
        "verbose": ["verbose"],
    }

    estimator: object = field(default=None, kw_only=False)
    n_estimators: int = 5
    random_state: object = None
    n_jobs: object = None
    verbose: int = 0

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = self._estimator()._missing
        return tags

    def _estimator(self):
        """The estimator the copies are made of (``MAFDensity()`` for None)."""
        return MAFDensity() if self.estimator is None else self.estimator

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None, sample_weight=None):
        """Fit the seeded copies to X (each copy validates X as the estimator does).

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Training data, in any form the estimator accepts.
        y : array-like of shape (n_samples,), default=None
            Class labels, passed on to every copy (see
            :meth:`skflow.FlowDensity.fit`); the mixture's ``score_samples``
            is then the mixture of the copies' marginal densities.
        sample_weight : array-like of shape (n_samples,), default=None
            Row weights, passed on to every copy (see
            :meth:`skflow.FlowDensity.fit`).

        Returns
        -------
        self : object
            The fitted mixture.
        """
        estimator = self._estimator()
        if self.verbose:
            estimator = clone(estimator).set_params(verbose=self.verbose)
        seeds = member_seeds(self.n_estimators, self.random_state)
        self.estimators_ = fit_members(
            estimator, seeds, X, y, sample_weight=sample_weight, n_jobs=self.n_jobs
        )
        self.estimator_ = self.estimators_[0]
        self.n_features_in_ = self.estimator_.n_features_in_
        if hasattr(self.estimator_, "feature_names_in_"):
            self.feature_names_in_ = self.estimator_.feature_names_in_
        return self

    def score_samples(self, X):
        """Log-density of each row under the mixture, in nats and the units of the data.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)

        Returns
        -------
        log_density : ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        return mixture_log_density([member.score_samples(X) for member in self.estimators_])

    def score(self, X, y=None):
        """Mean log-density of the rows of X (nats per row).

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
        y : None
            Ignored.

        Returns
        -------
        score : float
        """
        return float(np.mean(self.score_samples(X)))

    def sample(self, n_samples=1, random_state=None, *, y=None, return_y=False):
        """Draw rows: each from a copy picked uniformly at random.

        Parameters
        ----------
        n_samples : int, default=1
        random_state : int, RandomState instance or None, default=None
            Seeds the draw; None draws fresh randomness.
        y : label or array-like of shape (n_samples,), default=None
            Classes to sample, for copies fitted with labels (see
            :meth:`skflow.FlowDensity.sample`).
        return_y : bool, default=False
            Also return each sample's class (copies fitted with labels).

        Returns
        -------
        X : ndarray or DataFrame of shape (n_samples, n_features)
            As the copies return them (a DataFrame with the training columns
            and dtypes when fitted on one).
        y : ndarray of shape (n_samples,)
            The class of each sample; only with ``return_y=True``.
        """
        check_is_fitted(self)
        if not (isinstance(n_samples, Integral) and n_samples >= 1):
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
        rng = check_random_state(random_state)
        labels = None if y is None or np.ndim(y) == 0 else np.asarray(y)
        if labels is not None and len(labels) != n_samples:
            raise ValueError(f"y has {len(labels)} labels for n_samples={n_samples}.")

        def draw(density, rows):
            options = {} if y is None else {"y": y if labels is None else labels[rows]}
            return density.sample(rows.size, random_state=rng, return_y=return_y, **options)

        parts, order = sample_members(self.estimators_, n_samples, rng, draw)
        if return_y:
            parts, classes = zip(*parts)
        if isinstance(parts[0], pd.DataFrame):  # back to the drawn order, so copies interleave
            X = pd.concat(parts, ignore_index=True).iloc[order].reset_index(drop=True)
        else:
            X = np.concatenate(parts)[order]
        return (X, np.concatenate(classes)[order]) if return_y else X
