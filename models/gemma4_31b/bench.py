"""Benchmark rows of the gemma4_31b package: Gemma 3 270M from its bundled Q4_K_M GGUF.

Builds: the file's own blocks (`gguf`), Gemma's `default` recipe (8da4w linears, the int8 table shared by the
embedding and the tied head) and 8da8w with an int8 embedding. The plain 8da4w preset would store the 262k-row
table twice (an int4 embedding and an int8 head): `default` is Gemma's 8da4w.
"""

from bench.registry import BenchModel, Build
from models.gemma4_31b.model import gemma3_270m_gguf

_SHAPE = ("--max-seq-len", "128", "--max-context-len", "1024")
BUILDS = (
    Build("8da8w", ("--quantize", "8da8w", "--embedding-bits", "8", *_SHAPE)),
    Build("default", ("--quantize", "default", *_SHAPE), runners=("python", "cpp")),
    Build("gguf", ("--quantize", "gguf", *_SHAPE), runners=("python", "cpp")),
)
BENCH_MODELS = [BenchModel(name="gemma3-270m", package="gemma4_31b", gguf=gemma3_270m_gguf, builds=BUILDS)]
