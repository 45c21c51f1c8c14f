"""Flow modules: a transform from data to latent space and a base density.

``Flow(transform, base)`` gives ``log p(x | c) = log p_base(T(x; c) | c) + log|det dT/dx|``
and samples by inverting ``T``. ``DequantizedFlow`` puts a dequantizer in front
of a flow for discrete data (pixels with ``n_bins`` levels) and gives the
variational lower bound of ``log P(x)``.
"""

import torch
from torch import nn

__all__ = ["DequantizedFlow", "Flow"]


class Flow(nn.Module):
    """``log p(x | context) = log p_base(T(x)) + log|det dT/dx|``.

    Parameters
    ----------
    transform : skflow.transforms.Transform
        Maps data to the base space; receives the context.
    base : torch.nn.Module
        Has ``log_prob(z, context=None)`` and
        ``sample(n_samples, context=None, generator=None)``.
    """

    def __init__(self, transform, base):
        super().__init__()
        self.transform = transform
        self.base = base

    def forward(self, x, context=None):
        """Log-density of each row of ``x``; shape ``(n_samples,)``."""
        return self.log_prob(x, context)

    def log_prob(self, x, context=None):
        z, ladj = self.transform(x, context)
        return self.base.log_prob(z, context) + ladj

    def sample(self, n_samples, context=None, generator=None):
        """Draw ``n_samples`` from the model (base sample, then inverse)."""
        return self.rsample_and_log_prob(n_samples, context, generator)[0]

    def rsample_and_log_prob(self, n_samples, context=None, generator=None):
        """Reparameterised samples and their log-densities, in one pass."""
        z = self.base.sample(n_samples, context, generator)
        log_base = self.base.log_prob(z, context)
        x, ladj = self.transform.inverse(z, context)
        return x, log_base - ladj


class DequantizedFlow(nn.Module):
    """A flow on dequantized values: ``log P(x) >= log p(y) - log q(y | x)``.

    ``x`` holds integers in ``[0, n_bins)``; the dequantizer maps ``x`` and
    uniform noise ``v`` to ``y`` in ``(0, 1)`` and ``log q(y | x)`` (see
    :mod:`skflow.data.dequantize`). Since the cells tile ``(0, 1)``, the
    expectation over ``v`` of the returned value is a lower bound of
    ``log P(x)`` (Theis et al. 2016; Ho et al. 2019). The noise is an input,
    drawn by the caller from a seeded generator.

    Parameters
    ----------
    flow : Flow
        Density over ``y`` (flat rows).
    dequantizer : torch.nn.Module
        Maps ``(x, noise)`` to ``(y, log q(y | x))``; has ``n_bins``.
    """

    def __init__(self, flow, dequantizer):
        super().__init__()
        self.flow, self.dequantizer = flow, dequantizer

    def forward(self, x, context=None, noise=None):
        return self.log_prob(x, context, noise)

    def log_prob(self, x, context=None, noise=None):
        if noise is None:
            raise ValueError("DequantizedFlow needs the dequantization noise (uniform, shaped like x).")
        y, log_q = self.dequantizer(x, noise)
        return self.flow.log_prob(y, context) - log_q

    def quantize(self, y):
        """Values in ``(0, 1)`` back to their integer cells."""
        n_bins = self.dequantizer.n_bins
        return torch.floor(y * n_bins).clamp(0, n_bins - 1)

    def sample(self, n_samples, context=None, generator=None):
        return self.quantize(self.flow.sample(n_samples, context, generator))
