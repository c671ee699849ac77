"""Smoke test of the benchmark harness on a tiny random qwen3: real exports, real worker processes, real files.

Timings are never asserted; what is checked is that every row ran (or says why not), the numbers are
consistent, and our fp32 `.pte` scores the text exactly as transformers does on the same GGUF weights.
"""

from __future__ import annotations

import json
import math

import pytest

from bench.registry import BenchModel, Build
from bench.run import Settings, run_bench

SHAPE = ("--max-seq-len", "16", "--max-context-len", "96")
BUILDS = (Build("fp32", ("--quantize", "fp32", *SHAPE), runners=("python", "cpp")),)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("bench-cache")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> BenchModel:
    from tests.checkpoints import write_tiny

    # head_dim 128 as in every Qwen3 release: transformers' GGUF reader does not read it from the file
    _, _, gguf = write_tiny("qwen3", tmp_path_factory.mktemp("tiny-bench"), seed=3, head_dim=128)
    return BenchModel(name="tiny-qwen3", package="qwen3", gguf=lambda: str(gguf), builds=BUILDS)


def test_registry_finds_smollm2() -> None:
    from bench.registry import discover

    models = discover()
    assert models["smollm2-135m"].package == "llama3"
    builds = {b.name: b for b in models["smollm2-135m"].builds}
    assert set(builds) == {"fp32", "8da8w", "8da4w", "gguf", "8da4w-kv16", "aqlm-2x8", "aqlm-2x8-lut8"}
    for name in ("aqlm-2x8", "aqlm-2x8-lut8"):
        assert builds[name].checkpoint == "build/aqlm/smollm2-aqlm-2x8"  # the Makefile's AQLM_DIR
    assert builds["aqlm-2x8-lut8"].export_args[-2:] == ("--aqlm-kernel", "lut8")


def test_row_from_a_missing_made_checkpoint_is_skipped_naming_its_target(tmp_path, smollm2_gguf: str) -> None:
    """A build exported from a checkpoint a make target writes (the AQLM SmolLM2) is skipped, naming the target,
    until that checkpoint exists; nothing is exported."""
    from bench.registry import BenchModel, Build
    from bench.run import Settings, plan_rows, prepare

    model = BenchModel("m", "llama3", gguf=lambda: smollm2_gguf,
                       builds=(Build("x", (), checkpoint="build/no-such-dir", make_target="no-such-target"),))
    settings = Settings(threads=1, engines=("ours",), cache=tmp_path)
    (row,) = plan_rows(model, settings)
    prepare(row, model, settings)
    assert row["error"] == "skipped: build/no-such-dir not made (make no-such-target)"
    assert not any(tmp_path.iterdir())


def test_bench_rows_on_tiny_model(tiny_model: BenchModel, cache) -> None:
    # the longest prompt, 100, more than the build's context (96): the export is raised to hold it and the token the
    # C++ runner's prefill timing decodes after it
    s = Settings(threads=2, repeats=2, prompt_lens=(16, 100), decode_tokens=8, depths=(0, 24), ppl_tokens=48,
                 engines=("ours", "cpp", "llama.cpp", "transformers"), cache=cache)
    from bench.limits import measure

    limits = measure(2)
    rows = {r["label"]: r for r in run_bench([tiny_model], s, limits)}
    ours, hf = rows["ours fp32 (Python)"], rows["transformers fp32 (eager)"]
    for row in (ours, hf):
        assert "error" not in row, row.get("error")
        assert len(row["raw"]["load_s"]) == 2 and len(row["raw"]["decode_s"]) == 2
        for n in ("16", "100"):
            assert row["prefill_tps"][n]["best"] >= row["prefill_tps"][n]["median"] > 0
        assert row["decode_tps"]["median"] > 0 and row["peak_rss_mib"] > 50
    assert ours["size_bytes"] > 0 and ours["artefact"].endswith("model.pte")
    # the machine's limits, and each row's speed as a share of them: a tiny model runs far below both
    assert limits["read_bytes_per_s"] > 1e9 and limits["int8_ops_per_s"] > 1e10
    for row in (ours, rows["ours fp32 (C++)"]):
        assert 0 < row["limits"]["decode_of_bandwidth"] < 1 and 0 < row["limits"]["prefill_of_int8_peak"] < 1
    assert row["limits"]["decode_of_bandwidth"] == pytest.approx(
        row["decode_tps"]["median"] * row["size_bytes"] / limits["read_bytes_per_s"])
    assert "limits" not in hf  # transformers runs fp32, not the file
    # decode after prompts of each depth, two repeats each, for every engine but transformers
    for row in (ours, rows["ours fp32 (C++)"]):
        assert sorted(row["decode_depth_tps"]) == ["0", "24"]
        assert all(len(v["runs_s"]) == 2 and v["median"] > 0 for v in row["decode_depth_tps"].values())
    assert "decode_depth_tps" not in hf
    # the export was measured: its wall time, and its own peak RSS (not this pytest process's, which is larger
    # than a tiny export's when the suite has run SmolLM2; it holds at least the interpreter and torch)
    assert ours["export"]["seconds"] > 1 and 200 < ours["export"]["peak_rss_mib"] < 4096
    assert rows["ours fp32 (C++)"]["export"] == ours["export"]  # the same cached file
    # ... and the block linears' bytes it printed: the GGUF's F32 block matrices, 4 bytes a weight
    from gguf import GGUFReader

    matrices = [t for t in GGUFReader(tiny_model.gguf()).tensors if t.name.startswith("blk.") and len(t.shape) == 2]
    assert ours["export"]["block_linear_bytes"] == 4 * sum(int(t.n_elements) for t in matrices)
    # Same weights, same tokens, fp32 both: perplexities agree closely (random weights: ppl near the vocab size).
    assert math.isfinite(ours["perplexity"]) and ours["perplexity"] > 1
    assert ours["perplexity"] == pytest.approx(hf["perplexity"], rel=1e-3)
    # ... and both match the unquantized reference (our eager fp32 model) every row is scored against
    for row in (ours, hf):
        assert abs(row["kl"]) < 1e-4 and row["top1"] >= 0.97, (row["kl"], row["top1"])  # float32 reference: ~0
    cpp = rows["ours fp32 (C++)"]
    assert "error" not in cpp, cpp.get("error")
    assert "perplexity" not in cpp and cpp["decode_tps"]["median"] > 0 and 0 < cpp["peak_rss_mib"] < ours["peak_rss_mib"]
    llama = rows["llama.cpp F32"]
    q8, q4 = rows["llama.cpp Q8_0 (from F32)"], rows["llama.cpp Q4_0 (from F32)"]  # llama.cpp's quantizer
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        for row in (llama, q8, q4):
            assert row["error"].startswith("skipped: llama_cpp not installed")
    else:
        from bench.run import gguf_type

        for row in (llama, q8, q4):
            assert "error" not in row, row.get("error")
        assert llama["perplexity"] == pytest.approx(hf["perplexity"], rel=1e-2)
        assert llama["kl"] < 1e-2
        # re-quantized files of their type, smaller, and as far from the fp32 model as their bits say
        assert (gguf_type(q8["artefact"]), gguf_type(q4["artefact"])) == ("Q8_0", "Q4_0")
        assert q4["size_bytes"] < q8["size_bytes"] < llama["size_bytes"]
        assert llama["kl"] < q8["kl"] < q4["kl"] and q8["kl"] < 1e-2


def test_our_rows_are_compared_with_the_fastest_llama_cpp_format_as_good() -> None:
    """bench.report.references: the llama.cpp formats of equal or better perplexity; the C++ row takes its build's
    Python perplexity; none as good: the best one; llama.cpp's own rows and transformers: the GGUF as shipped."""
    from bench.report import markdown, references

    def row(label, engine, ppl, decode, build=None):
        return {"model": "m", "label": label, "engine": engine, "build": build, "raw": {}, "perplexity": ppl,
                "load_s": {"median": 1.0}, "prefill_tps": {"8": {"median": decode * 4, "best": decode * 4}},
                "decode_tps": {"median": decode, "best": decode}, "peak_rss_mib": 1.0}

    shipped, q4, q8 = row("llama.cpp Q4_1", "llama.cpp", 17.0, 100), row("llama.cpp Q4_0 (from Q4_1)", "llama.cpp",
                                                                          18.0, 150), row("llama.cpp Q8_0 (from Q4_1)",
                                                                                          "llama.cpp", 16.9, 80)
    ours = row("ours 8da4w (Python)", "ours", 17.5, 200, "8da4w")
    cpp = row("ours 8da4w (C++)", "cpp", None, 300, "8da4w")
    best = row("ours fp32 (Python)", "ours", 16.0, 50, "fp32")
    hf = row("transformers fp32 (eager)", "transformers", 16.0, 10)
    for r, n in ((ours, 60e6), (cpp, 60e6), (best, 424e6)):  # the export's block linear bytes (common.quant.footprint)
        r["export"] = {"seconds": 1.0, "peak_rss_mib": 1.0, "block_linear_bytes": n}
    group = [ours, cpp, best, shipped, q4, q8, hf]
    assert references(ours, group) == [shipped, q8] == references(cpp, group)
    assert references(best, group) == [q8]  # none as good as 16.0: the best llama.cpp format
    assert references(q4, group) == [shipped] == references(hf, group)
    table = markdown(group, [8], 16)
    assert "| 200.0 (200.0) ×2.00 Q4_1 |" in table  # fastest of Q4_1 (100) and Q8_0 (80); Q4_0 is worse
    assert "| 300.0 (300.0) ×3.00 Q4_1 |" in table and "| 50.0 (50.0) ×0.62 Q8_0 |" in table
    assert "| 150.0 (150.0) ×1.50 |" in table  # llama.cpp's Q4_0 against the file as shipped
    assert table.count("| 60.0 MB |") == 2 and "| 424.0 MB (707% of 8da4w) |" in table  # shares of the 8da4w build's


def test_cli_writes_table_json_and_chart(tiny_model: BenchModel, cache, tmp_path, monkeypatch, capsys) -> None:
    from bench import run

    monkeypatch.setattr(run, "discover", lambda: {tiny_model.name: tiny_model})
    argv = ["--engines", "ours,transformers", "--repeats", "1", "--prompt-lens", "16,40", "--decode-tokens", "4",
            "--depths", "0,max", "--max-depth", "48",
            "--ppl-tokens", "24", "--out", str(tmp_path / "results"), "--cache", str(cache)]
    assert run.main(argv) == 0
    out = capsys.readouterr().out
    assert "| ours fp32 (Python) |" in out and "| transformers fp32 (eager) |" in out
    assert "export s (peak RSS MiB)" in out and "decode of BW limit" in out and "Machine limits, measured" in out
    # 'max': the model's context (capped by --max-depth 48) less the 4 decoded tokens and the one before them
    assert "| engine | depth 0 | depth 43 |" in out
    (js,) = (tmp_path / "results").glob("bench-*.json")
    doc = json.loads(js.read_text())
    assert doc["machine"]["cores"] >= 1 and doc["machine"]["cpu"]
    assert [r["label"] for r in doc["rows"]] == ["ours fp32 (Python)", "transformers fp32 (eager)"]
    (png,) = (tmp_path / "results").glob("bench-*.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_rejects_unknown_model_and_engine(capsys) -> None:
    from bench.run import main
    from common.cli import run_cli

    assert run_cli(main, ["--models", "nope"]) == 2
    assert "--models nope: not registered" in capsys.readouterr().err
    assert run_cli(main, ["--engines", "ours,vllm"]) == 2
    assert "--engines vllm: expected some of" in capsys.readouterr().err


def test_llama_cpp_build_flags_follow_the_cpu_and_never_enable_amx() -> None:
    """The bench's llama.cpp build names this CPU's SIMD levels (no -march=native, whose AMX path dies of SIGILL on
    VMs that list AMX), turning on only what /proc/cpuinfo lists."""
    from bench.llama_cpp_flags import cmake_args, cpu_flags

    avx2_only = cpu_flags("processor\t: 0\nflags\t\t: fpu sse4_2 avx f16c fma bmi2 avx2\n")
    args = cmake_args(avx2_only).split()
    assert "-DGGML_NATIVE=OFF" in args and "-DGGML_AVX2=ON" in args
    assert "-DGGML_AVX512=OFF" in args and "-DGGML_AVX512_VNNI=OFF" in args
    server = avx2_only | {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd", "avx512_vnni", "amx_tile",
                          "amx_int8"}
    args = cmake_args(server).split()
    assert "-DGGML_AVX512=ON" in args and "-DGGML_AVX512_VNNI=ON" in args
    assert "-DGGML_AMX_TILE=OFF" in args and "-DGGML_AMX_INT8=OFF" in args


def test_a_worker_reports_its_own_peak_rss_not_its_parents() -> None:
    """getrusage's ru_maxrss survives fork + exec; the bench worker reads VmHWM, which starts afresh."""
    import subprocess
    import sys
    from pathlib import Path

    from bench.worker import peak_rss_mib

    ballast = bytearray(512 * 2**20)  # this process's peak is now above 512 MiB
    assert peak_rss_mib() > 512
    code = "from bench.worker import peak_rss_mib; print(peak_rss_mib())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    del ballast
    assert float(out.stdout) < 256, out.stdout  # python + the bench package's imports: tens of MiB


def test_export_llm_checkpoint_is_our_model_in_executorch_llama(tmp_path) -> None:
    """bench.export_llm writes the weights our loader reads as export_llm's Meta-format checkpoint: ExecuTorch's
    own llama (examples/models/llama, which export_llm builds) loaded from it gives our model's logits."""
    import json

    import torch
    from executorch.examples.models.llama.llama_transformer import construct_transformer
    from executorch.examples.models.llama.model_args import ModelArgs

    from bench.export_llm import write_checkpoint
    from common.pipeline import load_model
    from models.llama3.model import FAMILY
    from tests.checkpoints import write_tiny

    _, _, gguf = write_tiny("llama", tmp_path / "tiny", seed=5)
    ckpt, params = write_checkpoint(str(gguf), tmp_path / "export_llm")
    args = ModelArgs(**json.loads(params.read_text()), max_seq_len=16, max_context_len=16, generate_full_logits=True)
    theirs = construct_transformer(args).eval()
    missing, unexpected = theirs.load_state_dict(torch.load(ckpt, weights_only=True), strict=False)
    assert not unexpected and not [k for k in missing if "rope" not in k and "freqs" not in k], missing
    ours = load_model(FAMILY, str(gguf), max_context_len=16)[0]
    ids = torch.randint(0, 300, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = ours(ids, torch.tensor([0]))[0]
        got = theirs(ids)[0]
    assert (got - ref).abs().max() <= 1e-4 * ref.abs().max()
