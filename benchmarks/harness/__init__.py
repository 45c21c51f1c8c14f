"""The benchmarks' harness: data, peers, the runner and the report writer (see each module)."""

from . import data, peers, report, runner

__all__ = ["data", "peers", "report", "runner"]
