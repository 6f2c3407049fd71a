"""multistream (paper 002): six contrastively trained encoder streams, kNN with MemMixup, rank normalisation, fusion.

A stream (:class:`ContrastiveStream`) is a pretrained encoder, frozen or adapted with peft LoRA, whose mean-pooled
output goes through ``Linear(., 256) + ReLU`` and L2 normalisation (§2.2). It is trained alone (LightningCLI, one
config per stream) with NT-Xent over two augmented views of each clip and a variance regulariser (§2.3), and is itself
a Task 2 detector. :class:`MultiStream` fuses trained streams with fixed weights (eq. 1, §2.5).

Scoring (§2.4), per stream and machine: a bank of the normal training embeddings with target clips oversampled to at
most 10 source rows per target row, doubled by MemMixup (λ ~ Beta(0.4, 0.4)); score = mean L2 distance to the k = 5
nearest rows; scores are rank-normalised before the weighted sum. ``rank_mode="transductive"`` is the paper's:
ranks among the unlabeled test scores of each (machine, domain), or of the machine where test names carry no domain
(the pipeline says so); it needs the whole test set (:class:`asdzoo.tasks.task2.SetScorer`). ``rank_mode="online"``
ranks a clip against the stream's leave-one-out training scores, so one clip can be scored alone; ``"none"`` fuses
the raw distances (the ablation without rank normalisation).

Saved models hold the heads and LoRA adapters; a backbone loaded from official weights is never saved (it is loaded
from them again), one built from a random-weight ``encoder_config`` is (nothing else could rebuild it).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from asdzoo.audio.augment import contrastive_view
from asdzoo.audio.channels import near_channel
from asdzoo.config import CapturesInit
from asdzoo.encoders import load_encoder
from asdzoo.nn.batching import map_batches
from asdzoo.nn.contrastive import embedding_spread, nt_xent, variance_hinge
from asdzoo.nn.distributed import gather, gather_with_grad
from asdzoo.nn.lora import last_block_targets, with_lora
from asdzoo.nn.pooling import pool
from asdzoo.scoring.memmixup import MixupBank
from asdzoo.scoring.rank import rank_against, rank_normalise

log = logging.getLogger(__name__)
RANK_MODES = ("transductive", "online", "none")


@dataclass(frozen=True)
class StreamKind:
    """How paper 002 §2.2 builds one kind of stream: the encoder, its official weights, what is pooled and where
    LoRA goes (the class of the encoder's blocks and the projections inside each block)."""

    encoder: str
    checkpoint: str
    encoder_args: tuple = ()
    lora_block: str | None = None
    lora_targets: tuple[str, ...] = ()


STREAM_KINDS = {
    # the projected 512-d CLAP audio embedding (ClapAudioModelWithProjection), 16 -> 48 kHz inside the encoder
    "clap": StreamKind("clap", "laion/clap-htsat-unfused", (("project", True),)),
    "wavlm": StreamKind("wavlm", "microsoft/wavlm-base"),
    "beats": StreamKind(
        "beats",
        "weights:beats-iter3-plus-as2m",
        lora_block="EncoderLayer",
        lora_targets=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    ),
    # "the last four Swin-style blocks": the last four ClapAudioLayer blocks in depth order (stage 3's last two and
    # stage 4's two: 8 x (384+384) x 2 x 2 + 8 x (768+768) x 2 x 2 = 73,728 LoRA weights, §2.2's count less the head)
    "clap_lora": StreamKind(
        "clap",
        "laion/clap-htsat-unfused",
        (("project", True),),
        lora_block="ClapAudioLayer",
        lora_targets=("attention.self.query", "attention.self.value"),
    ),
    "ast": StreamKind("ast", "MIT/ast-finetuned-audioset-10-10-0.4593"),
}
_WEIGHT_REF = re.compile(r"^weights:(.+)$")


def _official_file(checkpoint: str) -> str:
    """``weights:<key>`` -> the official file found under ``$ASDZOO_HOME/weights`` (clear error when missing)."""
    m = _WEIGHT_REF.match(checkpoint)
    if m is None:
        return checkpoint
    from asdzoo.hub import resolve_weight_files
    from asdzoo.zoo import PAPER_WEIGHT_FILES

    key = m[1]
    return str(resolve_weight_files(f"multistream stream ({key})", {key: PAPER_WEIGHT_FILES[key]})[key])


class RankFusedDetector:
    """Task 2 detector over one or more streams of clip embeddings: per-stream MixupBank kNN, rank normalisation,
    weighted sum. Subclasses provide ``stream_embeddings(wave, lengths) -> [np.ndarray [B, D]]``, ``fusion_weights``
    and the scoring settings ``rank_mode, k, max_ratio, mixup, mixup_alpha, seed``."""

    _banks: list[MixupBank] | None = None

    @property
    def transductive(self) -> bool:
        return self.rank_mode == "transductive"

    def fit_embeddings(self, embeddings: list[np.ndarray], domains) -> RankFusedDetector:
        self._domains = np.asarray(torch.as_tensor(domains).cpu())
        self._banks = [
            MixupBank(e, self._domains, self.k, self.max_ratio, self.mixup, self.mixup_alpha, self.seed)
            for e in embeddings
        ]
        self._train_raw = [b.train_scores() for b in self._banks]
        return self

    def fit(self, waves: torch.Tensor, domains, lengths: torch.Tensor | None = None) -> RankFusedDetector:
        """Normal training clips ``[N, C, S]`` of one machine (near channel used), domains 0 source / 1 target."""
        return self.fit_embeddings(self.stream_embeddings(waves, lengths), domains)

    def raw_scores(self, waves: torch.Tensor, lengths: torch.Tensor | None = None) -> np.ndarray:
        """kNN distances ``[B, streams]`` before rank normalisation."""
        if self._banks is None:
            raise RuntimeError(f"{type(self).__name__}.score before fit: call fit(normal_clips, domains) first")
        return np.stack([b.score(e) for b, e in zip(self._banks, self.stream_embeddings(waves, lengths))], axis=1)

    def _fuse(self, ranked: list[np.ndarray]) -> np.ndarray:
        return sum(w * r for w, r in zip(self.fusion_weights, ranked))

    def set_scores(self, raw: np.ndarray, domains: np.ndarray | None) -> np.ndarray:
        """Transductive fusion of a whole test set's ``raw_scores``: ranks per domain (per machine when None)."""
        return self._fuse([rank_normalise(raw[:, i], domains) for i in range(raw.shape[1])])

    def score(self, waves: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Clip-by-clip scores ``[B]``: each stream's kNN distance ranked against its leave-one-out training scores
        (``rank_mode="none"``: the distance itself)."""
        raw = self.raw_scores(waves, lengths)
        if self.rank_mode == "none":
            fused = self._fuse(list(raw.T))
        else:
            fused = self._fuse([rank_against(raw[:, i], t) for i, t in enumerate(self._train_raw)])
        return torch.from_numpy(np.asarray(fused, dtype=np.float64))

    def score_set(self, waves: torch.Tensor, domains=None, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of a whole test set as the paper computes them (transductive ranks, per domain if given)."""
        doms = None if domains is None else np.asarray(torch.as_tensor(domains))
        return torch.from_numpy(np.asarray(self.set_scores(self.raw_scores(waves, lengths), doms), dtype=np.float64))

    def train_scores(self) -> np.ndarray:
        """Leave-one-out training scores, ranked per training domain (raw for ``"none"``) and fused: the decision
        threshold's reference."""
        if self.rank_mode == "none":
            return self._fuse(self._train_raw)
        return self._fuse([rank_normalise(t, self._domains) for t in self._train_raw])

    def fitted_state(self) -> dict[str, torch.Tensor]:
        if self._banks is None:
            return {}
        state = {"domains": torch.as_tensor(self._domains)}
        state.update({f"bank.{i}": torch.from_numpy(b.embeddings) for i, b in enumerate(self._banks)})
        return state

    def load_fitted_state(self, state: dict[str, torch.Tensor]) -> None:
        n = len([k for k in state if k.startswith("bank.")])
        self.fit_embeddings([state[f"bank.{i}"].numpy() for i in range(n)], state["domains"])


class ContrastiveStream(CapturesInit, RankFusedDetector, L.LightningModule):
    """One stream of §2.2-2.3: encoder (frozen, or LoRA on the query/key/value projections of its last
    ``lora_blocks`` blocks) -> mean pooling -> ``Linear(D, 256) + ReLU`` -> L2 norm, trained with NT-Xent (τ 0.07)
    plus ``variance_weight`` x a VICReg-style variance hinge; AdamW lr 1e-4, wd 1e-4.

    ``checkpoint``: official weights (Hub id, local folder or file, ``weights:<key>`` for files under
    ``$ASDZOO_HOME/weights``); ``encoder_config`` builds random weights instead (tests, offline).
    ``lora_rank=None``: frozen encoder, only the head trains."""

    def __init__(
        self,
        kind: str = "beats",
        checkpoint: str | None = None,
        encoder_config: dict | None = None,
        lora_rank: int | None = None,
        lora_alpha: int | None = None,
        lora_blocks: int = 4,
        embed_dim: int = 256,
        temperature: float = 0.07,
        variance_weight: float = 0.1,
        lr: float = 1e-4,
        weight_decay: float = 1e-4,
        noise_std: float = 0.005,
        gain_db: float = 3.0,
        drop_seconds: float = 0.5,
        k: int = 5,
        max_ratio: float = 10.0,
        mixup: bool = True,
        mixup_alpha: float = 0.4,
        rank_mode: str = "transductive",
        seed: int = 0,
        batch_size: int = 16,
    ):
        super().__init__()
        if kind not in STREAM_KINDS:
            raise ValueError(f"unknown stream kind {kind!r}; choose from {sorted(STREAM_KINDS)}")
        if rank_mode not in RANK_MODES:
            raise ValueError(f"rank_mode must be one of {RANK_MODES}, got {rank_mode!r}")
        spec = STREAM_KINDS[kind]
        if lora_rank is not None and spec.lora_block is None:
            raise ValueError(f"stream kind {kind!r} has no LoRA placement (paper 002 adapts only beats and clap_lora)")
        self.save_hyperparameters()
        self.kind, self.rank_mode, self.k, self.max_ratio = kind, rank_mode, k, max_ratio
        self.mixup, self.mixup_alpha, self.seed, self.batch_size = mixup, mixup_alpha, seed, batch_size
        self.fusion_weights = [1.0]
        self.official_backbone = encoder_config is None
        args = dict(spec.encoder_args)
        if encoder_config is None:
            args["checkpoint"] = _official_file(checkpoint or spec.checkpoint)
        elif spec.encoder == "beats":
            args["cfg"] = encoder_config
        else:
            args["config"] = encoder_config
        encoder = load_encoder(spec.encoder, **args)
        encoder.requires_grad_(False)
        if lora_rank is not None:
            targets = last_block_targets(encoder, spec.lora_block, lora_blocks, spec.lora_targets)
            encoder = with_lora(encoder, lora_rank, lora_alpha or 2 * lora_rank, targets)
        self.encoder = encoder
        width = self.backbone.embed_dim
        self.head = nn.Sequential(nn.Linear(width, embed_dim), nn.ReLU())
        self.register_state_dict_post_hook(_drop_official_backbone)
        self.register_load_state_dict_pre_hook(_keep_official_backbone)

    @property
    def backbone(self) -> nn.Module:
        """The encoder itself (inside the peft wrapper when adapted)."""
        return self.encoder.get_base_model() if self.hparams.lora_rank is not None else self.encoder

    def train(self, mode: bool = True):
        """Frozen encoders stay in eval mode (no dropout); LoRA-adapted ones train as peft fine-tuning does."""
        super().train(mode)
        if self.hparams.lora_rank is None:
            self.encoder.eval()
        return self

    def saved_config(self, config: dict) -> dict:
        if config.get("encoder_config") is not None and self.kind == "beats":
            from dataclasses import asdict

            config["encoder_config"] = asdict(self.backbone.cfg)
        return config

    # -- embeddings ---------------------------------------------------------------------------------
    def embed_batch(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Mono ``[B, S]`` -> L2-normalised ``[B, embed_dim]`` (with gradients where the stream trains)."""
        frames, mask = self.backbone(wave, lengths)
        return F.normalize(self.head(pool(frames, mask, "mean")), dim=-1)

    @torch.no_grad()
    def embed(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Near channel of ``[B, C, S]`` (or mono ``[B, S]``) -> clip embeddings, in eval mode."""
        was_training = self.training
        self.eval()
        z = map_batches(self.embed_batch, near_channel(wave), lengths, self.batch_size)
        self.train(was_training)
        return z

    def stream_embeddings(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> list[np.ndarray]:
        return [self.embed(wave, lengths).float().cpu().numpy()]

    # -- training (§2.3) ----------------------------------------------------------------------------
    def views(self, wave: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independently augmented views; the generator is drawn from torch's seeded global RNG, so runs
        under ``seed_everything`` repeat."""
        # + rank: DDP processes share the seed, and their shards must not get the same augmentation draws
        seed = int(torch.randint(0, 2**62, ())) + self.global_rank
        gen = torch.Generator(device=wave.device).manual_seed(seed)
        h = self.hparams
        kw = dict(noise_std=h.noise_std, gain_db=h.gain_db, drop_seconds=h.drop_seconds)
        return contrastive_view(wave, lengths, gen, **kw), contrastive_view(wave, lengths, gen, **kw)

    def contrastive_loss(self, wave: torch.Tensor, lengths: torch.Tensor | None) -> dict[str, torch.Tensor]:
        v1, v2 = self.views(near_channel(wave), lengths)
        z1, z2 = self.embed_batch(v1, lengths), self.embed_batch(v2, lengths)
        z1, z2 = gather_with_grad(z1), gather_with_grad(z2)  # under DDP: every process's clips are negatives
        nce = nt_xent(z1, z2, self.hparams.temperature)
        var = 0.5 * (variance_hinge(z1) + variance_hinge(z2))
        return {"loss": nce + self.hparams.variance_weight * var, "nt_xent": nce, "variance": var}

    def training_step(self, batch, batch_idx):
        out = self.contrastive_loss(batch["wave"], batch["lengths"])
        bs = len(batch["wave"])
        self.log("train/nt_xent", out["nt_xent"], prog_bar=True, batch_size=bs)
        self.log("train/variance", out["variance"], batch_size=bs)
        return out["loss"]

    def on_validation_epoch_start(self) -> None:
        self._val_z = []

    def validation_step(self, batch, batch_idx):
        self._val_z.append(self.embed_batch(near_channel(batch["wave"]), batch["lengths"]))

    def on_validation_epoch_end(self) -> None:
        if self._val_z:
            self.log("val/spread", embedding_spread(gather(torch.cat(self._val_z))), prog_bar=True)

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


def _drop_official_backbone(module: ContrastiveStream, state: dict, prefix: str, local_metadata) -> None:
    """state_dict hook: an official backbone's frozen weights are not part of the saved model (LoRA tensors are)."""
    if module.official_backbone:
        for key in [k for k in state if k.startswith(prefix + "encoder.") and "lora_" not in k]:
            del state[key]


def _keep_official_backbone(module: ContrastiveStream, state: dict, prefix: str, *args) -> None:
    """load_state_dict pre-hook: an official backbone was loaded from its weights at construction; where a saved
    state leaves its frozen tensors out, they keep those values (strict loading still checks everything else)."""
    if module.official_backbone:
        for key, value in module.encoder.state_dict().items():
            if "lora_" not in key:
                state.setdefault(f"{prefix}encoder.{key}", value)


def _stream(source: str | dict) -> ContrastiveStream:
    """A trained stream from a registry name, Hub id or folder, or a new one from constructor arguments."""
    if isinstance(source, dict):
        return ContrastiveStream(**source)
    from asdzoo.hub import load

    stream = load(source)
    if not isinstance(stream, ContrastiveStream):
        raise ValueError(f"{source}: is a {type(stream).__name__}, not a multistream stream (ContrastiveStream)")
    return stream


class MultiStream(CapturesInit, RankFusedDetector, nn.Module):
    """Weighted fusion of rank-normalised stream scores (eq. 1). ``streams``: name -> a trained stream (registry
    name, Hub id or folder) or ContrastiveStream arguments; ``weights``: name -> α (non-negative, summing to one).
    The scoring settings apply to every stream (the paper uses one setting for all)."""

    def __init__(
        self,
        streams: dict[str, str | dict],
        weights: dict[str, float],
        rank_mode: str = "transductive",
        k: int = 5,
        max_ratio: float = 10.0,
        mixup: bool = True,
        mixup_alpha: float = 0.4,
        seed: int = 0,
    ):
        super().__init__()
        if set(streams) != set(weights):
            raise ValueError(f"one fusion weight per stream: streams {sorted(streams)}, weights {sorted(weights)}")
        names = sorted(streams)  # name order: a reloaded model (its config.json lists keys sorted) sums identically
        w = np.array([weights[n] for n in names], dtype=float)
        if (w < 0).any() or not np.isclose(w.sum(), 1.0):
            raise ValueError(f"fusion weights must be non-negative and sum to 1, got {weights}")
        if rank_mode not in RANK_MODES:
            raise ValueError(f"rank_mode must be one of {RANK_MODES}, got {rank_mode!r}")
        self.streams = nn.ModuleDict({n: _stream(streams[n]) for n in names})
        self.fusion_weights = [float(x) for x in w]
        self.rank_mode, self.k, self.max_ratio, self.mixup, self.mixup_alpha, self.seed = (
            rank_mode,
            k,
            max_ratio,
            mixup,
            mixup_alpha,
            seed,
        )

    def saved_config(self, config: dict) -> dict:
        """Each stream by its own configuration, so the saved folder alone rebuilds the model (its heads and
        adapters are in the saved weights, official backbones load from their weights)."""
        return config | {"streams": {n: s.config for n, s in self.streams.items()}}

    def stream_embeddings(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> list[np.ndarray]:
        return [s.embed(wave, lengths).float().cpu().numpy() for s in self.streams.values()]


__all__ = ["STREAM_KINDS", "ContrastiveStream", "MultiStream", "RankFusedDetector"]
