"""Training settings that adapt to the number of training rows (the ``"auto"`` defaults).

Up to :data:`SMALL_DATA` training rows, ``"auto"`` is exactly the fixed
recipe every benchmark in ``benchmarks/results`` was run with: batches of 64,
learning rate 1e-3, at most 300 epochs, patience 20. Beyond it an epoch holds
``scale = n / SMALL_DATA`` times as many rows, and the recipe changes so that
the number of optimizer steps per epoch, not the number of rows, stays about
constant:

- the batch grows with ``scale`` (rounded to a power of two, at most 1024),
  which cuts the per-step overhead while leaving enough steps per epoch (on
  a CPU the cost per row is flat beyond a few hundred rows per batch; on a
  GPU set a larger ``batch_size`` by hand);
- with that grown batch the learning rate grows with the square root of the
  batch size (the usual rule for Adam-type optimizers), capped at 4e-3; a
  batch size given as a number keeps the rate at 1e-3;
- an epoch sees ``scale`` times more rows, so fewer epochs are needed:
  ``max_epochs`` becomes ``300 / scale`` (at least 20) and ``patience``
  ``20 / scale`` (at least 10: with 5, fits on 100k rows stopped after 17 of
  67 epochs and lost 1.06 nats/row of held-out log-likelihood, while 10 and
  20 both ran to the end; ``benchmarks/results/scaling.md``).

A fit's cost is then at most linear in ``n`` (``benchmarks/scaling.py``
measures it). Parameters given as numbers are used as they are.
"""

import math

__all__ = ["SMALL_DATA", "training_settings"]

#: Training rows up to which the ``"auto"`` settings are the fixed small-data recipe.
SMALL_DATA = 20_000
#: The small-data recipe.
BASE = {"batch_size": 64, "lr": 1e-3, "max_epochs": 300, "patience": 20}
MAX_BATCH = 1024
MAX_LR = 4e-3
MIN_EPOCHS = 20
MIN_PATIENCE = 10


def training_settings(n_rows, batch_size="auto", lr="auto", max_epochs="auto", patience="auto"):
    """Resolve ``"auto"`` training settings for ``n_rows`` training rows.

    Parameters
    ----------
    n_rows : int
        Rows in the training split.
    batch_size, lr, max_epochs, patience : int, float or "auto"
        The estimator's parameters; numbers pass through unchanged.

    Returns
    -------
    settings : dict
        ``batch_size``, ``lr``, ``max_epochs`` and ``patience`` as numbers.

    Examples
    --------
    >>> training_settings(5_000)
    {'batch_size': 64, 'lr': 0.001, 'max_epochs': 300, 'patience': 20}
    >>> training_settings(1_000_000)
    {'batch_size': 1024, 'lr': 0.004, 'max_epochs': 20, 'patience': 10}
    >>> training_settings(1_000_000, batch_size=256)["lr"]
    0.001
    """
    scale = max(1.0, n_rows / SMALL_DATA)
    auto_batch = min(MAX_BATCH, BASE["batch_size"] * 2 ** round(math.log2(scale)))
    batch = auto_batch if batch_size == "auto" else batch_size
    return {
        "batch_size": batch,
        "lr": (
            (
                BASE["lr"]
                if batch_size != "auto"
                else min(MAX_LR, BASE["lr"] * math.sqrt(batch / BASE["batch_size"]))
            )
            if lr == "auto"
            else lr
        ),
        "max_epochs": max(MIN_EPOCHS, min(BASE["max_epochs"], round(BASE["max_epochs"] / scale)))
        if max_epochs == "auto"
        else max_epochs,
        "patience": max(MIN_PATIENCE, min(BASE["patience"], round(BASE["patience"] / scale)))
        if patience == "auto"
        else patience,
    }
