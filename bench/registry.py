"""What a model package registers for benchmarking: its bundled GGUF and the `.pte` builds to compare.

A package opts in with a `models/<name>/bench.py` that defines `BENCH_MODELS: list[BenchModel]`;
`discover()` imports every such module, so a new package adds rows without touching bench/.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Build:
    """One of our `.pte` builds: export flags for `python -m models.<package>.export` and the runners to time it on."""

    name: str  # row label, e.g. "8da4w"
    export_args: tuple[str, ...]
    runners: tuple[str, ...] = ("python",)  # "python" (common.runtime) and/or "cpp" (the model's C++ runner)
    # exported from this repo-relative checkpoint, which `make <make_target>` writes (e.g. a quantize_and_save
    # dir too slow to make inside the bench), instead of the model's GGUF
    checkpoint: str | None = None
    make_target: str | None = None


# The recipes every llama-style package benchmarks. Prefill chunks of 128 (max_seq_len), room for a 512-token
# prompt plus 128 decoded tokens. The 8da4w build is also the one `make demo` exports and the tests share.
_SHAPE = ("--max-seq-len", "128", "--max-context-len", "1024")
STANDARD_BUILDS = (
    Build("fp32", ("--quantize", "fp32", *_SHAPE)),
    Build("8da8w", ("--quantize", "8da8w", "--embedding-bits", "8", *_SHAPE)),
    Build("8da4w", ("--quantize", "8da4w", "--embedding-bits", "4", *_SHAPE), runners=("python", "cpp")),
    Build("gguf", ("--quantize", "gguf", *_SHAPE), runners=("python", "cpp")),  # the file's own blocks (`make demo`)
    # 8da4w with float16 keys and values: half the bytes a deep decode reads (llama.cpp's default cache is f16)
    Build("8da4w-kv16", ("--quantize", "8da4w", "--embedding-bits", "4", "--kv-cache-dtype", "fp16", *_SHAPE),
          runners=("python", "cpp")),
)


@dataclass(frozen=True)
class BenchModel:
    name: str  # row group, e.g. "smollm2-135m"
    package: str  # models/<package>: its export CLI and its C++ runner (make <package>-xnnpack)
    gguf: Callable[[], str]  # the original weights: llama.cpp and transformers load these; our builds export them
    builds: tuple[Build, ...] = STANDARD_BUILDS


def discover() -> dict[str, BenchModel]:
    """Every BenchModel registered by a `models/<name>/bench.py`."""
    import models

    found: dict[str, BenchModel] = {}
    for info in pkgutil.iter_modules(models.__path__):
        if importlib.util.find_spec(f"models.{info.name}.bench") is None:
            continue
        for m in importlib.import_module(f"models.{info.name}.bench").BENCH_MODELS:
            found[m.name] = m
    return found
