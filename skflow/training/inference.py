"""Where models run: the device ("auto" picks CUDA when present), and the one batched loop
that every score and every sample goes through (memory stays flat on large inputs)."""

import numpy as np
import torch

__all__ = ["INFERENCE_BATCH", "batched", "resolve_device"]

#: Rows per forward pass when scoring or sampling (keeps memory flat).
INFERENCE_BATCH = 8192


def resolve_device(device):
    """A ``torch.device`` for ``device``; "auto" is CUDA when present, else the CPU.

    Inside a dask worker on a host with several GPUs, "auto" gives each worker
    its own GPU (see :func:`skflow.distributed.worker_device`).

    Raises a ValueError naming the problem when the device does not exist here.
    """
    if isinstance(device, str) and device == "auto":
        from ..distributed import worker_device  # dask-free: inside a dask worker, one GPU per worker

        return worker_device()
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device={device!r} is not a torch device: {error}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise ValueError(
                f"device={str(device)!r} is not available: this machine has {count} CUDA device(s)."
            )
    elif device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError("device='mps' is not available on this machine.")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device={str(device)!r} is not supported; use 'auto', 'cpu', 'cuda[:k]' or 'mps'.")
    return device


@torch.no_grad()
def batched(fn, n_rows, batch_size, device, dtype=torch.float32, **arrays):
    """Call ``fn(n=size, **tensors)`` on consecutive batches; concatenate its outputs as float64.

    ``arrays`` (numpy, or None) are sliced per batch and moved to ``device``
    as ``dtype`` tensors; None stays None and is not passed. ``fn`` returns a
    tensor, or a tuple of tensors (then a tuple of arrays comes back). The one
    inference loop of skflow: scoring and sampling all go through it.
    """
    chunks = []
    for start in range(0, n_rows, batch_size):
        stop = min(start + batch_size, n_rows)
        tensors = {
            key: torch.as_tensor(value[start:stop], dtype=dtype, device=device)
            for key, value in arrays.items()
            if value is not None
        }
        out = fn(n=stop - start, **tensors)
        chunks.append(
            tuple(t.double().cpu().numpy() for t in out)
            if isinstance(out, tuple)
            else out.double().cpu().numpy()
        )
    if isinstance(chunks[0], tuple):
        return tuple(np.concatenate(parts) for parts in zip(*chunks))
    return np.concatenate(chunks)
