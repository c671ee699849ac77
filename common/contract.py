"""The `.pte` contracts: what a program's methods take and return, which constant methods and sidecar files
come with it, and a name + version stored in the program so every runner can refuse a file it cannot drive.

One object per contract, used by the export (example inputs, dynamic dims, constant methods), the Python runtime,
the bench and the profiler; the C++ runner checks the same stamp (runners/src/runner.cpp).

A program without a stamp but with the causal-LM constant methods (an ExecuTorch `export_llm` .pte) is read as
`causal_lm` version 1: that contract is ExecuTorch's LLM-runner contract, which ours extends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from common.errors import UserError

NAME_METHOD, VERSION_METHOD = "get_contract", "get_contract_version"


@dataclass(frozen=True)
class Input:
    """One method input: its name, dtype and shape. A str in the shape is a size given at export (`limits`):
    dynamic when it names a dynamic dim (seq_len: 1..max_seq_len), else fixed (e.g. hidden)."""

    name: str
    dtype: torch.dtype
    shape: tuple[int | str, ...]


@dataclass(frozen=True)
class Method:
    name: str
    inputs: tuple[Input, ...]
    returns: str  # what it returns, for the docs and error messages


# Dynamic dims: a limit name -> (the limit key in `limits`, the smallest size)
_DIMS = {"seq_len": ("max_seq_len", 1)}


@dataclass(frozen=True)
class Contract:
    name: str
    version: int
    methods: tuple[Method, ...]
    constants: tuple[str, ...]  # constant methods every program of this contract has
    sidecars: tuple[str, ...] = ()  # files written beside the .pte
    optional: tuple[Method, ...] = ()  # methods a program may add (sharing the required methods' state)

    def method(self, name: str) -> Method:
        return next(m for m in self.methods + self.optional if m.name == name)

    def example_inputs(self, method: str, limits: dict[str, int], example_len: int = 2) -> tuple[torch.Tensor, ...]:
        """Inputs to trace `method` with: dynamic dims at `example_len` (clamped to their limit), zeros."""
        def size(d: int | str) -> int:
            if isinstance(d, int):
                return d
            return min(example_len, limits[_DIMS[d][0]]) if d in _DIMS else limits[d]

        return tuple(torch.zeros(tuple(size(d) for d in i.shape), dtype=i.dtype) for i in self.method(method).inputs)

    def dynamic_shapes(self, method: str, limits: dict[str, int]) -> dict[str, Any]:
        """torch.export dynamic shapes for `method`: each named dim in [min, its limit]."""
        from torch.export import Dim

        dims = {}
        for i in self.method(method).inputs:
            named = {k: d for k, d in enumerate(i.shape) if d in _DIMS}
            dims[i.name] = {k: _dim(Dim, d, limits) for k, d in named.items()} or None
        return dims

    def stamp(self) -> dict[str, Any]:
        """The constant methods that name the contract inside the program."""
        return {NAME_METHOD: self.name, VERSION_METHOD: self.version}

    def check(self, path: str, method_names: set[str], read_constant) -> None:
        """Refuse a program of another contract (or version), or one missing this contract's methods."""
        missing = sorted(({m.name for m in self.methods} | set(self.constants)) - method_names)
        if NAME_METHOD in method_names:
            name, version = str(read_constant(NAME_METHOD)), int(read_constant(VERSION_METHOD))
        elif not missing and self.name == CAUSAL_LM.name:
            name, version = CAUSAL_LM.name, 1  # an unstamped ExecuTorch LLM program
        else:
            raise UserError(f"{path}: not a zoo {self.name} program (no contract stamp; missing methods {missing})")
        if (name, version) != (self.name, self.version):
            raise UserError(f"{path}: a {name} v{version} program, but this runner drives {self.name} v{self.version}")
        if missing:
            raise UserError(f"{path}: {self.name} program without methods {missing}")


def _dim(Dim, name: str, limits: dict[str, int]):
    key, lo = _DIMS[name]
    return Dim(name, min=lo, max=limits[key])


_POS = Input("input_pos", torch.long, (1,))
# A causal LM fed input embeddings instead of token ids (HF's inputs_embeds), e.g. a Stained Glass Transform's output;
# it shares the KV cache with `forward`, so a prompt prefilled from embeddings decodes with token ids.
FORWARD_EMBEDDINGS = Method("forward_embeddings", (Input("embeddings", torch.float32, (1, "seq_len", "hidden")), _POS),
                            "as forward, from embeddings [1, S, hidden]; the same KV caches")

CAUSAL_LM = Contract(
    name="causal_lm",
    version=1,
    methods=(Method("forward", (Input("tokens", torch.long, (1, "seq_len")), _POS),
                    "logits [1, S, vocab] or [1, 1, vocab] (last position); KV caches as mutable buffers"),),
    # the names ExecuTorch's LLM runners (TextLLMRunner, llama_main) read
    constants=("get_max_seq_len", "get_max_context_len", "get_bos_id", "get_eos_ids", "get_vocab_size",
               "get_n_layers", "use_kv_cache", "enable_dynamic_shape"),
    sidecars=("tokenizer.json", "tokenizer_config.json"),
    optional=(FORWARD_EMBEDDINGS,),
)

# A decoder fed only embeddings (no token-id method).
CAUSAL_LM_EMBEDDINGS = Contract(
    name="causal_lm_embeddings",
    version=1,
    methods=(Method("forward", (Input("embeddings", torch.float32, (1, "seq_len", "hidden")), _POS),
                    "logits [1, 1, vocab] (last position); KV caches as mutable buffers"),),
    constants=("get_max_seq_len", "get_max_context_len", "get_eos_ids", "get_vocab_size", "get_hidden_size"),
    sidecars=("tokenizer.json", "tokenizer_config.json"),
)

# The Stained Glass Transform for Text: token ids -> transformed input embeddings (fresh noise every call where
# noise_mask and attention_mask are set), and its deterministic part (mu, sigma). Constants: ../shared/specs/sgt4t.md.
_SGT_INPUTS = (Input("input_ids", torch.long, (1, "seq_len")), Input("noise_mask", torch.bool, (1, "seq_len")),
               Input("attention_mask", torch.long, (1, "seq_len")))
SGT4T = Contract(
    name="sgt4t",
    version=1,
    methods=(Method("forward", _SGT_INPUTS, "transformed embeddings [1, S, hidden]"),
             Method("mu_sigma", _SGT_INPUTS, "(mu [1, S, hidden], sigma [1, S, hidden]): the transform without noise")),
    constants=("get_dtype", "get_bos_id", "get_eos_ids", "get_head_dim", "get_n_kv_heads", "get_n_layers",
               "get_vocab_size", "get_max_batch_size", "get_max_seq_len", "use_sdpa_with_kv_cache",
               "enable_dynamic_shape", "get_hidden_size", "get_sgt_name", "get_model_name", "get_version"),
    sidecars=("tokenizer.json", "tokenizer_config.json"),
)

CONTRACTS = {c.name: c for c in (CAUSAL_LM, CAUSAL_LM_EMBEDDINGS, SGT4T)}


def causal_lm_constants(cfg, max_seq_len: int, max_context_len: int, eos_ids: tuple[int, ...]) -> dict[str, Any]:
    """CAUSAL_LM's constant methods, the stamp included, for a decoder config."""
    return {
        "get_max_seq_len": max_seq_len,
        "get_max_context_len": max_context_len,
        "get_bos_id": cfg.bos_id if cfg.bos_id is not None else -1,
        "get_eos_ids": list(eos_ids),
        "get_vocab_size": cfg.vocab_size,
        "get_n_layers": cfg.n_layers,
        "use_kv_cache": True,
        "enable_dynamic_shape": True,
    } | CAUSAL_LM.stamp()
