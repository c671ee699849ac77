"""Benchmark and fidelity harness: our `.pte` (Python and C++ runners) vs llama.cpp vs transformers, one run.

`python -m bench` (or `make bench`); see bench/README.md.
"""
