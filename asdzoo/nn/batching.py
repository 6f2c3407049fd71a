"""One way to run a function over a large batch in slices (embedding, scoring and fitting loops share it)."""

from __future__ import annotations

from collections.abc import Callable

import torch


def map_batches(
    fn: Callable, waves: torch.Tensor, lengths: torch.Tensor | None = None, batch_size: int = 16
) -> torch.Tensor | dict[str, torch.Tensor]:
    """``fn(waves[i:j], lengths[i:j] or None)`` over consecutive slices, outputs concatenated along dim 0 (a dict
    output is concatenated per key). Keeps peak memory at one slice's activations."""
    outs = [
        fn(waves[i : i + batch_size], None if lengths is None else lengths[i : i + batch_size])
        for i in range(0, len(waves), batch_size)
    ]
    if isinstance(outs[0], dict):
        return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
    return torch.cat(outs)
