"""Peak memory of `quantize_and_save` on a synthetic Gemma 4 checkpoint of a few GB: it streams weight by weight, so
its peak RSS should follow the largest unit (one decoder layer, or the embedding table), not the model.

    python -m bench.quantize_memory [--layers 24] [--dim 2048] [--recipe default] [--workdir DIR]

Writes an HF checkpoint directory (bf16, one safetensors shard per layer, random weights, a small BPE tokenizer),
runs `models.gemma4_31b.quantize_and_save` on it in a fresh process, and prints that process's peak RSS (VmHWM) next
to its RSS after imports, the checkpoint's size, the fp32 model's size and its largest unit's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
GIB = 1 << 30


def synthetic_config(layers: int, dim: int, vocab: int) -> dict:
    """A Gemma 4 text config.json shaped like the 31B's (head sizes, K=V full layers, 5:1 pattern), scaled down."""
    from models.gemma4_31b.model import FAMILY, config_from_hf, hf_config_31b

    hf = hf_config_31b() | {
        "num_hidden_layers": layers, "hidden_size": dim, "intermediate_size": 4 * dim, "vocab_size": vocab,
        "num_attention_heads": dim // 256, "num_key_value_heads": max(dim // 512, 1), "num_global_key_value_heads": 1,
        "layer_types": ["full_attention" if (i + 1) % 6 == 0 or i == layers - 1 else "sliding_attention"
                        for i in range(layers)],
    }
    return FAMILY.to_hf(config_from_hf(hf))


def write_checkpoint(directory: Path, hf: dict, seed: int = 0) -> int:
    """Random bf16 weights for `hf` as a sharded HF checkpoint (one shard per layer); returns its bytes."""
    from safetensors.torch import save_file

    from models.gemma4_31b.model import FAMILY, config_from_hf
    from tests.checkpoints import save_tokenizer, train_bpe

    directory.mkdir(parents=True, exist_ok=True)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in FAMILY.build(config_from_hf(hf), 1).state_dict().items()
                  if k != "lm_head.weight"}  # tied
    shards: dict[str, dict[str, str]] = {}
    for key in shapes:
        shard = f"layer{key.split('.')[2]}" if key.startswith("model.layers.") else "rest"
        shards.setdefault(shard, {})[key] = f"model-{shard}.safetensors"
    gen = torch.Generator().manual_seed(seed)
    weight_map = {}
    for shard, keys in shards.items():
        tensors = {k: (torch.ones(shapes[k]) if k.endswith(("norm.weight", "layer_scalar")) else
                       torch.randn(shapes[k], generator=gen) * 0.02).to(torch.bfloat16) for k in keys}
        save_file(tensors, directory / f"model-{shard}.safetensors", metadata={"format": "pt"})
        weight_map |= keys
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (directory / "config.json").write_text(json.dumps(hf | {"torch_dtype": "bfloat16"}, indent=2))
    save_tokenizer(train_bpe(), directory, eos_token="<|endoftext|>")
    return sum(f.stat().st_size for f in directory.glob("*.safetensors"))


# Runs in the measured process: RSS after imports, then the CLI, then the peak.
_CHILD = """
import json, sys, time
def rss(field):
    for line in open('/proc/self/status'):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
import common.pipeline, models.gemma4_31b.model, torchao, executorch.extension.llm.export.load  # noqa
from common.cli import quantize_main, run_cli
from models.gemma4_31b.model import FAMILY
base = rss('VmRSS:')
t0 = time.perf_counter()
code = run_cli(quantize_main(FAMILY), sys.argv[1:])
print(json.dumps({"code": code, "base": base, "peak": rss('VmHWM:'), "seconds": time.perf_counter() - t0}))
"""


def measure(checkpoint: Path, output: Path, recipe: str) -> dict:
    """Run quantize_and_save in a fresh process; its RSS after imports, peak RSS and wall time."""
    proc = subprocess.run([sys.executable, "-c", _CHILD, "--checkpoint", str(checkpoint), "--quantize", recipe,
                           "--output", str(output)], cwd=ROOT, capture_output=True, text=True,
                          env=os.environ | {"PYTHONPATH": str(ROOT)})
    if proc.returncode != 0:
        raise SystemExit(f"error: quantize_and_save failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def model_sizes(hf: dict) -> tuple[int, int]:
    """(fp32 bytes of the whole model, fp32 bytes of its largest unit: a decoder layer or a top-level tensor)."""
    from common.pipeline import _units
    from models.gemma4_31b.model import FAMILY, config_from_hf

    with torch.device("meta"):
        model = FAMILY.build(config_from_hf(hf), 1)
    state = model.state_dict()
    units = {u: sum(t.numel() * 4 for k, t in state.items() if k.startswith(u + ".")) for u in _units(model, True)}
    return sum(units.values()) - units["lm_head"], max(units.values())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.quantize_memory", description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=24)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--recipe", default="default", help="a --quantize value of models.gemma4_31b.quantize_and_save")
    p.add_argument("--workdir", help="where to write the checkpoint and the output (default: a temp dir, removed)")
    args = p.parse_args(argv)
    hf = synthetic_config(args.layers, args.dim, args.vocab)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        t0 = time.perf_counter()
        size = write_checkpoint(Path(tmp) / "ckpt", hf)
        print(f"wrote a synthetic Gemma 4 checkpoint: {size / GIB:.2f} GiB bf16 in {time.perf_counter() - t0:.0f}s")
        r = measure(Path(tmp) / "ckpt", Path(tmp) / "out", args.recipe)
        model, unit = model_sizes(hf)
        print(f"quantize_and_save --quantize {args.recipe}: {r['seconds']:.0f}s, peak RSS {r['peak'] / GIB:.2f} GiB "
              f"({(r['peak'] - r['base']) / GIB:.2f} GiB above the {r['base'] / GIB:.2f} GiB after imports); "
              f"model fp32 {model / GIB:.2f} GiB, largest unit fp32 {unit / GIB:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
