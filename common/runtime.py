"""Run a zoo model: an exported `.pte` through ExecuTorch's Python runtime, or the eager model.

Both expose the same `forward(tokens, start) -> last-position logits`, so one `generate` loop
(chunked prefill, decode, stop on EOS) serves both and their tokens can be compared.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from common.errors import UserError
from common.sampler import Sampler

PTE_MAGIC_OFFSET, PTE_MAGIC = 4, b"ET"  # flatbuffer file identifier "ETxx" at bytes 4..8


def check_pte_file(path: str | os.PathLike) -> str:
    """`path` as a str if it is an ExecuTorch program file (by its 'ET' identifier), else a UserError."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such .pte file")
    with open(path, "rb") as f:
        head = f.read(8)
    if head[PTE_MAGIC_OFFSET : PTE_MAGIC_OFFSET + 2] != PTE_MAGIC:
        raise UserError(f"{path}: not an ExecuTorch program (no 'ET' file identifier)")
    return path


def leave_cores_to_executorch() -> None:
    """One torch thread from now on in this process, which runs `.pte` programs.

    ExecuTorch's own thread pool computes a program; torch does only the glue around each call (the runtime's copy
    of its inputs and outputs, the sampler). After a parallel torch op, torch's OpenMP threads spin-wait for more
    work, on the very cores the thread pool is about to use: SmolLM2 8da4w at context 8192 through the Python
    runtime decoded 169 tok/s with torch's default threads, 263 with one (2026-11-28, 2-core AMD EPYC)."""
    torch.set_num_threads(1)


def open_program(path: str | os.PathLike, **kwargs):
    """(the ExecuTorch program at `path` with the zoo's kernel libraries loaded, when its loading began) or a
    UserError naming the file; `kwargs` go to Runtime.load_program."""
    from executorch.runtime import Runtime

    from common.kernels import load_kernel_libraries

    path = check_pte_file(path)
    load_kernel_libraries()
    t0 = time.perf_counter()
    try:
        return Runtime.get().load_program(path, **kwargs), t0
    except Exception as e:  # the runtime reports corrupt files as RuntimeError with an error code
        raise UserError(f"{path}: cannot load ExecuTorch program ({e})") from None


def missing_operators(path: str) -> list[str]:
    """The operators the program at `path` calls that this process's runtime has no kernel for ([] if unreadable)."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    from common.export import program_operators
    from common.kernels import runtime_operator_names

    try:
        with open(path, "rb") as f:
            ops = program_operators(deserialize_pte_binary(f.read()).program)
    except Exception:  # not a program we can parse: the caller reports the load error itself
        return []
    available = runtime_operator_names()
    return [op for op in ops if op not in available]


class PteModel:
    """A causal-LM `.pte` (common.contract.CAUSAL_LM), loaded with `executorch.runtime`; torch keeps one thread from
    then on (leave_cores_to_executorch).

    `etdump` records an ETDump (op-level timings) for bench.profile."""

    def __init__(self, path: str | os.PathLike, etdump: bool = False):
        from common.contract import CAUSAL_LM

        kwargs = {"enable_etdump": True, "debug_buffer_size": 0} if etdump else {}
        path = os.fspath(path)
        self.program, t0 = open_program(path, **kwargs)
        leave_cores_to_executorch()  # it runs per token; an SGT program (once per prompt) may sit beside eager code
        self.path = path
        try:
            CAUSAL_LM.check(path, set(self.program.method_names), self._value)
            self.method = self.program.load_method("forward")
            # loaded once, with forward: a program exported --embeddings-input is run from embeddings
            self.embeddings_method = (self.program.load_method("forward_embeddings")
                                      if "forward_embeddings" in self.program.method_names else None)
            self.load_s = time.perf_counter() - t0
            self.max_seq_len = self._const("get_max_seq_len")
            self.max_context_len = self._const("get_max_context_len")
            self.vocab_size = self._const("get_vocab_size")
            self.eos_ids = tuple(int(t) for t in self.program.load_method("get_eos_ids").execute([]))
            # (sink, window) of a program exported --attention-sink: it runs on past its context
            self.attention_sink = (tuple(int(t) for t in self.program.load_method("get_attention_sink").execute([]))
                                   if "get_attention_sink" in self.program.method_names else ())
        except UserError:
            raise
        except Exception as e:  # a corrupt method or constant (bad string bytes, wrong types): one line
            missing = missing_operators(path)
            if missing:
                from common.kernels import describe_missing

                raise UserError(f"{path}: needs operators this runtime has no kernels for: "
                                f"{describe_missing(missing)}") from None
            raise UserError(f"{path}: cannot load ExecuTorch program ({type(e).__name__}: {e})") from None
        if not 1 <= self.max_seq_len <= self.max_context_len:
            raise UserError(f"{path}: bad contract constants (get_max_seq_len {self.max_seq_len}, "
                            f"get_max_context_len {self.max_context_len})")

    def _value(self, name: str):
        """The (first) value a constant method returns."""
        return self.program.load_method(name).execute([])[0]

    def _const(self, name: str) -> int:
        return int(self._value(name))

    def forward(self, tokens: list[int], start: int) -> torch.Tensor:
        try:
            out = self.method.execute([torch.tensor([tokens], dtype=torch.long), torch.tensor([start], dtype=torch.long)])
            return out[0][0, -1]
        except Exception as e:  # the runtime's failures (a corrupt program's plan, a kernel error) as one line
            raise UserError(f"{self.path}: forward failed at position {start} ({type(e).__name__}: {e})") from None

    def forward_embeddings(self, embeddings: torch.Tensor, start: int) -> torch.Tensor:
        """Last-position logits from input embeddings [1, S, hidden] (a program exported with --embeddings-input)."""
        if self.embeddings_method is None:
            raise UserError(f"{self.path}: takes token ids only; export it with --embeddings-input")
        try:
            out = self.embeddings_method.execute([embeddings.float().contiguous(), torch.tensor([start], dtype=torch.long)])
            return out[0][0, -1]
        except Exception as e:
            raise UserError(f"{self.path}: forward_embeddings failed at position {start} ({type(e).__name__}: {e})"
                            ) from None

    def write_etdump(self, etdump: str, debug: str) -> None:
        """Write the ETDump recorded since load (with `etdump=True`)."""
        self.program.write_etdump_result_to_file(etdump, debug)


class EagerModel:
    """The eager `Transformer` behind the same interface as PteModel."""

    def __init__(self, model: torch.nn.Module, eos_ids: tuple[int, ...], max_seq_len: int | None = None):
        self.model = model
        self.max_context_len = model.max_context_len
        self.max_seq_len = max_seq_len or model.max_seq_len
        self.vocab_size = model.lm_head.out_features
        self.eos_ids = eos_ids
        self.attention_sink = tuple(getattr(getattr(model, "cfg", None), "attention_sink", ()))
        self.load_s = 0.0

    @torch.no_grad()
    def forward(self, tokens: list[int], start: int) -> torch.Tensor:
        return self.model(torch.tensor([tokens], dtype=torch.long), torch.tensor([start], dtype=torch.long))[0, -1]

    @torch.no_grad()
    def forward_embeddings(self, embeddings: torch.Tensor, start: int) -> torch.Tensor:
        return self.model.forward_embeddings(embeddings, torch.tensor([start], dtype=torch.long))[0, -1]


@dataclass
class Generation:
    tokens: list[int] = field(default_factory=list)  # generated tokens (stop token included if hit)
    prompt_len: int = 0
    prefill_s: float = 0.0
    first_token_s: float = 0.0  # from the start of prefill to the first sampled token
    decode_s: float = 0.0  # sampling included
    interrupted: bool = False  # Ctrl-C ended it (with `interruptible`)
    sample_s: float = 0.0  # of which in the sampler
    logits: list[torch.Tensor] = field(default_factory=list)  # per step, when keep_logits

    @property
    def prefill_tps(self) -> float:
        return self.prompt_len / self.prefill_s if self.prefill_s else 0.0

    @property
    def decode_tps(self) -> float:
        n = len(self.tokens) - 1  # the first token comes from prefill
        return n / self.decode_s if self.decode_s and n > 0 else 0.0


def check_context(prompt_len: int, max_context_len: int, source: str, rotates: bool = False) -> None:
    """A UserError when a prompt of `prompt_len` tokens (earlier turns in the cache included) leaves no room (never
    for a model that `rotates`: an attention sink's)."""
    if prompt_len >= max_context_len and not rotates:
        raise UserError(
            f"prompt is {prompt_len} tokens but {source} holds a context of {max_context_len} "
            f"(shorten the prompt or export with a larger --max-context-len)"
        )


def prefill(model: PteModel | EagerModel, tokens: list[int], start: int = 0,
            embeddings: torch.Tensor | None = None) -> torch.Tensor:
    """Run `tokens` (or their input `embeddings` [1, S, hidden]) from position `start` in chunks of at most
    max_seq_len; the logits after the last one."""
    for i in range(0, len(tokens), model.max_seq_len):
        if embeddings is None:
            logits = model.forward(tokens[i : i + model.max_seq_len], start + i)
        else:
            logits = model.forward_embeddings(embeddings[:, i : i + model.max_seq_len], start + i)
    return logits


def generate(
    model: PteModel | EagerModel,
    prompt: list[int],
    sampler: Sampler,
    max_new_tokens: int,
    on_token: Callable[[int], None] | None = None,
    keep_logits: bool = False,
    source: str = "the model",
    ignore_eos: bool = False,
    embeddings: torch.Tensor | None = None,
    start: int = 0,
    seen: set[int] | None = None,
    interruptible: bool = False,
) -> Generation:
    """Chunked prefill (max_seq_len per call) from position `start` (the cache holds 0..start: a chat's earlier
    turns), then decode until EOS (unless `ignore_eos`), max_new_tokens or the context end (an attention sink's
    model runs on past it). The one generation
    loop: the CLIs, the tests, the bench and the profiler all run this.
    `embeddings` [1, len(prompt), hidden]: prefill from these instead of the prompt's own (an SGT's output).
    `seen`: the context's distinct ids for the repetition penalty (the prompt and the reply are added to it).
    `interruptible`: Ctrl-C during decode ends the reply (`interrupted`) instead of raising."""
    if not prompt:
        raise UserError("the prompt is empty")
    vocab = getattr(model, "vocab_size", None)
    if vocab is not None and max(prompt) >= vocab:
        raise UserError(f"prompt token id {max(prompt)} is outside {source}'s vocabulary of {vocab} ids: "
                        f"the tokenizer does not belong to this model")
    rotates = bool(getattr(model, "attention_sink", ()))
    check_context(start + len(prompt), model.max_context_len, source, rotates)
    gen = Generation(prompt_len=len(prompt))
    if embeddings is not None and embeddings.shape[:2] != (1, len(prompt)):
        raise UserError(f"embeddings {tuple(embeddings.shape)}: expected [1, {len(prompt)}, hidden] for the prompt")
    t_prefill = time.perf_counter()
    logits = prefill(model, prompt, start, embeddings=embeddings)
    gen.prefill_s = time.perf_counter() - t_prefill
    pos = start + len(prompt)
    stop = () if ignore_eos else model.eos_ids
    seen = set() if seen is None else seen
    seen.update(prompt)
    t0 = time.perf_counter()
    try:
        while True:
            if keep_logits:
                gen.logits.append(logits.clone())
            ts = time.perf_counter()
            token = sampler(logits, seen)
            gen.sample_s += time.perf_counter() - ts
            gen.tokens.append(token)
            seen.add(token)
            if len(gen.tokens) == 1:
                gen.first_token_s = time.perf_counter() - t_prefill
            if on_token:
                on_token(token)
            if token in stop or len(gen.tokens) >= max_new_tokens or (pos >= model.max_context_len and not rotates):
                break
            logits = model.forward([token], pos)
            pos += 1
    except KeyboardInterrupt:
        if not interruptible or not gen.tokens:
            raise
        gen.interrupted = True
    gen.decode_s = time.perf_counter() - t0
    return gen
