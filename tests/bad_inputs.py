"""The bad-input corpus: every CLI (export, inference, quantize_and_save for each family, the bench, the profiler and
the C++ runner) given one bad input, and what it must answer.

Each case names a tool, its argv, the inputs to write first, the flag or file its one `error:` line must name and
what the line must say. `tests/test_bad_inputs.py` runs every case and checks, besides that line: the exit code, no
traceback, and that nothing in the case's workspace (inputs and outputs) nor in the shared inputs changed.

Placeholders in argv, `names` and `cwd`: {ws} the case's workspace; {gguf}, {hf}, {qwen_gguf}, {qwen_hf}, {pte},
{tok} the shared tiny inputs (`make_materials`).
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Materials:
    """Tiny real inputs shared by every case (never modified: the cases copy what they break)."""

    root: Path
    gguf: Path  # tiny llama, F32 GGUF with a Llama 3 style tokenizer
    hf: Path  # the same model as an HF dir (config.json, model.safetensors, tokenizer files)
    qwen_gguf: Path
    qwen_hf: Path
    pte: Path  # tiny XNNPACK .pte (context 16) with tokenizer.json beside it
    tok: Path  # the tiny tokenizer as an HF directory


def make_materials(root: Path) -> Materials:
    from common.tokenizer import load_tokenizer
    from tests.checkpoints import write_tiny
    from tests.fuzz import make_seeds

    seeds = make_seeds(root / "llama")
    _, qwen_hf, qwen_gguf = write_tiny("qwen3", root / "qwen3", seed=1)
    tok = load_tokenizer(seeds["hf"]).save(root / "tokenizer")
    for f in tok.iterdir():
        shutil.copy(f, seeds["pte"].parent / f.name)
    return Materials(root, seeds["gguf"], seeds["hf"], Path(qwen_gguf), Path(qwen_hf), seeds["pte"], tok)


@dataclass(frozen=True)
class Case:
    id: str
    tool: str  # "<family>.<cli>" (export, inference, quantize_and_save), "bench", "bench.profile" or "cpp"
    argv: tuple[str, ...]
    names: str  # the flag or file the error line names
    says: str  # and what it says about it
    setup: Callable[[Path, Materials], None] | None = None  # writes the case's inputs into its workspace
    code: int = 2  # exit status (the C++ runner: 2 for usage errors, 1 for the rest)
    cwd: str | None = None
    as_root: bool = True  # False: permissions do not stop root, so the case is skipped when run as root


# --- input writers --------------------------------------------------------------------------------------------------


def files(contents: dict[str, bytes | str]) -> Callable[[Path, Materials], None]:
    """Write the given files (paths relative to the workspace)."""

    def setup(ws: Path, m: Materials) -> None:
        for name, data in contents.items():
            path = ws / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data.encode() if isinstance(data, str) else data)

    return setup


def user_home(ws: Path, m: Materials) -> None:
    """A directory of someone's work, which no output may touch."""
    files({"home/thesis.tex": b"years of work", "home/notes/a.txt": b"a"})(ws, m)


def read_only_dir(ws: Path, m: Materials) -> None:
    (ws / "ro").mkdir()
    (ws / "ro").chmod(0o555)


def hf_copy(edit: Callable[[Path], None] | None = None, src: str = "hf") -> Callable[[Path, Materials], None]:
    """A copy of a shared HF dir as {ws}/ckpt, then `edit(dir)`."""

    def setup(ws: Path, m: Materials) -> None:
        shutil.copytree(getattr(m, src), ws / "ckpt")
        if edit:
            edit(ws / "ckpt")

    return setup


def config_json(content: bytes | Callable[[dict], dict]) -> Callable[[Path, Materials], None]:
    def edit(d: Path) -> None:
        path = d / "config.json"
        data = content(json.loads(path.read_text())) if callable(content) else content
        path.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())

    return hf_copy(edit)


def safetensors(content: Callable[[Path], None]) -> Callable[[Path, Materials], None]:
    return hf_copy(lambda d: content(d / "model.safetensors"))


def _missing_shard(st: Path) -> None:
    st.unlink()
    index = {"weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors"}}
    (st.parent / "model.safetensors.index.json").write_text(json.dumps(index))


def _retensor(st: Path, edit: Callable[[dict], dict]) -> None:
    from safetensors.torch import load_file, save_file

    save_file(edit(load_file(st)), st, metadata={"format": "pt"})


def tokenizer_copy(edit: Callable[[Path], None], src: str = "tok") -> Callable[[Path, Materials], None]:
    """A copy of the shared tokenizer dir as {ws}/tok, then `edit(dir)`."""

    def setup(ws: Path, m: Materials) -> None:
        shutil.copytree(getattr(m, src), ws / "tok")
        edit(ws / "tok")

    return setup


def chat_template(template: str) -> Callable[[Path, Materials], None]:
    return tokenizer_copy(lambda d: (d / "chat_template.jinja").write_text(template))


def _one_more_id(d: Path) -> None:
    """An added token one id past the vocabulary: a tokenizer of another, larger model."""
    data = json.loads((d / "tokenizer.json").read_text(encoding="utf-8"))
    new_id = max(*data["model"]["vocab"].values(), *(t["id"] for t in data["added_tokens"])) + 1
    data["added_tokens"].append({"id": new_id, "content": "<|extra|>", "single_word": False, "lstrip": False,
                                 "rstrip": False, "normalized": False, "special": True})
    (d / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def _post_processor(special_tokens: dict) -> Callable[[Path], None]:
    """A tokenizer.json whose post-processor prepends `<x>`, described by `special_tokens`."""

    def edit(d: Path) -> None:
        data = json.loads((d / "tokenizer.json").read_text(encoding="utf-8"))
        data["post_processor"] = {"type": "TemplateProcessing", "special_tokens": special_tokens,
                                  "single": [{"SpecialToken": {"id": "<x>", "type_id": 0}},
                                             {"Sequence": {"id": "A", "type_id": 0}}],
                                  "pair": [{"Sequence": {"id": "A", "type_id": 0}}]}
        (d / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")

    return edit


def _bad_token_id(where: str, bad: str) -> Callable[[Path, Materials], None]:
    """A byte-level tokenizer.json whose vocab or added token carries `bad` as its id (written as raw JSON text)."""
    vocab = f'{{"a": 0, "b": {bad if where == "vocab" else "1"}}}'
    added = f'[{{"id": {bad if where == "added" else "2"}, "content": "<x>"}}]'
    return files({"tok/tokenizer.json": f'{{"model": {{"type": "BPE", "vocab": {vocab}, "merges": []}}, '
                                     f'"added_tokens": {added}, "pre_tokenizer": {{"type": "ByteLevel"}}, '
                                     '"decoder": {"type": "ByteLevel"}}'})


def pte_copy(data: Callable[[bytes], bytes] = lambda b: b, tokenizer: bool = True) -> Callable[[Path, Materials], None]:
    """{ws}/p/model.pte made from the shared .pte's bytes (with its tokenizer files beside it, or none)."""

    def setup(ws: Path, m: Materials) -> None:
        (ws / "p").mkdir()
        (ws / "p" / "model.pte").write_bytes(data(m.pte.read_bytes()))
        if tokenizer:
            for f in m.tok.iterdir():
                shutil.copy(f, ws / "p" / f.name)

    return setup


def gguf_with(**config) -> Callable[[Path, Materials], None]:
    """{ws}/m.gguf: the tiny llama rewritten with HF config fields overridden (q/k left unpermuted: the case fails
    on its metadata before any tensor is read)."""

    def setup(ws: Path, m: Materials) -> None:
        from transformers import AutoModelForCausalLM

        from common.tokenizer import load_tokenizer
        from tests.checkpoints import write_gguf

        model = AutoModelForCausalLM.from_pretrained(m.hf)
        for k, v in config.items():
            setattr(model.config, k, v)
        write_gguf(ws / "m.gguf", model, "llama", load_tokenizer(m.hf), permute_qk=False)

    return setup


def quantized(preset: str, label: dict) -> Callable[[Path, Materials], None]:
    """A quantize_and_save dir ({ws}/q) whose recipe in config.json is replaced by `label`."""

    def setup(ws: Path, m: Materials) -> None:
        from common.cli import quantize_main, run_cli
        from models.llama3.model import FAMILY

        assert run_cli(quantize_main(FAMILY), ["--checkpoint", str(m.gguf), "--quantize", preset,
                                               "--output", str(ws / "q")]) == 0
        cfg = json.loads((ws / "q" / "config.json").read_text())
        cfg["zoo_quantization"] = label | {"fused": cfg["zoo_quantization"]["fused"]}
        (ws / "q" / "config.json").write_text(json.dumps(cfg))

    return setup


# --- the cases ------------------------------------------------------------------------------------------------------

E, INF, Q = "llama3.export", "llama3.inference", "llama3.quantize_and_save"
OUT = ("--output", "{ws}/out/m.pte")  # export cases: where a .pte would go (it must not appear)
GEN = ("--checkpoint", "{gguf}", "--max-new-tokens", "1")  # eager inference on the tiny llama

CASES: list[Case] = [
    # -- class 1: outputs that would overwrite the user's data ---------------------------------------------------------
    Case("quantize-into-users-dir", Q, ("--checkpoint", "{gguf}", "--output", "{ws}/home"), "--output {ws}/home",
         "directory is not empty and was not written by this tool", user_home),
    Case("quantize-into-cwd", Q, ("--checkpoint", "{gguf}", "--output", "."), "--output .", "not empty", user_home,
         cwd="{ws}/home"),
    Case("quantize-onto-a-file", Q, ("--checkpoint", "{gguf}", "--output", "{ws}/home/thesis.tex"),
         "--output {ws}/home/thesis.tex", "exists and is not a directory", user_home),
    Case("quantize-under-a-file", Q, ("--checkpoint", "{gguf}", "--output", "{ws}/home/thesis.tex/q"),
         "--output {ws}/home/thesis.tex/q", "cannot write in", user_home),
    Case("quantize-into-read-only-dir", Q, ("--checkpoint", "{gguf}", "--output", "{ws}/ro/q"), "--output {ws}/ro/q",
         "cannot write in", read_only_dir, as_root=False),
    Case("export-onto-a-directory", E, ("--checkpoint", "{gguf}", *OUT), "--output {ws}/out/m.pte", "is a directory",
         files({"out/m.pte/keep.txt": "mine"})),
    Case("export-under-a-file", E, ("--checkpoint", "{gguf}", "--output", "{ws}/home/thesis.tex/m.pte"),
         "--output {ws}/home/thesis.tex/m.pte", "cannot write in", user_home),
    Case("export-into-read-only-dir", E, ("--checkpoint", "{gguf}", "--output", "{ws}/ro/m.pte"),
         "--output {ws}/ro/m.pte", "cannot write in", read_only_dir, as_root=False),
    Case("export-into-a-checkpoint-dir", E, ("--checkpoint", "{ws}/ckpt", "--output", "{ws}/ckpt/m.pte"),
         "--output {ws}/ckpt/m.pte", "holds tokenizer.json and tokenizer_config.json that no export wrote", hf_copy()),
    Case("export-beside-a-chat-template", E, ("--checkpoint", "{gguf}", *OUT), "--output {ws}/out/m.pte",
         "chat_template.jinja would override", files({"out/chat_template.jinja": "{{ messages }}"})),
    Case("export-wrong-suffix", E, ("--checkpoint", "{gguf}", "--output", "{ws}/m.bin"), "{ws}/m.bin",
         "expected a path ending in .pte"),
    Case("bench-out-is-a-file", "bench", ("--out", "{ws}/home/thesis.tex"), "--out {ws}/home/thesis.tex",
         "exists and is not a directory", user_home),
    Case("bench-out-under-a-file", "bench", ("--out", "{ws}/home/thesis.tex/results"),
         "--out {ws}/home/thesis.tex/results", "cannot write in", user_home),
    # -- class 3: broken checkpoints ---------------------------------------------------------------------------------
    Case("gguf-truncated", E, ("--checkpoint", "{ws}/cut.gguf", *OUT), "{ws}/cut.gguf", "truncated",
         lambda ws, m: (ws / "cut.gguf").write_bytes(m.gguf.read_bytes()[: m.gguf.stat().st_size * 2 // 3])),
    Case("gguf-zeros", E, ("--checkpoint", "{ws}/z.gguf", *OUT), "{ws}/z.gguf", "not a GGUF file",
         files({"z.gguf": bytes(1024)})),
    Case("gguf-empty", E, ("--checkpoint", "{ws}/e.gguf", *OUT), "{ws}/e.gguf", "not a GGUF file", files({"e.gguf": b""})),
    Case("gguf-zero-heads", E, ("--checkpoint", "{ws}/m.gguf", *OUT), "{ws}/m.gguf",
         "attention.head_count must be a positive integer", gguf_with(num_attention_heads=0)),
    Case("gguf-of-another-family", E, ("--checkpoint", "{qwen_gguf}", *OUT), "{qwen_gguf}", "models.qwen3"),
    Case("hf-of-another-family", E, ("--checkpoint", "{qwen_hf}", *OUT), "{qwen_hf}", "models.qwen3"),
    Case("llama-gguf-to-qwen3", "qwen3.export", ("--checkpoint", "{gguf}", *OUT), "{gguf}", "models.llama3"),
    Case("checkpoint-missing", E, ("--checkpoint", "{ws}/nowhere", *OUT), "{ws}/nowhere", "no such checkpoint"),
    Case("checkpoint-path-with-a-newline", E, ("--checkpoint", "{ws}/two\nlines", *OUT), "{ws}/two\\nlines",
         "no such checkpoint"),
    Case("checkpoint-empty-dir", E, ("--checkpoint", "{ws}/empty", *OUT), "{ws}/empty", "no config.json",
         lambda ws, m: (ws / "empty").mkdir()),
    Case("checkpoint-text-file", E, ("--checkpoint", "{ws}/notes.txt", *OUT), "{ws}/notes.txt",
         "expected a .gguf file or a checkpoint directory with config.json", files({"notes.txt": "hello"})),
    Case("qwen3-needs-a-checkpoint", "qwen3.quantize_and_save", ("--output", "{ws}/q"), "--checkpoint",
         "is required for Qwen3 (no bundled weights)"),
    Case("config-invalid-json", E, ("--checkpoint", "{ws}/ckpt", *OUT), "{ws}/ckpt/config.json", "not valid JSON",
         config_json(b"{not json")),
    Case("config-array", E, ("--checkpoint", "{ws}/ckpt", *OUT), "{ws}/ckpt/config.json",
         "expected a JSON object, got list", config_json(b"[1, 2]")),
    Case("config-not-utf8", E, ("--checkpoint", "{ws}/ckpt", *OUT), "{ws}/ckpt/config.json", "not UTF-8 text",
         config_json(b'{"model_type": "llama\xff"}')),
    Case("config-zero-heads", E, ("--checkpoint", "{ws}/ckpt", *OUT), "{ws}/ckpt/config.json",
         "num_attention_heads must be a positive integer (at most 4194304), got 0",
         config_json(lambda c: c | {"num_attention_heads": 0})),
    Case("config-string-layers", E, ("--checkpoint", "{ws}/ckpt", *OUT), "{ws}/ckpt/config.json",
         "num_hidden_layers must be a positive integer (at most 4194304), got 'two'",
         config_json(lambda c: c | {"num_hidden_layers": "two"})),
    Case("config-huge-hidden", E, ("--checkpoint", "{ws}/ckpt", *OUT), "{ws}/ckpt/config.json",
         "hidden_size must be a positive integer (at most 4194304), got 1099511627776",
         config_json(lambda c: c | {"hidden_size": 1 << 40})),
    Case("config-negative-vocab", E, ("--checkpoint", "{ws}/ckpt", *OUT), "{ws}/ckpt/config.json",
         "vocab_size must be a positive integer", config_json(lambda c: c | {"vocab_size": -5})),
    Case("config-no-model-type", E, ("--checkpoint", "{ws}/ckpt", *OUT), "{ws}/ckpt", "model_type",
         config_json(lambda c: {k: v for k, v in c.items() if k != "model_type"})),
    Case("config-tampered-recipe", E, ("--checkpoint", "{ws}/ckpt", *OUT), "{ws}/ckpt",
         "zoo_quantization: rule 0 needs 'pattern' and 'scheme'",
         config_json(lambda c: c | {"zoo_quantization": {"name": "x", "rules": [{"scheme": "8da4w"}]}})),
    Case("hf-without-tokenizer", E, ("--checkpoint", "{ws}/ckpt", *OUT), "{ws}/ckpt", "tokenizer.json",
         hf_copy(lambda d: [f.unlink() for f in d.glob("tokenizer*")])),
    Case("export-tokenizer-missing", E, ("--checkpoint", "{gguf}", "--tokenizer", "{ws}/none.json", *OUT),
         "{ws}/none.json", "no such file or directory"),
    Case("safetensors-empty", E, ("--checkpoint", "{ws}/ckpt", *OUT), "{ws}/ckpt",
         "corrupt safetensors file (Error while deserializing header: header too small)",
         safetensors(lambda st: st.write_bytes(b""))),
    Case("safetensors-truncated", E, ("--checkpoint", "{ws}/ckpt", *OUT), "{ws}/ckpt", "corrupt safetensors file",
         safetensors(lambda st: st.write_bytes(st.read_bytes()[:1000]))),
    Case("safetensors-huge-header", E, ("--checkpoint", "{ws}/ckpt", *OUT), "{ws}/ckpt", "header too large",
         safetensors(lambda st: st.write_bytes(struct.pack("<Q", 1 << 60) + b"{}"))),
    Case("safetensors-garbage-header", E, ("--checkpoint", "{ws}/ckpt", *OUT), "{ws}/ckpt", "invalid JSON",
         safetensors(lambda st: st.write_bytes(struct.pack("<Q", 10) + b"not json!!" + bytes(100)))),
    Case("safetensors-missing-shard", E, ("--checkpoint", "{ws}/ckpt", *OUT), "{ws}/ckpt",
         "a file the checkpoint names is missing", safetensors(_missing_shard)),
    Case("safetensors-index-not-json", E, ("--checkpoint", "{ws}/ckpt", *OUT), "model.safetensors.index.json",
         "not valid JSON", safetensors(lambda st: (st.unlink(), (st.parent / "model.safetensors.index.json")
                                                   .write_text("{oops")))),
    Case("safetensors-index-escapes-the-dir", E, ("--checkpoint", "{ws}/ckpt", *OUT), "model.safetensors.index.json",
         "shard file names in its directory", safetensors(lambda st: (st.parent / "model.safetensors.index.json")
                                                           .write_text('{"weight_map": {"a": "../../etc/passwd"}}'))),
    Case("safetensors-missing-tensor", E, ("--checkpoint", "{ws}/ckpt", *OUT), "{ws}/ckpt",
         "model.norm.weight", safetensors(lambda st: _retensor(st, lambda t: {k: v for k, v in t.items()
                                                                               if k != "model.norm.weight"}))),
    Case("safetensors-wrong-shape", E, ("--checkpoint", "{ws}/ckpt", *OUT), "{ws}/ckpt", "model.norm.weight",
         safetensors(lambda st: _retensor(st, lambda t: t | {"model.norm.weight": t["model.norm.weight"][:3]}))),
    Case("saved-recipe-wrong-group", INF, ("--checkpoint", "{ws}/q", "--max-new-tokens", "1"), "{ws}/q",
         "holds int4 weights in blocks (1, 32), but its recipe 'relabelled' says int4 weights in blocks (1, 64)",
         quantized("8da4w", {"name": "relabelled", "rules": [{"pattern": ".*", "scheme": "8da4w", "group_size": 64}]})),
    Case("saved-recipe-fp32-as-int4", INF, ("--checkpoint", "{ws}/q", "--max-new-tokens", "1"), "{ws}/q",
         "holds float, but its recipe 'relabelled' says int4 weights",
         quantized("fp32", {"name": "relabelled", "rules": [{"pattern": ".*", "scheme": "8da4w"}]})),
    # -- class 3: recipes and flags ------------------------------------------------------------------------------------
    Case("quantize-unknown-preset", Q, ("--checkpoint", "{gguf}", "--quantize", "4bit", "--output", "{ws}/q"),
         "--quantize", "invalid choice: '4bit'"),
    Case("group-size-not-allowed", E, ("--checkpoint", "{gguf}", "--group-size", "48", *OUT), "--group-size",
         "invalid choice: 48"),
    Case("backend-unknown", E, ("--checkpoint", "{gguf}", "--backend", "gpu", *OUT), "--backend",
         "invalid choice: 'gpu'"),
    Case("recipe-and-preset", Q, ("--checkpoint", "{gguf}", "--recipe", "{ws}/r.json", "--quantize", "8da8w",
                                  "--output", "{ws}/q"), "--recipe FILE", "replaces --quantize",
         files({"r.json": '{"name": "r", "rules": [{"pattern": ".*", "scheme": "8da8w"}]}'})),
    Case("recipe-missing", Q, ("--checkpoint", "{gguf}", "--recipe", "{ws}/none.yaml", "--output", "{ws}/q"),
         "--recipe {ws}/none.yaml", "no such file"),
    Case("recipe-not-utf8", Q, ("--checkpoint", "{gguf}", "--recipe", "{ws}/r.yaml", "--output", "{ws}/q"),
         "--recipe {ws}/r.yaml", "not UTF-8 text", files({"r.yaml": b"name: caf\xe9\n"})),
    Case("recipe-bad-yaml", Q, ("--checkpoint", "{gguf}", "--recipe", "{ws}/r.yaml", "--output", "{ws}/q"),
         "--recipe {ws}/r.yaml", "cannot parse", files({"r.yaml": "rules: [unclosed\n"})),
    Case("recipe-unknown-scheme", Q, ("--checkpoint", "{gguf}", "--recipe", "{ws}/r.json", "--output", "{ws}/q"),
         "{ws}/r.json", "int3", files({"r.json": '{"name": "r", "rules": [{"pattern": ".*", "scheme": "int3"}]}'})),
    Case("recipe-bad-regex", Q, ("--checkpoint", "{gguf}", "--recipe", "{ws}/r.json", "--output", "{ws}/q"),
         "{ws}/r.json", "pattern", files({"r.json": '{"name": "r", "rules": [{"pattern": "(", "scheme": "8da4w"}]}'})),
    Case("recipe-bad-group", Q, ("--checkpoint", "{gguf}", "--recipe", "{ws}/r.json", "--output", "{ws}/q"),
         "{ws}/r.json", "group_size",
         files({"r.json": '{"name": "r", "rules": [{"pattern": ".*", "scheme": "8da4w", "group_size": 48}]}'})),
    Case("export-seq-longer-than-context", E, ("--checkpoint", "{gguf}", "--max-seq-len", "64", "--max-context-len",
                                               "32", *OUT), "--max-seq-len 64", "expected 1..--max-context-len (32)"),
    Case("export-attention-sink-one-value", E, ("--checkpoint", "{gguf}", "--attention-sink", "4", *OUT),
         "--attention-sink", "expected SINK,WINDOW"),
    Case("export-bf16-xnnpack", E, ("--checkpoint", "{gguf}", "--dtype", "bf16", *OUT), "--dtype bf16",
         "--backend xnnpack runs fp32 only"),
    Case("export-bf16-custom-ops", E, ("--checkpoint", "{gguf}", "--dtype", "bf16", "--backend", "portable", *OUT),
         "--dtype bf16", "add --no-custom-ops"),
    Case("export-bf16-quantized", E, ("--checkpoint", "{gguf}", "--dtype", "bf16", "--backend", "portable",
                                      "--no-custom-ops", *OUT), "--dtype bf16", "use --quantize fp32"),
    Case("export-dtype-fp16", E, ("--checkpoint", "{gguf}", "--dtype", "fp16", *OUT), "--dtype",
         "invalid choice: 'fp16'"),
    Case("export-local-global-words", E, ("--checkpoint", "{gguf}", "--local-global", "wide", *OUT), "--local-global",
         "expected comma-separated window sizes"),
    Case("export-config-unknown-key", E, ("--config", "{ws}/c.yaml"), "{ws}/c.yaml",
         "unknown key 'export.max_seq_len'", files({"c.yaml": "export: {max_seq_len: 8}\n"})),
    Case("export-config-missing", E, ("--config", "{ws}/none.yaml", *OUT), "{ws}/none.yaml", "no such file"),
    Case("export-seq-zero", E, ("--checkpoint", "{gguf}", "--max-seq-len", "0", *OUT), "--max-seq-len 0",
         "expected 1.."),
    Case("export-context-negative", E, ("--checkpoint", "{gguf}", "--max-context-len", "-1", *OUT),
         "--max-context-len -1", "expected 1.."),
    Case("export-context-absurd", E, ("--checkpoint", "{gguf}", "--max-context-len", "2000000", *OUT),
         "--max-context-len 2000000", "expected 1.."),
    Case("export-seq-not-a-number", E, ("--checkpoint", "{gguf}", "--max-seq-len", "lots", *OUT), "--max-seq-len",
         "invalid int value: 'lots'"),
    # -- inference flags -----------------------------------------------------------------------------------------------
    Case("temperature-negative", INF, (*GEN, "--temperature", "-1"), "--temperature -1.0", "expected a finite value"),
    Case("temperature-nan", INF, (*GEN, "--temperature", "nan"), "--temperature nan", "expected a finite value"),
    Case("top-p-above-one", INF, (*GEN, "--top-p", "2"), "--top-p 2.0", "expected a value in (0, 1]"),
    Case("top-p-zero", INF, (*GEN, "--top-p", "0"), "--top-p 0.0", "expected a value in (0, 1]"),
    Case("top-k-negative", INF, (*GEN, "--top-k", "-1"), "--top-k -1", "expected >= 0"),
    Case("min-p-above-one", INF, (*GEN, "--min-p", "1.5"), "--min-p 1.5", "expected a value in [0, 1]"),
    Case("repetition-penalty-zero", INF, (*GEN, "--repetition-penalty", "0"), "--repetition-penalty 0.0",
         "expected a finite value > 0"),
    Case("cpu-threads-negative", INF, (*GEN, "--cpu-threads", "-2"), "--cpu-threads -2", "expected at least 0"),
    Case("etdump-without-pte", INF, (*GEN, "--etdump", "{ws}/x.etdp"), "--etdump", "pass --pte"),
    Case("interactive-with-prompt", INF, (*GEN, "--interactive", "--prompt", "hi"), "--prompt",
         "not allowed with argument --interactive"),
    Case("max-new-tokens-zero", INF, ("--checkpoint", "{gguf}", "--max-new-tokens", "0"), "--max-new-tokens 0",
         "expected at least 1"),
    Case("max-new-tokens-negative", INF, ("--checkpoint", "{gguf}", "--max-new-tokens", "-3"), "--max-new-tokens -3",
         "expected at least 1"),
    Case("inference-context-negative", INF, (*GEN, "--max-context-len", "-1"), "--max-context-len -1", "expected 1.."),
    Case("inference-context-absurd", INF, (*GEN, "--max-context-len", "99999999999"), "--max-context-len 99999999999",
         "expected 1.."),
    Case("system-without-chat", INF, (*GEN, "--system", "be brief"), "--system", "need --chat"),
    Case("thinking-without-chat", "qwen3.inference", ("--checkpoint", "{qwen_gguf}", "--no-enable-thinking"),
         "--enable-thinking", "need --chat"),
    Case("pte-and-checkpoint", INF, ("--pte", "{pte}", "--checkpoint", "{gguf}"), "--checkpoint",
         "not allowed with argument --pte"),
    Case("prompt-and-prompt-file", INF, (*GEN, "--prompt", "hi", "--prompt-file", "{ws}/p.txt"), "--prompt-file",
         "not allowed with argument --prompt", files({"p.txt": "hi"})),
    Case("prompt-file-missing", INF, (*GEN, "--prompt-file", "{ws}/p.txt"), "--prompt-file {ws}/p.txt", "no such file"),
    Case("prompt-file-not-utf8", INF, (*GEN, "--prompt-file", "{ws}/p.txt"), "--prompt-file {ws}/p.txt",
         "not UTF-8 text (malformed byte at offset 3)", files({"p.txt": b"caf\xe9 au lait"})),
    Case("prompt-file-is-a-dir", INF, (*GEN, "--prompt-file", "{ws}"), "--prompt-file {ws}", "not a file"),
    Case("prompt-longer-than-context", INF, ("--checkpoint", "{gguf}", "--max-context-len", "8", "--prompt",
                                           "one two three four five six seven"), "--max-context-len",
         "holds a context of 8"),
    # -- .pte files and tokenizers in the Python runner --------------------------------------------------------------
    Case("pte-missing", INF, ("--pte", "{ws}/none.pte"), "{ws}/none.pte", "no such .pte file"),
    Case("pte-junk", INF, ("--pte", "{ws}/p/model.pte"), "{ws}/p/model.pte", "not an ExecuTorch program",
         pte_copy(lambda b: b"not a program at all")),
    Case("pte-truncated", INF, ("--pte", "{ws}/p/model.pte"), "{ws}/p/model.pte", "cannot load",
         pte_copy(lambda b: b[: len(b) // 2])),
    Case("pte-aborting-program", INF, ("--pte", str(DATA / "fuzz_value_index_out_of_range.pte"), "--tokenizer",
                                     "{tok}"), "fuzz_value_index_out_of_range.pte", "cannot load ExecuTorch program"),
    Case("pte-without-tokenizer", INF, ("--pte", "{ws}/p/model.pte"), "{ws}/p/tokenizer.json",
         "no such file or directory", pte_copy(tokenizer=False)),
    Case("pte-prompt-longer-than-context", INF, ("--pte", "{pte}", "--prompt", "a b c d e f g h i j k l m n o p q r"),
         "model.pte", "holds a context of 16"),
    Case("tokenizer-larger-than-pte", INF, ("--pte", "{pte}", "--tokenizer", "{ws}/tok", "--prompt", "hi <|extra|>"),
         "model.pte", "is outside model.pte's vocabulary", tokenizer_copy(_one_more_id)),
    Case("tokenizer-dir-missing", INF, ("--pte", "{pte}", "--tokenizer", "{ws}/none"), "{ws}/none",
         "no such file or directory"),
    Case("tokenizer-json-invalid", INF, ("--pte", "{pte}", "--tokenizer", "{ws}/tok"), "{ws}/tok/tokenizer.json",
         "not a valid tokenizer.json", tokenizer_copy(lambda d: (d / "tokenizer.json").write_text("{half"))),
    Case("tokenizer-config-invalid", INF, ("--pte", "{pte}", "--tokenizer", "{ws}/tok"),
         "{ws}/tok/tokenizer_config.json", "cannot read tokenizer config",
         tokenizer_copy(lambda d: (d / "tokenizer_config.json").write_text("[1, 2"))),
    *(Case(f"tokenizer-post-processor-{name}", INF, ("--pte", "{pte}", "--tokenizer", "{ws}/tok"),
           "{ws}/tok/tokenizer.json", "inconsistent tokenizer.json", tokenizer_copy(_post_processor(special)))
      for name, special in (("unmapped-token", {}),
                            ("id-past-the-vocabulary", {"<x>": {"id": "<x>", "ids": [99999], "tokens": ["<x>"]}}))),
    Case("chat-without-template", INF, ("--pte", "{pte}", "--chat"), "tokenizer.json", "has no chat template"),
    Case("chat-template-not-utf8", INF, ("--pte", "{pte}", "--tokenizer", "{ws}/tok", "--chat"),
         "{ws}/tok/chat_template.jinja", "cannot read the chat template",
         tokenizer_copy(lambda d: (d / "chat_template.jinja").write_bytes(b"{{ 'caf\xe9' }}"))),
    Case("chat-template-include", INF, ("--pte", "{pte}", "--tokenizer", "{ws}/tok", "--chat"), "{ws}/tok/chat_template.jinja",
         "include, import and extends are not allowed", chat_template("{% include '/etc/passwd' %}")),
    Case("chat-template-divides-by-zero", INF, ("--pte", "{pte}", "--tokenizer", "{ws}/tok", "--chat"),
         "{ws}/tok/chat_template.jinja", "ZeroDivisionError", chat_template("{{ 1 // 0 }}")),
    Case("chat-template-huge-output", INF, ("--pte", "{pte}", "--tokenizer", "{ws}/tok", "--chat"), "{ws}/tok/chat_template.jinja",
         "a repetition of 10000000000 items", chat_template("{{ 'x' * 10**10 }}")),
    Case("chat-template-never-ends", INF, ("--pte", "{pte}", "--tokenizer", "{ws}/tok", "--chat"), "{ws}/tok/chat_template.jinja",
         "rendering took longer than", chat_template("{% for i in range(99999) %}{% for j in range(99999) %}{{ '' }}"
                                                     "{% endfor %}{% endfor %}")),
    Case("chat-template-syntax-error", INF, ("--pte", "{pte}", "--tokenizer", "{ws}/tok", "--chat"), "{ws}/tok/chat_template.jinja",
         "syntax error on line 1", chat_template("{% if %}")),
    # -- bench -------------------------------------------------------------------------------------------------------
    Case("bench-models-empty", "bench", ("--models", ""), "--models", "expected a comma-separated list"),
    Case("bench-models-unknown", "bench", ("--models", "gpt5"), "--models gpt5", "not registered"),
    Case("bench-engines-empty", "bench", ("--engines", ","), "--engines", "expected a comma-separated list"),
    Case("bench-engines-unknown", "bench", ("--engines", "ours,vllm"), "--engines vllm", "expected some of"),
    Case("bench-builds-empty", "bench", ("--builds", ""), "--builds", "expected a comma-separated list"),
    Case("bench-builds-unknown", "bench", ("--builds", "int2"), "--builds int2", "not a build of"),
    Case("bench-prompt-lens-empty", "bench", ("--prompt-lens", ""), "--prompt-lens", "expected a comma-separated"),
    Case("bench-prompt-lens-zero", "bench", ("--prompt-lens", "128,0"), "--prompt-lens",
         "expected a positive integer, got '0'"),
    Case("bench-prompt-lens-words", "bench", ("--prompt-lens", "short"), "--prompt-lens",
         "expected a positive integer, got 'short'"),
    Case("bench-decode-tokens-zero", "bench", ("--decode-tokens", "0"), "--decode-tokens", "expected a positive"),
    Case("bench-ppl-tokens-one", "bench", ("--ppl-tokens", "1"), "--ppl-tokens 1", "expected at least 2"),
    Case("bench-repeats-zero", "bench", ("--repeats", "0"), "--repeats", "expected a positive integer"),
    Case("bench-threads-negative", "bench", ("--threads", "-4"), "--threads", "expected a positive integer"),
    Case("bench-text-missing", "bench", ("--text", "{ws}/none.txt"), "--text {ws}/none.txt", "no such file"),
    Case("bench-text-binary", "bench", ("--text", "{ws}/a.out"), "--text {ws}/a.out", "not UTF-8 text",
         files({"a.out": b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4})),
    Case("bench-text-latin1", "bench", ("--text", "{ws}/t.txt"), "--text {ws}/t.txt", "not UTF-8 text",
         files({"t.txt": "Liberté, égalité, fraternité".encode("latin-1")})),
    Case("bench-text-too-short", "bench", ("--text", "{ws}/t.txt", "--engines", "transformers"), "{ws}/t.txt",
         "tokens, fewer than the 512 scored for perplexity", files({"t.txt": "Too short to score."})),
    Case("profile-pte-missing", "bench.profile", ("--pte", "{ws}/none.pte"), "{ws}/none.pte", "no such .pte file"),
    Case("profile-context-zero", "bench.profile", ("--pte", "{pte}", "--context", "0"), "--context",
         "expected a positive integer"),
    Case("profile-past-the-context", "bench.profile", ("--pte", "{pte}", "--context", "12", "--tokens", "8"),
         "--context 12", "more than"),
    # -- the C++ runner ----------------------------------------------------------------------------------------------
    Case("cpp-no-model", "cpp", (), "--model", "--model is required"),
    Case("cpp-model-without-value", "cpp", ("--model",), "--model", "expects a value"),
    Case("cpp-unknown-flag", "cpp", ("--model", "{pte}", "--bogus"), "--bogus", "unknown"),
    Case("cpp-max-new-tokens-words", "cpp", ("--model", "{pte}", "--max-new-tokens", "many"), "--max-new-tokens",
         "expects an integer, got 'many'"),
    Case("cpp-max-new-tokens-zero", "cpp", ("--model", "{pte}", "--max-new-tokens", "0"), "--max-new-tokens",
         "must be >= 1"),
    Case("cpp-temperature-negative", "cpp", ("--model", "{pte}", "--temperature", "-1"), "--temperature",
         "must be >= 0"),
    Case("cpp-temperature-nan", "cpp", ("--model", "{pte}", "--temperature", "nan"), "--temperature",
         "expects a number, got 'nan'"),
    Case("cpp-top-p-zero", "cpp", ("--model", "{pte}", "--top-p", "0"), "--top-p", "must be in (0, 1]"),
    Case("cpp-top-k-negative", "cpp", ("--model", "{pte}", "--top-k", "-2"), "--top-k", "must be >= 0"),
    Case("cpp-min-p-above-one", "cpp", ("--model", "{pte}", "--min-p", "2"), "--min-p", "must be in [0, 1]"),
    Case("cpp-repetition-penalty-negative", "cpp", ("--model", "{pte}", "--repetition-penalty", "-1"),
         "--repetition-penalty", "must be > 0"),
    Case("cpp-cpu-threads-negative", "cpp", ("--model", "{pte}", "--cpu-threads", "-1"), "--cpu-threads",
         "must be >= 0"),
    Case("cpp-interactive-with-prompt-ids", "cpp", ("--model", "{pte}", "--interactive", "--prompt-ids", "{ws}/ids"),
         "--interactive", "cannot go with", files({"ids": "1 2"})),
    Case("cpp-system-without-chat", "cpp", ("--model", "{pte}", "--system", "x"), "--system", "need --chat"),
    Case("cpp-flag-with-value", "cpp", ("--model", "{pte}", "--chat=yes"), "--chat", "takes no value"),
    Case("cpp-prompt-ids-with-chat", "cpp", ("--model", "{pte}", "--prompt-ids", "{ws}/ids", "--chat"),
         "--prompt-ids", "cannot go with --chat", files({"ids": "1 2"})),
    Case("cpp-pte-missing", "cpp", ("--model", "{ws}/none.pte"), "{ws}/none.pte", "no such .pte file", code=1),
    Case("cpp-pte-junk", "cpp", ("--model", "{ws}/p/model.pte"), "{ws}/p/model.pte", "not an ExecuTorch program",
         pte_copy(lambda b: b"this is not a flatbuffer at all" * 10), code=1),
    Case("cpp-pte-truncated", "cpp", ("--model", "{ws}/p/model.pte"), "{ws}/p/model.pte", "cannot load",
         pte_copy(lambda b: b[:4096]), code=1),
    Case("cpp-pte-aborting-program", "cpp", ("--model", str(DATA / "fuzz_value_index_out_of_range.pte"),
                                             "--tokenizer", "{tok}", "--prompt", "a"),
         "fuzz_value_index_out_of_range.pte", "the ExecuTorch runtime stopped on this program", code=1),
    Case("cpp-tokenizer-missing", "cpp", ("--model", "{pte}", "--tokenizer", "{ws}/none.json"), "{ws}/none.json",
         "no such tokenizer", code=1),
    Case("cpp-tokenizer-json-invalid", "cpp", ("--model", "{pte}", "--tokenizer", "{ws}/tok"),
         "{ws}/tok/tokenizer.json", "not a valid tokenizer.json",
         files({"tok/tokenizer.json": '{"model": {"type": "BPE", "vocab": {"a": 0}, '}), code=1),
    Case("cpp-tokenizer-control-character", "cpp", ("--tokenize-only", "--tokenizer", "{ws}/tok", "--prompt", "a"),
         "{ws}/tok/tokenizer.json", "unexpected character '\\x1c'", files({"tok/tokenizer.json": '{"model": \x1c}'}),
         code=1),
    Case("cpp-tokenizer-wordpiece", "cpp", ("--model", "{pte}", "--tokenizer", "{ws}/tok"), "{ws}/tok/tokenizer.json",
         "WordPiece is not supported",
         files({"tok/tokenizer.json": '{"model": {"type": "WordPiece", "vocab": {"a": 0}}}'}), code=1),
    Case("cpp-tokenizer-config-invalid", "cpp", ("--model", "{pte}", "--tokenizer", "{ws}/tok"),
         "{ws}/tok/tokenizer_config.json", "not a valid",
         tokenizer_copy(lambda d: (d / "tokenizer_config.json").write_text("[1, 2")), code=1),
    *(Case(f"cpp-token-id-{bad}-in-{where}", "cpp", ("--tokenize-only", "--tokenizer", "{ws}/tok", "--prompt", "a"),
           "{ws}/tok/tokenizer.json", "expected an integer in [0, ", _bad_token_id(where, bad), code=1)
      for where in ("vocab", "added") for bad in ("-5", "99999999999", "1.5", "1e300", '"7"')),
    Case("cpp-tokenizer-larger-than-pte", "cpp", ("--model", "{pte}", "--tokenizer", "{ws}/tok"),
         "{ws}/tok", "(wrong tokenizer?)", tokenizer_copy(_one_more_id), code=1),
    Case("cpp-prompt-longer-than-context", "cpp", ("--model", "{pte}", "--prompt", "a b c d e f g h i j k l m n o p q r"),
         "{pte}", "holds a context of 16", code=1),
    Case("cpp-prompt-file-missing", "cpp", ("--model", "{pte}", "--prompt-file", "{ws}/p.txt"),
         "--prompt-file {ws}/p.txt", "no such file", code=1),
    Case("cpp-prompt-file-not-utf8", "cpp", ("--model", "{pte}", "--prompt-file", "{ws}/p.txt"),
         "--prompt-file {ws}/p.txt", "not UTF-8 text (malformed byte at offset 3)",
         files({"p.txt": b"caf\xe9 au lait"}), code=1),
    Case("cpp-prompt-file-is-a-dir", "cpp", ("--model", "{pte}", "--prompt-file", "{ws}"), "--prompt-file {ws}",
         "not a file", code=1),
    Case("cpp-prompt-ids-out-of-vocab", "cpp", ("--model", "{pte}", "--prompt-ids", "{ws}/ids"), "{ws}/ids",
         "'99999' is not a token id", files({"ids": "1 99999"}), code=1),
    Case("cpp-prompt-ids-words", "cpp", ("--model", "{pte}", "--prompt-ids", "{ws}/ids"), "{ws}/ids",
         "'two' is not a token id", files({"ids": "1 two"}), code=1),
    Case("cpp-prompt-ids-empty", "cpp", ("--model", "{pte}", "--prompt-ids", "{ws}/ids"), "{ws}/ids",
         "no token ids", files({"ids": ""}), code=1),
    Case("cpp-chat-without-template", "cpp", ("--model", "{pte}", "--chat"), "tokenizer", "chat template", code=1),
    Case("cpp-chat-unknown-template", "cpp", ("--model", "{pte}", "--tokenizer", "{ws}/tok", "--chat"),
         "{ws}/tok", "chat format", chat_template("{{ messages[0]['content'] | upper }}"), code=1),
    # sgt4t: an SGT directory is its own thing (config.json with an `sgt4t` key)
    Case("sgt4t-export-missing-dir", "sgt4t.export", ("--sgt", "{ws}/nosuch", *OUT), "{ws}/nosuch",
         "not an SGT directory"),
    Case("sgt4t-export-an-llm-dir", "sgt4t.export", ("--sgt", "{hf}", *OUT), "{hf}/config.json", "not an SGT config"),
    Case("sgt4t-export-bad-quantize", "sgt4t.export", ("--sgt", "{hf}", "--quantize", "int3", *OUT), "--quantize",
         "expected one of 8da4w, 8da8w, fp32"),
    Case("sgt4t-train-bad-alpha", "sgt4t.train", ("--base", "{gguf}", "--alpha", "2", "--output", "{ws}/sgt"),
         "--alpha 2", "expected a weight in [0, 1]"),
    Case("sgt4t-train-base-is-a-pte", "sgt4t.train", ("--base", "{pte}", "--output", "{ws}/sgt"), "{pte}",
         "expected a .gguf file or a checkpoint directory"),
    Case("sgt4t-train-into-users-dir", "sgt4t.train", ("--base", "{gguf}", "--output", "{ws}/home"),
         "--output {ws}/home", "not empty", user_home),
]
