"""Base distributions of flows, as torch modules with ``log_prob`` and ``sample``.

Every distribution here is over vectors of ``n_features`` (or any event shape
for :class:`StandardNormal`); ``log_prob(z, context=None)`` sums over the
event dimensions and returns shape ``(n_samples,)``, and
``sample(n_samples, context=None, generator=None)`` draws with a seeded
``torch.Generator``. Only :class:`MADEMixture` uses the context.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..transforms.autoregressive import MADE, masked_network
from ..transforms.core import soft_clamp, sum_except_batch

__all__ = ["DiagonalNormal", "GaussianMixture", "MADEMixture", "StandardNormal"]

_LOG_2PI = math.log(2 * math.pi)


def _normal_log_prob(x, loc, log_scale):
    return -0.5 * ((x - loc) * torch.exp(-log_scale)) ** 2 - log_scale - 0.5 * _LOG_2PI


class StandardNormal(nn.Module):
    """Standard normal ``N(0, I)`` over events of shape ``event_shape``."""

    def __init__(self, *event_shape):
        super().__init__()
        self.event_shape = tuple(event_shape)
        self.register_buffer("_anchor", torch.zeros(()))  # follows .to(device/dtype)

    def log_prob(self, z, context=None):
        return sum_except_batch(-0.5 * z**2 - 0.5 * _LOG_2PI)

    def log_prob_terms(self, z, context=None):
        """``log p(z_j | z_<j)`` per row and feature, ``(n, n_features)`` (they sum to ``log_prob``)."""
        return -0.5 * z**2 - 0.5 * _LOG_2PI

    def sample(self, n_samples, context=None, generator=None):
        a = self._anchor
        return torch.randn(n_samples, *self.event_shape, generator=generator, device=a.device, dtype=a.dtype)


class DiagonalNormal(StandardNormal):
    """Gaussian with learned mean and diagonal log-scale."""

    def __init__(self, n_features):
        super().__init__(n_features)
        self.loc = nn.Parameter(torch.zeros(n_features))
        self.log_scale = nn.Parameter(torch.zeros(n_features))

    def log_prob(self, z, context=None):
        return self.log_prob_terms(z, context).sum(dim=1)

    def log_prob_terms(self, z, context=None):
        return _normal_log_prob(z, self.loc, self.log_scale)

    def sample(self, n_samples, context=None, generator=None):
        return self.loc + torch.exp(self.log_scale) * super().sample(n_samples, generator=generator)


class GaussianMixture(StandardNormal):
    """Mixture of ``n_components`` diagonal Gaussians with learned parameters.

    Means start spread around the origin (drawn from the global torch RNG, so
    seed it for reproducibility), scales at one.
    """

    def __init__(self, n_features, n_components=10):
        super().__init__(n_features)
        self.logits = nn.Parameter(torch.zeros(n_components))
        self.loc = nn.Parameter(torch.randn(n_components, n_features))
        self.log_scale = nn.Parameter(torch.zeros(n_components, n_features))

    log_prob_terms = None  # a mixture over the whole vector does not factorise over features

    def log_prob(self, z, context=None):
        per_component = _normal_log_prob(z[:, None, :], self.loc, self.log_scale).sum(dim=2)
        return torch.logsumexp(per_component + torch.log_softmax(self.logits, 0), dim=1)

    def sample(self, n_samples, context=None, generator=None):
        index = torch.multinomial(torch.softmax(self.logits, 0), n_samples, True, generator=generator)
        eps = super().sample(n_samples, generator=generator)
        return self.loc[index] + torch.exp(self.log_scale[index]) * eps


class MADEMixture(StandardNormal):
    """Autoregressive mixture of Gaussians, ``p(x_i | x_<i)`` from a MADE (MADE MoG).

    Parameters
    ----------
    n_features : int
        Number of features.
    n_components : int, default=10
        Gaussian components per conditional.
    hidden_features : tuple of int, default=(64, 64)
        Hidden widths of the MADE.
    order : tensor of shape (n_features,), default=None
        Autoregressive order (natural if None).
    max_log_scale : float, default=3.0
        Bound on the components' log-scales.
    context_features : int, default=0
        Width of the context that the MADE also sees.
    """

    def __init__(
        self,
        n_features,
        n_components=10,
        hidden_features=(64, 64),
        order=None,
        max_log_scale=3.0,
        context_features=0,
    ):
        super().__init__(n_features)
        self.n_components = n_components
        self.made = MADE(n_features, 3 * n_components, hidden_features, order, context_features)
        self.max_log_scale = max_log_scale
        # Spread the components' initial means so they do not start identical.
        with torch.no_grad():
            spread = torch.linspace(-1.5, 1.5, n_components) if n_components > 1 else torch.zeros(1)
            bias = self.made.net[-1].bias.view(3, n_components, n_features)
            bias[1] = spread[:, None]

    def _mixture_params(self, x, context):
        h = self.made(x, context).view(x.shape[0], 3, self.n_components, -1)
        logits, loc, raw = h.unbind(dim=1)
        return torch.log_softmax(logits, dim=1), loc, soft_clamp(raw, self.max_log_scale)

    def log_prob(self, x, context=None):
        return self.log_prob_terms(x, context).sum(dim=1)

    def log_prob_terms(self, x, context=None):
        """``log p(x_i | x_<i)`` per row and feature (in the MADE's order), ``(n, n_features)``."""
        log_weights, loc, log_scale = self._mixture_params(x, context)
        per_component = _normal_log_prob(x[:, None, :], loc, log_scale) + log_weights
        return torch.logsumexp(per_component, dim=1)

    def sample(self, n_samples, context=None, generator=None):
        eps = super().sample(n_samples, generator=generator)
        uniform = torch.rand(eps.shape, generator=generator, device=eps.device, dtype=eps.dtype)
        x = torch.zeros_like(eps)
        for i in torch.argsort(self.made.order).tolist():
            log_weights, loc, log_scale = self._mixture_params(x, context)
            cdf = torch.cumsum(torch.exp(log_weights[:, :, i]), dim=1)
            k = torch.searchsorted(cdf, uniform[:, i : i + 1].contiguous()).clamp_max(self.n_components - 1)
            mu = loc[:, :, i].gather(1, k)[:, 0]
            sigma = torch.exp(log_scale[:, :, i].gather(1, k)[:, 0])
            x[:, i] = mu + sigma * eps[:, i]
        return x


class CategoricalMADE(nn.Module):
    """Autoregressive model of discrete columns: ``P(d) = prod_i P(d_i | d_<i, context)`` (exact).

    Each conditional is a softmax over the column's categories, its logits
    from one masked network that sees the one-hot codes of the earlier
    columns and the context. A share ``unseen`` of every conditional's mass
    is spread evenly over the ``K_i`` categories and one more outcome,
    "a category not seen in training" (code -1), so an unseen value gets the
    small probability ``unseen / (K_i + 1)`` instead of zero; the
    distribution over the ``K_i + 1`` outcomes sums to one exactly.

    Parameters
    ----------
    cardinalities : sequence of int
        Number of categories ``K_i`` of each column.
    hidden_features : tuple of int, default=(64, 64)
    context_features : int, default=0
    unseen : float, default=1e-3
    """

    def __init__(self, cardinalities, hidden_features=(64, 64), context_features=0, unseen=1e-3):
        super().__init__()
        self.cardinalities = [int(k) for k in cardinalities]
        self.context_features, self.unseen = context_features, unseen
        degrees = torch.repeat_interleave(
            torch.arange(1, len(self.cardinalities) + 1), torch.tensor(self.cardinalities)
        )
        self.net = masked_network(degrees, degrees, tuple(hidden_features), context_features)

    @torch.no_grad()
    def init_marginals(self, codes):
        """Start every conditional at its column's category frequencies in ``codes`` (smoothed by 1/2;
        NaN codes, missing cells, are left out).

        The first column's distribution is the output bias alone, which a
        zero start leaves near uniform for the few hundred steps that early
        stopping may allow on a small table.
        """
        codes = torch.as_tensor(codes, dtype=torch.float64)
        bias = self.net[-1].bias
        start = 0
        for i, k in enumerate(self.cardinalities):
            column = codes[:, i][~torch.isnan(codes[:, i])].long()  # missing cells left out
            counts = torch.bincount(column.clamp_min(0), minlength=k)[:k].to(bias.dtype) + 0.5
            bias[start : start + k] = torch.log(counts / counts.sum())
            start += k

    def one_hot(self, codes):
        """``(n, sum K_i)`` one-hot blocks of integer codes ``(n, D)``; code -1 (unseen) is all zeros."""
        blocks = [
            F.one_hot(c.clamp_min(0), k) * (c >= 0)[:, None] for c, k in zip(codes.T, self.cardinalities)
        ]
        return (
            torch.cat(blocks, dim=1).to(torch.get_default_dtype())
            if blocks
            else codes.new_zeros(len(codes), 0)
        )

    def _log_probs(self, codes, context):
        """Per column, log-probabilities ``(n, K_i)`` of the seen categories, smoothed."""
        h = self.one_hot(codes).to(self._dtype())
        if self.context_features:
            h = torch.cat([context, h], dim=1)
        logits = self.net(h).split(self.cardinalities, dim=1)
        return [
            torch.logaddexp(
                torch.log1p(torch.tensor(-self.unseen)) + F.log_softmax(lg, dim=1), self._floor(k)
            )
            for lg, k in zip(logits, self.cardinalities)
        ]

    def _floor(self, k):
        return torch.tensor(
            self.unseen / (k + 1), dtype=self._dtype(), device=self.net[0].weight.device
        ).log()

    def _dtype(self):
        return self.net[0].weight.dtype

    def log_prob(self, codes, context=None):
        """``log P(codes | context)`` per row; codes are integers, -1 for an unseen category."""
        codes = codes.long()
        total = codes.new_zeros(len(codes), dtype=self._dtype())
        for i, (log_p, k) in enumerate(zip(self._log_probs(codes, context), self.cardinalities)):
            code = codes[:, i]
            seen = log_p.gather(1, code.clamp_min(0)[:, None])[:, 0]
            total = total + torch.where(code >= 0, seen, self._floor(k))
        return total

    def sample(self, n_samples, context=None, generator=None):
        """Codes ``(n, D)`` drawn column by column from the seen categories (the unseen share is not drawn)."""
        device = self.net[0].weight.device
        codes = torch.zeros(n_samples, len(self.cardinalities), dtype=torch.long, device=device)
        for i in range(len(self.cardinalities)):
            probs = self._log_probs(codes, context)[i].exp()
            codes[:, i] = torch.multinomial(probs, 1, generator=generator)[:, 0]
        return codes
