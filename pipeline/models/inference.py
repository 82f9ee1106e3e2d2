"""Batched inference: one loop for every model applied to a whole split without gradients."""

from __future__ import annotations

from collections.abc import Callable

import torch

BATCH_SIZE = 64
"""Rows per call unless the caller says otherwise."""


def batched(
    fn: Callable[..., torch.Tensor],
    *inputs: torch.Tensor | None,
    batch_size: int = BATCH_SIZE,
) -> torch.Tensor:
    """Return ``fn`` applied to consecutive row batches of ``inputs``, concatenated.

    ``inputs`` are row-aligned tensors ``(N, ...)``; a None input is passed as None to every
    call (e.g. no emotion labels). Runs without gradients; an empty input gives one call on
    the empty batch, so the result keeps ``fn``'s trailing shape.
    """
    sizes = {len(x) for x in inputs if x is not None}
    if len(sizes) != 1:
        raise ValueError(f"batched needs row-aligned inputs, got lengths {sorted(sizes)}")
    n = sizes.pop()
    with torch.no_grad():
        parts = [fn(*(None if x is None else x[start:start + batch_size] for x in inputs))
                 for start in range(0, max(n, 1), batch_size)]
    return torch.cat(parts)
