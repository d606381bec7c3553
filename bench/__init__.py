"""Reproducible benchmarks that print tables (not timed tests): `python -m bench` writes BENCHMARKS.md."""
