"""skflow: scikit-learn-compatible density estimators built on normalizing flows."""

from .estimators.conditional import FlowRegressor
from .estimators.density import FlowDensity
from .estimators.imputer import FlowImputer
from .estimators.image import GlowDensity, RealNVPImageDensity
from .estimators.mixture import FlowMixture
from .estimators.outlier import FlowOutlierDetector
from .estimators.tabular import IAFDensity, MADEDensity, MAFDensity, NSFDensity, RealNVPDensity
from .estimators.tarflow import TarFlowDensity
from .estimators.variational import VariationalDensity
from .metrics import bits_per_dim, conditional_log_likelihood, crps, interval_score

__version__ = "0.2.0"

__all__ = [
    "FlowDensity",
    "FlowImputer",
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
    "crps",
    "interval_score",
]
