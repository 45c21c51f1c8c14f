"""Bijective transforms. Each returns ``(output, log|det J|)`` in both directions and
takes an optional ``context`` that conditions it.

- :mod:`.core`: the protocol, :class:`Compose`, :class:`Inverse`.
- :mod:`.univariate`, :mod:`.splines`: one-dimensional maps (affine,
  rational-quadratic spline) that the layers below apply elementwise.
- :mod:`.autoregressive`: MADE and masked autoregressive layers (MAF, IAF, NSF).
- :mod:`.coupling`: coupling layers (RealNVP, Glow, coupling NSF).
- :mod:`.linear`: LU-parametrised mixing, batch norm, act-norm.
- :mod:`.multiscale`: squeeze, multi-scale, logit, convolutional conditioners.
- :mod:`.attention`, :mod:`.tarflow_blocks`: TarFlow's causal transformer blocks.
- :mod:`.planar`: planar and radial layers (sampling direction only).
"""

from .autoregressive import (
    MADE,
    MaskedAffineAutoregressive,
    MaskedAutoregressive,
    MaskedLinear,
    reversing_order,
)
from .core import Compose, Inverse, Transform, soft_clamp
from .coupling import MLP, AffineCoupling, Coupling, alternating_masks
from .linear import ActNorm, BatchNorm, LULinear
from .planar import Planar, Radial
from .univariate import Affine

__all__ = [
    "MADE",
    "MLP",
    "ActNorm",
    "Affine",
    "AffineCoupling",
    "BatchNorm",
    "Compose",
    "Coupling",
    "Inverse",
    "LULinear",
    "MaskedAffineAutoregressive",
    "MaskedAutoregressive",
    "MaskedLinear",
    "Planar",
    "Radial",
    "Transform",
    "alternating_masks",
    "reversing_order",
    "soft_clamp",
]
