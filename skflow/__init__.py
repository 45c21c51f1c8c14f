"""skflow: scikit-learn-compatible density estimators built on normalizing flows."""

from .base import FlowDensity
from .conditional import FlowRegressor
from .image import GlowDensity, RealNVPImageDensity
from .metrics import bits_per_dim, conditional_log_likelihood
from .mixture import FlowMixture
from .outlier import FlowOutlierDetector
from .tabular import IAFDensity, MADEDensity, MAFDensity, NSFDensity, RealNVPDensity
from .tarflow import TarFlowDensity
from .variational import VariationalDensity

__version__ = "0.2.0"

__all__ = [
    "FlowDensity",
    "FlowMixture",
    "FlowOutlierDetector",
    "FlowRegressor",
    "GlowDensity",
    "IAFDensity",
    "MADEDensity",
    "MAFDensity",
    "NSFDensity",
    "RealNVPDensity",
    "RealNVPImageDensity",
    "TarFlowDensity",
    "VariationalDensity",
    "__version__",
    "bits_per_dim",
    "conditional_log_likelihood",
]
