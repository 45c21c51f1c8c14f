"""Every benchmark script runs end to end in its ``--tiny`` mode (a few seconds each, on the CPU).

A script that needs ``../shared/data`` beside the checkout skips when it is absent; a peer whose
optional package is missing is skipped by the script itself (a script whose reference is that peer,
such as ``tabular_speed`` without zuko, skips as a whole).
"""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem != "__init__")


@pytest.fixture
def benchmarks(monkeypatch):
    """Import ``benchmarks.<name>`` from this checkout, as ``python -m`` does from the repository root."""
    monkeypatch.syspath_prepend(str(ROOT))
    return lambda name: importlib.import_module(f"benchmarks.{name}")


@pytest.mark.parametrize("name", SCRIPTS)
def test_tiny_run_writes_its_report(name, tmp_path, benchmarks):
    data, runner = benchmarks("harness.data"), benchmarks("harness.runner")
    argv = ["--tiny", "--out", str(tmp_path)] + (["--device", "cpu"] if name == "gpu" else [])
    try:
        benchmarks(name).main(argv)
    except (data.MissingData, runner.Unavailable) as error:  # no ../shared/data, or no zuko
        pytest.skip(str(error))
    report = (tmp_path / f"{name}.md").read_text()
    assert report.startswith("# ") and "|---" in report


def test_tiny_runs_write_to_a_temporary_folder_by_default(benchmarks):
    runner = benchmarks("harness.runner")
    args = runner.parse(runner.parser("doc", cache=True), ["--tiny"], "benchmarks.example")
    assert args.out != runner.RESULTS and args.cache == [args.out / "example_cache.json"]
    args.out.rmdir()


def test_scripts_run_as_modules_from_the_repository_root():
    result = subprocess.run([sys.executable, "-m", "benchmarks.iaf_vs_maf", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--tiny" in result.stdout
