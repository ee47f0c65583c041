"""Benchmarks (make bench, bench-serving, bench-scaling, soak); not installed."""
