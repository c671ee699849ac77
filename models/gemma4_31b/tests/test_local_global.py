"""--local-global on Gemma: per-layer windows in place of the checkpoint's pattern, each layer keeping its kind
(head size, RoPE, K=V). The checkpoint's own pattern changes nothing; one window for the sliding layers is
transformers' Gemma with that sliding_window; any windows, chunked through the rings, equal the dense masked
one-shot run for every chunk size."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from common.errors import UserError
from common.nn.attention import attention_kernel
from common.pipeline import load_model
from models.gemma4_31b.model import FAMILY

N = 20  # positions: 5x the tiny configs' window of 4
IDS = torch.randint(0, 300, (N,), generator=torch.Generator().manual_seed(2)).tolist()


@pytest.fixture(scope="module", params=["gemma4", "gemma3"])
def tiny(request, tmp_path_factory: pytest.TempPathFactory):
    from tests.checkpoints import write_tiny

    return write_tiny(request.param, tmp_path_factory.mktemp(request.param))


def chunked(model, chunk: int) -> torch.Tensor:
    model.reset_cache()
    with torch.no_grad():
        return torch.cat([model(torch.tensor([IDS[i:i + chunk]]), torch.tensor([i]))[0] for i in range(0, N, chunk)])


def test_the_checkpoints_own_pattern_changes_nothing(tiny) -> None:
    _, hf_dir, _ = tiny
    plain, cfg, _ = load_model(FAMILY, str(hf_dir), max_context_len=N, max_seq_len=3)
    same, cfg2, _ = load_model(FAMILY, str(hf_dir), max_context_len=N, max_seq_len=3, local_global=(4, 4, 4, 4, 4, 0))
    assert cfg2.layer_windows == (4, 4, 4, 4, 4, 0) and cfg2.window(5) == cfg.window(5) == 0
    assert torch.equal(chunked(plain, 3), chunked(same, 3))


def test_one_window_is_transformers_with_that_sliding_window(tiny) -> None:
    """--local-global 2,2,2,2,2,0 against transformers' Gemma with sliding_window 2 (same weights)."""
    hf, hf_dir, _ = tiny
    config = hf.config.__class__(**{**hf.config.to_dict(), "sliding_window": 2})
    config._attn_implementation = "eager"
    ref_model = hf.__class__(config).eval()
    ref_model.load_state_dict(hf.state_dict())
    with torch.no_grad():
        ref, plain = ref_model(torch.tensor([IDS])).logits[0], hf(torch.tensor([IDS])).logits[0]
    assert (ref - plain).abs().max() > 1e-2  # the window matters at this length
    model = load_model(FAMILY, str(hf_dir), max_context_len=N, max_seq_len=5, local_global=(2, 2, 2, 2, 2, 0))[0]
    assert (chunked(model, 5) - ref).abs().max() <= 1e-4


@pytest.mark.parametrize("custom_ops", [False, True], ids=["sdpa", "custom_ops"])
def test_any_windows_chunked_equal_the_dense_one_shot_run(tiny, custom_ops: bool) -> None:
    """Windows 3 and 6 on sliding layers, full attention on a sliding-kind layer and a window on the full-kind
    one: the one-shot run (ring as long as the sequence: a dense masked attention) is the reference."""
    _, hf_dir, _ = tiny
    windows = (3, 0, 6, 3, 0, 5)
    kernel = attention_kernel(custom_ops)
    dense = load_model(FAMILY, str(hf_dir), max_context_len=N, kernel=kernel, local_global=windows)[0]
    ref = chunked(dense, N)
    plain = chunked(load_model(FAMILY, str(hf_dir), max_context_len=N, kernel=kernel)[0], N)
    assert (ref - plain).abs().max() > 1e-2
    for chunk in range(1, N + 1):
        model = load_model(FAMILY, str(hf_dir), max_context_len=N, kernel=kernel, max_seq_len=chunk,
                           local_global=windows)[0]
        assert (chunked(model, chunk) - ref).abs().max() <= 1e-4, chunk


def test_with_an_attention_sink_is_one_clear_error(tiny) -> None:
    _, hf_dir, _ = tiny
    with pytest.raises(UserError, match="does not go with --local-global"):
        load_model(FAMILY, str(hf_dir), local_global=(3, 0), attention_sink=(2, 8))
    cfg = load_model(FAMILY, str(hf_dir), max_context_len=8)[1]
    with pytest.raises(UserError, match="layer_windows"):
        dataclasses.replace(cfg, layer_windows=(3, 0))
