"""Score alignment and fusion by training-normal statistics (paper 001 eqs. 13, 17-18)."""

from __future__ import annotations

import numpy as np

FUSION_EPS = 1e-12


def zalign(scores: np.ndarray, train_scores: np.ndarray) -> np.ndarray:
    """Eq. 17: (s − μ) / (σ + ε) with μ, σ from training-normal scores of the same system."""
    return (np.asarray(scores) - np.mean(train_scores)) / (np.std(train_scores) + FUSION_EPS)


def fuse(scores: list[np.ndarray], train_scores: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """Eq. 18: Σ λ_i s̃_i with λ_i ≥ 0 summing to one."""
    w = np.asarray(weights, dtype=float)
    if len(w) != len(scores) or (w < 0).any() or not np.isclose(w.sum(), 1.0):
        raise ValueError(f"fusion weights must be non-negative, one per system and sum to 1, got {weights}")
    return sum(wi * zalign(s, t) for wi, s, t in zip(w, scores, train_scores))
