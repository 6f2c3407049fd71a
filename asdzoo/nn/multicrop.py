"""Multi-crop embedding: clips longer than the training segment are cut into overlapping training-length crops
(hop: half a segment, the last crop aligned to the clip's end), so a model never sees a length it was not trained
on; a clip's result is the mean over its crops."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def segment_crops(
    wave: torch.Tensor, lengths: torch.Tensor | None, segment: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Crops of ``wave [B, ..., S]``: (crops ``[M, ..., L]`` zero-padded, crop lengths ``[M]``, owning clip ``[M]``)."""
    lengths = torch.full((len(wave),), wave.shape[-1]) if lengths is None else lengths.cpu()
    crops, lens, owner = [], [], []
    for i, n in enumerate(lengths.tolist()):
        starts = [0] if n <= segment else list(range(0, n - segment + 1, segment // 2))
        if n > segment and starts[-1] + segment < n:
            starts.append(n - segment)
        for s0 in starts:
            seg = wave[i, ..., s0 : s0 + min(n, segment)]
            crops.append(seg)
            lens.append(seg.shape[-1])
            owner.append(i)
    longest = max(lens)
    batch = torch.stack([F.pad(c, (0, longest - c.shape[-1])) for c in crops])
    return batch, torch.tensor(lens, device=wave.device), torch.tensor(owner)


def random_crops(
    wave: torch.Tensor, lengths: torch.Tensor | None, segment: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One ``segment``-long crop of each clip's valid samples at a uniform random offset (shorter clips whole):
    (waves ``[B, ..., min(S, segment)]`` zero-padded, crop lengths ``[B]``). Training crops of a model whose input
    is shorter than the data's clips."""
    lengths = torch.full((len(wave),), wave.shape[-1], device=wave.device) if lengths is None else lengths
    if wave.shape[-1] <= segment:  # nothing to crop: the batch as it is, and no random draw
        return wave, lengths
    out = wave.new_zeros(*wave.shape[:-1], segment)
    new_lengths = lengths.clamp(max=segment)
    for i, (n, m) in enumerate(zip(lengths.tolist(), new_lengths.tolist())):
        start = int(torch.randint(0, n - m + 1, (), generator=generator)) if n > m else 0
        out[i, ..., :m] = wave[i, ..., start : start + m]
    return out, new_lengths


def mean_per_clip(values: torch.Tensor, owner: torch.Tensor, n_clips: int) -> torch.Tensor:
    """Mean of the crop ``values [M, ...]`` of each clip -> ``[n_clips, ...]``."""
    total = values.new_zeros(n_clips, *values.shape[1:]).index_add_(0, owner.to(values.device), values)
    counts = torch.bincount(owner, minlength=n_clips).to(values)
    return total / counts.view(-1, *([1] * (values.dim() - 1)))
