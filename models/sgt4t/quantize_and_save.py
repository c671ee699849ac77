"""Quantize an SGT's Linear layers once and save it: the export recipe's weights (torchao tensors in safetensors, the
recipe in config.json) that `models.sgt4t.export` and the eager transform load as they are. The embedding table stays
float (../shared/specs/sgt4t.md: it is the table the noise is added to and the base model reads).

    python -m models.sgt4t.quantize_and_save --sgt DIR --output DIR [--quantize 8da4w|8da8w] [--group-size 32]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from common.cli import ArgumentParser, run_cli
from common.errors import UserError

RECIPES = ("8da4w", "8da8w")


def quantize_and_save(sgt_dir: str, output: str, quantize: str = "8da4w", group_size: int = 32) -> Path:
    """Write `output`/ (config.json with the recipe, model.safetensors, the tokenizer) for the SGT in `sgt_dir`."""
    from common.io import check_output_dir
    from common.quant import preset, quantize_model
    from common.tokenizer import load_tokenizer
    from models.sgt4t.model import CONFIG_FILE, load, save, saved_recipe

    if quantize not in RECIPES:
        raise UserError(f"--quantize {quantize!r}: expected one of {', '.join(RECIPES)}")
    if saved_recipe(sgt_dir) is not None:
        raise UserError(f"{sgt_dir}: already quantized ({saved_recipe(sgt_dir).name}); quantize the float SGT")
    check_output_dir(output, lambda p: (p / CONFIG_FILE).is_file())
    sgt = load(sgt_dir)
    recipe = preset(quantize, group_size)
    quantize_model(sgt, recipe)
    tokenizer = load_tokenizer(sgt_dir) if (Path(sgt_dir) / "tokenizer.json").is_file() else None
    return save(sgt, output, tokenizer, recipe)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m models.sgt4t.quantize_and_save", description=__doc__.splitlines()[0])
    p.add_argument("--sgt", required=True, help="a float SGT directory (models.sgt4t.train)")
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument("--quantize", default="8da4w", help=f"Linear layers: {', '.join(RECIPES)} (default 8da4w)")
    p.add_argument("--group-size", type=int, default=32, help="8da4w weight group size (32, 64, 128)")
    args = p.parse_args(argv)
    from common.io import human_size

    t0 = time.perf_counter()
    out = quantize_and_save(args.sgt, args.output, args.quantize, args.group_size)
    print(f"quantized {args.sgt} ({args.quantize}) in {time.perf_counter() - t0:.1f}s")
    print(f"wrote {out}/ — {human_size(out / 'model.safetensors')} of weights")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
