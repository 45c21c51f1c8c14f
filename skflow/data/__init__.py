"""The data layer: layouts (rows, images, tables), scaling with its Jacobian, discrete levels."""

from .layout import ImageLayout, check_images, restore_layout, validate_layout
from .noise import (
    check_levels,
    scoring_noise,
    uniform_dequantized_score_samples,
)
from .scaling import GlobalScaler, Standardizer

__all__ = [
    "GlobalScaler",
    "ImageLayout",
    "Standardizer",
    "check_images",
    "check_levels",
    "restore_layout",
    "scoring_noise",
    "uniform_dequantized_score_samples",
    "validate_layout",
]
