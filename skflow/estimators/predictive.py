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

import warnings

import numpy as np
import pandas as pd
from scipy.special import exprel
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array

from .density import INFERENCE_BATCH
from .ensemble import mixture_log_density, sample_members

__all__ = ["FlowDistribution", "target_nodes"]

#: Cells of the coarse grid spanning the training targets' range widened by a standard deviation.
N_COARSE = 10
#: Coarse nodes beyond each end of that range (the far tails), this many standard deviations apart.
N_OUTER = 3
OUTER_STEP = 2.5
#: Training values holding at least this share of the weight get nodes at these offsets (in standard
#: deviations) around them, where the flow may put a spike.
ATOM_SHARE = 0.05
ATOM_OFFSETS = 4.0 ** np.arange(-7, 0)
#: Cells of the window of fine knots over each row's mass: ``N_FIRST`` placed from the coarse grid,
#: then ``N_ROUNDS`` rounds that each bisect the ``N_BISECT`` cells with the largest error estimate.
N_FIRST = 20
N_ROUNDS = 2
N_BISECT = 10
#: Cells whose estimated error (in probability) is below this are halved without evaluating the density.
CELL_TOLERANCE = 2e-5
#: Rounds of moving knots for a row whose grid does not hold unit mass.
N_MOVES = 3
#: Coarse grids tried, each four times finer than the last, before a row is given up as unresolved.
N_LEVELS = 4
#: A row's grid is accepted when its mass is within this of 1.
MASS_TOLERANCE = 1e-2
#: The window covers the coarse cdf from this to 1 minus this, one coarse cell wider on each side.
WINDOW_TAIL = 1e-3
#: Share of the window's knots spaced uniformly; the rest equidistribute the coarse cdf.
UNIFORM_SHARE = 0.5
#: A cell's log-quadratic integral is used when within this factor of its log-linear one.
QUADRATIC_BAND = 2.0
#: Rows gridded together (bounds the memory of the grid's arrays).
GRID_ROWS = 2048
#: Inference batches per scoring call; the last batch of a call holds at least ``MIN_BATCH`` points
#: (padded): BLAS kernels for two or three rows round differently, which would make a row's scores
#: depend on the rows it is scored with.
GRID_CALL = 8
MIN_BATCH = 16
#: Largest (rows x points x knots) comparison that ``cdf`` and ``ppf`` make at once.
BLOCK_CELLS = 2**22
#: Bisection steps of ``ppf`` inside a cell (2**-60 of its width).
BISECTIONS = 60

_GAUSS_NODES, _GAUSS_WEIGHTS = np.polynomial.legendre.leggauss(4)
_GAUSS_NODES, _GAUSS_WEIGHTS = (_GAUSS_NODES + 1) / 2, _GAUSS_WEIGHTS / 2  # on [0, 1]
_GAUSS2_NODES, _GAUSS2_WEIGHTS = (
    np.array([0.5 - 0.5 / np.sqrt(3), 0.5 + 0.5 / np.sqrt(3)]),
    np.array([0.5, 0.5]),
)


# ----------------------------------------------------------------------------- the grid
def _exp_integral(log_start, slope, s):
    """``int_0^s exp(log_start + slope t) dt``, stable for any slope (log-linear density in a cell)."""
    return s * np.exp(np.maximum(log_start, log_start + slope * s)) * exprel(-np.abs(slope) * s)


def _exp_share(slope, s):
    """The share of a cell's mass below fraction ``s`` of it, for a log-linear density of ``slope``."""
    steep = np.abs(slope)
    return np.exp(np.maximum(slope, 0) * (s - 1)) * s * exprel(-steep * s) / exprel(-steep)


def _lagrange(x0, x1, x2, l0, l1, l2, t):
    """The quadratic through ``(x0, l0), (x1, l1), (x2, l2)`` at ``t``."""
    return (
        l0 * (t - x1) * (t - x2) / ((x0 - x1) * (x0 - x2))
        + l1 * (t - x0) * (t - x2) / ((x1 - x0) * (x1 - x2))
        + l2 * (t - x0) * (t - x1) / ((x2 - x0) * (x2 - x1))
    )


def _log_quadratic_increments(x, log_f):
    """Integral of ``f`` over each interval of the knots ``x`` (rows).

    ``exp`` of the quadratic through three knots of ``log f``, integrated by 4-point Gauss-Legendre:
    exact for Gaussian and exponential pieces. An interval averages the quadratics through its left
    and through its right neighbour; with one of them (an end, or an empty neighbouring interval)
    it takes that one, with none the log-linear integral. A result more than a factor 2 from the
    log-linear integral (a quadratic that does not fit) is replaced by it.
    """
    width = np.diff(x, axis=1)
    slope = np.diff(log_f, axis=1)
    linear = width * _exp_integral(log_f[:, :-1], slope, 1.0)
    forward, backward = np.full(width.shape, np.nan), np.full(width.shape, np.nan)
    w0, w1 = width[:, :-1, None], width[:, 1:, None]  # the stencil of knots i, i + 1, i + 2
    valid = (w0 > 0) & (w1 > 0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        d01, d12 = slope[:, :-1, None] / w0, slope[:, 1:, None] / w1
        curve = (d12 - d01) / (w0 + w1)  # Newton form: l0 + d01 (t - x0) + curve (t - x0) (t - x1)
        l0, g = log_f[:, :-2, None], _GAUSS_NODES
        left = l0 + w0 * g * (d01 + curve * w0 * (g - 1))
        right = l0 + (w0 + w1 * g) * (d01 + curve * w1 * g)
        forward[:, :-1] = np.where(valid[..., 0], w0[..., 0] * (np.exp(left) @ _GAUSS_WEIGHTS), np.nan)
        backward[:, 1:] = np.where(valid[..., 0], w1[..., 0] * (np.exp(right) @ _GAUSS_WEIGHTS), np.nan)
    both = ~np.isnan(forward) & ~np.isnan(backward)
    total = np.where(both, (forward + backward) / 2, np.where(np.isnan(forward), backward, forward))
    total = np.where(np.isnan(total), linear, total)
    return np.where((total > linear / QUADRATIC_BAND) & (total < QUADRATIC_BAND * linear), total, linear)


def _disagreement(x, log_f):
    """Error estimate of each interval of the (distinct) knots ``x``: its log-linear mass times the gap,
    at its middle, between the quadratics of ``log f`` through its left and its right neighbour.

    Such a quadratic lies ``-curve w**2 / 4`` from the chord at the middle of an interval of width
    ``w`` (``curve``: its second divided difference); an end interval is measured against the chord.
    """
    width, slope = np.diff(x, axis=1), np.diff(log_f, axis=1)
    mass = width * _exp_integral(log_f[:, :-1], slope, 1.0)
    curve = np.diff(slope / width, axis=1) / (width[:, :-1] + width[:, 1:])
    gap = np.zeros(width.shape)
    gap[:, 0], gap[:, -1] = curve[:, 0], curve[:, -1]
    gap[:, 1:-1] = np.diff(curve, axis=1)
    return np.abs(gap) * width**2 / 4 * mass


def target_nodes(y, sample_weight=None, atoms=True):
    """The coarse grid of one target column from its training values ``y`` (and their weights).

    ``N_COARSE`` uniform cells over the training range widened by one
    standard deviation, and ``N_OUTER`` nodes ``OUTER_STEP`` standard
    deviations apart beyond each end: they carry the far tails (and the wide
    Gaussian that the tabular densities mix in). With ``atoms``, every value
    that holds at least ``ATOM_SHARE`` of the weight gets nodes at
    ``ATOM_OFFSETS`` standard deviations around it (if it repeats): a flow
    fitted to many equal values puts a spike there, far narrower than the
    uniform cells.
    Rows of weight 0 do not count.

    Examples
    --------
    >>> nodes = target_nodes([0.0, 1.0, 2.0])  # mean 1, standard deviation 0.82
    >>> len(nodes), nodes[[0, 3, 13, 16]].round(2)
    (17, array([-6.94, -0.82,  2.82,  8.94]))
    >>> len(target_nodes([0.0, 0.0, 0.0, 1.5, 2.0])), len(target_nodes([0.0, 0.0, 0.0, 1.5, 2.0], atoms=False))
    (32, 17)
    """
    y = np.asarray(y, dtype=np.float64)
    weight = np.ones_like(y) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    y, weight = y[weight > 0], weight[weight > 0]
    scale = np.sqrt(np.cov(y, aweights=weight, ddof=0)) if len(y) > 1 else 0.0
    scale = scale if scale > 0 else 1.0
    low, high = y.min() - scale, y.max() + scale
    outer = OUTER_STEP * scale * np.arange(1, N_OUTER + 1)
    nodes = [(low - outer)[::-1], np.linspace(low, high, N_COARSE + 1), high + outer]
    if atoms:
        values, index, count = np.unique(y, return_inverse=True, return_counts=True)
        atom = (np.bincount(index, weights=weight) >= ATOM_SHARE * weight.sum()) & (count > 1)
        offsets = scale * np.concatenate([-ATOM_OFFSETS[::-1], [0.0], ATOM_OFFSETS])
        nodes.append((values[atom][:, None] + offsets).ravel())
    return np.unique(np.concatenate(nodes))


def _coarse_cdf(log_p, nodes):
    """Normalised trapezoid cdf at the ``nodes`` of a coarse grid."""
    p = np.exp(log_p)
    F = np.cumsum((p[:, 1:] + p[:, :-1]) * np.diff(nodes) / 2, axis=1)
    F = np.concatenate([np.zeros((len(p), 1)), F], axis=1)
    return F / np.maximum(F[:, -1:], np.finfo(float).tiny)


def _window_knots(nodes, log_p):
    """``N_FIRST + 1`` knots per row over the mass that a coarse grid (``nodes``, ``log_p``: rows) sees.

    The window runs from the coarse node one cell below the ``WINDOW_TAIL``
    quantile (index ``start``) to the one one cell above the ``1 - WINDOW_TAIL``
    quantile (``stop``); inside it the knots equidistribute a blend of the
    coarse cdf and the uniform measure. Returns ``(knots, start, stop)``.
    """
    n_cells = nodes.shape[1] - 1
    take = lambda array, index: np.take_along_axis(array, index, axis=1)
    F = _coarse_cdf(log_p, nodes)
    start = np.clip(np.argmax(F >= WINDOW_TAIL, axis=1) - 2, 0, n_cells - 1)[:, None]
    stop = np.maximum(np.clip((F <= 1 - WINDOW_TAIL).sum(axis=1) + 1, 0, n_cells)[:, None], start + 1)
    a, b = take(nodes, start), take(nodes, stop)
    mass = np.clip(
        (F - take(F, start)) / np.maximum(take(F, stop) - take(F, start), np.finfo(float).tiny), 0, 1
    )
    blend = (1 - UNIFORM_SHARE) * mass + UNIFORM_SHARE * np.clip((nodes - a) / (b - a), 0, 1)
    tau = np.linspace(0, 1, N_FIRST + 1)[1:-1]
    cell = np.clip((blend[:, None, :] <= tau[None, :, None]).sum(axis=2) - 1, 0, n_cells - 1)
    g0, g1 = take(blend, cell), take(blend, cell + 1)
    inner = take(nodes, cell) + (tau - g0) / (g1 - g0) * (take(nodes, cell + 1) - take(nodes, cell))
    return np.concatenate([a, inner, b], axis=1), start[:, 0], stop[:, 0]


class _GridCDF:
    """A monotone piecewise cdf of one target per row, from the exact log-density at its knots.

    ``knots`` (n, K) ascend (repeated knots make empty cells); ``F`` is the cdf at the knots;
    cells flagged in ``hermite`` are cubic Hermite pieces with slopes ``m0``, ``m1`` (the
    exact density at their ends, limited by Fritsch and Carlson to stay monotone), the others
    log-linear in the density (``slope``: the change of the log-density across the cell). Cell
    masses come from :func:`_log_quadratic_increments`; ``mass`` is the grid's total before
    normalisation (1 when the grid resolves the row).
    """

    ROW_ARRAYS = ("knots", "width", "F", "mass", "slope", "m0", "m1")

    def __init__(self, knots, log_p, hermite):
        self.knots, self.hermite = knots, hermite
        self.width = np.diff(knots, axis=1)
        log_p = np.maximum(log_p, -700.0)
        self.slope = np.diff(log_p, axis=1)
        increments = _log_quadratic_increments(knots, log_p)
        F = np.concatenate([np.zeros((len(knots), 1)), np.cumsum(increments, axis=1)], axis=1)
        self.mass = F[:, -1]
        self.F = F / self.mass[:, None]
        self.F[:, -1] = 1.0
        # Fritsch-Carlson: slopes at most 3 times the cell's mean density (in norm) keep the cubic monotone
        density = np.exp(log_p) / self.mass[:, None]
        mean = np.diff(self.F, axis=1) / np.where(self.width > 0, self.width, 1.0)
        m0, m1 = density[:, :-1], density[:, 1:]
        positive = mean > np.finfo(float).tiny
        norm = np.hypot(m0, m1) / np.where(positive, mean, 1.0)
        limit = np.where(positive, 3 / np.maximum(norm, 3), 0.0)
        self.m0, self.m1 = np.where(hermite, m0 * limit, 0.0), np.where(hermite, m1 * limit, 0.0)

    @classmethod
    def concatenate(cls, grids):
        """The grids of consecutive blocks of rows as one."""
        grid = object.__new__(cls)
        for name in cls.ROW_ARRAYS:
            setattr(grid, name, np.concatenate([getattr(part, name) for part in grids]))
        grid.hermite = grids[0].hermite
        return grid

    def __getitem__(self, rows):
        grid = object.__new__(_GridCDF)
        for name in self.ROW_ARRAYS:
            setattr(grid, name, getattr(self, name)[rows])
        grid.hermite = self.hermite
        return grid

    def _cells(self, k):
        """The pieces of cells ``k`` (n, q): left cdf, cdf step, width, log-density slope, end slopes, kind."""
        take = lambda array: np.take_along_axis(array, k, axis=1)
        F0 = take(self.F[:, :-1])
        return (
            F0,
            take(self.F[:, 1:]) - F0,
            take(self.width),
            take(self.slope),
            take(self.m0),
            take(self.m1),
            self.hermite[k],
        )

    @staticmethod
    def _cdf_in(cells, s):
        """The cdf at fraction ``s`` of the way through each of ``cells``."""
        F0, dF, w, slope, m0, m1, hermite = cells
        cubic = F0 + dF * s * s * (3 - 2 * s) + w * (m0 * s * (1 - s) ** 2 - m1 * s * s * (1 - s))
        return np.where(hermite, cubic, F0 + dF * _exp_share(slope, s))

    def _in_blocks(self, method, values):
        """``method(grid, values)`` on blocks of rows, so that its (rows, q, knots) comparisons stay small."""
        step = max(1, BLOCK_CELLS // (values.shape[1] * self.knots.shape[1]))
        if step >= len(values):
            return method(self, values)
        parts = [method(self[i : i + step], values[i : i + step]) for i in range(0, len(values), step)]
        return np.concatenate(parts)

    def cdf(self, u):
        """cdf at ``u`` (n, q): 0 below the first knot, 1 from the last."""
        return self._in_blocks(_GridCDF._cdf, u)

    def ppf(self, p):
        """Inverse of :meth:`cdf` at ``p`` (n, q) in [0, 1]: bisection inside the cell holding ``p``."""
        return self._in_blocks(_GridCDF._ppf, p)

    def _cdf(self, u):
        k = np.clip((self.knots[:, None, :] <= u[:, :, None]).sum(axis=2) - 1, 0, self.width.shape[1] - 1)
        cells = self._cells(k)
        w = cells[2]
        s = np.clip((u - np.take_along_axis(self.knots, k, axis=1)) / np.where(w > 0, w, 1.0), 0, 1)
        F = np.clip(self._cdf_in(cells, s), 0, 1)
        return np.where(u < self.knots[:, :1], 0.0, np.where(u >= self.knots[:, -1:], 1.0, F))

    def _ppf(self, p):
        k = np.clip((self.F[:, None, :] <= p[:, :, None]).sum(axis=2) - 1, 0, self.width.shape[1] - 1)
        cells = self._cells(k)
        low, high = np.zeros_like(p), np.ones_like(p)
        for _ in range(BISECTIONS):
            middle = (low + high) / 2
            below = self._cdf_in(cells, middle) < p
            low, high = np.where(below, middle, low), np.where(below, high, middle)
        u = np.take_along_axis(self.knots, k, axis=1) + (low + high) / 2 * cells[2]
        return np.where(p <= 0, -np.inf, np.where(p >= 1, np.inf, u))

    def _gauss(self, s):
        """The cdf at the Gauss-Legendre fractions of every cell: (n, K - 1, 4)."""
        k = np.broadcast_to(np.arange(self.width.shape[1]), self.width.shape)
        cells = [part[..., None] for part in self._cells(k)]
        return self._cdf_in(cells, s)

    def moments(self):
        """Mean and variance: ``E u = u_K - int F`` and ``E (u - m)^2 = (u_K - m)^2 - 2 int (u - m) F``.

        Exact on the cubic cells; Gauss-Legendre (2 points) on the log-linear ones.
        """
        F0, F1, w = self.F[:, :-1], self.F[:, 1:], self.width
        int_F = (F0 + F1) / 2 + w * (self.m0 - self.m1) / 12
        int_sF = 3 * F0 / 20 + 7 * F1 / 20 + w * (self.m0 / 30 - self.m1 / 20)
        tails = np.flatnonzero(~self.hermite)  # little mass: 2-point Gauss-Legendre
        F = F0[:, tails, None] + (F1 - F0)[:, tails, None] * _exp_share(
            self.slope[:, tails, None], _GAUSS2_NODES
        )
        int_F[:, tails], int_sF[:, tails] = F @ _GAUSS2_WEIGHTS, (F * _GAUSS2_NODES) @ _GAUSS2_WEIGHTS
        end = self.knots[:, -1]
        mean = end - np.sum(w * int_F, axis=1)
        centred = self.knots[:, :-1] - mean[:, None]
        var = (end - mean) ** 2 - 2 * np.sum(w * (centred * int_F + w * int_sF), axis=1)
        return mean, np.maximum(var, 0.0)

    def crps(self, u):
        """``int (F(t) - 1{t >= u})^2 dt`` per row for the observations ``u`` (n,)."""
        F = self._gauss(_GAUSS_NODES)
        below, above = self.width * ((F**2) @ _GAUSS_WEIGHTS), self.width * (((1 - F) ** 2) @ _GAUSS_WEIGHTS)
        u = u[:, None]
        k = np.clip((self.knots <= u).sum(axis=1, keepdims=True) - 1, 0, self.width.shape[1] - 1)
        cells = self._cells(k)
        w = cells[2]
        s = np.clip((u - np.take_along_axis(self.knots, k, axis=1)) / np.where(w > 0, w, 1.0), 0, 1)
        left = w * s * ((self._cdf_in(cells, s * _GAUSS_NODES) ** 2) @ _GAUSS_WEIGHTS)[:, None]
        right_s = s + (1 - s) * _GAUSS_NODES
        right = w * (1 - s) * (((1 - self._cdf_in(cells, right_s)) ** 2) @ _GAUSS_WEIGHTS)[:, None]
        cell = np.arange(self.width.shape[1])
        inside = np.sum(np.where(cell < k, below, 0) + np.where(cell > k, above, 0), axis=1)
        outside = np.maximum(self.knots[:, 0] - u[:, 0], 0) + np.maximum(u[:, 0] - self.knots[:, -1], 0)
        return inside + (left + right)[:, 0] + outside


def _bisect(knots, log_p, rows, log_density):
    """Halve the ``N_BISECT`` cells of each row whose two quadratic estimates disagree most.

    The density is evaluated at the new knots of cells whose estimated error exceeds
    ``CELL_TOLERANCE``; the others get the log-quadratic interpolant's value (their integral
    does not change beyond that tolerance), so smooth rows cost no evaluations.
    """
    error = _disagreement(knots, log_p)
    cell = np.argsort(-error, axis=1, kind="stable")[:, :N_BISECT]
    take = lambda array, shift=0: np.take_along_axis(
        array, np.clip(cell + shift, 0, array.shape[1] - 1), axis=1
    )
    middle = (take(knots) + take(knots, 1)) / 2
    stencil = np.where(cell + 2 < knots.shape[1], 0, -1)  # the three knots around the cell
    centre = cell + stencil
    pick = lambda array, shift: np.take_along_axis(array, centre + shift, axis=1)
    log_middle = _lagrange(
        pick(knots, 0), pick(knots, 1), pick(knots, 2), pick(log_p, 0), pick(log_p, 1), pick(log_p, 2), middle
    )
    needed = np.nonzero(take(error) > CELL_TOLERANCE)
    log_middle[needed] = log_density(rows[needed[0]], middle[needed])
    knots, log_p = np.concatenate([knots, middle], axis=1), np.concatenate([log_p, log_middle], axis=1)
    order = np.argsort(knots, axis=1, kind="stable")
    return np.take_along_axis(knots, order, axis=1), np.take_along_axis(log_p, order, axis=1)


def _rebalance(knots, log_p, rows, log_density):
    """Move ``N_BISECT`` knots of each row: drop the inner knots whose two cells have the smallest
    error estimates, then halve the cells with the largest (:func:`_bisect`). The count stays."""
    error = _disagreement(knots, log_p)
    cost = error[:, :-1] + error[:, 1:]  # of dropping inner knot i + 1
    drop = np.argsort(cost, axis=1, kind="stable")[:, :N_BISECT] + 1
    keep = np.ones(knots.shape, dtype=bool)
    np.put_along_axis(keep, drop, False, axis=1)
    shape = (len(knots), knots.shape[1] - N_BISECT)
    knots, log_p = knots[keep].reshape(shape), log_p[keep].reshape(shape)
    return _bisect(knots, log_p, rows, log_density)


def _fit_grid(log_density, rows, nodes):
    """The :class:`_GridCDF` of the context ``rows``; ``log_density(rows, points)`` scores them.

    ``nodes`` (from :func:`target_nodes`) is the coarse grid. A row whose grid
    does not hold unit mass first moves knots of its window to where the error
    is (``N_MOVES`` rounds, :func:`_rebalance`), then is gridded again from
    uniform grids over the same span with ``4**level`` times more cells, its
    tails keeping the coarse nodes; a retry is kept when its mass is closer to 1.
    """

    def evaluate(subset, points):
        flat = log_density(np.repeat(rows[subset], points.shape[1]), np.ascontiguousarray(points).ravel())
        return flat.reshape(points.shape)

    everyone = np.arange(len(rows))
    log_coarse = evaluate(everyone, np.broadcast_to(nodes, (len(rows), len(nodes))))
    n_window = N_FIRST + N_ROUNDS * N_BISECT
    window = np.zeros(2 * len(nodes) + n_window, dtype=bool)
    window[len(nodes) : len(nodes) + n_window] = True

    def tails(subset, knots, log_window):
        """The grid of rows ``subset`` from its window's knots, with the coarse nodes beyond as tails."""
        a, b = knots[:, :1], knots[:, -1:]
        log_left = np.where(nodes < a, log_coarse[subset], log_window[:, :1])
        log_right = np.where(nodes > b, log_coarse[subset], log_window[:, -1:])
        all_knots = np.concatenate([np.minimum(nodes, a), knots, np.maximum(nodes, b)], axis=1)
        return _GridCDF(all_knots, np.concatenate([log_left, log_window, log_right], axis=1), window)

    def grid(subset, level_nodes, log_level):
        """The grid of rows ``subset`` from a coarse grid of theirs; also its window's knots and values."""
        knots, start, stop = _window_knots(level_nodes, log_level)
        pick = lambda i: np.take_along_axis(log_level, i[:, None], axis=1)
        log_window = np.concatenate([pick(start), evaluate(subset, knots[:, 1:-1]), pick(stop)], axis=1)
        for _ in range(N_ROUNDS):
            knots, log_window = _bisect(knots, log_window, rows[subset], log_density)
        return tails(subset, knots, log_window), knots, log_window

    def keep_better(subset, refined):
        better = np.abs(refined.mass - 1) < np.abs(result.mass[subset] - 1)
        for name in _GridCDF.ROW_ARRAYS:
            getattr(result, name)[subset[better]] = getattr(refined, name)[better]

    result, knots, log_window = grid(everyone, np.broadcast_to(nodes, log_coarse.shape), log_coarse)
    # rows whose window missed structure (a spike's flank): move knots from the smoothest cells to the worst
    failed = np.flatnonzero(np.abs(result.mass - 1) > MASS_TOLERANCE)
    knots, log_window = knots[failed], log_window[failed]
    for _ in range(N_MOVES):
        if failed.size == 0:
            break
        knots, log_window = _rebalance(knots, log_window, rows[failed], log_density)
        keep_better(failed, tails(failed, knots, log_window))
    # rows whose coarse grid missed the mass: finer coarse grids
    for level in range(1, N_LEVELS):
        failed = np.flatnonzero(np.abs(result.mass - 1) > MASS_TOLERANCE)
        if failed.size == 0:
            break
        finer = np.union1d(np.linspace(nodes[0], nodes[-1], N_COARSE * 4**level + 1), nodes)
        finer = np.broadcast_to(finer, (failed.size, len(finer)))
        keep_better(failed, grid(failed, finer, evaluate(failed, finer))[0])
    return result


def _warn_unresolved(grid, nodes):
    """Warn about rows whose grid does not hold unit mass after every level."""
    unresolved = np.abs(grid.mass - 1) > MASS_TOLERANCE
    if unresolved.any():
        warnings.warn(
            f"The predictive density of {unresolved.sum()} of {len(grid.mass)} rows holds mass "
            f"{grid.mass[unresolved].min():.3g} to {grid.mass[unresolved].max():.3g} instead of 1 on a grid "
            f"of {N_COARSE * 4 ** (N_LEVELS - 1)} cells over [{nodes[0]:.4g}, {nodes[-1]:.4g}] (narrower than "
            "the grid, or mass outside it); their cdf, quantiles and moments are approximate.",
            UserWarning,
            stacklevel=5,
        )


# ----------------------------------------------------------------------------- the distribution
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
    >>> rng = np.random.RandomState(0)
    >>> X = rng.uniform(-2, 2, size=(200, 1))
    >>> y = X[:, 0] + 0.3 * rng.normal(size=200)
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
