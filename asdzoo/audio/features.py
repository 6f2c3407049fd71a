"""Resampling and mel features in pure torch (torchaudio has no CPU build for our torch, DESIGN §7)."""

from __future__ import annotations

import math
from functools import lru_cache

import torch


def cached_tensor(fn):
    """``lru_cache`` for tensor builders; results are made outside inference mode, so a cache filled by an
    inference-mode caller still works in autograd later."""
    cached = lru_cache(maxsize=16)(fn)

    def wrapper(*args, **kwargs):
        with torch.inference_mode(False):
            return cached(*args, **kwargs)

    wrapper.cache_clear = cached.cache_clear
    return wrapper


@cached_tensor
def _sinc_kernel(orig: int, new: int, width_zeros: int, rolloff: float) -> tuple[torch.Tensor, int]:
    """Polyphase Hann-windowed sinc kernels, one per output phase (band-limited interpolation)."""
    cutoff = min(orig, new) * rolloff
    width = math.ceil(width_zeros * orig / cutoff)
    taps = torch.arange(-width, width + orig, dtype=torch.float64) / orig
    t = (-torch.arange(new, dtype=torch.float64)[:, None] / new + taps[None]) * cutoff
    t = t.clamp(-width_zeros, width_zeros)
    window = torch.cos(t * math.pi / width_zeros / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
    return (sinc * window * (cutoff / orig)).float(), width


def resample(
    wave: torch.Tensor, orig_sr: int, new_sr: int, width_zeros: int = 6, rolloff: float = 0.99
) -> torch.Tensor:
    """Resample the last axis from ``orig_sr`` to ``new_sr`` (windowed-sinc, same output length rule as
    torchaudio: ``ceil(n * new / orig)``)."""
    if orig_sr == new_sr:
        return wave
    g = math.gcd(orig_sr, new_sr)
    orig, new = orig_sr // g, new_sr // g
    kernel, width = _sinc_kernel(orig, new, width_zeros, rolloff)
    shape = wave.shape
    x = wave.reshape(-1, 1, shape[-1])
    x = torch.nn.functional.pad(x, (width, width + orig))
    y = torch.nn.functional.conv1d(x, kernel.to(x)[:, None], stride=orig)
    y = y.transpose(1, 2).reshape(x.shape[0], -1)
    out_len = math.ceil(new * shape[-1] / orig)
    return y[:, :out_len].reshape(*shape[:-1], out_len)


def hz_to_mel(f: torch.Tensor, htk: bool) -> torch.Tensor:
    if htk:
        return 2595.0 * torch.log10(1.0 + f / 700.0)
    # Slaney: linear below 1 kHz, logarithmic above.
    lin = f / (200.0 / 3)
    log = 15.0 + torch.log(f.clamp(min=1e-10) / 1000.0) / (math.log(6.4) / 27.0)
    return torch.where(f >= 1000.0, log, lin)


def mel_to_hz(m: torch.Tensor, htk: bool) -> torch.Tensor:
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    lin = m * (200.0 / 3)
    log = 1000.0 * torch.exp((math.log(6.4) / 27.0) * (m - 15.0))
    return torch.where(m >= 15.0, log, lin)


@cached_tensor
def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    htk: bool = False,
    norm: str | None = "slaney",
) -> torch.Tensor:
    """Triangular mel filters ``[n_freqs, n_mels]`` (librosa's conventions: Slaney or HTK scale,
    ``norm`` in {None, 'slaney' (area), 'l1'})."""
    f_max = sample_rate / 2 if f_max is None else f_max
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    m = torch.linspace(
        hz_to_mel(torch.tensor(f_min, dtype=torch.float64), htk),
        hz_to_mel(torch.tensor(f_max, dtype=torch.float64), htk),
        n_mels + 2,
        dtype=torch.float64,
    )
    edges = mel_to_hz(m, htk)
    widths = edges[1:] - edges[:-1]
    ramps = edges[:, None] - freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    fb = torch.clamp(torch.minimum(lower, upper), min=0.0)
    if norm == "slaney":
        fb = fb * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    elif norm == "l1":
        fb = fb / fb.sum(dim=1, keepdim=True).clamp(min=1e-12)
    elif norm is not None:
        raise ValueError(f"unknown mel norm {norm!r}")
    return fb.T.float().contiguous()


def num_frames(num_samples: torch.Tensor | int, hop_length: int, center: bool = True, n_fft: int = 0):
    """Frames an STFT produces for ``num_samples``; used to turn sample lengths into frame masks."""
    if center:
        return num_samples // hop_length + 1
    return (num_samples - n_fft) // hop_length + 1


def power_spectrogram(
    wave: torch.Tensor,
    n_fft: int,
    hop_length: int,
    win_length: int | None = None,
    center: bool = True,
    pad_mode: str = "constant",
    power: float = 2.0,
) -> torch.Tensor:
    """``[..., S] -> [..., n_fft//2+1, T]`` magnitude**power with a periodic Hann window."""
    win_length = win_length or n_fft
    window = torch.hann_window(win_length, device=wave.device, dtype=wave.dtype)
    shape = wave.shape
    spec = torch.stft(
        wave.reshape(-1, shape[-1]),
        n_fft,
        hop_length,
        win_length,
        window,
        center=center,
        pad_mode=pad_mode,
        return_complex=True,
    )
    spec = spec.abs().pow(power)
    return spec.reshape(*shape[:-1], *spec.shape[-2:])


def mel_spectrogram(
    wave: torch.Tensor,
    sample_rate: int,
    n_fft: int = 1024,
    hop_length: int = 512,
    n_mels: int = 128,
    f_min: float = 0.0,
    f_max: float | None = None,
    power: float = 2.0,
    htk: bool = False,
    norm: str | None = "slaney",
    win_length: int | None = None,
    center: bool = True,
    pad_mode: str = "constant",
) -> torch.Tensor:
    """``[..., S] -> [..., T, n_mels]`` mel power spectrogram (frames first, as encoders want)."""
    spec = power_spectrogram(wave, n_fft, hop_length, win_length, center, pad_mode, power)
    fb = mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max, htk, norm).to(spec)
    return spec.transpose(-1, -2) @ fb


def log_mel(
    wave: torch.Tensor,
    sample_rate: int,
    n_fft: int = 1024,
    hop_length: int = 512,
    n_mels: int = 128,
    power: float = 2.0,
    eps: float = 1e-10,
    **kw,
) -> torch.Tensor:
    """Log-mel in dB as in the official DCASE AE baseline: ``20/power * log10(mel + eps)``."""
    mel = mel_spectrogram(wave, sample_rate, n_fft, hop_length, n_mels, power=power, **kw)
    return (20.0 / power) * torch.log10(mel + eps)


def stacked_log_mel(
    wave: torch.Tensor,
    sample_rate: int = 16000,
    n_fft: int = 1024,
    hop_length: int = 512,
    n_mels: int = 128,
    frames: int = 5,
) -> torch.Tensor:
    """Official DCASE AE-baseline input: ``frames`` consecutive log-mel frames concatenated,
    ``[S] -> [T - frames + 1, frames * n_mels]``."""
    mel = log_mel(wave, sample_rate, n_fft, hop_length, n_mels)
    if mel.shape[0] < frames:
        raise ValueError(f"clip too short: {mel.shape[0]} frames, the AE baseline stacks {frames}")
    return mel.unfold(0, frames, 1).transpose(1, 2).reshape(-1, frames * n_mels)
