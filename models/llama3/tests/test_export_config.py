"""export --config FILE.yaml (export_llm's LlmConfig names) and the export's debug flags, on the tiny checkpoints."""

from __future__ import annotations

import json

import pytest

from common.cli import export_main, run_cli
from common.errors import UserError
from common.export_config import to_argv
from models.llama3.model import FAMILY
from tests.helpers import cli_stdout

pytestmark = pytest.mark.slow


def export(*argv: str) -> str:
    return cli_stdout(lambda: run_cli(export_main(FAMILY), list(argv)))


def test_config_file_and_the_same_flags_write_the_same_bytes(tiny, tmp_path) -> None:
    t = tiny["untied"]
    by_flags = tmp_path / "flags" / "model.pte"
    export("--checkpoint", t.dir, "--quantize", "fp32", "--embedding-bits", "8",
           "--max-seq-len", "8", "--max-context-len", "64", "--no-custom-ops", "--output", str(by_flags))
    config = tmp_path / "export.yaml"
    config.write_text(f"""
base: {{checkpoint: {t.dir}}}
model: {{use_sdpa_with_kv_cache: false}}
export: {{max_seq_length: 16, max_context_length: 64, output_dir: {tmp_path / 'config'}, output_name: model.pte}}
quantization: {{qmode: fp32, embedding_quantize: "8,32"}}
backend: {{xnnpack: {{enabled: true}}}}
""")
    stdout = export("--config", str(config), "--max-seq-len", "8")  # the command line overrides the file
    by_config = tmp_path / "config" / "model.pte"
    assert f"wrote {by_config}" in stdout and "max_seq_len 8" in stdout
    assert by_config.read_bytes() == by_flags.read_bytes()


@pytest.mark.parametrize("body,message", [
    ("export: {max_seq_len: 8}", "unknown key 'export.max_seq_len'"),
    ("exports: {}", "unknown section 'exports'"),
    ("export: {max_seq_length: eight}", "export.max_seq_length is 'eight'; expected int"),
    ("model: {use_sdpa_with_kv_cache: 1}", "model.use_sdpa_with_kv_cache is 1; expected bool"),
    ("quantization: {embedding_quantize: '4,64'}", "expected '4,32' or '8,32'"),
    ("- a list", "expected a mapping of sections"),
])
def test_config_errors_name_the_key(tmp_path, body: str, message: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(body + "\n")
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("[", r"\[")):
        to_argv(str(config))


def test_debug_outputs(tiny, tmp_path) -> None:
    """--verbose: the delegation table; --etrecord: an ETRecord ExecuTorch parses; --profile-memory: a chrome trace
    of the plan; --profile-export: each stage's share and the slowest functions."""
    from executorch.devtools.etrecord import parse_etrecord

    t = tiny["tied"]
    out = tmp_path / "model.pte"
    stdout = export("--checkpoint", t.dir, "--quantize", "fp32", "--max-seq-len", "8", "--max-context-len", "64",
                    "--output", str(out), "--verbose", "--etrecord", "--profile-memory", "--profile-export")
    table = stdout[stdout.index("operator"):].splitlines()
    assert table[0].split() == ["operator", "delegated", "not", "delegated"]
    rows = {w[0]: (int(w[1]), int(w[2])) for w in (line.split() for line in table[1:]) if len(w) == 3}
    assert rows["aten_linear_default"][0] > 0 and rows["zoo_custom_sdpa_default"] == (0, t.hf.config.num_hidden_layers)
    delegated = int(stdout.split("delegated ops: ")[1].split(";")[0])
    assert sum(d for d, _ in rows.values()) == delegated
    record = parse_etrecord(str(tmp_path / "etrecord.bin"))
    assert record.edge_dialect_program is not None
    trace = json.loads((tmp_path / "model.memory.json").read_text())
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    assert len(events) > 10
    assert "stage load + quantize" in stdout and "stage to_executorch" in stdout and "slowest functions" in stdout
