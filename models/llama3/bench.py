"""Benchmark rows of the llama3 package: SmolLM2-135M-Instruct from its bundled Q4_1 GGUF."""

from bench.registry import BenchModel
from models.llama3.model import smollm2_gguf

BENCH_MODELS = [BenchModel(name="smollm2-135m", package="llama3", gguf=smollm2_gguf)]
