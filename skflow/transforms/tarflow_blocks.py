"""Transformer autoregressive flows (Zhai et al. 2024, "Normalizing Flows are
Capable Generative Models").

Data are a sequence of ``N`` tokens of ``D`` features (image patches, or
groups of tabular features; :class:`Patchify`). Each :class:`TarFlowBlock` is
a causal transformer whose output at token ``i`` depends only on tokens
``< i`` (and the context) and gives an affine map
``z_i = (x_i - mu_i) * exp(-alpha_i)``. Blocks alternate the direction of the
autoregression. Sampling inverts one token at a time; :func:`kv_cache` keeps
the attention keys and values of the tokens already produced so each step
only processes the new token.

A block's affine map is diagonal within a token, so on its own a stack of
blocks never mixes the ``D`` features of one token (the pixels of a patch).
An :class:`~skflow.transforms.linear.LULinear` map along the token features
(Glow's 1x1 convolution on the patch features), shared by all tokens, can be
put before every block for that (``mixing=True`` in :func:`tarflow`).

The context (one-hot class labels for a class-conditional model) enters each
block as a learned embedding added to every position; an all-zero context is
the null class of classifier-free guidance (:func:`guided`).
"""

from contextlib import contextmanager, nullcontext

import torch
from torch import nn

from .attention import CausalLayer, kv_cache
from .core import Compose, Transform, soft_clamp
from .linear import LULinear

__all__ = ["Patchify", "TarFlowBlock", "guided", "kv_cache", "tarflow"]


@contextmanager
def guided(module, guidance):
    """Sample with classifier-free guidance weight ``guidance`` inside ``module``.

    Every :class:`TarFlowBlock`'s inverse then uses ``a + w * (a - a_null)``
    for its shifts and log-scales ``a``, ``a_null`` being those under the
    all-zero (null) context. Restored on exit, also on an exception.
    """
    blocks = [m for m in module.modules() if isinstance(m, TarFlowBlock)]
    for block in blocks:
        block.guidance = float(guidance)
    try:
        yield module
    finally:
        for block in blocks:
            block.guidance = 0.0


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
    context_features : int, default=0
        Width of the context (0: unconditional). A one-hot class context
        gives one learned embedding per class; the all-zero context is the
        null class.
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
        context_features=0,
        reverse=False,
        max_log_scale=3.0,
    ):
        super().__init__()
        self.n_tokens, self.reverse, self.max_log_scale = n_tokens, reverse, max_log_scale
        self.guidance = 0.0  # set by :func:`guided`
        self.use_cache = True
        self.in_proj = nn.Linear(token_features, channels)
        self.start = nn.Parameter(0.02 * torch.randn(channels))
        self.position = nn.Parameter(0.02 * torch.randn(n_tokens, channels))
        self.context_embedding = nn.Linear(context_features, channels) if context_features else None
        if self.context_embedding is not None:
            nn.init.normal_(self.context_embedding.weight, std=0.02)
            nn.init.normal_(self.context_embedding.bias, std=0.02)
        self.layers = nn.ModuleList(CausalLayer(channels, n_heads) for _ in range(n_layers))
        self.norm = nn.LayerNorm(channels)
        self.out_proj = nn.Linear(channels, 2 * token_features)
        nn.init.zeros_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def _context(self, context, n, like):
        """The context a block sees: None when unconditional, zeros (null class) when not given."""
        if self.context_embedding is None:
            return None
        if context is None:
            return like.new_zeros(n, self.context_embedding.in_features)
        return context

    def _embed(self, tokens, offset, context, with_start):
        """Transformer input for positions ``offset, offset + 1, ...``."""
        h = self.in_proj(tokens)
        if with_start:
            h = torch.cat([self.start.expand(len(h), 1, -1), h], dim=1)
        h = h + self.position[offset : offset + h.shape[1]]
        if context is not None:
            h = h + self.context_embedding(context)[:, None]
        return h

    def _shift_log_scale(self, h):
        dtype = h.dtype
        for layer in self.layers:
            h = layer(h)
        # shift and log-scale in the tokens' precision, also under bf16 autocast
        mu, raw = self.out_proj(self.norm(h)).to(dtype).chunk(2, dim=-1)
        return mu, soft_clamp(raw, self.max_log_scale)

    def _orient(self, x):
        return x.flip(1) if self.reverse else x

    def forward(self, x, context=None):
        """Map tokens ``(n, N, D)`` to latents; return ``(z, log|det dz/dx|)``."""
        x = self._orient(x)
        context = self._context(context, len(x), x)
        mu, alpha = self._shift_log_scale(self._embed(x[:, :-1], 0, context, with_start=True))
        z = (x - mu) * torch.exp(-alpha)
        return self._orient(z), -alpha.sum(dim=(1, 2))

    def inverse(self, z, context=None):
        """Map latents to tokens, one token at a time; return ``(x, log|det dx/dz|)``.

        Uses the key/value cache unless ``use_cache`` is False (same result,
        slower), and classifier-free guidance when :func:`guided` set a weight.
        """
        z = self._orient(z)
        n = len(z)
        context = self._context(context, n, z)
        guided_step = self.guidance != 0 and context is not None
        if guided_step:
            context = torch.cat([context, torch.zeros_like(context)])
        tokens, ladj = [], z.new_zeros(n)
        with kv_cache(self) if self.use_cache else nullcontext():
            for i in range(self.n_tokens):
                if self.use_cache:
                    previous = tokens[-1][:, None] if tokens else z[:, :0]
                    inputs, offset, with_start = previous, i, i == 0
                else:
                    inputs = torch.stack(tokens, dim=1) if tokens else z[:, :0]
                    offset, with_start = 0, True
                if guided_step:
                    inputs = torch.cat([inputs, inputs])
                mu, alpha = self._shift_log_scale(self._embed(inputs, offset, context, with_start))
                mu, alpha = mu[:, -1], alpha[:, -1]
                if guided_step:
                    (mu, mu_null), (alpha, alpha_null) = mu.chunk(2), alpha.chunk(2)
                    mu = mu + self.guidance * (mu - mu_null)
                    alpha = alpha + self.guidance * (alpha - alpha_null)
                tokens.append(z[:, i] * torch.exp(alpha) + mu)
                ladj = ladj + alpha.sum(dim=-1)
        return self._orient(torch.stack(tokens, dim=1)), ladj


class Patchify(Transform):
    """Flat rows ``(n, F)`` to tokens ``(n, N, D)`` and back; volume preserving.

    Images ``(C, H, W)`` become ``patch_size`` x ``patch_size`` patches
    (``D = C * patch_size**2``); tabular rows become groups of ``patch_size``
    consecutive features.

    Parameters
    ----------
    n_features : int
        Row length (``C * H * W`` for images).
    image_shape : tuple of int (C, H, W), default=None
        None for tabular rows.
    patch_size : int, default=1
        Must divide ``H`` and ``W`` (images) or ``n_features`` (tabular).
    """

    def __init__(self, n_features, image_shape=None, patch_size=1):
        super().__init__()
        if image_shape is None:
            divisible = n_features % patch_size == 0
        else:
            divisible = image_shape[1] % patch_size == 0 and image_shape[2] % patch_size == 0
        if not divisible:
            raise ValueError(f"patch_size={patch_size} does not divide the data's shape.")
        self.image_shape, self.patch_size = image_shape, patch_size
        self.token_features = patch_size if image_shape is None else image_shape[0] * patch_size**2
        self.n_tokens = n_features // self.token_features

    def forward(self, x, context=None):
        n, p = len(x), self.patch_size
        if self.image_shape is None:
            return x.reshape(n, -1, p), x.new_zeros(n)
        c, h, w = self.image_shape
        x = x.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(n, self.n_tokens, self.token_features), x.new_zeros(n)

    def inverse(self, z, context=None):
        n, p = len(z), self.patch_size
        if self.image_shape is None:
            return z.reshape(n, -1), z.new_zeros(n)
        c, h, w = self.image_shape
        x = z.reshape(n, h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(n, -1), z.new_zeros(n)


def tarflow(
    n_features,
    image_shape=None,
    patch_size=1,
    channels=64,
    n_blocks=4,
    n_layers=2,
    n_heads=4,
    context_features=0,
    max_log_scale=3.0,
    mixing=False,
):
    """TarFlow's transform: patchify, then ``n_blocks`` :class:`TarFlowBlock` (alternating direction).

    With ``mixing``, an :class:`~skflow.transforms.linear.LULinear` map of
    the token features (with a bias, starting at the identity) precedes every
    block. A fresh transform is a pure rearrangement of the input. Its output
    has shape ``(n, N, D)``; pair it with a standard normal over that shape.

    Examples
    --------
    >>> import torch
    >>> from skflow.models.distributions import StandardNormal
    >>> from skflow.models.flow import Flow
    >>> transform = tarflow(6, patch_size=2, channels=16, n_blocks=2, n_layers=1, n_heads=2)
    >>> flow = Flow(transform, StandardNormal(3, 2))
    >>> flow.log_prob(torch.randn(3, 6)).shape
    torch.Size([3])
    >>> flow.sample(4).shape
    torch.Size([4, 6])
    """
    patches = Patchify(n_features, image_shape, patch_size)
    shape = (patches.n_tokens, patches.token_features)
    transformer = (channels, n_layers, n_heads, context_features)
    steps = []
    for k in range(n_blocks):
        if mixing:
            steps.append(LULinear(patches.token_features, dim=-1, bias=True))
        steps.append(TarFlowBlock(*shape, *transformer, reverse=k % 2 == 1, max_log_scale=max_log_scale))
    return Compose(patches, *steps)
