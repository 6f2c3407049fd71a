"""EAT (Chen et al., IJCAI 2024) re-implemented to load its fairseq-style checkpoints (``{'cfg', 'model'}`` with
``modality_encoders.IMAGE.*`` and ``blocks.*`` keys; fine-tuned ones under ``model.``) without fairseq or timm.

Front-end as ``feature_extract.py``: mean removal, Kaldi fbank (Hann window, 128 bins, 25/10 ms), zero rows
appended up to ``target_length`` frames (None: the next multiple of 16, the README's variable-length option),
``(x + 4.268) / (2 * 4.569)``. 16x16 patches with **time-major** tokens, the fixed sin-cos table from the
checkpoint, a CLS token without position, LayerNorm, post-LN blocks, no final norm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from asdzoo.audio.kaldi import fbank as kaldi_fbank
from asdzoo.encoders.base import Encoder, per_length
from asdzoo.nn.vit import Block, PatchEmbed

EAT_MEAN, EAT_STD = -4.268, 4.569
PREFIX = "modality_encoders.IMAGE."


class EAT(Encoder):
    def __init__(
        self,
        checkpoint: str | None = None,
        layer: int | None = None,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        max_time_patches: int = 768,
        target_length: int | None = None,
        granularity: str = "frame",
    ):
        super().__init__()
        state = None
        if checkpoint is not None:
            ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
            cfg = (ckpt.get("cfg") or {}).get("model", {}) if isinstance(ckpt, dict) else {}
            embed_dim, depth = cfg.get("embed_dim", embed_dim), cfg.get("depth", depth)
            num_heads, mlp_ratio = cfg.get("num_heads", num_heads), cfg.get("mlp_ratio", mlp_ratio)
            state = normalize_eat_keys(ckpt.get("model", ckpt))
            max_time_patches = state[PREFIX + "fixed_positional_encoder.positions"].shape[1] // 8
        if granularity not in ("frame", "utterance"):
            raise ValueError("granularity must be 'frame' (patch tokens averaged over frequency) or 'utterance' (CLS)")
        self.sample_rate, self.embed_dim, self.layer = 16000, embed_dim, layer
        self.target_length, self.granularity = target_length, granularity
        enc = nn.Module()
        enc.extra_tokens = nn.Parameter(torch.zeros(1, 1, embed_dim))
        enc.local_encoder = PatchEmbed(embed_dim, (16, 16))
        enc.fixed_positional_encoder = nn.Module()
        enc.fixed_positional_encoder.register_buffer("positions", torch.zeros(1, max_time_patches * 8, embed_dim))
        enc.context_encoder = nn.Module()
        enc.context_encoder.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.modality_encoders = nn.ModuleDict({"IMAGE": enc})
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, post_norm=True) for _ in range(depth))
        if state is not None:
            self.load_state_dict(state, strict=True)

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        """``[B, S]`` -> normalised fbank ``[B, 1, T, 128]``, padded to ``target_length`` (or a multiple of 16)."""
        wave = wave - wave.mean(dim=-1, keepdim=True)
        fb = kaldi_fbank(wave, num_mel_bins=128, window_type="hanning")
        t = fb.shape[-2]
        target = self.target_length or -(-t // 16) * 16
        fb = F.pad(fb, (0, 0, 0, target - t)) if target > t else fb[..., :target, :]
        return ((fb - EAT_MEAN) / (2 * EAT_STD))[:, None]

    def encode_features(self, x: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """``[B, 1, T, 128]`` -> all tokens ``[B, 1 + 8 T/16, D]`` (CLS first, then time-major patches)."""
        enc = self.modality_encoders["IMAGE"]
        x = enc.local_encoder(x).flatten(2).transpose(1, 2)  # token = t * 8 + f
        x = x + enc.fixed_positional_encoder.positions[:, : x.shape[1]]
        x = enc.context_encoder.norm(torch.cat([enc.extra_tokens.expand(x.shape[0], -1, -1), x], dim=1))
        for i, block in enumerate(self.blocks):
            x = block(x)
            if layer is not None and i == layer:
                break
        return x

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None):
        def run(w):
            tokens = self.encode_features(self.features(w), self.layer)
            if self.granularity == "utterance":
                return tokens[:, :1]
            patches = tokens[:, 1:]
            return patches.view(w.shape[0], -1, 8, patches.shape[-1]).mean(2)  # mean over the 8 frequency patches

        return per_length(run, wave, lengths)


def sincos_positions(dim: int, time_patches: int, freq_patches: int = 8) -> torch.Tensor:
    """MAE's 2-D sin-cos table on a (time, frequency) patch grid, time-major: ``[1, T*F, dim]``. The first half of the
    channels encodes the frequency index, the second half the time index (sin then cos, periods 10000^(2i/d))."""

    def one_d(d: int, pos: torch.Tensor) -> torch.Tensor:
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) / (d / 2))
        angles = pos.reshape(-1, 1).double() * omega[None]
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)

    t, f = torch.meshgrid(torch.arange(time_patches), torch.arange(freq_patches), indexing="ij")
    table = torch.cat([one_d(dim // 2, f), one_d(dim // 2, t)], dim=1)
    return table.float()[None]


# Hub-port (transformers remote code) names -> the fairseq names this module uses. The port was not available to run
# here: these follow public code that uses the port's layout; loading is strict, so a different layout fails loudly.
_PORT_NAMES = {
    "local_encoder.": "local_encoder.",
    "extra_tokens": "extra_tokens",
    "pre_norm.": "context_encoder.norm.",
    "context_encoder.norm.": "context_encoder.norm.",
    "fixed_positional_encoder.": "fixed_positional_encoder.",
}


def normalize_eat_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Encoder keys of pre-trained fairseq (``modality_encoders.IMAGE.*``, ``blocks.*``), fine-tuned
    (``model.``-prefixed) and Hub-port (``model.local_encoder.*``, ``model.pre_norm.*`` ...) checkpoints.

    Decoder, EMA and classifier keys are dropped; a missing positional table is rebuilt (it is fixed, not learned).
    """
    out = {}
    for k, v in state.items():
        k = k.removeprefix("model.")
        if k.startswith(PREFIX + "decoder") or k.startswith("_ema") or k.startswith(("head.", "fc_norm.")):
            continue
        if k.startswith((PREFIX, "blocks.")):
            out[k] = v
            continue
        for port, ours in _PORT_NAMES.items():
            if k.startswith(port):
                out[PREFIX + ours + k[len(port) :]] = v
    positions = PREFIX + "fixed_positional_encoder.positions"
    if out and positions not in out and PREFIX + "extra_tokens" in out:
        out[positions] = sincos_positions(out[PREFIX + "extra_tokens"].shape[-1], 768)
    return out


class SSLAM(EAT):
    """SSLAM (Alex et al., ICLR 2025): EAT-base (768 / 12 blocks / 12 heads, EAT's defaults) trained on
    polyphonic mixtures. Only the weights differ: SSLAM's inference code is EAT's model code byte for byte, with
    EAT's front-end (Kaldi fbank, ``(x + 4.268) / (2 * 4.569)``) and outputs (../shared/reference/sslam/README.md).

    Checkpoint layouts, the same loader as EAT:

    - pre-training: fairseq ``data2vec_multi`` checkpoint with EAT's key set (``modality_encoders.IMAGE.*``,
      ``blocks.*``); the decoder (``modality_encoders.IMAGE.decoder.*``) and ``_ema`` are dropped. SSLAM adds loss
      methods to the pre-training model, no module or parameter.
    - AS2M fine-tuned: EAT's fine-tuned layout, the encoder under ``model.`` plus ``head.{weight,bias}`` (527
      classes, CLS prediction mode, so no ``fc_norm``); the head is dropped, the encoder frames remain.
    - Not checked: the Hugging Face ports (``ta012/SSLAM_pretrain``, ``ta012/SSLAM_AS2M_Finetuned``), which use
      ``trust_remote_code`` code that is not in SSLAM's repository; EAT's Hub-port key mapping may or may not fit.
    """
