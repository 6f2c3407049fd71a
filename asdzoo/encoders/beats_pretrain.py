"""Pre-train a BEATs encoder from scratch with the BEATs iteration-1 objective, for when no official checkpoint
can be had (offline machines, new domains).

Chen et al. 2023 (BEATs, §3.2.1 and §3.3): a frozen random-projection tokenizer turns every 16x16 fbank patch
into one of 1024 discrete labels (nearest of 1024 random 256-d codebook vectors); 75 % of the patches are masked,
only the visible ones go through the encoder (the MAE speed-up), a small Transformer label predictor sees the
encoded visible tokens with zeros at the masked positions, and cross-entropy is taken on the masked labels.
Projected patches and codebook vectors are L2-normalised before the nearest-neighbour look-up (as the paper's
self-distilled tokenizer does) so every code is reachable whatever the fbank level. The result is written in the
format :class:`asdzoo.encoders.beats.BEATs` loads (safetensors + cfg metadata), so ``beats_checkpoint`` can point
at it exactly like at an official file.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from asdzoo.atomic import atomic_path
from asdzoo.encoders.beats import BEATs, TransformerEncoder


def fbank_patches(fb: torch.Tensor, size: int) -> torch.Tensor:
    """``[B, T, F]`` fbank -> ``[B, N, size*size]`` flattened patches in BEATs' token order (time-major)."""
    b, t, f = fb.shape
    tp, fp = t // size, f // size
    x = fb[:, : tp * size, : fp * size].reshape(b, tp, size, fp, size)
    return x.permute(0, 1, 3, 2, 4).reshape(b, tp * fp, size * size)


class RandomProjectionTokenizer(nn.Module):
    """Frozen random projection + nearest of ``codebook_size`` frozen random vectors (BEATs iteration 1)."""

    def __init__(self, patch_dim: int, codebook_size: int = 1024, code_dim: int = 256, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("projection", torch.randn(patch_dim, code_dim, generator=g) / math.sqrt(patch_dim))
        self.register_buffer("codebook", F.normalize(torch.randn(codebook_size, code_dim, generator=g), dim=-1))

    @torch.no_grad()
    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """``[B, N, patch_dim]`` -> labels ``[B, N]``."""
        return (F.normalize(patches @ self.projection, dim=-1) @ self.codebook.T).argmax(-1)


class BEATsPretrainer(L.LightningModule):
    """Masked acoustic-label prediction on unlabelled audio (every channel of every training clip is one view)."""

    def __init__(
        self,
        beats: dict | None = None,
        fbank_window: str = "povey",
        mask_ratio: float = 0.75,
        codebook_size: int = 1024,
        code_dim: int = 256,
        predictor_layers: int = 2,
        lr: float = 5e-4,
        warmup_steps: int = 100,
        tokenizer_seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.beats = BEATs(cfg=beats, fbank_window=fbank_window)
        size = self.beats.cfg.input_patch_size
        self.tokenizer = RandomProjectionTokenizer(size * size, codebook_size, code_dim, tokenizer_seed)
        self.predictor = TransformerEncoder(replace(self.beats.cfg, encoder_layers=predictor_layers))
        self.label_head = nn.Linear(self.beats.embed_dim, codebook_size)

    def masked_prediction_loss(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mono waveforms ``[B, S]`` (all the same length) -> (cross-entropy on masked labels, accuracy)."""
        fb = self.beats.preprocess(wave)
        labels = self.tokenizer(fbank_patches(fb, self.beats.cfg.input_patch_size))
        tokens = self.beats.patch_tokens(fb)
        b, n, d = tokens.shape
        keep = max(1, round(n * (1 - self.hparams.mask_ratio)))
        visible = torch.rand(b, n, device=tokens.device).argsort(dim=1)[:, :keep].sort(dim=1).values
        encoded = self.beats.encoder(tokens.gather(1, visible[..., None].expand(-1, -1, d)), None)
        full = torch.zeros_like(tokens).scatter(1, visible[..., None].expand(-1, -1, d), encoded)
        masked = torch.ones(b, n, dtype=torch.bool, device=tokens.device).scatter(1, visible, False)
        logits = self.label_head(self.predictor(full, None))[masked]
        target = labels[masked]
        return F.cross_entropy(logits, target), (logits.argmax(-1) == target).float().mean()

    def training_step(self, batch, batch_idx):
        wave = batch["wave"]
        shortest = int(batch["lengths"].min())  # crop to the shortest clip: no padding inside the batch
        wave = wave[..., :shortest].reshape(-1, shortest)  # every channel is one view
        loss, accuracy = self.masked_prediction_loss(wave)
        self.log_dict({"train/mam": loss, "train/accuracy": accuracy}, prog_bar=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.01)
        warmup = max(1, self.hparams.warmup_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def export(self, path: str | Path) -> Path:
        """Write the encoder as ``BEATs(checkpoint=path)`` reads it: safetensors with the cfg JSON as metadata."""
        from safetensors.torch import save_file

        path = Path(path)
        state = {
            k: v.detach().cpu().clone() for k, v in self.beats.state_dict().items()
        }  # shared rel-pos table: cloned
        with atomic_path(path) as tmp:
            save_file(state, str(tmp), metadata={"cfg": json.dumps(asdict(self.beats.cfg))})
        return path


class ExportBEATs(L.Callback):
    """At the end of ``fit``, write the pre-trained encoder for ``beats_checkpoint``."""

    def __init__(self, path: str):
        self.path = path

    def on_fit_end(self, trainer: L.Trainer, pl_module: BEATsPretrainer) -> None:
        if trainer.is_global_zero:
            pl_module.export(self.path)
