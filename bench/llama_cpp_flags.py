"""CMAKE_ARGS for building llama-cpp-python here: this CPU's SIMD levels named explicitly, AMX off.

llama.cpp's default `GGML_NATIVE=ON` compiles with `-march=native`, which on a CPU that lists AMX builds ggml's AMX
matmul; on a VM whose hypervisor lists AMX but does not run it (measured on this project's Xeon VMs) the first
eval dies of SIGILL at `tilezero`, even with `GGML_AMX_*=OFF` (`-march=native` still defines `__AMX_INT8__`).
Naming the levels with `GGML_NATIVE=OFF` keeps every AVX-512/VNNI path and drops AMX.
"""

from __future__ import annotations

from pathlib import Path

# GGML option -> the /proc/cpuinfo flags it needs
LEVELS = {
    "GGML_SSE42": ("sse4_2",),
    "GGML_AVX": ("avx",),
    "GGML_F16C": ("f16c",),
    "GGML_FMA": ("fma",),
    "GGML_BMI2": ("bmi2",),
    "GGML_AVX2": ("avx2",),
    "GGML_AVX_VNNI": ("avx_vnni",),
    "GGML_AVX512": ("avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"),
    "GGML_AVX512_VBMI": ("avx512vbmi",),
    "GGML_AVX512_VNNI": ("avx512_vnni",),
    "GGML_AVX512_BF16": ("avx512_bf16",),
}


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of the first CPU listed in a /proc/cpuinfo text."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def cmake_args(flags: set[str]) -> str:
    """-D options: native off, each SIMD level on iff the CPU has it, AMX off."""
    args = ["-DGGML_NATIVE=OFF"]
    args += [f"-D{opt}={'ON' if set(need) <= flags else 'OFF'}" for opt, need in LEVELS.items()]
    args += ["-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"]
    return " ".join(args)


if __name__ == "__main__":
    info = Path("/proc/cpuinfo")
    print(cmake_args(cpu_flags(info.read_text())) if info.is_file() else "")
