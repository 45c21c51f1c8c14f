"""Missing cells drawn from a fitted density: posterior weights, ``FlowImputer``.

A fitted skflow density knows the joint ``p(x)``, so it knows the posterior ``p(x_m | x_o)`` of a
row's missing cells given the cells it has. :func:`posterior` gives importance-weighted draws of
it (the proposal of :mod:`skflow.data.missing`, weighted by ``p(x_o, x_m) / q(x_m | x_o)`` and
normalised), from which :class:`FlowImputer` takes the posterior mean, or resamples draws
(sampling importance resampling; Rubin 1987) for multiple imputation.
"""

from dataclasses import field
from numbers import Integral

import numpy as np
from scipy.special import softmax
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context, clone
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.validation import check_is_fitted

from .density import MISSING_SCORE_DRAWS, parameters
from .tabular import MAFDensity

__all__ = ["FlowImputer", "posterior"]


def _scorer(density):
    """``(the density that validates and scales rows, log p of complete rows in its flow's units)`` of a
    fitted skflow density or :class:`~skflow.FlowMixture` (whose components share their scaling)."""
    return getattr(density, "estimator_", density), density._log_prob


#: A row whose importance weights have an effective sample size (``1 / sum w^2``) below
#: ``draws / REFINE_BELOW`` gets ``REFINE_FACTOR - 1`` times more draws (fresh ones, added to its first).
REFINE_BELOW, REFINE_FACTOR = 8, 16


def posterior(density, A, draws=None, seed=0):
    """Importance-weighted posterior draws of the missing cells of the rows of ``A``.

    Self-normalised importance sampling is exact as the draws grow, but a row
    whose posterior the proposal covers badly (a few draws carry most of the
    weight) gets a noisy estimate. Such rows, those whose effective sample
    size falls below ``draws / 8``, get a second round of ``15 * draws``
    fresh draws, pooled with the first (a chunk of its own, ``16 * draws``
    wide).

    Parameters
    ----------
    density : fitted skflow tabular density or FlowMixture
    A : ndarray of shape (n_samples, n_features)
        Validated rows in the density's encoding (:meth:`FlowDensity._validate`), NaN where missing.
    draws : int, default=None
        Proposal draws per row (None: ``MISSING_SCORE_DRAWS``, as scoring uses).
    seed : int
        Seeds the draws (with a hash of each row, so a row's draws do not depend on the other rows).

    Yields
    ------
    index : ndarray of int
        The rows (of ``A``) of this chunk; only rows with missing cells.
    filled : ndarray of shape (len(index), n_draws, n_features)
        The draws (``n_draws``: ``draws``, or 16 times more for refined rows), in the units of
        ``A``, observed cells unchanged.
    weight : ndarray of shape (len(index), n_draws)
        Normalised importance weights.
    log_joint : ndarray of shape (len(index), n_draws)
        ``log p(x_o, x_m)`` of each draw in the units of ``A``.
    """
    base, log_joint = _scorer(density)
    scaler = base.standardizer_
    Z = scaler.transform(A)
    draws = draws or MISSING_SCORE_DRAWS

    def weighted(index, filled, log_p, log_q, weight=None):
        values = filled * scaler.scale_ + scaler.mean_
        values[..., scaler.constant_] = scaler.mean_[scaler.constant_]  # a constant column stays constant
        values = np.where(np.isnan(A[index])[:, None, :], values, A[index][:, None, :])
        weight = softmax(log_p - log_q, axis=1) if weight is None else weight
        return index, values, weight, log_p + scaler.log_det_

    rows = np.flatnonzero(np.isnan(A).any(axis=1))
    for index, filled, log_p, log_q in base._importance(Z, rows, log_joint, draws=draws, seed=seed):
        weight = softmax(log_p - log_q, axis=1)
        poor = 1.0 / np.sum(weight**2, axis=1) < draws / REFINE_BELOW
        if not poor.all():
            yield weighted(index[~poor], filled[~poor], log_p[~poor], log_q[~poor], weight[~poor])
        if not poor.any():
            continue
        more = (REFINE_FACTOR - 1) * draws
        for sub, filled2, log_p2, log_q2 in base._importance(Z, index[poor], log_joint, draws=more, seed=seed + 1):
            first = np.searchsorted(index, sub)  # the same rows' first draws
            yield weighted(
                sub,
                np.concatenate([filled[first], filled2], axis=1),
                np.concatenate([log_p[first], log_p2], axis=1),
                np.concatenate([log_q[first], log_q2], axis=1),
            )


def _default_estimator():
    """Five seeded two-layer MAFs (32x32), one exact mixture: see ``benchmarks/results/imputation.md``."""
    from .mixture import FlowMixture

    return FlowMixture(MAFDensity(n_transforms=2, hidden_features=(32, 32)))


@parameters
class FlowImputer(TransformerMixin, BaseEstimator):
    """Fill missing cells with draws from a normalizing flow fitted to the table: a multiple imputer.

    ``fit(X)`` fits ``estimator`` (a skflow tabular density or :class:`~skflow.FlowMixture`) to
    X, incomplete rows included (each trains on the likelihood of the cells it has, and the flow
    starts at the Gaussian fitted to X by EM; see :mod:`skflow.data.missing`). ``transform(X)`` returns X with each missing cell filled by its
    posterior mean ``E[x_m | x_o]`` under the fitted density (for a categorical column of a
    DataFrame, the most probable category), or with one posterior draw when
    ``sample_posterior=True``; :meth:`sample` returns several draws for multiple imputation.
    Observed cells are returned unchanged. The posterior is computed by self-normalised
    importance sampling with ``n_draws`` proposal draws per row (16 times more for a row whose
    weights have an effective sample size below ``n_draws / 8``), so it is exact as ``n_draws``
    grows; draws are resampled from the weighted proposals.

    Parameters
    ----------
    estimator : estimator, default=None
        A skflow tabular density (``MAFDensity``, ``NSFDensity``, ...) or ``FlowMixture``;
        None uses ``FlowMixture(MAFDensity(n_transforms=2, hidden_features=(32, 32)))``, five
        small seeded flows (chosen on wine and diabetes, see ``benchmarks/results/imputation.md``).
    sample_posterior : bool, default=False
        ``transform`` fills each cell with one posterior draw (seeded by ``random_state``)
        instead of the posterior mean.
    n_draws : int, default=256
        Proposal draws per incomplete row (more: a more exact posterior, slower).
    random_state : int, RandomState instance or None, default=None
        Seeds the fit (passed to ``estimator`` when it has a ``random_state``) and the draws.

    Attributes
    ----------
    estimator_ : estimator
        The fitted density.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Defined when X is a DataFrame with string column names.

    See Also
    --------
    sklearn.impute.IterativeImputer : Round-robin regression imputation.

    Examples
    --------
    >>> import numpy as np
    >>> from skflow import FlowImputer, MAFDensity
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 3)) @ np.array([[1.0, 0.8, 0.3], [0, 0.6, 0.5], [0, 0, 0.8]])
    >>> X[rng.random(X.shape) < 0.1] = np.nan
    >>> imputer = FlowImputer(MAFDensity(max_epochs=5), random_state=0).fit(X)
    >>> filled = imputer.transform(X)
    >>> bool(np.isnan(filled).any()), bool(np.all(filled[~np.isnan(X)] == X[~np.isnan(X)]))
    (False, True)
    >>> imputer.sample(X[:4], n_samples=5, random_state=0).shape
    (5, 4, 3)
    """

    _parameter_constraints = {
        "estimator": [HasMethods(["fit", "score_samples"]), None],
        "sample_posterior": ["boolean"],
        "n_draws": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    estimator: object = field(default=None, kw_only=False)
    sample_posterior: bool = False
    n_draws: int = 256
    random_state: object = None

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None):
        """Fit the density to X (NaN cells allowed; rows with every cell missing are refused).

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Training rows, NaN where a cell is missing; incomplete rows train on the cells they have.
        y : None
            Ignored.

        Returns
        -------
        self : object
        """
        estimator = self._template()
        if not hasattr(estimator, "_log_prob"):
            raise TypeError(
                "FlowImputer draws missing cells from a skflow density's posterior: estimator must be a "
                f"skflow tabular density (MAFDensity, NSFDensity, ...) or FlowMixture, got {type(estimator).__name__}."
            )
        if "random_state" in estimator.get_params():
            seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
            estimator.set_params(random_state=int(seed))
        self.estimator_ = estimator.fit(X)
        base = _scorer(self.estimator_)[0]
        self.n_features_in_ = base.n_features_in_
        if hasattr(base, "feature_names_in_"):
            self.feature_names_in_ = base.feature_names_in_
        return self

    def _template(self):
        """An unfitted copy of the density this imputer fits."""
        return clone(_default_estimator() if self.estimator is None else self.estimator)

    def _draws(self, X, n_samples, random_state, mean):
        """``(A, [A_1 .. A_n])``: X encoded, and ``n_samples`` filled copies (posterior draws; the mean
        when ``mean``)."""
        check_is_fitted(self)
        base = _scorer(self.estimator_)[0]
        A = base._validate(X, reset=False)
        rng = check_random_state(random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        outputs = [A.copy() for _ in range(n_samples)]
        discrete = base.standardizer_.discrete_
        for index, filled, weight, _ in posterior(self.estimator_, A, self.n_draws, seed):
            missing = np.isnan(A[index])
            if mean:
                value = np.einsum("nk,nkd->nd", weight, filled)
                constant = base.standardizer_.constant_  # exactly its value, not a sum of weights times it
                value[:, constant] = filled[:, 0, constant]
                for j in np.flatnonzero(discrete):  # a category: the most probable one
                    codes = filled[:, :, j].astype(np.int64)
                    votes = np.zeros((len(index), codes.max() + 1))
                    np.add.at(votes, (np.arange(len(index))[:, None], codes), weight)
                    value[:, j] = votes.argmax(axis=1)
                outputs[0][index] = np.where(missing, value, A[index])
                continue
            for out in outputs:
                picks = (weight.cumsum(axis=1) < rng.random((len(index), 1))).sum(axis=1)
                value = filled[np.arange(len(index)), np.minimum(picks, filled.shape[1] - 1)]
                value[:, base.standardizer_.integer_] = np.round(value[:, base.standardizer_.integer_])
                out[index] = np.where(missing, value, A[index])
        return A, outputs

    def transform(self, X):
        """X with its missing cells filled (the posterior mean, or one draw with ``sample_posterior``).

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Rows in the layout used in fit, NaN where a cell is missing.

        Returns
        -------
        X_filled : ndarray or DataFrame of shape (n_samples, n_features)
            A DataFrame (with the training columns and dtypes) when fitted on one.
        """
        _, (filled,) = self._draws(X, 1, self.random_state, mean=not self.sample_posterior)
        return self._restore(filled, getattr(X, "index", None))

    def sample(self, X, n_samples=1, random_state=None):
        """``n_samples`` posterior draws of X's missing cells: completed copies for multiple imputation.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_rows, n_features)
            Rows in the layout used in fit, NaN where a cell is missing.
        n_samples : int, default=1
            Completed copies of X to draw.
        random_state : int, RandomState instance or None, default=None
            Seeds the draws.

        Returns
        -------
        X_draws : ndarray of shape (n_samples, n_rows, n_features), or list of DataFrames
            Observed cells as in X; a list of ``n_samples`` DataFrames when fitted on one.
        """
        if not (isinstance(n_samples, Integral) and n_samples >= 1):
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
        _, draws = self._draws(X, n_samples, random_state, mean=False)
        restored = [self._restore(draw, getattr(X, "index", None)) for draw in draws]
        return restored if hasattr(restored[0], "iloc") else np.stack(restored)

    def _restore(self, A, index=None):
        """Filled rows in the layout of fit: a DataFrame (training columns and dtypes, X's index) when
        fitted on one."""
        return _scorer(self.estimator_)[0]._restore(A, index)

    def get_feature_names_out(self, input_features=None):
        """The input feature names (an imputer keeps its columns)."""
        from sklearn.utils.validation import _check_feature_names_in

        check_is_fitted(self)
        return _check_feature_names_in(self, input_features)
