"""``FlowOutlierDetector``: outlier detection with any skflow density.

A row is an outlier when the fitted density gives it a low log-likelihood.
The detector follows scikit-learn's outlier conventions (those of
``IsolationForest``): ``score_samples`` is higher for more normal rows,
``decision_function = score_samples - offset_`` is negative for outliers and
``predict`` returns +1 (inlier) or -1 (outlier).
"""

from dataclasses import field
from numbers import Integral, Real

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, OutlierMixin, _fit_context, clone
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ..data.columns import check_table, is_mixed_table
from .density import parameters
from .ensemble import fit_members, member_seeds
from .tabular import MAFDensity

__all__ = ["FlowOutlierDetector"]

#: Tukey's fence multiplier of the "auto" threshold.
TUKEY_FENCE = 1.5
#: ``point_mass_noise`` of the default density (see the class Notes).
DEFAULT_POINT_MASS_NOISE = 0.4


def _default_estimator():
    """The density fitted when ``estimator=None`` (see the class docstring)."""
    return MAFDensity(point_mass_noise=DEFAULT_POINT_MASS_NOISE)


def _as_rows(X):
    """Flatten images ``(n, ...)`` to rows; return the rows and the per-sample shape (None for rows)."""
    X = X if hasattr(X, "ndim") else np.asarray(X)
    if X.ndim <= 2:
        return X, None
    X = np.asarray(X)
    return X.reshape(len(X), -1), X.shape[1:]


def _compute_offset(scores, contamination):
    """Threshold on the training scores below which a row is an outlier."""
    if contamination == "auto":
        q1, q3 = np.percentile(scores, [25.0, 75.0])
        return q1 - TUKEY_FENCE * (q3 - q1)
    return np.percentile(scores, 100.0 * contamination)


@parameters
class FlowOutlierDetector(OutlierMixin, BaseEstimator):
    """Outlier detection by the log-likelihood of a normalizing flow.

    The detector fits ``n_estimators`` copies of ``estimator`` (differently
    seeded) and scores a row by its mean log-likelihood under them. With
    ``trim > 0`` each copy is fitted twice: once on all rows, then again
    without the ``trim`` fraction of rows it found least likely, so that
    outliers hidden in the training data (the unsupervised setting) do not
    shape the density.

    Parameters
    ----------
    estimator : skflow density estimator, default=None
        Any estimator with ``fit`` and ``score_samples`` returning
        log-densities, e.g. :class:`skflow.MAFDensity`. None uses
        ``MAFDensity(point_mass_noise=0.4)`` (see Notes). Its parameters tune
        in a grid search as ``estimator__<name>``.
    n_estimators : int, default=1
        Number of independently seeded copies of ``estimator`` whose
        log-likelihoods are averaged.
    trim : float in [0, 0.5), default=0.0
        Fraction of the least likely training rows dropped before each copy
        is refitted. 0 fits once on all rows.
    contamination : "auto" or float in (0, 0.5], default="auto"
        Sets ``offset_``. A float puts the threshold at that percentile of
        the training scores, so that fraction of the training rows is
        flagged. "auto" uses Tukey's lower fence of the training scores,
        ``Q1 - 1.5 (Q3 - Q1)``, which does not depend on the units of X
        (they only shift log-likelihoods by a constant).
    random_state : int, RandomState instance or None, default=None
        Seeds the copies: each gets its own ``random_state`` drawn from this
        one, overriding the estimator's (as in scikit-learn's ensembles).
        Fix it for reproducible results.
    n_jobs : int, default=None
        Copies fitted in parallel by joblib (None: one at a time, -1: all
        cores); under ``joblib.parallel_config(backend="dask")`` they run on a
        dask cluster. Results agree up to floating-point rounding (workers may
        run torch with a different number of threads).

    Attributes
    ----------
    estimator_ : estimator
        The first fitted copy of ``estimator``.
    estimators_ : list of estimators
        All ``n_estimators`` fitted copies.
    offset_ : float
        ``decision_function = score_samples - offset_``.
    n_features_in_ : int
        Number of features (pixels, for images) seen during fit.
    sample_shape_ : tuple of int or None
        Per-sample shape of image X (None for rows): X passed later is
        reshaped to it before scoring.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names, when X was a DataFrame with string column names.

    Notes
    -----
    The default density smooths columns with a point mass (one value in at
    least 10% of the rows: missing-value codes, clipped readings) with
    Gaussian training noise of 0.4 column standard deviations; a flow would
    otherwise fit a spike there and score rows by whether they hit it. It is
    the best choice measured for clean training data (the semi-supervised
    protocol). On contaminated training data (outliers among the training
    rows) use ``FlowOutlierDetector(MAFDensity(base="normal"))``: smoothing and
    the MADE-mixture base absorb groups of outliers there. The figures behind
    both choices are in ``benchmarks/results/defaults.md``.

    See Also
    --------
    sklearn.ensemble.IsolationForest : Tree-based detector, same interface.
    sklearn.neighbors.LocalOutlierFactor : Local density ratio detector.

    References
    ----------
    Han, Hu, Huang, Jiang and Zhao (2022). ADBench: Anomaly Detection
    Benchmark. NeurIPS Datasets and Benchmarks.

    Examples
    --------
    >>> import numpy as np
    >>> from skflow.estimators.outlier import FlowOutlierDetector
    >>> from skflow.estimators.tabular import MAFDensity
    >>> rng = np.random.RandomState(0)
    >>> X = rng.normal(size=(200, 2))
    >>> detector = FlowOutlierDetector(MAFDensity(max_epochs=5), random_state=0).fit(X)
    >>> detector.predict([[0.0, 0.0], [6.0, 6.0]])
    array([ 1, -1])
    """

    _parameter_constraints = {
        "estimator": [HasMethods(["fit", "score_samples"]), None],
        "n_estimators": [Interval(Integral, 1, None, closed="left")],
        "trim": [Interval(Real, 0.0, 0.5, closed="left")],
        "contamination": [StrOptions({"auto"}), Interval(Real, 0.0, 0.5, closed="right")],
        "random_state": ["random_state"],
        "n_jobs": [Integral, None],
    }

    estimator: object = field(default=None, kw_only=False)
    n_estimators: int = 1
    trim: float = 0.0
    contamination: object = "auto"
    random_state: object = None
    n_jobs: object = None

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None):
        """Fit the density copies to X and set the threshold.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, ...)
            Training data (normal rows, possibly with some outliers). Images
            of any per-sample shape are passed on to ``estimator`` as they
            are (e.g. to :class:`skflow.estimators.image.GlowDensity`); ``n_features_in_``
            counts their pixels.
        y : None
            Ignored.

        Returns
        -------
        self : object
            The fitted detector.
        """
        X, self.sample_shape_ = _as_rows(X)
        X = self._validate(X, reset=True)
        estimator = _default_estimator() if self.estimator is None else self.estimator
        members = fit_members(
            estimator, member_seeds(self.n_estimators, self.random_state), X, n_jobs=self.n_jobs
        )
        if self.trim > 0:  # refit each copy without the ``trim`` fraction of rows it found least likely
            members = Parallel(n_jobs=self.n_jobs)(delayed(self._refit_trimmed)(m, X) for m in members)
        self.estimators_ = members
        self.estimator_ = self.estimators_[0]
        self.offset_ = _compute_offset(self._score(X), self.contamination)
        return self

    def _validate(self, X, reset):
        """Numeric rows (reshaped to the training images), or a mixed table passed on as it is."""
        if is_mixed_table(X):  # strings and categories: the density validates and encodes them
            return check_table(self, X, reset)
        X = validate_data(self, X, dtype=np.float64, reset=reset, ensure_min_samples=2 if reset else 1)
        return X if self.sample_shape_ is None else X.reshape(len(X), *self.sample_shape_)

    def _refit_trimmed(self, member, X):
        n_drop = int(np.floor(self.trim * len(X)))
        keep = np.sort(np.argsort(member.score_samples(X), kind="stable")[n_drop:])
        return clone(member).fit(X.iloc[keep] if hasattr(X, "iloc") else X[keep])

    def _score(self, X):
        return np.mean([member.score_samples(X) for member in self.estimators_], axis=0)

    def score_samples(self, X):
        """Mean log-likelihood of each row under the fitted copies.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to score.

        Returns
        -------
        scores : ndarray of shape (n_samples,)
            Higher is more normal.
        """
        check_is_fitted(self)
        X, _ = _as_rows(X)
        return self._score(self._validate(X, reset=False))

    def decision_function(self, X):
        """``score_samples(X) - offset_``: negative for outliers (X as in :meth:`score_samples`).

        Returns
        -------
        decision : ndarray of shape (n_samples,)
        """
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        """Label each row +1 (inlier) or -1 (outlier).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to label.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            +1 where ``decision_function(X) >= 0``, else -1.
        """
        return np.where(self.decision_function(X) >= 0, 1, -1)
