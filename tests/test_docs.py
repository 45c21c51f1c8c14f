"""Every Python block of the README and every example runs, at tiny training settings.

Training is capped (at most 2 epochs per fit, 20 reverse-KL steps) by patching the one place
each loop reads its budget, so the code a user copies runs end to end in seconds; what the
blocks print is not checked here (their figures come from the benchmarks).
"""

import re
import runpy
from pathlib import Path

import matplotlib
import pytest

import skflow.estimators.variational as variational
from skflow.estimators.density import FlowDensity

matplotlib.use("Agg")
ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


@pytest.fixture
def tiny_training(monkeypatch, tmp_path):
    settings = FlowDensity._settings

    def capped(self, n_train):
        return {**settings(self, n_train), "max_epochs": 2}

    reverse_kl = variational.fit_reverse_kl

    def short(*args, max_steps, **kwargs):
        return reverse_kl(*args, max_steps=min(max_steps, 20), **kwargs)

    monkeypatch.setattr(FlowDensity, "_settings", capped)
    monkeypatch.setattr(variational, "fit_reverse_kl", short)
    monkeypatch.chdir(tmp_path)  # figures the examples save land here


def test_the_readme_has_blocks_to_run():
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, tiny_training):
    block = BLOCKS[index]
    if "accelerate" in block or "dask" in block:
        pytest.importorskip("accelerate" if "accelerate" in block else "distributed")
    if "big_dask_array" in block or "Accelerator()" in block:
        pytest.skip("needs a cluster or a multi-process launch (covered by tests/test_distributed.py, test_parallel.py)")
    exec(compile(block, f"README block {index}", "exec"), {"__name__": "__readme__"})


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(path, tiny_training):
    runpy.run_path(str(path), run_name="__main__")
