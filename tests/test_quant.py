"""Quantization recipes: rule matching, recipe files, presets, scale methods against their references."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn

from common.decoder import ModelConfig, Transformer
from common.errors import UserError
from common.quant import Recipe, Rule, fuse_agreeing, load_recipe, plan, preset, quantize_model
from common.quant.embedding import QuantizedEmbedding
from common.quant.scales import quantize_groups


def _tiny(n_layers: int = 3) -> Transformer:
    cfg = ModelConfig(vocab_size=96, dim=64, n_layers=n_layers, n_heads=4, n_kv_heads=2, hidden_dim=128, head_dim=16)
    torch.manual_seed(0)
    return Transformer(cfg, 16).eval()


MIXED = Recipe("mixed", (
    Rule(r"model\.embed_tokens", "emb8", 32),
    Rule(r".*\.mlp\.down_proj", "8da8w", layers=(0, 1)),
    Rule(r".*\.self_attn\.v_proj", "fp32", layers=(2, 3)),
    Rule(r".*", "8da4w", 64, "hqq"),
))


def test_first_matching_rule_wins_with_layer_and_type_filters() -> None:
    rules = plan(_tiny(), MIXED)
    assert rules["model.embed_tokens"].scheme == "emb8"
    assert rules["model.layers.0.mlp.down_proj"].scheme == "8da8w"
    assert rules["model.layers.1.mlp.down_proj"].scheme == "8da4w"  # outside layers [0, 1)
    assert "model.layers.2.self_attn.v_proj" not in rules  # fp32: stays float, later rules do not apply
    assert rules["model.layers.2.self_attn.k_proj"] == Rule(r".*", "8da4w", 64, "hqq")
    assert rules["lm_head"].scheme == "8da4w"  # an emb rule never matches a Linear, nor a Linear rule an Embedding


def test_fusing_only_where_rules_agree() -> None:
    model = fuse_agreeing(_tiny(), MIXED)
    names = {n for n, _ in model.named_modules()}
    assert "model.layers.0.self_attn.qkv_proj" in names and "model.layers.1.mlp.gate_up_proj" in names
    assert "model.layers.2.self_attn.v_proj" in names  # v stays float in layer 2: q/k/v are not fused there
    assert "model.layers.2.self_attn.qkv_proj" not in names


def test_fusing_compares_what_rules_do_not_their_patterns() -> None:
    """A recipe that names each module in its own rule (a resolved `gguf` recipe, a saved one) still fuses q/k/v and
    gate/up where the schemes agree, and keeps apart a member whose scheme differs."""
    model = _tiny(2)
    per_module = Recipe("named", tuple(
        Rule(re.escape(name), "8da8w" if name == "model.layers.1.self_attn.v_proj" else "8da4w")
        for name, mod in model.named_modules() if isinstance(mod, nn.Linear)))
    names = {n for n, _ in fuse_agreeing(model, per_module).named_modules()}
    assert {"model.layers.0.self_attn.qkv_proj", "model.layers.0.mlp.gate_up_proj",
            "model.layers.1.mlp.gate_up_proj"} <= names
    assert "model.layers.1.self_attn.qkv_proj" not in names and "model.layers.1.self_attn.v_proj" in names


def test_mixed_recipe_quantizes_each_module_by_its_rule() -> None:
    model = _tiny()
    ref = model(torch.tensor([[1, 2, 3]]), torch.tensor([0]))
    quantize_model(fuse_agreeing(model, MIXED), MIXED)
    assert isinstance(model.model.embed_tokens, QuantizedEmbedding) and model.model.embed_tokens.bits == 8
    down0 = model.model.layers[0].mlp.down_proj.weight
    down1 = model.model.layers[1].mlp.down_proj.weight
    assert down0.qdata.abs().max() > 7 and down0.scale.numel() == 64  # int8 per channel
    assert down1.qdata.abs().max() <= 8 and down1.scale.numel() == 64 * 128 // 64  # int4, groups of 64
    assert type(model.model.layers[2].self_attn.v_proj.weight) is nn.Parameter
    model.reset_cache()
    out = model(torch.tensor([[1, 2, 3]]), torch.tensor([0]))
    assert torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0) > 0.99


def test_presets_are_todays_flags() -> None:
    r = preset("8da4w", group_size=64, embedding_bits=4)
    assert r.name == "8da4w-g64-emb4"
    assert r.rules == (Rule(".*", "emb4", 32), Rule("lm_head", "8da8w"), Rule(".*", "8da4w", 64))
    legacy = {"linear": "8da4w", "group_size": 64, "embedding_bits": 4, "embedding_group_size": 32}
    # quantize_and_save dirs written before recipes were rules: their LM head is int4, as the flags then made it
    assert Recipe.from_dict(legacy).rules == (Rule(".*", "emb4", 32), Rule(".*", "8da4w", 64))
    assert Recipe.from_dict(r.to_dict()) == r
    assert preset("fp32").is_float and not preset("8da8w").is_float
    assert preset("gguf").rules == (Rule(".*", "gguf"),)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_recipe_file_round_trip(tmp_path, suffix: str) -> None:
    import yaml

    path = tmp_path / f"mine{suffix}"
    d = MIXED.to_dict()
    path.write_text(json.dumps(d) if suffix == ".json" else yaml.safe_dump(d))
    assert load_recipe(str(path)) == MIXED


@pytest.mark.parametrize("content, message", [
    ('{"rules": [{"pattern": ".*", "scheme": "int3"}]}', "scheme 'int3', expected one of"),
    ('{"rules": [{"pattern": "(", "scheme": "8da4w"}]}', "not a regular expression"),
    ('{"rules": [{"pattern": ".*", "scheme": "8da4w", "group_size": 48}]}', "group_size 48, expected one of"),
    ('{"rules": [{"pattern": ".*", "scheme": "8da4w", "bits": 4}]}', "unknown keys ['bits']"),
    ('{"rules": [{"pattern": ".*", "scheme": "8da4w", "layers": [1]}]}', "layers must be [lo, hi]"),
    ('{"rules": [], "extra": 1}', "not ['extra']"),
    ('[1, 2]', "expected a mapping with 'rules'"),
    ('{"rules": [', "cannot parse (JSONDecodeError"),
])
def test_bad_recipe_files_get_one_line(tmp_path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UserError) as e:
        load_recipe(str(path))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_lsq_scales_never_worse_than_absmax() -> None:
    torch.manual_seed(0)
    w = torch.randn(64, 4, 32) * torch.rand(64, 4, 1)
    for bits in (4, 8):
        q, s = quantize_groups(w, bits, method="lsq")
        qmax = 2 ** (bits - 1) - 1
        absmax = w.abs().amax(-1, keepdim=True) / qmax
        err_lsq = (q * s - w).square().sum(-1)
        err_absmax = ((w / absmax).round().clamp(-qmax - 1, qmax) * absmax - w).square().sum(-1)
        assert (err_lsq <= err_absmax + 1e-6).all()
        assert q.min() >= -qmax - 1 and q.max() <= qmax


def test_hqq_matches_torchaos_hqq_config() -> None:
    """Our hqq method is torchao's Int8DynamicActivationIntxWeightConfig with HQQ_SCALE_ONLY qparams."""
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
    from torchao.quantization.granularity import PerGroup
    from torchao.quantization.quantize_.workflows.intx.intx_choose_qparams_algorithm import IntxChooseQParamsAlgorithm

    torch.manual_seed(0)
    lin = nn.Linear(64, 16, bias=False)
    w = lin.weight.detach().clone()
    quantize_(lin, Int8DynamicActivationIntxWeightConfig(
        weight_dtype=torch.int4, weight_granularity=PerGroup(32),
        intx_choose_qparams_algorithm=IntxChooseQParamsAlgorithm.HQQ_SCALE_ONLY))
    q, s = quantize_groups(w.reshape(16, 2, 32), 4, method="hqq")
    assert torch.allclose(s.reshape(lin.weight.scale.shape), lin.weight.scale.float(), rtol=1e-5)
    assert torch.equal(q.reshape(16, 64), lin.weight.qdata.to(torch.int8))


def test_rules_written_for_member_names_apply_after_fusing() -> None:
    """A rule naming q/k/v (not `.*`) still quantizes the fused qkv_proj: fused linears match by member names."""
    recipe = Recipe("attn-only", (Rule(r".*\.self_attn\.[qkv]_proj", "8da4w"),))
    model = quantize_model(fuse_agreeing(_tiny(1), recipe), recipe)
    attn, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
    assert hasattr(attn.qkv_proj.weight, "qdata") and tuple(attn.qkv_proj.weight.block_size) == (1, 32)
    assert type(attn.o_proj.weight) is nn.Parameter  # not named by the rule
    assert type(mlp.gate_up_proj.weight) is nn.Parameter  # gate/up agree (both float): fused, float


def test_block_linear_footprint_is_what_the_pte_stores(tmp_path) -> None:
    """Programs that differ only in their block linears' scheme differ in size by what `block_linears` counts for
    each (the XNNPACK serializer packs int4 two a byte with bf16 group scales; int8 with fp32 per-channel scales)."""
    from common.contract import CAUSAL_LM, causal_lm_constants
    from common.export import export_pte
    from common.quant.footprint import block_linears

    cfg = ModelConfig(vocab_size=96, dim=256, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=512, head_dim=64)
    size, counted = {}, {}
    for s in ("fp32", "8da4w", "8da8w"):
        torch.manual_seed(0)
        model = Transformer(cfg, 16, last_logits_only=True).eval()
        model = quantize_model(model, Recipe(s, (Rule(r".*layers\..*", s, 64),)))
        counted[s] = block_linears(model)
        export_pte(model, tmp_path / f"{s}.pte", CAUSAL_LM, causal_lm_constants(cfg, 4, 16, (1,)))
        size[s] = (tmp_path / f"{s}.pte").stat().st_size
    weights = 2 * (2 * 256 * 256 + 2 * 256 * 128 + 3 * 256 * 512)  # q, o; k, v; gate, up, down: 2 layers
    assert {c.weights for c in counted.values()} == {weights} and counted["fp32"].bits == 32
    # int4 + a bf16 scale per 64 weights; int8 + an fp32 scale per row of 256 or 512 inputs
    assert counted["8da4w"].bits == 4.25 and 8 < counted["8da8w"].bits < 8.2
    for s in ("8da4w", "8da8w"):  # a scale's width wrong would be 0.9 % (8da4w) of the difference
        saved = size["fp32"] - size[s]  # measured 2026-11-29: 0.14 % less than counted (per-tensor metadata)
        assert saved == pytest.approx(counted["fp32"].bytes - counted[s].bytes, rel=2e-3), (size, counted)
