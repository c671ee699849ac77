"""Gemma `.pte` exports (XNNPACK, fp32) of tiny Gemma 4 and Gemma 3 checkpoints through the export CLI: prompts of
5x the sliding window, prefilled in chunks shorter than, equal to and longer than the window, against transformers'
one-shot forward (two exports: Gemma 4 with ExecuTorch's llama custom ops, Gemma 3 with plain SDPA)."""

from __future__ import annotations

import pytest
import torch

from common.cli import export_main, run_cli
from common.runtime import PteModel
from models.gemma4_31b.model import FAMILY
from tests.helpers import cli_stdout

pytestmark = pytest.mark.slow

WINDOW, MAX_SEQ_LEN, MAX_CONTEXT_LEN = 4, 2 * 4 + 1, 32  # the tiny configs' window; chunks up to 2 windows + 1
IDS = [2, 17, 42, 99, 5, 250, 31, 64, 7, 300, 12, 8, 77, 123, 9, 200, 45, 3, 88, 150]


@pytest.fixture(scope="module", params=[("gemma4", ()), ("gemma3", ("--no-custom-ops",))], ids=["gemma4", "gemma3"])
def exported(request, tmp_path_factory: pytest.TempPathFactory):
    """(arch, HF model, .pte path): a tiny checkpoint exported fp32 through the export CLI."""
    from tests.checkpoints import write_tiny

    arch, flags = request.param
    root = tmp_path_factory.mktemp(f"{arch}-export")
    hf, hf_dir, _ = write_tiny(arch, root / "tiny")
    out = root / "pte" / "model.pte"
    stdout = cli_stdout(lambda: run_cli(export_main(FAMILY), [
        "--checkpoint", str(hf_dir), "--quantize", "fp32", "--max-seq-len", str(MAX_SEQ_LEN),
        "--max-context-len", str(MAX_CONTEXT_LEN), "--output", str(out), *flags]))
    assert ("custom_sdpa" in stdout) == (not flags)
    return arch, hf, out


def test_fp32_pte_chunked_prefill_matches_transformers(exported) -> None:
    _, hf, out = exported
    pte = PteModel(out)
    with torch.no_grad():
        ref = hf(torch.tensor([IDS])).logits[0]
    for chunk in (1, WINDOW, WINDOW + 1, 2 * WINDOW, MAX_SEQ_LEN):
        for start in range(0, len(IDS), chunk):  # the last logits of every chunk, through the caches
            end = min(start + chunk, len(IDS))
            err = (pte.forward(IDS[start:end], start) - ref[end - 1]).abs().max()
            assert err <= 1e-4, (chunk, start, err)


def test_cpp_runner_gives_the_python_runners_tokens(exported, tmp_path) -> None:
    """`make gemma4_31b-xnnpack`: the C++ runner's greedy tokens on the fp32 program equal the Python runtime's,
    across several prefill chunks and past the sliding window."""
    from runners.tests.conftest import build_runner
    from runners.tests.test_cpp_runner import cpp_ids, python_greedy

    _, _, out = exported
    runner = build_runner("gemma4_31b")
    (tmp_path / "ids.txt").write_text(" ".join(map(str, IDS[:12])))
    got = cpp_ids(runner, "--model", str(out), "--prompt-ids", str(tmp_path / "ids.txt"), "--max-new-tokens", "12",
                  "--ignore-eos", "--print-ids")
    assert got == python_greedy(out, IDS[:12], 12)


def test_sensitive_recipe_pte_matches_eager(tmp_path_factory) -> None:
    """`--quantize sensitive` on tiny Gemma 4 (K=V, mixed head sizes): int8 table shared by the embedding and the
    tied head (zoo::linear_q8), 8da8w v_proj/down_proj in the edge layers, HQQ int4 elsewhere. The .pte's logits
    along the eager greedy tokens equal the eager model's quantized by the same rules within int8 noise (KL)."""
    from common.pipeline import prepare_quantized
    from common.runtime import EagerModel
    from models.gemma4_31b.model import config_from_hf
    from models.gemma4_31b.recipes import sensitive
    from tests.checkpoints import write_tiny
    from tests.helpers import greedy, kl_per_position, step_logits

    root = tmp_path_factory.mktemp("gemma4-sensitive")
    hf, hf_dir, _ = write_tiny("gemma4", root / "tiny")
    out = root / "pte" / "model.pte"
    stdout = cli_stdout(lambda: run_cli(export_main(FAMILY), [
        "--checkpoint", str(hf_dir), "--quantize", "sensitive", "--max-seq-len", str(MAX_SEQ_LEN),
        "--max-context-len", str(MAX_CONTEXT_LEN), "--output", str(out)]))
    assert "(sensitive, fp32, xnnpack" in stdout and "linear_q8" in stdout, stdout
    model, _ = prepare_quantized(FAMILY, str(hf_dir), sensitive(config_from_hf(hf.config.to_dict())),
                                 max_context_len=MAX_CONTEXT_LEN)
    eager = EagerModel(model, (), MAX_SEQ_LEN)
    tokens = greedy(eager, IDS[:12], 8)
    kl = kl_per_position(step_logits(eager, IDS[:12], tokens), step_logits(PteModel(out), IDS[:12], tokens))
    assert kl.max() <= 1e-6, kl


def test_cuda_preset_says_what_is_missing() -> None:
    """`make gemma4_31b-cuda` configures against a CUDA-enabled ExecuTorch when there is one; without one (the pip
    wheel is CPU-only) it stops at configure saying what is missing, and builds nothing."""
    import subprocess
    from pathlib import Path

    import executorch

    root = Path(__file__).resolve().parents[3]
    if (Path(list(executorch.__path__)[0]) / "lib" / "libexecutorch_backend_cuda.so").exists():
        pytest.skip("this executorch has a CUDA backend: the preset configures for real")
    proc = subprocess.run(["make", "gemma4_31b-cuda"], cwd=root, capture_output=True, text=True, timeout=600)
    text = " ".join((proc.stdout + proc.stderr).split())  # CMake wraps its messages
    assert proc.returncode != 0
    assert ("ZOO_BACKEND=cuda: no CUDA toolkit" in text
            or "ZOO_BACKEND=cuda: the installed executorch wheel ships no CUDA backend" in text), text[-2000:]
    assert not (root / "build" / "gemma4_31b-cuda" / "gemma4_31b_runner").exists()
