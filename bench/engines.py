"""The engines a benchmark row runs on, behind one small interface (used inside a bench.worker process).

Every engine is fed the same token ids (our tokenizer's, from the model's GGUF); decoding is greedy and
ignores EOS so each run produces exactly the requested number of tokens.
"""

from __future__ import annotations

import time

import numpy as np


class Engine:
    """setup() (imports, untimed) and load(); then reset() empties the context and feed(tokens) appends tokens and
    returns the next-token logits. prefill / decode / nll are the same for every engine on top of those two."""

    def setup(self) -> None:
        pass

    def load(self) -> None:
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError

    def feed(self, tokens: list[int]):
        """Append `tokens` to the context; the logits after the last one (1-D, numpy or torch)."""
        raise NotImplementedError

    def prefill(self, tokens: list[int]) -> float:
        """Seconds to run `tokens` from an empty context."""
        self.reset()
        t0 = time.perf_counter()
        self.logits = self.feed(tokens)
        return time.perf_counter() - t0

    def decode(self, n: int) -> float:
        """Seconds for `n` greedy steps after the prefill (sampling included, EOS ignored)."""
        t0 = time.perf_counter()
        for _ in range(n):
            self.logits = self.feed([int(self.logits.argmax())])
        return time.perf_counter() - t0

    def logits_along(self, tokens: list[int]) -> np.ndarray:
        """Next-token logits [len(tokens) - 1, vocab] after each of tokens[:-1]: teacher forcing, one position per
        call (our .pte returns last-position logits only), as decoding reads them."""
        self.reset()
        return np.stack([np.asarray(self.feed([t]), dtype=np.float32) for t in tokens[:-1]])

    def score(self, tokens: list[int], reference: np.ndarray | None = None) -> dict[str, float]:
        """Mean negative log-likelihood (nats) of tokens[1:]; with `reference` (log-probabilities [N-1, vocab] of the
        unquantized model along the same tokens) also the mean KL(reference || this) per position and the share of
        positions whose top-1 token agrees."""
        return score(self.logits_along(tokens), tokens, reference)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def score(logits: np.ndarray, tokens: list[int], reference: np.ndarray | None) -> dict[str, float]:
    """nll (and kl, top1 against `reference` log-probabilities) of logits [N-1, V] for tokens[1:]; vocabularies
    padded past the tokenizer's compare on the reference's width."""
    lp = log_softmax(logits)
    out = {"nll": float(-lp[np.arange(len(lp)), tokens[1:]].mean())}
    if reference is not None:
        ref = reference.astype(np.float64)
        lp = log_softmax(logits[:, : ref.shape[1]])
        out["kl"] = float((np.exp(ref) * (ref - lp)).sum(-1).mean())
        out["top1"] = float((ref.argmax(-1) == lp.argmax(-1)).mean())
    return out


class PteEngine(Engine):
    """Our `.pte` through ExecuTorch's Python runtime (common.runtime.PteModel), as the inference CLI runs it."""

    def __init__(self, pte: str, threads: int):
        self.pte, self.threads = pte, threads

    def setup(self) -> None:
        from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
        from executorch.runtime import Runtime

        from common.kernels import load_kernel_libraries
        from common.runtime import leave_cores_to_executorch

        load_kernel_libraries()
        Runtime.get()
        _unsafe_reset_threadpool(self.threads)
        leave_cores_to_executorch()  # also export_llm's program, which does not go through PteModel

    def load(self) -> None:
        from common.runtime import PteModel

        self.model = PteModel(self.pte)

    def reset(self) -> None:
        self.pos = 0  # the cache is overwritten from position 0; attention reads only positions < pos

    def feed(self, tokens: list[int]):
        from common.runtime import prefill

        logits = prefill(self.model, tokens, self.pos)  # chunked, as common.runtime.generate prefills
        self.pos += len(tokens)
        return logits


class ExportLlmEngine(PteEngine):
    """ExecuTorch's export_llm `.pte` (bench.export_llm) through the same Python runtime: forward(tokens [1, S],
    input_pos [1]) -> the last position's logits, prompts fed in chunks of its get_max_seq_len - 1."""

    def load(self) -> None:
        from executorch.runtime import Runtime

        program = Runtime.get().load_program(self.pte)
        # its tokens input is bounded at get_max_seq_len - 1 (export_llm's dynamic shape; 128 is refused)
        self.max_seq_len = int(program.load_method("get_max_seq_len").execute([])[0]) - 1
        self.method = program.load_method("forward")

    def feed(self, tokens: list[int]):
        import torch

        for i in range(0, len(tokens), self.max_seq_len):
            chunk = tokens[i : i + self.max_seq_len]
            out = self.method.execute([torch.tensor([chunk], dtype=torch.long), torch.tensor([self.pos])])[0]
            self.pos += len(chunk)
        return out.reshape(-1, out.shape[-1])[-1]


class LlamaCppEngine(Engine):
    """llama.cpp (llama-cpp-python) on the original GGUF; logits of the last position only, as ours."""

    def __init__(self, gguf: str, threads: int, n_ctx: int):
        self.gguf, self.threads, self.n_ctx = gguf, threads, n_ctx

    def setup(self) -> None:
        import llama_cpp  # noqa: F401

    def load(self) -> None:
        from llama_cpp import Llama

        self.llm = Llama(self.gguf, n_ctx=self.n_ctx, n_batch=512, n_ubatch=512, n_threads=self.threads,
                         n_threads_batch=self.threads, logits_all=False, verbose=False)

    def reset(self) -> None:
        self.llm.reset()
        # Llama.reset() clears the KV memory of recurrent models only and leaves the cells for the next eval() to
        # trim; a sliding-window (iswa) cache cannot be trimmed back to position 0, and Gemma 3 then read stale
        # cells (measured: perplexity 2.7e8 on GPL-3). Cleared here, every engine starts each run empty.
        self.llm._ctx.kv_cache_clear()

    def feed(self, tokens: list[int]):
        self.llm.eval(tokens)
        # eval() keeps no logits unless logits_all (which would compute the LM head for every prompt position)
        return np.ctypeslib.as_array(self.llm._ctx.get_logits_ith(-1), shape=(self.llm.n_vocab(),))

    def logits_along(self, tokens: list[int]) -> np.ndarray:
        """Scored by a second instance that keeps every position's logits (logits_all), in one eval: the
        last-output pointer decoding reads (get_logits_ith(-1)) gave wrong logits on Gemma 3 fed a token at a time
        (measured on GPL-3: mean nll 12.3 against 2.68 from the same tokens' kept logits), though not on SmolLM2."""
        from llama_cpp import Llama

        llm = Llama(self.gguf, n_ctx=max(self.n_ctx, len(tokens)), n_batch=512, n_ubatch=512, n_threads=self.threads,
                    n_threads_batch=self.threads, logits_all=True, verbose=False)
        llm.eval(tokens[:-1])
        return np.array(llm.scores[: len(tokens) - 1], dtype=np.float32)


class TransformersEngine(Engine):
    """transformers eager fp32, weights dequantized from the GGUF by transformers' own GGUF loader."""

    def __init__(self, gguf: str, threads: int):
        self.gguf, self.threads = gguf, threads

    def setup(self) -> None:
        import torch
        import transformers  # noqa: F401

        torch.set_num_threads(self.threads)
        self.torch = torch

    def load(self) -> None:
        import os

        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(
            os.path.dirname(self.gguf), gguf_file=os.path.basename(self.gguf), dtype=self.torch.float32
        ).eval()

    def reset(self) -> None:
        from transformers import DynamicCache

        self.cache = DynamicCache()

    def feed(self, tokens: list[int]):
        with self.torch.no_grad():
            out = self.model(self.torch.tensor([tokens]), past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        self.cache = out.past_key_values
        return out.logits[0, -1]

    def logits_along(self, tokens: list[int]) -> np.ndarray:
        """As Engine.logits_along, in one full-sequence forward (the same numbers, 500x fewer calls)."""
        torch = self.torch
        with torch.no_grad():
            return self.model(torch.tensor([tokens])).logits[0, :-1].float().numpy()
