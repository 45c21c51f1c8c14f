"""Coupling layers (Dinh et al. 2017, "Density estimation using Real NVP").

Half of the features pass through and, with the context, give the parameters
of a one-dimensional map of the other half: affine (RealNVP, Glow) or a
rational-quadratic spline (coupling neural spline flow).
"""

from itertools import pairwise

import torch
from torch import nn

from .autoregressive import INPUT_BOUND
from .core import Transform, broadcast_context, soft_clamp, sum_except_batch
from .univariate import Affine

__all__ = ["MLP", "AffineCoupling", "Coupling", "alternating_masks"]


class MLP(nn.Sequential):
    """A ReLU multilayer perceptron whose last layer starts at zero."""

    def __init__(self, in_features, out_features, hidden_features=(64, 64)):
        widths = [in_features, *hidden_features, out_features]
        layers = []
        for n_in, n_out in pairwise(widths):
            layers += [nn.Linear(n_in, n_out), nn.ReLU()]
        super().__init__(*layers[:-1])  # no ReLU after the output layer
        nn.init.zeros_(self[-1].weight)
        nn.init.zeros_(self[-1].bias)


def alternating_masks(n_features, n_layers):
    """Boolean masks (True = passed through, conditions the rest) per layer.

    Layer ``k`` keeps the features whose index has the parity of ``k``, so
    consecutive layers transform complementary halves.
    """
    index = torch.arange(n_features)
    return [(index + k) % 2 == 0 for k in range(n_layers)]


class Coupling(Transform):
    """``z = b*x + (1-b)*f(x; theta(b*x, context))`` for a fixed mask ``b`` and an elementwise map ``f``.

    Works on any layout: the mask broadcasts against ``x`` and the
    conditioner maps ``(n, C + K, ...)`` (the masked input and the
    ``K`` context features, broadcast over the remaining dimensions) to
    ``(n, n_params * C, ...)``, so an MLP serves tabular data and a
    convolutional network serves images.

    Parameters
    ----------
    mask : bool tensor broadcastable to one sample
        True where features pass through unchanged.
    conditioner : torch.nn.Module
        Maps the masked input (and context) to the map's parameters.
    univariate : torch.nn.Module, default=None
        The elementwise map (see :mod:`skflow.transforms.univariate`); None is
        :class:`Affine`.
    """

    def __init__(self, mask, conditioner, univariate=None):
        super().__init__()
        self.register_buffer("mask", mask.float())
        self.conditioner = conditioner
        self.univariate = Affine() if univariate is None else univariate

    def _params(self, x, context):
        h = soft_clamp(x * self.mask, INPUT_BOUND)
        if context is not None:
            h = torch.cat([h, broadcast_context(context, h)], dim=1)
        params = self.conditioner(h).to(x.dtype)  # x's precision, also under bf16 autocast
        return params.reshape(x.shape[0], self.univariate.n_params, *x.shape[1:])

    def _couple(self, step, x, context):
        y, ladj = step(x, self._params(x, context))
        kept = self.mask.bool()
        return torch.where(kept, x, y), sum_except_batch(ladj * (1.0 - self.mask))

    def forward(self, x, context=None):
        return self._couple(self.univariate, x, context)

    def inverse(self, z, context=None):
        return self._couple(self.univariate.inverse, z, context)


class AffineCoupling(Coupling):
    """Affine coupling ``z = b*x + (1-b)*((x - t) * exp(-s))``, log-scales soft-clamped to ``max_log_scale``."""

    def __init__(self, mask, conditioner, max_log_scale=3.0):
        super().__init__(mask, conditioner, Affine(max_log_scale))
