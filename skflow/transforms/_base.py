"""The transform protocol and the few pieces every flow shares.

A transform maps data ``x`` to latent ``z``. Its ``forward`` returns
``(z, log|det dz/dx|)`` and its ``inverse`` returns ``(x, log|det dx/dz|)``,
both log-determinants of shape ``(n_samples,)``. Density estimation uses the
forward direction: ``log p(x) = log p_base(z) + log|det dz/dx|``.
"""

import abc

import torch
from torch import nn

__all__ = ["Transform", "Compose", "Inverse", "soft_clamp"]


def soft_clamp(x, bound):
    """Squash ``x`` smoothly into ``(-bound, bound)``; identity near zero."""
    return bound * torch.tanh(x / bound)


def sum_except_batch(x):
    """Sum a tensor over every dimension but the first."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


class Transform(nn.Module, abc.ABC):
    """A bijection ``x -> z`` with a tractable log-determinant.

    Subclasses implement :meth:`forward` and :meth:`inverse`.
    """

    @abc.abstractmethod
    def forward(self, x):
        """Map data to latent space; return ``(z, log|det dz/dx|)``."""

    @abc.abstractmethod
    def inverse(self, z):
        """Map latent to data space; return ``(x, log|det dx/dz|)``."""


class Compose(Transform):
    """Apply transforms in sequence, adding their log-determinants.

    Parameters
    ----------
    *transforms : Transform
        Applied left to right in the forward (data to latent) direction.
    """

    def __init__(self, *transforms):
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def forward(self, x):
        ladj = x.new_zeros(x.shape[0])
        for transform in self.transforms:
            x, step = transform(x)
            ladj = ladj + step
        return x, ladj

    def inverse(self, z):
        ladj = z.new_zeros(z.shape[0])
        for transform in reversed(self.transforms):
            z, step = transform.inverse(z)
            ladj = ladj + step
        return z, ladj


class Inverse(Transform):
    """Swap the two directions of a transform (e.g. MAF -> IAF)."""

    def __init__(self, transform):
        super().__init__()
        self.transform = transform

    def forward(self, x):
        return self.transform.inverse(x)

    def inverse(self, z):
        return self.transform(z)
