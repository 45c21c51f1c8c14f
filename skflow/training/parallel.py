"""Data-parallel training over several processes with Hugging Face accelerate.

An estimator given ``accelerator=accelerate.Accelerator()`` trains through
skorch's :class:`~skorch.hf.AccelerateMixin`: accelerate wraps the module in
``DistributedDataParallel`` (gradients are averaged over processes after each
backward pass) and handles mixed precision. skflow adds what keeps the
processes in step:

- every process draws the same shuffled epoch from the same seed and trains
  on its own slice of each batch (:class:`~skflow.training.BatchIterator`),
  so ``batch_size`` is the global batch;
- the validation rows are not split: every process scores all of them, so
  early stopping sees the same validation loss everywhere and stops every
  process at the same epoch;
- the divergence guard decides on all processes at once (an all-reduce of its
  once-per-epoch health check);
- the history is skorch's :class:`~skorch.history.DistributedHistory`, whose
  batch records are shared through a ``torch.distributed.TCPStore``.

Launch a script that fits an estimator with an accelerator with, e.g.::

    accelerate launch --num_processes 2 train.py          # 2 GPUs, or
    accelerate launch --cpu --num_processes 2 train.py    # 2 CPU processes (gloo)

Install the extra first: ``pip install "skflow[distributed]"``.
"""

import os

from skorch.history import DistributedHistory, History

from .net import FlowNet

__all__ = ["AcceleratedFlowNet", "accelerated_net_options", "check_accelerator"]

#: The history's key-value store listens on the launcher's port plus this offset.
STORE_PORT_OFFSET = 7


def check_accelerator(accelerator):
    """Raise an ImportError with the install command when accelerate is missing; return ``accelerator``."""
    try:
        import accelerate  # noqa: F401
    except ImportError:
        raise ImportError(
            "Training with an `accelerator` needs Hugging Face accelerate: "
            'pip install "skflow[distributed]" (or pip install accelerate).'
        ) from None
    if not hasattr(accelerator, "prepare") or not hasattr(accelerator, "num_processes"):
        raise TypeError(f"accelerator must be an accelerate.Accelerator, got {type(accelerator).__name__}.")
    return accelerator


def _history(accelerator):
    """A plain History for one process; a DistributedHistory over a TCPStore for several."""
    if accelerator.num_processes == 1:
        return History()
    import torch.distributed as dist

    port = int(os.environ.get("MASTER_PORT", "29500")) + STORE_PORT_OFFSET
    store = dist.TCPStore(
        os.environ.get("MASTER_ADDR", "127.0.0.1"),
        port,
        world_size=accelerator.num_processes,
        is_master=accelerator.is_main_process,
    )
    return DistributedHistory(
        store=store, rank=accelerator.process_index, world_size=accelerator.num_processes
    )


def accelerated_net_options(accelerator, verbose):
    """Keyword arguments for :class:`AcceleratedFlowNet` beyond :class:`FlowNet`'s."""
    return {
        "accelerator": accelerator,
        # the main process prints the epoch log, and only when verbose (skorch's PrintLog
        # prints to any sink but ``print`` regardless of ``verbose``)
        "callbacks__print_log__sink": accelerator.print if verbose else print,
        "history": _history(accelerator),
        "iterator_train__num_processes": accelerator.num_processes,
        "iterator_train__process_index": accelerator.process_index,
    }


def _accelerate_mixin():
    from skorch.hf import AccelerateMixin

    return AccelerateMixin


class AcceleratedFlowNet(_accelerate_mixin(), FlowNet):
    """:class:`FlowNet` trained through skorch's ``AccelerateMixin`` (see the module docstring)."""

    def on_train_end(self, net, X=None, y=None, **kwargs):
        super().on_train_end(net, X=X, y=y, **kwargs)
        if isinstance(self.history, DistributedHistory):  # plain and picklable once training is over
            self.history = self.history.history
        return self
