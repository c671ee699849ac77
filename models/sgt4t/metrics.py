"""How users judge an SGT (../shared/specs/sgt4t.md, "How users judge it"), against isotropic Gaussian noise.

Privacy: nearest-neighbour token recovery of x~ against the embedding table E (L2 and cosine), the same on
x + mu (what an attacker gets by averaging repeated queries), and the true token's mean rank by L2 distance.
Utility of the frozen base: next-token top-1 agreement and KL(clean || transformed), perplexity on clean and
transformed input, and greedy-generation agreement on a prompt set.
Baseline: x + s * eps with s chosen so the noise's mean norm equals the SGT's mean ||x~ - x||.
A sweep scales the SGT's sigma and the baseline's s together and plots recovery against top-1 agreement (PNG).

    python -m models.sgt4t.metrics --sgt DIR [--base GGUF|HF_DIR] [--tokens 512] [--plot out.png] [--json out.json]
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from common.cli import ArgumentParser, run_cli
from common.errors import UserError

SWEEP = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)  # multiples of the trained noise
PROMPTS = (  # the greedy-agreement prompt set: short user requests
    "What is the capital of France?",
    "Give me three tips for writing clear code.",
    "Explain what a hash table is in one sentence.",
    "Write a haiku about the sea.",
    "What is 12 times 7?",
    "Name three primary colours.",
    "How do I boil an egg?",
    "Translate 'good morning' into Spanish.",
    "What does a CPU do?",
    "Suggest a name for a grey cat.",
)


@dataclass(frozen=True)
class Point:
    """Privacy and utility of one transform at one noise level."""

    scale: float  # multiple of the trained noise (SGT) / of the matched isotropic noise
    noise_norm: float  # mean ||x~ - x||
    recovery_l2: float  # fraction of tokens whose nearest table row (L2) is the true token
    recovery_cos: float
    mean_rank: float  # 1-based rank of the true token by L2 distance, averaged
    top1: float  # base next-token top-1 agreement with clean input
    kl: float  # mean KL(clean || transformed), nats per token
    ppl: float  # perplexity of the text with transformed input
    recovery_mean_l2: float | None = None  # on x + mu (SGT only)


def l2_scores(v: torch.Tensor, table: torch.Tensor, t_norm2: torch.Tensor | None = None) -> torch.Tensor:
    """||v - E_j||^2 - ||v||^2 for vectors v [N, H] and every table row j: [N, V], ordered as the L2 distances."""
    return (table.square().sum(-1) if t_norm2 is None else t_norm2) - 2 * v @ table.T


def nearest_neighbour(v: torch.Tensor, table: torch.Tensor, truth: torch.Tensor, chunk: int = 256
                      ) -> tuple[float, float, float]:
    """(L2 recovery rate, cosine recovery rate, mean 1-based L2 rank of the truth) for vectors v [N, H]."""
    t_norm2 = table.square().sum(-1)
    t_unit = F.normalize(table, dim=-1)
    hit_l2 = hit_cos = 0
    rank_sum = 0.0
    for i in range(0, v.size(0), chunk):
        vi, ti = v[i : i + chunk], truth[i : i + chunk]
        d = l2_scores(vi, table, t_norm2)
        true_d = d.gather(1, ti[:, None])
        hit_l2 += int((d.argmin(-1) == ti).sum())
        rank_sum += float((d < true_d).sum(-1).add(1).float().sum())
        hit_cos += int(((F.normalize(vi, dim=-1) @ t_unit.T).argmax(-1) == ti).sum())
    n = v.size(0)
    return hit_l2 / n, hit_cos / n, rank_sum / n


def _utility(base, x_clean: torch.Tensor, x_t: torch.Tensor, ids: torch.Tensor) -> tuple[float, float, float]:
    """(top-1 agreement, mean KL(clean || transformed), perplexity with transformed input) over one window."""
    pos = torch.tensor([0])
    base.reset_cache()
    clean = F.log_softmax(base.forward_embeddings(x_clean, pos).float(), -1)[0]
    base.reset_cache()
    noisy = F.log_softmax(base.forward_embeddings(x_t, pos).float(), -1)[0]
    top1 = float((clean.argmax(-1) == noisy.argmax(-1)).float().mean())
    kl = float(F.kl_div(noisy, clean, log_target=True, reduction="none").sum(-1).mean())
    nll = float(-noisy[:-1].gather(1, ids[0, 1:, None]).mean())
    return top1, kl, math.exp(nll)


def evaluate(sgt, base, ids: list[int], seq_len: int = 128, scales=SWEEP, seed: int = 0) -> dict:
    """SGT and matched isotropic noise at each scale: {"sgt": [Point], "isotropic": [Point], "clean_ppl": float}."""
    from tqdm import tqdm

    torch.manual_seed(seed)
    table = sgt.embed_tokens.weight.detach()
    windows = [torch.tensor([ids[i : i + seq_len]]) for i in range(0, len(ids) - seq_len + 1, seq_len)]
    if not windows:
        raise UserError(f"metrics text: {len(ids)} tokens, need at least --seq-len {seq_len}")
    out: dict = {"sgt": [], "isotropic": []}
    with torch.no_grad():
        per_window = []
        for w in windows:
            x = sgt.embed_tokens(w)
            mu, sigma = sgt.estimate(x, torch.ones_like(w))
            per_window.append((w, x, mu, sigma))
        # the isotropic baseline's per-element std that matches the trained SGT's mean noise norm (scale 1)
        noise_norm = sum(float((mu + sigma * torch.randn_like(x)).norm(dim=-1).mean()) for _, x, mu, sigma in per_window)
        noise_norm /= len(per_window)
        iso_std = noise_norm / math.sqrt(table.size(1))
        nll_clean = []
        for w, x, _, _ in per_window:
            base.reset_cache()
            logp = F.log_softmax(base.forward_embeddings(x, torch.tensor([0])).float(), -1)[0]
            nll_clean.append(float(-logp[:-1].gather(1, w[0, 1:, None]).mean()))
        out["clean_ppl"] = math.exp(sum(nll_clean) / len(nll_clean))
        for kind in tqdm(("sgt", "isotropic"), desc="metrics", leave=False):
            for s in scales:
                vs, means, truths, norms, util = [], [], [], [], []
                for w, x, mu, sigma in per_window:
                    eps = torch.randn_like(x)
                    noise = mu + s * sigma * eps if kind == "sgt" else s * iso_std * eps
                    x_t = x + noise
                    vs.append(x_t[0])
                    means.append((x + mu)[0])
                    truths.append(w[0])
                    norms.append(float(noise.norm(dim=-1).mean()))
                    util.append(_utility(base, x, x_t, w))
                truth = torch.cat(truths)
                l2, cos, rank = nearest_neighbour(torch.cat(vs), table, truth)
                mean_l2 = nearest_neighbour(torch.cat(means), table, truth)[0] if kind == "sgt" else None
                top1, kl, ppl = (sum(u[i] for u in util) / len(util) for i in range(3))
                out[kind].append(Point(s, sum(norms) / len(norms), l2, cos, rank, top1, kl, ppl, mean_l2))
    base.reset_cache()
    return out


def top1_at_recovery(points: list[Point], recovery: float) -> float | None:
    """Top-1 agreement where the curve's L2 recovery crosses `recovery` (linear interpolation; None if it never
    gets that low)."""
    pts = sorted(points, key=lambda p: p.recovery_l2)
    if not pts or pts[0].recovery_l2 > recovery:
        return None
    for lo, hi in zip(pts, pts[1:], strict=False):
        if lo.recovery_l2 <= recovery <= hi.recovery_l2:
            if hi.recovery_l2 == lo.recovery_l2:
                return max(lo.top1, hi.top1)
            f = (recovery - lo.recovery_l2) / (hi.recovery_l2 - lo.recovery_l2)
            return lo.top1 + f * (hi.top1 - lo.top1)
    return pts[-1].top1  # every point is below `recovery`: the least-noised one's


def greedy_agreement(sgt, base, tokenizer, prompts=PROMPTS, max_new_tokens: int = 24, seed: int = 0) -> float:
    """Mean fraction of greedy reply tokens equal to the clean-prompt reply's (position by position), the chat
    template applied and only message content noised (models.sgt4t.chat)."""
    from models.sgt4t.chat import encode_chat

    torch.manual_seed(seed)
    eos = set(tokenizer.eos_ids)
    scores = []
    with torch.no_grad():
        for prompt in prompts:
            ids, mask = encode_chat(tokenizer, [{"role": "user", "content": prompt}])
            t = torch.tensor([ids])
            x = sgt.embed_tokens(t)
            replies = [_greedy(base, e, max_new_tokens, eos) for e in
                       (x, sgt.transform(x, torch.tensor([mask]), torch.ones_like(t)))]
            clean, private = replies
            scores.append(sum(a == b for a, b in zip(clean, private, strict=False)) / max(len(clean), 1))
    return sum(scores) / len(scores)


def _greedy(base, embeddings: torch.Tensor, n: int, eos: set[int]) -> list[int]:
    base.reset_cache()
    logits = base.forward_embeddings(embeddings, torch.tensor([0]))
    out, pos = [], embeddings.size(1)
    for _ in range(n):
        tok = int(logits[0, -1].argmax())
        out.append(tok)
        if tok in eos or pos >= base.max_context_len:
            break
        logits = base(torch.tensor([[tok]]), torch.tensor([pos]))
        pos += 1
    return out


def plot(result: dict, path: str, title: str) -> None:
    """Recovery (L2, on x~) against top-1 agreement for the SGT and isotropic noise, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common.io import atomic_path

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for kind, style in (("sgt", "o-"), ("isotropic", "s--")):
        pts = result[kind]
        ax.plot([p.recovery_l2 * 100 for p in pts], [p.top1 * 100 for p in pts], style, label=kind)
        for p in pts:
            ax.annotate(f"{p.scale:g}x", (p.recovery_l2 * 100, p.top1 * 100), fontsize=7)
    ax.axvline(10, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("nearest-neighbour token recovery on x~, L2 (%)  [lower: more private]")
    ax.set_ylabel("next-token top-1 agreement (%)  [higher: more useful]")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m models.sgt4t.metrics", description=__doc__.splitlines()[0])
    p.add_argument("--sgt", required=True, help="an SGT directory")
    p.add_argument("--base", help="its base model (default: the bundled SmolLM2 GGUF)")
    p.add_argument("--text", help="held-out text (default: the bench's GPL-3)")
    p.add_argument("--tokens", type=int, default=512, help="tokens of the text to measure on")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--plot", help="write the privacy/utility plot here (PNG)")
    p.add_argument("--json", help="write the measurements here")
    p.add_argument("--no-chat", action="store_true", help="skip the greedy-generation agreement (10 prompts)")
    args = p.parse_args(argv)
    from bench.corpus import corpus
    from models.llama3.model import smollm2_gguf
    from models.sgt4t.model import load, load_base

    sgt = load(args.sgt, max_seq_len=max(args.seq_len, 256))
    base, _, _, tokenizer = load_base(args.base or smollm2_gguf(), max_context_len=max(args.seq_len, 256))
    if base.model.embed_tokens.weight.shape != sgt.embed_tokens.weight.shape:
        raise UserError(f"--base: its embedding table {tuple(base.model.embed_tokens.weight.shape)} is not the SGT's "
                        f"{tuple(sgt.embed_tokens.weight.shape)} (another base model?)")
    text_path, text, _ = corpus(args.text)
    ids = tokenizer.encode(text, add_bos=False)[: args.tokens]
    result = evaluate(sgt, base, ids, args.seq_len)
    if not args.no_chat:
        result["greedy_agreement"] = greedy_agreement(sgt, base, tokenizer)
    print(f"text: {text_path}, {len(ids)} tokens; clean perplexity {result['clean_ppl']:.2f}")
    print(f"{'':10} {'scale':>5} {'|noise|':>8} {'NN-L2':>6} {'NN-cos':>6} {'rank':>7} {'NN x+mu':>7} {'top1':>6} "
          f"{'KL':>6} {'ppl':>8}")
    for kind in ("sgt", "isotropic"):
        for pt in result[kind]:
            mean = "" if pt.recovery_mean_l2 is None else f"{pt.recovery_mean_l2:.1%}"
            print(f"{kind:10} {pt.scale:5g} {pt.noise_norm:8.3f} {pt.recovery_l2:6.1%} {pt.recovery_cos:6.1%} "
                  f"{pt.mean_rank:7.1f} {mean:>7} {pt.top1:6.1%} {pt.kl:6.3f} {pt.ppl:8.2f}")
    for kind in ("sgt", "isotropic"):
        at = top1_at_recovery(result[kind], 0.10)
        print(f"{kind}: top-1 agreement at 10% recovery: " + ("never that private" if at is None else f"{at:.1%}"))
    if "greedy_agreement" in result:
        print(f"private chat, {len(PROMPTS)} prompts: greedy reply tokens equal to the clean reply's: "
              f"{result['greedy_agreement']:.1%}")
    if args.plot:
        plot(result, args.plot, f"{args.sgt} on {text_path.name}, {len(ids)} tokens")
        print(f"wrote {args.plot}")
    if args.json:
        from common.io import atomic_path

        serial = {k: [asdict(p) for p in v] if isinstance(v, list) else v for k, v in result.items()}
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(serial, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
