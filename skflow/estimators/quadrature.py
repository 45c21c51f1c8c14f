"""A one-dimensional density's cdf on a grid per row: the numerics behind :class:`FlowDistribution`.

For each row, a coarse grid (:func:`target_nodes`) locates the mass, a window of fine knots is
refined where left and right log-quadratic fits of the log-density disagree, each cell's mass is
the integral of ``exp`` of the quadratic through three knots (exact for Gaussian and exponential
pieces), and inside a cell the cdf is a monotone cubic Hermite piece whose slopes are the exact
density at its ends (see :mod:`skflow.estimators.predictive` for the whole procedure). A row's
grid depends on that row alone, and nothing is random.
"""

import warnings

import numpy as np
from scipy.special import exprel

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
