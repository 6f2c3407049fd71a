"""Exact kNN memory banks on faiss and the GenRep backends (paper 001 §2.2, §2.7, Table 2).

Distances: cosine ``1 − <a, b>`` on L2-normalised embeddings, or Euclidean. Training-set statistics are
computed leave-one-out on the bank itself, never from test data.

Training scores are leave-one-out: a clip never finds itself. For the LDN backends they are exact (clip i
gets the score of a backend fitted on every other clip: the local densities ρ of the other clips are
recomputed without clip i too, issue 11; O(N²) per bank, N ≈ 1000 per machine).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import faiss
import numpy as np

METRICS = ("cosine", "euclidean")
BACKENDS = ("raw", "ldn", "domain_z", "dldn", "wdbldn")
LDN_BACKENDS = ("ldn", "dldn", "wdbldn")


class MemoryBank:
    """Exact (flat) faiss index over float32 embeddings."""

    def __init__(self, embeddings: np.ndarray, metric: str = "cosine"):
        if metric not in METRICS:
            raise ValueError(f"unknown distance {metric!r}: choose cosine or euclidean")
        if len(embeddings) == 0:
            raise ValueError("memory bank needs at least one embedding")
        self.metric = metric
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        dim = self.embeddings.shape[1]
        self.index = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
        self.index.add(self.embeddings)

    def __len__(self) -> int:
        return self.index.ntotal

    def search(self, queries: np.ndarray, k: int, exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Sorted distances and indices of the ``k`` nearest items; ``exclude_self`` (queries = the bank
        itself, in order) drops each item's own match: leave-one-out."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        k_eff = min(k + int(exclude_self), len(self))
        _, idx = self.index.search(q, k_eff)
        dist = self.exact_distances(q, idx)
        order = np.argsort(dist, axis=1, kind="stable")  # float32 near-ties may come back out of order
        dist, idx = np.take_along_axis(dist, order, 1), np.take_along_axis(idx, order, 1)
        if exclude_self:
            own = idx == np.arange(len(q))[:, None]
            # drop the self match where found, else the farthest one, keeping k columns in order
            drop = np.where(own.any(axis=1), own.argmax(axis=1), k_eff - 1)
            keep = np.ones_like(own)
            keep[np.arange(len(q)), drop] = False
            dist = dist[keep].reshape(len(q), k_eff - 1)
            idx = idx[keep].reshape(len(q), k_eff - 1)
        return dist, idx

    def exact_distances(self, queries: np.ndarray, idx: np.ndarray, block: int = 256) -> np.ndarray:
        """Distances of ``queries`` to the bank items ``idx`` ([Q, k]) in float64 (issue 11).

        faiss ranks in float32, where ``1 - <a, b>`` loses most digits for near-duplicates (23 % relative error at
        1 - cos = 5e-7) and LDN divides by such small densities. Cosine distances use float64 re-normalised vectors
        (the stored ones are unit-norm only to float32 precision)."""
        bank = self.embeddings.astype(np.float64)
        q = np.asarray(queries, dtype=np.float64)
        if self.metric == "cosine":
            bank, q = _unit64(bank), _unit64(q)
        out = np.empty(idx.shape)
        for lo in range(0, len(q), block):
            rows = slice(lo, lo + block)
            dots = np.take_along_axis(q[rows] @ bank.T, idx[rows], axis=1)
            if self.metric == "cosine":
                out[rows] = 1.0 - dots
            else:
                sq = (q[rows] ** 2).sum(1, keepdims=True) + (bank**2).sum(1)[idx[rows]] - 2.0 * dots
                out[rows] = np.sqrt(np.maximum(sq, 0.0))
        return np.maximum(out, 0.0)

    def knn_score(self, queries: np.ndarray, k: int, exclude_self: bool = False) -> np.ndarray:
        """Eq. 1: mean distance to the k nearest bank items."""
        return self.search(queries, k, exclude_self)[0].mean(axis=1)

    def local_density(self, neighbors: int) -> np.ndarray:
        """ρ(y): mean distance of every bank item to its ``neighbors`` nearest other items."""
        if len(self) < 2:
            return np.ones(len(self))
        return self.search(self.embeddings, neighbors, exclude_self=True)[0].mean(axis=1)

    def ldn_score(
        self, queries: np.ndarray, k: int, neighbors: int, exclude_self: bool = False, density: np.ndarray | None = None
    ) -> np.ndarray:
        """Local density normalisation (Wilkinghoff et al., ICASSP 2025): the mean of the k smallest ratios
        d(x, y) / ρ(y) over bank items y (exact: every item is a candidate)."""
        rho = self.local_density(neighbors) if density is None else density
        dist, idx = self.search(queries, len(self), exclude_self)
        ratios = np.sort(dist / np.maximum(rho[idx], 1e-12), axis=1)
        return ratios[:, :k].mean(axis=1)

    def held_out_ldn_scores(self, k: int, neighbors: int, block: int = 512) -> np.ndarray:
        """Exact leave-one-out LDN scores of the bank's own items: item i scored by the bank without item i,
        with the other items' densities ρ recomputed without item i too (issue 11). O(N²); NaN for a
        one-item bank (nothing is left)."""
        n = len(self)
        if n < 2:
            return np.full(n, np.nan)
        dist, idx = self.search(self.embeddings, n - 1, exclude_self=True)  # [N, N-1], nearest first
        out = np.empty(n)
        for lo in range(0, n, block):
            rows = np.arange(lo, min(lo + block, n))
            # d(i, j) for every j, with the held-out item itself at +inf so it is never among the k smallest
            d_ij = np.full((len(rows), n), np.inf)
            d_ij[np.arange(len(rows))[:, None], idx[rows]] = dist[rows]
            rho = _held_out_densities(dist, idx, neighbors, rows) if n > 2 else np.ones((len(rows), n))
            ratios = np.sort(d_ij / np.maximum(rho, 1e-12), axis=1)
            out[rows] = ratios[:, : min(k, n - 1)].mean(axis=1)
        return out


def _unit64(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)


def _held_out_densities(dist: np.ndarray, idx: np.ndarray, neighbors: int, rows: np.ndarray) -> np.ndarray:
    """``out[r, j]``: item j's ``local_density(neighbors)`` in the bank without item ``rows[r]`` (the removed
    item's own column is 1 and never used). ``dist, idx``: every item's distances to all others, nearest
    first ([N, N-1]); needs N > 2."""
    n = len(dist)
    m = min(neighbors, n - 2)  # the smaller bank leaves each item N - 2 others
    base = dist[:, :m].mean(axis=1)  # j keeps its m nearest when the removed item is not among them
    swapped = (dist[:, : m + 1].sum(axis=1, keepdims=True) - dist[:, :m]) / m  # [j, p]: idx[j, p] removed
    out = np.repeat(base[None, :], len(rows), axis=0)
    j, p = np.nonzero((idx[:, :m] >= rows[0]) & (idx[:, :m] <= rows[-1]))
    out[idx[j, p] - rows[0], j] = swapped[j, p]
    out[np.arange(len(rows)), rows] = 1.0
    return out


def domain_z_stats(banks: dict, k: int) -> dict:
    """(μ, σ) per bank from its leave-one-out kNN scores on the training clips (domain-wise Z).

    Fallback (issue 11), with a warning: a bank with one clip has no leave-one-out score, and one whose scores do
    not spread (identical clips) has σ = 0; dividing by a tiny σ would blow its scores up and silently drop that
    bank from the minimum. Such a bank takes σ (and, with one clip, μ) from the leave-one-out scores of all banks
    pooled; if those do not spread either, raw distances (μ 0, σ 1)."""
    own = {d: b.knn_score(b.embeddings, k, exclude_self=True) for d, b in banks.items() if len(b) > 1}
    pooled = np.concatenate(list(own.values())) if own else np.zeros(0)
    pooled_ok = len(pooled) > 1 and _spreads(pooled)
    stats = {}
    for d in banks:
        s = own.get(d)
        if s is not None and _spreads(s):
            stats[d] = (float(s.mean()), float(s.std()))
            continue
        mu = float(s.mean()) if s is not None else (float(pooled.mean()) if pooled_ok else 0.0)
        sd = float(pooled.std()) if pooled_ok else 1.0
        why = "has one clip" if s is None else "has leave-one-out scores with no spread"
        warnings.warn(
            f"domain_z: the bank of domain {d} {why}; using mu={mu:.4g}, sigma={sd:.4g} instead", stacklevel=3
        )
        stats[d] = (mu, sd)
    return stats


def _spreads(scores: np.ndarray) -> bool:
    return float(scores.std()) > 1e-9 * max(float(np.abs(scores).mean()), 1e-30)


@dataclass
class BackendConfig:
    """One backend of Table 2: distance, k, and how scores are calibrated."""

    metric: str = "cosine"
    k: int = 1
    backend: str = "raw"  # raw | ldn (single bank) | domain_z | dldn | wdbldn (domain-aware banks)
    # LDN's density neighbourhood K: 1 as MERL's reference code and the pooling study use (the peers also use 4)
    ldn_neighbors: int = 1
    target_weight: float = 1.0  # wdbldn: target-bank scores are scaled by this before the minimum

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}: choose one of {BACKENDS}")
        if self.k < 1 or self.ldn_neighbors < 1:
            raise ValueError("k and ldn_neighbors must be >= 1")

    @property
    def label(self) -> str:
        extra = f" K={self.ldn_neighbors}" if self.backend in LDN_BACKENDS else ""
        extra += f",w={self.target_weight:g}" if self.backend == "wdbldn" else ""
        return f"{self.metric[:3]} k={self.k} {self.backend}{extra}"


class KnnBackend:
    """Fitted banks for one machine: ``score(queries)`` and leave-one-out ``train_scores()``."""

    def __init__(self, cfg: BackendConfig, embeddings: np.ndarray, domains: np.ndarray):
        self.cfg = cfg
        self.embeddings = np.asarray(embeddings, dtype=np.float32)
        self.domains = np.asarray(domains)
        if cfg.backend in ("raw", "ldn"):
            self.banks = {None: MemoryBank(self.embeddings, cfg.metric)}
        else:
            present = sorted(set(self.domains.tolist()))
            self.banks = {d: MemoryBank(self.embeddings[self.domains == d], cfg.metric) for d in present}
        self.density = (
            {d: b.local_density(cfg.ldn_neighbors) for d, b in self.banks.items()}
            if cfg.backend in LDN_BACKENDS
            else {}
        )
        self.z_stats = domain_z_stats(self.banks, cfg.k) if cfg.backend == "domain_z" else {}

    def _bank_scores(self, d, queries: np.ndarray, exclude_self: bool) -> np.ndarray:
        bank, cfg = self.banks[d], self.cfg
        if cfg.backend in LDN_BACKENDS:
            s = bank.ldn_score(queries, cfg.k, cfg.ldn_neighbors, exclude_self, self.density[d])
        else:
            s = bank.knn_score(queries, cfg.k, exclude_self)
        if cfg.backend == "domain_z":
            mu, sd = self.z_stats[d]
            s = (s - mu) / sd
        if cfg.backend == "wdbldn" and d == 1:
            s = cfg.target_weight * s
        return s

    def score(self, queries: np.ndarray) -> np.ndarray:
        q = np.asarray(queries, dtype=np.float32)
        return np.min([self._bank_scores(d, q, False) for d in self.banks], axis=0)

    def train_scores(self) -> np.ndarray:
        """Leave-one-out scores of the training clips: each clip is scored without its own bank entry.

        LDN backends (ldn, dldn, wdbldn) are exact leave-one-out: the other clips' densities ρ are recomputed
        without the clip as well, so clip i gets what a backend fitted on every other clip would give it.
        domain_z keeps the statistics of the whole training bank, the fixed normaliser that test clips get too.
        Banks of other domains never held the clip: they score it as a query."""
        out = np.empty(len(self.embeddings))
        for d in self.banks:
            own = np.ones(len(out), bool) if d is None else self.domains == d
            scores = [self._bank_scores(o, self.embeddings[own], False) for o in self.banks if o != d]
            if own.sum() > 1:  # a one-clip domain leaves no bank of its own behind
                scores.append(self._own_bank_scores(d))
            out[own] = np.min(scores, axis=0) if scores else np.nan
        return out

    def _own_bank_scores(self, d) -> np.ndarray:
        cfg, bank = self.cfg, self.banks[d]
        if cfg.backend not in LDN_BACKENDS:
            return self._bank_scores(d, bank.embeddings, exclude_self=True)
        s = bank.held_out_ldn_scores(cfg.k, cfg.ldn_neighbors)
        return cfg.target_weight * s if cfg.backend == "wdbldn" and d == 1 else s
