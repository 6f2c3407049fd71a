"""Reading and validating audio files; every problem is reported with the file's name."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from asdzoo.atomic import atomic_path

# Float WAVs may exceed full scale, but not by this much: 2^16 still admits a float file that holds int16-scaled
# values, while 1e20-sized samples (a tampered or mis-scaled file) overflow every float32 power spectrum to NaN scores.
MAX_ABS_SAMPLE = 65536.0


class AudioError(ValueError):
    """An audio file that cannot be used as it is; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def audio_info(path: str | os.PathLike) -> sf._SoundFileInfo:
    """Header of an audio file (cheap: reads no samples)."""
    if not Path(path).is_file():
        raise AudioError(path, "file not found")
    try:
        return sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(path, f"corrupt or unreadable audio ({err})") from None


def read_audio(
    path: str | os.PathLike,
    *,
    channels: int | None = None,
    sample_rate: int | None = None,
    resample: bool = False,
) -> torch.Tensor:
    """Read a file as float32 ``[channels, samples]``.

    ``channels``/``sample_rate`` are requirements: a mismatch raises :class:`AudioError`, except that
    a wrong sample rate is converted when ``resample`` is True.
    """
    info = audio_info(path)
    if channels is not None and info.channels != channels:
        wanted = "2 channels (near, far)" if channels == 2 else f"{channels} channel(s)"
        raise AudioError(path, f"expected {wanted}, got {info.channels}")
    if sample_rate is not None and info.samplerate != sample_rate and not resample:
        raise AudioError(
            path, f"sample rate is {info.samplerate} Hz, expected {sample_rate} Hz (pass resample=True to convert)"
        )
    if info.frames == 0:
        raise AudioError(path, "empty audio (0 samples)")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(path, f"corrupt or unreadable audio ({err})") from None
    if data.shape[0] == 0:
        raise AudioError(path, "empty audio (0 samples)")
    if not np.isfinite(data).all():
        raise AudioError(path, "audio contains NaN or infinite samples")
    peak = float(np.abs(data).max())
    if peak > MAX_ABS_SAMPLE:
        raise AudioError(path, f"sample magnitude {peak:.3g} is beyond ±{MAX_ABS_SAMPLE:g} (full scale is 1)")
    wave = torch.from_numpy(np.ascontiguousarray(data.T))
    if sample_rate is not None and sr != sample_rate:
        from asdzoo.audio.features import resample as resample_wave

        wave = resample_wave(wave, sr, sample_rate)
    return wave


def write_audio(path: str | os.PathLike, wave: torch.Tensor | np.ndarray, sample_rate: int) -> None:
    """Write ``[channels, samples]`` as 16-bit PCM WAV, atomically."""
    data = wave.detach().cpu().numpy() if isinstance(wave, torch.Tensor) else np.asarray(wave)
    if data.ndim == 1:
        data = data[None]
    with atomic_path(path) as tmp:
        sf.write(str(tmp), data.T, sample_rate, subtype="PCM_16", format="WAV")
