"""Tokenizers from a GGUF file or an HF tokenizer directory, encoding exactly as transformers does.

Only the GGUF branch of `load_tokenizer` imports transformers (to reuse its GGUF -> tokenizer conversion);
a saved HF directory (`Tokenizer.save`) needs nothing but `tokenizers` and `jinja2` at inference time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import tokenizers
from tokenizers import processors

from common.chat import render_chat_template
from common.errors import UserError
from common.io import atomic_path

_GGUF_MAGIC = b"GGUF"
# Tokens that end a turn in common chat formats; any present in the vocab also stop generation.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>", "<eos>")


class Tokenizer:
    """A `tokenizers.Tokenizer` plus the tokenizer_config.json fields inference needs."""

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        add_bos_token: bool = False,
        chat_template: str | None = None,
        unk_token: str | None = None,
        pad_token: str | None = None,
        source: str | None = None,
    ) -> None:
        self.backend = backend
        self.bos_token, self.eos_token = bos_token, eos_token
        self.unk_token, self.pad_token = unk_token, pad_token
        self.add_bos_token = add_bos_token
        self.chat_template = chat_template
        self.source = source or "tokenizer"  # the file it was read from, for error messages

    def _id(self, token: str | None) -> int | None:
        return None if token is None else self.backend.token_to_id(token)

    @property
    def bos_id(self) -> int | None:
        return self._id(self.bos_token)

    @property
    def eos_ids(self) -> tuple[int, ...]:
        """The eos token's id, then every end-of-turn token present in the vocab."""
        ids = [self._id(t) for t in (self.eos_token, *END_OF_TURN_TOKENS)]
        return tuple(dict.fromkeys(i for i in ids if i is not None))

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included (transformers' `len(tokenizer)`)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Token ids of `text`; BOS is prepended when `add_bos` (default: the config's add_bos_token)."""
        ids = self.backend.encode(text, add_special_tokens=False).ids
        bos = self.bos_id
        if (self.add_bos_token if add_bos is None else add_bos) and bos is not None:
            ids.insert(0, bos)
        return ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def special_tokens(self) -> dict[str, str]:
        """The named special tokens that are set, as transformers passes them to chat templates."""
        named = {"bos_token": self.bos_token, "eos_token": self.eos_token}
        named |= {"unk_token": self.unk_token, "pad_token": self.pad_token}
        return {k: v for k, v in named.items() if v is not None}

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True, **kwargs: Any) -> str:
        """The prompt text for `messages`, identical to transformers' apply_chat_template(tokenize=False)."""
        if self.chat_template is None:
            raise UserError(f"{self.source}: tokenizer has no chat template (pass a model whose tokenizer ships one, "
                            "or raw text)")
        try:
            return render_chat_template(
                self.chat_template, messages, add_generation_prompt, **{**self.special_tokens(), **kwargs}
            )
        except UserError as e:
            raise UserError(f"{self.source}: {e}") from None

    def save(self, directory: str | os.PathLike) -> Path:
        """Write tokenizer.json + tokenizer_config.json so transformers' AutoTokenizer loads the same tokenizer."""
        directory = Path(directory)
        # transformers (v5) ignores add_bos_token when tokenizer.json exists: the post-processor must say it.
        bos, bos_id = self.bos_token, self.bos_id
        add_bos = self.add_bos_token and bos is not None and bos_id is not None
        post_processor = processors.TemplateProcessing(
            single=f"{bos}:0 $A:0" if add_bos else "$A:0",
            pair=f"{bos}:0 $A:0 {bos}:1 $B:1" if add_bos else "$A:0 $B:1",
            special_tokens=[(bos, bos_id)] if add_bos else [],
        )
        config: dict[str, Any] = {"tokenizer_class": "TokenizersBackend", **self.special_tokens()}
        config |= {"add_bos_token": self.add_bos_token, "clean_up_tokenization_spaces": False}
        if self.chat_template is not None:
            config["chat_template"] = self.chat_template
        directory.mkdir(parents=True, exist_ok=True)
        previous, self.backend.post_processor = self.backend.post_processor, post_processor
        try:
            with atomic_path(directory / "tokenizer.json") as tmp:
                self.backend.save(str(tmp))
        finally:  # the backend may be shared; leave it as it was
            self.backend.post_processor = previous
        with atomic_path(directory / "tokenizer_config.json") as tmp:
            tmp.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return directory


class StreamDecoder:
    """Incremental detokenizer: `push` one id at a time, get back only text that is complete.

    Bytes of a character split over several tokens (byte fallback, byte-level BPE) are held back until the
    character is whole, so U+FFFD is never printed early. A few already-emitted ids are kept as context, so
    decoders that treat the first token specially (SentencePiece's leading space) stay correct.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = False) -> None:
        self._tokenizer, self._skip = tokenizer, skip_special_tokens
        self._ids: list[int] = []
        self._read = 0  # ids before this index have been emitted; they are kept only as context

    def _text(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip)

    def push(self, token_id: int) -> str:
        """Add one id; return the newly completed text (possibly '')."""
        self._ids.append(token_id)
        before = self._text(self._ids[: self._read])
        text = self._text(self._ids)
        if len(text) <= len(before) or text.endswith("\ufffd"):
            return ""
        self._ids, self._read = self._ids[self._read :], len(self._ids) - self._read
        return text[len(before) :]

    def flush(self) -> str:
        """Whatever is still held back (invalid bytes come out as U+FFFD), and reset."""
        before, text = self._text(self._ids[: self._read]), self._text(self._ids)
        self._ids, self._read = [], 0
        return text[len(before) :]


def _token_str(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _adds_bos(backend: tokenizers.Tokenizer, bos_token: str | None) -> bool:
    """Whether the backend's own post-processor prepends BOS (what transformers follows when no flag is set)."""
    bos_id = None if bos_token is None else backend.token_to_id(bos_token)
    return bos_id is not None and backend.encode("", add_special_tokens=True).ids[:1] == [bos_id]


def _build(backend: tokenizers.Tokenizer, config: dict[str, Any], source: Path) -> Tokenizer:
    bos = _token_str(config.get("bos_token"))
    add_bos = config.get("add_bos_token")
    return Tokenizer(
        backend,
        bos_token=bos,
        eos_token=_token_str(config.get("eos_token")),
        add_bos_token=bool(add_bos) if add_bos is not None else _adds_bos(backend, bos),
        chat_template=config.get("chat_template"),
        unk_token=_token_str(config.get("unk_token")),
        pad_token=_token_str(config.get("pad_token")),
        source=str(source),
    )


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: cannot read {what} ({e})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object ({what})")
    return data


def _chat_template(value: Any) -> str | None:
    """A template string from tokenizer_config.json's str or [{"name", "template"}] form (default first)."""
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        value = named.get("default", next(iter(named.values()), None))
    return value if isinstance(value, str) else None


def _template_pieces(processor: Any) -> Iterable[tuple[dict, dict]]:
    """(TemplateProcessing processor, SpecialToken piece) for every special-token piece of a post-processor."""
    if not isinstance(processor, dict):
        return
    for inner in processor.get("processors") or ():  # a Sequence of processors
        yield from _template_pieces(inner)
    if processor.get("type") == "TemplateProcessing":
        for piece in [*(processor.get("single") or ()), *(processor.get("pair") or ())]:
            if isinstance(piece, dict) and isinstance(piece.get("SpecialToken"), dict):
                yield processor, piece["SpecialToken"]


def _check_post_processor(path: Path, backend: tokenizers.Tokenizer) -> None:
    """A TemplateProcessing piece must name a token of its special_tokens map, with ids in the vocabulary: the Rust
    side panics on the first encode otherwise (printing a backtrace), or emits ids the model does not have."""
    if backend.post_processor is None:
        return
    vocab = backend.get_vocab_size(with_added_tokens=True)
    # the post-processor's own JSON (tokenizers pickles processors as JSON): not the whole vocabulary serialized
    for processor, piece in _template_pieces(json.loads(backend.post_processor.__getstate__())):
        token = (processor.get("special_tokens") or {}).get(piece.get("id"))
        ids = token.get("ids") if isinstance(token, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, int) and 0 <= i < vocab for i in ids):
            raise UserError(f"{path}: inconsistent tokenizer.json (its post-processor adds {piece.get('id')!r}, "
                            f"which its special_tokens do not map to ids in [0, {vocab}))")


def _from_json(path: Path) -> Tokenizer:
    try:
        backend = tokenizers.Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception for bad JSON or an unknown model
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: not a valid tokenizer.json ({reason})") from None
    _check_post_processor(path, backend)
    try:  # any other inconsistency the Rust side only finds on first use: find out now
        backend.encode("a", add_special_tokens=True)
    except BaseException as e:  # pyo3's PanicException derives from BaseException, not Exception
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        raise UserError(f"{path}: inconsistent tokenizer.json ({type(e).__name__}: {e})") from None
    config_path = path.parent / "tokenizer_config.json"
    config = _read_json(config_path, "tokenizer config") if config_path.is_file() else {}
    config["chat_template"] = _chat_template(config.get("chat_template"))
    jinja = path.parent / "chat_template.jinja"  # transformers >= 4.43 saves the template here; it wins
    if jinja.is_file():
        try:
            config["chat_template"] = jinja.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{jinja}: cannot read the chat template ({e})") from None
    source = jinja if jinja.is_file() else config_path if config["chat_template"] is not None else path
    return _build(backend, config, source)


def _from_gguf(path: Path) -> Tokenizer:
    try:
        from transformers.integrations.gguf import convert_gguf_tokenizer, get_gguf_tokenizer
    except ImportError:
        raise UserError(
            f"{path}: reading a tokenizer from GGUF needs transformers (pip install transformers)"
        ) from None
    try:
        architecture, tokenizer_dict, config = get_gguf_tokenizer(str(path))
    except KeyError as e:
        raise UserError(f"{path}: GGUF metadata lacks {e} (expected a model GGUF with tokenizer metadata)") from None
    except Exception as e:  # truncated/corrupt headers surface as numpy, struct or ValueError errors
        raise UserError(f"{path}: truncated or corrupt GGUF ({type(e).__name__}: {e})") from None
    if "tokens" not in tokenizer_dict:
        raise UserError(
            f"{path}: GGUF has no tokenizer (no tokenizer.ggml.tokens); pass a tokenizer.json or HF tokenizer directory"
        )
    try:
        backend, _ = convert_gguf_tokenizer(architecture, tokenizer_dict)
    except ValueError as e:
        raise UserError(f"{path}: {e}") from None
    return _build(_only_file_tokens(backend, len(tokenizer_dict["tokens"])), config, path)


def _only_file_tokens(backend: tokenizers.Tokenizer, n_tokens: int) -> tokenizers.Tokenizer:
    """The backend without added tokens past the file's `n_tokens` ids.

    transformers builds a gpt2-type GGUF vocabulary through GPT2Tokenizer, whose defaults add `<|endoftext|>` when
    the file lacks it (every Llama 3 GGUF: 128256 tokens, none of them `<|endoftext|>`). That id is one past the
    model's vocabulary: a stop id the model can never emit, and an id our C++ runner refuses in tokenizer.json."""
    if backend.get_vocab_size(with_added_tokens=True) <= n_tokens:
        return backend
    data = json.loads(backend.to_str())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["id"] < n_tokens]
    return tokenizers.Tokenizer.from_str(json.dumps(data))


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load from a GGUF file, an HF tokenizer directory (tokenizer.json [+ tokenizer_config.json]),
    or a tokenizer.json file (its tokenizer_config.json is looked for beside it)."""
    p = Path(path)
    if p.is_dir():
        if not (p / "tokenizer.json").is_file():
            raise UserError(f"{p}: no tokenizer.json (expected an HF tokenizer directory or a GGUF file)")
        return _from_json(p / "tokenizer.json")
    if not p.is_file():
        raise UserError(f"{p}: no such file or directory (expected a GGUF file, tokenizer.json or tokenizer directory)")
    with open(p, "rb") as f:
        is_gguf = f.read(4) == _GGUF_MAGIC
    if p.suffix == ".gguf" and not is_gguf:
        raise UserError(f"{p}: not a GGUF file (bad magic)")
    return _from_gguf(p) if is_gguf else _from_json(p)
