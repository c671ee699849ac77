"""Every case of the bad-input corpus (tests/bad_inputs.py): the exit code, one `error:` line naming the flag or file,
no traceback, and nothing written, moved or deleted — in the case's workspace or in the shared inputs.

Python CLIs run in this process (as `python -m ...` would, through run_cli); the C++ runner as a process. The C++
cases run under AddressSanitizer/UBSan in CI (ZOO_RUNNER_BACKEND=xnnpack-asan, .github/workflows/ci.yml)."""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.bad_inputs import CASES, Case, Materials, make_materials

RUNTIME_LOG = re.compile(r"\[\w+\.cpp:\d+\]")  # ExecuTorch's own log lines ("[cpuinfo_utils.cpp:71] ...")


@pytest.fixture(scope="session")
def materials(tmp_path_factory: pytest.TempPathFactory) -> Materials:
    return make_materials(tmp_path_factory.mktemp("bad-input-materials"))


@pytest.fixture(scope="session")
def cpp_runner() -> Path:
    from runners.tests.conftest import build_runner

    return build_runner("llama3", os.environ.get("ZOO_RUNNER_BACKEND", "xnnpack"))


def listing(root: Path) -> dict[str, tuple]:
    """Every path under `root` with its kind, mode and content: equal before and after means nothing changed."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_mode, p.read_bytes() if p.is_file() and not p.is_symlink() else None)
    return out


def run_python(tool: str, argv: list[str], capsys) -> tuple[int, str]:
    from common.cli import export_main, inference_main, quantize_main, run_cli

    if tool in ("bench", "bench.profile"):
        main = importlib.import_module("bench.run" if tool == "bench" else "bench.profile").main
    else:
        package, cli = tool.split(".")
        module = importlib.import_module(f"models.{package}.{cli}")
        if hasattr(module, "main"):  # a package with CLIs of its own (sgt4t)
            main = module.main
        else:
            family = importlib.import_module(f"models.{package}.model").FAMILY
            main = {"export": export_main, "inference": inference_main, "quantize_and_save": quantize_main}[cli](family)
    capsys.readouterr()
    try:
        code = run_cli(main, argv)
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    return code, capsys.readouterr().err


def stderr_lines(stderr: str) -> list[str]:
    """What a terminal would show: each line as its last carriage-return segment (progress bars redraw in place),
    without blank lines and the runtime's own log lines."""
    lines = (ln.split("\r")[-1].rstrip() for ln in stderr.split("\n"))
    return [ln for ln in lines if ln.strip() and not RUNTIME_LOG.match(ln)]


def fill(text: str, ws: Path, m: Materials) -> str:
    return text.format(ws=ws, **{k: getattr(m, k) for k in ("gguf", "hf", "qwen_gguf", "qwen_hf", "pte", "tok")})


def test_the_corpus_is_large_and_covers_every_tool() -> None:
    assert len(CASES) >= 80 and len({c.id for c in CASES}) == len(CASES)
    tools = {c.tool for c in CASES}
    assert {"cpp", "bench", "bench.profile"} <= tools
    from models import FAMILIES

    assert {f"{f}.{cli}" for f in FAMILIES for cli in ("export", "inference", "quantize_and_save")} & tools >= {
        "llama3.export", "llama3.inference", "llama3.quantize_and_save", "qwen3.export", "qwen3.inference",
        "qwen3.quantize_and_save"}


# the C++ cases build the runner first (a minute or two on a fresh clone): slow, as the other C++ runner tests
@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.tool == "cpp" else [])
                                  for c in CASES])
def test_bad_input(case: Case, materials: Materials, tmp_path: Path, capsys, monkeypatch, request) -> None:
    if not case.as_root and os.geteuid() == 0:
        pytest.skip("root writes through file permissions")
    ws = tmp_path / "ws"
    ws.mkdir()
    if case.setup:
        case.setup(ws, materials)
    argv = [fill(a, ws, materials) for a in case.argv]
    if case.cwd:
        monkeypatch.chdir(fill(case.cwd, ws, materials))
    shared_before, before = listing(materials.root), listing(ws)
    try:
        if case.tool == "cpp":
            runner = request.getfixturevalue("cpp_runner")
            proc = subprocess.run([str(runner), *argv], capture_output=True, text=True, errors="replace", timeout=120,
                                  cwd=os.getcwd())
            code, stderr = proc.returncode, proc.stderr
        else:
            code, stderr = run_python(case.tool, argv, capsys)
    finally:
        with contextlib.suppress(FileNotFoundError):
            (ws / "ro").chmod(0o755)  # so pytest can clean up
    after = listing(ws)
    if (ws / "ro").exists():
        after["ro"] = before["ro"]  # the mode the case set, restored above
    lines = stderr_lines(stderr)
    assert "Traceback" not in stderr and "AddressSanitizer" not in stderr and "runtime error:" not in stderr, stderr
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr
    others = [ln for ln in lines[:-1] if not (ln.startswith("usage:") or ln.startswith(" "))]
    assert not others, f"more than the error line (and usage): {others}"
    line = errors[0]
    assert line.splitlines() == [line], f"the error breaks into lines where a reader splits them: {line!r}"
    assert fill(case.names, ws, materials) in line, line
    assert case.says in line, line
    assert code == case.code, (code, line)
    assert after == before, "the workspace changed"
    assert listing(materials.root) == shared_before, "a shared input changed"
