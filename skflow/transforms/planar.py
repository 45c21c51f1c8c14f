"""Planar and radial flows (Rezende and Mohamed 2015), for variational inference.

Both maps are defined in the sampling direction, noise ``z`` to data ``x``,
and have a closed-form log-determinant there but no closed-form inverse. In
skflow's convention (``forward``: data to latent) they therefore implement
:meth:`inverse` only; :meth:`forward` raises ``NotImplementedError``. A flow
built from them can draw reparameterised samples with their log-densities
(:meth:`skflow.models.flow.Flow.rsample_and_log_prob`), which is all that reverse-KL
fitting needs, but cannot evaluate its density at an arbitrary point.

Both layers start as the identity map and keep their invertibility
constraints by construction, whatever the values of their raw parameters.

References
----------
Rezende and Mohamed (2015). Variational Inference with Normalizing Flows. ICML.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from .core import Transform

__all__ = ["Planar", "Radial"]

#: softplus(_SOFTPLUS_ONE) == 1: the ``u`` that makes a fresh planar layer the identity.
_SOFTPLUS_ONE = math.log(math.e - 1.0)


def _log_positive(x):
    """``log(x)`` for ``x >= 0`` that stays finite where ``x`` underflows to 0."""
    return torch.log(x.clamp_min(torch.finfo(x.dtype).tiny))


def _no_inverse(name):
    return NotImplementedError(
        f"{name} has no closed-form inverse: it maps noise to data (`inverse`) only. "
        "A flow of such layers can sample with log-densities (reverse-KL / variational "
        "fitting) but cannot evaluate its density at arbitrary points; use an "
        "'iaf', 'maf' or 'realnvp' flow for that."
    )


class Planar(Transform):
    """Planar layer ``x = z + u_hat * tanh(w^T z + b)``, noise to data only.

    ``u_hat = u + (m(w^T u) - w^T u) w / ||w||^2`` with
    ``m(a) = -1 + softplus(a)``, so ``w^T u_hat > -1`` and the map is
    invertible (Rezende and Mohamed 2015, appendix A.1). Its log-determinant is
    ``log|1 + u_hat^T w tanh'(w^T z + b)|``.

    Parameters
    ----------
    n_features : int
        Dimension of ``z``, ``w`` and ``u``.

    Examples
    --------
    >>> import torch
    >>> layer = Planar(3)
    >>> x, ladj = layer.inverse(torch.randn(4, 3))
    >>> x.shape, ladj.shape
    (torch.Size([4, 3]), torch.Size([4]))
    """

    def __init__(self, n_features):
        super().__init__()
        w = torch.randn(n_features) / math.sqrt(n_features)
        self.w = nn.Parameter(w)
        # With u parallel to w and w^T u = softplus^-1(1), u_hat is zero: identity at init.
        self.u = nn.Parameter(_SOFTPLUS_ONE * w / w.dot(w))
        self.b = nn.Parameter(torch.zeros(()))

    def u_hat(self):
        """The constrained direction ``u_hat`` (``w^T u_hat > -1``)."""
        wu = self.w.dot(self.u)
        return self.u + (F.softplus(wu) - 1.0 - wu) * self.w / self.w.dot(self.w)

    def forward(self, x, context=None):
        raise _no_inverse("Planar")

    def inverse(self, z, context=None):
        u_hat = self.u_hat()
        h = torch.tanh(z @ self.w + self.b)
        x = z + h[:, None] * u_hat
        det = 1.0 + (1.0 - h**2) * self.w.dot(u_hat)
        return x, _log_positive(det.abs())


class Radial(Transform):
    """Radial layer ``x = z + beta (z - z0) / (alpha + ||z - z0||)``, noise to data only.

    ``alpha = softplus(a) > 0`` and ``beta = -alpha + softplus(c) > -alpha``,
    which keeps the map invertible (Rezende and Mohamed 2015, appendix A.2).
    With ``h = 1 / (alpha + r)`` and ``r = ||z - z0||`` its log-determinant is
    ``(d - 1) log(1 + beta h) + log(1 + beta h - beta h^2 r)``.

    Parameters
    ----------
    n_features : int
        The dimension ``d``.

    Examples
    --------
    >>> import torch
    >>> z = torch.randn(4, 2)
    >>> x, ladj = Radial(2).inverse(z)
    >>> bool(torch.allclose(ladj, torch.zeros(4)))  # identity at init
    True
    """

    def __init__(self, n_features):
        super().__init__()
        self.z0 = nn.Parameter(torch.randn(n_features))
        # a = c = 0 gives alpha = log 2 and beta = 0: identity at init.
        self.a = nn.Parameter(torch.zeros(()))
        self.c = nn.Parameter(torch.zeros(()))

    def alpha_beta(self):
        """The constrained ``(alpha, beta)`` with ``alpha > 0`` and ``beta > -alpha``."""
        alpha = F.softplus(self.a)
        return alpha, F.softplus(self.c) - alpha

    def forward(self, x, context=None):
        raise _no_inverse("Radial")

    def inverse(self, z, context=None):
        alpha, beta = self.alpha_beta()
        diff = z - self.z0
        r = diff.norm(dim=1)
        h = 1.0 / (alpha + r)
        x = z + (beta * h)[:, None] * diff
        ladj = (z.shape[1] - 1) * _log_positive(1.0 + beta * h) + _log_positive(
            1.0 + beta * h - beta * h**2 * r
        )
        return x, ladj
