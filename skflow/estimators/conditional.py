"""``FlowRegressor``: conditional densities ``p(y | x)`` as scikit-learn regressors.

Any skflow tabular density models ``y``, conditioned on the standardised
features through the flow's context (the path that class labels take in
:class:`skflow.estimators.density.FlowDensity`): the MADEs see ``x`` at every hidden unit,
coupling conditioners have it concatenated. The fitted flow gives the whole
conditional distribution: exact ``log p(y | x)``, its mean, quantiles and
intervals, and samples. With ``n_estimators`` flows (5 by default) the model
is their equal-weight mixture, still exact.
"""

import hashlib
from dataclasses import field
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context, clone
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted, validate_data

from .density import FlowDensity, parameters
from .ensemble import fit_members, member_seeds, mixture_log_density, sample_members
from .tabular import NSFDensity

__all__ = ["FlowRegressor"]


def _default_estimator():
    """The conditional density fitted when ``estimator=None`` (see the class docstring)."""
    return NSFDensity(n_transforms=2, hidden_features=(16, 16))


@parameters
class FlowRegressor(RegressorMixin, BaseEstimator):
    """Conditional density estimation ``p(y | x)`` with a normalizing flow.

    ``fit(X, y)`` fits ``estimator`` (a skflow tabular density) to the rows of
    ``y`` with the standardised ``X`` as the flow's context, by maximum
    likelihood. ``y`` may have one column or several (modelled jointly).

    Parameters
    ----------
    estimator : skflow tabular density, default=None
        :class:`skflow.MAFDensity`, :class:`skflow.NSFDensity`,
        :class:`skflow.RealNVPDensity`, :class:`skflow.MADEDensity` or
        :class:`skflow.TarFlowDensity`, unfitted; its parameters tune in a
        grid search as ``estimator__<name>``. None uses
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
        Draws per row behind :meth:`predict`, :meth:`predict_quantiles` and
        :meth:`predict_interval`.
    random_state : int, RandomState instance or None, default=None
        Seeds the fit (overriding the estimator's ``random_state`` when not
        None; the members' seeds are drawn from it, the first being the one
        a single flow would get) and the draws of :meth:`predict`. None
        with ``n_estimators > 1`` draws the members' seeds from the
        estimator's ``random_state``.

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

    Notes
    -----
    ``fit`` is the public conditioning path of the densities:
    ``estimator.fit(y, context=X)``, one member per seed; each member in
    ``estimators_`` scores and samples ``y`` given ``X`` on its own
    (``score_samples(y, context=X)``, ``sample(n, context=X)``). The members
    of a tabular flow train together as one stacked module
    (:mod:`skflow.estimators.ensemble`), so five cost about two fits of one.
    The default (five seeded 2-layer NSFs with 16x16 MADEs) and the figures
    behind it are in ``benchmarks/results/defaults.md``.

    ``score`` is R^2 of the conditional mean (scikit-learn's regressor
    convention, so the regressor works wherever a regressor is expected);
    to select models by held-out conditional log-likelihood, pass
    ``scoring=skflow.metrics.conditional_log_likelihood`` to ``GridSearchCV``
    or ``cross_val_score`` (it also works on a Pipeline ending in a
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
        return tags

    estimator: object = field(default=None, kw_only=False)
    n_estimators: int = 5
    feature_noise: float = 0.0
    n_samples: int = 1000
    random_state: object = None

    # ------------------------------------------------------------------ fit
    def _validate_xy(self, X, y, reset):
        """Validated X and y, y as a 2-D ``(n, n_outputs)`` array; with ``reset`` records y's dimension."""
        X, y = validate_data(
            self,
            X,
            y,
            reset=reset,
            multi_output=True,
            y_numeric=True,
            dtype=np.float64,
            ensure_min_samples=2 if reset else 1,
        )
        if reset:
            self._y_ndim = y.ndim
        return X, y.reshape(len(y), -1)

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y):
        """Fit ``p(y | x)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Conditioning features (numeric; encode categories in a Pipeline).
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Targets; integer-valued columns are dequantized as the density
            estimators do.

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
        X, Y = self._validate_xy(X, y, reset=True)
        self.n_outputs_ = Y.shape[1]
        if self.feature_noise > 0:
            estimator = clone(estimator).set_params(context_noise=self.feature_noise)
        self.estimators_ = fit_members(estimator, self._member_seeds(estimator), Y, context=X)
        self.estimator_ = self.estimators_[0]
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

    # -------------------------------------------------------------- scoring
    def score_samples(self, X, y):
        """Conditional log-density ``log p(y | x)`` of each row, in the units of y.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)

        Returns
        -------
        log_density : ndarray of shape (n_samples,)
            Float64, nats; scaling y by ``c`` shifts it by ``-n_outputs log c``.
        """
        check_is_fitted(self)
        X, Y = self._validate_xy(X, y, reset=False)
        if Y.shape[1] != self.n_outputs_:
            raise ValueError(
                f"y has {Y.shape[1]} columns, but the regressor was fitted on {self.n_outputs_}."
            )
        return mixture_log_density([density.score_samples(Y, context=X) for density in self.estimators_])

    def _check_X(self, X):
        check_is_fitted(self)
        return validate_data(self, X, reset=False, dtype=np.float64)

    def _as_target(self, Y):
        """``(n, k)`` back to the shape of the training ``y`` (1-D when it was 1-D)."""
        return Y[:, 0] if self._y_ndim == 1 else Y

    def _draws(self, X):
        """``n_samples`` draws per row, ``(n, n_outputs, n_samples)``.

        Each row's draws are seeded by a hash of its values and
        ``random_state`` (0 when None), so a prediction depends neither on
        the other rows passed with it nor on any global state.
        """
        X = self._check_X(X)
        seed = (
            0 if self.random_state is None else int(check_random_state(self.random_state).randint(2**31 - 1))
        )
        draws = []
        for row in np.ascontiguousarray(X):
            key = int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=4).digest(), "little")
            generator = np.random.RandomState([key, seed])
            draws.append(self.sample_y(row[None], self.n_samples, random_state=generator))
        draws = np.concatenate(draws)
        return draws[:, None] if draws.ndim == 2 else draws

    def predict(self, X):
        """Conditional mean ``E[y | x]``: the mean of ``n_samples`` draws per row.

        Each row's draws are seeded by its values and ``random_state`` (0
        when None), so predictions are deterministic and do not depend on the
        other rows; their Monte Carlo error is about
        ``std(y | x) / sqrt(n_samples)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
        """
        return self._as_target(self._draws(X).mean(axis=2))

    def predict_quantiles(self, X, quantiles=(0.05, 0.5, 0.95)):
        """Conditional quantiles of a single target column.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        quantiles : array-like of floats in (0, 1), default=(0.05, 0.5, 0.95)

        Returns
        -------
        y_quantiles : ndarray of shape (n_samples, n_quantiles)
            Empirical quantiles of the ``n_samples`` draws per row of
            :meth:`predict` (the draws follow point masses and extrapolation
            that a fixed grid would miss).
        """
        quantiles = np.asarray(quantiles, dtype=np.float64).ravel()
        if quantiles.size == 0 or np.any((quantiles <= 0) | (quantiles >= 1)):
            raise ValueError(f"quantiles must lie strictly between 0 and 1, got {quantiles!r}.")
        self._check_quantiles_possible()
        return np.quantile(self._draws(X)[:, 0], quantiles, axis=1).T

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
        X : array-like of shape (n_samples, n_features)
        coverage : float in (0, 1), default=0.9
        kind : {"central", "shortest"}, default="central"
            "central": the ``(1 - coverage) / 2`` and ``(1 + coverage) / 2``
            quantiles (equal tails). "shortest": the narrowest interval that
            holds ``coverage`` of the draws; narrower for skewed
            distributions, and the one that can reach the nominal coverage
            when a point mass sits at an edge of the distribution (e.g. many
            zeros), where every central interval covers more.

        Returns
        -------
        interval : ndarray of shape (n_samples, 2)
            Lower and upper bounds, from ``n_samples`` draws per row.
        """
        if not isinstance(coverage, Real) or not 0 < coverage < 1:
            raise ValueError(f"coverage must lie strictly between 0 and 1, got {coverage!r}.")
        if kind == "central":
            return self.predict_quantiles(X, [(1 - coverage) / 2, (1 + coverage) / 2])
        if kind != "shortest":
            raise ValueError(f'kind must be "central" or "shortest", got {kind!r}.')
        self._check_quantiles_possible()
        draws = np.sort(self._draws(X)[:, 0], axis=1)
        inside = int(np.ceil(coverage * draws.shape[1]))
        widths = draws[:, inside - 1 :] - draws[:, : draws.shape[1] - inside + 1]
        start = np.argmin(widths, axis=1)
        rows = np.arange(len(draws))
        return np.column_stack([draws[rows, start], draws[rows, start + inside - 1]])

    def sample_y(self, X, n_samples=1, random_state=None):
        """Draw targets from ``p(y | x)`` for each row of X.

        Parameters
        ----------
        X : array-like of shape (n_samples_X, n_features)
        n_samples : int, default=1
            Draws per row.
        random_state : int, RandomState instance or None, default=None
            Seeds the draws.

        Returns
        -------
        y_samples : ndarray of shape (n_samples_X, n_samples) or (n_samples_X, n_outputs, n_samples)
            As :meth:`sklearn.gaussian_process.GaussianProcessRegressor.sample_y`:
            2-D for a 1-D training ``y``.
        """
        if not (isinstance(n_samples, Integral) and n_samples >= 1):
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
        X = self._check_X(X)
        rows = np.repeat(X, n_samples, axis=0)
        rng = check_random_state(random_state)
        if len(self.estimators_) == 1:
            Y = self.estimator_.sample(len(rows), rng, context=rows)
        else:  # each draw comes from a member picked uniformly at random
            draw = lambda density, picked: density.sample(picked.size, rng, context=rows[picked])
            parts, order = sample_members(self.estimators_, len(rows), rng, draw)
            Y = np.concatenate(parts)[order]
        Y = np.asarray(Y, dtype=np.float64).reshape(len(X), n_samples, self.n_outputs_).transpose(0, 2, 1)
        return Y[:, 0] if self._y_ndim == 1 else Y
