"""skflow: scikit-learn-compatible density estimators built on normalizing flows."""

from .base import FlowDensity
from .tabular import MADEDensity, MAFDensity, RealNVPDensity

__version__ = "0.1.0"

__all__ = ["FlowDensity", "MADEDensity", "MAFDensity", "RealNVPDensity", "__version__"]
