"""Benchmark suite for scidex-alloc (issue 8): `python -m bench --help`. Not part of the tests."""
