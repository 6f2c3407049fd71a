"""M2D (Niizumi et al.) re-implemented after the official portable runtime (``portable_m2d.py`` of the DCASE
2025/2026 Task 4 baselines), loading its checkpoints without timm or nnAudio.

Front-end: log-mel (32 kHz: 800/320, 80 bins 50-16000 Hz; 16 kHz: 400/160, 80 bins 50-8000 Hz; Slaney-area
filters, centred reflect padding), ``log(mel + eps)``, normalised by ``norm_stats``. ViT on 16x16 patches with
**frequency-major** tokens and a CLS token; inputs longer than 1001 frames run in 1001-frame chunks.
Features: ``[B, T', 5*D]`` (``flat_features=False``) or tokens ``[B, 5*T', D]`` (``True``; EVAR-head checkpoints).
Also the DCASE 2026 Task 4 taggers ``M2dAt`` (1 channel) and ``M2dAtSpatial`` (4 channels).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from asdzoo.audio.features import mel_spectrogram
from asdzoo.encoders.base import Encoder, per_length
from asdzoo.nn.vit import Block, PatchEmbed, infer_vit_size

DEFAULT_NORM_STATS = (-7.1, 4.2)
F32_EPS = torch.finfo(torch.float32).eps


@dataclass
class M2DConfig:
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    input_size: tuple[int, int] = (80, 1001)
    patch_size: tuple[int, int] = (16, 16)
    sample_rate: int = 32000
    flat_features: bool = False
    average_per_time_frame: bool = False

    @property
    def grid(self) -> tuple[int, int]:
        return self.input_size[0] // self.patch_size[0], self.input_size[1] // self.patch_size[1]


def parse_m2d_name(name: str) -> dict:
    """Official folder names like ``m2d_as_vit_base-80x1001p16x16p32k-...`` -> input, patch and sample-rate fields."""
    m = re.search(r"(\d+)x(\d+)p(\d+)x(\d+)(?:p(\d+)k)?", name)
    if not m:
        return {}
    out = {"input_size": (int(m[1]), int(m[2])), "patch_size": (int(m[3]), int(m[4]))}
    if m[5]:
        out["sample_rate"] = int(m[5]) * 1000
    return out


class M2DViT(nn.Module):
    """The official ``LocalViT`` backbone.

    Key names: ``cls_token``, ``pos_embed``, ``patch_embed.proj``, ``blocks``, ``norm``.
    """

    def __init__(self, cfg: M2DConfig):
        super().__init__()
        self.cfg = cfg
        f, t = cfg.grid
        self.patch_embed = PatchEmbed(cfg.embed_dim, cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + f * t, cfg.embed_dim))
        self.blocks = nn.ModuleList(Block(cfg.embed_dim, cfg.num_heads) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.register_buffer("norm_stats", torch.tensor(DEFAULT_NORM_STATS))

    def forward_encoder(self, x: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """Normalised log-mel ``[B, 1, F, T]`` (T <= input frames) -> tokens ``[B, 1 + Fp*Tp, D]`` (CLS first)."""
        x = self.patch_embed(x)
        fp, tp = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)  # frequency-major: token = f * Tp + t
        pos = self.pos_embed[:, 1:]
        if x.shape[1] < pos.shape[1]:  # shorter input: keep the first Tp time columns of the 2-D table
            pos = pos.reshape(1, self.cfg.grid[0], -1, pos.shape[-1])[:, :, :tp].reshape(1, fp * tp, -1)
        x = torch.cat([(self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1), x + pos], dim=1)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if layer is not None and i == layer:
                return x
        return self.norm(x)


class M2D(Encoder):
    def __init__(
        self,
        checkpoint: str | None = None,
        layer: int | None = None,
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        sample_rate: int | None = None,
        input_size: tuple[int, int] | None = None,
        patch_size: tuple[int, int] | None = None,
        flat_features: bool | None = None,
        average_per_time_frame: bool = False,
        num_classes: int | None = None,
    ):
        super().__init__()
        overrides = {
            k: v
            for k, v in dict(
                embed_dim=embed_dim,
                depth=depth,
                num_heads=num_heads,
                sample_rate=sample_rate,
                input_size=input_size,
                patch_size=patch_size,
            ).items()
            if v is not None
        }
        state, head = {}, {}
        fields: dict = {}
        if checkpoint is not None:
            state, head = load_m2d_state(checkpoint)
            fields.update(parse_m2d_name(str(checkpoint)))
            fields.update(infer_vit_size(state))
        fields.update(overrides)
        if flat_features is None:  # the official rule: an EVAR head over embed_dim features means flat features
            flat_features = bool(head) and head["head.weight"].shape[-1] == fields.get("embed_dim", 768)
        self.cfg = M2DConfig(
            **{
                **asdict(M2DConfig()),
                **fields,
                "flat_features": flat_features,
                "average_per_time_frame": average_per_time_frame,
            }
        )
        self.layer = layer
        self.backbone = M2DViT(self.cfg)
        self.sample_rate = 16000  # protocol input rate; resampled to cfg.sample_rate inside
        fp = self.cfg.grid[0]
        self.embed_dim = self.cfg.embed_dim if self.cfg.flat_features else fp * self.cfg.embed_dim
        n_classes = num_classes or (head["head.weight"].shape[0] if head else None)
        if n_classes:
            self.head_norm = nn.BatchNorm1d(self.embed_dim, affine=False)
            self.head = nn.Linear(self.embed_dim, n_classes)
        if state:
            self.backbone.load_state_dict(state, strict=True)
        if head:
            self.head_norm.running_mean.copy_(head["norm.running_mean"])
            self.head_norm.running_var.copy_(head["norm.running_var"])
            self.head.load_state_dict({"weight": head["head.weight"], "bias": head["head.bias"]})

    # -- front-end -------------------------------------------------------------------------------
    @property
    def stft(self) -> tuple[int, int, float]:
        return (800, 320, 16000.0) if self.cfg.sample_rate == 32000 else (400, 160, 8000.0)

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """``[B, S]`` at ``cfg.sample_rate`` -> ``[B, 1, 80, 1 + S // hop]`` log-mel (before normalisation)."""
        n_fft, hop, f_max = self.stft
        mel = mel_spectrogram(
            wave,
            self.cfg.sample_rate,
            n_fft,
            hop,
            self.cfg.input_size[0],
            f_min=50.0,
            f_max=f_max,
            htk=False,
            norm="slaney",
            center=True,
            pad_mode="reflect",
        )
        return torch.log(mel + F32_EPS).transpose(-1, -2)[:, None]

    def normalize(self, lms: torch.Tensor) -> torch.Tensor:
        return (lms - self.backbone.norm_stats[0]) / self.backbone.norm_stats[1]

    # -- official encode ---------------------------------------------------------------------------
    def chunk_padding(self, frames: int) -> int:
        """Zero frames appended before chunking: the DCASE runtime pads the whole LMS to a multiple of the patch
        width, so a 1101-frame input gives 62 + 6 patches (../shared/reference/m2d/README.md)."""
        patch_t = self.cfg.patch_size[1]
        return (patch_t - frames % patch_t) % patch_t

    def encode_lms(
        self,
        lms: torch.Tensor,
        layer: int | None = None,
        flat_features: bool | None = None,
        average_per_time_frame: bool | None = None,
    ) -> torch.Tensor:
        """Normalised ``[B, 1, F, T]`` -> features, in 1001-frame chunks concatenated along time. The layout is
        ``cfg``'s unless given (M2D-CLAP needs both: flat tokens for its projector, stacked ones as frames)."""
        flat = self.cfg.flat_features if flat_features is None else flat_features
        average = self.cfg.average_per_time_frame if average_per_time_frame is None else average_per_time_frame
        unit = self.cfg.input_size[1]
        n_chunk = math.ceil(lms.shape[-1] / unit)
        lms = F.pad(lms, (0, self.chunk_padding(lms.shape[-1])))
        outs = []
        for i in range(n_chunk):
            emb = self.backbone.forward_encoder(lms[..., i * unit : (i + 1) * unit], layer)
            outs.append(self.tokens_to_features(emb, flat, average))
        return torch.cat(outs, dim=1)

    def tokens_to_features(self, tokens: torch.Tensor, flat: bool, average: bool = False) -> torch.Tensor:
        """One chunk's ViT output ``[B, 1 + Fp*Tp, D]`` (CLS first) -> its features in the chosen layout."""
        emb = tokens[:, 1:]
        b, n, d = emb.shape
        fp = self.cfg.grid[0]
        if flat:
            return emb.view(b, fp, n // fp, d).mean(1) if average else emb
        return emb.view(b, fp, n // fp, d).permute(0, 2, 1, 3).reshape(b, n // fp, fp * d)  # 'b (f t) d -> b t (f d)'

    def encode(self, wave: torch.Tensor, layer: int | None = None, **layout: bool) -> torch.Tensor:
        """Waveform at ``cfg.sample_rate`` ``[B, S]`` -> features (the official ``encode``); ``layout`` as in
        :meth:`encode_lms`."""
        return self.encode_lms(self.normalize(self.log_mel(wave)), layer, **layout)

    def logits(self, wave: torch.Tensor) -> torch.Tensor:
        """EVAR head: time mean of ``encode`` -> BatchNorm (running stats) -> Linear."""
        return self.head(self.head_norm(self.encode(wave).mean(1)))

    def timestamps_ms(self, num_samples: int, frames: int) -> torch.Tensor:
        return torch.arange(frames, dtype=torch.float64) * (num_samples / self.cfg.sample_rate) / frames * 1000

    # -- encoder protocol --------------------------------------------------------------------------
    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None):
        from asdzoo.audio.features import resample

        def run(w):
            return self.encode(resample(w, self.sample_rate, self.cfg.sample_rate), self.layer)

        return per_length(run, wave, lengths)


def load_m2d_state(path: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Encoder-only weights (flat, or under ``model``; prefix ``module.ar.runtime.backbone.`` stripped) and the
    optional EVAR head (``module.head.*``)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return split_m2d_state(ckpt.get("model", ckpt) if isinstance(ckpt, dict) else ckpt)


def split_m2d_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A loaded state dict -> (backbone keys, EVAR head keys): the prefix ``module.ar.runtime.backbone.`` stripped,
    other ``module.*`` keys dropped, ``norm_stats`` defaulted when absent (the portable runtime's rules)."""
    backbone, head = {}, {}
    for k, v in state.items():
        k = k.replace("module.ar.runtime.backbone.", "")
        if k.startswith("module.head."):
            key = k[len("module.head.") :].replace("mlp.mlp.0.", "head.")
            head[key] = v
        elif not k.startswith("module."):
            backbone[k] = v
    if "norm_stats" not in backbone:
        backbone["norm_stats"] = torch.tensor(DEFAULT_NORM_STATS)
    return backbone, head


# ------------------------------------------------------------------------------------------------
# DCASE 2026 Task 4 audio taggers (M2dAt / M2dAtSpatial)


class HeadAvgLinear(nn.Module):
    """Time mean -> BatchNorm (no affine) -> Linear + LayerNorm + ReLU into ``num_outputs`` slots -> an MLP each."""

    def __init__(
        self, feature_d: int, num_classes: int = 19, num_outputs: int = 3, track_in: int = 1024, track_hidden: int = 512
    ):
        super().__init__()
        self.num_outputs, self.track_in = num_outputs, track_in
        self.m2d_out_norm = nn.BatchNorm1d(feature_d, affine=False)
        self.linear = nn.Sequential(
            nn.Linear(feature_d, num_outputs * track_in), nn.LayerNorm(num_outputs * track_in), nn.ReLU()
        )
        self.tracks = nn.ModuleList(
            nn.Sequential(
                nn.Linear(track_in, track_hidden),
                nn.LayerNorm(track_hidden),
                nn.ReLU(),
                nn.Linear(track_hidden, num_classes),
            )
            for _ in range(num_outputs)
        )

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.classify(feats.mean(1))

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """Time-pooled features ``[B, feature_d]`` -> logits ``[B, num_outputs, num_classes]`` (for poolings of
        one's own, e.g. over unmasked frames only)."""
        x = self.linear(self.m2d_out_norm(pooled)).view(-1, self.num_outputs, self.track_in)
        return torch.stack([track(x[:, k]) for k, track in enumerate(self.tracks)], dim=1)


class M2DTagger(nn.Module):
    """``M2dAt`` (``channels=1``: reference channel only) or ``M2dAtSpatial`` (``channels=4``: every channel through the
    same encoder, features concatenated channel-major per frame). Logits ``[B, num_outputs, num_classes]``; the last
    class is silence."""

    def __init__(self, m2d: M2D, channels: int = 1, ref_channel: int = 0, **head_args):
        super().__init__()
        self.m2d, self.channels, self.ref_channel = m2d, channels, ref_channel
        self.head = HeadAvgLinear(channels * m2d.embed_dim, **head_args)

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        """``[B, C, S]`` at the encoder's sample rate."""
        return self.head(self.features(mixture))

    def encoder_input(self, mixture: torch.Tensor) -> torch.Tensor:
        """The waveforms the encoder sees: ``[B, S]`` (reference channel) or ``[B * C, S]`` (every channel)."""
        return mixture[:, self.ref_channel] if self.channels == 1 else mixture.flatten(0, 1)

    def stack_channels(self, feats: torch.Tensor) -> torch.Tensor:
        """Encoder features ``[B * C, T, D]`` -> ``[B, T, C * D]``, channel-major per frame (identity for 1 channel)."""
        bc, t, d = feats.shape
        b = bc // self.channels
        return feats.view(b, self.channels, t, d).permute(0, 2, 1, 3).reshape(b, t, self.channels * d)

    def features(self, mixture: torch.Tensor) -> torch.Tensor:
        """``[B, C, S]`` -> the head's input ``[B, T', channels * embed_dim]``."""
        return self.stack_channels(self.m2d.encode(self.encoder_input(mixture)))

    @torch.no_grad()
    def predict(self, mixture: torch.Tensor) -> dict[str, torch.Tensor]:
        probs = self.forward(mixture).softmax(-1)
        best, idx = probs.max(-1)
        return {"label_vector": F.one_hot(idx, probs.shape[-1]).float(), "probabilities": best}


def load_m2d_tagger(
    path: str, num_heads: int | None = None, track_in: int | None = None, track_hidden: int | None = None
) -> M2DTagger:
    """A DCASE Task 4 tagger checkpoint (Lightning ``{'state_dict': {'model.<key>': ...}}``); nnAudio's fixed
    ``to_spec.*`` buffers are ignored (asdzoo computes the same front-end itself). The head count is not stored in
    the weights: pass ``num_heads`` unless it is embed_dim / 64 (true of the ViT-Base checkpoints)."""
    sd = torch.load(path, map_location="cpu", weights_only=True)
    sd = {k.removeprefix("model."): v for k, v in sd.get("state_dict", sd).items()}
    sd = {k: v for k, v in sd.items() if "to_spec." not in k}
    spatial = any(k.startswith("m2d.") for k in sd)
    enc_prefix = "m2d." if spatial else ""
    backbone = {
        k[len(enc_prefix) + len("backbone.") :]: v for k, v in sd.items() if k.startswith(enc_prefix + "backbone.")
    }
    size = infer_vit_size(backbone)
    if num_heads is not None:
        size["num_heads"] = num_heads
    m2d = M2D(**size, num_classes=None)
    m2d.backbone.load_state_dict(backbone, strict=True)
    head = {k[len("head.") :]: v for k, v in sd.items() if k.startswith("head.")}
    feature_d = head["m2d_out_norm.running_mean"].shape[0]
    channels = feature_d // m2d.embed_dim
    n_out = sum(1 for k in head if k.startswith("tracks.") and k.endswith(".0.weight"))
    tagger = M2DTagger(
        m2d,
        channels=channels,
        num_classes=head["tracks.0.3.weight"].shape[0],
        num_outputs=n_out,
        track_in=track_in or head["tracks.0.0.weight"].shape[1],
        track_hidden=track_hidden or head["tracks.0.0.weight"].shape[0],
    )
    tagger.head.load_state_dict(head, strict=True)
    return tagger.eval()
