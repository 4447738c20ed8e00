"""Benchmarks of the course: the cost of custom metrics in a Triton Python model (``make bench``)."""
