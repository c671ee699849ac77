"""What the zoo's `torch.library` ops share: their `.out` overloads (ExecuTorch programs call `.out` kernels; eagerly
they compute the functional op and copy it into `out`)."""

from __future__ import annotations

from collections.abc import Callable

import torch


def out_variant(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """The `.out` overload's eager implementation of the functional `fn`: its result, resized and copied into `out`."""

    def impl(*args, out: torch.Tensor, **kwargs) -> torch.Tensor:
        result = fn(*args, **kwargs)
        out.resize_(result.shape)
        return out.copy_(result)

    return impl
