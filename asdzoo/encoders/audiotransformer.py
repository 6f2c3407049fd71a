"""CED (Dinkel et al., consistent ensemble distillation) and Dasheng (Dinkel et al., Interspeech 2024): the
``AudioTransformer`` family, re-implemented to load the official ``{'model': ...}`` (CED) and
``{'model', 'config'}`` (Dasheng) checkpoints with their parameter names.

Front-end (torchaudio defaults as the originals use them): 512/160 STFT with a periodic Hann window, centred
reflect padding, power 2, 64 HTK mel bands 0-8000 Hz without filter normalisation (window and filters are
checkpoint buffers), ``AmplitudeToDB(top_db=120)``, then a BatchNorm over mel bins (``init_bn``).
torchaudio floors the dB values at (max - 120) over the WHOLE batch; asdzoo floors per clip, so a clip's
features never depend on its batch-mates, and offers the batch-wide floor as ``official_batch_top_db``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from asdzoo.audio.features import mel_filterbank
from asdzoo.encoders.base import Encoder, per_length
from asdzoo.nn.vit import Block, PatchEmbed, infer_vit_size


class _Spectrogram(nn.Module):
    def __init__(self, n_fft: int):
        super().__init__()
        self.register_buffer("window", torch.hann_window(n_fft))


class _MelScale(nn.Module):
    def __init__(self, n_fft: int, n_mels: int, sample_rate: int, f_max: float):
        super().__init__()
        self.register_buffer("fb", mel_filterbank(sample_rate, n_fft, n_mels, 0.0, f_max, htk=True, norm=None))


class MelFrontEnd(nn.Module):
    def __init__(
        self, n_fft: int = 512, hop: int = 160, n_mels: int = 64, sample_rate: int = 16000, f_max: float = 8000.0
    ):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.spectrogram = _Spectrogram(n_fft)
        self.mel_scale = _MelScale(n_fft, n_mels, sample_rate, f_max)

    def forward(self, wave: torch.Tensor, top_db: float = 120.0, batch_floor: bool = False) -> torch.Tensor:
        """``[B, S] -> [B, n_mels, 1 + S // hop]`` in dB, floored at max - top_db (per clip or over the batch)."""
        spec = (
            torch.stft(
                wave,
                self.n_fft,
                self.hop,
                window=self.spectrogram.window,
                center=True,
                pad_mode="reflect",
                return_complex=True,
            )
            .abs()
            .pow(2)
        )
        mel = (spec.transpose(-1, -2) @ self.mel_scale.fb).transpose(-1, -2)
        db = 10.0 * torch.log10(mel.clamp(min=1e-10))
        peak = db.amax() if batch_floor else db.amax(dim=(-2, -1), keepdim=True)
        return torch.maximum(db, peak - top_db)


class AudioTransformerBase(Encoder):
    """Shared parts: front-end, init_bn over mel bins, patch embedding, separable time/frequency positions,
    pre-LN blocks (eps 1e-6) and the final norm."""

    def __init__(
        self,
        embed_dim: int,
        depth: int,
        num_heads: int,
        patch_size,
        patch_stride,
        target_length: int,
        n_freq_patches: int,
        max_time_patches: int,
        layer: int | None,
        official_batch_top_db: bool,
    ):
        super().__init__()
        self.sample_rate = 16000
        self.embed_dim = embed_dim
        self.layer = layer
        self.target_length = target_length
        self.official_batch_top_db = official_batch_top_db
        self.front_end = nn.Sequential(MelFrontEnd())
        self.init_bn = nn.Sequential(nn.Identity(), nn.BatchNorm2d(64), nn.Identity())
        self.patch_embed = PatchEmbed(embed_dim, tuple(patch_size), tuple(patch_stride))
        self.time_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, 1, max_time_patches))
        self.freq_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, n_freq_patches, 1))
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

    def logmel(self, wave: torch.Tensor) -> torch.Tensor:
        return self.front_end[0](wave, batch_floor=self.official_batch_top_db)

    def spec(self, wave: torch.Tensor) -> torch.Tensor:
        """``[B, S] -> [B, 1, 64, T]`` after init_bn."""
        x = self.logmel(wave)[:, None]
        return self.init_bn[1](x.transpose(1, 2)).transpose(1, 2)

    def encode_patches(
        self, patches: torch.Tensor, key_padding_mask: torch.Tensor | None = None, layer: int | None = None
    ) -> torch.Tensor:
        """Patch grid ``[B, D, F', T']`` -> tokens ``[B, F'*T', D]`` (frequency-major) through the blocks."""
        t = patches.shape[-1]
        x = patches + self.time_pos_embed[..., :t] + self.freq_pos_embed
        x = x.flatten(2).transpose(1, 2)
        for i, block in enumerate(self.blocks):
            x = block(x, key_padding_mask)
            if layer is not None and i == layer:
                return x
        return self.norm(x)

    @classmethod
    def _checkpoint(cls, path: str) -> dict:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        return ckpt if "model" in ckpt else {"model": ckpt}


class Dasheng(AudioTransformerBase):
    """Dasheng: 64x4 patches (one token per 40 ms), chunks of ``target_length / 4`` patches, optional key mask."""

    def __init__(
        self,
        checkpoint: str | None = None,
        layer: int | None = None,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        target_length: int = 1008,
        patch_size=(64, 4),
        patch_stride=(64, 4),
        official_batch_top_db: bool = False,
    ):
        state = None
        if checkpoint is not None:
            ckpt = self._checkpoint(checkpoint)
            cfg = ckpt.get("config", {})
            embed_dim, depth = cfg.get("embed_dim", embed_dim), cfg.get("depth", depth)
            num_heads, target_length = cfg.get("num_heads", num_heads), cfg.get("target_length", target_length)
            patch_size, patch_stride = cfg.get("patch_size", patch_size), cfg.get("patch_stride", patch_stride)
            state = ckpt["model"]
        super().__init__(
            embed_dim,
            depth,
            num_heads,
            patch_size,
            patch_stride,
            target_length,
            1,
            target_length // patch_stride[1],
            layer,
            official_batch_top_db,
        )
        self.hop_patch = 160 * patch_stride[1]
        if state is not None:
            self.load_state_dict(state, strict=True)

    def forward_features(
        self, wave: torch.Tensor, x_length: torch.Tensor | None = None, layer: int | None = None
    ) -> torch.Tensor:
        """Official forward: ``[B, S]`` -> ``[B, T // 4, D]``; ``x_length`` (samples) masks padded keys per chunk."""
        patches = self.patch_embed(self.spec(wave))
        n = patches.shape[-1]
        mask = None
        if x_length is not None:
            mask = torch.arange(n, device=wave.device)[None] >= (x_length // self.hop_patch)[:, None]
        chunk = self.time_pos_embed.shape[-1]
        outs = [
            self.encode_patches(patches[..., i : i + chunk], None if mask is None else mask[:, i : i + chunk], layer)
            for i in range(0, n, chunk)
        ]
        return torch.cat(outs, dim=1)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None):
        return per_length(lambda w: self.forward_features(w, None, self.layer), wave, lengths)


class CED(AudioTransformerBase):
    """CED: 16x16 patches (4 frequency rows), chunks of ``target_length`` frames with the last one zero-padded.
    The original drops the last chunk when the length is an exact multiple of ``target_length`` (> 1 chunk); that
    quirk is reproduced only with ``official_chunk_quirk=True``."""

    def __init__(
        self,
        checkpoint: str | None = None,
        layer: int | None = None,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        target_length: int = 1012,
        outputdim: int = 527,
        official_chunk_quirk: bool = False,
        official_batch_top_db: bool = False,
    ):
        state = None
        if checkpoint is not None:
            state = self._checkpoint(checkpoint)["model"]
            size = infer_vit_size(state)
            embed_dim, depth = size["embed_dim"], size["depth"]
            if num_heads == 12 and embed_dim != 768:
                num_heads = size["num_heads"]
            outputdim = state["outputlayer.1.weight"].shape[0] if "outputlayer.1.weight" in state else outputdim
        super().__init__(
            embed_dim,
            depth,
            num_heads,
            (16, 16),
            (16, 16),
            target_length,
            4,
            target_length // 16,
            layer,
            official_batch_top_db,
        )
        self.official_chunk_quirk = official_chunk_quirk
        self.outputlayer = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, outputdim))
        if state is not None:
            self.load_state_dict(state, strict=True)

    def chunks(self, spec: torch.Tensor) -> list[torch.Tensor]:
        """Split ``[B, 1, 64, T]`` along time into target-length chunks, zero-padding the last one."""
        t, n = spec.shape[-1], self.target_length
        if t <= n:
            return [spec]
        parts = list(spec.split(n, dim=-1))
        if parts[-1].shape[-1] < n:
            parts[-1] = F.pad(parts[-1], (0, n - parts[-1].shape[-1]))
        elif self.official_chunk_quirk:
            parts = parts[:-1]
        return parts

    def chunk_tokens(self, wave: torch.Tensor, layer: int | None = None) -> list[torch.Tensor]:
        return [self.encode_patches(self.patch_embed(c), None, layer) for c in self.chunks(self.spec(wave))]

    def probabilities(self, wave: torch.Tensor) -> torch.Tensor:
        """Official ``model(wav)``: sigmoid(outputlayer(token mean)) averaged over chunks."""
        return torch.stack([torch.sigmoid(self.outputlayer(t.mean(1))) for t in self.chunk_tokens(wave)]).mean(0)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None):
        def run(w):
            frames_total = 1 + w.shape[-1] // 160
            out = []
            for i, tokens in enumerate(self.chunk_tokens(w, self.layer)):
                t_cols = tokens.shape[1] // 4
                frames = tokens.view(w.shape[0], 4, t_cols, -1).mean(1)  # mean over the 4 frequency rows
                valid = frames_total - i * self.target_length
                out.append(frames[:, : max(1, min(t_cols, math.ceil(valid / 16)))])
            return torch.cat(out, dim=1)

        return per_length(run, wave, lengths)
