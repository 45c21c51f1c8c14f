r"""Monotone rational-quadratic spline, applied elementwise, with identity tails.

The map of Gregory & Delbourgo (1982), as used in Neural Spline Flows (Durkan
et al., 2019). Inside ``[-B, B]`` it is a piecewise rational-quadratic function
through ``K + 1`` knots ``(x_k, y_k)``, with ``x_0 = y_0 = -B`` and
``x_K = y_K = B``, and positive derivatives ``d_k`` at the knots. Outside
``[-B, B]`` it is the identity, so every real number is in the support.

Within bin ``k``, with width ``w = x_{k+1} - x_k``, height
``h = y_{k+1} - y_k``, slope ``s = h / w`` and ``xi = (x - x_k) / w`` in
``[0, 1]``,

.. math::

    z = y_k + h \, \frac{s \xi^2 + d_k \xi (1 - \xi)}
                       {s + (d_{k+1} + d_k - 2 s) \xi (1 - \xi)},

    \frac{dz}{dx} = \frac{s^2 \left(d_{k+1} \xi^2 + 2 s \xi (1 - \xi)
                                   + d_k (1 - \xi)^2\right)}
                         {\left(s + (d_{k+1} + d_k - 2 s) \xi (1 - \xi)\right)^2}.

This is strictly increasing whenever all ``d_k > 0``. The inverse solves
``a xi^2 + b xi + c = 0`` with, for ``u = z - y_k`` and
``delta = d_{k+1} + d_k - 2 s``,

.. math::

    a = h (s - d_k) + u \delta, \quad b = h d_k - u \delta, \quad c = -s u,

whose root in ``[0, 1]`` is ``xi = 2 c / (-b - sqrt(b^2 - 4 a c))``. This form
stays accurate when ``a`` is close to zero (it is exact at the identity, where
``a = 0``) and is used when ``b >= 0``. When ``b < 0`` (steep end of a flat
bin) it would subtract nearly equal numbers, so the same root is taken as
``(-b + sqrt(b^2 - 4 a c)) / (2 a)`` instead; there ``a = h s - b > 0``.

The boundary derivatives are fixed to ``d_0 = d_K = 1`` so that the spline
joins the identity tails with a continuous first derivative. There are
``3 K - 1`` free parameters per element: ``K`` unnormalised widths, ``K``
unnormalised heights and ``K - 1`` unnormalised interior derivatives. They are
mapped so that all-zero parameters give the identity:

- widths ``= min_width + (1 - K min_width) softmax(raw)``, scaled to ``2 B``
  (zeros give ``K`` equal bins); heights likewise;
- derivatives ``= min_derivative + (1 - min_derivative) softplus(raw) / log 2``
  (zero gives exactly ``1``).

With equal widths and heights and all derivatives 1, every bin is the line of
slope 1 through its knots, i.e. the identity.

At ``x = \pm B`` exactly the spline and the tail agree in value (``\pm B``) and
derivative (``1``), so those points are given to the identity tail: the output,
its derivative and the log-determinant there are exact and do not depend on
rounding. Only points strictly inside ``(-B, B)`` go through the spline. There
the relative position ``xi`` is clamped to ``[0, 1]`` only to absorb rounding
(mathematically it always lies in that interval), and the clamp passes the
gradient straight through, so a ``xi`` that rounds to just past ``0`` or ``1``
does not get a zero derivative.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["RationalQuadraticSpline"]


def _softmax(raw):
    """``softmax`` over the last axis, written out: for the few bins of a spline, about 3x faster
    (forward and backward, on the CPU) than ``torch.softmax``, whose kernel is slow on short rows."""
    e = torch.exp(raw - raw.detach().amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


class RationalQuadraticSpline(nn.Module):
    """Monotone rational-quadratic spline on ``[-bound, bound]``, identity outside.

    Called as ``spline(x, params) -> (z, ladj)`` and
    ``spline.inverse(z, params) -> (x, ladj)``, where ``params`` has shape
    ``(n, n_params, *x.shape[1:])`` and ``ladj`` is the elementwise
    ``log|dz/dx|`` (resp. ``log|dx/dz|``) with ``x``'s shape. Along the
    parameter axis (dim 1) come ``n_bins`` unnormalised bin widths, then
    ``n_bins`` unnormalised bin heights, then ``n_bins - 1`` unnormalised
    interior knot derivatives. All-zero parameters give the identity map.

    Parameters
    ----------
    n_bins : int, default=8
        Number of bins ``K`` on ``[-bound, bound]``.
    bound : float, default=5.0
        Half-width ``B`` of the interval on which the spline acts. Outside it
        the map is the identity with zero log-derivative.
    min_width : float, default=1e-3
        Smallest bin width, as a fraction of ``2 * bound``. Must satisfy
        ``min_width * n_bins < 1``.
    min_height : float, default=1e-3
        Smallest bin height, as a fraction of ``2 * bound``. Must satisfy
        ``min_height * n_bins < 1``.
    min_derivative : float, default=1e-3
        Smallest derivative at an interior knot. Must lie in ``(0, 1)``.

    Attributes
    ----------
    n_params : int
        Parameters per element, ``3 * n_bins - 1``.

    References
    ----------
    .. [1] C. Durkan, A. Bekasov, I. Murray, G. Papamakarios, "Neural Spline
       Flows", NeurIPS 2019. https://arxiv.org/abs/1906.04032
    .. [2] J. A. Gregory, R. Delbourgo, "Piecewise rational quadratic
       interpolation to monotonic data", IMA Journal of Numerical Analysis
       2(2), 1982.

    Examples
    --------
    >>> import torch
    >>> from skflow.transforms.splines import RationalQuadraticSpline
    >>> spline = RationalQuadraticSpline(n_bins=4, bound=3.0)
    >>> spline.n_params
    11
    >>> x = torch.linspace(-4.0, 4.0, 6, dtype=torch.float64).reshape(2, 3)
    >>> z, ladj = spline(x, torch.zeros(2, spline.n_params, 3, dtype=torch.float64))
    >>> bool(torch.allclose(z, x)) and bool(torch.allclose(ladj, torch.zeros_like(x)))
    True
    >>> params = torch.randn(2, spline.n_params, 3, dtype=torch.float64)
    >>> z, ladj = spline(x, params)
    >>> x_back, ladj_inv = spline.inverse(z, params)
    >>> bool(torch.allclose(x_back, x)) and bool(torch.allclose(ladj_inv, -ladj))
    True
    """

    def __init__(self, n_bins=8, bound=5.0, min_width=1e-3, min_height=1e-3, min_derivative=1e-3):
        super().__init__()
        n_bins = int(n_bins)
        if n_bins < 1:
            raise ValueError(f"n_bins must be at least 1, got {n_bins}")
        if not bound > 0:
            raise ValueError(f"bound must be positive, got {bound}")
        if not 0 <= min_width * n_bins < 1:
            raise ValueError(f"need 0 <= min_width * n_bins < 1, got {min_width} * {n_bins}")
        if not 0 <= min_height * n_bins < 1:
            raise ValueError(f"need 0 <= min_height * n_bins < 1, got {min_height} * {n_bins}")
        if not 0 < min_derivative < 1:
            raise ValueError(f"min_derivative must lie in (0, 1), got {min_derivative}")
        self.n_bins = n_bins
        self.bound = float(bound)
        self.min_width = float(min_width)
        self.min_height = float(min_height)
        self.min_derivative = float(min_derivative)
        self.n_params = 3 * n_bins - 1

    def extra_repr(self):
        return f"n_bins={self.n_bins}, bound={self.bound}"

    # ------------------------------------------------------------------ helpers
    def _knots(self, raw, minimum):
        """Knot positions ``(..., K + 1)`` on ``[-B, B]`` from unnormalised bin sizes ``(..., K)``."""
        K = self.n_bins
        sizes = minimum + (1.0 - minimum * K) * _softmax(raw)
        interior = (2.0 * self.bound) * torch.cumsum(sizes[..., :-1], dim=-1) - self.bound
        # The end knots are exactly -B and B, so the spline meets the tails there.
        end = torch.full_like(sizes[..., :1], self.bound)
        return torch.cat([-end, interior, end], dim=-1)

    def _unpack(self, params, x):
        """Knots and derivatives, each with the parameter axis moved last."""
        if params.dim() != x.dim() + 1 or params.shape[1] != self.n_params:
            raise ValueError(
                f"params must have shape (n, {self.n_params}, *x.shape[1:]) = "
                f"{(x.shape[0], self.n_params, *x.shape[1:])}, got {tuple(params.shape)}"
            )
        K = self.n_bins
        p = params.movedim(1, -1)
        raw_w, raw_h, raw_d = p[..., :K], p[..., K : 2 * K], p[..., 2 * K :]
        knots_x = self._knots(raw_w, self.min_width)
        knots_y = self._knots(raw_h, self.min_height)
        md = self.min_derivative
        interior = md + (1.0 - md) * F.softplus(raw_d) / math.log(2.0)
        derivs = F.pad(interior, (1, 1), value=1.0)
        return knots_x, knots_y, derivs

    @staticmethod
    def _bin(knots, v):
        """Index ``(..., 1)`` of the bin holding ``v`` (``v`` already clamped into range)."""
        idx = torch.searchsorted(knots, v.unsqueeze(-1).contiguous(), right=True) - 1
        return idx.clamp(0, knots.shape[-1] - 2)

    @staticmethod
    def _clamp_unit(t):
        """``t.clamp(0, 1)`` in value, with the derivative of ``t`` (straight through).

        Used on a relative position that lies in ``[0, 1]`` up to rounding; a plain
        clamp would zero its gradient whenever rounding lands it just outside.
        """
        return t.clamp(0.0, 1.0).detach() + (t - t.detach())

    @staticmethod
    def _take(t, idx):
        return torch.gather(t, -1, idx).squeeze(-1)

    def _gather_bin(self, knots_x, knots_y, derivs, idx):
        x_k = self._take(knots_x, idx)
        w = self._take(knots_x, idx + 1) - x_k
        y_k = self._take(knots_y, idx)
        h = self._take(knots_y, idx + 1) - y_k
        d_k = self._take(derivs, idx)
        d_k1 = self._take(derivs, idx + 1)
        return x_k, w, y_k, h, d_k, d_k1

    @staticmethod
    def _log_derivative(xi, s, d_k, d_k1):
        """``log dz/dx`` at relative position ``xi`` in a bin."""
        one_minus = 1.0 - xi
        denom = s + (d_k1 + d_k - 2.0 * s) * xi * one_minus
        numer = d_k1 * xi.square() + 2.0 * s * xi * one_minus + d_k * one_minus.square()
        return 2.0 * torch.log(s) + torch.log(numer) - 2.0 * torch.log(denom)

    def _locate(self, params, v, by_output):
        """Where ``v`` falls: ``(inside, v clamped to [-B, B], its bin's x_k, w, y_k, h, d_k, d_k1)``.

        ``v`` is an input (``by_output=False``) or an output of the spline. Strict: at +-B the
        identity tail is exact (value +-B, derivative 1), in both directions.
        """
        knots_x, knots_y, derivs = self._unpack(params, v)
        B = self.bound
        inside = (v > -B) & (v < B)
        vc = v.clamp(-B, B)
        idx = self._bin(knots_y if by_output else knots_x, vc)
        return inside, vc, self._gather_bin(knots_x, knots_y, derivs, idx)

    # ---------------------------------------------------------------- the map
    def forward(self, x, params):
        """Map ``x`` to ``z``; return ``(z, log|dz/dx|)`` elementwise.

        Parameters
        ----------
        x : torch.Tensor of shape (n, ...)
            Inputs; any real values.
        params : torch.Tensor of shape (n, n_params, ...)
            Unnormalised spline parameters, parameter axis at dim 1.

        Returns
        -------
        z : torch.Tensor, shape of ``x``
        ladj : torch.Tensor, shape of ``x``
        """
        inside, xc, (x_k, w, y_k, h, d_k, d_k1) = self._locate(params, x, by_output=False)
        s = h / w
        xi = self._clamp_unit((xc - x_k) / w)
        xi1 = xi * (1.0 - xi)
        z_in = y_k + h * (s * xi.square() + d_k * xi1) / (s + (d_k1 + d_k - 2.0 * s) * xi1)
        ladj_in = self._log_derivative(xi, s, d_k, d_k1)
        z = torch.where(inside, z_in, x)
        ladj = torch.where(inside, ladj_in, 0.0)
        return z, ladj

    def inverse(self, z, params):
        """Map ``z`` back to ``x``; return ``(x, log|dx/dz|)`` elementwise.

        Parameters
        ----------
        z : torch.Tensor of shape (n, ...)
            Outputs of :meth:`forward`; any real values.
        params : torch.Tensor of shape (n, n_params, ...)
            The same parameters given to :meth:`forward`.

        Returns
        -------
        x : torch.Tensor, shape of ``z``
            The input that :meth:`forward` maps to ``z``.
        ladj : torch.Tensor, shape of ``z``
            Minus the forward ``log|dz/dx|`` at ``x``.
        """
        inside, zc, (x_k, w, y_k, h, d_k, d_k1) = self._locate(params, z, by_output=True)
        s = h / w
        u = zc - y_k
        delta = d_k1 + d_k - 2.0 * s
        a = h * (s - d_k) + u * delta
        b = h * d_k - u * delta
        c = -s * u
        sqrt_disc = torch.sqrt((b.square() - 4.0 * a * c).clamp_min(0.0))
        # The root in [0, 1] is (-b + sqrt(disc)) / (2a) = 2c / (-b - sqrt(disc)).
        # For b >= 0 the second form has no cancellation (and survives a = 0);
        # for b < 0 the first has none, and there a = h s - b > 0. Each branch
        # gets a safe denominator so the discarded one cannot poison gradients.
        b_pos = b >= 0
        one = torch.ones_like(b)
        root_c = (2.0 * c) / torch.where(b_pos, -b - sqrt_disc, -one)
        root_a = (sqrt_disc - b) / torch.where(b_pos, one, 2.0 * a)
        # Rounding can put the root just outside [0, 1] (e.g. 1 + ulp next to
        # the top knot); clamp the value but keep the root's own derivative.
        xi = self._clamp_unit(torch.where(b_pos, root_c, root_a))
        x_in = x_k + xi * w
        ladj_in = -self._log_derivative(xi, s, d_k, d_k1)
        x = torch.where(inside, x_in, z)
        ladj = torch.where(inside, ladj_in, 0.0)
        return x, ladj
