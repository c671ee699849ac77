"""Train an SGT on CPU with the base model frozen (../shared/specs/sgt4t.md, "Training").

    loss = (1 - alpha) * utility + alpha * obfuscation
    utility     = KL(base(x) || base(x~)) per token      (the base's next-token distributions, clean vs transformed)
    obfuscation = -mean log(sigma / e)                    (larger noise; e = the table's element std)
                + mean |cos(x, x~)|                        (decorrelate)
                + mean | ||x + mu|| - median_v ||E_v|| | / median_v ||E_v||   (keep norms plausible)
                + margin_weight * mean softplus(8 m / median_v ||E_v||^2) / 8   (ours, off by default: the attack)
    m = min_{v != t} ||z - E_v||^2 - ||z - E_t||^2 for z = x~ and z = x + mu: positive while the nearest-neighbour
    attacker (on one query, or averaging many) reads the true token t; the term pays for every token it reads.

alpha ramps linearly from 0 to `--alpha` over `--ramp` steps. Text: real English that ships with Debian (the
licenses in /usr/share/common-licenses, GPL-3 held out: it is what the metrics and the bench measure on), else
the docstrings of CPython's standard library.

    python -m models.sgt4t.train [--base GGUF|HF_DIR] --output DIR [--steps 300] [--seq-len 64] [--minutes 15]
"""

from __future__ import annotations

import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from common.calibration import calibration_text
from common.cli import ArgumentParser, run_cli
from common.errors import UserError


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300
    seq_len: int = 64
    lr: float = 1e-3
    alpha: float = 0.5  # the obfuscation weight reached after the ramp
    ramp: int = 100  # steps over which alpha goes from 0 to `alpha`
    seed: int = 0
    minutes: float | None = None  # stop after this much wall time (the SGT so far is saved)
    margin_weight: float = 0.0  # the nearest-neighbour margin term's weight within obfuscation (0: the spec's terms)


def nn_margin(z: torch.Tensor, ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Per token, min over other rows of ||z - E_v||^2 minus ||z - E_t||^2 for z [S, H], true ids [S], table
    [V, H]: > 0 while the nearest row is the true token's (the nearest-neighbour attacker wins)."""
    from models.sgt4t.metrics import l2_scores

    d = l2_scores(z, table)  # ||z - E_v||^2 - ||z||^2, [S, V]
    own = d.gather(-1, ids[:, None])[:, 0]
    others = d.scatter(-1, ids[:, None], float("inf")).min(-1).values
    return others - own


def loss_terms(sgt, base, x: torch.Tensor, clean_logp: torch.Tensor, median_norm: float, e_std: float,
               ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The spec's loss terms for one sequence of clean embeddings x [1, S, H] (every token noised), and the
    nearest-neighbour margin term when the token `ids` [1, S] are given."""
    ones = torch.ones(x.shape[:2], dtype=torch.long)
    mu, sigma = sgt.estimate(x, ones)
    x_t = x + mu + sigma * torch.randn_like(x)
    base.init_buffers()  # fresh caches: the last step's graph must not reach into this one
    logp = F.log_softmax(base.forward_embeddings(x_t, torch.tensor([0])).float(), -1)
    utility = F.kl_div(logp, clean_logp, log_target=True, reduction="none").sum(-1).mean()
    terms = {
        "utility": utility,
        "log_sigma": -(sigma / e_std).log().mean(),
        "cosine": F.cosine_similarity(x, x_t, dim=-1).abs().mean(),
        "norm": ((x + mu).norm(dim=-1) - median_norm).abs().mean() / median_norm,
    }
    if ids is not None:
        table = sgt.embed_tokens.weight.detach()
        m = torch.cat([nn_margin(z[0], ids[0], table) for z in (x_t, x + mu)]) / median_norm**2
        terms["margin"] = F.softplus(m * 8).mean() / 8  # ~ relu(m), smooth near the boundary
        terms["recovered"] = (m > 0).float().mean().detach()
    return terms


def train(sgt, base, ids: list[int], cfg: TrainConfig, progress: bool = True) -> list[dict[str, float]]:
    """Train `sgt` in place on windows of `ids` against the frozen `base`; returns each step's loss terms."""
    from tqdm import tqdm

    if len(ids) <= cfg.seq_len:
        raise UserError(f"training text: {len(ids)} tokens, need more than --seq-len {cfg.seq_len}")
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    base.eval().requires_grad_(False)
    sgt.train()
    sgt.embed_tokens.requires_grad_(False)  # the base's table: not ours to learn
    params = [p for p in sgt.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    table = sgt.embed_tokens.weight.detach()
    median_norm = float(table.norm(dim=-1).median())
    e_std = float(table.std())
    history, t0 = [], time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="train sgt", unit="step", disable=not progress)
    for step in bar:
        start = rng.randrange(0, len(ids) - cfg.seq_len)
        window = torch.tensor([ids[start : start + cfg.seq_len]])
        x = sgt.embed_tokens(window).detach()
        with torch.no_grad():
            base.init_buffers()
            clean_logp = F.log_softmax(base.forward_embeddings(x, torch.tensor([0])).float(), -1)
        terms = loss_terms(sgt, base, x, clean_logp, median_norm, e_std, window if cfg.margin_weight else None)
        alpha = cfg.alpha * min(1.0, step / cfg.ramp) if cfg.ramp else cfg.alpha
        obfuscation = terms["log_sigma"] + terms["cosine"] + terms["norm"]
        if cfg.margin_weight:
            obfuscation = obfuscation + cfg.margin_weight * terms["margin"]
        loss = (1 - alpha) * terms["utility"] + alpha * obfuscation
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        row = {k: v.item() for k, v in terms.items()} | {"loss": loss.item(), "alpha": alpha}
        history.append(row)
        bar.set_postfix(kl=f"{row['utility']:.3f}", sigma=f"{math.exp(-row['log_sigma']):.2f}e",
                        **({"nn": f"{row['recovered']:.2f}"} if "recovered" in row else {}))
        if cfg.minutes is not None and time.perf_counter() - t0 > cfg.minutes * 60:
            break
    base.init_buffers()
    sgt.eval()
    return history


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m models.sgt4t.train", description=__doc__.splitlines()[0])
    p.add_argument("--base", help="base model: a llama3/qwen3 GGUF or HF dir (default: the bundled SmolLM2 GGUF)")
    p.add_argument("--output", required=True, help="SGT directory to write (config.json, model.safetensors, tokenizer)")
    p.add_argument("--layers", type=int, default=1, help="decoder layers per estimator")
    p.add_argument("--steps", type=int, default=TrainConfig.steps)
    p.add_argument("--seq-len", type=int, default=TrainConfig.seq_len)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--alpha", type=float, default=TrainConfig.alpha, help="obfuscation weight after the ramp")
    p.add_argument("--ramp", type=int, default=TrainConfig.ramp, help="steps to ramp alpha up from 0")
    p.add_argument("--s-max", type=float, default=16.0, help="largest sigma, in units of the embedding table's "
                   "element std")
    p.add_argument("--minutes", type=float, help="stop after this much wall time")
    p.add_argument("--margin", type=float, default=0.0, help="weight of the nearest-neighbour margin term within "
                   "obfuscation (default 0: the spec's terms only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="sgt", help="the SGT's name (stored in the .pte as get_sgt_name)")
    args = p.parse_args(argv)
    if not 0 <= args.alpha <= 1:
        raise UserError(f"--alpha {args.alpha}: expected a weight in [0, 1]")
    if args.steps < 1 or args.seq_len < 2:
        raise UserError("--steps must be at least 1 and --seq-len at least 2")
    from common.io import check_output_dir
    from models.llama3.model import smollm2_gguf
    from models.sgt4t.model import from_base, load_base, save

    check_output_dir(args.output, lambda d: (d / "config.json").is_file())
    base_path = args.base or smollm2_gguf()
    base, base_cfg, family, tokenizer = load_base(base_path, max_context_len=args.seq_len)
    sgt = from_base(base, base_cfg, max_seq_len=args.seq_len, n_layers=args.layers, name=args.name, s_max=args.s_max,
                    base_name=Path(base_path.rstrip("/")).name, base_family=family.name)
    ids = tokenizer.encode(calibration_text(), add_bos=False)
    cfg = TrainConfig(args.steps, args.seq_len, args.lr, args.alpha, args.ramp, args.seed, args.minutes, args.margin)
    t0 = time.perf_counter()
    history = train(sgt, base, ids, cfg)
    first, last = history[0], history[-1]
    print(f"trained {len(history)} steps in {time.perf_counter() - t0:.0f}s: KL {first['utility']:.3f} -> "
          f"{last['utility']:.3f}, sigma/e {math.exp(-first['log_sigma']):.2f} -> {math.exp(-last['log_sigma']):.2f}, "
          f"|cos| {first['cosine']:.3f} -> {last['cosine']:.3f}")
    out = save(sgt, args.output, tokenizer)
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"wrote {out}/ (config.json, model.safetensors, tokenizer) — {size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
