"""Embedding heads for discriminatively trained ASD systems: attentive statistics pooling and the
sub-cluster AdaCos classifier."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from asdzoo.nn.distributed import gather


class AttentiveStatsPooling(nn.Module):
    """Okabe et al. (Interspeech 2018): frame weights from a small attention MLP, then the weighted mean and
    standard deviation, concatenated ``[B, 2D]``. Padded frames (``mask`` False) get zero weight."""

    def __init__(self, dim: int, hidden: int = 128):
        super().__init__()
        self.attention = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.attention(x).squeeze(-1)
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        w = logits.softmax(dim=1).unsqueeze(-1)
        mean = (w * x).sum(1)
        var = (w * x.pow(2)).sum(1) - mean.pow(2)
        return torch.cat([mean, var.clamp(min=1e-6).sqrt()], dim=-1)


class EmbeddingHead(nn.Module):
    """ASP -> projection: the utterance embedding of paper 000 (eq. 2)."""

    def __init__(self, dim: int, hidden: int = 128, embed_dim: int = 128):
        super().__init__()
        self.pool = AttentiveStatsPooling(dim, hidden)
        self.projection = nn.Linear(2 * dim, embed_dim)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.projection(self.pool(frames, mask))


class SubClusterAdaCos(nn.Module):
    """Sub-cluster AdaCos (Wilkinghoff, IJCNN 2021): ``sub_centers`` learnable centres per class; the class logit
    is the scaled log-sum-exp of the cosine logits of its centres, with AdaCos' adaptive scale
    ``s = log(sum of non-target exp(s cos)) / cos(min(pi/4, median target angle))`` updated on training batches
    (Zhang et al. 2019)."""

    def __init__(self, embed_dim: int, num_classes: int, sub_centers: int = 16):
        super().__init__()
        self.num_classes, self.sub_centers = num_classes, sub_centers
        self.centers = nn.Parameter(torch.empty(num_classes * sub_centers, embed_dim))
        nn.init.xavier_uniform_(self.centers)
        self.register_buffer("scale", torch.tensor(math.sqrt(2.0) * math.log(max(2, num_classes * sub_centers - 1))))

    def cosine(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, C, K]`` cosine similarities to every sub-centre."""
        cos = F.normalize(z, dim=-1) @ F.normalize(self.centers, dim=-1).T
        return cos.view(-1, self.num_classes, self.sub_centers)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """Class logits ``[B, C]`` = logsumexp over sub-centres of the scaled cosines."""
        return torch.logsumexp(self.scale * self.cosine(z), dim=-1)

    @torch.no_grad()
    def update_scale(self, cos: torch.Tensor, labels: torch.Tensor) -> None:
        cos, labels = gather(cos), gather(labels)  # under DDP: the whole batch's statistics, as in one process
        flat = cos.reshape(cos.shape[0], -1)
        target = F.one_hot(labels, self.num_classes).bool().repeat_interleave(self.sub_centers, dim=1)
        b_avg = torch.where(target, torch.zeros_like(flat), torch.exp(self.scale * flat)).sum(1).mean()
        theta = torch.acos(cos.max(dim=-1).values.gather(1, labels[:, None]).clamp(-1 + 1e-7, 1 - 1e-7))
        theta_med = theta.median()
        self.scale.copy_(torch.log(b_avg.clamp(min=1e-12)) / torch.cos(torch.clamp(theta_med, max=math.pi / 4)))

    def loss(self, z: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy on the class logits; returns ``(loss, logits)``. Updates the scale in training mode."""
        cos = self.cosine(z)
        if self.training:
            self.update_scale(cos.detach(), labels)
        logits = torch.logsumexp(self.scale * cos, dim=-1)
        return F.cross_entropy(logits, labels), logits
