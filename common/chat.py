"""Chat templates rendered byte-for-byte like transformers' `apply_chat_template(..., tokenize=False)`.

This mirrors `transformers/utils/chat_template_utils.py` (sandboxed jinja2 environment, its globals and
filters, the message clean-up it applies) without importing transformers, so inference does not need it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment

from common.errors import UserError
from common.timeout import Timeout, deadline

# Names a message's reasoning may come under; transformers copies it to `reasoning_content` and `thinking`.
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False
) -> str:
    """transformers' `tojson`: no HTML escaping (unlike jinja's own), with json.dumps' options."""
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


class _TemplateDict:
    """`dict` as templates see it: callable, but with no attributes to escape the sandbox through."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    """jinja's `namespace`, refusing underscore-prefixed attributes (as transformers does)."""

    def __init__(*args: Any, **kwargs: Any) -> None:
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"chat templates cannot set namespace attribute {name!r}")


class _GenerationTag(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` (transformers' assistant-mask marker): renders its body as is."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.CallBlock:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller: Any) -> str:
        return caller()


# Bounds on what a template may cost: a chat prompt larger than this fits no model's context anyway.
MAX_RENDER_CHARS = 4 << 20
MAX_RENDER_SECONDS = 5.0


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, plus bounds on `*` and `**` (`'x' * 10**10` would allocate 10 GB before any output check)."""

    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_RENDER_CHARS:
                    raise jinja2.exceptions.SecurityError(f"a repetition of {len(seq) * n} items, more than the {MAX_RENDER_CHARS} a prompt may have")
        if operator == "**" and isinstance(right, int) and abs(right) > 1024 and not (-1 <= left <= 1):
            raise jinja2.exceptions.SecurityError(f"an exponent of {right}")
        return super().call_binop(context, operator, left, right)


@lru_cache(maxsize=32)
def compile_chat_template(template: str) -> jinja2.Template:
    """The compiled template, built once per template string; a syntax error is a UserError."""
    env = _BoundedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols],
        loader=jinja2.DictLoader({}),  # include / import / extends find nothing: a TemplateNotFound, not a crash
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as e:
        raise UserError(f"chat template: syntax error on line {e.lineno}: {e.message}") from None


def _plain(value: Any) -> Any:
    """Rebuild template inputs from plain JSON-like types (transformers' `_plain_template_data`)."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    for base, convert in ((str, str.__str__), (int, int.__int__), (float, float.__float__)):
        if isinstance(value, base):  # subclasses (enums, numpy scalars) lose their extra methods
            return convert(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return _plain(value.item())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):
        return _plain(value.model_dump())
    return f"<{type(value).__name__}>"


def _alias_reasoning(message: dict) -> dict:
    reasoning = next((message[k] for k in _REASONING_FIELDS if message.get(k) is not None), None)
    return message if reasoning is None else {"thinking": reasoning, **message, "reasoning_content": reasoning}


def render_chat_template(template: str, messages: list[dict], add_generation_prompt: bool = True, **kwargs: Any) -> str:
    """Render `messages` with a chat template; `kwargs` (tools=, documents=, enable_thinking=, bos_token=, ...)
    reach the template as variables, exactly as transformers passes them."""
    if not messages:
        raise UserError("messages: empty conversation (expected at least one message)")
    for message in messages:
        if not isinstance(message, Mapping):
            raise TypeError(f"chat messages must be dicts, got {message!r}")
    tools, documents = kwargs.pop("tools", None), kwargs.pop("documents", None)
    if tools is not None and not all(isinstance(t, Mapping) for t in tools):
        raise TypeError("tools must be JSON schemas (dicts)")
    # transformers drops None-valued keys (OpenAI-style `content=None`), then copies reasoning to its aliases.
    chat = [_alias_reasoning({k: v for k, v in _plain(m).items() if v is not None}) for m in messages]
    compiled = compile_chat_template(template)
    variables = dict(messages=chat, tools=_plain(tools), documents=_plain(documents),
                     add_generation_prompt=add_generation_prompt, **_plain(kwargs))
    try:
        with deadline(MAX_RENDER_SECONDS):
            out, size = [], 0
            for chunk in compiled.generate(**variables):  # streamed, so the size bound holds while rendering
                size += len(chunk)
                if size > MAX_RENDER_CHARS:
                    raise UserError(f"chat template: rendered more than {MAX_RENDER_CHARS} characters")
                out.append(chunk)
            return "".join(out)
    except Timeout:
        raise UserError(f"chat template: rendering took longer than {MAX_RENDER_SECONDS:.0f} s") from None
    except jinja2.TemplateNotFound as e:
        raise UserError(f"chat template: include, import and extends are not allowed (it asked for {e.name!r})") from None
    except jinja2.TemplateError as e:
        raise UserError(f"chat template: {e}") from None
    except ArithmeticError as e:  # 1 / 0, overflow
        raise UserError(f"chat template: {type(e).__name__}: {e}") from None
