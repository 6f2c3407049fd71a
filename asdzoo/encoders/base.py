"""The encoder protocol (DESIGN §2): ``forward(wave [B, S], lengths [B] | None) -> (frames [B, T, D], mask [B, T])``.

``mask`` is True on valid frames. Padding a batch must never change a clip's valid frames, so encoders
whose receptive field would see the padding run each distinct length separately (:func:`per_length`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from asdzoo.config import CapturesInit


class Encoder(CapturesInit, nn.Module):
    """Base class: subclasses set ``sample_rate`` and ``embed_dim`` and implement ``forward``; ``config`` holds the
    constructor arguments (:mod:`asdzoo.config`)."""

    sample_rate: int = 16000
    embed_dim: int

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        raise TypeError(f"{type(self).__name__} must implement forward(wave, lengths)")


def full_lengths(wave: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    if lengths is None:
        return torch.full((wave.shape[0],), wave.shape[-1], dtype=torch.long, device=wave.device)
    return lengths.to(device=wave.device, dtype=torch.long)


def per_length(
    fn: Callable[[torch.Tensor], torch.Tensor], wave: torch.Tensor, lengths: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``fn([b, S_valid]) -> [b, T, D]`` once per distinct valid length and pad the results."""
    lengths = full_lengths(wave, lengths)
    outs: dict[int, torch.Tensor] = {}
    for length in lengths.unique().tolist():
        idx = (lengths == length).nonzero().flatten()
        outs[length] = (idx, fn(wave[idx, :length]))
    t_max = max(o.shape[1] for _, o in outs.values())
    first = next(iter(outs.values()))[1]
    frames = first.new_zeros(wave.shape[0], t_max, first.shape[-1])
    mask = torch.zeros(wave.shape[0], t_max, dtype=torch.bool, device=wave.device)
    for idx, out in outs.values():
        frames[idx, : out.shape[1]] = out
        mask[idx, : out.shape[1]] = True
    return frames, mask
