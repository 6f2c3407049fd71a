"""Distillation objectives of paper 003 (Task 4 tagger): permutation-invariant KD between slot logits, linear CKA
between token sequences, and the temporal pooling both sequences go through first.

Linear CKA after Kornblith et al. 2019 (ICML), "Similarity of neural network representations revisited", eq. for
the linear kernel: ``CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred ``Xc, Yc``;
computed here through the n x n Gram matrices (``<Kc, Lc>_F / (||Kc||_F ||Lc||_F)``, the same number), which is the
cheaper side when there are 32 rows and 1280 columns.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.functional.audio import permutation_invariant_training

CKA_EPS = 1e-12


def pool_bins(tokens: torch.Tensor, bins: int) -> torch.Tensor:
    """``[B, T, D]`` -> ``[B, bins, D]``: bin ``i`` averages frames ``floor(i T / bins)`` .. ``ceil((i + 1) T / bins)``
    (torch's adaptive average pooling: any T, bins overlap by one frame where T is not a multiple; T < bins repeats
    frames)."""
    return F.adaptive_avg_pool1d(tokens.transpose(1, 2), bins).transpose(1, 2)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Linear CKA of paired rows, per batch element: ``x [B, n, d1]``, ``y [B, n, d2]`` -> ``[B]`` in [0, 1].

    1 for identical inputs, invariant to orthogonal transforms and isotropic scaling of either side; the rows are
    the n samples (here: temporal bins), so it compares how the two sequences relate their frames to each other."""
    x = x - x.mean(dim=1, keepdim=True)
    y = y - y.mean(dim=1, keepdim=True)
    k, gram_y = x @ x.transpose(1, 2), y @ y.transpose(1, 2)
    hsic = (k * gram_y).sum(dim=(1, 2))
    norms = k.flatten(1).norm(dim=1) * gram_y.flatten(1).norm(dim=1)
    return hsic / (norms + CKA_EPS)


def mean_cosine_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``1 - cos(x̄, ȳ)`` of the time means ``x [B, n, d]``, ``y [B, n, d]`` -> ``[B]``."""
    return 1 - F.cosine_similarity(x.mean(dim=1), y.mean(dim=1), dim=-1)


def _slot_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 KL(softmax(teacher / T) || softmax(student / T))`` per sample ``[B]`` for one slot pair ``[B, C]``."""
    log_p_student = F.log_softmax(student / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher / temperature, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1)
    return temperature**2 * kl


def pit_kd_loss(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paper 003 eq. 2: ``min over slot permutations pi of T^2 KL(softmax(z_teacher^pi / T) || softmax(z / T))``.

    ``student`` / ``teacher`` logits ``[B, N, C]``; the KL of each matched slot pair is averaged over the N slots
    (as the slot cross-entropy), minimised per sample, then averaged over the batch. The teacher is detached.
    Returns the loss and the permutation (``perm[b, i]``: the student slot matched to teacher slot ``i``)."""
    teacher = teacher.detach()
    per_sample, perm = permutation_invariant_training(
        student,
        teacher,
        lambda s, t: _slot_kl(s, t, temperature),
        mode="speaker-wise",
        eval_func="min",
    )
    return per_sample.mean(), perm
