"""``benchmarks/gpu.py`` runs end to end on the CPU with its tiny budget (the GPU run is not in CI)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"


@pytest.mark.slow
def test_gpu_benchmark_runs_with_a_tiny_budget_on_the_cpu(tmp_path):
    pytest.importorskip("zuko", reason='the peer comes with pip install "skflow[bench]"')
    if not MNIST.exists():
        pytest.skip(f"{MNIST} not found: the shared data folder sits beside the checkout")
    out = tmp_path / "gpu.md"
    command = [
        sys.executable,
        "-m",
        "benchmarks.gpu",
        "--tiny",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = out.read_text()
    for row in (
        "zuko MAF + loop",
        "skflow MAFDensity, bf16",
        "skflow MAFDensity, compile",
        "| TarFlow |",
        "| Glow |",
    ):
        assert row in report
    assert (tmp_path / "gpu_samples.png").stat().st_size > 0
