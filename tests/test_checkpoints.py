"""The test checkpoint writers themselves: llama.cpp's q/k permutation is what the loader undoes."""

from __future__ import annotations

import torch

from models.llama3.model import unpermute_rope
from tests.checkpoints import permute


def test_permute_is_inverse_of_unpermute_rope() -> None:
    w = torch.randn(4 * 8, 12)
    for n_heads in (1, 2, 4):
        p = permute(w, n_heads)
        assert not torch.equal(p, w)
        assert torch.equal(unpermute_rope(p, n_heads), w)
    # per head, llama.cpp interleaves the two rotate-half halves: rows 0, D/2, 1, D/2 + 1, ...
    assert permute(torch.arange(8.0)[:, None], 1).flatten().tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
