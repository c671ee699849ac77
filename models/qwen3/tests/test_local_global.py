"""Sliding-window layers in the shared decoder (HF `layer_types`, export --local-global): exact against
transformers' Qwen3 with sliding layers (its dense sliding-window mask) for every chunk size, eager and `.pte`."""

from __future__ import annotations

import pytest
import torch

from common.cli import export_main, run_cli
from common.nn.attention import attention_kernel
from common.pipeline import load_model
from common.runtime import PteModel
from models.qwen3.model import FAMILY
from tests.helpers import cli_stdout

WINDOW, CONTEXT, N = 5, 32, 20
LAYER_TYPES = ["sliding_attention", "full_attention", "sliding_attention"]


@pytest.fixture(scope="module")
def sliding(tmp_path_factory):
    """A tiny Qwen3 whose layers 0 and 2 see the last 5 positions (transformers' eager attention as reference)."""
    from tests.checkpoints import write_tiny

    hf, hf_dir, _ = write_tiny("qwen3", tmp_path_factory.mktemp("qwen3_sliding"), seed=3, num_hidden_layers=3,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=16, layer_types=LAYER_TYPES,
                               sliding_window=WINDOW, use_sliding_window=True, max_window_layers=0)
    hf.config._attn_implementation = "eager"
    ids = torch.randint(0, hf.config.vocab_size, (N,), generator=torch.Generator().manual_seed(0)).tolist()
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0]
        full = hf.__class__(hf.config.__class__(**{**hf.config.to_dict(), "layer_types": ["full_attention"] * 3}))
        full.load_state_dict(hf.state_dict())
        dense = full.eval()(torch.tensor([ids])).logits[0]
    assert (ref - dense).abs().max() > 1e-2  # the windows matter at these lengths
    return hf_dir, ids, ref


def chunked(model, ids: list[int], chunk: int) -> torch.Tensor:
    """Logits at every position, the ids fed `chunk` at a time."""
    with torch.no_grad():
        return torch.cat([model(torch.tensor([ids[i:i + chunk]]), torch.tensor([i]))[0]
                          for i in range(0, len(ids), chunk)])


@pytest.mark.parametrize("custom_ops", [False, True], ids=["sdpa", "custom_ops"])
def test_sliding_layers_match_transformers_for_every_chunk_size(sliding, custom_ops: bool) -> None:
    hf_dir, ids, ref = sliding
    for chunk in range(1, N + 1):
        model, cfg, _ = load_model(FAMILY, hf_dir, max_context_len=CONTEXT, kernel=attention_kernel(custom_ops),
                                   max_seq_len=chunk)
        assert cfg.layer_windows == (WINDOW, 0, WINDOW)
        assert (chunked(model, ids, chunk) - ref).abs().max() <= 1e-4, chunk
    assert FAMILY.config_from_hf(FAMILY.to_hf(cfg)) == cfg


@pytest.mark.slow
def test_local_global_export_matches_transformers(sliding, tmp_path) -> None:
    """--local-global 5,0 on a checkpoint whose config has no windows: the `.pte` (custom ops, chunks of 4) gives
    transformers' logits for the same per-layer windows."""
    import json
    import shutil

    hf_dir, ids, ref = sliding
    plain = tmp_path / "plain"
    shutil.copytree(hf_dir, plain)
    config = json.loads((plain / "config.json").read_text())
    for key in ("layer_types", "sliding_window", "use_sliding_window"):
        config.pop(key, None)
    (plain / "config.json").write_text(json.dumps(config))
    assert load_model(FAMILY, str(plain), max_context_len=8)[1].layer_windows == ()
    out = tmp_path / "model.pte"
    stdout = cli_stdout(lambda: run_cli(export_main(FAMILY), [
        "--checkpoint", str(plain), "--quantize", "fp32", "--local-global", f"{WINDOW},0", "--max-seq-len", "4",
        "--max-context-len", str(CONTEXT), "--output", str(out)]))
    assert "wrote" in stdout
    pte = PteModel(out)
    steps = torch.stack([pte.forward([ids[i]], i) for i in range(N)])  # token by token: the ring wraps 4 times
    assert (steps - ref).abs().max() <= 1e-4
    ends = torch.stack([pte.forward(ids[i:i + 4], i) for i in range(0, N, 4)])  # chunks of 4: the last logits
    assert (ends - ref[3::4]).abs().max() <= 1e-4
