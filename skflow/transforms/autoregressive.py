"""MADE and the masked affine autoregressive transform of MAF.

References: Germain et al. (2015), "MADE: Masked Autoencoder for Distribution
Estimation"; Papamakarios et al. (2017), "Masked Autoregressive Flow for
Density Estimation".
"""

import torch
from torch import nn
from torch.nn import functional as F

from ._base import Transform, soft_clamp

__all__ = ["MaskedLinear", "MADE", "MaskedAffineAutoregressive", "reversing_order"]

#: Conditioner inputs are squashed into this range, so shifts and log-scales
#: are bounded functions of the data and held-out extremes meet an affine map
#: with bounded slope (Gaussian-like tails) instead of an extrapolating MLP.
INPUT_BOUND = 6.0


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask."""

    def __init__(self, in_features, out_features, mask):
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x):
        return F.linear(x, self.weight * self.mask, self.bias)


def _made_masks(order, hidden_features, n_params):
    """Masks of a MADE with the given input ``order`` (a permutation rank).

    Input ``i`` has degree ``order[i] + 1``; hidden unit ``k`` of a layer of
    width ``h`` has degree ``k % max(D - 1, 1) + 1``; output ``(p, i)`` may see
    hidden units of degree strictly below the degree of input ``i``.
    """
    n_features = len(order)
    in_degrees = order + 1
    degrees = [in_degrees]
    for width in hidden_features:
        degrees.append(torch.arange(width) % max(n_features - 1, 1) + 1)
    masks = [(d_out[:, None] >= d_in[None, :]) for d_in, d_out in zip(degrees[:-1], degrees[1:])]
    out_degrees = in_degrees.repeat(n_params)
    masks.append(out_degrees[:, None] > degrees[-1][None, :])
    return masks


class MADE(nn.Module):
    """Masked autoencoder: ``n_params`` outputs per feature, autoregressive.

    Output ``[:, p, i]`` depends only on inputs ``j`` with ``order[j] < order[i]``.

    Parameters
    ----------
    n_features : int
        Number of input features ``D``.
    n_params : int
        Number of outputs per feature.
    hidden_features : tuple of int
        Widths of the hidden layers.
    order : tensor of shape (D,), default=None
        Position of each feature in the autoregressive order; natural if None.
    """

    def __init__(self, n_features, n_params, hidden_features=(64, 64), order=None):
        super().__init__()
        order = torch.arange(n_features) if order is None else torch.as_tensor(order)
        self.register_buffer("order", order.clone())
        self.n_features, self.n_params = n_features, n_params
        masks = _made_masks(order, tuple(hidden_features), n_params)
        widths = [n_features, *hidden_features, n_features * n_params]
        layers = []
        for i, mask in enumerate(masks):
            layers.append(MaskedLinear(widths[i], widths[i + 1], mask))
            if i < len(masks) - 1:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x):
        h = self.net(soft_clamp(x, INPUT_BOUND))
        return h.reshape(x.shape[0], self.n_params, self.n_features)


class MaskedAffineAutoregressive(Transform):
    """One MAF layer: ``z_i = (x_i - mu_i(x_<i)) * exp(-alpha_i(x_<i))``.

    The forward (density) direction takes one pass; the inverse (sampling)
    direction takes ``D`` sequential passes. Log-scales are soft-clamped to
    ``(-max_log_scale, max_log_scale)``.

    Parameters
    ----------
    n_features : int
        Number of features.
    hidden_features : tuple of int, default=(64, 64)
        Widths of the MADE's hidden layers.
    order : tensor of shape (n_features,), default=None
        Autoregressive order (natural if None).
    max_log_scale : float, default=3.0
        Bound on each log-scale.
    """

    def __init__(self, n_features, hidden_features=(64, 64), order=None, max_log_scale=3.0):
        super().__init__()
        self.made = MADE(n_features, 2, hidden_features, order)
        self.max_log_scale = max_log_scale

    def _shift_log_scale(self, x):
        shift, raw = self.made(x).unbind(dim=1)
        return shift, soft_clamp(raw, self.max_log_scale)

    def forward(self, x):
        shift, log_scale = self._shift_log_scale(x)
        return (x - shift) * torch.exp(-log_scale), -log_scale.sum(dim=1)

    def inverse(self, z):
        x = torch.zeros_like(z)
        for _ in range(z.shape[1]):
            shift, log_scale = self._shift_log_scale(x)
            x = z * torch.exp(log_scale) + shift
        return x, log_scale.sum(dim=1)


def reversing_order(n_features, k):
    """Autoregressive order of layer ``k`` in a stack: natural for even ``k``, reversed for odd.

    Reversing between layers lets every feature condition on every other one
    somewhere in the stack (Papamakarios et al. 2017).
    """
    order = torch.arange(n_features)
    return order if k % 2 == 0 else order.flip(0)
