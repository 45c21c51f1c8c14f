"""The training loop: the skorch network, its batches and its callbacks."""

from .callbacks import DivergenceGuard, TimeLimit, lr_schedule
from .net import BatchIterator, FlowNet, NegativeLogLikelihood, TensorDataset
from .sizing import training_settings

__all__ = [
    "BatchIterator",
    "DivergenceGuard",
    "FlowNet",
    "NegativeLogLikelihood",
    "TensorDataset",
    "TimeLimit",
    "lr_schedule",
    "training_settings",
]
