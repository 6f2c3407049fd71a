"""The memory bank of paper 002 §2.4: target oversampling to a bounded source:target ratio, MemMixup, and the
mean-L2 kNN score over it (faiss), with leave-one-out training scores."""

from __future__ import annotations

import math

import numpy as np

from asdzoo.scoring.knn import MemoryBank


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def oversample_target(embeddings: np.ndarray, domains: np.ndarray, max_ratio: float = 10.0):
    """Bank rows with target clips (domain 1) repeated until source:target ≤ ``max_ratio``:1, and for each row the
    clip it came from. Copies are spread evenly (every target clip repeated ⌊m/T⌋ or ⌈m/T⌉ times)."""
    domains = np.asarray(domains)
    source, target = np.flatnonzero(domains == 0), np.flatnonzero(domains == 1)
    origins = np.arange(len(embeddings))
    if len(target) and len(source) > max_ratio * len(target):
        needed = math.ceil(len(source) / max_ratio)
        origins = np.concatenate([source, np.resize(target, needed), np.setdiff1d(origins, np.union1d(source, target))])
    return embeddings[origins], origins


def memmixup(bank: np.ndarray, origins: np.ndarray, rng: np.random.Generator, alpha: float = 0.4):
    """MemMixup: the bank doubled with ``normalise(λ·b_i + (1 − λ)·b_j)`` for M random pairs of distinct rows,
    λ ~ Beta(α, α). Returns the ``2M`` rows and the ``[2M, 2]`` clips each row is made of (an original row's pair is
    its own clip twice)."""
    m = len(bank)
    if m < 2:
        return bank, np.stack([origins, origins], axis=1)
    i = rng.integers(0, m, m)
    j = (i + rng.integers(1, m, m)) % m  # never the row itself
    lam = rng.beta(alpha, alpha, m)[:, None]
    mixed = _unit(lam * bank[i] + (1.0 - lam) * bank[j])
    rows = np.concatenate([bank, mixed]).astype(np.float32)
    pairs = np.concatenate([np.stack([origins, origins], 1), np.stack([origins[i], origins[j]], 1)])
    return rows, pairs


class MixupBank:
    """One machine's bank of §2.4: unit-norm clip embeddings, target oversampled, MemMixup-doubled (seeded);
    ``score`` = mean Euclidean distance to the k nearest rows."""

    def __init__(
        self,
        embeddings: np.ndarray,
        domains: np.ndarray,
        k: int = 5,
        max_ratio: float = 10.0,
        mixup: bool = True,
        alpha: float = 0.4,
        seed: int = 0,
    ):
        if len(embeddings) != len(domains):
            raise ValueError(f"{len(embeddings)} embeddings but {len(domains)} domain labels")
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.k = k
        rows, origins = oversample_target(_unit(self.embeddings.astype(np.float64)), domains, max_ratio)
        if mixup:
            self.rows, self.origins = memmixup(rows, origins, np.random.default_rng(seed), alpha)
        else:
            self.rows, self.origins = rows.astype(np.float32), np.stack([origins, origins], 1)
        self.bank = MemoryBank(self.rows, "euclidean")

    def score(self, queries: np.ndarray) -> np.ndarray:
        """Mean L2 distance of each (re-normalised) query to its k nearest bank rows."""
        return self.bank.knn_score(_unit(np.asarray(queries, dtype=np.float64)), self.k)

    def train_scores(self) -> np.ndarray:
        """Leave-one-out score of every training clip: rows made from the clip itself (its copies and every mix it
        is part of) are excluded. NaN where nothing is left."""
        n = len(self.embeddings)
        # a clip is part of at most `most` rows: searching that many more than k always leaves k others
        most = int(np.bincount(self.origins.ravel(), minlength=n).max())
        dist, idx = self.bank.search(_unit(self.embeddings.astype(np.float64)), self.k + most)
        own = (self.origins[idx] == np.arange(n)[:, None, None]).any(axis=2)
        others = np.sort(np.where(own, np.inf, dist), axis=1)[:, : self.k]
        finite = np.isfinite(others)
        with np.errstate(invalid="ignore"):
            return np.where(finite, others, 0.0).sum(1) / np.where(finite.any(1), finite.sum(1), np.nan)
