"""`export --config FILE.yaml`: the export flags as a file, in export_llm's `LlmConfig` sections and key names where
the meaning is the same (`base`, `model`, `export`, `quantization`, `backend`, `debug`); flags on the command line
override it. The file becomes the flags it stands for, placed before the command line's (argparse keeps the last),
so a config and the equivalent flags are one export.

    base:         {checkpoint: PATH, tokenizer_path: FILE}
    model:        {use_sdpa_with_kv_cache: true, enable_embeddings_input: false, local_global_attention: [0, 512],
                   use_attention_sink: "4,2044", quantize_kv_cache: false, dtype_override: fp32}
    export:       {max_seq_length: 128, max_context_length: 2048, output_dir: DIR, output_name: model.pte}
    quantization: {qmode: 8da4w, group_size: 32, embedding_quantize: "4,32", recipe: RULES.yaml}
    backend:      {xnnpack: {enabled: true}}
    debug:        {verbose: false, generate_etrecord: false, etrecord: FILE, profile_memory: false,
                   profile_export: false}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common.errors import UserError

# (section, key) -> (flag, the value's type). A bool flag is passed as --flag / --no-flag (store_true: --flag only).
KEYS: dict[tuple[str, str], tuple[str, type]] = {
    ("base", "checkpoint"): ("--checkpoint", str),
    ("base", "tokenizer_path"): ("--tokenizer", str),
    ("model", "use_sdpa_with_kv_cache"): ("--custom-ops", bool),
    ("model", "enable_embeddings_input"): ("--embeddings-input", bool),
    ("model", "local_global_attention"): ("--local-global", list),
    ("model", "use_attention_sink"): ("--attention-sink", str),
    ("model", "quantize_kv_cache"): ("--quantize-kv-cache", bool),
    ("model", "dtype_override"): ("--dtype", str),
    ("export", "max_seq_length"): ("--max-seq-len", int),
    ("export", "max_context_length"): ("--max-context-len", int),
    ("quantization", "qmode"): ("--quantize", str),
    ("quantization", "group_size"): ("--group-size", int),
    ("quantization", "recipe"): ("--recipe", str),
    ("debug", "verbose"): ("--verbose", bool),
    ("debug", "etrecord"): ("--etrecord", str),
    ("debug", "profile_memory"): ("--profile-memory", bool),
    ("debug", "profile_export"): ("--profile-export", bool),
}
# keys that need more than a flag each (handled in to_argv)
SPECIAL = {("export", "output_dir"), ("export", "output_name"), ("quantization", "embedding_quantize"),
           ("backend", "xnnpack"), ("debug", "generate_etrecord")}
NEGATABLE = {"--custom-ops"}  # BooleanOptionalAction flags; the rest are store_true


def read_config(path: str) -> dict[str, dict[str, Any]]:
    """The YAML file's sections, each a mapping; a UserError naming the file otherwise."""
    import yaml

    from common.io import read_text_arg

    try:
        data = yaml.safe_load(read_text_arg(path, "--config"))
    except yaml.YAMLError as e:
        raise UserError(f"--config {path}: cannot parse ({str(e).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: expected a mapping of sections (base, model, export, ...)")
    sections = {section for section, _ in KEYS} | {section for section, _ in SPECIAL}
    for section, body in data.items():
        if section not in sections:
            raise UserError(f"--config {path}: unknown section {section!r} (expected {', '.join(sorted(sections))})")
        if not isinstance(body, dict):
            raise UserError(f"--config {path}: {section} must be a mapping of keys")
    return data


def _typed(path: str, where: str, value: Any, kind: type) -> Any:
    ok = isinstance(value, bool) if kind is bool else isinstance(value, kind) and not isinstance(value, bool)
    if not ok:
        expected = {str: "a string", list: "a list"}.get(kind, kind.__name__)
        raise UserError(f"--config {path}: {where} is {value!r}; expected {expected}")
    return value


def to_argv(path: str) -> list[str]:
    """The flags `path` stands for; a UserError naming an unknown key or a value of the wrong type."""
    data = read_config(path)
    argv: list[str] = []
    for section, body in data.items():
        for key, value in body.items():
            where = f"{section}.{key}"
            if (section, key) in KEYS:
                flag, kind = KEYS[section, key]
                value = _typed(path, where, value, kind)
                if kind is bool:
                    argv += [flag] if value else ([f"--no-{flag[2:]}"] if flag in NEGATABLE else [])
                elif kind is list:
                    argv += [flag, ",".join(str(v) for v in value)]
                else:
                    argv += [flag, str(value)]
            elif (section, key) not in SPECIAL:
                known = sorted(k for s, k in (*KEYS, *SPECIAL) if s == section)
                raise UserError(f"--config {path}: unknown key {where!r} (known in {section}: {', '.join(known)})")
    export = data.get("export", {})
    if "output_dir" in export or "output_name" in export:
        out_dir = _typed(path, "export.output_dir", export.get("output_dir", "."), str)
        name = _typed(path, "export.output_name", export.get("output_name", "model.pte"), str)
        argv += ["--output", str(Path(out_dir) / name)]
    if "embedding_quantize" in data.get("quantization", {}):
        argv += ["--embedding-bits", _embedding_bits(path, data["quantization"]["embedding_quantize"])]
    if "xnnpack" in data.get("backend", {}):
        xnn = data["backend"]["xnnpack"]
        if not isinstance(xnn, dict) or set(xnn) - {"enabled"}:
            raise UserError(f"--config {path}: backend.xnnpack takes {{enabled: true|false}}")
        argv += ["--backend", "xnnpack" if _typed(path, "backend.xnnpack.enabled", xnn.get("enabled", True), bool)
                 else "portable"]
    if _typed(path, "debug.generate_etrecord", data.get("debug", {}).get("generate_etrecord", False), bool):
        argv += ["--etrecord"]  # no value: etrecord.bin beside the .pte (last: it takes an optional value)
    return argv


def _embedding_bits(path: str, value: Any) -> str:
    """export_llm's embedding_quantize 'BITS,GROUP' as --embedding-bits (the zoo quantizes embeddings in groups of
    32)."""
    parts = str(value).split(",")
    if len(parts) != 2 or parts[0].strip() not in ("4", "8") or parts[1].strip() != "32":
        raise UserError(f"--config {path}: quantization.embedding_quantize is {value!r}; expected '4,32' or '8,32' "
                        "(bits, group size 32)")
    return parts[0].strip()
