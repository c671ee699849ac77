"""Lower a zoo model to an ExecuTorch `.pte` following one of the contracts in common.contract.

torch.export (example inputs and dynamic dims from the contract) -> XNNPACK source transforms and partitioning
-> to_executorch; the program must need no operator the runtime (plus the zoo's kernel libraries) lacks.
"""

from __future__ import annotations

import functools
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from common.contract import Contract
from common.errors import UserError
from common.io import atomic_path
from common.nn.norm import RMSNorm
from common.quant.footprint import Footprint

BACKENDS = ("xnnpack", "portable")
# --dtype: the activations' and float weights' type. bf16 only where every kernel has it: the portable backend with
# plain SDPA (XNNPACK's and the llama:: custom ops' kernels are fp32, and the quantized ops dequantize to fp32).
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    delegated_ops: int
    portable_ops: Counter  # non-delegated op name -> count
    operators: tuple[str, ...]  # operators the runtime must provide
    stages: dict[str, float] = field(default_factory=dict)  # export stage -> wall seconds
    table: dict[str, tuple[int, int]] = field(default_factory=dict)  # edge op -> (delegated, not delegated) nodes
    block_linears: Footprint | None = None  # the transformer blocks' linear weights as the program stores them


@dataclass(frozen=True)
class ExportDebug:
    """What an export writes besides the program, for debugging it."""
    etrecord: str | None = None  # an ETRecord (executorch.devtools.Inspector reads it with an ETDump)
    memory_trace: str | None = None  # the memory plan as a chrome trace (chrome://tracing, Perfetto)


@contextmanager
def _stage(name: str, times: dict[str, float], bar) -> Iterator[None]:
    """Show `name` on the progress bar (lowering a model is minutes of silence otherwise); record its seconds."""
    bar.set_description(f"export: {name}")
    t0 = time.perf_counter()
    yield
    times[name] = time.perf_counter() - t0
    bar.update()


def _shape_only_kernels() -> dict[tuple[str, str], tuple[Callable, Callable]]:
    """(namespace, op) -> (its output's shape and dtype from FakeTensor inputs, the real computation) for the
    composite ops that shape_only_ops shortcuts."""
    from torch._inductor.decomposition import decompositions
    from torchao.quantization import quant_primitives as qp

    def reduced(x: torch.Tensor, block_size: list[int], keepdim: bool) -> list:
        if keepdim:
            return [x.size(i) // b for i, b in enumerate(block_size)]
        shape, dims = qp._get_reduction_params(block_size, x.size())
        return [d for i, d in enumerate(shape) if i not in dims]

    def choose_qparams_affine(x, mapping_type, block_size, target_dtype, quant_min=None, quant_max=None, eps=None,
                              scale_dtype=None, zero_point_dtype=None, keepdim=False):
        shape = reduced(x, block_size, keepdim)
        scale_dtype = scale_dtype or x.dtype
        if zero_point_dtype is None:  # torchao: int32 for asymmetric, the scale's dtype for symmetric
            zero_point_dtype = torch.int32 if mapping_type == qp.MappingType.ASYMMETRIC.name else scale_dtype
        return x.new_empty(shape, dtype=scale_dtype), x.new_empty(shape, dtype=zero_point_dtype)

    def quantize_affine(x, block_size, scale, zero_point, output_dtype, quant_min=None, quant_max=None):
        return x.new_empty(x.shape, dtype=torch.uint8 if output_dtype in qp._SUB_BYTE_UINT_BOUNDS else output_dtype)

    def dequantize_affine(x, block_size, scale, zero_point, input_dtype, quant_min=None, quant_max=None,
                          output_dtype=torch.float32):
        return x.new_empty(x.shape, dtype=output_dtype)

    def linear(x, w, b=None):
        return x.new_empty((*x.shape[:-1], w.shape[0]))

    def real_linear(x, w, b=None):  # real tensors (no lowering pass runs a linear on them): aten's kernel is the
        # one overridden, so matmul and the bias
        out = torch.matmul(x, w.t())
        return out if b is None else out + b

    kernels = {("torchao", f.__name__): (f, decompositions[getattr(torch.ops.torchao, f.__name__).default])
               for f in (choose_qparams_affine, quantize_affine, dequantize_affine)}
    return kernels | {("aten", "linear"): (linear, real_linear)}


@contextmanager
def shape_only_ops() -> Iterator[None]:
    """While lowering: torchao's affine quantization ops and aten.linear, given FakeTensors, compute only their
    outputs' shapes and dtypes.

    All four are CompositeImplicitAutograd (torchao registers Python functions; linear decomposes to matmul, whose
    Python decomposition runs under the export's Python dispatcher), so every ExecuTorch pass that retraces the
    graph (to_edge's decompositions, each of XNNPACK's ~17 passes on each partition) runs their whole bodies, some
    10 to 30 symbolic-shape ops per call, where only the result's shape is wanted. The override lives in Library
    objects of its own, destroyed on exit, which restores the real kernels; real tensors take the real path. The
    `.pte` bytes are unchanged (tests/test_export_speed.py; SmolLM2's gguf build compared whole, 8da4w on 2 layers).
    Measured: README "Export time"."""
    from torch._subclasses.fake_tensor import FakeTensor

    libs = {}
    try:
        for (namespace, name), (shape_only, real) in _shape_only_kernels().items():
            if namespace not in libs:
                libs[namespace] = torch.library.Library(namespace, "IMPL")

            def kernel(*args, real=real, shape_only=shape_only, **kwargs):
                return (shape_only if isinstance(args[0], FakeTensor) else real)(*args, **kwargs)

            with warnings.catch_warnings():  # "overriding a previously registered kernel": the point
                warnings.simplefilter("ignore")
                libs[namespace].impl(name, kernel, "CompositeImplicitAutograd")
        yield
    finally:
        for lib in libs.values():
            lib._destroy()


class XnnpackRMSNorm(RMSNorm):
    """RMSNorm whose mean over the last dim is written as a 4-D mean over dims (2, 3): XNNPACK delegates only that
    form (global average pooling), so the norm does not split each layer into more partitions."""

    def mean_square(self, xf: torch.Tensor) -> torch.Tensor:
        return xf.pow(2).unsqueeze(-1).mean((-2, -1), keepdim=True).view(xf.shape[0], -1, *xf.shape[2:-1], 1)


def xnnpack_source_transforms(model: nn.Module) -> nn.Module:
    """Rewrite a model into forms XNNPACK delegates whole (same numbers), in place, before torch.export."""
    for mod in model.modules():
        if type(mod) is RMSNorm:
            mod.__class__ = XnnpackRMSNorm  # same state, delegable mean
    # Rotate-half as a matmul lets XNNPACK take all of RoPE (it delegates a linear, not a slice of a dynamic-length
    # tensor). With the SDPA kernel (rotated k feeding the in-place cache copy) its partitioner then finds a
    # dependency cycle, so only with kernels that write the cache in an op of their own.
    kernel = getattr(model, "kernel", None)
    if kernel is not None and kernel.writes_cache_in_op and hasattr(model, "rotate_half_as_matmul"):
        model.rotate_half_as_matmul()
    return model


def bound_method(module: nn.Module, name: str) -> nn.Module:
    """A shallow copy of `module` (the same parameters and buffers) whose forward is `module`'s method `name`, with
    that method's signature (torch.export names the inputs by it): a second program method over the same state."""
    import copy

    wrapper = copy.copy(module)
    wrapper.forward = getattr(module, name)
    return wrapper


def check_dtype(dtype: str, backend: str, custom_ops: bool, float_weights: bool, int8_cache: bool,
                kv_cache_dtype: str = "fp32") -> None:
    """One error line for a --dtype the chosen kernels cannot run."""
    if dtype not in DTYPES:
        raise UserError(f"--dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    if dtype == "fp32":
        return
    for unsupported, why in ((backend != "portable", f"--backend {backend} runs fp32 only; use --backend portable"),
                             (custom_ops, "ExecuTorch's llama:: custom ops are fp32 only; add --no-custom-ops"),
                             (not float_weights, "quantized weights dequantize to fp32; use --quantize fp32 (bf16 "
                                                 "halves the float weights)"),
                             (int8_cache, "the int8 KV cache dequantizes to fp32; drop --quantize-kv-cache"),
                             (kv_cache_dtype != "fp32", "the cache follows the program's dtype; drop --kv-cache-dtype")):
        if unsupported:
            raise UserError(f"--dtype {dtype}: {why}")


class CastIO(nn.Module):
    """`module` run in `dtype` behind an fp32 interface: float inputs cast in, the output cast back to fp32, so the
    contract (and every runner) sees fp32 whatever the program computes in. Its forward keeps the wrapped one's
    signature (torch.export names the inputs, and their dynamic dims, by it)."""

    def __init__(self, module: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.module = module

        def forward(*args: torch.Tensor) -> torch.Tensor:
            return module(*(a.to(dtype) if a.is_floating_point() else a for a in args)).float()

        self.forward = functools.wraps(module.forward)(forward)


def check_seq_len(max_seq_len: int, max_context_len: int) -> None:
    """A forward call's tokens must fit the KV cache: 1 <= max_seq_len <= max_context_len."""
    if not 1 <= max_seq_len <= max_context_len:
        raise UserError(f"--max-seq-len {max_seq_len}: expected 1..--max-context-len ({max_context_len})")


def program_operators(program) -> tuple[str, ...]:
    """Names ('ns::op[.overload]') of the non-delegated operators an ExecuTorch program calls."""
    names = set()
    for plan in program.execution_plan:
        for op in plan.operators:
            names.add(f"{op.name}.{op.overload}" if op.overload else op.name)
    return tuple(sorted(names))


def export_pte(
    model: nn.Module | dict[str, nn.Module],
    output: str | os.PathLike,
    contract: Contract,
    constants: dict,
    backend: str = "xnnpack",
    limits: dict[str, int] | None = None,
    share_mutable_buffers: bool = False,
    debug: ExportDebug | None = None,
) -> ExportSummary:
    """torch.export each of `contract`'s methods (`model`, or a module per method name) -> lower -> to_executorch,
    written atomically to `output`. `constants` become constant methods (the contract's stamp is added);
    `limits` size the dynamic dims (default: from get_max_seq_len). `share_mutable_buffers`: the methods share
    their mutable buffers (one KV cache read and written by every method). `debug`: files to write besides."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass
    from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass

    if backend not in BACKENDS:
        raise UserError(f"--backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    limits = limits or {"max_seq_len": constants["get_max_seq_len"]}
    max_seq_len, max_context_len = limits.get("max_seq_len"), constants.get("get_max_context_len")
    if max_context_len is not None:
        check_seq_len(max_seq_len, max_context_len)
    missing = sorted(set(contract.constants) - set(constants))
    if missing:
        raise ValueError(f"{contract.name} export lacks constant methods {missing}")

    modules = model if isinstance(model, dict) else {"forward": model}
    debug = debug or ExportDebug()
    programs, times = {}, {}
    # a bar over the stages, cleared when done (like the loader's): an error is then the last line on stderr
    with torch.no_grad(), tqdm(total=len(modules) + 2, unit="stage", leave=False, file=sys.stderr) as bar:
        for name, module in modules.items():
            with _stage(f"torch.export {name}", times, bar):
                if backend == "xnnpack":
                    xnnpack_source_transforms(module)
                programs[name] = torch.export.export(
                    module,
                    contract.example_inputs(name, limits),
                    dynamic_shapes=contract.dynamic_shapes(name, limits),
                    strict=False,
                )
        with _stage(f"lower to {backend}", times, bar), shape_only_ops():
            edge = to_edge_transform_and_lower(
                programs,
                partitioner=[XnnpackPartitioner()] if backend == "xnnpack" else [],
                compile_config=EdgeCompileConfig(_check_ir_validity=False),
                constant_methods=constants | contract.stamp(),
                generate_etrecord=debug.etrecord is not None,
            )
        delegated, counts = 0, {}  # edge op -> [delegated, not delegated] nodes over the methods
        for name in modules:
            info = get_delegation_info(edge.exported_program(name).graph_module)
            delegated += info.num_delegated_nodes
            for op, row in info.delegation_by_operator.items():
                pair = counts.setdefault(op, [0, 0])
                pair[0] += row.delegated
                pair[1] += row.non_delegated
        with _stage("to_executorch", times, bar):
            et = edge.to_executorch(
                ExecutorchBackendConfig(
                    extract_delegate_segments=True,
                    do_quant_fusion_and_const_prop=True,
                    memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False,
                                                            share_mutable_buffers=share_mutable_buffers),
                    emit_mutable_buffer_names=share_mutable_buffers,
                    sym_shape_eval_pass=ConstraintBasedSymShapeEvalPass(),
                )
            )
    ops = program_operators(et.executorch_program)
    from common.kernels import runtime_operator_names

    available = {name.split(".")[0] for name in runtime_operator_names()}
    missing = [op for op in ops if op.split(".")[0] not in available]
    if missing:
        from common.kernels import describe_missing

        raise UserError(f"export would need operators the ExecuTorch runtime lacks: {describe_missing(missing)}")
    with atomic_path(output) as tmp:
        with open(tmp, "wb") as f:
            et.write_to_file(f)
    if debug.etrecord:
        with atomic_path(debug.etrecord) as tmp:
            et.get_etrecord().save(str(tmp))
    if debug.memory_trace:
        from executorch.util.activation_memory_profiler import generate_memory_trace

        with atomic_path(debug.memory_trace) as tmp:
            generate_memory_trace(et, str(tmp), enable_memory_offsets=True)
    table = {op: (d, n) for op, (d, n) in sorted(counts.items())}
    portable = Counter({op: n for op, (_, n) in table.items() if n})
    return ExportSummary(Path(output), delegated, portable, ops, times, table)


def format_summary(summary: ExportSummary, table: bool = False, stages: bool = False) -> str:
    """Delegation summary: how many ops the backend took, and which ran on portable kernels; with `table` every
    operator's counts, with `stages` each stage's seconds and share on its own line."""
    rows = ", ".join(f"{name} x{n}" for name, n in summary.portable_ops.most_common())
    lines = [f"delegated ops: {summary.delegated_ops}; non-delegated (portable/custom kernels): "
             f"{sum(summary.portable_ops.values())}" + (f" [{rows}]" if rows else "")]
    if table:
        width = max((len(op) for op in summary.table), default=8)
        lines.append(f"{'operator':<{width}}  delegated  not delegated")
        lines += [f"{op:<{width}}  {d:>9}  {n:>13}" for op, (d, n) in summary.table.items()]
    total = sum(summary.stages.values())
    if stages and total:
        lines += [f"stage {name:<24} {sec:7.1f}s  {100 * sec / total:5.1f} %" for name, sec in summary.stages.items()]
    elif summary.stages:
        lines.append("stages: " + ", ".join(f"{name} {sec:.1f}s" for name, sec in summary.stages.items()))
    return "\n".join(lines)
