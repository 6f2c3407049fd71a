"""Kaldi-compatible log-mel filterbank in pure torch (the definition of ``torchaudio.compliance.kaldi.fbank``
with its defaults; torchaudio has no CPU build for our torch, DESIGN §7).

Per frame (25 ms window, 10 ms shift, ``snip_edges``): remove the DC offset, pre-emphasis 0.97 (the first
sample repeats itself), Povey window (Hann^0.85, symmetric), zero-pad to the next power of two, power
spectrum, triangular mel filters built on the Kaldi mel scale ``1127 ln(1 + f/700)`` from 20 Hz to Nyquist,
log floored at float32 eps. No dither.
"""

from __future__ import annotations

import math

import torch

from asdzoo.audio.features import cached_tensor

EPS = torch.finfo(torch.float32).eps


def kaldi_mel(freq: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log(1.0 + freq / 700.0)


@cached_tensor
def kaldi_mel_banks(
    num_bins: int, padded_window: int, sample_rate: float, low_freq: float, high_freq: float
) -> torch.Tensor:
    """``[num_bins, padded_window // 2 + 1]``; the Nyquist column is zero, as in Kaldi."""
    n_fft_bins = padded_window // 2
    bin_width = sample_rate / padded_window
    mel_low, mel_high = (
        kaldi_mel(torch.tensor(low_freq, dtype=torch.float64)),
        kaldi_mel(torch.tensor(high_freq, dtype=torch.float64)),
    )
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins, dtype=torch.float64)[:, None]
    left, center, right = mel_low + b * delta, mel_low + (b + 1) * delta, mel_low + (b + 2) * delta
    mel = kaldi_mel(bin_width * torch.arange(n_fft_bins, dtype=torch.float64))[None]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return torch.nn.functional.pad(banks, (0, 1)).float()


def fbank(
    wave: torch.Tensor,
    num_mel_bins: int = 128,
    sample_rate: int = 16000,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    preemphasis: float = 0.97,
    low_freq: float = 20.0,
    window_type: str = "povey",
) -> torch.Tensor:
    """``[..., S] -> [..., 1 + (S - win) // shift, num_mel_bins]`` log mel energies (Kaldi units).
    ``window_type``: 'povey' (Kaldi's default, BEATs), 'hanning' (symmetric Hann, EAT, AST) or 'hamming'."""
    win = int(sample_rate * frame_length_ms / 1000)
    shift = int(sample_rate * frame_shift_ms / 1000)
    padded = 1 << math.ceil(math.log2(win))
    shape = wave.shape
    x = wave.reshape(-1, shape[-1])
    if x.shape[-1] < win:
        raise ValueError(f"fbank needs at least {win} samples, got {x.shape[-1]}")
    frames = x.unfold(-1, win, shift)  # [N, T, win] (snip_edges)
    frames = frames - frames.mean(dim=-1, keepdim=True)
    prev = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
    frames = frames - preemphasis * prev
    if window_type == "hamming":
        window = torch.hamming_window(win, periodic=False, dtype=frames.dtype, device=frames.device)
    else:
        window = torch.hann_window(win, periodic=False, dtype=frames.dtype, device=frames.device)
        if window_type == "povey":
            window = window.pow(0.85)
        elif window_type != "hanning":
            raise ValueError(f"unknown window_type {window_type!r}: choose povey, hanning or hamming")
    frames = torch.nn.functional.pad(frames * window, (0, padded - win))
    power = torch.fft.rfft(frames).abs().pow(2)
    banks = kaldi_mel_banks(num_mel_bins, padded, float(sample_rate), low_freq, sample_rate / 2).to(power)
    mel = power @ banks.T
    return torch.clamp(mel, min=EPS).log().reshape(*shape[:-1], frames.shape[-2], num_mel_bins)
