"""Outputs are atomic and never replace what the zoo did not write. The single bad inputs (one `error:` line, exit 2,
nothing written) are the corpus in tests/bad_inputs.py; these are the cases that take more than one run."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.cli import export_main, quantize_main, run_cli
from common.errors import UserError
from common.io import atomic_path
from models.llama3.model import FAMILY


def _fails(main, argv: list[str], capsys) -> str:
    assert run_cli(main(FAMILY), argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


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


def _listing(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_quantize_and_save_replaces_its_own_output_atomically(tiny, tmp_path: Path, capsys) -> None:
    out = tmp_path / "q"
    argv = ["--checkpoint", tiny["tied"].gguf, "--quantize", "8da8w", "--output", str(out)]
    assert run_cli(quantize_main(FAMILY), argv) == 0
    first = _listing(out)
    argv[3] = "8da4w"
    assert run_cli(quantize_main(FAMILY), argv) == 0  # a previous zoo output may be replaced
    second = _listing(out)
    assert set(first) == set(second) and first["model.safetensors"] != second["model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q"]  # no temp or old copy left beside it
    (out / "mine.txt").write_text("added by the user")
    capsys.readouterr()
    _fails(quantize_main, argv, capsys)  # now it holds something the zoo did not write
    assert (out / "mine.txt").read_text() == "added by the user"


@pytest.mark.slow
def test_export_commits_pte_and_tokenizer_together(tiny, tmp_path: Path, capsys, monkeypatch) -> None:
    """A full disk while writing the tokenizer (after the .pte is written) leaves neither: the .pte and its
    tokenizer files are committed together (issue 10: the .pte used to stay, with no or a stale tokenizer)."""
    import errno

    from common.tokenizer import Tokenizer

    def full_disk(self, directory):
        (Path(directory) / "tokenizer.json").write_text("{half")
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(directory) / "tokenizer.json"))

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("the user's")
    monkeypatch.setattr(Tokenizer, "save", full_disk)
    argv = ["--checkpoint", tiny["tied"].gguf, "--quantize", "fp32", "--no-custom-ops", "--max-seq-len", "4",
            "--max-context-len", "16", "--output", str(out / "m.pte")]
    assert run_cli(export_main(FAMILY), argv) == 2
    err = capsys.readouterr().err.split("\r")[-1].strip()  # after the load bar, which clears its line
    assert err.startswith("error: ") and "\n" not in err and err.endswith("tokenizer.json: No space left on device")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    monkeypatch.undo()
    assert run_cli(export_main(FAMILY), argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "m.pte", "tokenizer.json", "tokenizer_config.json"]
