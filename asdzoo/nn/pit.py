"""Permutation-invariant training losses of the DCASE 2026 Task 4 (S5) baseline: the tagger's slot-wise cross-entropy
and the separator's class-aware negative SNR.

Definitions from ``nttcslab/dcase2026_task4_baseline`` @ 20e6992, ``src/training/loss/label_loss.py`` and
``src/training/loss/class_aware_pit.py`` (summarised in ``../shared/reference/s5_facts``). Both return the chosen
permutation ``perm [B, N]``: reference slot ``i`` is matched to output slot ``perm[b, i]`` (torchmetrics' convention,
so ``torchmetrics.functional.audio.pit_permutate(output, perm)`` puts the outputs in reference order).
"""

from __future__ import annotations

from itertools import permutations

import torch
import torch.nn.functional as F
from torchmetrics.functional.audio import permutation_invariant_training, signal_noise_ratio

# any cost above every reachable -SNR; the official code marks forbidden pairs with the same value
FORBIDDEN_COST = 1e9


def _slot_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, target_probs, reduction="none")


def tagger_pit_loss(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy per slot, minimised over slot permutations per sample, then averaged over slots and batch.

    ``logits [B, N, C]`` (C = 19 with silence last), ``targets [B, N]`` class indices. As the baseline does, the
    targets go to torchmetrics' speaker-wise PIT as one-hot probabilities (equal to index targets for cross-entropy).
    """
    one_hot = F.one_hot(targets.long(), logits.shape[-1]).to(logits.dtype)
    per_sample, perm = permutation_invariant_training(
        logits, one_hot, _slot_cross_entropy, mode="speaker-wise", eval_func="min"
    )
    return per_sample.mean(), perm


def _pairwise_snr(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``[B, N_ref, N_est]``: SNR of every output slot against every reference slot, averaged over any axes between
    the slot and time axes (as the baseline's ``snr_loss_return_batch``)."""
    b, n = est.shape[:2]
    shape = (b, n, n, *est.shape[2:])
    snr = signal_noise_ratio(est[:, None].expand(shape), ref[:, :, None].expand(shape))
    return snr.flatten(start_dim=3).mean(dim=3) if snr.ndim > 3 else snr


def class_aware_pit_loss(
    est: torch.Tensor, ref: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Negative SNR under the best permutation among slots that share a label ("class_aware_pit").

    ``est`` / ``ref [B, N, ..., T]``, ``labels [B, N, L]`` multi-hot query of each reference slot (the separator is
    queried with these, so output slot j carries ``labels[:, j]``); an all-zero row is a silent slot. A slot may only
    take the output of a slot with an identical, non-silent label; silent slots keep their own output and score 0.
    Per sample, the costs are averaged over **all** N slots, silent zeros included (the official
    ``gathered.mean(dim=1)``), then over the batch. The permutation is chosen in float64, as the official code.
    """
    n = est.shape[1]
    silent = (labels == 0).all(dim=-1)  # [B, N]
    same_label = (labels[:, :, None] == labels[:, None, :]).all(dim=-1)  # [B, N_ref, N_est]
    allowed = same_label & ~silent[:, :, None] & ~silent[:, None, :]
    silent_diagonal = torch.eye(n, dtype=torch.bool, device=est.device) & silent[:, :, None]
    fixed = torch.full_like(allowed, FORBIDDEN_COST, dtype=torch.float64).masked_fill(silent_diagonal, 0.0)
    cost = torch.where(allowed, -_pairwise_snr(est, ref).double(), fixed)

    perms = torch.tensor(list(permutations(range(n))), device=est.device)  # [P, N]
    per_perm = cost.gather(2, perms.T.expand(len(est), n, len(perms))).mean(dim=1)  # [B, P]
    per_sample, best = per_perm.min(dim=1)  # first minimum on ties
    return per_sample.mean().to(est.dtype), perms[best]
