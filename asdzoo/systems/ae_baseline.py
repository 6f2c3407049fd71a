"""The official DCASE Task 2 autoencoder baselines (MSE and Mahalanobis scoring).

128 log-mel bins x 5 stacked frames (640-d), fully connected 640-128-128-128-128-8-128-128-128-128-640 with
BatchNorm (momentum 0.01, eps 1e-3, the baseline's Keras defaults) and ReLU, Adam lr 1e-3, batch 256,
100 epochs, near channel only, one model per machine. Scores: mean MSE of a clip's vectors, or the mean
Mahalanobis norm of the reconstruction error under the source and under the target covariance of the
training errors, the smaller of the two.
"""

from __future__ import annotations

import logging

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from asdzoo.config import CapturesInit
from asdzoo.data.frames import clip_vectors
from asdzoo.nn.batching import map_batches

SCORE_TYPES = ("mse", "mahalanobis")


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Linear(cin, cout), nn.BatchNorm1d(cout, momentum=0.01, eps=1e-3), nn.ReLU()]


class AEBaseline(CapturesInit, L.LightningModule):
    """The feature settings live here only; :class:`~asdzoo.data.frames.LogMelFrameDataModule` reads them from the
    model it trains, so model and data can never disagree on the vector size."""

    def __init__(
        self,
        n_mels: int = 128,
        frames: int = 5,
        n_fft: int = 1024,
        hop_length: int = 512,
        hidden: int = 128,
        bottleneck: int = 8,
        lr: float = 1e-3,
        score_type: str = "mse",
        epochs: int = 100,
        batch_size: int = 256,
        seed: int = 0,
    ):
        super().__init__()
        if score_type not in SCORE_TYPES:
            raise ValueError(f"score_type must be one of {SCORE_TYPES}, got {score_type!r}")
        self.save_hyperparameters()
        dim = n_mels * frames
        self.feature_args = dict(n_mels=n_mels, frames=frames, n_fft=n_fft, hop_length=hop_length)
        self.encoder = nn.Sequential(
            *_block(dim, hidden),
            *_block(hidden, hidden),
            *_block(hidden, hidden),
            *_block(hidden, hidden),
            *_block(hidden, bottleneck),
        )
        self.decoder = nn.Sequential(
            *_block(bottleneck, hidden),
            *_block(hidden, hidden),
            *_block(hidden, hidden),
            *_block(hidden, hidden),
            nn.Linear(hidden, dim),
        )
        # Inverse covariances of training reconstruction errors, per domain (Mahalanobis score).
        self.register_buffer("inv_cov", torch.zeros(2, dim, dim))
        self.register_buffer("has_domain", torch.zeros(2, dtype=torch.bool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def training_step(self, batch, batch_idx):
        x = batch[0]
        loss = nn.functional.mse_loss(self(x), x)
        self.log("train/mse", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    def on_train_end(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "vectors"):
            self.fit_covariances(dm.vectors, dm.domains)

    # -- detector interface ----------------------------------------------------------------------
    @torch.no_grad()
    def fit_covariances(self, vectors: torch.Tensor, domains: torch.Tensor) -> None:
        self.eval()
        err = map_batches(lambda v, _: v - self(v.to(self.device)).cpu(), vectors, batch_size=4096).double()
        for d in (0, 1):
            e = err[domains == d]
            if len(e) > 1:
                cov = torch.from_numpy(np.cov(e.numpy().T))
                self.inv_cov[d] = torch.linalg.pinv(cov).to(self.inv_cov)
                self.has_domain[d] = True

    def fit(
        self, waves: torch.Tensor, domains, lengths: torch.Tensor | None = None, progress: bool = False
    ) -> AEBaseline:
        """Train a fresh model on the normal clips ``[N, C, S]`` of one machine, then fit the error covariances.
        The weights are re-initialised from ``seed`` first: torch's process-wide generator is seeded at random, so
        without this the same call gave other scores in every process."""
        vecs = clip_vectors(waves, lengths, **self.feature_args)
        domains = torch.as_tensor(domains)
        x = torch.cat(vecs)
        d = torch.cat([torch.full((len(v),), int(domains[i])) for i, v in enumerate(vecs)])
        L.seed_everything(self.hparams.seed, verbose=False)
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
        loader = DataLoader(TensorDataset(x, d), self.hparams.batch_size, shuffle=True)
        trainer = L.Trainer(
            max_epochs=self.hparams.epochs,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=progress,
            enable_model_summary=False,
        )
        trainer.fit(self, loader)
        self.fit_covariances(x, d)
        self.eval()
        return self

    @torch.no_grad()
    def score(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        self.eval()
        out = []
        for v in clip_vectors(wave, lengths, **self.feature_args):
            err = (v - self(v)).double()
            if self.hparams.score_type == "mse":
                out.append(err.pow(2).mean())
            else:
                if not self.has_domain.any():
                    raise RuntimeError("Mahalanobis scoring needs fitted covariances: call fit() first")
                per_domain = [
                    torch.sqrt((err @ self.inv_cov[d].double() * err).sum(-1).clamp(min=0)).mean()
                    for d in (0, 1)
                    if self.has_domain[d]
                ]
                out.append(torch.stack(per_domain).min())
        return torch.stack(out).float()
