"""The transform protocol and the few pieces every flow shares.

A transform maps data ``x`` to latent ``z``. Its ``forward(x, context=None)``
returns ``(z, log|det dz/dx|)`` and its ``inverse(z, context=None)`` returns
``(x, log|det dx/dz|)``, both log-determinants of shape ``(n_samples,)``.
``context`` is an optional tensor of shape ``(n_samples, context_features)``
that conditions the map (class labels one-hot, conditioning features); a
transform without a conditioner ignores it. Density estimation uses the
forward direction: ``log p(x | c) = log p_base(z | c) + log|det dz/dx|``.
"""

import abc

import torch
from torch import nn

__all__ = ["Compose", "Inverse", "Transform", "broadcast_context", "soft_clamp", "sum_except_batch"]


def soft_clamp(x, bound):
    """Squash ``x`` smoothly into ``(-bound, bound)``; identity near zero."""
    return bound * torch.tanh(x / bound)


def sum_except_batch(x):
    """Sum a tensor over every dimension but the first."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def broadcast_context(context, like):
    """``context`` of shape ``(n, k)`` as ``(n, k, *like.shape[2:])`` (extra channels of an image).

    A context that already has ``like``'s number of dimensions (a feature map)
    is returned as it is.
    """
    if context.dim() == like.dim():
        return context
    shape = (context.shape[0], context.shape[1], *([1] * (like.dim() - 2)))
    return context.reshape(shape).expand(*shape[:2], *like.shape[2:])


class Transform(nn.Module, abc.ABC):
    """A bijection ``x -> z`` with a tractable log-determinant, optionally conditioned.

    Subclasses implement :meth:`forward` and :meth:`inverse`.
    """

    @abc.abstractmethod
    def forward(self, x, context=None):
        """Map data to latent space; return ``(z, log|det dz/dx|)``."""

    @abc.abstractmethod
    def inverse(self, z, context=None):
        """Map latent to data space; return ``(x, log|det dx/dz|)``."""


class Compose(Transform):
    """Apply transforms in sequence, adding their log-determinants.

    Parameters
    ----------
    *transforms : Transform
        Applied left to right in the forward (data to latent) direction; each
        receives the same context.
    """

    def __init__(self, *transforms):
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def forward(self, x, context=None):
        ladj = x.new_zeros(x.shape[0])
        for transform in self.transforms:
            x, step = transform(x, context)
            ladj = ladj + step
        return x, ladj

    def inverse(self, z, context=None):
        ladj = z.new_zeros(z.shape[0])
        for transform in reversed(self.transforms):
            z, step = transform.inverse(z, context)
            ladj = ladj + step
        return z, ladj


class Inverse(Transform):
    """Swap the two directions of a transform (e.g. MAF -> IAF)."""

    def __init__(self, transform):
        super().__init__()
        self.transform = transform

    def forward(self, x, context=None):
        return self.transform.inverse(x, context)

    def inverse(self, z, context=None):
        return self.transform(z, context)
