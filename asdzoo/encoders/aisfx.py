"""aiSFX sound-effects CNN (Ma & Lerch, ISMIR 2022): real pretrained weights shipped inside the ``aisfx`` wheel.

Re-implemented here (same parameter names as the wheel's ``EmbeddingNet``) so the checkpoint loads with
``torch.load(weights_only=True)`` plus a small allow-list for the numpy scalars it contains. Front-end as
the package's librosa path: ``librosa.load(sr=44100)`` (resampled as the wheel's pinned librosa 0.9.2 does by
default: resampy's ``kaiser_best`` filter), peak-normalised audio, 2048/1024 centred STFT with zero padding,
96 HTK mel bands with unit-area (l1) filters, ``log10(1 + 10^4 mel)``, divided by the paper's maximum 9.4578.
Frames are the time steps of the last (or ``layer``-th) conv block averaged over frequency, over the whole clip
(the wheel's ``inference.main`` cuts 100-frame blocks and keeps one max-pooled vector per block); the wheel's
own clip embedding is their max. tests/test_aisfx_reference.py checks all of this against the wheel's code.
Licence of the weights: CC BY 4.0, (c) 2022 A. B. Ma and A. Lerch.
"""

from __future__ import annotations

import codecs
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from asdzoo.audio.features import cached_tensor, mel_spectrogram
from asdzoo.encoders.base import Encoder, per_length

AISFX_SAMPLE_RATE = 44100
SPEC_MAX = 9.457798957824707  # spectrogram normalisation of the ISMIR paper (aisfx.preprocessing)
# resampy's "kaiser_best" (librosa.load's default resampler in librosa 0.9.2, the wheel's pin): a Kaiser-windowed
# sinc reaching 50 input samples to each side, cut off at 0.9173 of the Nyquist frequency (beta fitted to the
# filter table resampy 0.4 ships; the resampled audio then agrees to float32 round-off).
KAISER_BEST = dict(zeros=50, rolloff=0.9173473712608761, beta=12.984583783584311)


@cached_tensor
def _kaiser_kernel(orig: int, new: int, zeros: int, rolloff: float, beta: float) -> tuple[torch.Tensor, int]:
    """Polyphase kernels ``[new, 2 * width + orig]``: ``h(t) = s·r·sinc(s·r·t)·kaiser(s·t / zeros)`` at ``t`` = input
    offset minus output time (in input samples), with ``s = min(1, new / orig)`` and ``r`` the roll-off."""
    scale = min(1.0, new / orig)
    width = math.ceil(zeros / scale) + 1
    offsets = torch.arange(-width, width + orig, dtype=torch.float64)
    t = offsets[None] - torch.arange(new, dtype=torch.float64)[:, None] * orig / new
    u = t * scale / zeros
    beta_t = torch.tensor(beta, dtype=torch.float64)
    window = torch.special.i0(beta_t * torch.sqrt((1 - u**2).clamp(min=0))) / torch.special.i0(beta_t)
    window = torch.where(u.abs() <= 1, window, torch.zeros_like(window))
    return (scale * rolloff * torch.sinc(scale * rolloff * t) * window).float(), width


def resample_kaiser_best(wave: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Resample the last axis as ``librosa.resample(res_type="kaiser_best")``; output length ``ceil(n·new/orig)``."""
    if orig_sr == new_sr:
        return wave
    g = math.gcd(orig_sr, new_sr)
    orig, new = orig_sr // g, new_sr // g
    kernel, width = _kaiser_kernel(orig, new, **KAISER_BEST)
    shape = wave.shape
    x = F.pad(wave.reshape(-1, 1, shape[-1]), (width, width + orig))
    y = F.conv1d(x, kernel.to(x)[:, None], stride=orig).transpose(1, 2).reshape(x.shape[0], -1)
    out_len = math.ceil(new * shape[-1] / orig)
    return y[:, :out_len].reshape(*shape[:-1], out_len)


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor, pool: int) -> torch.Tensor:
        x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return F.max_pool2d(x, pool) if pool > 1 else x


class EmbeddingNet(nn.Module):
    def __init__(self, width: int = 64):
        super().__init__()
        w = [width, width * 2, width * 4, width * 8]
        self.conv_block1 = ConvBlock(1, w[0])
        self.conv_block2 = ConvBlock(w[0], w[1])
        self.conv_block3 = ConvBlock(w[1], w[2])
        self.conv_block4 = ConvBlock(w[2], w[3])

    def forward(self, spec: torch.Tensor, layer: int = 4) -> torch.Tensor:
        """``[B, T, F]`` spectrogram -> ``[B, T', C]`` frames of conv block ``layer``."""
        x = spec[:, None]
        for i, (block, pool) in enumerate(
            zip([self.conv_block1, self.conv_block2, self.conv_block3, self.conv_block4], [2, 2, 2, 1]), 1
        ):
            x = block(x, pool)
            if i == layer:
                break
        return x.mean(dim=3).transpose(1, 2)


def bundled_checkpoint_path() -> str:
    try:
        import aisfx
    except ImportError as err:
        # not a declared dependency: the wheel's pins (librosa==0.9.2, numpy==1.23) break the resolver, so
        # scripts/setup.sh installs it without them
        raise ImportError(
            "the aisfx encoder (genrep, genrep-aisfx) needs the aisfx wheel, which a plain install of asdzoo does not "
            "pull in: run `pip install aisfx==0.1.2 --no-deps`"
        ) from err
    return os.path.join(os.path.dirname(aisfx.__file__), "models", "checkpoint.pth")


def load_aisfx_state(path: str) -> dict[str, torch.Tensor]:
    """The wheel's ``(state_dict, ds_dict)`` pickle, loaded safely: only numpy scalar/dtype globals are allowed."""
    from numpy._core.multiarray import scalar

    allow = [
        (scalar, "numpy.core.multiarray.scalar"),
        np.dtype,
        type(np.dtype("int64")),
        type(np.dtype("float64")),
        codecs.encode,
    ]
    with torch.serialization.safe_globals(allow):
        obj = torch.load(path, map_location="cpu", weights_only=True)
    state = obj[0] if isinstance(obj, (tuple, list)) else obj
    prefix = "embedding_net."
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


class AisfxEncoder(Encoder):
    def __init__(self, layer: int = 4, checkpoint: str | None = None, pretrained: bool = True):
        super().__init__()
        if layer not in (1, 2, 3, 4):
            raise ValueError(f"aisfx layer must be 1-4, got {layer}")
        self.layer = layer
        self.embed_dim = 64 * 2 ** (layer - 1)
        self.sample_rate = 16000  # input rate; resampled to 44.1 kHz inside
        self.net = EmbeddingNet()
        if pretrained:
            self.net.load_state_dict(load_aisfx_state(checkpoint or bundled_checkpoint_path()))
        self.net.eval()

    def spectrogram(self, wave: torch.Tensor) -> torch.Tensor:
        x = resample_kaiser_best(wave, self.sample_rate, AISFX_SAMPLE_RATE)
        x = x / x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12)
        mel = mel_spectrogram(
            x, AISFX_SAMPLE_RATE, n_fft=2048, hop_length=1024, n_mels=96, f_min=0.0, f_max=22050.0, htk=True, norm="l1"
        )
        return torch.log10(mel * 10000.0 + 1.0) / SPEC_MAX

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None):
        return per_length(lambda w: self.net(self.spectrogram(w), self.layer), wave, lengths)
