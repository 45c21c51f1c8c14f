"""The causal transformer inside :class:`skflow.transforms.tarflow_blocks.TarFlowBlock`.

Pre-norm layers of multi-head self-attention, where a token sees itself and
earlier tokens, and a GELU perceptron. :func:`kv_cache` keeps each attention
layer's keys and values between calls so autoregressive sampling feeds one
new token per step.
"""

from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["CausalLayer", "CausalSelfAttention", "kv_cache"]


@contextmanager
def kv_cache(module):
    """Cache attention keys and values inside ``module`` while the block runs.

    Every :class:`CausalSelfAttention` in ``module`` starts with an empty
    cache and appends the keys and values of each call, so successive calls
    may pass only the new tokens. The caches are dropped on exit, also when
    an exception is raised.

    Parameters
    ----------
    module : torch.nn.Module
        Searched for attention layers.
    """
    layers = [m for m in module.modules() if isinstance(m, CausalSelfAttention)]
    for layer in layers:
        layer.cache = {}
    try:
        yield module
    finally:
        for layer in layers:
            layer.cache = None


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where a token sees itself and earlier tokens.

    Parameters
    ----------
    channels : int
        Width of the tokens; divisible by ``n_heads``.
    n_heads : int
        Number of attention heads.
    """

    def __init__(self, channels, n_heads):
        super().__init__()
        if channels % n_heads:
            raise ValueError(f"channels={channels} is not divisible by n_heads={n_heads}.")
        self.n_heads = n_heads
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.cache = None

    def forward(self, h):
        n, length, channels = h.shape
        q, k, v = self.qkv(h).view(n, length, 3, self.n_heads, -1).permute(2, 0, 3, 1, 4)
        if self.cache is not None:
            if self.cache:
                k = torch.cat([self.cache["k"], k], dim=2)
                v = torch.cat([self.cache["v"], v], dim=2)
            self.cache["k"], self.cache["v"] = k, v
        offset = k.shape[2] - length  # tokens already in the cache come first
        mask = torch.ones(length, k.shape[2], dtype=torch.bool, device=h.device).tril(offset)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(n, length, channels))


class CausalLayer(nn.Module):
    """Pre-norm transformer layer: attention then a GELU perceptron four times wider inside, both residual."""

    def __init__(self, channels, n_heads):
        super().__init__()
        self.norm1 = nn.LayerNorm(channels)
        self.attention = CausalSelfAttention(channels, n_heads)
        self.norm2 = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(
            nn.Linear(channels, 4 * channels), nn.GELU(), nn.Linear(4 * channels, channels)
        )

    def forward(self, h):
        h = h + self.attention(self.norm1(h))
        return h + self.mlp(self.norm2(h))
