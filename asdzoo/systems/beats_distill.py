"""beats-distill (paper 000): a pseudo-clean BEATs teacher distilled into a two-channel BEATs student.

Stage 1, :class:`BeatsDistillTeacher`: BEATs with LoRA (rank 64 on ``q_proj``/``v_proj``) -> attentive statistics
pooling (hidden 128) -> projection (128), trained with a sub-cluster AdaCos head (16 sub-centres per class;
classes = machine x section x attributes from the file names) on ILRMA pseudo-clean waveforms, 12 s segments.
Stage 2, :class:`BeatsDistillStudent`: the two-channel recording goes through a mask-based enhancement front-end
(:mod:`asdzoo.nn.enhance`); the enhanced waveform and the near-channel mixture go through one shared LoRA BEATs;
their token sequences are fused by gated cross-attention; ASP -> projection gives the embedding. Loss (eq. 8):
``L_SCAC + lambda_KD tau^2 KL(p_tea || p_stu) + lambda_SE L_SE`` with the frozen teacher fed the pseudo-clean
waveform and ``L_SE`` the negative SNR of the enhanced waveform against it.
The student starts from the teacher's weights (``init_from_teacher``). Without the official BEATs checkpoint,
pre-train one with :mod:`asdzoo.encoders.beats_pretrain`: random BEATs features do not improve with this training.
Scoring: student embeddings, per-machine bank, cosine k=1, kNN distances normalised per domain (``score_norm``:
Z-scores against each domain's leave-one-out training distances, as in GenRep); clips longer than the training
segment are scored as overlapping crops whose scores are averaged (the paper's System 2).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict

import lightning as L
import torch
import torch.nn.functional as F

from asdzoo.config import CapturesInit
from asdzoo.encoders.beats import BEATs
from asdzoo.hub import load_pretrained_dir
from asdzoo.nn.batching import map_batches
from asdzoo.nn.enhance import GatedCrossAttentionFusion, MaskEnhancer
from asdzoo.nn.heads import EmbeddingHead, SubClusterAdaCos
from asdzoo.nn.lora import with_lora
from asdzoo.nn.multicrop import mean_per_clip, segment_crops
from asdzoo.scoring.bank_detector import BankDetector
from asdzoo.scoring.knn import BackendConfig

log = logging.getLogger(__name__)
SAMPLE_RATE = 16000


def lora_beats(
    beats: dict | None, checkpoint: str | None, fbank_window: str, rank: int, alpha: int, warn_random_init: bool
):
    """BEATs from an official checkpoint (or random weights, loudly) wrapped with peft LoRA on q/v projections."""
    if checkpoint is None and warn_random_init:
        msg = (
            "beats-distill: NO upstream BEATs checkpoint given (beats_checkpoint: null) - starting from RANDOM "
            "weights. Pass the official BEATs_iter3_plus_AS2M.pt (or a Hub mirror id), or pre-train one on your data "
            "with asdzoo/configs/beats_pretrain.yaml; random BEATs features do not improve with this training."
        )
        warnings.warn(msg, stacklevel=3)
        log.warning(msg)
    enc = BEATs(cfg=beats, checkpoint=checkpoint, fbank_window=fbank_window)
    return with_lora(enc, rank, alpha, ["q_proj", "v_proj"])


def _zero_padding(wave: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Zero every sample past each clip's length (``wave [B, ..., S]``)."""
    if lengths is None:
        return wave
    keep = torch.arange(wave.shape[-1], device=wave.device)[None] < lengths[:, None]
    return wave * keep.view(len(wave), *([1] * (wave.dim() - 2)), -1)


class _SharedSlot(list):
    """Holds the frozen teacher outside the student's module tree; a deep copy of the student (made per machine by
    ``fit_and_score`` and at every development evaluation) shares it instead of copying a whole BEATs."""

    def __deepcopy__(self, memo):
        return self


class _DistillBase(CapturesInit, BankDetector, L.LightningModule):
    """Shared by teacher and student: LoRA BEATs, embedding head, AdaCos classifier, kNN detector interface. The
    arguments both stages take are declared here once; the student adds its own and passes the rest on
    (LightningCLI follows ``**kwargs`` to this signature)."""

    def __init__(
        self,
        beats: dict | None = None,
        beats_checkpoint: str | None = None,
        fbank_window: str = "hamming",
        lora_rank: int = 64,
        lora_alpha: int = 64,
        asp_hidden: int = 128,
        embed_dim: int = 128,
        sub_centers: int = 16,
        num_classes: int | None = None,
        lr: float = 1e-4,
        segment_seconds: float = 12.0,
        score_norm: str = "domain_z",
        knn_index: str = "flat",
        warn_random_init: bool = True,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.encoder = lora_beats(beats, beats_checkpoint, fbank_window, lora_rank, lora_alpha, warn_random_init)
        self.head = EmbeddingHead(self.beats.embed_dim, asp_hidden, embed_dim)
        self.classifier = SubClusterAdaCos(embed_dim, num_classes, sub_centers) if num_classes else None
        self.backend_cfg = BackendConfig(metric="cosine", k=1, backend=score_norm, index=knn_index)
        self.segment = int(segment_seconds * SAMPLE_RATE)

    @property
    def beats(self) -> BEATs:
        """The BEATs model inside the LoRA wrapper."""
        return self.encoder.get_base_model()

    def saved_config(self, config: dict) -> dict:
        """Rebuilds without the upstream checkpoint (the saved weights hold it), the teacher (never part of the
        student) or the data module (the number of classes it learnt)."""
        return (
            config
            | {
                "beats": asdict(self.beats.cfg),
                "beats_checkpoint": None,
                "warn_random_init": False,
                "num_classes": None if self.classifier is None else self.classifier.num_classes,
            }
            | ({"teacher": None} if "teacher" in config else {})
        )

    def _ensure_classifier(self, num_classes: int) -> None:
        if self.classifier is None:
            self.classifier = SubClusterAdaCos(self.hparams.embed_dim, num_classes, self.hparams.sub_centers).to(
                self.device
            )
            self.hparams.num_classes = num_classes

    def configure_optimizers(self):
        return torch.optim.AdamW([p for p in self.parameters() if p.requires_grad], lr=self.hparams.lr)

    # -- detector interface (BankDetector) --------------------------------------------------------------
    @torch.no_grad()
    def crop_embeddings(self, wave: torch.Tensor, lengths: torch.Tensor | None = None, batch_size: int = 8):
        """Normalised embeddings of every training-length crop (:mod:`asdzoo.nn.multicrop`) and the owning clips."""
        self.eval()
        crops, lens, owner = segment_crops(wave, lengths, self.segment)
        z = map_batches(lambda w, n: F.normalize(self.embed_batch(w, n), dim=-1), crops, lens, batch_size)
        return z, owner

    def embed(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Clip embeddings (the normalised mean of a long clip's crop embeddings) for the memory bank."""
        z, owner = self.crop_embeddings(wave, lengths)
        return {"main": F.normalize(mean_per_clip(z.cpu(), owner, len(wave)), dim=-1)}

    def score(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Multi-crop scoring: every crop is scored against the bank and a clip's crop scores are averaged."""
        z, owner = self.crop_embeddings(wave, lengths)
        crop_scores = torch.from_numpy(self.branch_scores({"main": z.cpu()})["main"])
        return mean_per_clip(crop_scores, owner, len(wave))


class BeatsDistillTeacher(_DistillBase):
    """Stage 1: LoRA BEATs on pseudo-clean waveforms with a sub-cluster AdaCos objective."""

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self._ensure_classifier(self.trainer.datamodule.num_classes)

    def embed_batch(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Mono waveforms ``[B, S]`` (pseudo-clean, or the near channel of ``[B, 2, S]``) -> embeddings ``[B, D]``."""
        if wave.dim() == 3:
            wave = wave[:, 0]
        frames, mask = self.encoder(_zero_padding(wave, lengths), lengths)
        return self.head(frames, mask)

    def logits(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier.logits(self.embed_batch(wave, lengths))

    def training_step(self, batch, batch_idx):
        if "pseudo_clean" not in batch:
            raise ValueError(
                "the teacher trains on pseudo-clean waveforms: set data.pseudo_clean_root "
                "(run `asdzoo prepare pseudo-clean ROOT` first)"
            )
        loss, _ = self.classifier.loss(self.embed_batch(batch["pseudo_clean"], batch["lengths"]), batch["class"])
        self.log("train/scac", loss, prog_bar=True)
        return loss


class BeatsDistillStudent(_DistillBase):
    """Stage 2: two-channel student distilled from the frozen teacher (eq. 8)."""

    def __init__(
        self,
        teacher: str | None = None,
        enhancer: dict | None = None,
        fusion_heads: int = 4,
        lambda_kd: float = 1.0,
        tau: float = 2.0,
        lambda_se: float = 0.01,
        init_from_teacher: bool = True,
        **kwargs,
    ):
        """``teacher``: the stage-1 model's saved folder; ``**kwargs``: the arguments shared with the teacher."""
        super().__init__(**kwargs)
        self.enhancer = MaskEnhancer(**(enhancer or {}))
        self.fusion = GatedCrossAttentionFusion(self.beats.embed_dim, fusion_heads)
        self._teacher = _SharedSlot()  # kept out of the module tree: never trained, never saved with the student

    @property
    def teacher(self) -> BeatsDistillTeacher:
        if not self._teacher:
            if not self.hparams.teacher:
                raise ValueError("the student needs the stage-1 teacher: set model.teacher to its saved folder")
            t = load_pretrained_dir(self.hparams.teacher, self.device)
            t.requires_grad_(False).eval()
            self._teacher.append(t)
        return self._teacher[0]

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self._ensure_classifier(self.teacher.classifier.num_classes)
            if self.hparams.init_from_teacher:
                self.start_from_teacher()

    def start_from_teacher(self) -> None:
        """Start the shared encoder (BEATs + LoRA), ASP/projection and classifier from the adapted teacher; the
        enhancer and fusion keep their own (identity-like) initialisation. The paper does not say how the student
        starts; starting from the teacher means stage 2 refines machine-adapted features instead of re-learning
        them, which matters most when no pretrained BEATs exists (measured in the issue note). A resumed Lightning
        checkpoint is restored after this and wins."""
        try:
            result = self.load_state_dict(self.teacher.state_dict(), strict=False)
        except RuntimeError as e:  # shape mismatches
            raise ValueError(
                f"the student cannot start from the teacher {self.hparams.teacher}: their beats / lora_rank / "
                f"asp_hidden / embed_dim / sub_centers settings differ (or set init_from_teacher: false)\n{e}"
            ) from None
        if result.unexpected_keys:
            raise ValueError(f"teacher weights do not fit the student: {result.unexpected_keys[:3]} ...")

    def on_train_start(self) -> None:
        assert not any(p.requires_grad for p in self.teacher.parameters()), "the teacher must stay frozen in stage 2"

    def student_frames(self, wave: torch.Tensor, lengths: torch.Tensor | None):
        """``[B, 2, S]`` -> fused tokens, their mask and the enhanced waveform."""
        b = wave.shape[0]
        wave = _zero_padding(wave, lengths)
        x_enh = _zero_padding(self.enhancer(wave), lengths)
        both = torch.cat([x_enh, wave[:, 0]])
        frames, mask = self.encoder(both, None if lengths is None else torch.cat([lengths, lengths]))
        fused = self.fusion(frames[:b], frames[b:], mask[:b])
        return fused, mask[:b], x_enh

    def embed_batch(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if wave.dim() != 3 or wave.shape[1] != 2:
            raise ValueError(f"beats-distill needs two-channel (near, far) audio [B, 2, S], got {tuple(wave.shape)}")
        fused, mask, _ = self.student_frames(wave, lengths)
        return self.head(fused, mask)

    def losses(self, batch) -> dict[str, torch.Tensor]:
        lengths, x_pc = batch["lengths"], batch["pseudo_clean"]
        fused, mask, x_enh = self.student_frames(batch["wave"], lengths)
        scac, o_stu = self.classifier.loss(self.head(fused, mask), batch["class"])
        with torch.no_grad():
            o_tea = self.teacher.logits(x_pc, lengths)
        tau = self.hparams.tau
        kd = F.kl_div(
            F.log_softmax(o_stu / tau, -1), F.log_softmax(o_tea / tau, -1), log_target=True, reduction="batchmean"
        )
        se = negative_snr(x_enh, x_pc, lengths)
        total = scac + self.hparams.lambda_kd * tau**2 * kd + self.hparams.lambda_se * se
        return {"loss": total, "scac": scac, "kd": kd, "se": se}

    def training_step(self, batch, batch_idx):
        if "pseudo_clean" not in batch:
            raise ValueError("the student needs pseudo-clean targets: set data.pseudo_clean_root")
        out = self.losses(batch)
        self.log_dict({f"train/{k}": v for k, v in out.items()}, prog_bar=True)
        return out["loss"]


def negative_snr(estimate: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """``-10 log10(|target|^2 / |estimate - target|^2)`` over valid samples, averaged over the batch."""
    estimate, target = _zero_padding(estimate, lengths), _zero_padding(target, lengths)
    num = target.pow(2).sum(-1) + 1e-8
    den = (estimate - target).pow(2).sum(-1) + 1e-8
    return -(10 * torch.log10(num / den)).mean()


__all__ = ["BeatsDistillStudent", "BeatsDistillTeacher", "negative_snr"]
