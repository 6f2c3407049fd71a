"""Rank normalisation of anomaly scores (paper 002 §2.4): transductive ranks within a test set, and an online
variant that ranks each score against reference (training leave-one-out) scores."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def rank_normalise(scores: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """``(rank − 1) / (n − 1)`` within each group (ties share their average rank), in [0, 1]; a group of one scores
    0.5. ``groups=None`` ranks all scores together. Invariant to any strictly increasing transform of the scores."""
    scores = np.asarray(scores, dtype=float)
    keys = np.zeros(len(scores), dtype=int) if groups is None else np.asarray(groups)
    if len(keys) != len(scores):
        raise ValueError(f"{len(scores)} scores but {len(keys)} group labels")
    out = np.empty(len(scores))
    for g in np.unique(keys):
        idx = np.flatnonzero(keys == g)
        out[idx] = 0.5 if len(idx) == 1 else (rankdata(scores[idx]) - 1.0) / (len(idx) - 1.0)
    return out


def rank_against(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Fraction of ``reference`` scores below each score, ties counted half: (#ref < s + ½ #ref = s) / R, in [0, 1].
    Needs no other test clip, so one clip can be scored alone."""
    ref = np.sort(np.asarray(reference, dtype=float))
    if len(ref) == 0:
        raise ValueError("rank_against needs at least one reference score")
    s = np.asarray(scores, dtype=float)
    below = np.searchsorted(ref, s, side="left")
    equal = np.searchsorted(ref, s, side="right") - below
    return (below + 0.5 * equal) / len(ref)
