"""The kernel libraries a `.pte` may need beyond ExecuTorch's portable/optimized kernels, declared once.

Each entry says which operators it provides, how a Python process loads its kernels (import for its side effect
of registering them), and which C++ sources a zoo runner compiles for them (self-registering files under
runners/kernels/, globbed by runners/CMakeLists.txt; tests/test_kernels.py keeps the two lists equal). The
zoo's own kernels (`python_shared`) reach the Python runtime as a shared library built from the same files on
first use (runners/kernels/CMakeLists.txt, under build/kernels/) and loaded with RTLD_GLOBAL. The export's
missing-kernel check and the Python runtime load every library here; a new weight format's kernel (AQLM next) is
one more entry.
"""

from __future__ import annotations

import ctypes
import fcntl
import importlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from common.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class KernelLibrary:
    name: str
    ops: tuple[str, ...]  # 'namespace::op' it provides kernels for
    python_module: str | None  # importing it registers the kernels in this Python process
    cpp_sources: tuple[str, ...] = ()  # the zoo's own C++ kernels (repo-relative), linked into every runner
    cpp_target: str | None = None  # or: the executorch wheel's CMake target that a runner links for them
    python_shared: bool = False  # the Python runtime loads cpp_sources built as a shared library

    def load(self) -> None:
        """Register this library's kernels in the current Python process (idempotent)."""
        if self.python_module:
            importlib.import_module(self.python_module)
        if self.python_shared:
            ctypes.CDLL(str(build_shared_library(self)), mode=ctypes.RTLD_GLOBAL)


KERNEL_LIBRARIES = (
    KernelLibrary(
        "llama",
        ops=("llama::update_cache", "llama::update_cache_with_indices", "llama::custom_sdpa"),
        python_module="executorch.extension.llm.custom_ops.custom_ops",
        cpp_sources=("runners/kernels/llama.cpp",),  # the wheel's C++ SDK has none: ours
    ),
    KernelLibrary(
        "sdpa",
        ops=("zoo::custom_sdpa", "zoo::update_cache", "zoo::update_cache_with_indices"),
        python_module="common.nn.sdpa_op",  # the op's schema; eager and export run ExecuTorch's llama op
        cpp_sources=("runners/kernels/sdpa.cpp",),  # the zoo's attention kernel (sdpa.h), also llama.cpp's
        python_shared=True,
    ),
    KernelLibrary(
        "quantized",
        ops=("quantized_decomposed::embedding_4bit", "quantized_decomposed::embedding_byte"),
        python_module="executorch.kernels.quantized",
        cpp_target="executorch::kernels_quantized",
    ),
    KernelLibrary(
        "zoo",
        ops=("zoo::linear_q8",),
        python_module="common.quant.tied_head",  # the op's schema and eager/export implementation
        cpp_sources=("runners/kernels/zoo.cpp",),
        python_shared=True,
    ),
    KernelLibrary(
        "aqlm",
        ops=("zoo::code2x8_lut_matmat", "zoo::code2x8_lut8_matmat"),
        python_module="common.quant.aqlm_lut8",  # both ops' schemas and eager implementations (it imports aqlm)
        cpp_sources=("runners/kernels/aqlm.cpp",),
        python_shared=True,
    ),
)


# Why a library of the zoo's own kernels could not be loaded in this process (its name -> the reason): a program
# that does not need it still runs; one that does is refused naming it (describe_missing).
UNAVAILABLE: dict[str, str] = {}


def load_kernel_libraries() -> None:
    """Load every declared library's kernels into this Python process (before loading or exporting a program). A
    zoo library that cannot be built is recorded in UNAVAILABLE, not raised: only programs using it need it."""
    for lib in KERNEL_LIBRARIES:
        if lib.name in UNAVAILABLE:
            continue
        try:
            lib.load()
        except (UserError, OSError) as e:
            if not lib.python_shared:
                raise
            UNAVAILABLE[lib.name] = str(e)


def describe_missing(ops: list[str]) -> str:
    """The operators `ops` a runtime lacks, each with the kernel library that provides it (and why it is absent)."""
    parts = []
    for op in ops:
        lib = library_for(op)
        if lib is None:
            parts.append(op)
            continue
        where = ", ".join(lib.cpp_sources) or lib.python_module or lib.cpp_target
        why = f"; not loaded: {UNAVAILABLE[lib.name]}" if lib.name in UNAVAILABLE else ""
        parts.append(f"{op} (kernel library {lib.name!r}, {where}{why})")
    return ", ".join(parts)


def runtime_operator_names() -> set[str]:
    """Operators with kernels in this process's ExecuTorch runtime: portable + optimized + every library above."""
    from executorch.extension.pybindings import portable_lib

    load_kernel_libraries()
    return set(portable_lib._get_operator_names())


def library_for(op: str) -> KernelLibrary | None:
    """The declared library providing `op` ('ns::op' or 'ns::op.overload')."""
    base = op.split(".")[0]
    return next((lib for lib in KERNEL_LIBRARIES if base in lib.ops), None)


def build_shared_library(lib: KernelLibrary, out_dir: Path | None = None, extra_flags: tuple[str, ...] = ()) -> Path:
    """`lib`'s kernel files as build/kernels/<name>/libzoo_<name>.so (or in `out_dir`), (re)built when missing or
    older than its sources; one build at a time across processes (a file lock). `extra_flags`: compiler flags after
    -march=native (tests build the paths of CPUs without some of this one's instructions)."""
    out_dir = out_dir or ROOT / "build" / "kernels" / lib.name
    target = out_dir / f"libzoo_{lib.name}.so"
    kernels = ROOT / "runners" / "kernels"
    inputs = [ROOT / s for s in lib.cpp_sources] + [kernels / "CMakeLists.txt", *kernels.glob("*.h")]
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists() and target.stat().st_mtime >= max(p.stat().st_mtime for p in inputs):
            return target
        import executorch

        cmake = shutil.which("cmake", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
        if cmake is None:
            raise UserError(f"kernel library {lib.name!r} needs building and no cmake was found (run make setup)")
        print(f"building the {lib.name!r} kernel library for the Python runtime (once): {target}", file=sys.stderr)
        et_cmake = Path(list(executorch.__path__)[0]) / "share" / "cmake"
        steps = [
            [cmake, "-S", str(ROOT / "runners" / "kernels"), "-B", str(out_dir), f"-DZOO_KERNEL_NAME={lib.name}",
             f"-DZOO_KERNEL_SOURCES={';'.join(str(ROOT / s) for s in lib.cpp_sources)}",
             f"-DCMAKE_PREFIX_PATH={et_cmake}", f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
             f"-DZOO_KERNEL_EXTRA_FLAGS={';'.join(extra_flags)}"],
            [cmake, "--build", str(out_dir), "-j", str(os.cpu_count() or 2)],
        ]
        for step in steps:
            proc = subprocess.run(step, capture_output=True, text=True)
            if proc.returncode != 0:
                tail = (proc.stdout + proc.stderr).strip().splitlines()[-20:]
                raise UserError(f"building kernel library {lib.name!r} failed ({' '.join(step[:2])}): "
                                + " | ".join(tail))
        if not target.exists():
            raise UserError(f"building kernel library {lib.name!r} wrote no {target}")
        target.touch()  # up to date now, also where a header changed that none of its sources includes
        return target
