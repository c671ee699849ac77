"""Bad input gets one actionable line (exit 2) naming the file or limit, and no half-written artefact."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from common.cli import export_main, inference_main, quantize_main, run_cli
from common.errors import UserError
from common.io import atomic_path
from models.llama3.model import FAMILY


def _fails(main, argv: list[str], capsys) -> str:
    assert run_cli(main(FAMILY), argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def _assert_nothing_written(out_dir: Path) -> None:
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


def test_truncated_gguf(tiny, tmp_path: Path, capsys) -> None:
    cut = tmp_path / "cut.gguf"
    data = Path(tiny["tied"].gguf).read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    out = tmp_path / "out"
    err = _fails(export_main, ["--checkpoint", str(cut), "--output", str(out / "m.pte")], capsys)
    assert str(cut) in err and "truncated" in err
    _assert_nothing_written(out)


def test_not_a_gguf(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"\x00" * 1024)
    out = tmp_path / "out"
    err = _fails(export_main, ["--checkpoint", str(bad), "--output", str(out / "m.pte")], capsys)
    assert str(bad) in err and "not a GGUF file" in err
    _assert_nothing_written(out)


def test_missing_tokenizer(tiny, tmp_path: Path, capsys) -> None:
    ckpt = tmp_path / "no_tok"
    shutil.copytree(tiny["untied"].dir, ckpt)
    for f in ckpt.glob("tokenizer*"):
        f.unlink()
    out = tmp_path / "out"
    err = _fails(export_main, ["--checkpoint", str(ckpt), "--output", str(out / "m.pte")], capsys)
    assert str(ckpt) in err and "tokenizer.json" in err
    _assert_nothing_written(out)
    err = _fails(quantize_main, ["--checkpoint", str(ckpt), "--output", str(out / "q")], capsys)
    _assert_nothing_written(out)


def test_missing_pte_and_bad_pte(tmp_path: Path, capsys) -> None:
    err = _fails(inference_main, ["--pte", str(tmp_path / "none.pte")], capsys)
    assert "none.pte: no such .pte file" in err
    junk = tmp_path / "junk.pte"
    junk.write_bytes(b"not a program at all")
    assert "junk.pte: not an ExecuTorch program" in _fails(inference_main, ["--pte", str(junk)], capsys)


def test_prompt_longer_than_context(tiny, capsys) -> None:
    argv = ["--checkpoint", tiny["untied"].dir, "--max-context-len", "8", "--prompt", "one two three four five six seven"]
    err = _fails(inference_main, argv, capsys)
    assert "holds a context of 8" in err and "--max-context-len" in err


def test_wrong_output_suffix_and_bad_limits(tiny, tmp_path: Path, capsys) -> None:
    ckpt = tiny["untied"].dir
    assert "expected a path ending in .pte" in _fails(export_main, ["--checkpoint", ckpt, "--output", str(tmp_path / "m.bin")], capsys)
    argv = ["--checkpoint", ckpt, "--max-seq-len", "64", "--max-context-len", "32", "--output", str(tmp_path / "m.pte")]
    assert "--max-seq-len 64: expected 1..--max-context-len (32)" in _fails(export_main, argv, capsys)
    assert not (tmp_path / "m.pte").exists()


def test_atomic_path_leaves_nothing_on_failure(tmp_path: Path) -> None:
    dest = tmp_path / "model.pte"
    with pytest.raises(UserError):
        with atomic_path(dest) as tmp:
            tmp.write_bytes(b"half a program")
            raise UserError("export failed midway")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(dest) as tmp:
        tmp.write_bytes(b"whole")
    assert dest.read_bytes() == b"whole" and list(tmp_path.iterdir()) == [dest]


def test_atomic_outputs_get_normal_permissions(tmp_path: Path) -> None:
    import os

    from common.io import atomic_dir

    mask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "f.pte") as tmp:
            tmp.write_bytes(b"x")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "a").write_text("y")
    finally:
        os.umask(mask)
    assert (tmp_path / "f.pte").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
