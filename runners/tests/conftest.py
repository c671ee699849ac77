"""Fixtures for the C++ runner tests: built runners and tiny qwen3 .pte files.

The SmolLM2 gguf-preset .pte (llama custom ops, the zoo's tied-head kernel) is the root conftest.py's `smollm2_pte`, shared with the Python tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY_SEQ_LEN, TINY_CONTEXT_LEN = 16, 64  # small, so the chunking and context-limit tests are cheap


def build_runner(model: str, backend: str = "xnnpack") -> Path:
    """`make -f runners/runners.mk <model>-<backend>` (incremental after the first run); the binary's path. One build
    at a time (a lock under build/): pytest-xdist workers share the build tree and its kernel libraries."""
    from filelock import FileLock

    (ROOT / "build").mkdir(exist_ok=True)
    with FileLock(ROOT / "build" / ".runner-build.lock"):
        proc = subprocess.run(
            ["make", "--no-print-directory", "-f", "runners/runners.mk", f"{model}-{backend}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
    if proc.returncode != 0:
        pytest.fail(f"building {model}-{backend} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    binary = ROOT / "build" / f"{model}-{backend}" / f"{model}_runner"
    assert binary.is_file(), binary
    return binary


def cpp_greedy(model: str, pte: Path, prompt: list[int], n: int, workdir: Path) -> list[int]:
    """The `model` C++ runner's greedy `n` tokens after the ids `prompt` (EOS ignored), run on `pte`."""
    ids = workdir / "prompt-ids.txt"
    ids.write_text(" ".join(map(str, prompt)))
    proc = subprocess.run([str(build_runner(model)), "--model", str(pte), "--prompt-ids", str(ids), "--print-ids",
                           "--ignore-eos", "--max-new-tokens", str(n)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return [int(x) for x in proc.stdout.split()]


@pytest.fixture(scope="session")
def llama3_runner() -> Path:
    return build_runner("llama3")


@pytest.fixture(scope="session")
def qwen3_runner() -> Path:
    return build_runner("qwen3")


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(smollm2_gguf: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2's tokenizer saved as an HF directory (tokenizer.json + tokenizer_config.json)."""
    from common.tokenizer import load_tokenizer

    return load_tokenizer(smollm2_gguf).save(tmp_path_factory.mktemp("smollm2-tokenizer"))


@pytest.fixture(scope="session")
def gemma3_tokenizer_dir(gemma3_gguf: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Gemma 3 270M's SentencePiece-style tokenizer saved as an HF directory."""
    from common.tokenizer import load_tokenizer

    return load_tokenizer(gemma3_gguf).save(tmp_path_factory.mktemp("gemma3-tokenizer"))


def _tiny_qwen3(out_dir: Path, tokenizer_dir: Path, use_custom_ops: bool, backend: str) -> Path:
    """A randomly initialised 2-layer qwen3 (qk-norm) with SmolLM2's tokenizer, exported per the zoo contract."""
    import torch

    from common.contract import CAUSAL_LM, causal_lm_constants
    from common.decoder import ModelConfig, Transformer
    from common.export import export_pte
    from common.nn.attention import attention_kernel
    from common.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    cfg = ModelConfig(
        vocab_size=tok.vocab_size,
        dim=64,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        hidden_dim=128,
        head_dim=16,
        qk_norm=True,
        rope_theta=1e6,
        tie_embeddings=False,
        bos_id=tok.bos_id,
        eos_ids=tok.eos_ids,
    )
    torch.manual_seed(0)
    model = Transformer(cfg, TINY_CONTEXT_LEN, attention_kernel(use_custom_ops), last_logits_only=True).eval()
    with torch.no_grad():  # sharper logits than the default init, so greedy picks have clear margins
        model.lm_head.weight.mul_(8.0)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = causal_lm_constants(cfg, TINY_SEQ_LEN, TINY_CONTEXT_LEN, tok.eos_ids)
    export_pte(model, out_dir / "model.pte", CAUSAL_LM, meta, backend=backend)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / name, out_dir / name)
    return out_dir / "model.pte"


@pytest.fixture(scope="session")
def tiny_limits() -> tuple[int, int]:
    """(max_seq_len, max_context_len) of the tiny .pte files."""
    return TINY_SEQ_LEN, TINY_CONTEXT_LEN


@pytest.fixture(scope="session")
def tiny_qwen3_pte(smollm2_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_qwen3(tmp_path_factory.mktemp("tiny-qwen3"), smollm2_tokenizer_dir, False, "xnnpack")


@pytest.fixture(scope="session")
def tiny_custom_ops_pte(smollm2_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny qwen3 with the custom ops, zoo::custom_sdpa / llama::update_cache (the runner's own kernels run them)."""
    return _tiny_qwen3(tmp_path_factory.mktemp("tiny-custom-ops"), smollm2_tokenizer_dir, True, "xnnpack")
