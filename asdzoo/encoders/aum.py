"""Audio-Mamba (AuM, Erol et al. 2024) re-implemented from ../shared/reference/aum/README.md, with the space-to-depth
(pixel-unshuffle) tokenisation and optional gated fusion of the UASD paper (../shared/papers/004, §2.1-2.2, §3.2).

Official key names (``patch_embed.proj``, ``cls_token``, ``pos_embed.pos_embed``, ``layers.i.{mixer,norm}``,
``norm_f``, ``head``): AuM checkpoints load with ``strict=True`` when ``unshuffle=1`` and ``gated_fusion=False``.

Tokenisation (official): spectrogram ``[B, T, F]`` -> ``[B, 1, F, T]`` -> (pixel-unshuffle by r: ``[B, r^2, F/r, T/r]``)
-> Conv2d p x p, stride p -> ``N = F T / (p^2 r^2)`` tokens, frequency-major (token = f * Tp + t); the class token is
inserted at ``N // 2``; ``pos_embed`` is stored prefix-first (row 0 = class token).

Front-ends (16 kHz input, ``spectrogram_size = (mel bins, frames)``, cropped or zero-padded to ``frames`` in log
units before normalisation, as the official dataloader pads its fbank):

- ``"stft"`` (the paper, §3.2): 1024-sample periodic Hann window, n_fft 1024, hop 156, centred with zero padding,
  so 10 s gives 160000 // 156 + 1 = 1026 frames, cropped to 1024; 128 HTK mel bands 0-8 kHz (unnormalised
  triangles, Kaldi's convention), natural log floored at float32 eps.
- ``"kaldi"`` (official AuM): Kaldi fbank (25 ms Hann, 10 ms shift, 128 bins) of the mean-removed clip, 998 frames
  for 10 s, padded to 1024; the front-end the official checkpoints were trained with.

Both normalise as the official dataloader: ``(x - mean) / (2 * std)`` with the AudioSet statistics
(mean -4.2677393, std 4.5689974; README "Which variant").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from asdzoo.audio.features import mel_spectrogram
from asdzoo.audio.kaldi import fbank as kaldi_fbank
from asdzoo.encoders.base import Encoder, full_lengths, per_length
from asdzoo.nn.mamba import Block, Mamba, RMSNorm, drop_path

AUDIOSET_MEAN, AUDIOSET_STD = -4.2677393, 4.5689974
F32_EPS = torch.finfo(torch.float32).eps
DEFAULTS = dict(embed_dim=768, depth=24, d_state=16, bimamba_type="v2", num_classes=0, patch_size=16, unshuffle=1)


class PatchEmbed(nn.Module):
    """Conv2d patch projection (official ``FlexiPatchEmbed`` at its native patch size: key ``patch_embed.proj``)."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # frequency-major tokens


class PosEmbed(nn.Module):
    """Learned absolute positions, prefix-first ``(1, 1 + N, D)`` (official ``FlexiPosEmbed``: key
    ``pos_embed.pos_embed``)."""

    def __init__(self, num_tokens: int, embed_dim: int):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + num_tokens, embed_dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)


class AudioMamba(Encoder):
    """AuM encoder. ``forward(wave, lengths)`` (protocol): final normed patch tokens of the time columns that cover
    the clip (``layer=i``: block i's residual-stream output instead). :meth:`embed_layers` gives the class-token
    embedding and one mean-pooled vector per block for multi-level heads; :meth:`forward_spectrogram` is the
    official ``model(x)`` path on a normalised spectrogram.

    Sizes left as None come from ``checkpoint`` when given, else AuM-base v2 (``DEFAULTS``; ``num_classes=0``
    means no head)."""

    def __init__(
        self,
        checkpoint: str | None = None,
        layer: int | None = None,
        spectrogram_size: tuple[int, int] = (128, 1024),
        patch_size: int | None = None,
        depth: int | None = None,
        embed_dim: int | None = None,
        d_state: int | None = None,
        bimamba_type: str | None = None,
        num_classes: int | None = None,
        unshuffle: int | None = None,
        gated_fusion: bool = False,
        if_devide_out: bool = True,
        drop_path_rate: float = 0.0,
        frontend: str = "stft",
        hop_length: int = 156,
    ):
        super().__init__()
        state = load_aum_state(checkpoint) if checkpoint is not None else {}
        given = dict(
            embed_dim=embed_dim,
            depth=depth,
            d_state=d_state,
            bimamba_type=bimamba_type,
            num_classes=num_classes,
            patch_size=patch_size,
            unshuffle=unshuffle,
        )
        size = {**DEFAULTS, **infer_aum_config(state), **{k: v for k, v in given.items() if v is not None}}
        if frontend not in ("stft", "kaldi"):
            raise ValueError(f"frontend must be 'stft' or 'kaldi', got {frontend!r}")
        self.layer, self.frontend, self.hop_length = layer, frontend, hop_length
        self.n_mels, self.target_frames = spectrogram_size
        self.depth, self.embed_dim = size["depth"], size["embed_dim"]
        self.patch_size, self.unshuffle = size["patch_size"], size["unshuffle"]
        self.grid = self._grid()
        self.num_patches = self.grid[0] * self.grid[1]
        self.token_position = self.num_patches // 2  # middle class token (AuM default)
        self.drop_path_rate = drop_path_rate
        self.patch_embed = PatchEmbed(self.unshuffle**2, self.embed_dim, self.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.pos_embed = PosEmbed(self.num_patches, self.embed_dim)
        self.layers = nn.ModuleList(
            Block(
                self.embed_dim,
                Mamba(
                    self.embed_dim,
                    d_state=size["d_state"],
                    bimamba_type=size["bimamba_type"],
                    if_devide_out=if_devide_out,
                    gated_fusion=gated_fusion,
                ),
                drop_path=rate,
            )
            for rate in block_drop_path_rates(drop_path_rate, self.depth)
        )
        self.norm_f = RMSNorm(self.embed_dim)
        n_cls = size["num_classes"]
        self.head = nn.Linear(self.embed_dim, n_cls) if n_cls else nn.Identity()
        if state:
            self._load(state, checkpoint)

    def _grid(self) -> tuple[int, int]:
        unit = self.patch_size * self.unshuffle
        if self.n_mels % unit or self.target_frames % unit:
            raise ValueError(
                f"spectrogram_size {(self.n_mels, self.target_frames)} must be a multiple of patch_size * unshuffle "
                f"= {unit}"
            )
        return self.n_mels // unit, self.target_frames // unit

    def _load(self, state: dict[str, torch.Tensor], path: str) -> None:
        try:
            self.load_state_dict(state, strict=True)
        except RuntimeError as e:
            first = str(e).replace("\n", " ")[:400]
            raise ValueError(f"{path}: not an AuM state dict for this config: {first}") from None

    # -- official model(x) path ------------------------------------------------------------------
    def tokens(self, spec: torch.Tensor) -> torch.Tensor:
        """Normalised ``[B, T, F]`` -> block-0 input ``[B, 1 + N, D]``: patches (after pixel-unshuffle), the class
        token at ``N // 2``, positions added (row 0 of the table belongs to the class token)."""
        x = spec.unsqueeze(1).transpose(2, 3)  # [B, 1, F, T]
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)  # paper eq. (1): [B, r^2, F/r, T/r]
        x = self.patch_embed(x)
        pos = self.pos_embed.pos_embed
        cls = (self.cls_token + pos[:, :1]).expand(x.shape[0], -1, -1)
        x = x + pos[:, 1:]
        p = self.token_position
        return torch.cat([x[:, :p], cls, x[:, p:]], dim=1)

    def forward_spectrogram(self, spec: torch.Tensor) -> dict:
        """Official ``model(x)`` on a normalised ``[B, T, F]`` spectrogram. Returns ``logits`` (= ``cls`` without a
        head), ``cls`` ``[B, D]``, ``final_hidden`` (norm_f output, ``[B, 1 + N, D]``), ``layers_input``, ``blocks``
        (per block ``(hidden, residual)`` as each Block returns them) and ``hidden_states`` (per block the
        residual-stream output ``hidden + residual``, float32)."""
        h = self.tokens(spec)
        out = {"layers_input": h, "blocks": [], "hidden_states": []}
        residual = None
        for block in self.layers:
            h, residual = block(h, residual)
            out["blocks"].append((h, residual))
            out["hidden_states"].append(residual + h.float())
        last = residual + drop_path(h, self.drop_path_rate, self.training).float()
        final = self.norm_f(last.to(self.norm_f.weight.dtype))
        cls = final[:, self.token_position]
        return {**out, "final_hidden": final, "cls": cls, "logits": self.head(cls)}

    # -- front-end ---------------------------------------------------------------------------------
    def spectrogram(self, wave: torch.Tensor) -> torch.Tensor:
        """``[B, S]`` 16 kHz -> normalised ``[B, target_frames, n_mels]`` (see the module docstring)."""
        if self.frontend == "kaldi":
            lms = kaldi_fbank(wave - wave.mean(-1, keepdim=True), num_mel_bins=self.n_mels, window_type="hanning")
        else:
            mel = mel_spectrogram(
                wave,
                16000,
                1024,
                self.hop_length,
                self.n_mels,
                f_min=0.0,
                f_max=8000.0,
                htk=True,
                norm=None,
                center=True,
                pad_mode="constant",
            )
            lms = mel.clamp(min=F32_EPS).log()
        t = lms.shape[-2]
        lms = F.pad(lms, (0, 0, 0, self.target_frames - t)) if t < self.target_frames else lms[:, : self.target_frames]
        return (lms - AUDIOSET_MEAN) / (2 * AUDIOSET_STD)

    def valid_frames(self, num_samples: int) -> int:
        if self.frontend == "kaldi":
            n = 1 + (num_samples - 400) // 160
        else:
            n = num_samples // self.hop_length + 1
        return max(1, min(n, self.target_frames))

    @property
    def window_samples(self) -> int:
        """The longest input the model sees whole, give or take less than one token column of frames (the paper's own
        10 s -> 1026 frames -> 1024 crop loses two). Longer clips are windowed by the systems, not cut."""
        most = self.target_frames + self.patch_size * self.unshuffle - 1  # frames that still fit in the columns
        if self.frontend == "kaldi":  # 1 + (S - 400) // 160 <= most
            return 400 + most * 160 - 1
        return most * self.hop_length - 1  # S // hop + 1 <= most

    def valid_columns(self, num_samples: int) -> int:
        """Token time columns that contain at least one frame of the clip (the rest see only padding)."""
        return math.ceil(self.valid_frames(num_samples) / (self.patch_size * self.unshuffle))

    def patch_grid(self, tokens: torch.Tensor, num_samples: int) -> torch.Tensor:
        """``[B, 1 + N, D]`` -> patch tokens of the valid columns, ``[B, Fp, cols, D]`` (class token dropped)."""
        p = self.token_position
        patches = torch.cat([tokens[:, :p], tokens[:, p + 1 :]], dim=1)
        grid = patches.reshape(patches.shape[0], self.grid[0], self.grid[1], -1)
        return grid[:, :, : self.valid_columns(num_samples)]

    # -- encoder protocol and multi-level embeddings ----------------------------------------------
    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None):
        """``(frames [B, T, D], mask [B, T])``: patch tokens of the valid time columns, frequency-major."""

        def run(w):
            out = self.forward_spectrogram(self.spectrogram(w))
            tokens = out["final_hidden"] if self.layer is None else out["hidden_states"][self.layer]
            grid = self.patch_grid(tokens, w.shape[-1])
            return grid.reshape(grid.shape[0], -1, grid.shape[-1])

        return per_length(run, wave, lengths)

    def embed_layers(self, wave: torch.Tensor, lengths: torch.Tensor | None = None):
        """``(cls [B, D], [pooled_0, ..., pooled_{depth-1}] each [B, D])``: the final class-token embedding and,
        per block, its residual-stream output mean-pooled over the valid patch tokens (float32, not normed).
        Each distinct length runs on its own, so batch padding never changes a clip's embeddings."""
        lengths = full_lengths(wave, lengths)
        cls = wave.new_zeros(wave.shape[0], self.embed_dim, dtype=torch.float32)
        pooled = [cls.clone() for _ in range(self.depth)]
        for length in lengths.unique().tolist():
            idx = (lengths == length).nonzero().flatten()
            out = self.forward_spectrogram(self.spectrogram(wave[idx, :length]))
            cls = cls.index_copy(0, idx, out["cls"].float())
            for i, h in enumerate(out["hidden_states"]):
                pooled[i] = pooled[i].index_copy(0, idx, self.patch_grid(h, length).mean((1, 2)))
        return cls, pooled


def block_drop_path_rates(rate: float, depth: int) -> list[float]:
    """Official schedule: block 0 gets 0, block i >= 1 gets ``linspace(0, rate, depth)[i - 1]``."""
    dpr = [rate * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]  # torch.linspace(0, rate, depth)
    return [0.0] + dpr[: depth - 1]


def infer_aum_config(state: dict[str, torch.Tensor]) -> dict:
    """Sizes readable from an AuM state dict's shapes (empty dict in, empty dict out)."""
    if not state:
        return {}
    proj = state["patch_embed.proj.weight"]
    mixer = "layers.0.mixer."
    variant = "v2" if mixer + "conv1d_b.weight" in state else "v1" if mixer + "A_b_log" in state else "none"
    return dict(
        embed_dim=proj.shape[0],
        patch_size=proj.shape[-1],
        unshuffle=math.isqrt(proj.shape[1]),
        depth=len({k.split(".")[1] for k in state if k.startswith("layers.")}),
        d_state=state[mixer + "A_log"].shape[1],
        bimamba_type=variant,
        num_classes=state["head.weight"].shape[0] if "head.weight" in state else 0,
    )


def load_aum_state(path: str) -> dict[str, torch.Tensor]:
    """An official AuM ``.pth`` (weights only): a flat state dict, or one under ``model`` / ``state_dict``, with any
    ``module.`` (DataParallel / accelerate) prefix stripped."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - one line naming the file, whatever torch raised
        raise ValueError(f"{path}: cannot load as a weights-only torch checkpoint: {type(e).__name__}: {e}") from None
    for key in ("model", "state_dict"):
        if isinstance(ckpt, dict) and isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
    if not isinstance(ckpt, dict) or "patch_embed.proj.weight" not in {k.removeprefix("module.") for k in ckpt}:
        raise ValueError(f"{path}: no AuM state dict found (expected key patch_embed.proj.weight)")
    return {k.removeprefix("module."): v for k, v in ckpt.items()}
