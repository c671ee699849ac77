"""Fitting AQLM 2x8 weights to a Linear (../shared/specs/aqlm.md, "Quantizer"): one layer at a time.

The objective is the layer's output error ||(W - Wq) X^T||^2 over calibration inputs X [T, I], i.e.
sum_o e_o H e_o^T with e = W - Wq and H = X^T X (weight-MSE alone destroys SmolLM2: spec). Steps:
  1. scales: each row's RMS; the codebooks are fit on the rows divided by them;
  2. init: k-means of the groups of 8 for codebook 0, of the residuals for codebook 1, weighted by h = diag(H);
  3. `rounds` x {least-squares codebooks, least-squares scales, beam search over codes}, all under diag(H);
  4. given the whole H: `gram_sweeps` x {coordinate descent over the codes, one group and codebook at a time
     for all rows at once, exact in H (never worse); least-squares scales in H}.
Beam search: for each group, the `beam` best codes of one codebook (the other's fixed), each completed by the
exactly best code of the other; both orders; the best pair found (or the current one) wins.
Step 4 is what input correlations need: with all 210 linears of SmolLM2 fit on 4,096 calibration tokens (no
tuning), perplexity on GPL-3 is 84.8 after step 3 and 46.6 after step 4 (KL to the float model 1.62 -> 1.03;
damp 1.0: 53.8; measured 2026-11-27).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from common.quant.aqlm import CODEBOOK_SIZE, IN_GROUP, NUM_CODEBOOKS, dequantize_2x8


@dataclass(frozen=True)
class FitConfig:
    rounds: int = 2  # {codebooks, scales, codes} rounds after the k-means init
    beam: int = 8
    kmeans_iters: int = 10
    kmeans_points: int = 1 << 16  # k-means runs on a random sample of this many groups
    chunk: int = 8192  # groups per beam-search batch (memory: chunk * beam * 256 floats)
    gram_sweeps: int = 2  # coordinate-descent sweeps in the full X^T X (when fit_2x8 is given it)
    damp: float = 0.1  # added to H's diagonal, times its mean: well posed, robust to input drift (1.0 measured worse)
    seed: int = 0


def partial_distances(y: torch.Tensor, codebook: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """sum_b h (y - c)^2 less its codeword-independent part sum_b h y^2, for y [N, K, 8], codebook [256, 8] and
    weights h [N, 1, 8] -> [N, K, 256]: one matmul, [h y, h] @ [-2 c, c^2]^T (the fit's hot spot)."""
    a = torch.cat([h * y, h.expand_as(y)], -1)
    return a @ torch.cat([-2 * codebook, codebook * codebook], -1).T


def _nearest(y: torch.Tensor, codebook: torch.Tensor, h: torch.Tensor, chunk: int) -> torch.Tensor:
    """Index of the h-nearest codeword for each row of y [N, 8]."""
    return torch.cat([partial_distances(y[i:i + chunk, None], codebook, h[i:i + chunk, None])[:, 0].argmin(-1)
                      for i in range(0, len(y), chunk)])


def kmeans(y: torch.Tensor, h: torch.Tensor, cfg: FitConfig, gen: torch.Generator) -> torch.Tensor:
    """A 256-word codebook [256, 8] for rows y [N, 8] under per-element weights h [N, 8] (weighted Lloyd)."""
    if len(y) > cfg.kmeans_points:
        pick = torch.randperm(len(y), generator=gen)[: cfg.kmeans_points]
        y, h = y[pick], h[pick]
    centers = y[torch.randperm(len(y), generator=gen)[:CODEBOOK_SIZE]].clone()
    if len(centers) < CODEBOOK_SIZE:  # fewer groups than codewords: the rest are copies, never chosen
        centers = centers[torch.arange(CODEBOOK_SIZE) % len(centers)]
    for _ in range(cfg.kmeans_iters):
        a = _nearest(y, centers, h, cfg.chunk)
        num = torch.zeros_like(centers).index_add_(0, a, h * y)
        den = torch.zeros_like(centers).index_add_(0, a, h)
        centers = torch.where(den > 0, num / den.clamp_min(1e-30), centers)
    return centers


def beam_search(x: torch.Tensor, h: torch.Tensor, books: torch.Tensor, codes: torch.Tensor, cfg: FitConfig) -> torch.Tensor:
    """Better codes [N, 2] (long) for groups x [N, 8] under weights h [N, 8] and codebooks [2, 256, 8]; never worse
    than `codes`."""
    out = codes.clone()
    for i in range(0, len(x), cfg.chunk):
        xs, hs, cs = x[i:i + cfg.chunk], h[i:i + cfg.chunk, None], out[i:i + cfg.chunk]
        r = xs - books[0][cs[:, 0]] - books[1][cs[:, 1]]
        best = (hs[:, 0] * r * r).sum(-1)  # the current pair's cost
        for m in range(NUM_CODEBOOKS):
            other = 1 - m
            d = partial_distances((xs - books[other][cs[:, other]])[:, None], books[m], hs)[:, 0]  # [n, 256]
            cand = d.topk(min(cfg.beam, CODEBOOK_SIZE), largest=False).indices  # [n, beam]
            r = xs[:, None] - books[m][cand]  # [n, beam, 8]: what the other codebook must still cover
            cost, pick = partial_distances(r, books[other], hs).min(-1)  # [n, beam]
            cost, k = (cost + (hs * r * r).sum(-1)).min(-1)
            better = cost < best
            rows = better.nonzero()[:, 0]
            cs[rows, m] = cand[rows, k[rows]]
            cs[rows, other] = pick[rows, k[rows]]
            best = torch.minimum(best, cost)
    return out


def lstsq_codebooks(x: torch.Tensor, w: torch.Tensor, codes: torch.Tensor, books: torch.Tensor) -> torch.Tensor:
    """Codebooks [2, 256, 8] minimising sum w (x - books[0][c0] - books[1][c1])^2 for groups x [N, 8] with weights
    w [N, 8]: per coordinate b, normal equations over the 512 codewords (a small ridge toward the current books
    keeps unused codewords where they are)."""
    n = 2 * CODEBOOK_SIZE
    i0, i1 = codes[:, 0], codes[:, 1] + CODEBOOK_SIZE
    new = torch.empty_like(books)
    for b in range(IN_GROUP):
        wb, xb = w[:, b].double(), x[:, b].double()
        cross = torch.bincount(i0 * n + i1, wb, n * n).reshape(n, n)
        a = torch.diag(torch.bincount(i0, wb, n) + torch.bincount(i1, wb, n)) + cross + cross.T
        rhs = torch.bincount(i0, wb * xb, n) + torch.bincount(i1, wb * xb, n)
        ridge = 1e-6 * float(a.diagonal().mean()) + 1e-30
        old = books[:, :, b].reshape(-1).double()
        sol = torch.linalg.solve(a + ridge * torch.eye(n, dtype=a.dtype), rhs + ridge * old)
        new[:, :, b] = sol.reshape(NUM_CODEBOOKS, CODEBOOK_SIZE).to(books.dtype)
    return new


def lstsq_scales(weight: torch.Tensor, h: torch.Tensor, codes: torch.Tensor, books: torch.Tensor) -> torch.Tensor:
    """Row scales [O] minimising sum_i h[i] (W[o, i] - s[o] q[o, i])^2, q the unscaled decoded rows."""
    q = (books[0][codes[:, 0]] + books[1][codes[:, 1]]).reshape(weight.shape)
    num, den = (h * weight * q).sum(1), (h * q * q).sum(1)
    return torch.where(den > 0, num / den.clamp_min(1e-30), weight.pow(2).mean(1).sqrt())


def output_error(weight: torch.Tensor, q: torch.Tensor, scales: torch.Tensor, gram: torch.Tensor) -> float:
    """sum_o e_o H e_o^T for e = W - diag(scales) q: the output error over the inputs whose X^T X is `gram`."""
    e = weight - scales[:, None] * q
    return float(((e @ gram) * e).sum())


def refine_in_gram(weight: torch.Tensor, gram: torch.Tensor, codes: torch.Tensor, books: torch.Tensor,
                   scales: torch.Tensor, sweeps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes [O, G, 2], scales [O]) lowering sum_o s_o^2 e_o H e_o^T (e_o = W_o / s_o - q_o, H = `gram`): per
    sweep, for each group g and codebook m, every row's best codeword given all its other codes (exact in H; the
    current code is a candidate, so the error never grows), then each row's least-squares scale in H.

    Choosing codeword k for (g, m) changes e_o by -d, d = C_m[k] - C_m[c]; the error changes by
    -2 (e_o H)_g . d + d^T H_gg d, which over k is -2 (r + H_gg u) . C_m[k] + C_m[k]^T H_gg C_m[k] with
    r = (e_o H)_g and u = C_m[c]: one [O, 8] x [8, 256] product per (g, m)."""
    rows, cols = weight.shape
    codes, scales = codes.clone(), scales.clone()
    w_h = weight @ gram  # the scales' numerator, the same every sweep

    def decoded() -> torch.Tensor:
        return (books[0][codes[..., 0]] + books[1][codes[..., 1]]).reshape(rows, cols)

    for _ in range(sweeps):
        e = weight / scales[:, None] - decoded()
        for g in range(cols // IN_GROUP):
            cols_g = slice(IN_GROUP * g, IN_GROUP * (g + 1))
            h_gg = gram[cols_g, cols_g]
            r = e @ gram[:, cols_g]  # [O, 8]
            for m in range(NUM_CODEBOOKS):
                u = books[m][codes[:, g, m]]
                cost = -2 * (r + u @ h_gg) @ books[m].T + ((books[m] @ h_gg) * books[m]).sum(-1)
                k = cost.argmin(-1)
                d = books[m][k] - u
                e[:, cols_g] -= d
                r -= d @ h_gg
                codes[:, g, m] = k
        q = decoded()
        num, den = (w_h * q).sum(1), ((q @ gram) * q).sum(1)
        scales = torch.where(den > 0, num / den.clamp_min(1e-30), scales)
    return codes, scales


def to_hf(codes: torch.Tensor, books: torch.Tensor, scales: torch.Tensor, rows: int) -> tuple[torch.Tensor, ...]:
    """(codes int8 [O, G, 2] as two's complement, codebooks [2, 256, 1, 8], scales [O, 1, 1, 1]): HF's layout."""
    hf_codes = codes.reshape(rows, -1, NUM_CODEBOOKS).to(torch.uint8).view(torch.int8)
    return hf_codes, books[:, :, None, :].contiguous(), scales.reshape(rows, 1, 1, 1).contiguous()


def fit_2x8(weight: torch.Tensor, stats: torch.Tensor | None = None,
            cfg: FitConfig = FitConfig()) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AQLM 2x8 (codes, codebooks, scales) in HF's layout for `weight` [O, I], minimising the output error over
    calibration inputs X: `stats` is X^T X [I, I] (steps 1-4), or only its diagonal [I] (steps 1-3), or None
    (plain weight MSE)."""
    w = weight.detach().float()
    rows, cols = w.shape
    if cols % IN_GROUP:
        raise ValueError(f"AQLM 2x8: in_features {cols} is not a multiple of {IN_GROUP}")
    gen = torch.Generator().manual_seed(cfg.seed)
    gram = stats.detach().float() if stats is not None and stats.dim() == 2 else None
    col_weight = gram.diagonal() if gram is not None else stats
    h = torch.ones(cols) if col_weight is None else col_weight.detach().float().clamp_min(0)
    h = h / h.mean().clamp_min(1e-30) + 1e-4  # every column counts a little: a dead input may wake up
    hg = h.reshape(1, -1, IN_GROUP).expand(rows, -1, -1).reshape(-1, IN_GROUP)  # per group element
    scales = w.pow(2).mean(1).sqrt().clamp_min(1e-12)
    x = (w / scales[:, None]).reshape(-1, IN_GROUP)
    books = torch.empty(NUM_CODEBOOKS, CODEBOOK_SIZE, IN_GROUP)
    books[0] = kmeans(x, hg, cfg, gen)
    c0 = _nearest(x, books[0], hg, cfg.chunk)
    books[1] = kmeans(x - books[0][c0], hg, cfg, gen)
    codes = torch.stack([c0, _nearest(x - books[0][c0], books[1], hg, cfg.chunk)], 1)

    def refit(books: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Least-squares codebooks (errors in W's units: each group's weight times its row's scale^2), then scales."""
        books = lstsq_codebooks(x, hg * scales.repeat_interleave(cols // IN_GROUP)[:, None] ** 2, codes, books)
        return books, lstsq_scales(w, h, codes, books)

    for _ in range(cfg.rounds):
        books, scales = refit(books)
        x = (w / scales[:, None]).reshape(-1, IN_GROUP)
        codes = beam_search(x, hg, books, codes, cfg)
    books, scales = refit(books)
    if gram is not None and cfg.gram_sweeps:
        gram = gram / gram.diagonal().mean().clamp_min(1e-30)
        gram = gram + cfg.damp * torch.eye(cols)
        codes, scales = refine_in_gram(w, gram, codes.reshape(rows, -1, NUM_CODEBOOKS), books, scales,
                                       cfg.gram_sweeps)
    return to_hf(codes, books, scales, rows)


def relative_error(weight: torch.Tensor, codes: torch.Tensor, codebooks: torch.Tensor, scales: torch.Tensor,
                   col_weight: torch.Tensor | None = None) -> float:
    """sum h (W - Wq)^2 / sum h W^2 (h = col_weight per input column, or 1)."""
    w = weight.float()
    h = torch.ones(w.shape[1]) if col_weight is None else col_weight.float()
    err = (w - dequantize_2x8(codes, codebooks, scales)).pow(2)
    return float((err * h).sum() / (w.pow(2) * h).sum())
