"""skflow's benchmarks: thin scripts over one harness; run each as ``python -m benchmarks.<name>``."""
