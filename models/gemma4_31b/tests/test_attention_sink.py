"""Gemma with an attention sink (export --attention-sink SINK,WINDOW): the full layers keep the sinks and a rolling
window, the sliding layers stay exact sliding-window attention. Within the context the model's numbers are the
plain model's; past it, a model of sliding layers only is still the plain model's to the last position; the `.pte`
and the C++ runner run on past the context as eager does; Gemma 3 270M's perplexity past the context."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from common.nn.attention import attention_kernel
from common.pipeline import load_model
from common.runtime import EagerModel, generate
from common.sampler import Sampler
from models.gemma4_31b.model import FAMILY, SLIDING, Gemma

SINK, WINDOW, SEQ = 2, 14, 5  # a context of 16 (the tiny configs' sliding window is 4)
IDS = torch.randint(0, 300, (3 * (SINK + WINDOW),), generator=torch.Generator().manual_seed(1)).tolist()


@pytest.fixture(scope="module", params=["gemma4", "gemma3"])
def tiny(request, tmp_path_factory: pytest.TempPathFactory):
    from tests.checkpoints import write_tiny

    return write_tiny(request.param, tmp_path_factory.mktemp(request.param))


def all_logits(model, ids: list[int], chunk: int) -> torch.Tensor:
    """Logits at every position, `ids` fed `chunk` at a time from a fresh cache."""
    model.init_buffers()
    with torch.no_grad():
        return torch.cat([model(torch.tensor([ids[i:i + chunk]]), torch.tensor([i]))[0]
                          for i in range(0, len(ids), chunk)])


def models(hf_dir, custom_ops: bool, context: int, **cfg_changes) -> tuple[Gemma, Gemma]:
    """(plain model of `context`, the same weights with the attention sink), from `hf_dir`'s config and weights, or
    its config with `cfg_changes` and random weights."""
    kernel = attention_kernel(custom_ops)
    plain, cfg, _ = load_model(FAMILY, str(hf_dir), max_context_len=context, kernel=kernel, max_seq_len=SEQ)
    if cfg_changes:  # a new shape: random weights (Gemma 4's full layers have their own head size)
        torch.manual_seed(0)
        cfg = dataclasses.replace(cfg, **cfg_changes)
        plain = Gemma(cfg, context, kernel, max_seq_len=SEQ).eval()
    sink = Gemma(dataclasses.replace(cfg, attention_sink=(SINK, WINDOW)), 1 << 16, kernel, max_seq_len=SEQ).eval()
    sink.load_state_dict(plain.state_dict())
    return plain, sink


@pytest.mark.parametrize("custom_ops", [False, True], ids=["sdpa", "custom_ops"])
def test_within_the_context_a_sink_changes_nothing(tiny, custom_ops: bool) -> None:
    plain, sink = models(tiny[1], custom_ops, SINK + WINDOW)
    assert sink.max_context_len == SINK + WINDOW and sink.max_seq_len == SEQ
    for chunk in (1, 3, SEQ):
        ref = all_logits(plain, IDS[: SINK + WINDOW], chunk)
        out = all_logits(sink, IDS, chunk)  # runs on to 3x the context
        inside = (SINK + WINDOW) // chunk * chunk  # the chunks that end within the context
        # custom_sdpa reads a cache of another length here (sink + window - 1 + SEQ slots), and CPU GEMMs round
        # differently by shape: float rounding only (1.9e-6 of the largest logit measured on a Zen 4 EPYC, within 1e-6
        # on the Xeon of earlier runs); a sink that changed anything inside the context would differ by far more
        assert (out[:inside] - ref[:inside]).abs().max() <= 1e-5 * ref.abs().max(), chunk
        assert torch.isfinite(out).all()
    # past the context, the chunk's last query sees the sinks where a token-by-token run does
    by_token, by_chunk = all_logits(sink, IDS, 1), all_logits(sink, IDS, SEQ)
    assert (by_token[SEQ - 1 :: SEQ] - by_chunk[SEQ - 1 :: SEQ]).abs().max() < 1e-2


@pytest.mark.parametrize("custom_ops", [False, True], ids=["sdpa", "custom_ops"])
def test_sliding_layers_stay_exact_past_the_context(tiny, custom_ops: bool) -> None:
    """With every layer sliding, the sink changes nothing at any position: the sliding layers' rings and RoPE
    (computed from the position past any table) are the plain model's, for every chunk size."""
    plain, sink = models(tiny[1], custom_ops, len(IDS), layer_types=(SLIDING,) * 6)
    for chunk in (1, 3, SEQ):
        assert (all_logits(sink, IDS, chunk) - all_logits(plain, IDS, chunk)).abs().max() <= 1e-5, chunk


@pytest.mark.slow
def test_pte_and_cpp_runner_run_past_the_context_like_eager(tiny, tmp_path) -> None:
    """The tiny Gemma exported --attention-sink (fp32; Gemma 4 with the custom ops, Gemma 3 with plain SDPA): fed a
    prompt longer than the context and then tokens on to 3x it, the logits of eager; greedy 3x the context, the same
    tokens from eager, the Python runtime and the C++ runner; the contract says so."""
    from common.cli import export_main, run_cli
    from common.runtime import PteModel
    from runners.tests.conftest import cpp_greedy
    from tests.helpers import cli_stdout, step_logits

    hf, hf_dir, _ = tiny
    out = tmp_path / "model.pte"
    flags = () if hf.config.model_type == "gemma4_text" else ("--no-custom-ops",)
    stdout = cli_stdout(lambda: run_cli(export_main(FAMILY), [
        "--checkpoint", str(hf_dir), "--quantize", "fp32", "--attention-sink", f"{SINK},{WINDOW}", "--max-seq-len",
        str(SEQ), "--output", str(out), *flags]))
    assert f"context {SINK + WINDOW}, attention sink {SINK} + window {WINDOW}" in stdout
    pte = PteModel(out)
    assert pte.attention_sink == (SINK, WINDOW) and pte.max_context_len == SINK + WINDOW
    prompt = IDS[: SINK + WINDOW + 3]
    n = 3 * (SINK + WINDOW)
    eager = EagerModel(load_model(FAMILY, str(hf_dir), max_seq_len=SEQ, attention_sink=(SINK, WINDOW))[0], ())
    rest = IDS[len(prompt):]
    assert (step_logits(pte, prompt, rest) - step_logits(eager, prompt, rest)).abs().max() <= 1e-4
    got = generate(pte, prompt, Sampler(), n, ignore_eos=True).tokens
    assert len(got) == n and generate(eager, prompt, Sampler(), n, ignore_eos=True).tokens == got
    assert cpp_greedy("gemma4_31b", out, prompt, n, tmp_path) == got


@pytest.mark.slow
def test_gemma3_270m_perplexity_past_the_context(gemma3_gguf: str) -> None:
    """GPL-3 text fed 4x past a 128-position context (sink 4 + window 124; the sliding layers keep their 512):
    perplexity on the tokens past it within 1.2x of the full-context model's on the same tokens."""
    from bench.corpus import corpus
    from common.tokenizer import load_tokenizer

    ids = load_tokenizer(gemma3_gguf).encode(corpus()[1])[:512]
    context, chunk = 128, 32
    dense = load_model(FAMILY, gemma3_gguf, max_context_len=len(ids), max_seq_len=chunk)[0]
    sink = load_model(FAMILY, gemma3_gguf, max_seq_len=chunk, attention_sink=(4, context - 4))[0]

    def nll(model) -> torch.Tensor:
        """Per-token negative log-likelihood of ids[1:], a chunk at a time (the 262k vocabulary's logits are big)."""
        model.init_buffers()
        out = []
        with torch.no_grad():
            for i in range(0, len(ids), chunk):
                lp = model(torch.tensor([ids[i:i + chunk]]), torch.tensor([i]))[0].double().log_softmax(-1)
                nxt = torch.tensor(ids[i + 1 : i + chunk + 1])
                out.append(-lp[: len(nxt)].gather(1, nxt[:, None])[:, 0])
        return torch.cat(out)

    past = slice(context - 1, None)
    ppl_sink, ppl_dense = nll(sink)[past].mean().exp().item(), nll(dense)[past].mean().exp().item()
    print(f"Gemma 3 270M perplexity past the context: sink {ppl_sink:.2f}, full context {ppl_dense:.2f}")
    assert ppl_sink <= 1.2 * ppl_dense
