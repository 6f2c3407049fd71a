"""Contrastive objectives of paper 002 §2.3: NT-Xent over two views, a variance regulariser against collapse, and the
validation embedding spread that early stopping watches."""

from __future__ import annotations

import torch
import torch.nn.functional as F

VARIANCE_EPS = 1e-4


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """SimCLR's NT-Xent (InfoNCE) over ``2B`` views: view ``i`` of ``z1`` has its positive at ``i`` of ``z2`` (and the
    reverse) and every other clip's views in the batch as negatives; cosine similarities divided by ``temperature``.
    Inputs ``[B, D]`` need not be normalised."""
    if z1.shape != z2.shape:
        raise ValueError(f"the two views must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    sim = z @ z.T / temperature
    n = len(z1)
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, positives)


def variance_hinge(z: torch.Tensor, target: float = 1.0) -> torch.Tensor:
    """VICReg's variance term (Bardes et al., ICLR 2022) for unit-norm embeddings ``[B, D]``:
    ``mean_d relu(target − sqrt(Var_d(√D·z) + 1e-4))`` (population variance over the batch).

    Unit vectors have per-dimension variances summing to at most 1, so they are scaled by √D first: a batch spread
    evenly over all dimensions then has std ≈ 1 per dimension and pays nothing, a collapsed batch pays ≈ ``target``.
    """
    scaled = z * z.shape[-1] ** 0.5
    std = torch.sqrt(scaled.var(dim=0, correction=0) + VARIANCE_EPS)
    return F.relu(target - std).mean()


def embedding_spread(z: torch.Tensor) -> torch.Tensor:
    """Pairwise L2 variance of L2-normalised embeddings ``[N, D]``: ``mean_{i<j} ‖z_i − z_j‖² / 2``, which equals the
    total (unbiased) variance ``trace Cov(z)`` and is computed that way in O(N·D). 0 when all embeddings coincide
    (collapse), at most ``N / (N − 1)``; 0 for fewer than two embeddings."""
    if len(z) < 2:
        return z.new_zeros(())
    unit = F.normalize(z.double(), dim=-1)
    return unit.var(dim=0).sum().to(z.dtype)
