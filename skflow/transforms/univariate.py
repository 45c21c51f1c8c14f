"""One-dimensional monotone maps applied elementwise, given their parameters.

An autoregressive or coupling layer computes parameters for each feature from
the features it may see (and the context), then hands them to one of these
maps. The layer decides *what each feature sees*; the map decides *how the
feature is transformed*. So an affine MAF and a spline flow are the same
layer given a different map (zuko's design), with no class per combination.

A map has ``n_params`` parameters per feature and is called as
``map(x, params) -> (z, ladj)`` and ``map.inverse(z, params) -> (x, ladj)``,
with ``params`` of shape ``(n, n_params, *x.shape[1:])`` and ``ladj`` the
elementwise ``log|dz/dx|`` (resp. ``log|dx/dz|``), of ``x``'s shape. All-zero
parameters give the identity, so a conditioner whose last layer starts at
zero makes a fresh layer the identity map.
"""

import torch
from torch import nn

from .core import soft_clamp

__all__ = ["Affine"]


class Affine(nn.Module):
    """``z = (x - shift) * exp(-log_scale)``, the log-scale soft-clamped to ``(-bound, bound)``.

    Parameters
    ----------
    max_log_scale : float, default=3.0
        Bound on each log-scale.
    """

    n_params = 2

    def __init__(self, max_log_scale=3.0):
        super().__init__()
        self.max_log_scale = max_log_scale

    def _unpack(self, params):
        shift, raw = params.unbind(dim=1)
        return shift, soft_clamp(raw, self.max_log_scale)

    def forward(self, x, params):
        shift, log_scale = self._unpack(params)
        return (x - shift) * torch.exp(-log_scale), -log_scale

    def inverse(self, z, params):
        shift, log_scale = self._unpack(params)
        return z * torch.exp(log_scale) + shift, log_scale
