"""The benchmarks' harness: data, peers, the runner and the report writer (see each module)."""
