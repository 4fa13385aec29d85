"""Benchmarks run with `pytest bench/` (pytest-benchmark). They report figures; they never assert on timings."""
