"""common.export.shape_only_ops, the lowering's shortcut for torchao's quantization ops and aten.linear on
FakeTensors: the shapes and dtypes the real kernels give, the real numbers on real tensors, and the same `.pte` bytes
as lowering without it."""

from __future__ import annotations

import contextlib

import pytest
import torch

from common.export import shape_only_ops

# (op, args) as 8da4w / 8da8w / the 4-bit embedding call them: activations per token, weights per group or channel
X, W = (1, 5, 64), (48, 64)
CALLS = [
    ("choose_qparams_affine", lambda t: (t(X), "ASYMMETRIC", [1, 1, 64], torch.int8, -128, 127, 1e-9, torch.float32,
                                         torch.int8)),
    ("choose_qparams_affine", lambda t: (t(W), "SYMMETRIC", [1, 32], torch.int8, -8, 7, None, torch.float32)),
    ("choose_qparams_affine", lambda t: (t(W), "SYMMETRIC", [1, 64], torch.int8, -128, 127, None, None, None, True)),
    ("choose_qparams_affine", lambda t: (t(W), "ASYMMETRIC", [1, 32], torch.int8)),
    ("quantize_affine", lambda t: (t(X), [1, 1, 64], t((1, 5, 1)), t((1, 5, 1), torch.int8), torch.int8, -128, 127)),
    ("dequantize_affine", lambda t: (t(W, torch.int8), [1, 32], t((48, 2)), t((48, 2), torch.int8), torch.int8, -8,
                                     7)),
    ("dequantize_affine", lambda t: (t(W, torch.int8), [1, 64], t((48, 1)), None, torch.int8, -128, 127,
                                     torch.bfloat16)),
    ("aten.linear", lambda t: (t(X), t(W))),
    ("aten.linear", lambda t: (t(X), t(W), t((48,)))),
]


@pytest.mark.parametrize("i", range(len(CALLS)), ids=[f"{c[0]}-{i}" for i, c in enumerate(CALLS)])
def test_shape_only_ops_give_torchaos_shapes_and_dtypes(i: int) -> None:
    import torchao.quantization.quant_primitives  # noqa: F401  (registers torch.ops.torchao)
    from torch._subclasses.fake_tensor import FakeTensorMode

    name, make = CALLS[i]
    namespace, _, name = name.rpartition(".")
    op = getattr(getattr(torch.ops, namespace or "torchao"), name).default
    gen = torch.Generator().manual_seed(i)

    def real_tensor(shape, dtype=torch.float32):
        return (torch.randn(shape, generator=gen) * 4).to(dtype)

    def run():
        with FakeTensorMode():
            out = op(*make(lambda shape, dtype=torch.float32: torch.empty(shape, dtype=dtype)))
        return [(tuple(o.shape), o.dtype) for o in (out if isinstance(out, tuple) else (out,))]

    args = make(real_tensor)
    real, eager = run(), op(*args)
    with shape_only_ops():
        fast, eager_inside = run(), op(*args)  # real tensors: the real kernel's numbers
    assert fast == real
    assert run() == real  # the override is gone after the block
    for a, b in zip(eager if isinstance(eager, tuple) else (eager,), eager_inside if isinstance(eager_inside, tuple)
                    else (eager_inside,), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-5)


@pytest.mark.slow
def test_same_pte_bytes_with_and_without_the_shortcut(tmp_path, monkeypatch) -> None:
    """A tiny llama, 8da4w + 8-bit embedding + int8 head, lowered to XNNPACK with the custom ops."""
    import common.export
    from common.cli import export_main, run_cli
    from models.llama3.model import FAMILY
    from tests.checkpoints import write_tiny
    from tests.helpers import cli_stdout

    _, hf_dir, _ = write_tiny("llama", tmp_path / "tiny", num_attention_heads=4, num_key_value_heads=2)
    args = ["--checkpoint", str(hf_dir), "--quantize", "8da4w", "--embedding-bits", "8", "--max-seq-len", "8",
            "--max-context-len", "32"]
    cli_stdout(lambda: run_cli(export_main(FAMILY), [*args, "--output", str(tmp_path / "fast" / "model.pte")]))
    monkeypatch.setattr(common.export, "shape_only_ops", contextlib.nullcontext)
    cli_stdout(lambda: run_cli(export_main(FAMILY), [*args, "--output", str(tmp_path / "slow" / "model.pte")]))
    assert (tmp_path / "fast" / "model.pte").read_bytes() == (tmp_path / "slow" / "model.pte").read_bytes()
