"""Writers of tiny, real-format checkpoints for tests: no hub downloads, every format the CLIs read.

- `train_bpe`: a small byte-level BPE trained with `tokenizers` (Qwen2 or Llama 3 pre-tokenizer split).
- `tiny_hf_model`: a random `LlamaForCausalLM` / `Qwen3ForCausalLM` with O(1) weights (norms too).
- `save_hf_checkpoint`: config.json + model.safetensors (or sharded + index) + tokenizer, via transformers.
- `write_gguf`: the same weights as llama.cpp's convert_hf_to_gguf writes them (names from `gguf`'s own
  tensor map, q/k permuted for arch llama, F32 or a quantized type) with its tokenizer metadata.

Everything is parameterized by architecture ("llama", "qwen3", "gemma3", "gemma4"), so each model package's tests
share it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# GGUF `tokenizer.ggml.pre` naming each split (what llama.cpp writes and transformers' GGUF reader maps back).
GGUF_PRE = {QWEN2_SPLIT: "qwen2", LLAMA3_SPLIT: "llama-bpe"}
HF_CLASSES = {"llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM", "gemma3": "Gemma3ForCausalLM",
              "gemma4": "Gemma4ForCausalLM"}

CORPUS = [
    "The capital of France is Paris. The capital of Germany is Berlin.",
    "Once upon a time there was a little model that ran on a phone.",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n",
    "<|im_start|>assistant\n<think>\nLet me think step by step.\n</think>\n\nThe answer is 42.<|im_end|>",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))  # 5\n",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14159 2024-01-01",
    "Café crème, naïve façade, Straße, 你好，世界！ こんにちは Привет 😀🎉",
    "Quantization trades a little accuracy for a lot of speed and memory on device.",
] * 4


def train_bpe(
    vocab_size: int = 320,
    special_tokens: Sequence[str] = ("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
    added_tokens: Sequence[str] = ("<think>", "</think>", "<tool_call>", "</tool_call>"),
    split: str = QWEN2_SPLIT,
    corpus: Sequence[str] = CORPUS,
):
    """A byte-level BPE with the Qwen2/Llama 3 pipeline (NFC, regex split, ByteLevel); the special tokens
    and the plain added tokens come after the learned vocabulary, as in Qwen's tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(corpus, trainer)
    tok.add_special_tokens(list(special_tokens))
    tok.add_tokens(list(added_tokens))
    return tok


def save_tokenizer(
    backend,
    directory: str | os.PathLike,
    *,
    chat_template: str | None = None,
    bos_token: str | None = None,
    eos_token: str | None = None,
    pad_token: str | None = None,
    add_bos_token: bool = False,
) -> Path:
    """tokenizer.json + tokenizer_config.json (+ chat_template.jinja) written by transformers' save_pretrained."""
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos_token,
        eos_token=eos_token,
        pad_token=pad_token,
        add_bos_token=add_bos_token,
        chat_template=chat_template,
        clean_up_tokenization_spaces=False,
    )
    hf.save_pretrained(str(directory))
    return Path(directory)


def tiny_hf_model(arch: str, seed: int = 0, **config):
    """A random HF causal LM of `arch` with O(1) activations: weights ~ N(0, 1/fan_in), embeddings ~ N(0, 1),
    norm weights ~ 1 + N(0, 0.2) (so q_norm/k_norm/RMSNorm weights all matter)."""
    import transformers

    cls = getattr(transformers, HF_CLASSES[arch])
    cfg = cls.config_class(**config)
    if arch.startswith("gemma"):
        cfg._attn_implementation = "eager"  # the reference path for Gemma's sliding windows
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif "embed_tokens" in name:
                p.normal_(0, 1)
            else:
                p.normal_(0, p.shape[1] ** -0.5)
        for name, b in model.named_buffers():
            if name.endswith("layer_scalar"):  # Gemma 4's per-layer output scale: a checkpoint tensor
                b.uniform_(0.5, 1.5)
    return model


def save_hf_checkpoint(model, directory: str | os.PathLike, max_shard_size: str | None = None) -> Path:
    """An HF checkpoint dir: config.json + model.safetensors, or shards + model.safetensors.index.json."""
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(str(directory), safe_serialization=True, **kwargs)
    return Path(directory)


def permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp convert_hf_to_gguf's q/k row permutation (HF rotate-half -> interleaved pairs)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensors(model, arch: str, permute_qk: bool | None = None) -> dict[str, torch.Tensor]:
    """The model's tensors under llama.cpp's names (`gguf`'s tensor map); q/k permuted for arch llama.
    A tied lm_head is left out, as llama.cpp does."""
    import gguf

    cfg = model.config
    permute_qk = arch == "llama" if permute_qk is None else permute_qk
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], cfg.num_hidden_layers)
    out = {}
    for hf_name, t in model.state_dict().items():
        if hf_name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        t = t.detach().float()
        if arch == "gemma3" and hf_name.endswith("norm.weight"):
            t = t + 1  # llama.cpp stores Gemma's (1 + w) norm weights as 1 + w
        if permute_qk and hf_name.endswith("self_attn.q_proj.weight"):
            t = permute(t, cfg.num_attention_heads)
        elif permute_qk and hf_name.endswith("self_attn.k_proj.weight"):
            t = permute(t, cfg.num_key_value_heads)
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        assert name is not None, hf_name
        out[name] = t
    return out


def gguf_roundtrip(t: torch.Tensor, qtype) -> torch.Tensor:
    """What a tensor becomes after quantizing to `qtype` and dequantizing (exactly what the loader sees)."""
    import gguf

    q = gguf.quants.quantize(t.numpy(), qtype)
    return torch.from_numpy(np.ascontiguousarray(gguf.quants.dequantize(q, qtype), dtype=np.float32)).reshape(t.shape)


def _quantizable(name: str, t: torch.Tensor, qtype) -> bool:
    import gguf

    block, _ = gguf.GGML_QUANT_SIZES[qtype]
    return t.ndim == 2 and t.shape[-1] % block == 0 and not name.endswith("_norm.weight")


def _tokenizer_metadata(writer, tokenizer, vocab_size: int, bos_id: int | None, split: str) -> None:
    """llama.cpp's gpt2-type vocab: every id up to vocab_size ([PADn] UNUSED fillers), CONTROL for special
    added tokens, USER_DEFINED for plain added ones, merges, special ids and the chat template."""
    import gguf

    backend = tokenizer.backend
    vocab = backend.get_vocab(with_added_tokens=True)
    added = backend.get_added_tokens_decoder()
    by_id = {i: t for t, i in vocab.items()}
    tokens, types = [], []
    for i in range(max(vocab_size, len(vocab))):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    merges = json.loads(backend.to_str())["model"]["merges"]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(GGUF_PRE[split])
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    bos = tokenizer.bos_id if tokenizer.bos_id is not None else bos_id
    if bos is not None:
        writer.add_bos_token_id(bos)
    if tokenizer.eos_ids:
        writer.add_eos_token_id(tokenizer.eos_ids[0])
    pad = backend.token_to_id(tokenizer.pad_token) if tokenizer.pad_token else None
    if pad is not None:
        writer.add_pad_token_id(pad)
    writer.add_add_bos_token(tokenizer.add_bos_token)
    if tokenizer.chat_template is not None:
        writer.add_chat_template(tokenizer.chat_template)


def write_gguf(
    path: str | os.PathLike,
    model,
    arch: str,
    tokenizer=None,
    qtype=None,
    permute_qk: bool | None = None,
    split: str = QWEN2_SPLIT,
    rope_freqs: torch.Tensor | None = None,
) -> Path:
    """Write `model` (an HF causal LM) as a GGUF of `arch` ("llama" | "qwen3"), as llama.cpp would.

    tokenizer: a `common.tokenizer.Tokenizer` to embed (None: a GGUF without tokenizer metadata).
    qtype: a `gguf.GGMLQuantizationType` for the 2-D weights whose rows fit its blocks (default F32);
    norms stay F32. permute_qk: default True for llama (llama.cpp's layout), False otherwise.
    rope_freqs: llama.cpp's `rope_freqs.weight` (Llama 3.1 scaling as per-pair frequency divisors).
    """
    import gguf

    qtype = gguf.GGMLQuantizationType.F32 if qtype is None else qtype
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    rope = getattr(cfg, "rope_parameters", None) or {}
    rope = rope.get("full_attention", rope)  # Gemma: per layer type; llama.cpp's freq_base is the global layers'
    theta = rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(f"tiny-{arch}")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if qtype == gguf.GGMLQuantizationType.F32 else
                         gguf.LlamaFileType[f"MOSTLY_{qtype.name}"])
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(theta))
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    if arch == "gemma3":
        writer.add_sliding_window(cfg.sliding_window)
    if tokenizer is not None:
        _tokenizer_metadata(writer, tokenizer, cfg.vocab_size, cfg.bos_token_id, split)
    if rope_freqs is not None:
        writer.add_tensor("rope_freqs.weight", rope_freqs.float().numpy())
    for name, t in gguf_tensors(model, arch, permute_qk).items():
        if qtype != gguf.GGMLQuantizationType.F32 and _quantizable(name, t, qtype):
            writer.add_tensor(name, gguf.quants.quantize(t.numpy(), qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(name, t.numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


# --- a whole tiny checkpoint per architecture (also `python -m tests.checkpoints ARCH DIR`) ---------------------------

DATA = Path(__file__).resolve().parent / "data"
# Vocab 384 pads the tokenizer's ids, as real checkpoints pad theirs (Qwen3: 151669 -> 151936).
_TINY_BASE = dict(vocab_size=384, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, tie_word_embeddings=True, max_position_embeddings=256)
TINY = {
    # Qwen3's tokenizer_config: no BOS token (config.json's bos_token_id is <|endoftext|>), eos <|im_end|>.
    "qwen3": dict(
        config=dict(_TINY_BASE, head_dim=32, rope_theta=1e6, rms_norm_eps=1e-6),
        bpe=dict(special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"), split=QWEN2_SPLIT),
        tokens=dict(eos_token="<|im_end|>", pad_token="<|endoftext|>"),
        ids=dict(bos_token_id="<|endoftext|>", eos_token_id="<|im_end|>"),
        chat_template="qwen3_chat_template.jinja",
    ),
    # Gemma 3: query_pre_attn_scalar = head_dim, as llama.cpp assumes below 27B (its GGUF has no such key).
    "gemma3": dict(
        config=dict(_TINY_BASE, num_hidden_layers=6, head_dim=16, sliding_window=4, query_pre_attn_scalar=16,
                    rms_norm_eps=1e-6),
        bpe=dict(special_tokens=("<bos>", "<eos>", "<end_of_turn>"), added_tokens=(), split=LLAMA3_SPLIT),
        tokens=dict(bos_token="<bos>", eos_token="<eos>", add_bos_token=True),
        ids=dict(bos_token_id="<bos>", eos_token_id="<eos>", pad_token_id="<eos>"),
        chat_template=None,
    ),
    # Gemma 4 31B's shape in miniature (../shared/specs/gemma4.md): K=V full layers with their own head size.
    "gemma4": dict(
        config=dict(_TINY_BASE, num_hidden_layers=6, head_dim=16, global_head_dim=32, num_global_key_value_heads=1,
                    attention_k_eq_v=True, hidden_size_per_layer_input=0, num_kv_shared_layers=0,
                    enable_moe_block=False, sliding_window=4, final_logit_softcapping=30.0, rms_norm_eps=1e-6),
        bpe=dict(special_tokens=("<bos>", "<eos>", "<turn|>"), added_tokens=(), split=LLAMA3_SPLIT),
        tokens=dict(bos_token="<bos>", eos_token="<eos>", add_bos_token=True),
        ids=dict(bos_token_id="<bos>", eos_token_id="<eos>", pad_token_id="<eos>"),
        chat_template=None,
    ),
    "llama": dict(
        config=dict(_TINY_BASE, rope_theta=500000.0, rms_norm_eps=1e-5),
        bpe=dict(special_tokens=("<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"), added_tokens=(),
                 split=LLAMA3_SPLIT),
        tokens=dict(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", add_bos_token=True),
        ids=dict(bos_token_id="<|begin_of_text|>", eos_token_id="<|eot_id|>"),
        chat_template=None,
    ),
}


def write_tiny(arch: str, directory: str | os.PathLike, seed: int = 0, **config):
    """A tiny random `arch` checkpoint: `directory`/hf (HF dir with tokenizer) and `directory`/model.gguf (F32; none
    for gemma4).

    `config` overrides TINY[arch]["config"] (HF config kwargs). Returns (hf_model, hf_dir, gguf_path)."""
    from common.tokenizer import load_tokenizer

    spec = TINY[arch]
    directory = Path(directory)
    backend = train_bpe(**spec["bpe"])
    ids = {k: backend.token_to_id(v) for k, v in spec["ids"].items()}
    model = tiny_hf_model(arch, seed, **{**spec["config"], **ids, **config})
    hf_dir = save_hf_checkpoint(model, directory / "hf")
    template = (DATA / spec["chat_template"]).read_text(encoding="utf-8") if spec["chat_template"] else None
    save_tokenizer(backend, hf_dir, chat_template=template, **spec["tokens"])
    gguf_path = None
    if arch != "gemma4":  # llama.cpp has no Gemma 4 text converter yet
        gguf_path = write_gguf(directory / "model.gguf", model, arch, load_tokenizer(hf_dir), split=spec["bpe"]["split"])
    return model, hf_dir, gguf_path


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3 or sys.argv[1] not in TINY:
        sys.exit(f"usage: python -m tests.checkpoints {{{','.join(TINY)}}} OUTPUT_DIR")
    _, hf_dir, gguf_path = write_tiny(sys.argv[1], sys.argv[2])
    print(f"wrote {hf_dir}/" + (f" and {gguf_path}" if gguf_path else ""))
