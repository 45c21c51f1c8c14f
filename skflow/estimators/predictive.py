"""The predictive distribution of a :class:`~skflow.FlowRegressor`: ``p(y | x)`` bound to rows of X.

``reg.predict_proba(X)`` binds the fitted mixture to the rows of X once (as
zuko's ``flow(c)`` does) and returns a :class:`FlowDistribution`; the
regressor's ``score_samples``, ``predict``, quantiles, intervals and
``sample_y`` all go through it. Its methods follow skpro's
``BaseDistribution`` (``log_pdf``, ``pdf``, ``cdf``, ``ppf``, ``mean``,
``var``, ``sample``, ``quantile``, row indexing), returning arrays.

For one target column the cdf comes from the exact density on a grid per row
(:func:`_fit_grid`, :class:`_GridCDF`), about 56 density evaluations a row:

1. A coarse grid (:func:`target_nodes`: uniform over the training targets'
   range, sparse far out, dense around values that many training targets
   share) locates the mass and carries the tails.
2. A window over the mass gets ``N_FIRST`` knots (half uniform, half by the
   coarse cdf, so separate modes each get knots), then ``N_ROUNDS`` rounds
   halve the cells whose left and right log-quadratic fits disagree most.
3. Each cell's mass is the integral of ``exp`` of the quadratic through three
   knots of the log-density (exact for Gaussian and exponential pieces);
   within a cell the cdf is a monotone cubic Hermite piece whose slopes are
   the exact density at its ends (log-linear in the tails).
4. A row whose grid does not hold unit mass (a spike, a conditional narrower
   than the coarse cells) moves knots to its worst cells, then is gridded
   again from coarse grids four times finer; one still off warns.

A row's grid depends on that row alone, never on the rows passed with it
(scores are computed in batches whose floating-point results do not depend on
their neighbours), and nothing is random. Against a dense quadrature of the
exact density, the cdf is within about 1e-3, means within a few 1e-3 standard
deviations, variances within about 1 % (looser for conditionals so narrow
that the densities' wide tail guard of weight 0.001 dominates the variance).
"""

import numpy as np
import pandas as pd
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array

from .density import INFERENCE_BATCH
from .ensemble import mixture_log_density, sample_members
from .quadrature import GRID_CALL, GRID_ROWS, MIN_BATCH, _fit_grid, _GridCDF, _warn_unresolved, target_nodes

__all__ = ["FlowDistribution", "target_nodes"]


class FlowDistribution:
    """Predictive distribution ``p(y | x)`` of a fitted FlowRegressor, one per row of X.

    Made by :meth:`skflow.FlowRegressor.predict_proba` (or ``pred_dist``); the
    methods follow skpro's ``BaseDistribution``. ``log_pdf`` and ``pdf`` are
    the exact mixture density of every target column jointly. For one target
    column, ``cdf``, ``ppf``, ``mean``, ``var`` and ``crps`` come from that
    exact density on a per-row grid (module docstring): deterministic, the
    same for a row whatever rows come with it, and consistent with ``pdf``
    to about 1e-3 (the cdf). For several columns ``mean`` and ``var`` are Monte Carlo
    estimates from ``n_samples`` draws per row seeded by ``random_state``,
    and ``cdf``/``ppf`` are not defined.

    Parameters
    ----------
    estimators : list of fitted FlowDensity
        The mixture's members, each fitted with the features as context.
    context : ndarray or DataFrame of shape (n_rows, n_features)
        The validated rows of X.
    grid_nodes : ndarray of shape (n_nodes,)
        The coarse grid of one target column (:func:`target_nodes` of the
        training targets).
    n_outputs : int
        Number of target columns.
    target_ndim : {1, 2}, default=1
        1: the regressor was fitted on a 1-D ``y`` (1-D draws and means).
    n_samples : int, default=1000
        Monte Carlo draws per row behind ``mean`` and ``var`` of several columns.
    random_state : int or None, default=None
        Seeds :meth:`sample` when it is given none, and the Monte Carlo moments.
    index : pandas.Index, default=None
        Row labels (X's index for a DataFrame; ``RangeIndex`` otherwise).

    Attributes
    ----------
    shape : tuple of int
        ``(n_rows, n_outputs)``.
    columns : pandas.RangeIndex
        The target columns.

    Examples
    --------
    >>> import numpy as np
    >>> from skflow import FlowRegressor, MAFDensity
    >>> X = np.linspace(-2, 2, 200).reshape(-1, 1)
    >>> y = X[:, 0] + 0.3 * np.random.RandomState(0).normal(size=200)
    >>> reg = FlowRegressor(MAFDensity(n_transforms=1, hidden_features=(8,), max_epochs=5),
    ...                     n_estimators=2, random_state=0).fit(X, y)
    >>> dist = reg.predict_proba(X[:3])
    >>> len(dist), dist.shape
    (3, (3, 1))
    >>> median = dist.ppf(0.5)
    >>> np.allclose(dist.cdf(median), 0.5)
    True
    >>> dist[1:].mean().shape
    (2,)
    """

    def __init__(
        self,
        estimators,
        context,
        grid_nodes,
        n_outputs,
        target_ndim=1,
        n_samples=1000,
        random_state=None,
        index=None,
    ):
        self.estimators = estimators
        self.context = context
        self.grid_nodes = grid_nodes
        self.n_outputs = n_outputs
        self.target_ndim = target_ndim
        self.n_samples = n_samples
        self.random_state = random_state
        self.index = pd.RangeIndex(len(context)) if index is None else index
        self._grid = None

    # ------------------------------------------------------------------ rows
    @property
    def shape(self):
        return (len(self.context), self.n_outputs)

    @property
    def ndim(self):
        return 2

    @property
    def columns(self):
        return pd.RangeIndex(self.n_outputs)

    def __len__(self):
        return len(self.context)

    def __getitem__(self, rows):
        """The distribution of some rows (an int, a slice, integer positions or a boolean mask)."""
        positions = np.atleast_1d(np.arange(len(self))[rows])
        part = FlowDistribution(
            self.estimators,
            self._rows(positions),
            self.grid_nodes,
            self.n_outputs,
            self.target_ndim,
            self.n_samples,
            self.random_state,
            self.index[positions],
        )
        part._grid = None if self._grid is None else self._grid[positions]
        return part

    @property
    def iloc(self):
        """Rows by position, as ``dist[rows]`` (skpro's and pandas' spelling)."""
        return _RowIndexer(self)

    def __repr__(self):
        return f"FlowDistribution(n_rows={len(self)}, n_outputs={self.n_outputs})"

    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            "A FlowDistribution is not an array: use mean(), var(), ppf(p), cdf(y), pdf(y) or sample(n)."
        )

    # --------------------------------------------------------------- density
    def _rows(self, positions):
        """The context rows at ``positions`` (a DataFrame stays one)."""
        return self.context.iloc[positions] if hasattr(self.context, "iloc") else self.context[positions]

    def _log_density(self, rows, values):
        """Mixture log-density of ``values`` (m, n_outputs) given context rows ``rows`` (m,).

        Scored in calls of ``GRID_CALL`` inference batches, the last batch
        of a call padded to at least ``MIN_BATCH`` points, so that every
        value is the same whatever rows come with it.
        """
        out = np.empty(len(rows))
        size = GRID_CALL * INFERENCE_BATCH
        for start in range(0, len(rows), size):
            part = slice(start, start + size)
            batch_rows, batch_values = rows[part], values[part]
            last = len(batch_rows) % INFERENCE_BATCH
            pad = MIN_BATCH - last if 0 < last < MIN_BATCH else 0
            batch_rows = np.concatenate([batch_rows, np.repeat(batch_rows[:1], pad)])
            batch_values = np.concatenate([batch_values, np.repeat(batch_values[:1], pad, axis=0)])
            context = self._rows(batch_rows)
            scores = [member.score_samples(batch_values, context=context) for member in self.estimators]
            out[part] = mixture_log_density(scores)[: len(batch_rows) - pad]
        return out

    def _targets(self, y):
        """``y`` as an ``(n_rows, n_outputs)`` float array, checked."""
        Y = check_array(y, ensure_2d=False, dtype=np.float64, input_name="y")
        Y = Y.reshape(len(Y), -1)
        if Y.shape[1] != self.n_outputs:
            raise ValueError(f"y has {Y.shape[1]} columns, but the regressor was fitted on {self.n_outputs}.")
        if len(Y) != len(self):
            raise ValueError(f"y has {len(Y)} rows, but the distribution has {len(self)}.")
        return Y

    def log_pdf(self, y):
        """Exact ``log p(y | x)`` of each row (all target columns jointly), in nats and the units of y.

        Parameters
        ----------
        y : array-like of shape (n_rows,) or (n_rows, n_outputs)

        Returns
        -------
        log_density : ndarray of shape (n_rows,)
        """
        return self._log_density(np.arange(len(self)), self._targets(y))

    def pdf(self, y):
        """Exact ``p(y | x)`` of each row: ``exp(log_pdf(y))``, shape (n_rows,)."""
        return np.exp(self.log_pdf(y))

    # ----------------------------------------------------------- one target
    def _one_target(self, what):
        if self.n_outputs != 1:
            raise ValueError(
                f"{what} is defined for a single target column; this distribution has {self.n_outputs} "
                "(use sample() for their joint draws)."
            )
        if self._grid is None:
            score = lambda rows, values: self._log_density(rows, values[:, None])
            blocks = [
                _fit_grid(score, np.arange(start, min(start + GRID_ROWS, len(self))), self.grid_nodes)
                for start in range(0, len(self), GRID_ROWS)
            ]
            self._grid = _GridCDF.concatenate(blocks)
            _warn_unresolved(self._grid, self.grid_nodes)
        return self._grid

    def _per_row(self, values, name):
        """``values`` as (n_rows, q): a scalar, one per row (n_rows,), or q per row (n_rows or 1, q)."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim > 2 or (values.ndim >= 1 and values.shape[0] not in (1, len(self))):
            raise ValueError(
                f"{name} must be a scalar, an array of {len(self)} values or of shape ({len(self)}, k); "
                f"got shape {values.shape}."
            )
        flat = values.ndim < 2
        values = np.broadcast_to(
            values.reshape(-1, 1) if flat else values, (len(self), 1 if flat else values.shape[1])
        )
        return np.ascontiguousarray(values), flat

    def cdf(self, x):
        """``P(Y <= x | row)`` for one target column.

        Parameters
        ----------
        x : float or array-like of shape (n_rows,) or (n_rows, k)
            Scalars apply to every row; a 2-D array gives k points per row.

        Returns
        -------
        cdf : ndarray of shape (n_rows,) or (n_rows, k)
        """
        grid = self._one_target("cdf")
        x, flat = self._per_row(x, "x")
        out = grid.cdf(x)
        return out[:, 0] if flat else out

    def ppf(self, p):
        """Quantile function, the inverse of :meth:`cdf`, for one target column.

        Parameters
        ----------
        p : float or array-like of shape (n_rows,) or (n_rows, k), values in [0, 1]
            0 and 1 give -inf and inf.

        Returns
        -------
        quantiles : ndarray of shape (n_rows,) or (n_rows, k)
        """
        grid = self._one_target("ppf")
        p, flat = self._per_row(p, "p")
        if np.any((p < 0) | (p > 1)) or np.isnan(p).any():
            raise ValueError("p must lie between 0 and 1.")
        out = grid.ppf(p)
        return out[:, 0] if flat else out

    def quantile(self, alpha):
        """Quantiles ``alpha`` (a float or a list) of every row: ndarray of shape (n_rows, n_alpha)."""
        alpha = np.atleast_1d(np.asarray(alpha, dtype=np.float64))
        return self.ppf(alpha[None, :])

    def crps(self, y):
        """Continuous ranked probability score of each row at its observed ``y`` (lower is better).

        ``int (F(t) - 1{t >= y})^2 dt`` on the grid's cdf (one target column),
        equal to ``E|Y - y| - E|Y - Y'| / 2``.

        Parameters
        ----------
        y : array-like of shape (n_rows,) or (n_rows, 1)

        Returns
        -------
        crps : ndarray of shape (n_rows,)
        """
        grid = self._one_target("CRPS")
        return grid.crps(self._targets(y)[:, 0])

    # -------------------------------------------------------------- moments
    def _as_target(self, values):
        """(n_rows, n_outputs) to the training y's shape: 1-D for a 1-D y."""
        return values[:, 0] if self.target_ndim == 1 else values

    def _moments(self):
        if self.n_outputs == 1:
            mean, var = self._one_target("mean").moments()
            return mean[:, None], var[:, None]
        draws = self.sample(self.n_samples, self.random_state if self.random_state is not None else 0)
        draws = draws.reshape(len(self), self.n_outputs, self.n_samples)
        return draws.mean(axis=2), draws.var(axis=2)

    def mean(self):
        """Conditional mean ``E[y | x]`` of each row: shape (n_rows,) for a 1-D training y, else (n_rows, n_outputs)."""
        return self._as_target(self._moments()[0])

    def var(self):
        """Conditional variance of each target column, shaped as :meth:`mean`."""
        return self._as_target(self._moments()[1])

    # ------------------------------------------------------------- sampling
    def sample(self, n_samples=1, random_state=None):
        """Draws from ``p(y | x)`` for every row, each from a member picked uniformly at random.

        Parameters
        ----------
        n_samples : int, default=1
            Draws per row.
        random_state : int, RandomState instance or None, default=None
            None uses the distribution's ``random_state`` (fresh randomness
            when that is None too).

        Returns
        -------
        y_samples : ndarray of shape (n_rows, n_samples) or (n_rows, n_outputs, n_samples)
            2-D for a 1-D training ``y``, as ``sample_y`` of scikit-learn's
            Gaussian process regressor.
        """
        if not (isinstance(n_samples, (int, np.integer)) and n_samples >= 1):
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
        rng = check_random_state(self.random_state if random_state is None else random_state)
        rows = np.repeat(np.arange(len(self)), n_samples)
        if len(self.estimators) == 1:
            Y = self.estimators[0].sample(len(rows), rng, context=self._rows(rows))
        else:
            draw = lambda density, picked: density.sample(picked.size, rng, context=self._rows(rows[picked]))
            parts, order = sample_members(self.estimators, len(rows), rng, draw)
            Y = np.concatenate(parts)[order]
        Y = np.asarray(Y, dtype=np.float64).reshape(len(self), n_samples, self.n_outputs).transpose(0, 2, 1)
        return Y[:, 0] if self.target_ndim == 1 else Y


class _RowIndexer:
    def __init__(self, distribution):
        self.distribution = distribution

    def __getitem__(self, rows):
        return self.distribution[rows]
