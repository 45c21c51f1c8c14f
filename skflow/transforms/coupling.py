"""Affine coupling layers (Dinh et al. 2017, "Density estimation using Real NVP")."""

import torch
from torch import nn

from ._base import Transform, soft_clamp, sum_except_batch
from .autoregressive import INPUT_BOUND

__all__ = ["MLP", "AffineCoupling", "alternating_masks"]


class MLP(nn.Sequential):
    """A ReLU multilayer perceptron whose last layer starts at zero."""

    def __init__(self, in_features, out_features, hidden_features=(64, 64)):
        widths = [in_features, *hidden_features, out_features]
        layers = []
        for i in range(len(widths) - 1):
            layers.append(nn.Linear(widths[i], widths[i + 1]))
            if i < len(widths) - 2:
                layers.append(nn.ReLU())
        super().__init__(*layers)
        nn.init.zeros_(self[-1].weight)
        nn.init.zeros_(self[-1].bias)


def alternating_masks(n_features, n_layers):
    """Boolean masks (True = passed through, conditions the rest) per layer.

    Layer ``k`` keeps the features whose index has the parity of ``k``, so
    consecutive layers transform complementary halves.
    """
    index = torch.arange(n_features)
    return [(index + k) % 2 == 0 for k in range(n_layers)]


class AffineCoupling(Transform):
    """``z = b*x + (1-b)*((x - t(b*x)) * exp(-s(b*x)))`` for a fixed mask ``b``.

    Works on any layout: the mask broadcasts against ``x`` and the
    conditioner maps ``(n, C, ...)`` to ``(n, 2C, ...)`` (shift, then
    log-scale along dimension 1), so an MLP serves tabular data and a
    convolutional network serves images.

    Parameters
    ----------
    mask : bool tensor broadcastable to one sample
        True where features pass through unchanged.
    conditioner : torch.nn.Module
        Maps the masked input to shifts and raw log-scales.
    max_log_scale : float, default=3.0
        Log-scales are soft-clamped to ``(-max_log_scale, max_log_scale)``.
    """

    def __init__(self, mask, conditioner, max_log_scale=3.0):
        super().__init__()
        self.register_buffer("mask", mask.float())
        self.conditioner = conditioner
        self.max_log_scale = max_log_scale

    def _shift_log_scale(self, x):
        free = 1.0 - self.mask
        shift, raw = self.conditioner(soft_clamp(x * self.mask, INPUT_BOUND)).chunk(2, dim=1)
        return shift * free, soft_clamp(raw, self.max_log_scale) * free

    def forward(self, x):
        shift, log_scale = self._shift_log_scale(x)
        return (x - shift) * torch.exp(-log_scale), -sum_except_batch(log_scale)

    def inverse(self, z):
        shift, log_scale = self._shift_log_scale(z)
        return z * torch.exp(log_scale) + shift, sum_except_batch(log_scale)
