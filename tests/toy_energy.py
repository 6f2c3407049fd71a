"""A toy Task 2 system, written the way a new system is added: this module and one registry entry, nothing else.

It scores a clip by how far its log energy (near channel, valid samples) lies from the training clips' mean, in
units of their standard deviation: a closed form the tests can recompute by hand.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn

from asdzoo.config import CapturesInit


def log_energy(waves: torch.Tensor, lengths: torch.Tensor | None, channel: int = 0) -> torch.Tensor:
    x = waves[:, channel].double()
    n = torch.full((len(x),), x.shape[-1]) if lengths is None else lengths
    valid = torch.arange(x.shape[-1])[None] < n[:, None]
    return torch.log((x.pow(2) * valid).sum(-1) / n + 1e-12)


class EnergyDetector(CapturesInit, nn.Module):
    def __init__(self, channel: int = 0):
        super().__init__()
        self.channel = channel
        self.register_buffer("stats", torch.zeros(2, dtype=torch.float64))  # mean, std of training log energies

    def fit(self, waves, domains, lengths=None):
        e = log_energy(waves, lengths, self.channel)
        self.stats = torch.stack([e.mean(), e.std()])
        return self

    def score(self, waves, lengths=None):
        return (log_energy(waves, lengths, self.channel) - self.stats[0]).abs() / self.stats[1]


class GainDetector(EnergyDetector, L.LightningModule):
    """The energy detector times a trainable gain that each epoch's training step sets to ``schedule[epoch]``
    (SGD with lr 0.5 on (gain - target)^2 moves it there in one step): a negative gain inverts the ranking, so
    the development score of each epoch is known in advance."""

    def __init__(self, schedule: tuple[float, ...] = (0.5, 1.0, -1.0), channel: int = 0):
        super().__init__(channel)
        self.schedule = schedule
        self.gain = nn.Parameter(torch.tensor(0.0, dtype=torch.float64))

    def score(self, waves, lengths=None):
        return self.gain.detach() * super().score(waves, lengths)

    def training_step(self, batch, batch_idx):
        return (self.gain - self.schedule[self.current_epoch]) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)
