"""Normalisation layers as bijections: batch norm (MAF, RealNVP) and act-norm (Glow)."""

import torch
from torch import nn

from ._base import Transform

__all__ = ["BatchNorm", "ActNorm"]


class BatchNorm(Transform):
    """Batch normalisation as a flow layer (Dinh et al. 2017; Papamakarios et al. 2017).

    ``z = (x - m) / sqrt(v + eps) * exp(log_gamma) + beta``, with the batch's
    mean and variance in training mode and running averages in eval mode (where
    it is a fixed affine bijection). Features lie along dimension 1; statistics
    are taken over every other dimension.

    Parameters
    ----------
    n_features : int
        Size of dimension 1.
    momentum : float, default=0.1
        Weight of the current batch in the running averages.
    eps : float, default=1e-5
        Added to the variance.
    """

    def __init__(self, n_features, momentum=0.1, eps=1e-5):
        super().__init__()
        self.log_gamma = nn.Parameter(torch.zeros(n_features))
        self.beta = nn.Parameter(torch.zeros(n_features))
        self.register_buffer("running_mean", torch.zeros(n_features))
        self.register_buffer("running_var", torch.ones(n_features))
        self.momentum, self.eps = momentum, eps

    def _view(self, x, v):
        return v.reshape(1, -1, *([1] * (x.dim() - 2)))

    def _statistics(self, x):
        if not self.training:
            return self.running_mean, self.running_var
        dims = [0, *range(2, x.dim())]
        mean, var = x.mean(dim=dims), x.var(dim=dims, unbiased=False)
        with torch.no_grad():
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var, self.momentum)
        return mean, var

    def _ladj(self, x, var):
        per_feature = self.log_gamma - 0.5 * torch.log(var + self.eps)
        n_positions = x[0, 0].numel()
        return (per_feature.sum() * n_positions).expand(x.shape[0])

    def forward(self, x):
        mean, var = self._statistics(x)
        v = lambda t: self._view(x, t)  # noqa: E731
        z = (x - v(mean)) / torch.sqrt(v(var) + self.eps) * torch.exp(v(self.log_gamma)) + v(self.beta)
        return z, self._ladj(x, var)

    def inverse(self, z):
        mean, var = self.running_mean, self.running_var
        v = lambda t: self._view(z, t)  # noqa: E731
        x = (z - v(self.beta)) * torch.exp(-v(self.log_gamma)) * torch.sqrt(v(var) + self.eps) + v(mean)
        return x, -self._ladj(z, var)


class ActNorm(Transform):
    """Act-norm (Kingma and Dhariwal 2018): a per-feature affine map.

    ``z = (x - loc) * exp(-log_scale)``. On the first forward call in training
    mode, ``loc`` and ``log_scale`` are set from the batch so that the output
    has zero mean and unit variance per feature (data-dependent init).

    Parameters
    ----------
    n_features : int
        Size of dimension 1 (features or channels).
    """

    def __init__(self, n_features):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(n_features))
        self.log_scale = nn.Parameter(torch.zeros(n_features))
        self.register_buffer("initialized", torch.tensor(False))

    def _view(self, x, v):
        return v.reshape(1, -1, *([1] * (x.dim() - 2)))

    @torch.no_grad()
    def _initialize(self, x):
        dims = [0, *range(2, x.dim())]
        self.loc.copy_(x.mean(dim=dims))
        self.log_scale.copy_(torch.log(x.std(dim=dims, unbiased=False) + 1e-6))
        self.initialized.fill_(True)

    def _ladj(self, x):
        return (-self.log_scale.sum() * x[0, 0].numel()).expand(x.shape[0])

    def forward(self, x):
        if self.training and not bool(self.initialized) and x.shape[0] > 1:
            self._initialize(x)
        z = (x - self._view(x, self.loc)) * torch.exp(-self._view(x, self.log_scale))
        return z, self._ladj(x)

    def inverse(self, z):
        x = z * torch.exp(self._view(z, self.log_scale)) + self._view(z, self.loc)
        return x, -self._ladj(z)
