"""The kernel libraries a `.pte` may need beyond ExecuTorch's portable/optimized kernels, declared once.

Each entry says which operators it provides, how a Python process loads its kernels (import for its side effect
of registering them), and which C++ sources a zoo runner compiles for them (self-registering files under
runners/kernels/, globbed by runners/CMakeLists.txt; tests/test_kernels.py keeps the two lists equal). The
export's missing-kernel check and the Python runtime load every library here; a new weight format's kernel
(AQLM next) is one more entry.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class KernelLibrary:
    name: str
    ops: tuple[str, ...]  # 'namespace::op' it provides kernels for
    python_module: str | None  # importing it registers the kernels in this Python process
    cpp_sources: tuple[str, ...] = ()  # the zoo's own C++ kernels (repo-relative), linked into every runner
    cpp_target: str | None = None  # or: the executorch wheel's CMake target that a runner links for them

    def load(self) -> None:
        """Register this library's kernels in the current Python process (idempotent)."""
        if self.python_module:
            importlib.import_module(self.python_module)


KERNEL_LIBRARIES = (
    KernelLibrary(
        "llama",
        ops=("llama::update_cache", "llama::custom_sdpa"),
        python_module="executorch.extension.llm.custom_ops.custom_ops",
        cpp_sources=("runners/kernels/llama.cpp",),  # the wheel's C++ SDK has none: ours
    ),
    KernelLibrary(
        "quantized",
        ops=("quantized_decomposed::embedding_4bit", "quantized_decomposed::embedding_byte"),
        python_module="executorch.kernels.quantized",
        cpp_target="executorch::kernels_quantized",
    ),
)


def load_kernel_libraries() -> None:
    """Load every declared library's kernels into this Python process (before loading or exporting a program)."""
    for lib in KERNEL_LIBRARIES:
        lib.load()


def runtime_operator_names() -> set[str]:
    """Operators with kernels in this process's ExecuTorch runtime: portable + optimized + every library above."""
    from executorch.extension.pybindings import portable_lib

    load_kernel_libraries()
    return set(portable_lib._get_operator_names())


def library_for(op: str) -> KernelLibrary | None:
    """The declared library providing `op` ('ns::op' or 'ns::op.overload')."""
    base = op.split(".")[0]
    return next((lib for lib in KERNEL_LIBRARIES if base in lib.ops), None)
