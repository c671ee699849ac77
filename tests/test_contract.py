"""The .pte contracts round trip: export stamps them, the Python runtime and the C++ runner read them back and
refuse a program of another contract in one line. Tiny modules, portable backend: seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from common.contract import CAUSAL_LM, CAUSAL_LM_EMBEDDINGS, NAME_METHOD, SGT4T, VERSION_METHOD, causal_lm_constants
from common.decoder import ModelConfig, Transformer
from common.errors import UserError
from common.export import export_pte

HIDDEN, VOCAB = 16, 32


class TinySgt(nn.Module):
    """Shaped like SGT4T's methods: (input_ids, noise_mask, attention_mask) -> embeddings."""

    def __init__(self, emb: nn.Embedding, scale: float):
        super().__init__()
        self.emb, self.scale = emb, scale

    def forward(self, input_ids, noise_mask, attention_mask):
        keep = attention_mask.unsqueeze(-1).float()
        return self.emb(input_ids) * keep * (1 + self.scale * noise_mask.unsqueeze(-1).float())


class TinyMuSigma(TinySgt):
    """SGT4T's `mu_sigma` for TinySgt: (scale * x, ones) on valid tokens."""

    def forward(self, input_ids, noise_mask, attention_mask):
        x = self.emb(input_ids) * attention_mask.unsqueeze(-1).float()
        return x * self.scale, torch.ones_like(x)


class TinyEmbeddingsLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(HIDDEN, VOCAB)

    def forward(self, embeddings, input_pos):
        return self.head(embeddings[:, -1:, :]) + input_pos.float()


def _tiny_lm() -> Transformer:
    cfg = ModelConfig(vocab_size=VOCAB, dim=HIDDEN, n_layers=1, n_heads=2, n_kv_heads=1, hidden_dim=32, head_dim=8)
    torch.manual_seed(0)
    return Transformer(cfg, 16, last_logits_only=True).eval()


def _load(path: Path):
    from executorch.runtime import Runtime

    return Runtime.get().load_program(str(path))


@pytest.fixture(scope="module")
def ptes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("contracts")
    lm = _tiny_lm()
    out = {"causal_lm": d / "lm.pte", "sgt4t": d / "sgt.pte", "causal_lm_embeddings": d / "emb.pte"}
    export_pte(lm, out["causal_lm"], CAUSAL_LM, causal_lm_constants(lm.cfg, 4, 16, (1,)), backend="portable")
    sgt_consts = {"get_max_seq_len": 8, "get_hidden_size": HIDDEN, "get_vocab_size": VOCAB, "get_dtype": "float32",
                  "get_bos_id": 1, "get_eos_ids": [2], "get_head_dim": 8, "get_n_kv_heads": 1, "get_n_layers": 1,
                  "get_max_batch_size": 1, "use_sdpa_with_kv_cache": False, "enable_dynamic_shape": True,
                  "get_sgt_name": "tiny", "get_model_name": "tiny-lm", "get_version": "0"}
    emb = nn.Embedding(VOCAB, HIDDEN)
    export_pte({"forward": TinySgt(emb, 0.5), "mu_sigma": TinyMuSigma(emb, 0.5)}, out["sgt4t"], SGT4T, sgt_consts,
               backend="portable", limits={"max_seq_len": 8})
    emb_consts = {"get_max_seq_len": 4, "get_max_context_len": 16, "get_eos_ids": [1], "get_vocab_size": VOCAB,
                  "get_hidden_size": HIDDEN}
    export_pte(TinyEmbeddingsLM(), out["causal_lm_embeddings"], CAUSAL_LM_EMBEDDINGS, emb_consts, backend="portable",
               limits={"max_seq_len": 4, "hidden": HIDDEN})
    return out


@pytest.mark.parametrize("contract", [CAUSAL_LM, SGT4T, CAUSAL_LM_EMBEDDINGS], ids=lambda c: c.name)
def test_stamp_and_methods_round_trip(ptes: dict[str, Path], contract) -> None:
    program = _load(ptes[contract.name])
    names = set(program.method_names)
    assert {m.name for m in contract.methods} | set(contract.constants) <= names
    assert program.load_method(NAME_METHOD).execute([])[0] == contract.name
    assert program.load_method(VERSION_METHOD).execute([])[0] == contract.version
    contract.check(str(ptes[contract.name]), names, lambda n: program.load_method(n).execute([])[0])
    for method in contract.methods:  # each method runs on its example inputs, at a dynamic length too
        limits = {"max_seq_len": 4, "hidden": HIDDEN}
        for length in (1, 3):
            out = program.load_method(method.name).execute(list(contract.example_inputs(method.name, limits, length)))
            assert out[0].dim() == 3


def test_sgt4t_methods_differ_only_by_noise(ptes: dict[str, Path]) -> None:
    program = _load(ptes["sgt4t"])
    ids = torch.tensor([[3, 4, 5]])
    ones = torch.ones_like(ids)
    noisy = program.load_method("forward").execute([ids, ones.bool(), ones])[0]
    mu, sigma = program.load_method("mu_sigma").execute([ids, ones.bool(), ones])
    assert torch.allclose(noisy, mu * 3) and torch.equal(sigma, torch.ones_like(mu))
    masked = program.load_method("forward").execute([ids, torch.zeros_like(ids).bool(), ones])[0]
    assert torch.allclose(masked, mu * 2)


def test_python_runtime_refuses_another_contract(ptes: dict[str, Path]) -> None:
    from common.runtime import PteModel

    assert PteModel(ptes["causal_lm"]).max_context_len == 16
    with pytest.raises(UserError, match=r"sgt\.pte: a sgt4t v1 program, but this runner drives causal_lm v1"):
        PteModel(ptes["sgt4t"])


def test_python_runtime_leaves_the_cores_to_executorch(ptes: dict[str, Path]) -> None:
    """Opening a language model's program drops torch to one thread: its OpenMP threads spin after each parallel
    op on the cores ExecuTorch's thread pool needs (common.runtime.leave_cores_to_executorch); the program still
    computes."""
    from common.runtime import PteModel

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        model = PteModel(ptes["causal_lm"])
        assert torch.get_num_threads() == 1
        assert torch.isfinite(model.forward([1, 2, 3], 0)).all()
    finally:
        torch.set_num_threads(before)


def test_unstamped_llm_program_reads_as_causal_lm(tmp_path: Path) -> None:
    """An ExecuTorch export_llm program carries the runner's constant methods but no stamp: still drivable."""
    from executorch.exir import to_edge

    lm = _tiny_lm()
    with torch.no_grad():
        ep = torch.export.export(lm, CAUSAL_LM.example_inputs("forward", {"max_seq_len": 4}), strict=False)
    constants = {k: v for k, v in causal_lm_constants(lm.cfg, 4, 16, (1,)).items() if not k.startswith("get_contract")}
    path = tmp_path / "unstamped.pte"
    path.write_bytes(to_edge(ep, constant_methods=constants).to_executorch().buffer)
    names = set(_load(path).method_names)
    assert NAME_METHOD not in names
    CAUSAL_LM.check(str(path), names, lambda n: None)
    with pytest.raises(UserError, match="not a zoo sgt4t program"):
        SGT4T.check(str(path), names, lambda n: None)


@pytest.mark.slow
def test_cpp_runner_refuses_another_contract(ptes: dict[str, Path]) -> None:
    import subprocess

    from runners.tests.conftest import build_runner

    proc = subprocess.run([str(build_runner("llama3")), "--model", str(ptes["sgt4t"])], capture_output=True, text=True)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert lines[0] == f"error: {ptes['sgt4t']}: a sgt4t v1 program, but this runner drives causal_lm v1"
