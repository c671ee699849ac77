"""Benchmark rows of the llama3 package: SmolLM2-135M-Instruct from its bundled Q4_1 GGUF, and its AQLM 2x8
build (`make aqlm-smollm2` fits it once, about 42 min; the row is skipped until then)."""

from bench.registry import STANDARD_BUILDS, BenchModel, Build
from models.llama3.model import smollm2_gguf

_AQLM_SHAPE = ("--max-seq-len", "128", "--max-context-len", "1024")
AQLM = Build("aqlm-2x8", _AQLM_SHAPE, runners=("python", "cpp"), checkpoint="build/aqlm/smollm2-aqlm-2x8",
             make_target="aqlm-smollm2")
# the same weights on the fast kernel: int8 lookup tables for decode, bf16 for prefill (common/quant/aqlm_lut8.py)
AQLM_LUT8 = Build("aqlm-2x8-lut8", (*_AQLM_SHAPE, "--aqlm-kernel", "lut8"), runners=("python", "cpp"),
                  checkpoint="build/aqlm/smollm2-aqlm-2x8", make_target="aqlm-smollm2")
BENCH_MODELS = [BenchModel(name="smollm2-135m", package="llama3", gguf=smollm2_gguf,
                           builds=(*STANDARD_BUILDS, AQLM, AQLM_LUT8))]
