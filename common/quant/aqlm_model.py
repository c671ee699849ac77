"""AQLM 2x8 for a whole causal LM (../shared/specs/aqlm.md): calibration statistics, the layer-by-layer fit
(resumable), end-to-end tuning, and Hugging Face's `quantization_config` both ways.

    stats = gram_matrices(model, ids, names)     # X^T X of each linear's inputs over calibration text
    fit_layers(model, names, stats, cache=dir)   # common.quant.aqlm_fit per layer; each result kept in `dir`
    tune(model, teacher, ids)                    # codebooks, scales and norms against the float model's logits

Calibration statistics (X^T X per linear) come from the float model in one pass (every layer sees float inputs).
Tuning keeps the codes frozen and learns the codebooks, the row scales and the RMSNorm weights by KL(teacher || student) on
windows of the calibration text.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from common.errors import UserError
from common.quant import Recipe, Rule, replace_module
from common.quant.aqlm import CODEBOOK_SIZE, IN_GROUP, NUM_CODEBOOKS, AqlmLinear
from common.quant.aqlm_fit import FitConfig, fit_2x8

HF_SCHEME = {"quant_method": "aqlm", "nbits_per_codebook": 8, "num_codebooks": NUM_CODEBOOKS, "out_group_size": 1,
             "in_group_size": IN_GROUP}


@dataclass(frozen=True)
class TuneConfig:
    steps: int = 200
    minutes: float | None = None  # stop after this much wall time
    seq_len: int = 128
    lr: float = 1e-4
    seed: int = 0


def _windows(ids: list[int], seq_len: int) -> list[torch.Tensor]:
    return [torch.tensor([ids[i:i + seq_len]]) for i in range(0, len(ids) - seq_len + 1, seq_len)]


def gram_matrices(model: nn.Module, ids: list[int], names: Iterable[str], seq_len: int = 256,
                  progress: bool = True) -> dict[str, torch.Tensor]:
    """X^T X [in_features, in_features] (float64) of the inputs X of each linear `names`, over `ids` in windows of
    `seq_len`. Every position counts, the attention sink (each window's first) included: leaving it out looked
    better on one block and destroyed the whole model (perplexity 2168 against 85 before tuning)."""
    from tqdm import tqdm

    sums, hooks = {}, []
    for name in names:
        mod = model.get_submodule(name)
        sums[name] = torch.zeros(mod.in_features, mod.in_features, dtype=torch.float64)

        def hook(_m, args, name=name):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            sums[name] += x.T @ x

        hooks.append(mod.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            for window in tqdm(_windows(ids, seq_len), desc="calibrate", unit="window", disable=not progress):
                model.init_buffers()
                model(window, torch.tensor([0]))
    finally:
        for h in hooks:
            h.remove()
        model.init_buffers()
    return sums


def fit_layers(model: nn.Module, names: list[str], stats: dict[str, torch.Tensor], cfg: FitConfig | None = None,
               cache: Path | None = None, progress: bool = True) -> None:
    """Replace each Linear `names` by its AqlmLinear fit to its inputs' `stats` (X^T X, or its diagonal; see
    aqlm_fit.fit_2x8). With `cache`, each fit is
    written there as it finishes and read back on a rerun: an interrupted run resumes at the next layer."""
    from safetensors.torch import load_file, save_file
    from tqdm import tqdm

    for name in tqdm(names, desc="aqlm fit", unit="linear", disable=not progress):
        mod = model.get_submodule(name)
        file = cache / f"{name}.safetensors" if cache else None
        if file is not None and file.exists():
            t = load_file(file)
            codes, books, scales = t["codes"], t["codebooks"], t["scales"]
        else:
            codes, books, scales = fit_2x8(mod.weight, stats.get(name), cfg or FitConfig())
            if file is not None:
                tmp = file.with_suffix(".tmp")
                save_file({"codes": codes, "codebooks": books, "scales": scales}, tmp)
                tmp.replace(file)
        layer = AqlmLinear(mod.in_features, mod.out_features, bias=mod.bias is not None)
        layer.codes.copy_(codes), layer.codebooks.copy_(books), layer.scales.copy_(scales)
        if mod.bias is not None:
            layer.bias.copy_(mod.bias.detach())
        replace_module(model, name, layer)


def open_cache(path: Path, key: dict[str, Any]) -> Path:
    """The per-layer fit cache at `path`, emptied first when it was made for another `key` (checkpoint, fit
    settings, calibration); a `path` holding anything else is refused, never deleted."""
    import shutil

    stamp = path / "key.json"
    text = json.dumps(key, sort_keys=True)
    if path.exists():
        ours = path.is_dir() and stamp.is_file() and all(
            p.name == "key.json" or p.suffix in (".safetensors", ".tmp") for p in path.iterdir())
        if not ours:  # never delete what a fit did not write
            raise UserError(f"{path}: exists and is not an AQLM fit cache (expected key.json and *.safetensors); "
                            "move it away or choose another --output")
        if stamp.read_text() != text:
            shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    stamp.write_text(text)
    return path


def cache_key(checkpoint: str, fit: FitConfig, n_tokens: int, names: list[str]) -> dict[str, Any]:
    p = Path(checkpoint)
    return {"checkpoint": str(p.resolve()), "mtime": p.stat().st_mtime, "fit": asdict(fit), "tokens": n_tokens,
            "names": names}


def tunable(model: nn.Module) -> list[torch.Tensor]:
    """What end-to-end tuning learns: every AqlmLinear's codebooks and scales, and the RMSNorm weights."""
    from common.nn.norm import RMSNorm

    out = []
    for mod in model.modules():
        if isinstance(mod, AqlmLinear):
            out += [mod.codebooks, mod.scales]
        elif isinstance(mod, RMSNorm) and mod.weight is not None:
            out.append(mod.weight)
    return out


def tune(student: nn.Module, teacher: nn.Module, ids: list[int], cfg: TuneConfig = TuneConfig(),
         progress: bool = True) -> list[float]:
    """Tune `student` in place (codes frozen) toward `teacher`'s next-token distributions on windows of `ids`;
    returns each step's KL (nats per token)."""
    from tqdm import tqdm

    windows = _windows(ids, cfg.seq_len)
    if not windows:
        raise UserError(f"calibration text: {len(ids)} tokens, fewer than one tuning window of {cfg.seq_len}")
    rng = random.Random(cfg.seed)
    student.requires_grad_(False)
    teacher.requires_grad_(False)
    params = tunable(student)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=cfg.lr)
    history, t0 = [], time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="aqlm tune", unit="step", disable=not progress)
    try:
        for _ in bar:
            window = windows[rng.randrange(len(windows))]
            with torch.no_grad():
                teacher.init_buffers()
                target = teacher(window, torch.tensor([0])).float().log_softmax(-1)[0]
            student.init_buffers()
            logp = student(window, torch.tensor([0])).float().log_softmax(-1)[0]
            loss = F.kl_div(logp, target, log_target=True, reduction="batchmean")
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append(loss.item())
            bar.set_postfix(kl=f"{history[-1]:.3f}")
            if cfg.minutes is not None and time.perf_counter() - t0 > cfg.minutes * 60:
                break
    finally:
        for p in params:
            p.requires_grad_(False)
        student.init_buffers()
        teacher.init_buffers()
    return history


def hf_config(model: nn.Module) -> dict[str, Any]:
    """HF's `quantization_config` for a model holding AqlmLinears: every other weight listed as not quantized."""
    rest = [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Embedding))]
    return HF_SCHEME | {"linear_weights_not_to_quantize": rest}


def hf_recipe(hf: dict[str, Any], source: str) -> Recipe | None:
    """The recipe an HF checkpoint's `quantization_config` stands for (AQLM 2x8 only), or None without one."""
    qc = hf.get("quantization_config")
    if qc is None:
        return None
    where = f"{source}: quantization_config"
    if not isinstance(qc, dict) or qc.get("quant_method") != "aqlm":
        method = qc.get("quant_method") if isinstance(qc, dict) else qc
        raise UserError(f"{where}: quant_method {method!r}; the zoo loads 'aqlm' (2x8) checkpoints, or float ones")
    got = {k: qc.get(k) for k in HF_SCHEME}
    if got != HF_SCHEME:
        raise UserError(f"{where}: AQLM {got['num_codebooks']}x{got['nbits_per_codebook']} with in_group_size "
                        f"{got['in_group_size']}, out_group_size {got['out_group_size']}; the zoo's kernel runs 2x8 "
                        f"with in_group_size {IN_GROUP}, out_group_size 1")
    keep = qc.get("linear_weights_not_to_quantize") or []
    if not isinstance(keep, list) or not all(isinstance(k, str) for k in keep):
        raise UserError(f"{where}: linear_weights_not_to_quantize must be a list of parameter names")
    # parameter names ('lm_head.weight'): the module is the name without its suffix (transformers 5.23 compares
    # the full name with module names, and so quantizes an lm_head the list keeps)
    rules = [Rule(re.escape(k.removesuffix(".weight")), "fp32") for k in keep]
    return Recipe("aqlm-2x8", (*rules, Rule(".*", "aqlm")), where)


def check_tensors(model: nn.Module, source: str) -> None:
    """Each loaded AqlmLinear holds int8 codes (an integer file type within [-128, 255] is converted) and finite
    codebooks and scales; else one error naming the tensor."""
    for name, mod in model.named_modules():
        if not isinstance(mod, AqlmLinear):
            continue
        codes = mod.codes
        if codes.dtype != torch.int8:
            if codes.is_floating_point() or codes.dtype == torch.bool:
                raise UserError(f"{source}: {name}.codes is {codes.dtype}; expected int8 codes")
            lo, hi = int(codes.min()), int(codes.max())
            if lo < -128 or hi >= CODEBOOK_SIZE:
                raise UserError(f"{source}: {name}.codes holds {lo}..{hi}, out of range for 256-entry codebooks "
                                "(expected -128..255)")
            mod.codes = codes.to(torch.int16).to(torch.uint8).view(torch.int8)
        for t in ("codebooks", "scales"):
            if not torch.isfinite(getattr(mod, t)).all():
                raise UserError(f"{source}: {name}.{t} holds non-finite values")
