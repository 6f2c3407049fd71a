"""aum-poe (paper 004): a pixel-unshuffle Audio-Mamba fine-tuned with pseudo outlier exposure and gradient reversal.

Stage 1, :class:`AumPretrainer`: Audio-Mamba (:mod:`asdzoo.encoders.aum`, pixel-unshuffle ``r`` before the 16x16
patches) + a linear head, cross-entropy over machine types on all normal clips (AdamW 1e-4, wd 1e-2, 5 epochs).
Stage 2, :class:`AumPoe`: all but the last ``unfreeze_blocks`` blocks frozen; the multi-level anomaly head (eq. 4-6)
gives the embedding z; loss eq. 11 = pOE (eq. 9, centre kept as a moving average, eq. 8) + lambda_adv x the domain
cross-entropy through a gradient reversal layer (eq. 10). Two AdamW optimizers (Lightning manual optimisation):
theta_f = unfrozen blocks + head, clipped at 1.0, stepped every ``accumulate`` batches; theta_D = the domain
classifier, trained on detached embeddings. Its pass through the reversal layer uses theta_D as constants, so each
optimizer only ever moves its own parameters. Early stopping on the validation AUC of held-out normal clips against
pseudo-outliers made from them (the paper does not say what its validation AUC is; DCASE training data has no
anomalies, and the test set is what is reported, so we never validate on it).
Scoring: cosine distance to the centre of the machine's training embeddings in eval mode (``scoring="centre"``; the
moving-average training centre mixes train-mode batch statistics) or kNN over the embeddings (``"knn"``).
``fit()`` runs stage 2 on one machine's normal clips (machine-specific, ``finetune_in_fit``); a machine-generalised
model is trained once with LightningCLI on all machines and ``fit()`` only fits its bank.
"""

from __future__ import annotations

import copy
import logging
import warnings

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import DataLoader, Dataset

from asdzoo.audio.channels import near_channel
from asdzoo.config import CapturesInit
from asdzoo.data.balanced import DomainBalancedSampler
from asdzoo.data.pseudo_outliers import PseudoOutlierMix
from asdzoo.data.task2 import held_out_split
from asdzoo.encoders.aum import AudioMamba
from asdzoo.nn.anomaly_head import MultiLevelAnomalyHead
from asdzoo.nn.batching import map_batches
from asdzoo.nn.distributed import gather
from asdzoo.nn.grl import gradient_reversal
from asdzoo.nn.multicrop import mean_per_clip, random_crops, segment_crops
from asdzoo.nn.poe import MomentumCentre, oc_svdd_loss, poe_loss
from asdzoo.scoring.bank_detector import BankDetector
from asdzoo.scoring.knn import BackendConfig

log = logging.getLogger(__name__)
SAMPLE_RATE = 16000
LOSSES = ("poe", "oc_svdd")
SCORINGS = ("centre", "knn")


def model_segment(segment_seconds: float, encoder: AudioMamba) -> int:
    """Training crop and scoring window in samples: ``segment_seconds``, or less where the Audio-Mamba's spectrogram
    holds less (a reduced ``spectrogram_size``), so longer clips are windowed and averaged rather than cut."""
    return min(int(segment_seconds * SAMPLE_RATE), encoder.window_samples)


def _clip_embeddings(embed_batch, wave: torch.Tensor, lengths: torch.Tensor | None, segment: int, device: torch.device):
    """Per-clip embeddings on the CPU: clips longer than the training segment are embedded as crops and averaged.
    Each slice of 16 crops goes to the model's ``device``, so a model loaded on a GPU scores clips read on the CPU."""
    crops, lens, owner = segment_crops(near_channel(wave), lengths, segment)
    z = map_batches(lambda w, n: embed_batch(w.to(device), n.to(device)).cpu(), crops, lens, 16)
    return F.normalize(mean_per_clip(z, owner, len(wave)), dim=-1)


def _trainer_device(device: torch.device) -> dict:
    """Lightning Trainer arguments that train a model where it is: its GPU if it was loaded on one, else the CPU."""
    if device.type == "cuda":
        return {"accelerator": "cuda", "devices": [device.index or 0]}
    return {"accelerator": "cpu", "devices": 1}


class AumPretrainer(CapturesInit, BankDetector, L.LightningModule):
    """Stage 1: machine-type classification. As a detector (the stage-1 row of an ablation) it is a kNN bank over
    the L2-normalised class-token embedding."""

    def __init__(
        self,
        aum: dict | None = None,
        checkpoint: str | None = None,
        num_classes: int | None = None,
        lr: float = 1e-4,
        weight_decay: float = 1e-2,
        segment_seconds: float = 10.0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.encoder = AudioMamba(**(aum or {}), num_classes=0, checkpoint=checkpoint)
        self.classifier = nn.Linear(self.encoder.embed_dim, num_classes) if num_classes else None
        self.backend_cfg = BackendConfig(metric="cosine", k=1, backend="domain_z")
        self.segment = model_segment(segment_seconds, self.encoder)

    def saved_config(self, config: dict) -> dict:
        """The saved weights hold the backbone; the number of machine types was learnt from the data."""
        aum = {k: v for k, v in self.encoder.config.items() if k not in ("checkpoint", "num_classes")}
        num_classes = None if self.classifier is None else self.classifier.out_features
        return config | {"aum": aum, "checkpoint": None, "num_classes": num_classes}

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.classifier is None:
            self.classifier = nn.Linear(self.encoder.embed_dim, self.trainer.datamodule.num_classes).to(self.device)
            self.hparams.num_classes = self.classifier.out_features

    def logits(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(self.class_embedding(near_channel(wave), lengths))

    def training_step(self, batch, batch_idx):
        logits = self.logits(*random_crops(batch["wave"], batch["lengths"], self.segment))
        loss = F.cross_entropy(logits, batch["class"])
        self.log("train/ce", loss, prog_bar=True)
        self.log("train/acc", (logits.argmax(-1) == batch["class"]).float().mean(), prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        """Machine-type cross-entropy and accuracy of held-out normal clips (``data.val_fraction`` > 0): the paper
        trains stage 1 a fixed 5 epochs; this shows whether the backbone generalises or memorises. Clips longer
        than the model's window are scored by their mean logits over windows."""
        if (batch["class"] < 0).any():
            raise ValueError(
                "aum-poe stage 1 validates on held-out normal clips with machine labels: set data.val_fraction > 0 "
                "(test/ clips carry none), or trainer.limit_val_batches: 0"
            )
        crops, lens, owner = segment_crops(near_channel(batch["wave"]), batch["lengths"], self.segment)
        logits = mean_per_clip(self.logits(crops, lens), owner, len(batch["wave"]))
        n = len(logits)
        self.log("val/ce", F.cross_entropy(logits, batch["class"]), prog_bar=True, sync_dist=True, batch_size=n)
        acc = (logits.argmax(-1) == batch["class"]).float().mean()
        self.log("val/acc", acc, prog_bar=True, sync_dist=True, batch_size=n)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    @torch.no_grad()
    def embed(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        self.eval()
        return {"main": _clip_embeddings(self.class_embedding, wave, lengths, self.segment, self.device)}

    def class_embedding(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The backbone's final class-token embedding ``[B, D]`` of near-channel waveforms (the stage-1 bank's)."""
        return self.encoder.embed_layers(wave, lengths)[0]


def load_backbone(name_or_path: str) -> AudioMamba:
    """The Audio-Mamba of a saved stage-1 model (a registry name such as ``aum-poe-stage1``, a Hub id or a folder)."""
    from asdzoo.hub import load

    stage1 = load(name_or_path)
    if not isinstance(stage1, AumPretrainer):
        raise ValueError(f"{name_or_path}: is a {type(stage1).__name__}, not an aum-poe stage-1 model (AumPretrainer)")
    return stage1.encoder


class _Normals(Dataset):
    """In-memory normal clips for ``fit()``: random ``segment``-long crops of the valid samples."""

    def __init__(self, waves: torch.Tensor, lengths: torch.Tensor, domains: torch.Tensor, segment: int, seed: int):
        self.waves, self.lengths, self.domains, self.segment = waves, lengths, domains, segment
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.waves)

    def __getitem__(self, i: int) -> dict:
        n = int(self.lengths[i])
        start = int(torch.randint(0, n - self.segment + 1, (), generator=self.gen)) if n > self.segment else 0
        wave = self.waves[i, ..., start : start + min(n, self.segment)]
        return {"wave": wave, "length": wave.shape[-1], "domain": int(self.domains[i])}


def _collate(items: list[dict]) -> dict:
    longest = max(it["length"] for it in items)
    wave = torch.stack([F.pad(it["wave"], (0, longest - it["length"])) for it in items])
    return {
        "wave": wave,
        "lengths": torch.tensor([it["length"] for it in items]),
        "domain": torch.tensor([it["domain"] for it in items]),
    }


class AumPoe(CapturesInit, BankDetector, L.LightningModule):
    """Stage 2 and the detector. ``backbone``: the stage-1 model to start from (registry name, Hub id or folder);
    ``aum``: an Audio-Mamba configuration to start from random weights instead (the "without pre-training"
    ablation, and what a saved model rebuilds before its own weights load). ``outliers``: the pseudo-outlier mix
    (:mod:`asdzoo.data.pseudo_outliers`), ``outlier_ratio`` pseudo-outliers per normal clip in a batch."""

    def __init__(
        self,
        backbone: str | None = "aum-poe-stage1",
        aum: dict | None = None,
        unfreeze_blocks: int = 2,
        fusion_layers: list[int] | None = None,
        head_hidden: int = 256,
        embed_dim: int = 128,
        dropout: float = 0.1,
        loss: str = "poe",
        margin: float = 0.2,
        centre_momentum: float = 0.99,
        use_grl: bool = True,
        lambda_adv: float = 0.1,
        domain_hidden: int = 64,
        lr: float = 1e-4,
        weight_decay: float = 1e-2,
        domain_lr: float = 1e-4,
        domain_weight_decay: float = 1e-2,
        grad_clip: float = 1.0,
        accumulate: int = 2,
        outliers: dict[str, float] | None = None,
        outlier_ratio: float = 1.0,
        scoring: str = "knn",
        knn_k: int = 1,
        knn_backend: str = "domain_z",
        knn_index: str = "flat",
        segment_seconds: float = 10.0,
        finetune_in_fit: bool = True,
        fit_epochs: int = 100,
        patience: int = 15,
        clips_per_machine: int = 1000,
        batch_size: int = 256,
        val_fraction: float = 0.1,
        seed: int = 0,
    ):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.encoder = self._build_backbone(backbone, aum, seed)
        depth = len(self.encoder.layers)
        if not 1 <= unfreeze_blocks <= depth:
            raise ValueError(f"unfreeze_blocks must be in 1..{depth} (the backbone's depth), got {unfreeze_blocks}")
        self.fusion_layers = list(range(depth - 1)) if fusion_layers is None else list(fusion_layers)
        if not self.fusion_layers or any(not 0 <= i < depth for i in self.fusion_layers):
            raise ValueError(f"fusion_layers must name blocks 0..{depth - 1}, got {fusion_layers}")
        with torch.random.fork_rng(devices=[]):  # the same seed builds the same heads, whatever ran before
            torch.manual_seed(seed)
            dim = self.encoder.embed_dim
            self.head = MultiLevelAnomalyHead(dim, len(self.fusion_layers), head_hidden, embed_dim, dropout)
            self.domain_classifier = nn.Sequential(
                nn.Linear(embed_dim, domain_hidden), nn.ReLU(), nn.Linear(domain_hidden, 2)
            ).requires_grad_(use_grl)  # without GRL it is unused: DDP rejects trainable parameters without gradients
        self.centre = MomentumCentre(embed_dim, centre_momentum)
        # scoring centre: the normalised mean of the machine's training embeddings in eval mode, set by fit()
        self.register_buffer("score_centre", torch.zeros(embed_dim))
        self.outlier_mix = PseudoOutlierMix(outliers or {"spectral": 1.0}, seed)
        self.segment = model_segment(segment_seconds, self.encoder)
        self.backend_cfg = BackendConfig(metric="cosine", k=knn_k, backend=knn_backend, index=knn_index)
        self._freeze_backbone(unfreeze_blocks)
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []

    @staticmethod
    def _build_backbone(backbone: str | None, aum: dict | None, seed: int) -> AudioMamba:
        if backbone is not None:  # a loaded model is in eval mode; training starts in train mode, as a new one
            return copy.deepcopy(load_backbone(backbone)).train()
        if aum is None:
            raise ValueError("aum-poe needs a stage-1 backbone (backbone=NAME_OR_DIR) or an Audio-Mamba config (aum=)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return AudioMamba(**aum)

    def _freeze_backbone(self, k: int) -> None:
        """Only the last ``k`` blocks (and the final norm after them) are fine-tuned (§2.5)."""
        self.encoder.requires_grad_(False)
        for block in self.encoder.layers[-k:]:
            block.requires_grad_(True)
        self.encoder.norm_f.requires_grad_(True)

    def saved_config(self, config: dict) -> dict:
        aum = {k: v for k, v in self.encoder.config.items() if k != "checkpoint"}
        return config | {"backbone": None, "aum": aum}

    @property
    def feature_parameters(self) -> list[nn.Parameter]:
        """theta_f: the unfrozen blocks and the anomaly head."""
        return [p for p in [*self.encoder.parameters(), *self.head.parameters()] if p.requires_grad]

    # -- embedding -----------------------------------------------------------------------------------
    def embed_batch(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Near-channel waveforms -> anomaly embeddings z ``[B, embed_dim]`` (eq. 4-6)."""
        cls, levels = self.encoder.embed_layers(near_channel(wave), lengths)
        return self.head(cls, [levels[i] for i in self.fusion_layers])

    @torch.no_grad()
    def embed(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        self.eval()
        return {"main": _clip_embeddings(self.embed_batch, wave, lengths, self.segment, self.device)}

    def centre_distance(self, z: torch.Tensor, centre: torch.Tensor | None = None) -> torch.Tensor:
        """1 - cos(z, c): the pOE loss's own notion of abnormality (``centre`` default: the training centre)."""
        c = self.centre.centre if centre is None else centre
        return 1 - F.cosine_similarity(z, c.to(z)[None], dim=-1)

    # -- training (stage 2) ---------------------------------------------------------------------------
    def configure_optimizers(self):
        h = self.hparams
        opt_f = torch.optim.AdamW(self.feature_parameters, lr=h.lr, weight_decay=h.weight_decay)
        opt_d = torch.optim.AdamW(
            self.domain_classifier.parameters(), lr=h.domain_lr, weight_decay=h.domain_weight_decay
        )
        return [opt_f, opt_d]

    def with_outliers(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normal clips followed by pseudo-outliers made from them: (waves, lengths, is_outlier)."""
        wave, lengths = batch["wave"], batch["lengths"]
        if wave.dim() == 2:
            wave = wave[:, None]
        n = max(1, round(self.hparams.outlier_ratio * len(wave)))
        outl = self.outlier_mix.make(wave, batch.get("other_wave"), n).to(wave)
        source = torch.arange(n) % len(wave)
        out_len = lengths[source.to(lengths.device)].clamp(max=outl.shape[-1])
        waves = torch.cat([wave, F.pad(outl, (0, wave.shape[-1] - outl.shape[-1]))[..., : wave.shape[-1]]])
        is_out = torch.cat([torch.zeros(len(wave)), torch.ones(n)]).bool().to(wave.device)
        return waves, torch.cat([lengths, out_len]), is_out

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """Eq. 9-11 on a batch of normal clips and the pseudo-outliers made from them."""
        h = self.hparams
        waves, lengths, is_out = self.with_outliers(batch)
        z = self.embed_batch(waves, lengths)
        z_normal = z[~is_out]
        if not self.centre.initialised:
            self.centre.update(z_normal.detach())
        c = self.centre.centre
        l_anom = poe_loss(z, is_out, c, h.margin) if h.loss == "poe" else oc_svdd_loss(z_normal, c)
        out = {"anomaly": l_anom, "z_normal": z_normal}
        if h.use_grl:
            frozen_d = {k: v.detach() for k, v in self.domain_classifier.named_parameters()}
            logits = torch.func.functional_call(self.domain_classifier, frozen_d, (gradient_reversal(z_normal, 1.0),))
            out["adv"] = F.cross_entropy(logits, batch["domain"])
            out["loss"] = l_anom + h.lambda_adv * out["adv"]
        else:
            out["loss"] = l_anom
        return out

    def training_step(self, batch, batch_idx):
        """One backward pass for both optimizers: the domain loss sees detached embeddings, so its gradient reaches
        only the classifier, and the adversarial term uses detached classifier weights, so its gradient reaches only
        θ_f — the sum gives each parameter exactly the gradient of its own loss. (Two backward passes per forward
        also give that in one process, but DDP allows only one.)"""
        h = self.hparams
        opt_f, opt_d = self.optimizers()
        wave, lengths = random_crops(batch["wave"], batch["lengths"], self.segment)
        out = self.losses(batch | {"wave": wave, "lengths": lengths})
        total = out["loss"]
        if h.use_grl:
            l_dom = F.cross_entropy(self.domain_classifier(out["z_normal"].detach()), batch["domain"])
            total = total + l_dom
            self.log("train/domain_ce", l_dom)
            self.log("train/adv", out["adv"])
        self.manual_backward(total / h.accumulate)
        if (batch_idx + 1) % h.accumulate == 0:
            self.clip_gradients(opt_f, gradient_clip_val=h.grad_clip, gradient_clip_algorithm="norm")
            for opt in (opt_f, opt_d) if h.use_grl else (opt_f,):
                opt.step()
                opt.zero_grad()
        self.centre.update(out["z_normal"].detach())
        self.log("train/anomaly", out["anomaly"], prog_bar=True)
        return out["loss"]

    def on_validation_epoch_start(self) -> None:
        self._val = []

    def validation_step(self, batch, batch_idx):
        """Held-out normals against pseudo-outliers made from them with a fixed seed per batch."""
        mix = PseudoOutlierMix(self.outlier_mix.weights, seed=10_000 + batch_idx)
        saved, self.outlier_mix = self.outlier_mix, mix
        try:
            waves, lengths, is_out = self.with_outliers(batch)
        finally:
            self.outlier_mix = saved
        scores = self.centre_distance(self.embed_batch(waves, lengths))
        self._val.append((scores.float(), is_out))

    def on_validation_epoch_end(self) -> None:
        if not self._val or not self.centre.initialised:
            return
        # under DDP: the AUC of every process's clips together (an average of per-shard AUCs is another number)
        scores, labels = (gather(torch.cat(v)).cpu().numpy() for v in zip(*self._val))
        auc = roc_auc_score(labels, scores) if 0 < labels.sum() < len(labels) else 0.5
        self.log("val/auc", float(auc), prog_bar=True)

    # -- detector ------------------------------------------------------------------------------------
    def fit(self, waves: torch.Tensor, domains, lengths: torch.Tensor | None = None, progress: bool = False):
        """Machine-specific stage 2 on one machine's normal clips (``finetune_in_fit``), then the detector's bank."""
        domains = torch.as_tensor(domains).long()
        if self.hparams.finetune_in_fit:
            self.finetune(waves, domains, lengths, progress)
        emb = self.embed(waves, lengths)
        self.score_centre.copy_(F.normalize(emb["main"].mean(0), dim=0))
        return self.fit_embeddings(emb, domains)

    def finetune(
        self,
        waves: torch.Tensor,
        domains,
        lengths: torch.Tensor | None = None,
        progress: bool = False,
        callbacks: list[L.Callback] | None = None,
        max_epochs: int | None = None,
    ):
        """Stage 2 on one machine's normal clips ``[N, C, S]``: a held-out split for early stopping, the rest drawn
        ``clips_per_machine`` per epoch, domain-balanced."""
        h = self.hparams
        domains = torch.as_tensor(domains).long()
        lengths = torch.full((len(waves),), waves.shape[-1]) if lengths is None else torch.as_tensor(lengths).cpu()
        L.seed_everything(h.seed, verbose=False)
        train_idx, val_idx = held_out_split(domains, h.val_fraction, h.seed)
        sets = {
            name: _Normals(waves[idx], lengths[idx], domains[idx], self.segment, h.seed)
            for name, idx in (("train", torch.tensor(train_idx)), ("val", torch.tensor(val_idx, dtype=torch.long)))
        }
        sampler = DomainBalancedSampler([0] * len(train_idx), domains[train_idx], h.clips_per_machine, h.seed)
        train = DataLoader(sets["train"], h.batch_size, sampler=sampler, collate_fn=_collate)
        val = DataLoader(sets["val"], h.batch_size, collate_fn=_collate) if val_idx else None
        callbacks = list(callbacks or [])
        if val is not None:
            callbacks.append(EarlyStopping("val/auc", mode="max", patience=h.patience))
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
        device = self.device
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            trainer = L.Trainer(
                max_epochs=max_epochs or h.fit_epochs,
                **_trainer_device(device),
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=progress,
                enable_model_summary=False,
                callbacks=callbacks,
                num_sanity_val_steps=0,
            )
            self.train()  # a loaded model is in eval mode; Lightning leaves the mode as it finds it
            trainer.fit(self, train, val)
        return self.to(device).eval()  # Lightning's teardown moves the model to the CPU; scoring runs where it was

    @staticmethod
    def search_space(trial) -> dict:
        """The stage-2 hyperparameters the paper tunes with BOHB (§3.2): learning rate, weight decay, lambda_adv,
        the pOE margin, the number of unfrozen blocks and the head's dropout (ranges ours; the paper gives none)."""
        return dict(
            lr=trial.suggest_float("lr", 1e-5, 1e-3, log=True),
            weight_decay=trial.suggest_float("weight_decay", 1e-4, 1e-1, log=True),
            lambda_adv=trial.suggest_float("lambda_adv", 1e-3, 1.0, log=True),
            margin=trial.suggest_float("margin", 0.0, 0.5),
            unfreeze_blocks=trial.suggest_int("unfreeze_blocks", 1, 4),
            dropout=trial.suggest_float("dropout", 0.0, 0.5),
        )

    def score_embeddings(self, emb: dict[str, torch.Tensor]) -> np.ndarray:
        if self.hparams.scoring == "knn":
            return super().score_embeddings(emb)
        return self.centre_distance(emb["main"], self.score_centre).double().numpy()

    def train_scores(self) -> np.ndarray:
        if self.hparams.scoring == "knn":
            return super().train_scores()
        bank = torch.from_numpy(self._fitted["embeddings"]["main"])
        return self.centre_distance(bank, self.score_centre).double().numpy()


__all__ = ["AumPoe", "AumPretrainer", "load_backbone"]
