"""Linear bijections: LU-parametrised mixing (Glow's 1x1 convolution, TarFlow's token
mixing), batch norm (MAF, RealNVP) and act-norm (Glow).

Each acts along one axis of the data (features of rows, channels of images,
features of tokens) and is the same at every other position, so its
log-determinant is the per-position one times the number of positions.
"""

import torch
from torch import nn

from .core import Transform

__all__ = ["ActNorm", "BatchNorm", "LULinear"]


def _positions(x, dim):
    """Number of positions at which a map along ``dim`` acts, per sample."""
    return x[0].numel() // x.shape[dim]


def _along_dim1(v, x):
    """A per-feature vector ``v`` shaped to broadcast along dimension 1 of ``x``."""
    return v.reshape(1, -1, *([1] * (x.dim() - 2)))


class LULinear(Transform):
    """``z = W x + b`` along axis ``dim``, with ``W = P L U`` (Kingma and Dhariwal 2018).

    ``P`` is a fixed permutation, ``L`` unit lower triangular and ``U`` upper
    triangular with diagonal ``sign * exp(log_s)``, so ``log|det W| = sum(log_s)``
    exactly and the inverse is two triangular solves.

    Parameters
    ----------
    n_features : int
        Size of axis ``dim``.
    dim : int, default=1
        Axis mixed: 1 for rows and image channels (Glow's invertible 1x1
        convolution), -1 for the features of tokens ``(n, N, D)`` (TarFlow's
        token mixing).
    init : {"identity", "rotation"}, default="identity"
        Start at the identity, or at a random rotation (drawn from the global
        torch generator, seeded by the estimators; Glow's initialisation).
    bias : bool, default=False
        Learn ``b`` (starts at zero).
    """

    def __init__(self, n_features, dim=1, init="identity", bias=False):
        super().__init__()
        self.dim = dim
        permutation = lower = upper = torch.eye(n_features)  # P = I; the strict triangles of L, U are 0
        sign, log_s = torch.ones(n_features), torch.zeros(n_features)
        if init == "rotation":
            q, _ = torch.linalg.qr(torch.randn(n_features, n_features, dtype=torch.float64))
            p, l_factor, u_factor = torch.linalg.lu(q)
            s = torch.diagonal(u_factor)
            permutation, lower, upper = p.float(), l_factor.float(), u_factor.float()
            sign, log_s = torch.sign(s).float(), torch.log(torch.abs(s)).float()
        self.register_buffer("permutation", permutation)
        self.register_buffer("sign", sign)
        self.lower = nn.Parameter(lower.tril(-1))
        self.upper = nn.Parameter(upper.triu(1))
        self.log_s = nn.Parameter(log_s)
        self.bias = nn.Parameter(torch.zeros(n_features)) if bias else None

    def _factors(self):
        eye = torch.eye(len(self.log_s), dtype=self.log_s.dtype, device=self.log_s.device)
        lower = self.lower.tril(-1) + eye
        upper = self.upper.triu(1) + torch.diag(self.sign * torch.exp(self.log_s))
        return lower, upper

    def weight(self):
        """The matrix ``W``."""
        lower, upper = self._factors()
        return self.permutation @ lower @ upper

    def _ladj(self, x):
        return (self.log_s.sum() * _positions(x, self.dim)).expand(x.shape[0])

    def forward(self, x, context=None):
        h = x.movedim(self.dim, -1) @ self.weight().T
        if self.bias is not None:
            h = h + self.bias
        return h.movedim(-1, self.dim), self._ladj(x)

    def inverse(self, z, context=None):
        h = z.movedim(self.dim, -1)
        if self.bias is not None:
            h = h - self.bias
        lower, upper = self._factors()
        rows = (h.reshape(-1, h.shape[-1]) @ self.permutation).T  # P^T (z - b), one column per position
        y = torch.linalg.solve_triangular(lower, rows, upper=False, unitriangular=True)
        x = torch.linalg.solve_triangular(upper, y, upper=True)
        return x.T.reshape(h.shape).movedim(-1, self.dim), -self._ladj(z)


class BatchNorm(Transform):
    """Batch normalisation as a flow layer (Dinh et al. 2017; Papamakarios et al. 2017).

    ``z = (x - m) / sqrt(v + eps) * exp(log_gamma) + beta``, with the batch's
    mean and variance in training mode and running averages in eval mode (where
    it is a fixed affine bijection), or in training on a batch of one value per
    feature (which has no variance). Features lie along dimension 1; statistics
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

    def _statistics(self, x):
        if not self.training or x.numel() < 2 * x.shape[1]:  # one value per feature has no variance
            return self.running_mean, self.running_var
        dims = [0, *range(2, x.dim())]
        mean, var = x.mean(dim=dims), x.var(dim=dims, unbiased=False)
        with torch.no_grad():
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var, self.momentum)
        return mean, var

    def _ladj(self, x, var):
        per_feature = self.log_gamma - 0.5 * torch.log(var + self.eps)
        return (per_feature.sum() * _positions(x, 1)).expand(x.shape[0])

    def forward(self, x, context=None):
        mean, var = self._statistics(x)
        v = lambda t: _along_dim1(t, x)
        z = (x - v(mean)) / torch.sqrt(v(var) + self.eps) * torch.exp(v(self.log_gamma)) + v(self.beta)
        return z, self._ladj(x, var)

    def inverse(self, z, context=None):
        mean, var = self.running_mean, self.running_var
        v = lambda t: _along_dim1(t, z)
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
        self._known_initialized = False  # mirrors the buffer, read without a device sync

    def _load_from_state_dict(self, *args, **kwargs):
        self._known_initialized = False  # re-read the loaded buffer on the next call
        super()._load_from_state_dict(*args, **kwargs)

    def _needs_init(self):
        if self._known_initialized:
            return False
        self._known_initialized = bool(self.initialized)  # one host sync, on the first call only
        return not self._known_initialized

    @torch.no_grad()
    def _initialize(self, x):
        dims = [0, *range(2, x.dim())]
        self.loc.copy_(x.mean(dim=dims))
        self.log_scale.copy_(torch.log(x.std(dim=dims, unbiased=False) + 1e-6))
        self.initialized.fill_(True)
        self._known_initialized = True

    def _ladj(self, x):
        return (-self.log_scale.sum() * _positions(x, 1)).expand(x.shape[0])

    def forward(self, x, context=None):
        if self.training and x.shape[0] > 1 and self._needs_init():
            self._initialize(x)
        z = (x - _along_dim1(self.loc, x)) * torch.exp(-_along_dim1(self.log_scale, x))
        return z, self._ladj(x)

    def inverse(self, z, context=None):
        x = z * torch.exp(_along_dim1(self.log_scale, z)) + _along_dim1(self.loc, z)
        return x, -self._ladj(z)
