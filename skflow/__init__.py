"""skflow: scikit-learn-compatible density estimators built on normalizing flows."""

from ._image import bits_per_dim
from .base import FlowDensity
from .iaf import IAFDensity
from .image import GlowDensity, RealNVPImageDensity
from .outlier import FlowOutlierDetector
from .tabular import MADEDensity, MAFDensity, RealNVPDensity
from .tarflow import TarFlowDensity
from .variational import VariationalDensity

__version__ = "0.1.0"

__all__ = [
    "FlowDensity",
    "MADEDensity",
    "MAFDensity",
    "RealNVPDensity",
    "IAFDensity",
    "RealNVPImageDensity",
    "GlowDensity",
    "TarFlowDensity",
    "VariationalDensity",
    "FlowOutlierDetector",
    "bits_per_dim",
    "__version__",
]
