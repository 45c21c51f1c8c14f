"""Worker of ``test_parallel.py``: one process of a data-parallel fit under ``accelerate launch``.

Each process fits the same estimator with an ``accelerate.Accelerator`` and
saves its final weights, held-out log-likelihood and history length, so the
test can compare the processes with each other and with a one-process fit.
"""

import sys

import numpy as np
from accelerate import Accelerator

from skflow import MAFDensity
from tests.parallel_data import data, estimator

if __name__ == "__main__":
    accelerator = Accelerator(cpu=True)
    X_train, X_test = data()
    model = estimator(accelerator=accelerator).fit(X_train)
    weights = {f"w_{k}": v.detach().cpu().numpy() for k, v in model.net_.module_.state_dict().items()}
    np.savez(
        f"{sys.argv[1]}/rank{accelerator.process_index}.npz",
        held_out=model.score(X_test),
        n_iter=model.n_iter_,
        train_loss=np.array(model.history_[:, "train_loss"]),
        **weights,
    )
    assert isinstance(model, MAFDensity)
