"""Two-channel front-ends: STFT soft-mask enhancement of the near channel (paper 001 eqs. 6-11)."""

from __future__ import annotations

import torch

SOFTMASK_EPS = 1e-8


def softmask_enhance(
    near: torch.Tensor,
    far: torch.Tensor,
    alpha: float,
    floor: float,
    n_fft: int = 1024,
    hop_length: int = 256,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Suppress far-channel leakage in the near channel.

    H(f) = Σ_t N F* / (Σ_t |F|² + ε) (eq. 6), P = H F (7), R = |P|² / (|N|² + ε) (8),
    M = clip(1 − α R / (1 + R), floor, 1) (9), E = M N (10), x = ISTFT(E) (11); Hann window, 1024/256.
    ``near``/``far`` are ``[B, S]``; with ``lengths`` each clip is enhanced at its own valid length (STFT
    frames that straddle a clip's end would otherwise let padding change the sums), the rest stays zero.
    """
    if lengths is not None and bool((lengths != near.shape[-1]).any()):
        out = torch.zeros_like(near)
        for length in lengths.unique().tolist():
            idx = (lengths == length).nonzero().flatten()
            out[idx, :length] = softmask_enhance(near[idx, :length], far[idx, :length], alpha, floor, n_fft, hop_length)
        return out
    window = torch.hann_window(n_fft, device=near.device, dtype=near.dtype)
    length = near.shape[-1]
    spec = torch.stft(
        torch.stack([near, far]).reshape(-1, length),
        n_fft,
        hop_length,
        window=window,
        center=True,
        pad_mode="constant",
        return_complex=True,
    ).reshape(2, *near.shape[:-1], n_fft // 2 + 1, -1)
    n, f = spec[0], spec[1]
    h = (n * f.conj()).sum(dim=-1, keepdim=True) / ((f.abs() ** 2).sum(dim=-1, keepdim=True) + SOFTMASK_EPS)
    r = (h * f).abs() ** 2 / (n.abs() ** 2 + SOFTMASK_EPS)
    mask = (1.0 - alpha * r / (1.0 + r)).clamp(min=floor, max=1.0)
    enhanced = mask * n
    out = torch.istft(
        enhanced.reshape(-1, *enhanced.shape[-2:]), n_fft, hop_length, window=window, center=True, length=length
    )
    return out.reshape(near.shape)


def near_channel(wave: torch.Tensor) -> torch.Tensor:
    """``[B, C, S]`` (channel 0 = near microphone) or ``[B, S]`` -> ``[B, S]``."""
    return wave[:, 0] if wave.dim() == 3 else wave
