"""Frame-vector data for the official AE baseline: stacked log-mel vectors of one machine's near channel."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from asdzoo.audio.features import stacked_log_mel
from asdzoo.data.task2 import Task2Dataset, scan_clips


def clip_vectors(waves: torch.Tensor, lengths: torch.Tensor | None, **feature_args) -> list[torch.Tensor]:
    """Per-clip ``[n_i, D]`` vectors of the near channel of ``[N, C, S]`` waves, each at its valid length."""
    out = []
    for i in range(len(waves)):
        n = waves.shape[-1] if lengths is None else int(lengths[i])
        out.append(stacked_log_mel(waves[i, 0, :n], **feature_args))
    return out


class LogMelFrameDataModule(L.LightningDataModule):
    """Training vectors of ``<root>/<machine>/train`` (one model per machine, as the official baseline)."""

    def __init__(
        self,
        root: str,
        machine: str,
        batch_size: int = 256,
        n_mels: int = 128,
        frames: int = 5,
        n_fft: int = 1024,
        hop_length: int = 512,
        channels: int = 2,
        num_workers: int = 0,
    ):
        super().__init__()
        self.root, self.machine, self.batch_size, self.channels, self.num_workers = (
            root,
            machine,
            batch_size,
            channels,
            num_workers,
        )
        self.feature_args = dict(n_mels=n_mels, frames=frames, n_fft=n_fft, hop_length=hop_length)

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "vectors"):
            return
        ds = Task2Dataset(scan_clips(self.root, self.machine, "train"), channels=self.channels)
        vecs, doms = [], []
        for item in ds:
            v = stacked_log_mel(item["wave"][0], **self.feature_args)
            vecs.append(v)
            doms.append(torch.full((len(v),), item["domain"]))
        self.vectors, self.domains = torch.cat(vecs), torch.cat(doms)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            TensorDataset(self.vectors, self.domains), self.batch_size, shuffle=True, num_workers=self.num_workers
        )
