"""The three CLIs every model package exposes (quantize_and_save, export, inference), parameterized by ModelSpec."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from common.errors import UserError, one_line
from common.family import Family

DEFAULT_PROMPT = "The capital of France is"


def quiet_imports() -> None:
    """Hide import-time noise from torchao/torch (missing CUDA kernels, deprecations) in CLI output."""
    import torch  # noqa: F401  first: importing torch resets its loggers' levels

    warnings.filterwarnings("ignore")
    for name in ("torchao", "torch", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as the usage line, then one `error:` line (exit 2), as every other error."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(2, f"error: {message}\n")


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a CLI body: a UserError becomes one line on stderr and exit status 2."""
    quiet_imports()
    try:
        return main(argv)
    except UserError as e:
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a permission denied: name the file, no traceback (outputs are atomic)
        print(f"error: {one_line(f'{e.filename}: {e.strerror}' if e.filename else str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _add_recipe_args(p: argparse.ArgumentParser, default: str, family: Family) -> None:
    from common.quant import GROUP_SIZES, PRESETS

    own = "".join(f", {name} = {fn.__doc__.strip().rstrip('.')}" for name, fn in family.recipes.items())
    p.add_argument("--quantize", choices=PRESETS + tuple(family.recipes), default=None,
                   help=f"preset (default: gguf for a GGUF checkpoint, else {default}): gguf = every tensor as the file "
                        "gives it (4-bit blocks exactly), 8da4w = int8 dynamic activations + int4 grouped weights, "
                        f"8da8w = int8 per-channel weights, aqlm-2x8 = AQLM 2-bit linears (fit by quantize_and_save on "
                        f"calibration text; export takes its directory), fp32 = none{own}")
    p.add_argument("--group-size", type=int, default=32, choices=GROUP_SIZES["8da4w"], help="8da4w weight group size")
    p.add_argument("--embedding-bits", type=int, choices=(4, 8), default=None,
                   help="also quantize the embedding table (quantized_decomposed embedding ops)")
    p.add_argument("--recipe", metavar="FILE",
                   help="your own quantization rules, JSON or YAML (README: Quantization recipes); "
                        "replaces --quantize/--group-size/--embedding-bits")
    p.set_defaults(default_preset=default)


def _recipe(args, checkpoint: str | None = None, family: Family | None = None):
    """The Recipe the flags name: a --recipe file, a recipe of the family's own (rules that depend on the model's
    config: read from `checkpoint`), or the --quantize preset (default: `gguf`, as the file says, for a GGUF
    checkpoint; the family's default otherwise)."""
    from common.quant import PRESETS, load_recipe, preset

    if args.recipe and not os.path.exists(args.recipe) and args.recipe in PRESETS:
        args.quantize, args.recipe = args.recipe, None  # `--recipe 8da4w`: the spelling before recipe files
    if args.recipe:
        if args.quantize or args.embedding_bits or args.group_size != 32:
            raise UserError("--recipe FILE replaces --quantize, --group-size and --embedding-bits; pass one or the other")
        return load_recipe(args.recipe)
    from common.pipeline import is_published_quantized, is_quantized_dir

    if args.quantize is None and checkpoint and (is_quantized_dir(Path(checkpoint))
                                                 or is_published_quantized(Path(checkpoint))):
        return preset("fp32")  # a quantize_and_save directory or an HF AQLM checkpoint: as it was saved
    if family is not None and args.quantize in family.recipes:
        if args.embedding_bits or args.group_size != 32:
            raise UserError(f"--quantize {args.quantize} sets its own group sizes and embedding; drop --group-size "
                            "and --embedding-bits")
        from common.pipeline import open_checkpoint, read_config

        return family.recipes[args.quantize](read_config(family, open_checkpoint(family, checkpoint)))
    default = "gguf" if checkpoint and str(checkpoint).endswith(".gguf") else args.default_preset
    return preset(args.quantize or default, args.group_size, args.embedding_bits)


MAX_CONTEXT = 1 << 20  # KV-cache positions: beyond this an export is a typo, not a model


def check_limits(args) -> None:
    """--max-seq-len / --max-context-len in range, before any work."""
    for flag in ("max_context_len", "max_seq_len"):
        value = getattr(args, flag, None)
        if value is not None and not 1 <= value <= MAX_CONTEXT:
            raise UserError(f"--{flag.replace('_', '-')} {value}: expected 1..{MAX_CONTEXT}")


def check_inference_args(args) -> None:
    """Sampling and generation flags in range, and flags that need --chat given with it."""
    import math

    check_limits(args)
    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens {args.max_new_tokens}: expected at least 1")
    if not math.isfinite(args.temperature) or args.temperature < 0:
        raise UserError(f"--temperature {args.temperature}: expected a finite value >= 0 (0 = greedy)")
    if not (0 < args.top_p <= 1):
        raise UserError(f"--top-p {args.top_p}: expected a value in (0, 1]")
    if args.top_k < 0:
        raise UserError(f"--top-k {args.top_k}: expected >= 0 (0 = off)")
    if not 0 <= args.min_p <= 1:
        raise UserError(f"--min-p {args.min_p}: expected a value in [0, 1] (0 = off)")
    if not (math.isfinite(args.repetition_penalty) and args.repetition_penalty > 0):
        raise UserError(f"--repetition-penalty {args.repetition_penalty}: expected a finite value > 0 (1 = off)")
    if not args.chat and (args.system is not None or args.enable_thinking is not None):
        raise UserError("--system and --enable-thinking need --chat")
    if args.cpu_threads is not None and args.cpu_threads < 0:
        raise UserError(f"--cpu-threads {args.cpu_threads}: expected at least 0 (0 = the machine's default)")
    if args.etdump and not args.pte:
        raise UserError("--etdump profiles a .pte: pass --pte")


def _checkpoint_help(family: Family) -> str:
    bundled = f" (default: {family.default_checkpoint_name})" if family.default_checkpoint_name else ""
    return f"HF checkpoint dir, GGUF file, or quantize_and_save dir{bundled}"


def quantize_main(family: Family) -> Callable[[list[str] | None], int]:
    def main(argv: list[str] | None = None) -> int:
        p = ArgumentParser(prog=f"python -m models.{family.name}.quantize_and_save",
                                    description=f"Quantize a {family.title} checkpoint with torchao and save it as safetensors.")
        p.add_argument("--checkpoint", help=_checkpoint_help(family))
        _add_recipe_args(p, "8da4w", family)
        p.add_argument("--output", required=True, help="output directory")
        g = p.add_argument_group("AQLM (--quantize aqlm-2x8, or a recipe with scheme aqlm)")
        g.add_argument("--calibration-tokens", type=int, default=None,
                       help="tokens of calibration text (common/calibration.py) for the fit and the tuning "
                            "(default: all of it, 18,102 for SmolLM2's tokenizer)")
        g.add_argument("--fit-rounds", type=int, default=2, help="codebook/scale/code rounds per linear")
        g.add_argument("--tune-steps", type=int, default=200,
                       help="end-to-end tuning steps (codebooks, scales, norms against the float model; 0 = none)")
        g.add_argument("--tune-minutes", type=float, default=None, help="stop tuning after this much wall time")
        args = p.parse_args(argv)
        from common.io import human_size
        from common.pipeline import quantize_and_save, resolve_checkpoint

        t0 = time.perf_counter()
        ckpt = resolve_checkpoint(family, args.checkpoint)
        recipe = _recipe(args, ckpt, family)
        out = quantize_and_save(family, ckpt, args.output, recipe, calibration=_calibration(args, recipe))
        print(f"quantized {ckpt} with {recipe.name} in {time.perf_counter() - t0:.1f}s")
        print(f"wrote {out}/ (config.json, model.safetensors, tokenizer) — {human_size(out)}")
        return 0

    return main


def _calibration(args, recipe):
    """The AQLM flags as a pipeline.Calibration; refused (one line) for a recipe that fits nothing."""
    from common.pipeline import Calibration
    from common.quant.aqlm_fit import FitConfig
    from common.quant.aqlm_model import TuneConfig

    flags = {"--calibration-tokens": args.calibration_tokens is not None, "--fit-rounds": args.fit_rounds != 2,
             "--tune-steps": args.tune_steps != 200, "--tune-minutes": args.tune_minutes is not None}
    if not recipe.needs_calibration and any(flags.values()):
        raise UserError(f"{', '.join(f for f, given in flags.items() if given)}: only for AQLM (--quantize aqlm-2x8)")
    for flag, value, lo in (("--calibration-tokens", args.calibration_tokens, 128), ("--fit-rounds", args.fit_rounds, 0),
                            ("--tune-steps", args.tune_steps, 0)):
        if value is not None and value < lo:
            raise UserError(f"{flag} {value}: expected at least {lo}")
    if args.tune_minutes is not None and not args.tune_minutes > 0:
        raise UserError(f"--tune-minutes {args.tune_minutes}: expected a positive number")
    return Calibration(args.calibration_tokens, FitConfig(rounds=args.fit_rounds),
                       TuneConfig(steps=args.tune_steps, minutes=args.tune_minutes))


def export_main(family: Family) -> Callable[[list[str] | None], int]:
    def main(argv: list[str] | None = None) -> int:
        p = ArgumentParser(prog=f"python -m models.{family.name}.export",
                                    description=f"Export {family.title} to an ExecuTorch .pte (zoo contract).")
        p.add_argument("--checkpoint", help=_checkpoint_help(family))
        _add_recipe_args(p, "8da4w", family)
        p.add_argument("--backend", default="xnnpack", choices=("xnnpack", "portable"))
        p.add_argument("--max-seq-len", type=int, default=128, help="most tokens per forward call (prefill chunk)")
        p.add_argument("--max-context-len", type=int, default=2048, help="KV-cache length")
        p.add_argument("--custom-ops", action=argparse.BooleanOptionalAction, default=True,
                       help="attention with ExecuTorch's llama::update_cache and the zoo's custom_sdpa kernel (faster; "
                            "the Python runtime and the zoo's C++ runners both run it) instead of plain SDPA")
        p.add_argument("--tokenizer", help="tokenizer source if the checkpoint has none (HF dir, tokenizer.json, GGUF)")
        p.add_argument("--embeddings-input", action="store_true",
                       help="add a forward_embeddings method: prefill from input embeddings [1, S, hidden] (e.g. a "
                            "Stained Glass Transform's, models/sgt4t), sharing forward's KV cache")
        p.add_argument("--local-global", type=window_sizes, metavar="W[,W...]",
                       help="per-layer sliding windows, repeated over the layers (0 = full attention), e.g. 0,512,512,"
                            "512 (export_llm's local_global_attention); the sliding layers keep a ring KV cache")
        p.add_argument("--attention-sink", type=sink_window, metavar="SINK,WINDOW",
                       help="StreamingLLM's attention sink (export_llm's use_attention_sink): generation runs on past "
                            "the context, attending to the first SINK positions and the last WINDOW; the context is "
                            "then SINK + WINDOW (it replaces --max-context-len)")
        p.add_argument("--quantize-kv-cache", action="store_true",
                       help="int8 KV cache, asymmetric per position and head (export_llm's quantize_kv_cache): about "
                            "a quarter of the fp32 cache's bytes")
        p.add_argument("--kv-cache-dtype", default="fp32", choices=("fp32", "fp16"),
                       help="what the KV cache stores: fp16 halves the bytes each decoded token reads at depth (and "
                            "the cache's memory); attention still computes in fp32 (llama.cpp's default cache is f16)")
        p.add_argument("--aqlm-kernel", default="exact", choices=("exact", "lut8"),
                       help="an AQLM checkpoint's kernel: exact = fp32 (dequantize + multiply-add); lut8 = decode on "
                            "lookup tables rounded to int8 and prefill in bf16 (zoo::code2x8_lut8_matmat: faster, "
                            "with rounding noise of the kind 8da4w's int8 activations add)")
        p.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"),
                       help="what the program computes in (export_llm's dtype_override); bf16 needs --backend portable "
                            "--no-custom-ops --quantize fp32 (XNNPACK, the custom ops and the quantized ops are "
                            "fp32), and halves the weights; inputs and logits stay fp32")
        p.add_argument("--output", required=True, help="output .pte path; tokenizer.json is written beside it")
        p.add_argument("--config", metavar="FILE.yaml",
                       help="these flags as a YAML file in export_llm's LlmConfig sections and key names (README: "
                            "Export config files); flags given here override it")
        g = p.add_argument_group("debugging the export")
        g.add_argument("--verbose", action="store_true",
                       help="print the full delegation table: each operator, how many delegated, how many not")
        g.add_argument("--etrecord", nargs="?", const="", metavar="FILE",
                       help="write an ETRecord for executorch.devtools.Inspector (default FILE: etrecord.bin beside "
                            "the .pte)")
        g.add_argument("--profile-memory", action="store_true",
                       help="write the memory plan as a chrome trace (FILE.memory.json beside the .pte)")
        g.add_argument("--profile-export", action="store_true",
                       help="time each export stage, and print the functions that took longest (cProfile)")
        pre = argparse.ArgumentParser(add_help=False)  # --config first: its flags go before the command line's
        pre.add_argument("--config")
        config = pre.parse_known_args(argv)[0].config
        if config:
            from common.export_config import to_argv

            argv = to_argv(config) + list(sys.argv[1:] if argv is None else argv)
        args = p.parse_args(argv)
        check_limits(args)
        if not args.profile_export:
            return _export(family, args)
        import cProfile
        import pstats

        profile = cProfile.Profile()
        status = profile.runcall(_export, family, args)
        print("slowest functions (cumulative seconds):")
        pstats.Stats(profile, stream=sys.stdout).sort_stats("cumulative").print_stats(15)
        return status

    return main


def _ints(text: str) -> tuple[int, ...] | None:
    """'1,2,3' as ints; None when a part is not one."""
    try:
        return tuple(int(w) for w in text.split(","))
    except ValueError:
        return None


def window_sizes(text: str) -> tuple[int, ...]:
    """--local-global's 'W,W,...' (argparse type: a bad value is its one-line usage error)."""
    sizes = _ints(text)
    if sizes is None:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated window sizes, e.g. 0,512")
    if min(sizes) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: window sizes must be >= 0 (0 = full attention)")
    return sizes


def sink_window(text: str) -> tuple[int, int]:
    """--attention-sink's 'SINK,WINDOW' (export_llm's third value, its eviction batch, is accepted and unused: the
    zoo's ring evicts one position at a time)."""
    sizes = _ints(text) or ()
    if len(sizes) not in (2, 3) or min(sizes[:2]) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected SINK,WINDOW, both at least 1, e.g. 4,2044")
    return sizes[0], sizes[1]


def _export(family: Family, args) -> int:
    from common.export import ExportDebug, format_summary
    from common.io import human_bytes, human_size, peak_rss_mib
    from common.nn.attention import attention_kernel
    from common.pipeline import export_model, resolve_checkpoint

    t0 = time.perf_counter()
    ckpt = resolve_checkpoint(family, args.checkpoint)
    recipe = _recipe(args, ckpt, family)
    out_dir = os.path.dirname(os.path.abspath(args.output))
    stem = os.path.splitext(os.path.basename(args.output))[0]
    debug = ExportDebug(
        etrecord=None if args.etrecord is None else args.etrecord or os.path.join(out_dir, "etrecord.bin"),
        memory_trace=os.path.join(out_dir, f"{stem}.memory.json") if args.profile_memory else None)
    summary, _ = export_model(family, ckpt, args.output, recipe, args.backend, args.max_seq_len,
                              args.max_context_len, attention_kernel(args.custom_ops), args.tokenizer,
                              args.embeddings_input, debug, args.local_global, args.attention_sink,
                              args.quantize_kv_cache, args.dtype, args.kv_cache_dtype, args.aqlm_kernel)
    context = sum(args.attention_sink) if args.attention_sink else args.max_context_len
    sink = f", attention sink {args.attention_sink[0]} + window {args.attention_sink[1]}" if args.attention_sink else ""
    sink += f", {args.kv_cache_dtype} KV cache" if args.kv_cache_dtype != "fp32" else ""
    sink += f", AQLM kernel {args.aqlm_kernel}" if args.aqlm_kernel != "exact" else ""
    print(f"exported {ckpt} ({recipe.name}, {args.dtype}, {args.backend}, max_seq_len {args.max_seq_len}, "
          f"context {context}{sink}) in {time.perf_counter() - t0:.1f}s, peak RSS {peak_rss_mib():.0f} MiB")
    print(format_summary(summary, table=args.verbose, stages=args.profile_export))
    linears = summary.block_linears
    print(f"block linear weights {human_bytes(linears.bytes)} ({linears.bytes} bytes, "
          f"{linears.bits:.2f} bits a weight)")
    print(f"wrote {summary.path} — {human_size(summary.path)}")
    print(f"wrote {os.path.join(out_dir, 'tokenizer.json')}")
    for path in (debug.etrecord, debug.memory_trace):
        if path:
            print(f"wrote {path} — {human_size(path)}")
    return 0


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    """The sampling flags (the C++ runners take the same: runners/src/cli.cpp)."""
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    p.add_argument("--top-k", type=int, default=0, help="keep the K likeliest tokens (0 = off)")
    p.add_argument("--min-p", type=float, default=0.0,
                   help="keep tokens at least this fraction as likely as the likeliest (0 = off)")
    p.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="divide a positive logit (multiply a negative one) of each token already in the context by "
                        "this, once per distinct token (1 = off)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (the C++ runner picks the same tokens)")


def sampler_config(args):
    """The sampling flags as a SamplerConfig."""
    from common.sampler import SamplerConfig

    return SamplerConfig(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                         min_p=args.min_p, repetition_penalty=args.repetition_penalty)


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    """Threads, warm-up and measurement flags (the C++ runners take the same)."""
    p.add_argument("--cpu-threads", type=int, default=None, metavar="N",
                   help="threads for ExecuTorch's thread pool, and torch's with --checkpoint (a .pte leaves torch one: "
                        "common.runtime.leave_cores_to_executorch) (default, or 0: the machine's)")
    p.add_argument("--warmup", action="store_true", help="run the prompt once, untimed, before the timed run")
    p.add_argument("--stats-json", metavar="FILE",
                   help="write load time, time to first token, prefill and decode tok/s, peak RSS as JSON")
    p.add_argument("--etdump", metavar="FILE", help="write an ETDump (per-operator profile) of the run (.pte only)")


def set_cpu_threads(n: int | None) -> None:
    """--cpu-threads: ExecuTorch's thread pool and torch's (0 or None: as they are)."""
    if not n:
        return
    import torch
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

    torch.set_num_threads(n)
    _unsafe_reset_threadpool(n)


def turn_stats(gen, reused: int = 0) -> dict:
    return {"prompt_tokens": gen.prompt_len, "reused_tokens": reused, "first_token_ms": gen.first_token_s * 1000,
            "prefill_tok_s": gen.prefill_tps, "generated_tokens": len(gen.tokens), "decode_tok_s": gen.decode_tps,
            "interrupted": gen.interrupted}


def write_stats(path: str, source: str, load_s: float, turns: list[dict]) -> None:
    """--stats-json: the run's figures, written atomically."""
    import json

    from common.io import atomic_path, peak_rss_mib

    stats = {"model": source, "load_ms": load_s * 1000, "peak_rss_mib": peak_rss_mib(), "turns": turns}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(stats, indent=2) + "\n")


def inference_main(family: Family) -> Callable[[list[str] | None], int]:
    def main(argv: list[str] | None = None) -> int:
        p = ArgumentParser(prog=f"python -m models.{family.name}.inference",
                                    description=f"Generate text with {family.title} from a checkpoint (eager) or a .pte.")
        src = p.add_mutually_exclusive_group()
        src.add_argument("--checkpoint", help=_checkpoint_help(family) + "; runs the eager model")
        src.add_argument("--pte", help="exported .pte (tokenizer.json is read from beside it)")
        p.add_argument("--tokenizer", help="tokenizer.json / HF dir / GGUF (default: beside the .pte or the checkpoint)")
        prompt = p.add_mutually_exclusive_group()
        prompt.add_argument("--prompt", help=f"the prompt (default: {DEFAULT_PROMPT!r})")
        prompt.add_argument("--prompt-file", metavar="FILE", help="read the prompt from a UTF-8 text file")
        prompt.add_argument("--interactive", action="store_true",
                            help="chat: one user turn per line from stdin, the KV cache kept between turns (only the "
                                 "new turn is prefilled); Ctrl-C ends a reply, end of input (Ctrl-D) the chat")
        p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
        p.add_argument("--system", help="system message (with --chat or --interactive)")
        p.add_argument("--enable-thinking", action=argparse.BooleanOptionalAction, default=None,
                       help="passed to chat templates that support it (Qwen3)")
        p.add_argument("--max-new-tokens", type=int, default=None, help="default 64, or 256 per reply (--interactive)")
        p.add_argument("--max-context-len", type=int, default=2048, help="eager KV-cache length (--checkpoint)")
        add_sampling_args(p)
        add_runtime_args(p)
        args = p.parse_args(argv)
        if args.max_new_tokens is None:
            args.max_new_tokens = 256 if args.interactive else 64
        args.chat = args.chat or args.interactive
        check_inference_args(args)
        set_cpu_threads(args.cpu_threads)
        from common.runtime import generate
        from common.sampler import Sampler

        if args.interactive:
            return interactive(family, args)
        from common.io import read_text_arg

        args.prompt = read_text_arg(args.prompt_file, "--prompt-file") if args.prompt_file else args.prompt or DEFAULT_PROMPT
        model, tokenizer, source = open_model(family, args)
        ids = encode_prompt(tokenizer, args.prompt, args.chat, args.system, args.enable_thinking)
        if args.warmup:
            generate(model, ids, Sampler(), 2, source=source)
        sampler = Sampler(sampler_config(args))
        emit, flush = text_printer(tokenizer, model.eos_ids)
        if not args.chat:
            print(args.prompt, end="", flush=True)
        gen = generate(model, ids, sampler, args.max_new_tokens, emit, source=source)
        print(flush())
        print(f"\n[{source}] load {model.load_s * 1000:.0f} ms | prefill {gen.prompt_len} tok at {gen.prefill_tps:.1f} tok/s"
              f" | decode {len(gen.tokens)} tok at {gen.decode_tps:.1f} tok/s", file=sys.stderr)
        finish(model, args, source, [turn_stats(gen)])
        return 0

    return main


def text_printer(tokenizer, eos_ids) -> tuple[Callable[[int], None], Callable[[], str]]:
    """(print a generated token's complete characters as they come (stop tokens silent), what is left at the end)."""
    from common.tokenizer import StreamDecoder

    stream = StreamDecoder(tokenizer)

    def emit(token: int) -> None:
        if token not in eos_ids:
            print(stream.push(token), end="", flush=True)

    return emit, stream.flush


def finish(model, args, source: str, turns: list[dict]) -> None:
    """--stats-json and --etdump, after the run."""
    if args.stats_json:
        write_stats(args.stats_json, source, model.load_s, turns)
        print(f"wrote {args.stats_json}", file=sys.stderr)
    if args.etdump:
        from common.io import atomic_path

        with atomic_path(args.etdump) as tmp, atomic_path(args.etdump + ".debug") as debug:
            model.write_etdump(str(tmp), str(debug))
        print(f"wrote {args.etdump}", file=sys.stderr)


def interactive(family: Family, args) -> int:
    """--interactive: a chat REPL over common.session.ChatSession, one turn per stdin line."""
    from common.sampler import Sampler
    from common.session import ChatSession

    model, tokenizer, source = open_model(family, args)
    if not tokenizer.chat_template:
        raise UserError(f"{source}: the tokenizer has no chat template, which --interactive needs")
    session = ChatSession(model, tokenizer, Sampler(sampler_config(args)), args.system, args.enable_thinking,
                          args.max_new_tokens)
    tty = sys.stdin.isatty()
    turns = []
    while True:
        try:
            if tty:
                print("> ", end="", flush=True)
            line = sys.stdin.readline()
        except KeyboardInterrupt:  # at the prompt: a fresh line, not the end
            print()
            continue
        if not line:
            break
        line = line.rstrip("\n")
        if not line.strip():
            continue
        emit, flush = text_printer(tokenizer, model.eos_ids)
        turn = session.turn(line, emit)
        print(flush(), flush=True)
        gen = turn.generation
        if turn.fresh_context:
            print(f"[context full ({model.max_context_len} positions): started a fresh one from this message]",
                  file=sys.stderr)
        print(f"[turn {len(turns) + 1}] prefill {turn.prefilled} tok ({turn.reused} from the cache) at "
              f"{gen.prefill_tps:.1f} tok/s | decode {len(gen.tokens)} tok at {gen.decode_tps:.1f} tok/s"
              + (" | interrupted" if gen.interrupted else ""), file=sys.stderr, flush=True)
        turns.append(turn_stats(gen, turn.reused))
    finish(model, args, source, turns)
    return 0


def encode_prompt(tokenizer, prompt: str, chat: bool, system: str | None = None, enable_thinking: bool | None = None):
    """Token ids for a raw prompt, or for a one-turn chat rendered with the model's template."""
    if not chat:
        return tokenizer.encode(prompt)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    extra = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
    return tokenizer.encode(tokenizer.apply_chat_template(messages, add_generation_prompt=True, **extra), add_bos=False)


def open_model(family: Family, args):
    """(model, tokenizer, source label) for --pte or --checkpoint."""
    from common.runtime import EagerModel, PteModel
    from common.tokenizer import load_tokenizer

    if args.pte:
        model = PteModel(args.pte, etdump=bool(getattr(args, "etdump", None)))
        tok_path = args.tokenizer or os.path.join(os.path.dirname(os.path.abspath(args.pte)), "tokenizer.json")
        return model, load_tokenizer(tok_path), os.path.basename(args.pte)
    from common.pipeline import load_model, resolve_checkpoint

    ckpt = resolve_checkpoint(family, args.checkpoint)
    tokenizer = load_tokenizer(args.tokenizer or ckpt)
    t0 = time.perf_counter()
    transformer, cfg, _ = load_model(family, ckpt, max_context_len=args.max_context_len)
    model = EagerModel(transformer, tuple(dict.fromkeys(cfg.eos_ids + tokenizer.eos_ids)))
    model.load_s = time.perf_counter() - t0
    return model, tokenizer, f"eager {os.path.basename(ckpt.rstrip('/'))}"
