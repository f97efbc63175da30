"""Benchmarks, run by `make bench` and never by the test suite: they print figures, not verdicts."""
