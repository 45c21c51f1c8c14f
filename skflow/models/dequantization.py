"""Dequantizers: the modules that turn discrete pixels into continuous values inside a model.

A dequantizer maps integer values ``x`` in ``[0, n_bins)`` and uniform noise ``v``
in ``(0, 1)`` of the same shape to ``y = (x + u) / n_bins`` in ``(0, 1)`` and
``log q(y | x)``; :class:`skflow.models.flow.DequantizedFlow` puts one in front of a
flow, and ``E_q[log p(y) - log q(y | x)]`` is a lower bound of ``log P(x)`` (Theis
et al. 2016; Ho et al. 2019, Flow++). The variational dequantizer is itself a
conditional flow on the noise.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..transforms.core import sum_except_batch
from ..transforms.coupling import AffineCoupling
from ..transforms.multiscale import ConvResNet, checkerboard_mask

__all__ = ["UniformDequantization", "VariationalDequantization"]

_LOG_2PI = math.log(2 * math.pi)
#: Uniform noise is kept this far from 0 and 1 before the normal quantile.
_NOISE_EPS = 1e-6


class UniformDequantization(nn.Module):
    """``u = v``: uniform noise in each cell, ``log q(y | x) = D log(n_bins)``.

    Parameters
    ----------
    n_bins : int
        Number of pixel levels.

    Examples
    --------
    >>> import torch
    >>> deq = UniformDequantization(n_bins=4)
    >>> y, log_q = deq(torch.tensor([[0.0, 3.0]]), torch.tensor([[0.5, 0.5]]))
    >>> y
    tensor([[0.1250, 0.8750]])
    >>> round(float(log_q[0]), 4) == round(2 * math.log(4), 4)
    True
    """

    def __init__(self, n_bins):
        super().__init__()
        self.n_bins = n_bins

    def forward(self, x, noise):
        log_q = x.new_full((x.shape[0],), x[0].numel() * math.log(self.n_bins))
        return (x + noise) / self.n_bins, log_q


class VariationalDequantization(nn.Module):
    """Flow++'s variational dequantization: a conditional flow ``q(u | x)``.

    ``e ~ N(0, I)`` (from the uniform noise through the normal quantile) goes
    through ``n_couplings`` checkerboard affine couplings conditioned on
    features of ``x``, then a sigmoid, giving ``u`` in ``(0, 1)``; every
    Jacobian enters ``log q``. Trained jointly with the density, it tightens
    the bound ``E_q[log p(y) - log q(y | x)]`` on ``log P(x)``.

    Parameters
    ----------
    n_bins : int
        Number of pixel levels.
    image_shape : tuple of int
        ``(C, H, W)``; ``x`` may also come as flat rows ``(n, C*H*W)``.
    hidden_channels : int, default=16
        Width of the conditioner networks.
    n_blocks : int, default=1
        Residual blocks per conditioner.
    n_couplings : int, default=4
        Conditional coupling layers (alternating checkerboards).
    max_log_scale : float, default=3.0
        Bound on the couplings' log-scales.

    Examples
    --------
    >>> import torch
    >>> deq = VariationalDequantization(n_bins=17, image_shape=(1, 4, 4))
    >>> x = torch.randint(0, 17, (3, 1, 4, 4)).float()
    >>> y, log_q = deq(x, torch.rand(3, 1, 4, 4))
    >>> bool(((y * 17 >= x) & (y * 17 < x + 1)).all()), tuple(log_q.shape)
    (True, (3,))
    """

    def __init__(self, n_bins, image_shape, hidden_channels=16, n_blocks=1, n_couplings=4, max_log_scale=3.0):
        super().__init__()
        self.n_bins, self.image_shape = n_bins, tuple(image_shape)
        n_channels, height, width = image_shape
        self.features = nn.Sequential(
            nn.Conv2d(n_channels, hidden_channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden_channels, hidden_channels, 3, padding=1),
            nn.ReLU(),
        )
        self.couplings = nn.ModuleList(
            AffineCoupling(
                checkerboard_mask(height, width, k % 2),
                ConvResNet(n_channels + hidden_channels, 2 * n_channels, hidden_channels, n_blocks),
                max_log_scale,
            )
            for k in range(n_couplings)
        )

    def forward(self, x, noise):
        shape = x.shape  # flat rows or images; the couplings work on images
        x, noise = x.reshape(len(x), *self.image_shape), noise.reshape(len(x), *self.image_shape)
        e = torch.special.ndtri(noise.clamp(_NOISE_EPS, 1 - _NOISE_EPS))
        log_q = sum_except_batch(-0.5 * e**2 - 0.5 * _LOG_2PI)
        context = self.features(x / (self.n_bins - 1) - 0.5)
        for coupling in self.couplings:  # noise to u: the couplings' sampling direction
            e, ladj = coupling.inverse(e, context)
            log_q = log_q - ladj
        u = torch.sigmoid(e)
        log_q = log_q - sum_except_batch(F.logsigmoid(e) + F.logsigmoid(-e))
        log_q = log_q + x[0].numel() * math.log(self.n_bins)
        return ((x + u) / self.n_bins).reshape(shape), log_q
