"""Dequantization of discrete pixels: uniform and variational (Flow++).

A dequantizer maps integer values ``x`` in ``[0, n_bins)`` (flat rows, or
images) and uniform noise ``v`` in ``(0, 1)`` of the same shape to continuous pixels
``y = (x + u) / n_bins`` in ``(0, 1)`` and ``log q(y | x)``, the log-density
of ``y`` given ``x`` (per image, shape ``(n,)``). Since the cells
``[x, x + 1) / n_bins`` tile ``[0, 1)``, for any density ``p`` on ``y``

    log P(x) >= E_q[log p(y) - log q(y | x)],

(Theis et al. 2016; Ho et al. 2019), the bound skflow reports as the
log-probability of a discrete image, in nats. A dequantizer sits inside the
model (:class:`skflow.flows.DequantizedFlow`); its noise comes from the
training batches' seeded generator, or from :func:`scoring_noise` when
scoring.

References: Ho, Chen, Srinivas, Duan and Abbeel (2019), "Flow++: Improving
Flow-Based Generative Models with Variational Dequantization and Architecture
Design".
"""

import hashlib
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..transforms.core import sum_except_batch
from ..transforms.coupling import AffineCoupling
from ..transforms.image import ConvResNet, checkerboard_mask

__all__ = [
    "UniformDequantization",
    "VariationalDequantization",
    "check_levels",
    "scoring_noise",
    "uniform_dequantized_score_samples",
]

_LOG_2PI = math.log(2 * math.pi)
#: Uniform noise is kept this far from 0 and 1 before the normal quantile.
_NOISE_EPS = 1e-6


def scoring_noise(X, n_draws=1, seed=0):
    """Uniform noise in ``[0, 1)`` of shape ``(n_draws, *X.shape)``, a function of each row.

    Row ``i``'s noise comes from a numpy generator seeded by a hash of its
    values and ``seed``, so a score depends neither on which other rows are
    scored with it nor on any global random state.
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    noise = np.empty((n_draws, *X.shape))
    for i, row in enumerate(X):
        key = int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little")
        noise[:, i] = np.random.default_rng([key, seed]).random((n_draws, *row.shape))
    return noise


def check_levels(X, n_bins):
    """Raise a ValueError unless every value of X is an integer in ``[0, n_bins)``."""
    X = np.asarray(X)
    integer = np.all(X == np.round(X))
    if not (integer and np.all((X >= 0) & (X < n_bins))):
        raise ValueError(
            f"With n_bins={n_bins}, values must be integers in [0, {n_bins}); got values in "
            f"[{X.min()}, {X.max()}]{'' if integer else ' that are not all integers'}."
        )


def uniform_dequantized_score_samples(score_samples, X, n_bins, n_draws=1, seed=0):
    """``log P(x)`` bound of any density fitted on uniformly dequantized values ``x + u``.

    For a density ``p`` over ``x + u`` (units of x, ``u`` in ``[0, 1)``),
    ``log P(x) >= log mean_k p(x + u_k)`` in expectation (importance weighting
    with the uniform proposal): the bookkeeping of skflow's dequantized
    models applied to any ``score_samples``, e.g. a GaussianMixture's.

    Parameters
    ----------
    score_samples : callable
        Maps an array like X to log-densities per row.
    X : ndarray of shape (n_samples, n_features)
        Integers in ``[0, n_bins)``.
    n_bins : int
    n_draws : int, default=1
    seed : int, default=0

    Returns
    -------
    log_prob : ndarray of shape (n_samples,)
    """
    X = np.asarray(X, dtype=np.float64)
    check_levels(X, n_bins)
    draws = np.stack([score_samples(X + u) for u in scoring_noise(X, n_draws, seed)])
    return np.logaddexp.reduce(draws, axis=0) - math.log(n_draws)


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
