"""The private chat, end to end on one machine: the chat template applied, message content transformed by the SGT
(client side), the transformed embeddings prefilled into the base model (server side), the reply streamed.

    python -m models.sgt4t.inference --sgt DIR | --sgt-pte sgt.pte  [--base-pte base.pte | --base CKPT]
                                     --prompt "..." [--system "..."] [--show-server-view]

The base .pte must be a causal-LM export with `--embeddings-input` (python -m models.llama3.export ...); without
one, the base checkpoint runs eagerly (default: the bundled SmolLM2 GGUF). `--show-server-view` prints what the
server could read back from the embeddings it receives: each position's nearest token in the embedding table.
"""

from __future__ import annotations

import sys

import torch

from common.cli import ArgumentParser, run_cli
from common.errors import UserError


class SgtPte:
    """An SGT `.pte` (contract sgt4t) behind the eager transform's call: (ids, noise_mask, attention_mask) -> x~."""

    def __init__(self, path: str):
        from common.contract import SGT4T
        from common.runtime import open_program

        self.program, _ = open_program(path)
        SGT4T.check(path, set(self.program.method_names), lambda n: self.program.load_method(n).execute([])[0])
        self.path, self.method = path, self.program.load_method("forward")
        self.max_seq_len = int(self.program.load_method("get_max_seq_len").execute([])[0])

    def __call__(self, ids: torch.Tensor, noise_mask: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if ids.size(1) > self.max_seq_len:
            raise UserError(f"{self.path}: the prompt is {ids.size(1)} tokens but the SGT takes at most "
                            f"{self.max_seq_len} (export it with a larger --max-seq-len)")
        return self.method.execute([ids, noise_mask, attention_mask])[0]


def check_masks(ids: torch.Tensor, noise_mask: torch.Tensor, attention_mask: torch.Tensor) -> None:
    """The transform's inputs agree: [1, S] ids, and masks of the same shape."""
    if ids.dim() != 2 or ids.size(0) != 1:
        raise UserError(f"input_ids {tuple(ids.shape)}: expected [1, S]")
    for name, m in (("noise_mask", noise_mask), ("attention_mask", attention_mask)):
        if m.shape != ids.shape:
            raise UserError(f"{name} {tuple(m.shape)}: expected the input's shape {tuple(ids.shape)}")


def transform(sgt, ids: list[int], mask: list[bool]) -> torch.Tensor:
    """x~ [1, S, H] for a prompt's ids and noise mask, through an eager SGT or an SgtPte."""
    t = torch.tensor([ids])
    noise, attn = torch.tensor([mask]), torch.ones_like(t)
    check_masks(t, noise, attn)
    with torch.no_grad():
        return sgt(t, noise, attn)


def sgt_messages(sgt, tokenizer, messages: list[dict], transform_all_tokens: bool = False
                 ) -> tuple[list[int], list[bool], torch.Tensor]:
    """sgt(messages): the base's chat template applied and the message content transformed, through an eager SGT or
    an SgtPte. Returns (token ids, noise mask, x~ [1, S, H]) — x~ is what the client sends."""
    from models.sgt4t.chat import encode_chat

    ids, mask = encode_chat(tokenizer, messages, transform_all_tokens=transform_all_tokens)
    return ids, mask, transform(sgt, ids, mask)


def server_view(x: torch.Tensor, table: torch.Tensor) -> list[int]:
    """The nearest table row (L2) to each embedding: what the server reads back without the SGT's help."""
    from models.sgt4t.metrics import l2_scores

    return l2_scores(x[0], table).argmin(-1).tolist()


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m models.sgt4t.inference", description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--sgt", help="an SGT directory (eager transform)")
    src.add_argument("--sgt-pte", help="an SGT .pte (python -m models.sgt4t.export)")
    base = p.add_mutually_exclusive_group()
    base.add_argument("--base-pte", help="the base model's .pte, exported with --embeddings-input")
    base.add_argument("--base", help="the base checkpoint, run eagerly (default: the bundled SmolLM2 GGUF)")
    p.add_argument("--prompt", default="Give me three tips for writing clear code.")
    p.add_argument("--system", help="system message (also transformed)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--transform-all-tokens", action="store_true", help="noise the template's tokens too")
    p.add_argument("--show-server-view", action="store_true",
                   help="print the nearest-token reading of what the server receives")
    args = p.parse_args(argv)
    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens {args.max_new_tokens}: expected at least 1")
    import os

    from common.runtime import EagerModel, PteModel, generate
    from common.sampler import Sampler
    from common.tokenizer import StreamDecoder, load_tokenizer
    from models.llama3.model import smollm2_gguf
    from models.sgt4t.model import load, load_base

    if args.sgt_pte:
        sgt = SgtPte(args.sgt_pte)
        tokenizer = load_tokenizer(os.path.join(os.path.dirname(os.path.abspath(args.sgt_pte)), "tokenizer.json"))
        table = None
    else:
        sgt = load(args.sgt)
        tokenizer = load_tokenizer(args.sgt)
        table = sgt.embed_tokens.weight.detach()
    if args.base_pte:
        model, source = PteModel(args.base_pte), os.path.basename(args.base_pte)
    else:
        base_model, cfg, _, _ = load_base(args.base or smollm2_gguf(), max_context_len=2048)
        model, source = EagerModel(base_model, tuple(dict.fromkeys(cfg.eos_ids + tokenizer.eos_ids))), "eager base"
        table = base_model.model.embed_tokens.weight.detach()
    messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
        {"role": "user", "content": args.prompt}]
    ids, mask, x = sgt_messages(sgt, tokenizer, messages, args.transform_all_tokens)
    if table is not None and x.size(-1) != table.size(-1):
        raise UserError(f"the SGT's embeddings have {x.size(-1)} dims but the base model's {table.size(-1)}")
    print(f"[client] {len(ids)} prompt tokens, {sum(mask)} transformed", file=sys.stderr)
    if args.show_server_view and table is not None:
        view = server_view(x, table)
        hidden = sum(v != i for v, i, m in zip(view, ids, mask, strict=True) if m)
        print(f"[server view] {tokenizer.decode(view)!r} ({hidden} of {sum(mask)} transformed tokens not recovered)",
              file=sys.stderr)
    stream = StreamDecoder(tokenizer)

    def emit(token: int) -> None:
        if token not in model.eos_ids:
            print(stream.push(token), end="", flush=True)

    gen = generate(model, ids, Sampler(), args.max_new_tokens, emit, source=source, embeddings=x)
    print(stream.flush())
    print(f"\n[{source}] prefill {gen.prompt_len} embeddings at {gen.prefill_tps:.1f} tok/s | decode "
          f"{len(gen.tokens)} tok at {gen.decode_tps:.1f} tok/s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
