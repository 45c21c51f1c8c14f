"""Transformer autoregressive flows (Zhai et al. 2024, "Normalizing Flows are
Capable Generative Models").

Data are a sequence of ``N`` tokens of ``D`` features (image patches, or
groups of tabular features). Each :class:`TarFlowBlock` is a causal
transformer whose output at token ``i`` depends only on tokens ``< i`` and
gives an affine map ``z_i = (x_i - mu_i) * exp(-alpha_i)``. Blocks alternate
the direction of the autoregression. Sampling inverts one token at a time;
:func:`kv_cache` keeps the attention keys and values of the tokens already
produced so each step only processes the new token.

A block's affine map is diagonal within a token, so on its own a stack of
blocks never mixes the ``D`` features of one token (the pixels of a patch).
:class:`TokenMixing`, an invertible ``D x D`` linear map shared by all
tokens (Glow's 1x1 convolution on the patch features), can be put before
every block for that.
"""

import math
from contextlib import nullcontext

import torch
from torch import nn

from ._attention import CausalLayer, CausalSelfAttention, FeedForward, kv_cache
from ._base import Transform, soft_clamp
from .image import Logit

__all__ = ["CausalSelfAttention", "FeedForward", "TarFlow", "TarFlowBlock", "TokenMixing", "kv_cache"]

_LOG_2PI = math.log(2 * math.pi)


class TarFlowBlock(Transform):
    """One autoregressive affine flow step parametrised by a causal transformer.

    Token ``i`` is mapped to ``z_i = (x_i - mu_i) * exp(-alpha_i)`` where
    ``mu_i, alpha_i`` come from the transformer's output at position ``i``,
    whose input sequence is ``(start, x_0, ..., x_{N-2})`` (shifted by one),
    so ``mu_i, alpha_i`` depend on ``x_<i`` only. The output projection
    starts at zero, so a new block is the identity map.

    Parameters
    ----------
    n_tokens : int
        Sequence length ``N``.
    token_features : int
        Features per token ``D``.
    channels : int, default=64
        Transformer width.
    n_layers : int, default=2
        Transformer layers.
    n_heads : int, default=4
        Attention heads.
    n_classes : int, default=0
        Number of classes to condition on (0: unconditional). Class index
        ``n_classes`` is the null class of classifier-free guidance.
    reverse : bool, default=False
        Run the autoregression from the last token to the first.
    max_log_scale : float, default=3.0
        The log-scales ``alpha`` are soft-clamped to this bound.
    """

    def __init__(
        self,
        n_tokens,
        token_features,
        channels=64,
        n_layers=2,
        n_heads=4,
        n_classes=0,
        reverse=False,
        max_log_scale=3.0,
    ):
        super().__init__()
        self.n_tokens, self.n_classes, self.reverse, self.max_log_scale = (
            n_tokens,
            n_classes,
            reverse,
            max_log_scale,
        )
        self.in_proj = nn.Linear(token_features, channels)
        self.start = nn.Parameter(0.02 * torch.randn(channels))
        self.position = nn.Parameter(0.02 * torch.randn(n_tokens, channels))
        self.class_embedding = nn.Embedding(n_classes + 1, channels) if n_classes else None
        if self.class_embedding is not None:
            nn.init.normal_(self.class_embedding.weight, std=0.02)
        self.layers = nn.ModuleList(CausalLayer(channels, n_heads) for _ in range(n_layers))
        self.norm = nn.LayerNorm(channels)
        self.out_proj = nn.Linear(channels, 2 * token_features)
        nn.init.zeros_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def _labels(self, y, n, device):
        """Class indices; None means the null class."""
        if self.class_embedding is None:
            return None
        if y is None:
            return torch.full((n,), self.n_classes, dtype=torch.long, device=device)
        return y.long()

    def _embed(self, tokens, offset, labels, with_start):
        """Transformer input for positions ``offset, offset + 1, ...``."""
        h = self.in_proj(tokens)
        if with_start:
            h = torch.cat([self.start.expand(len(h), 1, -1), h], dim=1)
        h = h + self.position[offset : offset + h.shape[1]]
        if labels is not None:
            h = h + self.class_embedding(labels)[:, None]
        return h

    def _shift_log_scale(self, h):
        for layer in self.layers:
            h = layer(h)
        mu, raw = self.out_proj(self.norm(h)).chunk(2, dim=-1)
        return mu, soft_clamp(raw, self.max_log_scale)

    def _orient(self, x):
        return x.flip(1) if self.reverse else x

    def forward(self, x, y=None):
        """Map tokens ``(n, N, D)`` to latents; return ``(z, log|det dz/dx|)``."""
        x = self._orient(x)
        labels = self._labels(y, len(x), x.device)
        mu, alpha = self._shift_log_scale(self._embed(x[:, :-1], 0, labels, with_start=True))
        z = (x - mu) * torch.exp(-alpha)
        return self._orient(z), -alpha.sum(dim=(1, 2))

    def inverse(self, z, y=None, guidance=0.0, cache=True):
        """Map latents to tokens, one token at a time; return ``(x, log|det dx/dz|)``.

        Parameters
        ----------
        z : tensor of shape (n, N, D)
        y : long tensor of shape (n,), default=None
            Classes (None: the null class).
        guidance : float, default=0.0
            Classifier-free guidance weight ``w``: shifts and log-scales become
            ``a + w * (a - a_null)``. Needs a class-conditional block.
        cache : bool, default=True
            Reuse attention keys and values (same result, faster).
        """
        z = self._orient(z)
        n = len(z)
        labels = self._labels(y, n, z.device)
        guided = guidance != 0 and labels is not None
        if guided:
            labels = torch.cat([labels, self._labels(None, n, z.device)])
        tokens, ladj = [], z.new_zeros(n)
        with kv_cache(self) if cache else nullcontext():
            for i in range(self.n_tokens):
                if cache:
                    previous = tokens[-1][:, None] if tokens else z[:, :0]
                    inputs, offset, with_start = previous, i, i == 0
                else:
                    inputs = torch.stack(tokens, dim=1) if tokens else z[:, :0]
                    offset, with_start = 0, True
                if guided:
                    inputs = torch.cat([inputs, inputs])
                mu, alpha = self._shift_log_scale(self._embed(inputs, offset, labels, with_start))
                mu, alpha = mu[:, -1], alpha[:, -1]
                if guided:
                    (mu, mu_null), (alpha, alpha_null) = mu.chunk(2), alpha.chunk(2)
                    mu = mu + guidance * (mu - mu_null)
                    alpha = alpha + guidance * (alpha - alpha_null)
                tokens.append(z[:, i] * torch.exp(alpha) + mu)
                ladj = ladj + alpha.sum(dim=-1)
        return self._orient(torch.stack(tokens, dim=1)), ladj


class TokenMixing(Transform):
    """An invertible affine map of the token features, the same for every token.

    ``z_i = W x_i + b`` with ``W = L U`` (``L`` unit lower triangular, ``U``
    upper triangular with diagonal ``exp(log_s)``), so the log-determinant
    is exactly ``N * sum(log_s)`` for ``N`` tokens. Starts as the identity.
    Its diagonal and ``b`` make it also a per-feature act-norm.

    Parameters
    ----------
    token_features : int
        Features per token ``D``.
    """

    def __init__(self, token_features):
        super().__init__()
        self.lower = nn.Parameter(torch.zeros(token_features, token_features))
        self.upper = nn.Parameter(torch.zeros(token_features, token_features))
        self.log_s = nn.Parameter(torch.zeros(token_features))
        self.bias = nn.Parameter(torch.zeros(token_features))

    def _factors(self):
        eye = torch.eye(len(self.log_s), dtype=self.log_s.dtype, device=self.log_s.device)
        lower = self.lower.tril(-1) + eye
        upper = self.upper.triu(1) + torch.diag(torch.exp(self.log_s))
        return lower, upper

    def _ladj(self, x):
        return (x.shape[1] * self.log_s.sum()).expand(len(x))

    def forward(self, x):
        """Tokens ``(n, N, D)`` to ``(z, log|det dz/dx|)``."""
        lower, upper = self._factors()
        return x @ (lower @ upper).T + self.bias, self._ladj(x)

    def inverse(self, z):
        """Undo :meth:`forward` by two triangular solves; return ``(x, log|det dx/dz|)``."""
        lower, upper = self._factors()
        rows = (z - self.bias).reshape(-1, z.shape[-1]).T
        y = torch.linalg.solve_triangular(lower, rows, upper=False, unitriangular=True)
        x = torch.linalg.solve_triangular(upper, y, upper=True)
        return x.T.reshape(z.shape), -self._ladj(z)


def _tokenize(x, image_shape, patch_size):
    """Flat rows ``(n, F)`` to tokens ``(n, N, D)``: patches of images, groups of features."""
    n = len(x)
    if image_shape is None:
        return x.reshape(n, -1, patch_size)
    c, h, w = image_shape
    p = patch_size
    x = x.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(n, (h // p) * (w // p), c * p * p)


def _untokenize(tokens, image_shape, patch_size):
    n = len(tokens)
    if image_shape is None:
        return tokens.reshape(n, -1)
    c, h, w = image_shape
    p = patch_size
    x = tokens.reshape(n, h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(n, -1)


class TarFlow(nn.Module):
    """TarFlow: ``n_blocks`` :class:`TarFlowBlock` and a standard normal base.

    Takes flat rows of ``n_features``; with ``image_shape=(C, H, W)`` the rows
    are images cut into ``patch_size`` x ``patch_size`` patches (tokens of
    ``C * patch_size**2`` features), otherwise consecutive groups of
    ``patch_size`` features form a token.

    Parameters
    ----------
    n_features : int
        Row length (``C * H * W`` for images).
    image_shape : tuple of int (C, H, W), default=None
        Image layout of a row; None for tabular rows.
    patch_size : int, default=1
        Patch side (images) or features per token (tabular); must divide
        ``H`` and ``W`` (images) or ``n_features`` (tabular).
    channels, n_layers, n_heads, n_classes, max_log_scale
        As in :class:`TarFlowBlock`.
    n_blocks : int, default=4
        Flow blocks; every other one runs in the reverse order.
    mixing : bool, default=False
        Put a :class:`TokenMixing` before every block, so that the features
        within a token are mixed (a fresh flow is still the identity).
    logit_alpha : float or None, default=None
        Rows are pixels in ``[-1, 1]``, modelled in logit space:
        ``logit(alpha + (1 - 2 alpha) (x + 1) / 2)`` (Jacobian included).
        None: the flow sees the rows as they are.

    Examples
    --------
    >>> import torch
    >>> flow = TarFlow(6, patch_size=2, channels=16, n_blocks=2, n_layers=1, n_heads=2)
    >>> flow.log_prob(torch.randn(3, 6)).shape
    torch.Size([3])
    >>> flow.sample(4).shape
    torch.Size([4, 6])
    """

    def __init__(
        self,
        n_features,
        image_shape=None,
        patch_size=1,
        channels=64,
        n_blocks=4,
        n_layers=2,
        n_heads=4,
        n_classes=0,
        max_log_scale=3.0,
        mixing=False,
        logit_alpha=None,
    ):
        super().__init__()
        self.n_features, self.image_shape, self.patch_size, self.n_classes = (
            n_features,
            image_shape,
            patch_size,
            n_classes,
        )
        if image_shape is None:
            divisible = n_features % patch_size == 0
        else:
            divisible = image_shape[1] % patch_size == 0 and image_shape[2] % patch_size == 0
        if not divisible:
            raise ValueError(f"patch_size={patch_size} does not divide the data's shape.")
        token_features = patch_size if image_shape is None else image_shape[0] * patch_size**2
        n_tokens = n_features // token_features
        self.blocks = nn.ModuleList(
            TarFlowBlock(
                n_tokens, token_features, channels, n_layers, n_heads, n_classes, k % 2 == 1, max_log_scale
            )
            for k in range(n_blocks)
        )
        self.mixings = nn.ModuleList(TokenMixing(token_features) for _ in range(n_blocks)) if mixing else None
        self.logit = None if logit_alpha is None else Logit(logit_alpha)

    def _steps(self):
        """``(mixing or None, block)`` pairs in the data-to-latent order."""
        return zip(self.mixings or [None] * len(self.blocks), self.blocks)

    def transform(self, x, y=None):
        """Flat rows to latent tokens; return ``(z, log|det dz/dx|)``."""
        ladj = x.new_zeros(len(x))
        if self.logit is not None:
            x, ladj = self.logit((x + 1) / 2)
            ladj = ladj - x.shape[1] * math.log(2.0)
        z = _tokenize(x, self.image_shape, self.patch_size)
        for mixing, block in self._steps():
            if mixing is not None:
                z, step = mixing(z)
                ladj = ladj + step
            z, step = block(z, y)
            ladj = ladj + step
        return z, ladj

    def inverse(self, z, y=None, guidance=0.0, cache=True):
        """Latent tokens to flat rows; return ``(x, log|det dx/dz|)``."""
        ladj = z.new_zeros(len(z))
        for mixing, block in reversed(list(self._steps())):
            z, step = block.inverse(z, y, guidance, cache)
            ladj = ladj + step
            if mixing is not None:
                z, step = mixing.inverse(z)
                ladj = ladj + step
        x = _untokenize(z, self.image_shape, self.patch_size)
        if self.logit is not None:
            x, step = self.logit.inverse(x)
            x, ladj = 2 * x - 1, ladj + step + x.shape[1] * math.log(2.0)
        return x, ladj

    def log_prob(self, x, y=None):
        """``log p(x | y)`` of each row (``y=None``: unconditional / null class)."""
        z, ladj = self.transform(x, y)
        return (-0.5 * z**2 - 0.5 * _LOG_2PI).sum(dim=(1, 2)) + ladj

    def forward(self, x, y=None):
        return self.log_prob(x, y)

    def sample(self, n_samples, generator=None, y=None, guidance=0.0, cache=True):
        """Draw ``n_samples`` rows; ``y`` and ``guidance`` as in :meth:`TarFlowBlock.inverse`."""
        anchor = self.blocks[0].start
        shape = _tokenize(anchor.new_zeros(1, self.n_features), self.image_shape, self.patch_size).shape[1:]
        z = torch.randn(n_samples, *shape, generator=generator, device=anchor.device, dtype=anchor.dtype)
        return self.inverse(z, y, guidance, cache)[0]
