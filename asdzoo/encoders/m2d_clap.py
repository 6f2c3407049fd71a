"""M2D-CLAP (Niizumi et al.): the audio branch of the CLAP-trained M2D, after the official portable runtime
(``nttcslab/m2d`` ``examples/portable_m2d.py``, as the CLAP notebooks load it). It reuses
:class:`~asdzoo.encoders.m2d.M2D` for the 16 kHz front-end, the ViT and chunking.

Two checkpoint formats, facts per ../shared/reference/m2d_clap/README.md:

- 2024 (``m2d_clap_vit_base-80x608p16x16-240128/checkpoint-300.pth``): the MAE-style training checkpoint, ViT keys
  without a prefix and without ``norm_stats`` (the default applies), training-only keys (decoder, target encoder,
  ``mask_token``, ``logit_scale``) that are dropped, an MLP projector ``audio_proj.{0,2}`` (Linear, ReLU, Linear) on
  the mean of all tokens. The real file also holds an ``argparse.Namespace`` under ``args``.
- 2025 (``m2d_clap_vit_base-80x1001p16x16p16kpBpTI-2025/checkpoint-30.pth``): ``backbone.``-prefixed ViT keys with
  ``norm_stats`` and the ``AudioToSemantic`` projector (``audio_proj.sem_token/sem_blocks/norm``), plus the bundled
  text encoder (``text_encoder.*``), which the audio branch ignores.

Input size, patch size and sample rate come from the checkpoint's **parent folder name**, as in the runtime.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from asdzoo.audio.features import resample
from asdzoo.encoders.base import per_length
from asdzoo.encoders.m2d import M2D, parse_m2d_name, split_m2d_state
from asdzoo.nn.vit import Block, infer_vit_size

# sem_mode -> (depth, heads, mlp_ratio) of AudioToSemantic, per ../shared/reference/m2d_clap/README.md
SEM_MODES = {1: (1, 1, 1.0), 2: (2, 1, 1.0), 3: (3, 1, 2.0), 4: (4, 1, 2.0)}
PROJ = "audio_proj."


class MLPProjector(nn.Sequential):
    """2024 projector (keys ``0.*``, ``2.*``): the mean over all tokens of all chunks, each token weighted equally,
    then Linear -> ReLU -> Linear. No L2 normalisation: the official notebooks normalise before the cosine."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int):
        super().__init__(nn.Linear(d_in, d_hidden), nn.ReLU(), nn.Linear(d_hidden, d_out))
        self.out_dim = d_out

    def pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.mean(1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return super().forward(self.pooled(tokens))


class AudioToSemantic(nn.Module):
    """2025 projector: a learnt ``sem_token`` (no position) prepended to all tokens, pre-LN blocks with one head and
    LayerNorm eps 1e-5 (the ViT uses 1e-6), token 0, then ``norm``."""

    def __init__(self, dim: int, sem_mode: int = 1):
        super().__init__()
        if sem_mode not in SEM_MODES:
            raise ValueError(f"sem_mode must be one of {sorted(SEM_MODES)}, got {sem_mode}")
        depth, heads, mlp_ratio = SEM_MODES[sem_mode]
        self.sem_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.sem_blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, eps=1e-5) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-5)
        self.out_dim = dim

    def blocks_out(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, N, D]`` -> ``[B, 1 + N, D]``: ``[sem_token; tokens]`` after the blocks."""
        x = torch.cat([self.sem_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        for block in self.sem_blocks:
            x = block(x)
        return x

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.norm(self.blocks_out(tokens)[:, 0])


class M2DClap(M2D):
    """M2D-CLAP audio encoder. ``output="frames"``: the stacked per-time-step features ``[B, T', 5*D]`` (``layer``
    picks a ViT block); ``output="clap"``: one frame per clip, the CLAP audio embedding ``[B, 1, D]``.

    ``projector`` (``"mlp"`` 2024 / ``"semantic"`` 2025) and ``sem_mode`` only shape a model built without a
    checkpoint; a checkpoint's own projector is read from its keys. ``encode`` defaults to the flat token layout,
    the setting the official CLAP notebooks load with.
    """

    def __init__(
        self,
        checkpoint: str | None = None,
        layer: int | None = None,
        output: str = "frames",
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        sample_rate: int | None = None,
        input_size: tuple[int, int] | None = None,
        patch_size: tuple[int, int] | None = None,
        projector: str | None = None,
        sem_mode: int | None = None,
    ):
        if output not in ("frames", "clap"):
            raise ValueError(f"output must be 'frames' or 'clap', got {output!r}")
        if output == "clap" and layer is not None:
            raise ValueError("layer= picks a ViT block for output='frames'; the CLAP embedding uses the last one")
        backbone, proj, fields = {}, {}, {"sample_rate": 16000}  # the runtime's sample-rate default is 16k
        if checkpoint is not None:
            backbone, proj = load_m2d_clap_state(checkpoint)
            fields.update(parse_m2d_name(Path(checkpoint).parent.name))
            fields.update(infer_vit_size(backbone))
            projector, sem_mode = projector_kind(proj)
        overrides = dict(
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            sample_rate=sample_rate,
            input_size=input_size,
            patch_size=patch_size,
        )
        fields.update({k: v for k, v in overrides.items() if v is not None})
        super().__init__(layer=layer, flat_features=True, **fields)
        dim = self.cfg.embed_dim
        if (projector or "semantic") == "semantic":
            self.audio_proj = AudioToSemantic(dim, sem_mode or 1)
        elif projector == "mlp":
            w0, w2 = proj.get("0.weight"), proj.get("2.weight")
            sizes = (w0.shape[1], w0.shape[0], w2.shape[0]) if w0 is not None and w2 is not None else (dim,) * 3
            self.audio_proj = MLPProjector(*sizes)
        else:
            raise ValueError(f"projector must be 'mlp' or 'semantic', got {projector!r}")
        if checkpoint is not None:
            load_fitting(self.backbone, backbone, checkpoint, "ViT")
            load_fitting(self.audio_proj, proj, checkpoint, PROJ)
        self.output = output
        self.embed_dim = self.audio_proj.out_dim if output == "clap" else self.cfg.grid[0] * dim

    def chunk_padding(self, frames: int) -> int:
        """The upstream runtime pads only the last chunk's remainder to a multiple of the patch width (M2D's DCASE
        copy pads the whole length): 1051 frames give 62 + 4 patches, per the ``C_*`` vectors of
        ../shared/reference/m2d_clap/README.md. The two agree whenever the chunk length is a multiple of 16."""
        patch_t = self.cfg.patch_size[1]
        return (patch_t - frames % self.cfg.input_size[1] % patch_t) % patch_t

    def clap_audio(self, wave: torch.Tensor) -> torch.Tensor:
        """``encode_clap_audio``: waveform at ``cfg.sample_rate`` ``[B, S]`` -> ``[B, D]``, from the flat tokens of
        all chunks."""
        return self.audio_proj(self.encode(wave, flat_features=True, average_per_time_frame=False))

    def timestamp_embeddings(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``get_timestamp_embeddings``: the per-time-frame mean of the flat tokens and their times (ms) ``[B, T']``."""
        emb = self.encode(wave, flat_features=True, average_per_time_frame=True)
        ts = self.timestamps_ms(wave.shape[-1], emb.shape[1]).to(emb.dtype)
        return emb, ts.expand(wave.shape[0], -1)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None):
        def run(w):
            w = resample(w, self.sample_rate, self.cfg.sample_rate)
            if self.output == "clap":
                return self.clap_audio(w)[:, None]
            return self.encode(w, self.layer, flat_features=False)

        return per_length(run, wave, lengths)


def read_m2d_clap_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """The state dict of an official file (``model`` if present). The real 2024 file pickles the training
    ``argparse.Namespace``: exactly that class is allowed, the load stays ``weights_only``."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not an M2D-CLAP checkpoint (no state dict)")
    return state


def split_m2d_clap_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The runtime's prefix rules -> (ViT keys, projector keys without ``audio_proj.``). If any key starts with
    ``backbone.``, only those are kept (prefix stripped; this drops ``text_encoder.*``); then M2D's rules. Keys the
    ViT does not have (training-only, ``text_proj*``) stay in the first dict and are dropped at loading."""
    if any(k.startswith("backbone.") for k in state):
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    backbone, _ = split_m2d_state(state)
    proj = {k.removeprefix(PROJ): backbone.pop(k) for k in list(backbone) if k.startswith(PROJ)}
    return backbone, proj


def load_m2d_clap_state(path: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    backbone, proj = split_m2d_clap_state(read_m2d_clap_checkpoint(path))
    if "patch_embed.proj.weight" not in backbone or not any(k.startswith("blocks.") for k in backbone):
        raise ValueError(f"{path}: not an M2D-CLAP checkpoint (no ViT keys patch_embed.proj.weight / blocks.*)")
    if not proj:
        raise ValueError(f"{path}: no {PROJ}* keys: an M2D checkpoint without the CLAP projector (use encoder 'm2d')")
    return backbone, proj


def projector_kind(proj: dict[str, torch.Tensor]) -> tuple[str, int | None]:
    """``("semantic", sem_mode)`` with ``sem_mode = 1 + max block index``, or ``("mlp", None)``."""
    if "sem_token" in proj:
        return "semantic", 1 + max((int(k.split(".")[1]) for k in proj if k.startswith("sem_blocks.")), default=0)
    return "mlp", None


def load_fitting(module: nn.Module, state: dict[str, torch.Tensor], path: str, what: str) -> None:
    """Load the keys ``module`` has (others are dropped, as the runtime does); missing or misshapen ones fail in one
    line naming the file."""
    expected = module.state_dict()
    missing = sorted(k for k in expected if k not in state)
    wrong = [
        f"{k} {list(state[k].shape)}, not {list(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or wrong:
        raise ValueError(f"{path}: {what} keys do not fit: missing {missing[:4]}, wrong shape {wrong[:4]}")
    module.load_state_dict({k: state[k] for k in expected}, strict=True)
