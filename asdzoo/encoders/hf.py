"""Encoders that transformers ships: AST, CLAP (HTS-AT audio tower) and WavLM, behind the encoder protocol.

``checkpoint`` is a Hub id or a local folder (``from_pretrained``); ``config`` builds a random-weight model
from a config dict instead (tests, benchmarks, offline use). Inputs are 16 kHz; CLAP resamples to 48 kHz.
Every clip runs at its own length, so padding never changes a clip's frames.
"""

from __future__ import annotations

import math

import torch

from asdzoo.audio.features import resample
from asdzoo.audio.kaldi import fbank as kaldi_fbank
from asdzoo.encoders.base import Encoder, per_length

AST_MEAN, AST_STD = -4.2677393, 4.5689974  # ASTFeatureExtractor defaults (AudioSet statistics)


def _build(model_cls, config_cls, checkpoint: str | None, config: dict | None, **load_kw):
    if config is not None:
        return model_cls(config_cls(**config))
    return model_cls.from_pretrained(checkpoint, **load_kw)


class ASTEncoder(Encoder):
    """Audio Spectrogram Transformer: Kaldi fbank (Hann, 128 bins) padded to ``max_length`` frames and normalised
    with the AudioSet statistics; frames are the patch tokens averaged over frequency rows."""

    def __init__(
        self,
        checkpoint: str | None = "MIT/ast-finetuned-audioset-10-10-0.4593",
        layer: int | None = None,
        config: dict | None = None,
    ):
        super().__init__()
        from transformers import ASTConfig, ASTModel

        self.model = _build(ASTModel, ASTConfig, checkpoint, config)
        c = self.model.config
        self.layer, self.sample_rate, self.embed_dim = layer, 16000, c.hidden_size
        self.max_length, self.num_mel_bins = c.max_length, c.num_mel_bins
        self.f_rows = (c.num_mel_bins - c.patch_size) // c.frequency_stride + 1
        self.t_stride, self.patch = c.time_stride, c.patch_size

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        """``[B, S]`` -> ``[B, max_length, mel]`` as ``ASTFeatureExtractor`` computes them."""
        fb = kaldi_fbank(wave, num_mel_bins=self.num_mel_bins, window_type="hanning")
        t = fb.shape[-2]
        fb = (
            torch.nn.functional.pad(fb, (0, 0, 0, self.max_length - t))
            if t < self.max_length
            else fb[..., : self.max_length, :]
        )
        return (fb - AST_MEAN) / (AST_STD * 2)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None):
        def run(w):
            out = self.model(self.features(w), output_hidden_states=self.layer is not None)
            h = out.last_hidden_state if self.layer is None else out.hidden_states[self.layer + 1]
            patches = h[:, 2:]  # CLS and distillation tokens first
            t_cols = patches.shape[1] // self.f_rows
            frames = patches.view(w.shape[0], self.f_rows, t_cols, -1).mean(1)  # frequency-major tokens
            valid_frames = min(1 + (w.shape[-1] - 400) // 160, self.max_length)
            return frames[:, : max(1, min(t_cols, math.ceil((valid_frames - self.patch) / self.t_stride) + 1))]

        return per_length(run, wave, lengths)


class ClapEncoder(Encoder):
    """CLAP audio tower (HTS-AT) with projection. ``enable_fusion=False`` models take one 10 s crop
    (``truncation='rand_trunc'``, repeat-padding shorter clips, as their feature extractor does); fused models take
    the 4-channel fusion input (``truncation='fusion'``). Frames: the last hidden state averaged over frequency.
    The front-end is transformers' numpy feature extractor, so no gradient reaches the waveform (the model trains)."""

    def __init__(
        self,
        checkpoint: str | None = "laion/clap-htsat-unfused",
        layer: int | None = None,
        config: dict | None = None,
        project: bool = False,
    ):
        super().__init__()
        from transformers import ClapAudioConfig, ClapAudioModelWithProjection, ClapFeatureExtractor

        self.model = _build(ClapAudioModelWithProjection, ClapAudioConfig, checkpoint, config)
        c = self.model.config
        self.fusion = bool(c.enable_fusion)
        self.extractor = ClapFeatureExtractor(
            feature_size=c.num_mel_bins,
            sampling_rate=48000,
            truncation="fusion" if self.fusion else "rand_trunc",
            padding="repeatpad",
        )
        self.layer, self.sample_rate, self.project = layer, 16000, project
        self.embed_dim = c.projection_dim if project else c.hidden_size  # hidden_size: width of the last stage

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None):
        def run(w):
            x48 = resample(w, self.sample_rate, 48000)
            feats = self.extractor([x.detach().cpu().numpy() for x in x48], sampling_rate=48000, return_tensors="pt")
            kwargs = {"input_features": feats["input_features"].to(w.device)}
            if self.fusion:
                kwargs["is_longer"] = feats["is_longer"].to(w.device)
            out = self.model(**kwargs)
            if self.project:
                return out.audio_embeds[:, None]
            return out.last_hidden_state.mean(2).transpose(1, 2)

        return per_length(run, wave, lengths)


class WavLMEncoder(Encoder):
    """WavLM on the raw waveform (20 ms frames); ``normalize`` standardises each clip as the feature extractors of
    the large models do."""

    def __init__(
        self,
        checkpoint: str | None = "microsoft/wavlm-base-plus",
        layer: int | None = None,
        config: dict | None = None,
        normalize: bool = False,
    ):
        super().__init__()
        from transformers import WavLMConfig, WavLMModel

        self.model = _build(WavLMModel, WavLMConfig, checkpoint, config)
        # transformers forces requires_grad on the (sliced, non-leaf) input in training mode for gradient
        # checkpointing; the convolution weights still train without it
        self.model.feature_extractor._requires_grad = False
        self.layer, self.sample_rate, self.normalize = layer, 16000, normalize
        self.embed_dim = self.model.config.hidden_size

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None):
        def run(w):
            if self.normalize:
                w = (w - w.mean(-1, keepdim=True)) / torch.sqrt(w.var(-1, keepdim=True) + 1e-7)
            out = self.model(w, output_hidden_states=self.layer is not None)
            return out.last_hidden_state if self.layer is None else out.hidden_states[self.layer + 1]

        return per_length(run, wave, lengths)
