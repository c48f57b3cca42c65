"""Benchmarks and end-to-end checks run by hand or on a GPU; not imported by the library."""
