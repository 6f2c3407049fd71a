"""Waveform augmentation for contrastive views (paper 002 §2.3)."""

from __future__ import annotations

import torch


def contrastive_view(
    wave: torch.Tensor,
    lengths: torch.Tensor | None,
    generator: torch.Generator,
    sample_rate: int = 16000,
    noise_std: float = 0.005,
    gain_db: float = 3.0,
    drop_seconds: float = 0.5,
) -> torch.Tensor:
    """One augmented view of mono clips ``[B, S]``: a random span of ``drop_seconds`` is removed from each clip's
    valid part and the rest shifted left with zeros padded back at its end ("removed and zero-padded back"), then a
    gain drawn uniformly in ±``gain_db`` dB and Gaussian noise of std ``noise_std`` on the valid samples. Padding
    past a clip's length stays zero; a clip shorter than two spans loses at most half its samples."""
    batch, samples = wave.shape
    device = wave.device
    valid = torch.full((batch,), samples, device=device) if lengths is None else lengths.to(device).long()
    span = torch.minimum(torch.full_like(valid, round(drop_seconds * sample_rate)), valid // 2)
    start = (torch.rand(batch, generator=generator, device=device) * (valid - span + 1)).long()
    t = torch.arange(samples, device=device)[None]
    source = torch.where(t < start[:, None], t, t + span[:, None])
    keep = source < valid[:, None]
    out = torch.gather(wave, 1, source.clamp(max=samples - 1)) * keep
    gain_db_drawn = (torch.rand(batch, generator=generator, device=device) * 2 - 1) * gain_db
    out = out * (10.0 ** (gain_db_drawn / 20.0))[:, None].to(wave.dtype)
    noise = torch.randn(wave.shape, generator=generator, device=device, dtype=wave.dtype) * noise_std
    return out + noise * (t < valid[:, None])
