"""The data layer: layouts (rows, images), scaling with its Jacobian, dequantization."""

from .dequantize import (
    UniformDequantization,
    VariationalDequantization,
    check_levels,
    scoring_noise,
    uniform_dequantized_score_samples,
)
from .layout import ImageLayout, check_images, restore_layout, validate_layout
from .scaling import GlobalScaler, Standardizer

__all__ = [
    "GlobalScaler",
    "ImageLayout",
    "Standardizer",
    "UniformDequantization",
    "VariationalDequantization",
    "check_images",
    "check_levels",
    "restore_layout",
    "scoring_noise",
    "uniform_dequantized_score_samples",
    "validate_layout",
]
