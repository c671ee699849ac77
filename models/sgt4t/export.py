"""Export an SGT to an ExecuTorch .pte (contract `sgt4t`): `forward` with in-graph noise, `mu_sigma`, and the
spec's constant methods. The spec's recipe by default: fp32, Linear layers 8da4w group 32, embedding unquantized.

    python -m models.sgt4t.export --sgt DIR --output sgt.pte [--quantize 8da4w|8da8w|fp32] [--max-seq-len 512]
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

from common.cli import ArgumentParser, run_cli
from common.contract import SGT4T
from common.errors import UserError

LINEAR_RECIPES = ("8da4w", "8da8w", "fp32")


def sgt_constants(sgt, max_seq_len: int, tokenizer=None) -> dict[str, Any]:
    """The spec's constant methods for an SGT (get_n_layers is the estimators' depth)."""
    from models.sgt4t.model import VERSION

    cfg, base = sgt.cfg, sgt.cfg.base
    bos = tokenizer.bos_id if tokenizer is not None and tokenizer.bos_id is not None else base.bos_id
    eos = tuple(dict.fromkeys(base.eos_ids + (tokenizer.eos_ids if tokenizer is not None else ())))
    return {
        "get_dtype": "float32", "get_bos_id": -1 if bos is None else bos, "get_eos_ids": list(eos),
        "get_head_dim": base.head_dim, "get_n_kv_heads": base.n_kv_heads, "get_n_layers": cfg.n_layers,
        "get_vocab_size": base.vocab_size, "get_max_batch_size": 1, "get_max_seq_len": max_seq_len,
        "use_sdpa_with_kv_cache": False, "enable_dynamic_shape": True, "get_hidden_size": base.dim,
        "get_sgt_name": cfg.name, "get_model_name": cfg.base_name, "get_version": VERSION,
    }


def export_sgt(sgt_dir: str, output: str, quantize: str | None = None, group_size: int = 32, max_seq_len: int = 512,
               backend: str = "xnnpack"):
    """Export the SGT saved in `sgt_dir` to `output`, its tokenizer files beside it; returns the ExportSummary.
    `quantize`: the Linear recipe (default 8da4w); a quantize_and_save directory exports as it was saved."""
    from common.export import bound_method, export_pte
    from common.io import check_output_file, staged_outputs
    from common.pipeline import check_export_dir
    from common.quant import preset, quantize_model
    from common.tokenizer import load_tokenizer
    from models.sgt4t.model import load, saved_recipe

    if not output.endswith(".pte"):
        raise UserError(f"--output {output}: expected a path ending in .pte")
    if quantize is not None and quantize not in LINEAR_RECIPES:
        raise UserError(f"--quantize {quantize!r}: expected one of {', '.join(LINEAR_RECIPES)}")
    if max_seq_len < 1:
        raise UserError(f"--max-seq-len {max_seq_len}: expected a positive number of tokens")
    check_output_file(output)
    check_export_dir(output)
    saved = saved_recipe(sgt_dir)
    if saved is not None and quantize is not None and preset(quantize, group_size).rules != saved.rules:
        raise UserError(f"{sgt_dir}: already quantized as {saved.name}; drop --quantize or pass the same recipe")
    sgt = load(sgt_dir, max_seq_len)
    tokenizer = load_tokenizer(sgt_dir) if (Path(sgt_dir) / "tokenizer.json").is_file() else None
    if saved is None:  # the embedding stays float: it is the table the transform adds noise to and the base reads
        quantize_model(sgt, preset(quantize or "8da4w", group_size))
    constants = sgt_constants(sgt, max_seq_len, tokenizer)
    out = Path(output)
    with staged_outputs(out.resolve().parent) as stage:
        summary = export_pte({"forward": sgt, "mu_sigma": bound_method(sgt, "mu_sigma")}, stage / out.name, SGT4T, constants, backend,
                             {"max_seq_len": max_seq_len})
        if tokenizer is not None:
            tokenizer.save(stage)
    return dataclasses.replace(summary, path=out)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m models.sgt4t.export", description=__doc__.splitlines()[0])
    p.add_argument("--sgt", required=True, help="an SGT directory (models.sgt4t.train or models.sgt4t.model.save)")
    p.add_argument("--quantize", help=f"Linear layers: {', '.join(LINEAR_RECIPES)} (default 8da4w; a "
                   "quantize_and_save directory: as saved); the embedding stays float")
    p.add_argument("--group-size", type=int, default=32, help="8da4w weight group size (32, 64, 128)")
    p.add_argument("--max-seq-len", type=int, default=512, help="longest input the program takes")
    p.add_argument("--backend", default="xnnpack", choices=("xnnpack", "portable"))
    p.add_argument("--output", required=True, help="output .pte path; tokenizer.json is written beside it")
    args = p.parse_args(argv)
    from common.export import format_summary
    from common.io import human_size
    from models.sgt4t.model import format_size_report, read_config, size_report

    t0 = time.perf_counter()
    summary = export_sgt(args.sgt, args.output, args.quantize, args.group_size, args.max_seq_len, args.backend)
    print(f"exported {args.sgt} ({args.quantize or 'default recipe'}, {args.backend}, max_seq_len {args.max_seq_len}) in "
          f"{time.perf_counter() - t0:.1f}s")
    print(format_summary(summary))
    print(format_size_report(size_report(read_config(args.sgt))))
    print(f"wrote {summary.path} — {human_size(summary.path)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
