"""Benchmark scripts; results are kept under benchmarks/results/."""
