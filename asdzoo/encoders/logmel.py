"""A weight-free "encoder": log-mel frames. The plain-statistics baseline every learned encoder must beat."""

from __future__ import annotations

import torch

from asdzoo.audio.features import log_mel, num_frames
from asdzoo.encoders.base import Encoder, full_lengths


class LogMelEncoder(Encoder):
    """Frames are log-mel vectors in dB above ``floor_db`` (non-negative, so GeM/RDP pooling apply as defined).

    Padding is exactly neutral: samples past each clip's length are zeroed and frames are centred with constant
    (zero) padding, so a clip's valid frames are the same alone or in a padded batch.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        hop_length: int = 512,
        n_mels: int = 128,
        floor_db: float = -100.0,
    ):
        super().__init__()
        self.sample_rate = sample_rate
        self.embed_dim = n_mels
        self.n_fft, self.hop_length, self.n_mels, self.floor_db = n_fft, hop_length, n_mels, floor_db

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None):
        lengths = full_lengths(wave, lengths)
        wave = wave * (
            torch.arange(wave.shape[-1], device=wave.device)[None] < lengths[:, None]
        )  # padding content is inert
        db = log_mel(wave, self.sample_rate, self.n_fft, self.hop_length, self.n_mels)
        frames = (db - self.floor_db).clamp(min=0.0)
        valid = num_frames(lengths, self.hop_length)
        mask = torch.arange(frames.shape[1], device=wave.device)[None] < valid[:, None]
        return frames * mask[..., None], mask
