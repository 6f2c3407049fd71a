"""Paper 003's tagger distillation for DCASE 2026 Task 4: the baseline's M2D tagger trained with
permutation-invariant masked self-distillation (§2.2) or with semantic distillation from a frozen Qwen2-Audio
encoder (§2.3). The separator stays the released ResUNetK; both taggers chain with it as :class:`S5Chain`.

Choices the paper leaves open, stated once here and in the model cards:

- ``L_self``: each auxiliary head is distilled from the student's own final head (its logits detached), with the
  same permutation-invariant ``T^2 KL`` as ``L_KD``; ``L_aux`` is the slot cross-entropy of each auxiliary head,
  both averaged over the auxiliary heads.
- 4c masking: 30 % of the spatial tokens, drawn per (frame, channel) of the channel-stacked encoder features the
  head pools; the head averages each channel over its visible frames. Masking per channel (not whole frames across
  channels) is what "reduce dependence on any single channel" asks for: the head must tag from whichever channels of
  a frame are left. The EMA teacher sees every token.
- Qwen distillation: silent scenes (no foreground source, hence an all-zero dry sum) carry no semantics and are left
  out of the CKA and cosine terms; student tokens are pooled before they are projected (the same numbers: a linear
  map commutes with averaging, at 1/T of the cost).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from asdzoo.data.s5 import N_SLOTS, TAGGER_CLASSES
from asdzoo.encoders.m2d import HeadAvgLinear
from asdzoo.encoders.qwen2_audio import (
    QWEN2_AUDIO_HUB_ID,
    Qwen2AudioTeacher,
    TeacherCache,
    load_qwen2_audio_encoder,
    random_qwen2_audio_encoder,
)
from asdzoo.nn.distill import linear_cka, mean_cosine_distance, pit_kd_loss, pool_bins
from asdzoo.nn.pit import tagger_pit_loss
from asdzoo.systems.s5_baseline import S5Tagger, _adamw

PAPER_4C_MASK_RATIO = 0.3
# (lambda_CKA, lambda_cos) of eq. 4 per tagger input
PAPER_QWEN_WEIGHTS = {1: (0.05, 0.02), 4: (0.02, 0.01)}


def mask_spatial_tokens(feats: torch.Tensor, channels: int, ratio: float) -> torch.Tensor:
    """Channel-stacked features ``[B, T, C * D]`` -> their time mean ``[B, C * D]`` over the tokens left visible by
    an independent Bernoulli(1 - ratio) draw per (frame, channel). A channel with no visible frame pools to zero."""
    b, t, cd = feats.shape
    tokens = feats.view(b, t, channels, cd // channels)
    keep = (torch.rand(b, t, channels, 1, device=feats.device) >= ratio).to(feats.dtype)
    pooled = (tokens * keep).sum(1) / keep.sum(1).clamp(min=1)
    return pooled.reshape(b, cd)


class _DistillTagger(S5Tagger):
    """What both distillation taggers share: the whole tagger fine-tuned, classification validation as the
    baseline's, and the teacher-side state (EMA model, frozen encoder) held outside the module tree so that it is
    never in ``state_dict`` nor moved or trained by Lightning as a submodule."""

    def __init__(self, channels, m2d_checkpoint, m2d, lr, track_in, track_hidden, init_from):
        super().__init__(
            channels=channels,
            m2d_checkpoint=m2d_checkpoint,
            m2d=m2d,
            finetuning_layers="all",
            lr=lr,
            track_in=track_in,
            track_hidden=track_hidden,
            init_from=init_from,
        )


class MaskedSDTagger(_DistillTagger):
    """Masked SD (§2.2): the M2D tagger with auxiliary heads on Transformer blocks ``aux_blocks`` (1-based, 9 and 10
    of ViT-Base), an EMA teacher of the tagger (``ema_momentum``) and
    ``L = L_main + aux_weight L_aux + kd_weight L_KD + self_weight L_self`` (eq. 3). ``mask_ratio``: share of
    spatial tokens masked in training (default: 0.3 for 4 channels, none for 1)."""

    def __init__(
        self,
        channels: int = 1,
        m2d_checkpoint: str | None = None,
        m2d: dict | None = None,
        lr: float = 1e-5,
        track_in: int = 1024,
        track_hidden: int = 512,
        init_from: str | None = None,
        aux_blocks: tuple[int, ...] = (9, 10),
        ema_momentum: float = 0.999,
        temperature: float = 1.5,
        aux_weight: float = 0.05,
        kd_weight: float = 0.10,
        self_weight: float = 0.05,
        mask_ratio: float | None = None,
    ):
        super().__init__(channels, m2d_checkpoint, m2d, lr, track_in, track_hidden, init_from)
        depth = len(self.model.m2d.backbone.blocks)
        if not aux_blocks or not all(1 <= k <= depth for k in aux_blocks):
            raise ValueError(
                f"aux_blocks must be 1-based Transformer blocks of this M2D (1..{depth}), got {aux_blocks}"
            )
        self.aux_blocks = tuple(aux_blocks)
        self.aux_heads = nn.ModuleList(
            HeadAvgLinear(
                self.model.head.m2d_out_norm.num_features,
                num_classes=len(TAGGER_CLASSES),
                num_outputs=N_SLOTS,
                track_in=track_in,
                track_hidden=track_hidden,
            )
            for _ in self.aux_blocks
        )
        self.ema_momentum, self.temperature = ema_momentum, temperature
        self.weights = {"aux": aux_weight, "kd": kd_weight, "self": self_weight}
        self.mask_ratio = (PAPER_4C_MASK_RATIO if channels > 1 else 0.0) if mask_ratio is None else mask_ratio
        self._ema: list[AveragedModel] = []  # a list: outside the module tree (see _DistillTagger)
        self._pending_ema: dict | None = None

    # -- the EMA teacher -----------------------------------------------------------------------------
    @property
    def ema_teacher(self) -> AveragedModel:
        if not self._ema:
            ema = AveragedModel(
                self.model, multi_avg_fn=get_ema_multi_avg_fn(self.ema_momentum), use_buffers=True
            ).requires_grad_(False)
            if self._pending_ema is not None:  # resumed: the teacher as it was saved
                ema.load_state_dict(self._pending_ema)
                self._pending_ema = None
            else:  # the teacher starts as the student; from then on every update is eq. 1
                ema.update_parameters(self.model)
            self._ema.append(ema.eval())
        return self._ema[0]

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self.ema_teacher.to(self.device)

    def optimizer_step(self, *args, **kwargs):
        super().optimizer_step(*args, **kwargs)
        self.ema_teacher.update_parameters(self.model)  # eq. 1

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self._ema:
            checkpoint["ema_teacher"] = self._ema[0].state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "ema_teacher" in checkpoint:
            self._ema.clear()
            self._pending_ema = checkpoint["ema_teacher"]

    # -- student ----------------------------------------------------------------------------------------
    def _student(self, mixture: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Main and auxiliary logits of the (masked, in training) student."""
        tagger, m2d = self.model, self.model.m2d
        captured: dict[int, list[torch.Tensor]] = {k: [] for k in self.aux_blocks}
        hooks = [
            m2d.backbone.blocks[k - 1].register_forward_hook(
                lambda _m, _i, out, k=k: captured[k].append(m2d.tokens_to_features(out, m2d.cfg.flat_features))
            )
            for k in self.aux_blocks
        ]
        try:
            feats = tagger.features(mixture)
        finally:
            for hook in hooks:
                hook.remove()
        stacks = [feats] + [tagger.stack_channels(torch.cat(captured[k], dim=1)) for k in self.aux_blocks]
        if self.training and self.mask_ratio > 0:
            pooled = [mask_spatial_tokens(f, tagger.channels, self.mask_ratio) for f in stacks]
        else:
            pooled = [f.mean(1) for f in stacks]
        heads = [tagger.head, *self.aux_heads]
        logits = [head.classify(p) for head, p in zip(heads, pooled)]
        return logits[0], logits[1:]

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """Every term of eq. 3 (unweighted) and their weighted sum ``total``."""
        main, aux = self._student(batch["mixture"])
        with torch.no_grad():
            teacher = self.ema_teacher.module(batch["mixture"])
        terms = {
            "main": tagger_pit_loss(main, batch["classes"])[0],
            "aux": torch.stack([tagger_pit_loss(z, batch["classes"])[0] for z in aux]).mean(),
            "kd": pit_kd_loss(main, teacher, self.temperature)[0],
            "self": torch.stack([pit_kd_loss(z, main.detach(), self.temperature)[0] for z in aux]).mean(),
        }
        terms["total"] = terms["main"] + sum(w * terms[k] for k, w in self.weights.items())
        return terms

    def training_step(self, batch, batch_idx):
        terms = self.losses(batch)
        n = len(batch["mixture"])
        for name, value in terms.items():
            self.log(f"train/{'loss' if name == 'total' else name}", value, prog_bar=name == "total", batch_size=n)
        return terms["total"]


class QwenDistillTagger(_DistillTagger):
    """Qwen semantic distillation (§2.3): eq. 4 with a frozen Qwen2-Audio encoder fed the sum of the dry foreground
    sources, the student's reference-channel tokens projected to ``teacher_dim``, both pooled to ``bins``.

    ``teacher``: a Qwen2-Audio Hub id or local folder (only its audio tower is read), or a dict of
    ``Qwen2AudioEncoderConfig`` fields for a random encoder (``seed`` key optional; offline tests). ``cka_weight`` /
    ``cos_weight`` default to the paper's for the channel count. Distillation weights and the projector's learning
    rate rise linearly over ``warmup_epochs``."""

    def __init__(
        self,
        channels: int = 1,
        m2d_checkpoint: str | None = None,
        m2d: dict | None = None,
        lr: float = 1e-5,
        projector_lr: float = 1e-4,
        track_in: int = 1024,
        track_hidden: int = 512,
        init_from: str | None = None,
        teacher: str | dict = QWEN2_AUDIO_HUB_ID,
        teacher_dim: int = 1280,
        bins: int = 32,
        cka_weight: float | None = None,
        cos_weight: float | None = None,
        warmup_epochs: float = 5.0,
        cache_entries: int = 2048,
    ):
        super().__init__(channels, m2d_checkpoint, m2d, lr, track_in, track_hidden, init_from)
        token_dim = self.model.head.m2d_out_norm.num_features // channels
        self.projector = nn.Linear(token_dim, teacher_dim)
        paper_cka, paper_cos = PAPER_QWEN_WEIGHTS[channels]
        self.cka_weight = paper_cka if cka_weight is None else cka_weight
        self.cos_weight = paper_cos if cos_weight is None else cos_weight
        self.teacher_source, self.teacher_dim, self.bins = teacher, teacher_dim, bins
        self.projector_lr, self.warmup_epochs = projector_lr, warmup_epochs
        self.cache = TeacherCache(cache_entries)
        self._teacher: list[Qwen2AudioTeacher] = []  # a list: outside the module tree (see _DistillTagger)

    @property
    def teacher(self) -> Qwen2AudioTeacher:
        """Built on first use (training or validation), never saved."""
        if not self._teacher:
            source = self.teacher_source
            if isinstance(source, dict):
                config = dict(source)
                encoder = random_qwen2_audio_encoder(config, seed=config.pop("seed", 0))
            else:
                encoder = load_qwen2_audio_encoder(source)
            teacher = Qwen2AudioTeacher(encoder).to(self.device)
            if teacher.d_model != self.teacher_dim:
                raise ValueError(
                    f"{source}: the teacher's tokens are {teacher.d_model}-d but teacher_dim is {self.teacher_dim}"
                )
            self._teacher.append(teacher)
        return self._teacher[0]

    def _steps_per_epoch(self) -> int:
        trainer = self.trainer
        batches = trainer.num_training_batches
        if not isinstance(batches, int):  # an iterable of unknown length: fall back to the planned total
            return max(1, trainer.estimated_stepping_batches // max(1, trainer.max_epochs or 1))
        return max(1, batches // trainer.accumulate_grad_batches)

    def warmup(self, step: int) -> float:
        """Linear warm-up factor of the distillation weights and the projector's learning rate at optimiser step
        ``step`` (1 after ``warmup_epochs``)."""
        if self.warmup_epochs <= 0:
            return 1.0
        return min(1.0, (step + 1) / (self.warmup_epochs * self._steps_per_epoch()))

    def teacher_tokens(self, dry_sum: torch.Tensor) -> torch.Tensor:
        """``[B, S]`` dry sum at the tagger's rate -> teacher tokens ``[B, T_q, teacher_dim]``, cached by content."""
        rate = self.model.m2d.cfg.sample_rate
        return self.cache(partial(self.teacher, sample_rate=rate), dry_sum)

    def losses(self, batch: dict) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The task loss, ``1 - CKA`` and the cosine distance (unweighted, over non-silent scenes) of eq. 4, and the
        tagger's logits."""
        tagger = self.model
        feats = tagger.features(batch["mixture"])
        b, t, cd = feats.shape
        student = feats.view(b, t, tagger.channels, cd // tagger.channels)[:, :, tagger.ref_channel]
        logits = tagger.head(feats)
        terms = {"task": tagger_pit_loss(logits, batch["classes"])[0]}
        dry_sum = batch["dry_sources"].sum(1)
        voiced = dry_sum.abs().amax(-1) > 0
        if voiced.any():
            s = self.projector(pool_bins(student[voiced], self.bins))
            q = pool_bins(self.teacher_tokens(dry_sum[voiced]), self.bins)
            terms["cka"] = 1 - linear_cka(s, q).mean()
            terms["cos"] = mean_cosine_distance(s, q).mean()
        else:  # nothing to distil in this batch; zeros keep the logged curves and the graph alike
            terms["cka"] = terms["cos"] = student.sum() * 0
        return terms, logits

    def training_step(self, batch, batch_idx):
        terms, _ = self.losses(batch)
        w = self.warmup(self.global_step)
        loss = terms["task"] + w * (self.cka_weight * terms["cka"] + self.cos_weight * terms["cos"])
        n = len(batch["mixture"])
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        for name, value in terms.items():
            self.log(f"train/{name}", value, batch_size=n)
        self.log("train/warmup", w, batch_size=n)
        return loss

    def validation_step(self, batch, batch_idx):
        terms, logits = self.losses(batch)
        self.log_validation(logits, batch)
        n = len(batch["mixture"])
        self.log("val/cka", 1 - terms["cka"], batch_size=n, sync_dist=True)
        self.log("val/cos", 1 - terms["cos"], batch_size=n, sync_dist=True)

    def configure_optimizers(self):
        tagger = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = _adamw(
            [{"params": tagger, "lr": self.lr}, {"params": self.projector.parameters(), "lr": self.projector_lr}],
            self.lr,
        )
        schedule = LambdaLR(optimizer, [lambda step: 1.0, self.warmup])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
