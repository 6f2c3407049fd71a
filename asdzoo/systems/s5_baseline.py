"""The DCASE 2026 Task 4 (S5) baseline: an M2D audio tagger and the label-queried ResUNetK separator, trained apart
and chained (tagger -> one label per slot -> 54-d query -> separator -> 3 dry mono waveforms).

Settings from the official configs (``nttcslab/dcase2026_task4_baseline`` @ 20e6992, summarised in
``../shared/reference/s5_facts``): tagger stage 1 trains the head only (AdamW lr 1e-3), stage 2 the last two blocks
and the head (lr 1e-5); the separator AdamW lr 1e-4; all AdamW with betas (0.9, 0.999), eps 1e-8, no weight decay,
amsgrad; gradient clipping 0.5 lives in the trainer configs.
"""

from __future__ import annotations

import inspect
import logging
import pickle
import tempfile
import zipfile
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torchmetrics.functional.audio import pit_permutate, signal_noise_ratio

from asdzoo.config import CapturesInit
from asdzoo.data.s5 import MIX_CHANNELS, N_SLOTS, SILENCE, TAGGER_CLASSES
from asdzoo.data.task4 import labels_from_vector, separator_query
from asdzoo.encoders.m2d import M2D, M2DTagger, load_m2d_tagger
from asdzoo.metrics.task4 import label_accuracy, label_counts
from asdzoo.nn.pit import class_aware_pit_loss, tagger_pit_loss
from asdzoo.nn.resunetk import ResUNetK, read_state_dict

log = logging.getLogger(__name__)

# the M2D encoder fields a saved tagger needs to rebuild its architecture without the weight file
M2D_SIZE_FIELDS = ("embed_dim", "depth", "num_heads", "input_size", "patch_size", "sample_rate")


def _adamw(params, lr: float) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=True)


def _load_saved_state(path: str) -> dict[str, torch.Tensor]:
    """Weights of a folder written by ``save_pretrained`` or of a file (``.safetensors`` / Lightning ``.ckpt``)."""
    p = Path(path)
    if p.is_dir():
        from safetensors.torch import load_file

        return load_file(str(p / "model.safetensors"))
    return read_state_dict(p)


def _load_strictly(module: nn.Module, state: dict[str, torch.Tensor], source, problem: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error naming the file and what it is not."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{source}: {problem} ({err})") from None


class S5Tagger(CapturesInit, L.LightningModule):
    """``M2dAt`` (``channels=1``, reference channel 0) or ``M2dAtSpatial`` (``channels=4``) with the
    permutation-invariant slot cross-entropy.

    ``m2d_checkpoint``: the official M2D weight file to start from (stage 1); ``init_from``: a trained tagger to
    continue from (a saved folder, or an official Lightning ``m2dat_*.ckpt``; stage 2). ``finetuning_layers`` as
    the baseline: ``head``, ``<k>_blocks`` (the last k Transformer blocks, the final norm and the head) or ``all``.
    """

    def __init__(
        self,
        channels: int = 1,
        m2d_checkpoint: str | None = None,
        m2d: dict | None = None,
        finetuning_layers: str = "head",
        lr: float = 1e-3,
        track_in: int = 1024,
        track_hidden: int = 512,
        init_from: str | None = None,
    ):
        super().__init__()
        if channels not in (1, MIX_CHANNELS):
            raise ValueError(f"channels must be 1 (M2dAt) or {MIX_CHANNELS} (M2dAtSpatial), got {channels}")
        encoder = M2D(checkpoint=m2d_checkpoint, **(m2d or {}))
        self.model = M2DTagger(
            encoder,
            channels=channels,
            num_classes=len(TAGGER_CLASSES),
            num_outputs=N_SLOTS,
            track_in=track_in,
            track_hidden=track_hidden,
        )
        if init_from is not None:
            self._init_from(init_from)
        self.random_encoder = m2d_checkpoint is None and init_from is None
        self.lr = lr
        self.finetuning_layers = finetuning_layers
        self._freeze(finetuning_layers)

    def _init_from(self, path: str) -> None:
        p = Path(path)
        if p.suffix == ".ckpt":  # official tagger checkpoint: its own loader knows the nnAudio buffers to skip
            state = load_m2d_tagger(str(p), num_heads=self.model.m2d.cfg.num_heads).state_dict()
        else:
            state = {k.removeprefix("model."): v for k, v in _load_saved_state(path).items()}
        _load_strictly(self.model, state, path, "not a tagger of this architecture")

    def _freeze(self, layers: str) -> None:
        blocks = list(self.model.m2d.backbone.blocks)
        k = int(layers.split("_")[0]) if layers.endswith("_blocks") and layers.split("_")[0].isdigit() else 0
        if layers == "all":
            trainable = [self.model]
        elif layers == "head":
            trainable = [self.model.head]
        elif 0 < k <= len(blocks):
            trainable = [*blocks[-k:], self.model.m2d.backbone.norm, self.model.head]
        else:
            raise ValueError(
                f"finetuning_layers must be 'head', 'all' or '<k>_blocks' (k <= {len(blocks)}), got {layers!r}"
            )
        self.model.requires_grad_(False)
        for module in trainable:
            module.requires_grad_(True)

    def on_fit_start(self) -> None:
        if self.random_encoder and self.finetuning_layers != "all":
            log.warning(
                "S5Tagger: trained without m2d_checkpoint or init_from: its frozen M2D layers are random and stay "
                "random (pass --model.m2d_checkpoint, or --model.finetuning_layers all to train from scratch)"
            )

    def saved_config(self, config: dict) -> dict:
        cfg = self.model.m2d.cfg
        size = {k: list(v) if isinstance(v, tuple) else v for k, v in ((f, getattr(cfg, f)) for f in M2D_SIZE_FIELDS)}
        return config | {"m2d_checkpoint": None, "init_from": None, "m2d": size}

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        """``[B, 4, S]`` 32 kHz mixture -> logits ``[B, 3, 19]`` (silence last)."""
        return self.model(mixture)

    @torch.no_grad()
    def tag(self, mixture: torch.Tensor) -> tuple[list[list[str]], torch.Tensor]:
        """Argmax label per slot (no threshold, as the baseline) and its softmax probability ``[B, 3]``."""
        probs = self(mixture).softmax(-1)
        best = probs.max(-1).values
        return [labels_from_vector(row) for row in probs], best

    def training_step(self, batch, batch_idx):
        loss, _ = tagger_pit_loss(self(batch["mixture"]), batch["classes"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["mixture"]))
        return loss

    def validation_step(self, batch, batch_idx):
        self.log_validation(self(batch["mixture"]), batch)

    def log_validation(self, logits: torch.Tensor, batch: dict) -> None:
        """The classification loss (what checkpoints are selected by) and label accuracies of these logits."""
        loss, _ = tagger_pit_loss(logits, batch["classes"])
        predicted = [labels_from_vector(row) for row in logits]
        mixture_acc, source_acc = label_accuracy([label_counts(p, r) for p, r in zip(predicted, batch["labels"])])
        n = len(batch["mixture"])
        # sync_dist: under DDP each process validates on its share; the monitored val/loss must be the mean of all
        self.log("val/loss", loss, prog_bar=True, batch_size=n, sync_dist=True)
        acc = mixture_acc if mixture_acc is not None else 100.0
        self.log("val/accuracy_mixture", acc, batch_size=n, sync_dist=True)
        if source_acc is not None:
            self.log("val/accuracy_source", source_acc, batch_size=n, sync_dist=True)

    def configure_optimizers(self):
        return _adamw([p for p in self.parameters() if p.requires_grad], self.lr)


def slot_snr_improvement(est: torch.Tensor, dry: torch.Tensor, mixture: torch.Tensor, query: torch.Tensor):
    """Mean SNR improvement (dB) over active slots, slots matched as the class-aware PIT loss matches them:
    ``SNR(est, ref) - SNR(mixture ch 0, ref)``; the separator's validation number."""
    _, perm = class_aware_pit_loss(est, dry, query.view(len(query), N_SLOTS, -1))
    est = pit_permutate(est, perm)
    active = query.view(len(query), N_SLOTS, -1).sum(-1) > 0
    mix = mixture[:, :1].expand_as(dry)
    gain = signal_noise_ratio(est, dry) - signal_noise_ratio(mix, dry)
    return gain[active].mean()


class S5Separator(CapturesInit, L.LightningModule):
    """ResUNetK queried by label, trained with the class-aware PIT negative SNR. ``width`` scales the UNet for
    small CPU models (1 = official); ``init_from``: a saved folder or an official ``resunetk.ckpt``."""

    def __init__(self, width: float = 1.0, lr: float = 1e-4, init_from: str | None = None):
        super().__init__()
        self.model = ResUNetK(width=width)
        self.lr = lr
        if init_from is not None:
            state = {k.removeprefix("model."): v for k, v in _load_saved_state(init_from).items()}
            _load_strictly(self.model, state, init_from, f"not a ResUNetK of width {width}")

    def saved_config(self, config: dict) -> dict:
        return config | {"init_from": None}

    def forward(self, mixture: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """``[B, 4, S]`` mixture, ``[B, 54]`` query -> ``[B, 3, S]`` dry estimates (silent slots zero)."""
        return self.model(mixture, query)["waveform"][:, :, 0]

    def _step(self, batch):
        est = self(batch["mixture"], batch["query"])
        loss, _ = class_aware_pit_loss(est, batch["dry_sources"], batch["query"].view(len(est), N_SLOTS, -1))
        return est, loss

    def training_step(self, batch, batch_idx):
        _, loss = self._step(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["mixture"]))
        return loss

    def validation_step(self, batch, batch_idx):
        est, loss = self._step(batch)
        n = len(est)
        self.log("val/loss", loss, prog_bar=True, batch_size=n, sync_dist=True)  # mean over DDP processes
        gain = slot_snr_improvement(est, batch["dry_sources"], batch["mixture"], batch["query"])
        self.log("val/snri", gain, prog_bar=True, batch_size=n, sync_dist=True)

    def configure_optimizers(self):
        return _adamw(self.parameters(), self.lr)


class S5Chain(CapturesInit, nn.Module):
    """Tagger -> separator, as the baseline's ``S5.predict_label_separate``: per slot the argmax label, silent slots
    moved last, the 54-d query, the separator. What ``asdzoo.load('s5-baseline-4c')`` returns."""

    def __init__(self, tagger: dict | None = None, separator: dict | None = None):
        super().__init__()
        self.tagger = S5Tagger(**(tagger or {}))
        self.separator = S5Separator(**(separator or {}))
        self.eval()

    @classmethod
    def from_parts(cls, tagger: S5Tagger, separator: S5Separator) -> S5Chain:
        """Chain two trained models (their weights are copied). Any :class:`S5Tagger` chains as the plain tagger it
        trains: a distillation tagger's training-only parts (auxiliary heads, projector) stay behind."""
        plain = set(inspect.signature(S5Tagger.__init__).parameters)
        chain = cls(tagger={k: v for k, v in tagger.config.items() if k in plain}, separator=separator.config)
        chain.tagger.model.load_state_dict(tagger.model.state_dict())
        chain.separator.load_state_dict(separator.state_dict())
        return chain.eval()

    @property
    def sample_rate(self) -> int:
        return self.tagger.model.m2d.cfg.sample_rate

    @torch.no_grad()
    def separate(self, mixture: torch.Tensor) -> dict:
        """``[B, 4, S]`` -> ``labels`` (B lists of 3 names, silence last), ``probabilities [B, 3]`` and
        ``waveforms [B, 3, S]`` (silent slots are zero and carry no meaning)."""
        labels, probs = self.tagger.tag(mixture)
        order = [sorted(range(N_SLOTS), key=lambda k, row=row: row[k] == SILENCE) for row in labels]
        labels = [[row[k] for k in o] for row, o in zip(labels, order)]
        probs = torch.stack([p[o] for p, o in zip(probs, order)])
        query = torch.stack([separator_query(row) for row in labels]).to(mixture)
        waves = self.separator(mixture, query)
        return {"labels": labels, "probabilities": probs, "waveforms": waves}

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        return self.separate(mixture)["waveforms"]


def load_official_s5(path: str | Path, tagger: dict | None = None, separator: dict | None = None) -> S5Chain:
    """The released baseline (``baseline_checkpoint.zip``, or it unpacked: ``checkpoint/m2dat_{1c,4c}.ckpt`` and
    ``checkpoint/resunetk.ckpt``) as the :class:`S5Chain` of these arguments; both checkpoints load strictly."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder (expected the release's baseline_checkpoint.zip)")
    if path.is_file():
        try:
            archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise ValueError(f"{path}: not a zip archive (expected the release's baseline_checkpoint.zip)") from None
        with archive, tempfile.TemporaryDirectory() as tmp:
            names = {Path(n).name for n in archive.namelist()}
            wanted = (f"m2dat_{(tagger or {}).get('channels', 1)}c.ckpt", "resunetk.ckpt")
            if not set(wanted) <= names:  # a torch .ckpt is a zip too: say what this one is not
                raise ValueError(
                    f"{path}: holds no {' / '.join(wanted)} (expected the release's baseline_checkpoint.zip)"
                )
            archive.extractall(tmp, [n for n in archive.namelist() if Path(n).name in wanted])
            return load_official_s5(tmp, tagger, separator)
    chain = S5Chain(tagger, separator)
    found = {p.name: p for p in path.rglob("*.ckpt")} if path.is_dir() else {}
    names = (f"m2dat_{chain.tagger.model.channels}c.ckpt", "resunetk.ckpt")
    missing = [n for n in names if n not in found]
    if missing:
        raise FileNotFoundError(f"{path}: missing {', '.join(missing)} (expected the baseline's checkpoint/ folder)")
    try:
        official = load_m2d_tagger(str(found[names[0]]), num_heads=chain.tagger.model.m2d.cfg.num_heads)
    except (RuntimeError, KeyError, pickle.UnpicklingError) as err:
        raise ValueError(f"{found[names[0]]}: not an M2D tagger checkpoint of the release ({err!r})") from None
    for model, state, file in (
        (chain.tagger.model, official.state_dict(), found[names[0]]),
        (chain.separator.model, read_state_dict(found[names[1]]), found[names[1]]),
    ):
        _load_strictly(model, state, file, "does not match the architecture of this entry")
    return chain.eval()
