"""Data-parallel training with accelerate: 2 CPU processes (gloo) against one process."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.parallel_data import data, estimator

accelerate = pytest.importorskip("accelerate", reason='needs pip install "skflow[distributed]"')
ROOT = Path(__file__).resolve().parents[1]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_agree_with_each_other_and_with_one(tmp_path):
    # torchrun starts the processes (accelerate launch does the same on GPUs); each builds an
    # Accelerator(cpu=True), which joins the gloo process group torchrun set up
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for _ in range(3):  # another process may take the free port before torchrun binds it: try another
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            "--master_port", str(_free_port()), str(ROOT / "tests" / "accelerate_fit.py"), str(tmp_path),
        ]  # fmt: skip
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        if "EADDRINUSE" not in result.stderr:
            break
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [np.load(tmp_path / f"rank{k}.npz") for k in range(2)]
    weights = [key for key in ranks[0].files if key.startswith("w_")]
    assert weights
    for key in weights:  # DDP averages the gradients: every process holds the same weights
        np.testing.assert_array_equal(ranks[0][key], ranks[1][key])
    assert ranks[0]["n_iter"] == ranks[1]["n_iter"]  # early stopping stopped both at the same epoch
    # the distributed history records the epoch loss over both processes' batches
    np.testing.assert_allclose(ranks[0]["train_loss"], ranks[1]["train_loss"])

    X_train, X_test = data()
    single = estimator().fit(X_train)
    # each process trains on half of every global batch, so the averaged gradient is the
    # one-process gradient up to rounding: the held-out log-likelihoods agree closely
    assert abs(float(ranks[0]["held_out"]) - single.score(X_test)) < 0.05


def test_one_process_accelerator_gives_the_plain_fit_and_pickles():
    import pickle

    from accelerate import Accelerator

    X_train, X_test = data()
    accelerated = estimator(max_epochs=3, accelerator=Accelerator(cpu=True)).fit(X_train)
    plain = estimator(max_epochs=3).fit(X_train)
    np.testing.assert_array_equal(accelerated.score_samples(X_test), plain.score_samples(X_test))
    restored = pickle.loads(pickle.dumps(accelerated))
    np.testing.assert_array_equal(restored.score_samples(X_test), plain.score_samples(X_test))
