"""``FlowMixture``: a mixture of independently seeded flows, stacked with classical densities.

``p(x) = (w / K) sum_k p_k(x) + sum_j v_j q_j(x)`` with each ``p_k`` a clone
of one skflow density fitted with its own seed (initialisation, validation
split, batches) and, on small numeric tables, ``q_j`` a tuned Gaussian
mixture and kernel density, the weights chosen by held-out likelihood
(:mod:`skflow.estimators.stacking`). The mixture is still an exact density:
``log p(x)`` is a ``logsumexp`` of the components' exact log-densities, in the
units of the data, and it integrates to 1 because each component does.
Sampling picks a component by its weight for each row.
"""

from dataclasses import field
from numbers import Integral

import numpy as np
import pandas as pd
from scipy.special import logsumexp
from sklearn.base import BaseEstimator, DensityMixin, _fit_context, clone
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ..data import Standardizer
from .density import FlowDensity, parameters
from .ensemble import fit_members, member_seeds, mixture_log_density, sample_members
from .stacking import (
    AUTO_MAX_ROWS,
    AUTO_MIN_ROWS,
    default_references,
    fit_stack,
    reference_log_density,
    sample_reference,
)
from .tabular import MAFDensity

__all__ = ["FlowMixture"]


def _stack_problem(member, y, sample_weight):
    """Why classical densities cannot be stacked with the fitted copy ``member`` (None: they can)."""
    scaler = getattr(member, "standardizer_", None)
    if not isinstance(scaler, Standardizer) or getattr(member, "layout_", None) is not None:
        return "stacking needs a tabular estimator of continuous rows (not images or discrete levels)"
    if getattr(member, "n_bins", None) is not None:
        return "stacking needs continuous rows (the estimator models discrete levels, n_bins)"
    if getattr(member, "table_", None) is not None or scaler.discrete_.any():
        return "stacking needs numeric columns only (a mixed table has categories)"
    weighted = sample_weight is not None and np.ptp(np.asarray(sample_weight, dtype=np.float64)) > 0
    if y is not None or weighted:  # equal weights are the plain fit (as for the copies)
        return "stacking is not available with class labels or unequal sample_weight"
    if member.validation_fraction <= 0:
        return "stacking needs the copies' validation rows (validation_fraction > 0)"
    return None


@parameters
class FlowMixture(DensityMixin, BaseEstimator):
    """Mixture of ``n_estimators`` seeded flows, stacked with classical densities on small tables.

    A single flow fitted to a few hundred or thousand rows is noisy: its
    density depends on the seed, with spikes and gaps that held-out rows pay
    for. Averaging the densities of several seeded fits removes much of that
    variance, as bagging does for trees. On small numeric tables a tuned
    Gaussian mixture can still fit better (or a kernel density, or a blend),
    so by default both are mixed in, with weights that maximise the
    likelihood of rows each component did not train on (stacking, Smyth and
    Wolpert 1999): the flows' validation rows serve, so this costs about as
    much as the flows' own fit. The result is an exact density with the
    same interface as its members (``score_samples``, ``score``, ``sample``),
    usable wherever a skflow density is.

    Parameters
    ----------
    estimator : skflow density, default=None
        The unfitted density to fit ``n_estimators`` times, e.g.
        :class:`skflow.MAFDensity` or :class:`skflow.NSFDensity`; its
        parameters tune in a grid search as ``estimator__<name>`` (pass one:
        None has none). None uses
        ``MAFDensity()``.
    n_estimators : int, default=5
        Number of seeded copies. Scoring and memory cost grow
        ``n_estimators``-fold; fitting much less (see Notes). 1 is a single flow.
    stack : "auto", list of estimators or None, default="auto"
        Classical densities stacked with the flows. "auto": a
        ``GaussianMixture`` (1 to 8 components, full or diagonal covariances)
        and a Gaussian ``KernelDensity`` (12 bandwidths), each tuned by shuffled
        3-fold cross-validation, when the fit allows stacking (below); otherwise
        the flows alone. A list: those densities (objects with ``fit`` and
        ``score_samples``, e.g. a ``GridSearchCV`` over one), which must be
        stackable; each must return normalised log-densities of its
        (standardised) rows, and have ``sample(n_samples, random_state)`` for
        :meth:`sample`. None: the flows alone, with equal weights. The stacked
        densities are fitted in the flows' standardised units, on rows that
        carry the flows' training noise (dequantization of integer-valued
        columns, smoothing of point-mass columns), and carry the flows' tail
        guard (see :mod:`skflow.estimators.stacking`). Stacking needs a
        numeric table of continuous rows with no missing cells, of 30 to
        5,000 rows ("auto" only; a list has no size limit), fitted without
        labels or ``sample_weight``, by a tabular estimator with
        ``validation_fraction > 0``.
    random_state : int, RandomState instance or None, default=None
        Seeds the copies: each gets its own ``random_state`` drawn from this
        one, overriding the estimator's, and the stacked densities. Fix it
        for reproducible results.
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
    stacked_ : list of estimators
        The fitted classical densities (in the flows' standardised units);
        empty when none were stacked.
    weights_ : ndarray of shape (n_estimators + len(stacked_),)
        Each component's weight: the copies' (all equal), then the stacked
        densities'. They sum to 1.
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
    tables are in ``benchmarks/results/defaults.md``, and those of stacking
    against a cross-validated Gaussian mixture and kernel density in
    ``benchmarks/results/small_tables.md``.

    **Stacking.** Copy ``k`` holds out its validation rows ``V_k``; each
    stacked density is refitted (at its tuned settings) on the rows outside
    ``V_k`` and scores them too. EM then finds the weights that maximise the
    pooled held-out log-likelihood of the flows (copy ``k``'s density on
    ``V_k``) and the stacked densities, under a Dirichlet prior of one
    pseudo-row per component (no weight is exactly 0). The flows' weight is shared equally
    by the copies, whose held-out rows judge one copy rather than their
    mixture: a small bias towards the classical densities. Rows with missing
    cells, scored after a stacked fit, get the importance-sampling estimate
    of their marginal under the whole mixture.

    References
    ----------
    Smyth and Wolpert (1999). Linearly Combining Density Estimators via
    Stacking. Machine Learning 36, 59-83.

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
    >>> mixture.weights_.shape  # three copies, then the Gaussian mixture and the kernel density
    (5,)
    """

    _parameter_constraints = {
        "estimator": [FlowDensity, None],
        "n_estimators": [Interval(Integral, 1, None, closed="left")],
        "stack": [StrOptions({"auto"}), list, None],
        "random_state": ["random_state"],
        "n_jobs": [Integral, None],
        "verbose": ["verbose"],
    }

    estimator: object = field(default=None, kw_only=False)
    n_estimators: int = 5
    stack: object = "auto"
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
        for reference in self.stack if isinstance(self.stack, list) else []:
            if not (hasattr(reference, "fit") and hasattr(reference, "score_samples")):
                raise TypeError(f"stack holds {reference!r}, which has no fit and score_samples.")
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
        self.stacked_, self.weights_ = [], np.full(self.n_estimators, 1.0 / self.n_estimators)
        references, A = self._references(X, y, sample_weight)
        if references:
            Z = self.estimator_.standardizer_.transform(A)
            valid = [m._member_plan(m.random_state, len(Z))[3] for m in self.estimators_]
            rng = np.random.default_rng(seeds[0])
            self.stacked_, weights = fit_stack(references, Z, self.estimators_, valid, rng)
            flows = np.full(self.n_estimators, weights[0] / self.n_estimators)
            self.weights_ = np.concatenate([flows, weights[1:]])
        return self

    def _references(self, X, y, sample_weight):
        """``(the unfitted densities to stack, X validated by the copies)``; ``([], None)`` when none are
        (``stack=None``, or "auto" where stacking does not apply); a clear error for a list that cannot be."""
        if self.stack is None:
            return [], None
        member = self.estimator_
        problem = _stack_problem(member, y, sample_weight)
        A = None if problem else member._validate(X, reset=False)
        if A is not None and np.isnan(A).any():
            problem = "stacking needs a table without missing cells"
        if self.stack != "auto":
            if problem:
                raise ValueError(f"stack={self.stack!r} cannot be used here: {problem}. Pass stack=None.")
            return self.stack, A
        if problem or not AUTO_MIN_ROWS <= len(A) <= AUTO_MAX_ROWS:
            return [], None
        return default_references(len(A), member_seeds(1, self.random_state)[0]), A

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
        if not self.stacked_:
            return mixture_log_density([member.score_samples(X) for member in self.estimators_])
        member = self.estimator_  # the copies share its validation, scaling and missing-cell proposal
        Z = member.standardizer_.transform(member._validate(X, reset=False))
        return member._marginal_log_prob(Z, None, self._log_prob) + member.standardizer_.log_det(Z)

    def _log_prob(self, Z, context=None):
        """Log-density of complete standardised rows ``Z`` (the copies' shared units) under the
        mixture, stacked densities included (what :func:`skflow.estimators.imputer.posterior` uses)."""
        parts = [member._log_prob(Z, context) for member in self.estimators_]
        tail = self.estimator_._tail_weight
        parts += [reference_log_density(reference, Z, tail) for reference in self.stacked_]
        return logsumexp(np.stack(parts) + np.log(self.weights_)[:, None], axis=0)

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
        """Draw rows: each from a component picked by its weight (a copy, uniformly, without stacking).

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

        if return_y and self.stacked_:
            raise ValueError("return_y=True needs a model fitted with class labels (fit(X, y)).")

        def draw(density, rows):
            if any(density is reference for reference in self.stacked_):  # a classical density, standardised
                member = self.estimator_
                Z = sample_reference(density, rows.size, rng, member._tail_weight)
                return member._restore(member.standardizer_.inverse_transform(Z))
            options = {} if y is None else {"y": y if labels is None else labels[rows]}
            return density.sample(rows.size, random_state=rng, return_y=return_y, **options)

        components = [*self.estimators_, *self.stacked_]
        weights = self.weights_ if self.stacked_ else None
        parts, order = sample_members(components, n_samples, rng, draw, weights)
        if return_y:
            parts, classes = zip(*parts)
        if isinstance(parts[0], pd.DataFrame):  # back to the drawn order, so copies interleave
            X = pd.concat(parts, ignore_index=True).iloc[order].reset_index(drop=True)
        else:
            X = np.concatenate(parts)[order]
        return (X, np.concatenate(classes)[order]) if return_y else X
