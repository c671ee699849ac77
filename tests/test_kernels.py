"""The kernel-library registry (common/kernels.py) against what is really there: the runners' kernel files and
the Python runtime's registered operators."""

from __future__ import annotations

from pathlib import Path

from common.kernels import KERNEL_LIBRARIES, library_for, runtime_operator_names

ROOT = Path(__file__).resolve().parents[1]


def test_declared_cpp_sources_are_the_runners_kernel_files() -> None:
    declared = {src for lib in KERNEL_LIBRARIES for src in lib.cpp_sources}
    on_disk = {str(p.relative_to(ROOT)) for p in (ROOT / "runners" / "kernels").glob("*.cpp")}
    assert declared == on_disk
    for lib in KERNEL_LIBRARIES:
        assert lib.cpp_sources or lib.cpp_target, lib.name  # every library reaches the C++ runners somehow


def test_every_declared_op_has_a_kernel_once_loaded() -> None:
    available = {name.split(".")[0] for name in runtime_operator_names()}
    for lib in KERNEL_LIBRARIES:
        assert set(lib.ops) <= available, (lib.name, set(lib.ops) - available)
    assert library_for("llama::custom_sdpa.out").name == "llama"
    assert library_for("aten::add.out") is None
