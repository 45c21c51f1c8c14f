"""MADE and the masked autoregressive layer of MAF, IAF and autoregressive spline flows.

References: Germain et al. (2015), "MADE: Masked Autoencoder for Distribution
Estimation"; Papamakarios et al. (2017), "Masked Autoregressive Flow for
Density Estimation"; Durkan et al. (2019), "Neural Spline Flows".
"""

import torch
from torch import nn
from torch.nn import functional as F

from .core import Transform, soft_clamp
from .univariate import Affine

__all__ = ["MADE", "MaskedAffineAutoregressive", "MaskedAutoregressive", "MaskedLinear", "reversing_order"]

#: Conditioner inputs are squashed into this range, so a layer's parameters
#: are bounded functions of the data and held-out extremes meet a map with
#: bounded slope (Gaussian-like tails) instead of an extrapolating MLP.
INPUT_BOUND = 6.0


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask.

    Called with stacked weights (a leading member axis of ``K``: weight
    ``(K, out, in)``, bias ``(K, out)``, as :class:`~skflow.training.stacked.StackedMembers`
    passes them), the rows of ``x`` are ``K`` consecutive blocks of equal
    size, block ``k`` going through member ``k``'s weights (one batched
    matrix product).
    """

    def __init__(self, in_features, out_features, mask):
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x):
        if self.weight.dim() == 2:
            return F.linear(x, self.weight * self.mask, self.bias)
        n_members = self.weight.shape[0]
        blocks = x.reshape(n_members, x.shape[0] // n_members, x.shape[-1])
        out = torch.baddbmm(self.bias.unsqueeze(1), blocks, (self.weight * self.mask).transpose(1, 2))
        return out.reshape(x.shape[0], out.shape[-1])


def masked_network(in_degrees, out_degrees, hidden_features, context_features=0):
    """A ReLU MLP whose output ``j`` sees only inputs of degree below ``out_degrees[j]`` (and the context).

    Inputs of degree ``d`` (1 to ``D``) feed hidden units of degree at least
    ``d``; an output of degree ``d`` sees hidden units of degree below ``d``.
    Hidden unit ``k`` has degree ``k % max(D - 1, 1) + 1``; with a context
    (inputs of degree 0, placed first) the hidden degrees start at 0
    (``k % D``): units of degree 0 see the context alone and feed every
    output, so the first input in the order (and a single one) is
    conditioned too. The last layer starts at zero.
    """
    n_degrees = int(max(in_degrees.max(), out_degrees.max()))
    degrees = [torch.cat([torch.zeros(context_features, dtype=in_degrees.dtype), in_degrees])]
    for width in hidden_features:
        if context_features:
            degrees.append(torch.arange(width) % n_degrees)
        else:
            degrees.append(torch.arange(width) % max(n_degrees - 1, 1) + 1)
    masks = [(d_out[:, None] >= d_in[None, :]) for d_in, d_out in zip(degrees[:-1], degrees[1:])]
    masks.append(out_degrees[:, None] > degrees[-1][None, :])
    layers = []
    for i, mask in enumerate(masks):
        layers.append(MaskedLinear(mask.shape[1], mask.shape[0], mask))
        if i < len(masks) - 1:
            layers.append(nn.ReLU())
    net = nn.Sequential(*layers)
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net


class MADE(nn.Module):
    """Masked autoencoder: ``n_params`` outputs per feature, autoregressive.

    Output ``[:, p, i]`` depends only on inputs ``j`` with ``order[j] < order[i]``
    and on the context, which feeds every hidden unit.

    Parameters
    ----------
    n_features : int
        Number of input features ``D``.
    n_params : int
        Number of outputs per feature.
    hidden_features : tuple of int
        Widths of the hidden layers (at least one).
    order : tensor of shape (D,), default=None
        Position of each feature in the autoregressive order; natural if None.
    context_features : int, default=0
        Width of the conditioning input (0: unconditional).
    """

    def __init__(self, n_features, n_params, hidden_features=(64, 64), order=None, context_features=0):
        super().__init__()
        order = torch.arange(n_features) if order is None else torch.as_tensor(order)
        self.register_buffer("order", order.clone())
        self.n_features, self.n_params, self.context_features = n_features, n_params, context_features
        in_degrees = order + 1
        self.net = masked_network(
            in_degrees, in_degrees.repeat(n_params), tuple(hidden_features), context_features
        )

    def forward(self, x, context=None):
        h = soft_clamp(x, INPUT_BOUND)
        if self.context_features:
            h = torch.cat([context, h], dim=1)
        return self.net(h).reshape(x.shape[0], self.n_params, self.n_features)


class MaskedAutoregressive(Transform):
    """One autoregressive layer: ``z_i = f(x_i; theta_i(x_<i, context))`` for a one-dimensional ``f``.

    The forward (density) direction takes one pass; the inverse (sampling)
    direction takes ``D`` sequential passes.

    Parameters
    ----------
    n_features : int
        Number of features.
    hidden_features : tuple of int, default=(64, 64)
        Widths of the MADE's hidden layers.
    order : tensor of shape (n_features,), default=None
        Autoregressive order (natural if None).
    univariate : torch.nn.Module, default=None
        The elementwise map and its parameter count (see
        :mod:`skflow.transforms.univariate`); None is :class:`Affine` (MAF).
        :class:`~skflow.transforms.splines.RationalQuadraticSpline` gives an
        autoregressive neural spline flow.
    context_features : int, default=0
        Width of the conditioning input.
    """

    def __init__(self, n_features, hidden_features=(64, 64), order=None, univariate=None, context_features=0):
        super().__init__()
        self.univariate = Affine() if univariate is None else univariate
        self.made = MADE(n_features, self.univariate.n_params, hidden_features, order, context_features)

    def forward(self, x, context=None):
        z, ladj = self.forward_terms(x, context)
        return z, ladj.sum(dim=1)

    def forward_terms(self, x, context=None):
        """``(z, log|dz_i/dx_i|)`` with the log-derivatives per feature, ``(n, n_features)``."""
        # parameters in x's precision (a no-op unless the MADE ran under bf16 autocast)
        return self.univariate(x, self.made(x, context).to(x.dtype))

    def inverse(self, z, context=None):
        x = torch.zeros_like(z)
        for _ in range(z.shape[1]):
            x, ladj = self.univariate.inverse(z, self.made(x, context))
        return x, ladj.sum(dim=1)


class MaskedAffineAutoregressive(MaskedAutoregressive):
    """One MAF layer: ``z_i = (x_i - mu_i) * exp(-alpha_i)`` with ``mu_i, alpha_i`` functions of ``x_<i``.

    A :class:`MaskedAutoregressive` layer with the :class:`Affine` map whose
    log-scales are soft-clamped to ``(-max_log_scale, max_log_scale)``.
    """

    def __init__(
        self, n_features, hidden_features=(64, 64), order=None, max_log_scale=3.0, context_features=0
    ):
        super().__init__(n_features, hidden_features, order, Affine(max_log_scale), context_features)


def reversing_order(n_features, k):
    """Autoregressive order of layer ``k`` in a stack: natural for even ``k``, reversed for odd.

    Reversing between layers lets every feature condition on every other one
    somewhere in the stack (Papamakarios et al. 2017).
    """
    order = torch.arange(n_features)
    return order if k % 2 == 0 else order.flip(0)
