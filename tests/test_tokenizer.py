"""common.tokenizer / common.chat against transformers on the real SmolLM2 and Gemma 3 GGUF tokenizers."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import tokenizers

from common.chat import render_chat_template
from common.errors import UserError
from common.tokenizer import StreamDecoder, Tokenizer, load_tokenizer
from tests.helpers import MULTILINGUAL

DATA = Path(__file__).parent / "data"

SAMPLES = MULTILINGUAL
RARE = next(s for s in SAMPLES if s.startswith("Rare:"))  # astral-plane characters: byte fallback

CHATS = [
    [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "Et en Allemagne ? 🇩🇪"},
    ],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "日本語で答えて。"},
    ],
]


def _hf_from_gguf(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf: str) -> Tokenizer:
    return load_tokenizer(smollm2_gguf)


@pytest.fixture(scope="module")
def smollm2_hf(smollm2_gguf: str):
    return _hf_from_gguf(smollm2_gguf)


def _tiny_backend() -> tokenizers.Tokenizer:
    """A word-level tokenizer small enough for fast tests."""
    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", "hello", "world", "<end_of_turn>"])}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    backend.add_special_tokens(["<s>", "</s>", "<end_of_turn>"])
    return backend


# --- real models -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_encode_decode_match_transformers(smollm2: Tokenizer, smollm2_hf) -> None:
    assert (smollm2.bos_id, smollm2.eos_ids, smollm2.add_bos_token) == (1, (2, 0), False)
    assert smollm2.vocab_size == len(smollm2_hf)
    for text in [*SAMPLES, "<|im_start|>user\ninline special tokens<|im_end|>"]:
        ids = smollm2.encode(text)
        assert ids == smollm2_hf.encode(text), text
        assert smollm2.decode(ids) == smollm2_hf.decode(ids) == text
        assert smollm2.decode(ids, skip_special_tokens=True) == smollm2_hf.decode(ids, skip_special_tokens=True)
    assert smollm2.encode("hi", add_bos=True) == [1, *smollm2.encode("hi")]


@pytest.mark.slow
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_smollm2_chat_template_matches_transformers(
    smollm2: Tokenizer, smollm2_hf, add_generation_prompt: bool
) -> None:
    for chat in CHATS:
        expected = smollm2_hf.apply_chat_template(chat, tokenize=False, add_generation_prompt=add_generation_prompt)
        assert smollm2.apply_chat_template(chat, add_generation_prompt=add_generation_prompt) == expected


@pytest.mark.slow
def test_save_round_trip(smollm2: Tokenizer, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    for add_bos in (False, True):
        tok = Tokenizer(
            smollm2.backend,
            bos_token=smollm2.bos_token,
            eos_token=smollm2.eos_token,
            add_bos_token=add_bos,
            chat_template=smollm2.chat_template,
            unk_token=smollm2.unk_token,
            pad_token=smollm2.pad_token,
        )
        saved = tok.save(tmp_path / f"bos_{add_bos}")
        for again in (load_tokenizer(saved), load_tokenizer(saved / "tokenizer.json")):
            assert (again.bos_id, again.eos_ids, again.add_bos_token) == (tok.bos_id, tok.eos_ids, add_bos)
            assert again.chat_template == tok.chat_template
            assert again.apply_chat_template(CHATS[1]) == tok.apply_chat_template(CHATS[1])
        hf = AutoTokenizer.from_pretrained(saved)
        assert hf.chat_template == tok.chat_template
        for text in SAMPLES:
            ids = tok.encode(text)
            if not text.startswith("<|im_start|>"):  # that one starts with id 1 (BOS is <|im_start|>) anyway
                assert (ids[:1] == [1]) == add_bos
            assert load_tokenizer(saved).encode(text) == ids == hf.encode(text), text
    assert smollm2.backend.encode("hi").ids == smollm2.encode("hi")  # save() left the shared backend as it was


@pytest.mark.slow
def test_gemma3_matches_transformers(gemma3_gguf: str) -> None:
    tok, hf = load_tokenizer(gemma3_gguf), _hf_from_gguf(gemma3_gguf)
    assert (tok.bos_token, tok.add_bos_token, tok.eos_ids) == ("<bos>", True, (1, 106))
    assert tok.vocab_size == len(hf)
    for text in [*SAMPLES, "<start_of_turn>user\ninline<end_of_turn>"]:
        ids = tok.encode(text)
        assert ids == hf.encode(text), text
        assert ids[0] == tok.bos_id
        assert tok.decode(ids) == hf.decode(ids)
        assert tok.decode(ids[1:]) == text
    assert tok.chat_template is None  # this GGUF ships none
    with pytest.raises(UserError, match="no chat template"):
        tok.apply_chat_template(CHATS[0])
    # Byte-fallback tokens: the stream decoder must hold split characters back.
    ids = tok.encode(RARE, add_bos=False)
    assert any(tok.decode([i]) == "\ufffd" for i in ids), "sample should exercise byte fallback"
    _check_stream(tok, ids)


@pytest.mark.slow
@pytest.mark.parametrize("enable_thinking", [True, False])
def test_qwen3_template_matches_transformers(smollm2: Tokenizer, enable_thinking: bool) -> None:
    from transformers import PreTrainedTokenizerFast

    template = (DATA / "qwen3_chat_template.jinja").read_text(encoding="utf-8")
    hf = PreTrainedTokenizerFast(tokenizer_object=smollm2.backend, chat_template=template, **smollm2.special_tokens())
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city <b>now</b> & later, in °C",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
    chats = [
        ({}, CHATS[1]),
        (
            {},
            [
                {"role": "system", "content": "Think step by step."},
                {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "<think>\nTwo plus two.\n</think>\n\n4"},
                {"role": "user", "content": "And 3+3?"},
                {"role": "assistant", "content": "6", "reasoning_content": "Three plus three."},
                {"role": "user", "content": "Thanks!"},
            ],
        ),
        (
            {"tools": [weather]},
            [
                {"role": "system", "content": "Use tools."},
                {"role": "user", "content": "Weather in Zürich?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Zürich"}}}],
                },
                {"role": "tool", "content": '{"temp": 21}'},
            ],
        ),
    ]
    for extra, chat in chats:
        kwargs = {"enable_thinking": enable_thinking, **extra}
        expected = hf.apply_chat_template(chat, tokenize=False, add_generation_prompt=True, **kwargs)
        assert render_chat_template(template, chat, True, **smollm2.special_tokens(), **kwargs) == expected
    assert expected.endswith("<|im_start|>assistant\n" + ("" if enable_thinking else "<think>\n\n</think>\n\n"))


def _check_stream(tok: Tokenizer, ids: list[int], skip_special_tokens: bool = False) -> None:
    stream = StreamDecoder(tok, skip_special_tokens=skip_special_tokens)
    pieces = [stream.push(i) for i in ids]
    pieces.append(stream.flush())
    assert not any("\ufffd" in p for p in pieces)
    assert "".join(pieces) == tok.decode(ids, skip_special_tokens=skip_special_tokens)


@pytest.mark.slow
def test_stream_decoder_smollm2(smollm2: Tokenizer) -> None:
    ids = smollm2.encode("".join(SAMPLES[1 : SAMPLES.index(RARE) + 1]))
    assert any(smollm2.decode([i]).endswith("\ufffd") for i in ids), "sample should split UTF-8 across tokens"
    _check_stream(smollm2, ids)
    prompt = smollm2.encode(smollm2.apply_chat_template(CHATS[1]) + "答えは東京です。🗼<|im_end|>")
    _check_stream(smollm2, prompt, skip_special_tokens=True)


# --- fast: chat rendering and errors ----------------------------------------------------------------------------


def test_render_chat_template_environment() -> None:
    msgs = [{"role": "user", "content": "hi", "extra": None}]
    tojson = render_chat_template("{{ messages | tojson }}|{{ {'a': '<&>é'} | tojson(indent=1) }}", msgs)
    assert tojson == '[{"role": "user", "content": "hi"}]|{\n "a": "<&>é"\n}'
    blocks = "  {% for m in messages %}\n{% generation %}[{{ m.content }}]{% endgeneration %}\n{% endfor %}\n"
    assert render_chat_template(blocks, msgs) == "[hi]"  # trim_blocks eats the newline after a tag
    assert (
        render_chat_template("{% for i in range(5) %}{% if i > 1 %}{% break %}{% endif %}{{ i }}{% endfor %}", msgs)
        == "01"
    )
    with pytest.raises(UserError, match="roles must alternate"):
        render_chat_template("{{ raise_exception('roles must alternate') }}", msgs)
    with pytest.raises(UserError, match="syntax error"):
        render_chat_template("{% if %}", msgs)
    with pytest.raises(UserError, match="namespace"):
        render_chat_template("{% set ns = namespace(_x=1) %}", msgs)
    with pytest.raises(UserError, match="empty conversation"):
        render_chat_template("x", [])


@pytest.mark.parametrize("template, message", [
    ("{{ 'x' * 10**10 }}", "a repetition of 10000000000 items"),
    ("{{ [1] * 10**9 }}", "a repetition of 1000000000 items"),
    ("{{ 7 ** 100000000 }}", "an exponent of 100000000"),
    ("{% for i in range(100000) %}{{ 'y' * 100 }}{% endfor %}", "rendered more than"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "took longer than"),
    ("{% include 'other.jinja' %}", "other.jinja"),
    ("{% import 'macros.jinja' as m %}", "macros.jinja"),
    ("{{ 1 / 0 }}", "ZeroDivisionError"),
])
def test_chat_templates_are_bounded(monkeypatch, template: str, message: str) -> None:
    """A hostile template (a 10 GB string, endless loops, include/import, 1/0) is one UserError, in bounded time and
    memory (issue 10: these used to allocate, hang or raise a traceback)."""
    import time

    import common.chat

    monkeypatch.setattr(common.chat, "MAX_RENDER_SECONDS", 0.5)
    t0 = time.perf_counter()
    with pytest.raises(UserError, match=re.escape(message)):
        render_chat_template(template, [{"role": "user", "content": "hi"}])
    assert time.perf_counter() - t0 < 5


def test_tiny_tokenizer_save_load(tmp_path: Path) -> None:
    tok = Tokenizer(
        _tiny_backend(), bos_token="<s>", eos_token="</s>", add_bos_token=True, chat_template="{{ bos_token }}x"
    )
    assert (tok.encode("hello world"), tok.encode("hello", add_bos=False), tok.eos_ids) == ([1, 3, 4], [3], (2, 5))
    saved = tok.save(tmp_path / "tok")
    assert json.loads((saved / "tokenizer_config.json").read_text())["add_bos_token"] is True
    again = load_tokenizer(saved)
    assert (again.encode("hello world"), again.apply_chat_template(CHATS[0])) == ([1, 3, 4], "<s>x")
    # Without the flag in tokenizer_config.json, BOS comes from tokenizer.json's post-processor (as in transformers).
    (saved / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>"}))
    assert load_tokenizer(saved).encode("hello") == [1, 3]
    (saved / "chat_template.jinja").write_text("jinja file wins")
    assert load_tokenizer(saved).chat_template == "jinja file wins"


def test_load_errors_name_the_path(tmp_path: Path) -> None:
    def fails(path: Path, match: str) -> None:
        with pytest.raises(UserError, match=match) as info:
            load_tokenizer(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)

    fails(tmp_path / "missing", "no such file")
    empty = tmp_path / "empty"
    empty.mkdir()
    fails(empty, "no tokenizer.json")
    (empty / "tokenizer.json").write_text("{not json")
    fails(empty / "tokenizer.json", "not a valid tokenizer.json")
    good = tmp_path / "good"
    Tokenizer(_tiny_backend()).save(good)
    (good / "tokenizer_config.json").write_text("[1, 2")
    fails(good, "cannot read tokenizer config")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF\x03\x00\x00\x00\x01")
    fails(truncated, "corrupt GGUF")


def test_gguf_without_tokenizer(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "no_tokenizer.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UserError, match="GGUF has no tokenizer") as info:
        load_tokenizer(path)
    assert str(path) in str(info.value)


def test_llama3_gguf_tokenizer_has_only_the_files_ids(tmp_path: Path) -> None:
    """A Llama 3 GGUF (byte-level vocabulary without `<|endoftext|>`, as llama.cpp writes every Llama 3 file): the
    tokenizer has exactly the file's ids and stop tokens, as the HF tokenizer it was converted from. transformers'
    converter adds `<|endoftext|>` one id past the model's vocabulary; the export then wrote an id our C++ runner
    refuses, and took that id for a stop token (issue 10)."""
    from gguf import GGUFReader

    from tests.checkpoints import write_tiny

    _, hf_dir, gguf_path = write_tiny("llama", tmp_path)
    n_tokens = len(GGUFReader(gguf_path).fields["tokenizer.ggml.tokens"].data)
    from_gguf, from_hf = load_tokenizer(gguf_path), load_tokenizer(hf_dir)
    assert "<|endoftext|>" not in from_hf.backend.get_vocab(with_added_tokens=True)
    assert from_gguf.backend.get_vocab_size(with_added_tokens=True) == n_tokens
    assert from_gguf.backend.token_to_id("<|endoftext|>") is None
    assert (from_gguf.eos_ids, from_gguf.bos_id) == (from_hf.eos_ids, from_hf.bos_id)
    for text in SAMPLES:  # not the combining marks: the tiny HF tokenizer normalizes NFC, a GGUF records no normalizer
        if not text.startswith("Combining"):
            assert from_gguf.encode(text) == from_hf.encode(text), text
