"""Frame-vector data for the official AE baseline: stacked log-mel vectors of one machine's near channel."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import TensorDataset
from torchdata.stateful_dataloader import StatefulDataLoader

from asdzoo.audio.features import stacked_log_mel
from asdzoo.data.resumable import train_loader
from asdzoo.data.task2 import Task2Dataset, scan_clips


def clip_vectors(waves: torch.Tensor, lengths: torch.Tensor | None, **feature_args) -> list[torch.Tensor]:
    """Per-clip ``[n_i, D]`` vectors of the near channel of ``[N, C, S]`` waves, each at its valid length."""
    out = []
    for i in range(len(waves)):
        n = waves.shape[-1] if lengths is None else int(lengths[i])
        out.append(stacked_log_mel(waves[i, 0, :n], **feature_args))
    return out


class LogMelFrameDataModule(L.LightningDataModule):
    """Training vectors of ``<root>/<machine>/train`` (one model per machine, as the official baseline). The
    feature settings (``feature_args``: n_mels, frames, n_fft, hop_length) come from the model being trained, so
    they are declared once and ``--model.n_mels 64`` changes both."""

    def __init__(self, root: str, machine: str, batch_size: int = 256, channels: int = 2, num_workers: int = 0):
        super().__init__()
        self.root, self.machine, self.batch_size, self.channels, self.num_workers = (
            root,
            machine,
            batch_size,
            channels,
            num_workers,
        )

    def setup(self, stage: str | None = None) -> None:
        model = self.trainer.lightning_module if self.trainer is not None else None
        feature_args = getattr(model, "feature_args", None)
        if feature_args is None:
            raise ValueError(f"{type(self).__name__} needs a model with feature_args (e.g. AEBaseline) to train")
        if getattr(self, "feature_args", None) == feature_args:
            return
        self.feature_args = dict(feature_args)
        ds = Task2Dataset(scan_clips(self.root, self.machine, "train"), channels=self.channels)
        vecs, doms = [], []
        for item in ds:
            v = stacked_log_mel(item["wave"][0], **self.feature_args)
            vecs.append(v)
            doms.append(torch.full((len(v),), item["domain"]))
        self.vectors, self.domains = torch.cat(vecs), torch.cat(doms)

    def train_dataloader(self) -> StatefulDataLoader:
        return train_loader(TensorDataset(self.vectors, self.domains), self.batch_size, num_workers=self.num_workers)
