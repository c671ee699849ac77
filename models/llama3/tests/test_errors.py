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


def _listing(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where", ["user-dir", "cwd", "a-file"])
def test_quantize_and_save_never_deletes_user_data(tiny, tmp_path: Path, capsys, monkeypatch, where: str) -> None:
    """--output naming a non-empty directory the zoo did not write (or `.`, or a file) is refused before any work,
    and everything there stays as it was (issue 10: it used to be emptied)."""
    home = tmp_path / "home"
    (home / "notes").mkdir(parents=True)
    (home / "thesis.tex").write_text("years of work")
    (home / "notes" / "a.txt").write_text("a")
    monkeypatch.chdir(home)
    output = {"user-dir": str(home), "cwd": ".", "a-file": "thesis.tex"}[where]
    before = _listing(home)
    err = _fails(quantize_main, ["--checkpoint", tiny["tied"].gguf, "--output", output], capsys)
    assert f"--output {output}:" in err and ("not empty" in err or "not a directory" in err)
    assert _listing(home) == before and sorted(p.name for p in home.iterdir()) == ["notes", "thesis.tex"]


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


@pytest.mark.parametrize("flags, named", [
    (["--temperature", "-1"], "--temperature -1.0"),
    (["--temperature", "nan"], "--temperature nan"),
    (["--top-p", "2"], "--top-p 2.0"),
    (["--top-p", "0"], "--top-p 0.0"),
    (["--top-k", "-1"], "--top-k -1"),
    (["--max-new-tokens", "0"], "--max-new-tokens 0"),
    (["--max-new-tokens", "-3"], "--max-new-tokens -3"),
    (["--max-context-len", "-1"], "--max-context-len -1"),
    (["--max-context-len", "99999999999"], "--max-context-len 99999999999"),
    (["--system", "be brief"], "--system and --enable-thinking need --chat"),
    (["--no-enable-thinking"], "--system and --enable-thinking need --chat"),
])
def test_inference_flags_out_of_range(tiny, capsys, flags: list[str], named: str) -> None:
    """Checked before anything loads: one line naming the flag (these used to be tracebacks or ignored)."""
    err = _fails(inference_main, ["--checkpoint", tiny["tied"].gguf, *flags], capsys)
    assert named in err


@pytest.mark.parametrize("flags", [["--max-context-len", "-1"], ["--max-seq-len", "0"], ["--max-context-len", "2000000"]])
def test_export_limits_out_of_range(tiny, tmp_path: Path, capsys, flags: list[str]) -> None:
    err = _fails(export_main, ["--checkpoint", tiny["tied"].gguf, *flags, "--output", str(tmp_path / "m.pte")], capsys)
    assert flags[0] in err and "expected 1.." in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case, expected", [
    ("invalid-json", "config.json: not valid JSON"),
    ("array", "config.json: expected a JSON object, got list"),
    ("not-utf8", "config.json: not UTF-8 text"),
    ("zero-heads", "config.json: num_attention_heads must be a positive integer (at most 4194304), got 0"),
    ("string-layers", "config.json: num_hidden_layers must be a positive integer (at most 4194304), got 'two'"),
    ("tampered-recipe", "zoo_quantization: rule 0 needs 'pattern' and 'scheme'"),
])
def test_bad_config_json(tiny, tmp_path: Path, capsys, case: str, expected: str) -> None:
    """A checkpoint dir whose config.json is broken: one line naming the file, never a traceback."""
    import json

    d = tmp_path / "ckpt"
    shutil.copytree(tiny["tied"].dir, d)
    cfg = json.loads((d / "config.json").read_text())
    content = {
        "invalid-json": b"{not json",
        "array": b"[1, 2]",
        "not-utf8": b'{"model_type": "llama\xff"}',
        "zero-heads": json.dumps(cfg | {"num_attention_heads": 0}).encode(),
        "string-layers": json.dumps(cfg | {"num_hidden_layers": "two"}).encode(),
        "tampered-recipe": json.dumps(cfg | {"zoo_quantization": {"name": "x", "rules": [{"scheme": "8da4w"}]}}).encode(),
    }[case]
    (d / "config.json").write_bytes(content)
    out = tmp_path / "out"
    err = _fails(export_main, ["--checkpoint", str(d), "--output", str(out / "m.pte")], capsys)
    assert expected in err and str(d) in err
    _assert_nothing_written(out)


def test_export_output_that_is_a_directory(tiny, tmp_path: Path, capsys) -> None:
    (tmp_path / "m.pte").mkdir()
    err = _fails(export_main, ["--checkpoint", tiny["tied"].gguf, "--output", str(tmp_path / "m.pte")], capsys)
    assert "is a directory" in err


@pytest.mark.parametrize("saved, label, says", [
    ("8da4w", {"name": "relabelled", "rules": [{"pattern": ".*", "scheme": "8da4w", "group_size": 64}]},
     "holds int4 weights in blocks (1, 32), but its recipe 'relabelled' says int4 weights in blocks (1, 64)"),
    ("fp32", {"name": "relabelled", "rules": [{"pattern": ".*", "scheme": "8da4w"}]},
     "holds float, but its recipe 'relabelled' says int4 weights in blocks (1, 32)"),
])
def test_saved_recipe_must_describe_its_tensors(tiny, tmp_path: Path, capsys, saved: str, label: dict,
                                                says: str) -> None:
    """A quantize_and_save dir whose config.json recipe does not match its tensors is refused on load (it used to
    load and run as something else)."""
    import json

    out = tmp_path / "q"
    assert run_cli(quantize_main(FAMILY), ["--checkpoint", tiny["tied"].gguf, "--quantize", saved,
                                           "--output", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    cfg["zoo_quantization"] = label | {"fused": cfg["zoo_quantization"]["fused"]}
    (out / "config.json").write_text(json.dumps(cfg))
    capsys.readouterr()
    err = _fails(inference_main, ["--checkpoint", str(out), "--max-new-tokens", "1"], capsys)
    assert str(out) in err and says in err


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


@pytest.mark.parametrize("case, expected", [
    ("empty", "corrupt safetensors file (Error while deserializing header: header too small)"),
    ("truncated", "corrupt safetensors file (Error while deserializing header"),
    ("huge-header", "corrupt safetensors file (Error while deserializing header: header too large)"),
    ("garbage-header", "corrupt safetensors file (Error while deserializing header: invalid JSON"),
    ("missing-shard", "a file the checkpoint names is missing"),
])
def test_bad_safetensors(tiny, tmp_path: Path, capsys, case: str, expected: str) -> None:
    import json
    import struct

    d = tmp_path / "ckpt"
    shutil.copytree(tiny["tied"].dir, d)
    st = d / "model.safetensors"
    if case == "missing-shard":
        st.unlink()
        index = {"weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors"}}
        (d / "model.safetensors.index.json").write_text(json.dumps(index))
    else:
        st.write_bytes({"empty": b"", "truncated": st.read_bytes()[:1000],
                        "huge-header": struct.pack("<Q", 1 << 60) + b"{}",
                        "garbage-header": struct.pack("<Q", 10) + b"not json!!" + bytes(100)}[case])
    err = _fails(inference_main, ["--checkpoint", str(d), "--max-new-tokens", "1"], capsys)
    assert err.startswith(f"error: {d}: ") and expected in err
