"""Bijections on images of shape ``(n, C, H, W)``: the pieces of RealNVP and Glow.

Every transform returns ``(output, log|det J|)`` in both directions, the
log-determinant of shape ``(n,)``.

References: Dinh, Sohl-Dickstein and Bengio (2017), "Density estimation using
Real NVP"; Kingma and Dhariwal (2018), "Glow: Generative Flow with Invertible
1x1 Convolutions".
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from .core import Transform, sum_except_batch

__all__ = [
    "ConvResNet",
    "FixedAffine",
    "Flatten",
    "Logit",
    "MultiScale",
    "Squeeze",
    "channel_mask",
    "checkerboard_mask",
]


class Logit(Transform):
    """``z = logit(alpha + (1 - 2 alpha) y)`` for pixels ``y`` in ``(0, 1)``.

    The squeeze by ``alpha`` keeps the logit away from the infinite ends
    (RealNVP's preprocessing). Works on any layout.

    Parameters
    ----------
    alpha : float, default=0.05
        In ``[0, 0.5)``.
    """

    def __init__(self, alpha=0.05):
        super().__init__()
        self.alpha = alpha

    def forward(self, y, context=None):
        p = self.alpha + (1 - 2 * self.alpha) * y
        z = torch.log(p) - torch.log1p(-p)
        ladj = sum_except_batch(-torch.log(p) - torch.log1p(-p)) + y[0].numel() * math.log(1 - 2 * self.alpha)
        return z, ladj

    def inverse(self, z, context=None):
        p = torch.sigmoid(z)
        y = (p - self.alpha) / (1 - 2 * self.alpha)
        ladj = sum_except_batch(F.logsigmoid(z) + F.logsigmoid(-z)) - z[0].numel() * math.log(
            1 - 2 * self.alpha
        )
        return y, ladj


class FixedAffine(Transform):
    """``z = scale * x + shift`` with constants (e.g. pixels in ``(0, 1)`` to ``(-1, 1)``).

    Parameters
    ----------
    scale : float
        Non-zero.
    shift : float, default=0.0
    """

    def __init__(self, scale, shift=0.0):
        super().__init__()
        self.scale, self.shift = float(scale), float(shift)

    def _ladj(self, x):
        return x.new_full((x.shape[0],), x[0].numel() * math.log(abs(self.scale)))

    def forward(self, x, context=None):
        return x * self.scale + self.shift, self._ladj(x)

    def inverse(self, z, context=None):
        return (z - self.shift) / self.scale, -self._ladj(z)


class Squeeze(Transform):
    """Space to depth: ``(C, H, W) -> (4C, H/2, W/2)``; volume preserving.

    Each 2x2 block of a channel becomes four channels (RealNVP's squeeze).
    """

    def forward(self, x, context=None):
        n, c, h, w = x.shape
        x = x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
        return x.reshape(n, 4 * c, h // 2, w // 2), x.new_zeros(n)

    def inverse(self, z, context=None):
        n, c, h, w = z.shape
        z = z.reshape(n, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
        return z.reshape(n, c // 4, 2 * h, 2 * w), z.new_zeros(n)


class Flatten(Transform):
    """``(n, *shape) -> (n, prod(shape))`` and back; volume preserving."""

    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x, context=None):
        return x.reshape(x.shape[0], -1), x.new_zeros(x.shape[0])

    def inverse(self, z, context=None):
        return z.reshape(z.shape[0], *self.shape), z.new_zeros(z.shape[0])


class MultiScale(Transform):
    """Multi-scale architecture: transform, factor half the channels out, recurse.

    ``forward(x)``: ``h = level(x)``; the first half of ``h``'s channels is
    output as it is (factored out), the second half goes through ``inner``.
    The output is the flat concatenation ``[factored, inner(rest)]`` of shape
    ``(n, prod(level_shape))``, so a :class:`~skflow.models.distributions.StandardNormal`
    base fits it. ``inner`` must itself return flat rows (end it with
    :class:`Flatten` or another :class:`MultiScale`).

    Parameters
    ----------
    level : Transform
        Maps ``(n, C, H, W)`` to ``(n, *level_shape)``.
    inner : Transform
        Maps ``(n, level_shape[0] - level_shape[0] // 2, H', W')`` to flat rows.
    level_shape : tuple of int
        ``(C', H', W')``, the shape of one output of ``level``.
    """

    def __init__(self, level, inner, level_shape):
        super().__init__()
        self.level, self.inner = level, inner
        self.level_shape = tuple(level_shape)
        self.n_out = level_shape[0] // 2

    def forward(self, x, context=None):
        h, ladj = self.level(x, context)
        factored, rest = h[:, : self.n_out], h[:, self.n_out :]
        z, ladj_inner = self.inner(rest, context)
        return torch.cat([factored.reshape(len(x), -1), z], dim=1), ladj + ladj_inner

    def inverse(self, z, context=None):
        _, height, width = self.level_shape
        n_factored = self.n_out * height * width
        factored = z[:, :n_factored].reshape(len(z), self.n_out, height, width)
        rest, ladj_inner = self.inner.inverse(z[:, n_factored:], context)
        x, ladj = self.level.inverse(torch.cat([factored, rest], dim=1), context)
        return x, ladj + ladj_inner


def checkerboard_mask(height, width, parity=0):
    """Boolean ``(1, H, W)`` mask, True on the squares with ``(i + j) % 2 == parity``."""
    i, j = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return ((i + j) % 2 == parity)[None]


def channel_mask(n_channels, parity=0):
    """Boolean ``(C, 1, 1)`` mask, True on the first half of the channels (``parity=0``) or the second."""
    first = torch.arange(n_channels) < n_channels // 2
    return (first if parity == 0 else ~first)[:, None, None]


class _ResidualBlock(nn.Module):
    def __init__(self, n_channels):
        super().__init__()
        self.net = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(n_channels, n_channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(n_channels, n_channels, 1),
        )

    def forward(self, x):
        return x + self.net(x)


class ConvResNet(nn.Module):
    """Convolutional ResNet conditioner ``(n, C_in, H, W) -> (n, C_out, H, W)``.

    A 3x3 convolution, ``n_blocks`` residual blocks and a 3x3 output
    convolution that starts at zero, so a coupling built on it starts as the
    identity map.

    Parameters
    ----------
    in_channels, out_channels : int
    hidden_channels : int, default=32
    n_blocks : int, default=2
    """

    def __init__(self, in_channels, out_channels, hidden_channels=32, n_blocks=2):
        super().__init__()
        layers = [nn.Conv2d(in_channels, hidden_channels, 3, padding=1)]
        layers += [_ResidualBlock(hidden_channels) for _ in range(n_blocks)]
        layers += [nn.ReLU(), nn.Conv2d(hidden_channels, out_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x):
        return self.net(x)
