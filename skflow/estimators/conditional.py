"""``FlowRegressor``: conditional densities ``p(y | x)`` as scikit-learn regressors.

Any skflow tabular density models ``y``, conditioned on the standardised
features through the flow's context (the path that class labels take in
:class:`skflow.estimators.density.FlowDensity`): the MADEs see ``x`` at every hidden unit,
coupling conditioners have it concatenated. The fitted flow gives the whole
conditional distribution: exact ``log p(y | x)``, its mean, quantiles and
intervals, and samples. With ``n_estimators`` flows (5 by default) the model
is their equal-weight mixture, still exact. ``predict_proba(X)`` binds it to
the rows of X (:class:`~skflow.estimators.predictive.FlowDistribution`), and
every prediction goes through that distribution.
"""

from dataclasses import field
from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context, clone
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import _check_sample_weight, check_array, check_is_fitted, validate_data

from ..data.columns import check_table, is_mixed_table
from .density import FlowDensity, parameters
from .ensemble import fit_members, member_seeds
from .predictive import FlowDistribution, target_nodes
from .tabular import NSFDensity

__all__ = ["FlowRegressor"]

#: Candidate lower tail probabilities searched for the shortest interval.
SHORTEST_STEPS = 100


def _default_estimator():
    """The conditional density fitted when ``estimator=None`` (see the class docstring)."""
    return NSFDensity(n_transforms=2, hidden_features=(16, 16))


@parameters
class FlowRegressor(RegressorMixin, BaseEstimator):
    """Conditional density estimation ``p(y | x)`` with a normalizing flow.

    ``fit(X, y)`` fits ``estimator`` (a skflow tabular density) to the rows of
    ``y`` with the standardised ``X`` as the flow's context, by maximum
    likelihood. ``y`` may have one column or several (modelled jointly); X
    may be a DataFrame with string, category or boolean columns.
    ``predict_proba(X)`` (or ``pred_dist``) returns the predictive
    distribution of each row: exact ``pdf``, and for one target column a
    ``cdf`` and ``ppf`` that integrate that density on a per-row grid.

    Parameters
    ----------
    estimator : skflow tabular density, default=None
        :class:`skflow.MAFDensity`, :class:`skflow.NSFDensity`,
        :class:`skflow.RealNVPDensity`, :class:`skflow.MADEDensity` or
        :class:`skflow.TarFlowDensity`, unfitted; its parameters tune in a
        grid search as ``estimator__<name>`` (pass one: None has none). None uses
        ``NSFDensity(n_transforms=2, hidden_features=(16, 16))`` (see Notes).
    n_estimators : int, default=5
        Number of flows fitted, each a clone of ``estimator`` with its own
        seed (so its own initialisation, validation split and batches). The
        model is their equal-weight mixture: ``log p(y | x)`` is exactly
        ``logsumexp_k log p_k(y | x) - log n_estimators``, and each draw
        comes from a member picked uniformly at random. Averaging seeded
        flows smooths the spiky, overconfident densities one flow learns
        from a few hundred rows. Tabular members train as one stacked
        module (about twice one fit for five); scoring and sampling cost grow
        ``n_estimators``-fold. 1 fits a single flow.
    feature_noise : float, default=0.0
        Standard deviation of Gaussian noise added to the standardised
        features of every training row, drawn afresh each epoch (noise
        regularisation of a conditional density, Rothfuss et al. 2019): it
        smooths ``p(y | x)`` along ``x``. The validation rows and every
        prediction use the features as given. Sets the members'
        ``context_noise``; off by default (``benchmarks/results/defaults.md``).
    n_samples : int, default=1000
        Monte Carlo draws per row behind :meth:`predict` (mean and standard
        deviation) with several target columns. With one column, means,
        quantiles and intervals integrate the exact density instead (no
        draws).
    random_state : int, RandomState instance or None, default=None
        Seeds the fit (overriding the estimator's ``random_state`` when not
        None; the members' seeds are drawn from it, the first being the one
        a single flow would get) and the draws of the predictive
        distributions (0 when None). None with ``n_estimators > 1`` draws
        the members' seeds from the estimator's ``random_state``.

    Attributes
    ----------
    estimators_ : list of FlowDensity
        The ``n_estimators`` fitted densities of ``y`` (the mixture's
        members); each one's ``standardizer_`` holds the scaling of ``y``
        (its log-determinant is in every score).
    estimator_ : FlowDensity
        The first member, ``estimators_[0]`` (the fitted density when
        ``n_estimators=1``).
    n_outputs_ : int
        Number of target columns.
    n_features_in_ : int
        Number of features of X.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names, when X was a DataFrame with string column names.

    See Also
    --------
    skflow.estimators.predictive.FlowDistribution : What ``predict_proba`` returns.
    skflow.metrics.crps, skflow.metrics.interval_score : Scorers of the distribution.

    Notes
    -----
    ``fit`` is the public conditioning path of the densities:
    ``estimator.fit(y, context=X)``, one member per seed; each member in
    ``estimators_`` scores and samples ``y`` given ``X`` on its own
    (``score_samples(y, context=X)``, ``sample(n, context=X)``). The members
    of a tabular flow train together as one stacked module
    (:mod:`skflow.estimators.ensemble`), so five cost about two fits of one.
    The default (five seeded 2-layer NSFs with 16x16 MADEs) and the figures
    behind it are in ``benchmarks/results/defaults.md``. A DataFrame X with
    string, category or boolean columns goes to the members as it is; each
    one-hot encodes it (``context_encoder_``; a category unseen in fit gets
    all-zero indicators).

    With one target column, :meth:`predict`, :meth:`predict_quantiles` and
    :meth:`predict_interval` integrate the exact mixture density on a grid
    per row (about 50 density evaluations per row; a row whose grid does not
    hold unit mass, such as a very narrow conditional, is located again on
    finer grids): deterministic, and a row's prediction does not depend on
    the other rows passed with it.

    ``score`` is R^2 of the conditional mean (scikit-learn's regressor
    convention, so the regressor works wherever a regressor is expected);
    to select models by held-out conditional log-likelihood, pass
    ``scoring=skflow.metrics.conditional_log_likelihood`` to ``GridSearchCV``
    or ``cross_val_score``, and by the calibration and sharpness of the
    predictive distribution ``scoring=skflow.metrics.crps`` or
    ``skflow.metrics.interval_score`` (all work on a Pipeline ending in a
    FlowRegressor).

    Examples
    --------
    >>> import numpy as np
    >>> from skflow import FlowRegressor, MAFDensity
    >>> rng = np.random.RandomState(0)
    >>> X = rng.uniform(-2, 2, size=(300, 1))
    >>> y = X[:, 0] ** 2 + 0.3 * rng.normal(size=300)
    >>> reg = FlowRegressor(MAFDensity(n_transforms=2, hidden_features=(32,), max_epochs=20),
    ...                     random_state=0).fit(X, y)
    >>> reg.score_samples(X[:3], y[:3]).shape
    (3,)
    >>> reg.predict_interval(X[:2], coverage=0.9).shape
    (2, 2)
    >>> dist = reg.predict_proba(X[:2])
    >>> mean, std = reg.predict(X[:2], return_std=True)
    >>> bool(np.allclose(dist.mean(), mean)), dist.cdf(mean).shape
    (True, (2,))
    """

    _parameter_constraints = {
        "estimator": [FlowDensity, None],
        "n_estimators": [Interval(Integral, 1, None, closed="left")],
        "feature_noise": [Interval(Real, 0, None, closed="left")],
        "n_samples": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # several target columns are modelled jointly
        tags.input_tags.allow_nan = True  # missing cells of X: see the densities' context
        return tags

    estimator: object = field(default=None, kw_only=False)
    n_estimators: int = 5
    feature_noise: float = 0.0
    n_samples: int = 1000
    random_state: object = None

    # ------------------------------------------------------------------ fit
    def _validate_X(self, X, reset):
        """X checked as it is kept: a float array, or a mixed DataFrame (names and width checked here,
        cells by the members' ``context_encoder_``)."""
        if is_mixed_table(X) or (not reset and getattr(self, "_mixed_X", False)):
            return check_table(self, X, reset)
        return validate_data(self, X, reset=reset, dtype=np.float64, ensure_min_samples=2 if reset else 1,
                             ensure_all_finite="allow-nan")

    def _validate_y(self, y, n_rows):
        """y as a 1-D or 2-D float array of ``n_rows`` rows."""
        if y is None:
            raise ValueError("FlowRegressor requires y to be passed, but the target y is None.")
        Y = check_array(y, ensure_2d=False, dtype=np.float64, input_name="y")
        if len(Y) != n_rows:
            raise ValueError(f"X has {n_rows} samples but y has {len(Y)}.")
        return Y

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, sample_weight=None):
        """Fit ``p(y | x)``.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Conditioning features. A DataFrame may hold string, category or
            boolean columns: the members one-hot encode them inside their
            context (``context_encoder_``); numeric columns are standardised.
            Missing cells (NaN) are allowed: each becomes its column's mean
            plus a missing indicator, so the model fits ``p(y | the cells a
            row has)`` (see :meth:`skflow.FlowDensity.fit`'s ``context``).
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Targets (no missing values); integer-valued columns are dequantized as the density
            estimators do.
        sample_weight : array-like of shape (n_samples,), default=None
            Row weights, passed to every member's fit (a weight of 2 counts
            as the row twice in the scaling and the likelihood).

        Returns
        -------
        self : object
            The fitted regressor.
        """
        estimator = _default_estimator() if self.estimator is None else self.estimator
        if estimator._images != "never" and not hasattr(estimator, "patch_size"):
            raise TypeError(
                f"{type(estimator).__name__} models images; FlowRegressor needs a tabular density."
            )
        self._mixed_X = is_mixed_table(X)
        X = self._validate_X(X, reset=True)
        Y = self._validate_y(y, len(X))
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        self._y_ndim = Y.ndim
        Y = Y.reshape(len(Y), -1)
        self.n_outputs_ = Y.shape[1]
        if self.feature_noise > 0:
            estimator = clone(estimator).set_params(context_noise=self.feature_noise)
        seeds = self._member_seeds(estimator)
        self.estimators_ = fit_members(estimator, seeds, Y, context=X, sample_weight=sample_weight)
        self.estimator_ = self.estimators_[0]
        dequantized = getattr(self.estimator_, "standardizer_", None)
        dequantized = dequantized is not None and bool(getattr(dequantized, "integer_", [False])[0])
        self._grid_nodes = target_nodes(Y[:, 0], sample_weight, atoms=not dequantized)
        return self

    def _member_seeds(self, estimator):
        """The ``random_state`` of each member (None: the estimator's own, for a single member).

        The first seed is the one a single flow gets, so member 0 of a
        mixture is the flow ``n_estimators=1`` fits; with
        ``random_state=None`` the seeds come from the estimator's
        ``random_state`` (fresh randomness when that is None too), so the
        members differ in initialisation, validation split and batches.
        """
        if self.random_state is None and self.n_estimators == 1:
            return [None]
        source = self.random_state if self.random_state is not None else estimator.random_state
        return member_seeds(self.n_estimators, source)

    # --------------------------------------------------------- distribution
    def predict_proba(self, X):
        """The predictive distribution ``p(y | x)`` of every row of X.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            The features the distribution is conditioned on, one row per distribution row.

        Returns
        -------
        distribution : FlowDistribution
            Over the rows of X (skpro's ``BaseDistribution`` methods:
            ``log_pdf``, ``pdf``, ``cdf``, ``ppf``, ``mean``, ``var``,
            ``sample``, row indexing). Its draws are seeded by
            ``random_state`` (0 when None).
        """
        check_is_fitted(self)
        index = X.index if isinstance(X, pd.DataFrame) else None
        X = self._validate_X(X, reset=False)
        seed = (
            0 if self.random_state is None else int(check_random_state(self.random_state).randint(2**31 - 1))
        )
        return FlowDistribution(
            self.estimators_,
            X,
            self._grid_nodes,
            self.n_outputs_,
            self._y_ndim,
            self.n_samples,
            seed,
            index,
        )

    def pred_dist(self, X):
        """Alias of :meth:`predict_proba` (NGBoost's name)."""
        return self.predict_proba(X)

    def score_samples(self, X, y):
        """Conditional log-density ``log p(y | x)`` of each row, in the units of y.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)

        Returns
        -------
        log_density : ndarray of shape (n_samples,)
            Float64, nats; scaling y by ``c`` shifts it by ``-n_outputs log c``.
        """
        distribution = self.predict_proba(X)
        return distribution.log_pdf(self._validate_y(y, len(distribution)))

    # ------------------------------------------------------------ predicting
    def predict(self, X, return_std=False):
        """Conditional mean ``E[y | x]``, and optionally the conditional standard deviation.

        For one target column both are integrals of the exact density on a
        per-row grid (:class:`~skflow.estimators.predictive.FlowDistribution`):
        deterministic, and a row's prediction does not depend on the other
        rows passed with it. For several columns they are Monte Carlo
        estimates from ``n_samples`` draws per row, seeded by
        ``random_state``.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
        return_std : bool, default=False
            Also return the standard deviation of ``y | x``.

        Returns
        -------
        y_mean : ndarray of shape (n_samples,) or (n_samples, n_outputs)
        y_std : ndarray of the same shape
            Only with ``return_std=True``.
        """
        distribution = self.predict_proba(X)
        if not return_std:
            return distribution.mean()
        return distribution.mean(), np.sqrt(distribution.var())

    def predict_quantiles(self, X, quantiles=(0.05, 0.5, 0.95)):
        """Conditional quantiles of a single target column.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
        quantiles : array-like of floats in (0, 1), default=(0.05, 0.5, 0.95)

        Returns
        -------
        y_quantiles : ndarray of shape (n_samples, n_quantiles)
            The inverse of the cdf that integrates the exact density on each
            row's grid (``predict_proba(X).ppf``).
        """
        quantiles = np.asarray(quantiles, dtype=np.float64).ravel()
        if quantiles.size == 0 or np.any((quantiles <= 0) | (quantiles >= 1)):
            raise ValueError(f"quantiles must lie strictly between 0 and 1, got {quantiles!r}.")
        self._check_quantiles_possible()
        return self.predict_proba(X).ppf(quantiles[None, :])

    def _check_quantiles_possible(self):
        check_is_fitted(self)
        if self.n_outputs_ != 1:
            raise ValueError(
                "Quantiles and intervals are defined for a single target column (n_outputs_ == 1)."
            )

    def predict_interval(self, X, coverage=0.9, kind="central"):
        """Interval holding ``coverage`` of the conditional distribution (one target column).

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
        coverage : float in (0, 1), default=0.9
        kind : {"central", "shortest"}, default="central"
            "central": the ``(1 - coverage) / 2`` and ``(1 + coverage) / 2``
            quantiles (equal tails). "shortest": the narrowest interval
            ``[q(a), q(a + coverage)]`` over ``SHORTEST_STEPS`` values of
            ``a``; narrower for skewed distributions, and the one that can
            reach the nominal coverage when a point mass sits at an edge of
            the distribution (e.g. many zeros), where every central interval
            covers more.

        Returns
        -------
        interval : ndarray of shape (n_samples, 2)
            Lower and upper bounds.
        """
        if not isinstance(coverage, Real) or not 0 < coverage < 1:
            raise ValueError(f"coverage must lie strictly between 0 and 1, got {coverage!r}.")
        if kind == "central":
            return self.predict_quantiles(X, [(1 - coverage) / 2, (1 + coverage) / 2])
        if kind != "shortest":
            raise ValueError(f'kind must be "central" or "shortest", got {kind!r}.')
        self._check_quantiles_possible()
        start = (np.arange(SHORTEST_STEPS) + 0.5) / SHORTEST_STEPS * (1 - coverage)
        bounds = self.predict_proba(X).ppf(np.concatenate([start, start + coverage])[None, :])
        lower, upper = bounds[:, :SHORTEST_STEPS], bounds[:, SHORTEST_STEPS:]
        best = np.argmin(upper - lower, axis=1)[:, None]
        return np.hstack([np.take_along_axis(lower, best, axis=1), np.take_along_axis(upper, best, axis=1)])

    def sample_y(self, X, n_samples=1, random_state=None):
        """Draw targets from ``p(y | x)`` for each row of X.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples_X, n_features)
        n_samples : int, default=1
            Draws per row.
        random_state : int, RandomState instance or None, default=None
            Seeds the draws; None draws fresh randomness.

        Returns
        -------
        y_samples : ndarray of shape (n_samples_X, n_samples) or (n_samples_X, n_outputs, n_samples)
            As :meth:`sklearn.gaussian_process.GaussianProcessRegressor.sample_y`:
            2-D for a 1-D training ``y``.
        """
        if not (isinstance(n_samples, Integral) and n_samples >= 1):
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
        return self.predict_proba(X).sample(n_samples, check_random_state(random_state))
