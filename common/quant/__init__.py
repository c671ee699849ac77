"""Quantization recipes as data: ordered rules over module names -> a scheme and a scale method.

A rule matches a module when its regex fullmatches the module's name (HF names: `model.layers.3.mlp.down_proj`),
the module is of a type the scheme applies to, and (optionally) its layer index is in `layers` [lo, hi). The first
matching rule wins; a module no rule matches stays float. Schemes (each lowered and tested on XNNPACK; torchao
weight-only intx lowered to XNNPACK gives wrong numbers with executorch 1.5.1, so it is not here):

| scheme  | modules   | what                                                              |
| 8da4w   | Linear    | int8 dynamic activations, int4 symmetric weight groups (32/64/128) |
| 8da8w   | Linear    | int8 dynamic activations, int8 per-channel weights                 |
| emb4    | Embedding | int4 symmetric groups (quantized_decomposed.embedding_4bit)        |
| emb8    | Embedding | int8 symmetric groups (quantized_decomposed.embedding_byte)        |
| fp32    | any       | keep float (stops later rules from matching)                       |
| gguf    | any       | as a GGUF file gives it: resolved per tensor type (`resolve_gguf`) into: |
| q4      | Linear    | the file's Q4_0/Q4_1/Q4_K blocks exactly: int4 groups + block offsets   |
| q8      | Embedding | the file's Q8_0 blocks exactly (embedding_byte, group 32)               |
| tied8   | Linear    | a tied lm_head reading the embedding's int8 table (zoo::linear_q8): one copy |
| aqlm    | Linear    | AQLM 2x8 codes (zoo::code2x8_lut_matmat): fit by quantize_and_save on calibration text |

Today's flags are presets (`preset("8da4w", group_size=64, embedding_bits=4)`); `load_recipe(FILE)` reads a
user's own rules (JSON or YAML). Linears that read the same input (q/k/v, gate/up) are fused into one GEMM when
their rules agree, before quantizing, on every path (in memory and quantize_and_save).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.errors import UserError
from common.nn.linear import member_names
from common.quant.embedding import QuantizedEmbedding
from common.quant.scales import SCALE_METHODS, quantize_groups

SCHEMES = {"8da4w": nn.Linear, "8da8w": nn.Linear, "emb4": nn.Embedding, "emb8": nn.Embedding, "fp32": nn.Module,
           "gguf": nn.Module, "q4": nn.Linear, "q8": nn.Embedding, "tied8": nn.Linear, "aqlm": nn.Linear}
TIED_TABLE = "model.embed_tokens"  # the table a tied lm_head shares (common.checkpoint's tie map)
GROUP_SIZES = {"8da4w": (32, 64, 128), "emb4": (32, 64, 128, 256), "emb8": (32, 64, 128, 256), "q4": (32,), "q8": (32,)}
PRESETS = ("gguf", "fp32", "8da4w", "8da8w", "aqlm-2x8")  # --quantize values
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


@dataclass(frozen=True)
class Rule:
    pattern: str  # regex, fullmatched against the module name
    scheme: str  # a key of SCHEMES
    group_size: int = 32  # 8da4w / emb4 / emb8
    scale_method: str = "lsq"  # common.quant.scales.SCALE_METHODS
    layers: tuple[int, int] | None = None  # only layers lo <= i < hi

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise UserError(f"recipe rule {self.pattern!r}: scheme {self.scheme!r}, expected one of {', '.join(SCHEMES)}")
        sizes = GROUP_SIZES.get(self.scheme)
        if sizes and self.group_size not in sizes:
            raise UserError(f"recipe rule {self.pattern!r}: {self.scheme} group_size {self.group_size}, expected one of {sizes}")
        if self.scale_method not in SCALE_METHODS:
            raise UserError(f"recipe rule {self.pattern!r}: scale_method {self.scale_method!r}, expected one of {SCALE_METHODS}")
        try:
            re.compile(self.pattern)
        except re.error as e:
            raise UserError(f"recipe rule {self.pattern!r}: not a regular expression ({e})") from None

    def matches(self, name: str, module: nn.Module) -> bool:
        if not isinstance(module, SCHEMES[self.scheme]) or not re.fullmatch(self.pattern, name):
            return False
        if self.layers is None:
            return True
        m = _LAYER.search(name)
        return m is not None and self.layers[0] <= int(m.group(1)) < self.layers[1]


@dataclass(frozen=True)
class Recipe:
    name: str
    rules: tuple[Rule, ...] = field(default_factory=tuple)
    origin: str = field(default="flags", compare=False)  # "flags" (a preset) or the recipe file, for messages

    def rule_for(self, name: str, module: nn.Module) -> Rule | None:
        """The first rule matching a Linear or Embedding (None: stays float). A fused linear (qkv_proj) is matched
        by its first member's name (q_proj): fusing happens only where the members' rules agree."""
        if not isinstance(module, (nn.Linear, nn.Embedding)):
            return None
        name = member_names(name)[0]
        rule = next((r for r in self.rules if r.matches(name, module)), None)
        return None if rule is None or rule.scheme == "fp32" else rule

    @property
    def needs_calibration(self) -> bool:
        """Whether a rule fits weights to calibration activations (AQLM: quantize_and_save only)."""
        return any(r.scheme == "aqlm" for r in self.rules)

    @property
    def is_float(self) -> bool:
        return all(r.scheme == "fp32" for r in self.rules)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "rules": [_rule_dict(r) for r in self.rules]}

    @classmethod
    def from_dict(cls, d: Any, source: str = "recipe") -> Recipe:
        """From `to_dict()`'s form, or the flags dict `quantize_and_save` wrote before recipes were rules."""
        if not isinstance(d, dict):
            raise UserError(f"{source}: expected a mapping with 'rules', got {type(d).__name__}")
        if "linear" in d:  # {"linear": "8da4w", "group_size": 32, "embedding_bits": 4, "embedding_group_size": 32}
            legacy = {k: d[k] for k in ("linear", "group_size", "embedding_bits", "embedding_group_size") if k in d}
            return preset(**legacy, int8_head=False)
        unknown = set(d) - {"name", "rules"}
        if unknown or not isinstance(d.get("rules"), list):
            raise UserError(f"{source}: expected keys 'name' and 'rules' (a list){f', not {sorted(unknown)}' if unknown else ''}")
        rules = []
        for i, r in enumerate(d["rules"]):
            if not isinstance(r, dict):
                raise UserError(f"{source}: rule {i} is not a mapping")
            bad = set(r) - {"pattern", "scheme", "group_size", "scale_method", "layers"}
            if bad or "pattern" not in r or "scheme" not in r:
                raise UserError(f"{source}: rule {i} needs 'pattern' and 'scheme'{f'; unknown keys {sorted(bad)}' if bad else ''}")
            layers = r.get("layers")
            if layers is not None and (not isinstance(layers, list) or len(layers) != 2 or not all(isinstance(x, int) for x in layers)):
                raise UserError(f"{source}: rule {i}: layers must be [lo, hi]")
            try:
                rules.append(Rule(**{**r, "layers": tuple(layers) if layers else None}))
            except (UserError, TypeError) as e:  # a bad scheme, size or pattern; a value of the wrong type
                raise UserError(f"{source}: rule {i}: {e}") from None
        return cls(str(d.get("name", Path(source).stem)), tuple(rules), source)


def _rule_dict(r: Rule) -> dict[str, Any]:
    d = asdict(r)
    d["layers"] = list(r.layers) if r.layers else None
    return {k: v for k, v in d.items() if v is not None}


def preset(
    linear: str = "fp32", group_size: int = 32, embedding_bits: int | None = None, embedding_group_size: int = 32,
    int8_head: bool = True,
) -> Recipe:
    """The flags as a recipe: `--quantize LINEAR --group-size N --embedding-bits B`. 8da4w keeps the LM head at int8
    per channel (`int8_head`; measured on SmolLM2, README "Quantization recipes": KL 0.525 -> 0.428 for 14 MB);
    directories saved before that load with `int8_head=False`."""
    if linear not in PRESETS:
        raise UserError(f"--quantize {linear!r}: expected one of {', '.join(PRESETS)}")
    if linear == "8da4w" and group_size not in GROUP_SIZES["8da4w"]:
        raise UserError(f"--group-size {group_size}: expected one of {GROUP_SIZES['8da4w']}")
    if embedding_bits not in (None, 4, 8):
        raise UserError(f"--embedding-bits {embedding_bits}: expected 4 or 8")
    rules = []
    if embedding_bits:
        rules.append(Rule(".*", f"emb{embedding_bits}", embedding_group_size))
    if linear == "gguf":
        rules.append(Rule(".*", "gguf"))
    elif linear == "8da4w":
        if int8_head:
            rules.append(Rule("lm_head", "8da8w"))
        rules.append(Rule(".*", "8da4w", group_size))
    elif linear == "8da8w":
        rules.append(Rule(".*", "8da8w", scale_method="minmax"))  # torchao's per-channel scales, as before
    elif linear == "aqlm-2x8":  # the LM head (tied or not) at int8 per channel; every other linear AQLM
        rules += [Rule("lm_head", "8da8w"), Rule(".*", "aqlm")]
    name = linear + (f"-g{group_size}" if linear == "8da4w" else "") + (f"-emb{embedding_bits}" if embedding_bits else "")
    return Recipe(name, tuple(rules))


def load_recipe(path: str) -> Recipe:
    """A user's recipe file: JSON, or YAML (.yaml / .yml) — {name, rules: [{pattern, scheme, ...}]}."""
    from common.io import read_text_arg

    p = Path(path)
    text = read_text_arg(p, "--recipe")
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # yaml.YAMLError / json.JSONDecodeError: one line naming the file
        raise UserError(f"--recipe {path}: cannot parse ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    return Recipe.from_dict(data, path)


def gguf_scheme(qtype, module: nn.Module) -> str:
    """The scheme that keeps a GGUF tensor of `qtype` at the precision the file gives it (gguf_blocks)."""
    from gguf import GGMLQuantizationType as T

    from common.quant.gguf_blocks import INT4_EXACT, INT8_EXACT

    if qtype in (T.F32, T.F16, T.BF16):
        return "fp32"
    if isinstance(module, nn.Embedding):
        return "q8" if qtype in INT8_EXACT else "emb8"  # more than 4 bits, or a 4-bit table: int8 groups of 32
    return "q4" if qtype in INT4_EXACT else "8da8w"  # Q5_*, Q6_K, Q8_0: int8 per channel keeps nearly all of it


def resolve_gguf(recipe: Recipe, model: nn.Module, qtypes: dict[str, Any], tied: bool = False) -> Recipe:
    """`recipe` with each `gguf` rule replaced, module by module, by the scheme the file's type for that module's
    weight gives (`qtypes`: module name -> gguf.GGMLQuantizationType). A `tied` lm_head whose table becomes int8
    reads that table (tied8) instead of storing it twice. The result names every module: it is what a
    quantize_and_save directory records."""
    if not any(r.scheme == "gguf" for r in recipe.rules):
        return recipe
    rules: list[Rule] = []
    for name, mod in model.named_modules():
        rule = recipe.rule_for(name, mod)
        if rule is None:
            continue
        if rule.scheme == "gguf":
            if name not in qtypes:
                raise UserError(f"recipe rule {rule.pattern!r}: scheme gguf needs a GGUF checkpoint, and {name} has "
                                "no tensor in it")
            scheme = gguf_scheme(qtypes[name], mod)
            if tied and name == "lm_head" and next(
                    (r.scheme for r in rules if r.pattern == re.escape(TIED_TABLE)), None) in ("q8", "emb8"):
                scheme = "tied8"
            rule = Rule(re.escape(name), scheme)  # 8da8w: least-squares scales (measured better than absmax here)
        else:
            rule = Rule(re.escape(name), rule.scheme, rule.group_size, rule.scale_method)
        rules.append(rule)
    return Recipe(recipe.name, tuple(rules), recipe.origin)


def within(name: str, unit: str | None) -> bool:
    """Whether module `name` is `unit` or inside it (None: the whole model)."""
    return unit is None or name == unit or name.startswith(unit + ".")


def plan(model: nn.Module, recipe: Recipe, unit: str | None = None) -> dict[str, Rule]:
    """Module name -> the rule that quantizes it, for every Linear and Embedding (in `unit`) a rule matches."""
    return {name: rule for name, mod in model.named_modules()
            if within(name, unit) and (rule := recipe.rule_for(name, mod)) is not None}


def _effect(rule: Rule | None) -> tuple | None:
    """The part of a rule that decides a module's quantized values."""
    return rule and (rule.scheme, rule.group_size, rule.scale_method)


def fuse_agreeing(model: nn.Module, recipe: Recipe, only: int | None = None) -> nn.Module:
    """Fuse q/k/v and gate/up (of layer `only`, or all) where each group's members get the same rule (exact; see
    common.nn.linear)."""
    # what a rule does, not which pattern chose it: a resolved gguf recipe names each module in its own rule
    rules = {name: _effect(recipe.rule_for(name, mod)) for name, mod in model.named_modules()}

    def agree(names: list[str]) -> bool:  # AQLM linears stay apart: each has its own codebooks, as in HF's layout
        effects = {rules[n] for n in names}
        return len(effects) == 1 and (rules[names[0]] or ("fp32",))[0] != "aqlm"

    model.fuse_projections(agree, only)
    return model


def quantize_model(model: nn.Module, recipe: Recipe, blocks: Callable[[str, str], Any] | None = None,
                   unit: str | None = None) -> nn.Module:
    """Quantize `model` (only the modules in `unit`, when given) in place by `recipe` (linears with torchao,
    embedding tables with QuantizedEmbedding).

    `blocks(name, kind)` gives a GGUF tensor's own blocks for the `q4` ("int4": gguf_blocks.Int4Blocks) and `q8`
    ("int8": (codes, scales)) schemes, for the module `name` (the members' blocks stacked, for a fused linear)."""
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup

    targets = plan(model, recipe, unit)
    if any(r.scheme == "gguf" for r in targets.values()):
        raise ValueError("resolve_gguf the recipe first")
    if any(r.scheme == "aqlm" for r in targets.values()):
        raise UserError(f"recipe {recipe.name!r}: AQLM weights are fit to calibration activations, minutes per model; "
                        "run quantize_and_save with it, then export (or run) the directory it writes")
    if blocks is None and any(r.scheme in ("q4", "q8") for r in targets.values()):
        raise UserError(f"recipe {recipe.name!r}: schemes q4 and q8 take a GGUF file's own blocks; pass a GGUF "
                        "checkpoint")
    for name, rule in targets.items():
        mod = model.get_submodule(name)
        if rule.scheme == "8da4w" and mod.in_features % rule.group_size:
            ok = [g for g in GROUP_SIZES["8da4w"] if mod.in_features % g == 0]
            what = "--group-size" if recipe.origin == "flags" else f"{recipe.origin}: rule {rule.pattern!r} group_size"
            raise UserError(f"{what} {rule.group_size} does not divide in_features {mod.in_features} of {name}; "
                            f"use one of {ok}")
    with torch.no_grad():
        linear = {n: r for n, r in targets.items() if r.scheme in ("8da4w", "8da8w", "q4")}
        floats = {n: model.get_submodule(n).weight.detach().clone() for n in linear if linear[n].scheme != "q4"}
        for rule in dict.fromkeys(linear.values()):
            names = {n for n, r in linear.items() if r == rule}
            granularity = PerAxis(0) if rule.scheme == "8da8w" else PerGroup(rule.group_size)
            config = Int8DynamicActivationIntxWeightConfig(
                weight_dtype=torch.int8 if rule.scheme == "8da8w" else torch.int4, weight_granularity=granularity)
            quantize_(model, config, filter_fn=lambda m, fqn, names=names: fqn in names)
        for name, rule in linear.items():
            if rule.scheme != "q4" and (rule.scale_method != "minmax" or rule.scheme == "8da4w"):
                _refit(model.get_submodule(name).weight, floats[name], rule)
        _keep_int4_blocks(model, [n for n, r in linear.items() if r.scheme == "q4"], blocks)
        for name, rule in targets.items():
            if rule.scheme == "q8":
                codes, scales = blocks(name, "int8")
                replace_module(model, name, QuantizedEmbedding.from_codes(codes, scales, 8))
            elif rule.scheme.startswith("emb"):
                emb = model.get_submodule(name)
                replace_module(model, name, QuantizedEmbedding.from_float(emb.weight, int(rule.scheme[3:]), rule.group_size,
                                                                    rule.scale_method))
        _tie_heads(model, [n for n, r in targets.items() if r.scheme == "tied8"])
    return model


def _tie_heads(model: nn.Module, names: list[str]) -> None:
    """Make the tied8 linears `names` read TIED_TABLE's int8 table (after the tables are quantized)."""
    from common.quant.tied_head import TiedQ8Head

    for name in names:
        table = model.get_submodule(TIED_TABLE)
        if not (isinstance(table, QuantizedEmbedding) and table.bits == 8):
            raise UserError(f"{name}: scheme tied8 reads {TIED_TABLE}'s int8 table; quantize it with q8 or emb8")
        replace_module(model, name, TiedQ8Head(table))


def _keep_int4_blocks(model: nn.Module, names: list[str], blocks: Callable[[str, str], Any]) -> None:
    """Put a GGUF's 4-bit blocks into the int4 linears `names` (already torchao 8da4w group 32): the file's codes and
    scales as they are, each linear wrapped in a BlockOffsetLinear whose group sums (0/1, exactly) and offsets
    (least-squares int8 per channel) are int8 linears too."""
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
    from torchao.quantization.granularity import PerAxis

    from common.quant.offset_linear import BlockOffsetLinear, group_matrix

    if not names:
        return
    offsets = {}
    for name in names:
        mod, b = model.get_submodule(name), blocks(name, "int4")
        mod.weight.qdata.copy_(b.codes.reshape(mod.weight.qdata.shape))
        mod.weight.scale.copy_(b.scales.reshape(mod.weight.scale.shape))
        # always wrapped (zero offsets for Q4_0), so a saved directory's modules follow from its recipe alone
        offsets[f"{name}.offsets"] = b.offsets if b.offsets is not None else torch.zeros_like(b.scales)
        replace_module(model, name, BlockOffsetLinear.wrap(mod, offsets[f"{name}.offsets"]))
    parts = {*offsets, *(f"{n}.group_sums" for n in names)}
    quantize_(model, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0)),
              filter_fn=lambda m, fqn: fqn in parts)
    for name in names:
        w = model.get_submodule(f"{name}.group_sums").weight  # 0/1 exactly: code 1, scale 1
        w.qdata.copy_(group_matrix(w.shape[1]).to(w.qdata.dtype).reshape(w.qdata.shape))
        w.scale.fill_(1.0)
        _refit(model.get_submodule(f"{name}.offsets").weight, offsets[f"{name}.offsets"], Rule(name, "8da8w"))


def check_quantized(model: nn.Module, recipe: Recipe, source: str) -> None:
    """Refuse a loaded quantize_and_save model whose linears are not what its recipe says (a g64 label on g32
    tensors, float weights labelled 8da4w). Embedding shells are checked by their tensor shapes when loading."""
    from common.quant.offset_linear import BlockOffsetLinear

    wrapped = {n for n, m in model.named_modules() if isinstance(m, BlockOffsetLinear)}
    for name, mod in model.named_modules():
        parent, _, child = name.rpartition(".")
        if not isinstance(mod, nn.Linear) or (parent in wrapped and child in ("offsets", "group_sums")):
            continue
        if parent in wrapped:  # a GGUF 4-bit linear's symmetric part: its rule is the wrapper's
            name = parent
        rule = recipe.rule_for(name, mod)
        w = mod.weight
        quantized = hasattr(w, "qdata") and hasattr(w, "block_size")
        got = "float" if not quantized else (
            f"int{4 if w.target_dtype == torch.int4 else 8} weights in blocks {tuple(w.block_size)}")
        if rule is None:
            want = "float"
        elif rule.scheme == "aqlm":
            want = "AQLM 2x8 codes"
        elif rule.scheme in ("8da4w", "q4"):
            want = f"int4 weights in blocks {(1, rule.group_size)}"
        else:
            want = f"int8 weights in blocks {(1, mod.in_features)}"
        if got != want:
            raise UserError(f"{source}: {name} holds {got}, but its recipe {recipe.name!r} says {want}")


def _refit(qweight, weight: torch.Tensor, rule: Rule) -> None:
    """Replace torchao's int values and scales (IntxUnpackedToInt8Tensor) with `rule.scale_method`'s."""
    rows = weight.shape[0]
    group = rule.group_size if rule.scheme == "8da4w" else weight.shape[1]
    bits = 4 if rule.scheme == "8da4w" else 8
    # XNNPACK stores 8da4w scales as bf16: fit them as it will run them
    q, scales = quantize_groups(weight.float().reshape(rows, -1, group), bits, bf16=bits == 4, method=rule.scale_method)
    qweight.qdata.copy_(q.reshape(qweight.qdata.shape))
    qweight.scale.copy_(scales.reshape(qweight.scale.shape))


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def quantized_shells(model: nn.Module, recipe: Recipe) -> None:
    """Swap in the empty modules a saved state dict of `recipe` loads into: QuantizedEmbedding for quantized tables,
    BlockOffsetLinear around the linears of GGUF 4-bit blocks (torchao's tensors load into plain Linears)."""
    from common.quant.offset_linear import BlockOffsetLinear

    for name, rule in plan(model, recipe).items():
        mod = model.get_submodule(name)
        if rule.scheme.startswith("emb") or rule.scheme == "q8":
            bits = 8 if rule.scheme == "q8" else int(rule.scheme[3:])
            replace_module(model, name, QuantizedEmbedding(mod.num_embeddings, mod.embedding_dim, bits, rule.group_size))
        elif rule.scheme == "q4":
            replace_module(model, name, BlockOffsetLinear(mod, mod.in_features, mod.out_features))
        elif rule.scheme == "aqlm":
            from common.quant.aqlm import AqlmLinear

            replace_module(model, name, AqlmLinear(mod.in_features, mod.out_features, bias=mod.bias is not None))
    _tie_heads(model, [n for n, r in plan(model, recipe).items() if r.scheme == "tied8"])
