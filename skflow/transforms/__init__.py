"""Bijective transforms. Each returns ``(output, log|det J|)`` in both directions."""

from ._base import Compose, Inverse, Transform, soft_clamp
from .autoregressive import MADE, MaskedAffineAutoregressive, MaskedLinear, reversing_order
from .coupling import MLP, AffineCoupling, alternating_masks
from .normalization import ActNorm, BatchNorm
from .planar import Planar, Radial

__all__ = [
    "Transform",
    "Compose",
    "Inverse",
    "soft_clamp",
    "MaskedLinear",
    "MADE",
    "MaskedAffineAutoregressive",
    "reversing_order",
    "MLP",
    "AffineCoupling",
    "alternating_masks",
    "BatchNorm",
    "ActNorm",
    "Planar",
    "Radial",
]
