"""Benchmarks of dpumesh: `make bench` runs them all, `python -m benchmarks.<name>` runs one."""
