"""kNN memory banks on faiss and the GenRep backends (paper 001 §2.2, §2.7, Table 2).

Distances: cosine ``1 − <a, b>`` on L2-normalised embeddings, or Euclidean, always exact (float64) for the
neighbours found. Search is exact by default; large banks can use an approximate faiss index (IVF or HNSW, issue 16)
that may miss a few true neighbours. Training-set statistics are computed leave-one-out on the bank itself, never
from test data.

Training scores are leave-one-out: a clip never finds itself. For the LDN backends on the flat index they are
exact (clip i gets the score of a backend fitted on every other clip: the local densities ρ of the other clips are
recomputed without clip i too, issue 11; O(N²) per bank, N ≈ 1000 per machine).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import faiss
import numpy as np

METRICS = ("cosine", "euclidean")
BACKENDS = ("raw", "ldn", "domain_z", "dldn", "wdbldn")
LDN_BACKENDS = ("ldn", "dldn", "wdbldn")
INDEXES = ("flat", "ivf", "hnsw")

# faiss's Clustering.min_points_per_centroid: k-means warns with fewer training points per IVF list
IVF_MIN_POINTS = 39
# k-means trains on this many points per list: the faiss wiki ("Guidelines to choose an index") asks for 30 to 256;
# more only slows training
IVF_TRAIN_POINTS = 64
HNSW_M = 32  # faiss.IndexHNSWFlat's default number of links per item
HNSW_EF_SEARCH = 128  # search beam; faiss searches with max(efSearch, k) (faiss/impl/HNSW.cpp)
# LDN's candidates with an approximate index; see MemoryBank.ldn_candidates
APPROX_CANDIDATES = 256
# the float64 re-scoring reads only the k returned rows per query unless the bank has fewer than this many times k
# items: one BLAS product with the whole bank is faster per distance by about this factor (measured, 1000 x 512)
GATHER_BELOW = 16


class MemoryBank:
    """faiss index over float32 embeddings (unit-norm ones for cosine); every distance it returns is recomputed
    exactly in float64 for the neighbours the index found.

    ``index``: ``flat`` (exact search, the default), or for large banks an approximate faiss index that may miss a
    few true neighbours: ``ivf`` (faiss.IndexIVFFlat: k-means lists, ``nprobe`` of the ``nlist`` lists scanned) or
    ``hnsw`` (faiss.IndexHNSWFlat: a graph with ``hnsw_m`` links per item, search beam ``ef_search``). Cosine ranks
    by inner product, Euclidean by L2, as the flat index does. Unset parameters follow the bank size
    (``ivf_lists``, ``ivf_probes``). IVF searches on all GPUs when faiss sees one (``faiss.get_num_gpus() > 0``);
    faiss has no GPU HNSW, and flat stays on the CPU, exactly as before."""

    def __init__(
        self,
        embeddings: np.ndarray,
        metric: str = "cosine",
        index: str = "flat",
        *,
        nlist: int | None = None,
        nprobe: int | None = None,
        hnsw_m: int = HNSW_M,
        ef_search: int = HNSW_EF_SEARCH,
    ):
        if metric not in METRICS:
            raise ValueError(f"unknown distance {metric!r}: choose cosine or euclidean")
        if index not in INDEXES:
            raise ValueError(f"unknown index {index!r}: choose one of {INDEXES}")
        if len(embeddings) == 0:
            raise ValueError("memory bank needs at least one embedding")
        self.metric = metric
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.kind = _usable_kind(index, len(self.embeddings))
        self._sq_norms = _sq_norms64(self.embeddings)
        if self.kind == "ivf":
            lists = nlist or ivf_lists(len(self.embeddings))
            self.index = _ivf_index(self.embeddings, _faiss_metric(metric), lists, nprobe or ivf_probes(lists))
        elif self.kind == "hnsw":
            self.index = _hnsw_index(self.embeddings, _faiss_metric(metric), hnsw_m, ef_search)
        else:
            dim = self.embeddings.shape[1]
            self.index = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
            self.index.add(self.embeddings)

    def __len__(self) -> int:
        return len(self.embeddings)

    def search(self, queries: np.ndarray, k: int, exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Sorted distances and indices of the ``k`` nearest items; ``exclude_self`` (queries = the bank
        itself, in order) drops each item's own match: leave-one-out."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        k_eff = min(k + int(exclude_self), len(self))
        idx = self._neighbours(q, k_eff)
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

    def _neighbours(self, q: np.ndarray, k: int) -> np.ndarray:
        """The index's ``k`` nearest ids. Rows an approximate index leaves short (-1: the lists IVF probed held
        fewer than ``k`` items) are searched exactly instead."""
        _, idx = self.index.search(q, k)
        short = (idx < 0).any(axis=1)
        if short.any():
            idx[short] = faiss.knn(q[short], self.embeddings, k, _faiss_metric(self.metric))[1]
        return idx

    def exact_distances(self, queries: np.ndarray, idx: np.ndarray, block: int = 256) -> np.ndarray:
        """Distances of ``queries`` to the bank items ``idx`` ([Q, k]) in float64 (issue 11).

        faiss ranks in float32, where ``1 - <a, b>`` loses most digits for near-duplicates (23 % relative error at
        1 - cos = 5e-7) and LDN divides by such small densities. Cosine distances use float64 re-normalised vectors
        (the stored ones are unit-norm only to float32 precision). Only the rows ``idx`` are read, O(Q·k·D), unless
        ``k`` is a large share of the bank (LDN with the exact index), where one product with the whole bank is
        faster."""
        q = np.asarray(queries, dtype=np.float64)
        if self.metric == "cosine":
            q = _unit64(q)
        gather = GATHER_BELOW * idx.shape[1] < len(self)
        dots = self._gathered_dots(q, idx) if gather else self._bank_dots(q, idx, block)
        if self.metric == "cosine":
            out = 1.0 - dots
        else:
            out = np.sqrt(np.maximum((q**2).sum(1, keepdims=True) + self._sq_norms[idx] - 2.0 * dots, 0.0))
        return np.maximum(out, 0.0)

    def _gathered_dots(self, q: np.ndarray, idx: np.ndarray, budget: int = 1 << 20) -> np.ndarray:
        """``<q_i, b_idx[i, j]>`` in float64 (cosine: with ``b`` re-normalised) from the rows ``idx`` alone, in blocks
        of about ``budget`` numbers."""
        out = np.empty(idx.shape)
        step = max(1, budget // (idx.shape[1] * q.shape[1]))
        for lo in range(0, len(q), step):
            rows = self.embeddings[idx[lo : lo + step]].astype(np.float64)  # [B, k, D]
            out[lo : lo + step] = np.matmul(rows, q[lo : lo + step, :, None])[..., 0]
        if self.metric == "cosine":
            out /= np.maximum(np.sqrt(self._sq_norms), 1e-300)[idx]
        return out

    def _bank_dots(self, q: np.ndarray, idx: np.ndarray, block: int) -> np.ndarray:
        """The same dot products from one product with the whole (float64) bank per block of queries."""
        bank = self.embeddings.astype(np.float64)
        if self.metric == "cosine":
            bank = _unit64(bank)
        out = np.empty(idx.shape)
        for lo in range(0, len(q), block):
            rows = slice(lo, lo + block)
            out[rows] = np.take_along_axis(q[rows] @ bank.T, idx[rows], axis=1)
        return out

    def knn_score(self, queries: np.ndarray, k: int, exclude_self: bool = False) -> np.ndarray:
        """Eq. 1: mean distance to the k nearest bank items."""
        return self.search(queries, k, exclude_self)[0].mean(axis=1)

    def local_density(self, neighbors: int) -> np.ndarray:
        """ρ(y): mean distance of every bank item to its ``neighbors`` nearest other items."""
        if len(self) < 2:
            return np.ones(len(self))
        return self.search(self.embeddings, neighbors, exclude_self=True)[0].mean(axis=1)

    def ldn_candidates(self, k: int, neighbors: int = 0) -> int:
        """How many nearest items LDN ranks by their ratio d(x, y) / ρ(y): every item with the exact index.

        With an approximate index, the ``APPROX_CANDIDATES`` = 256 nearest (at least ``k``, and ``neighbors`` + 1
        for the held-out densities): searching the whole bank would give up what the index is for, and GPU faiss
        returns at most 2048 neighbours (GPU_MAX_SELECTION_K, faiss/gpu/utils/DeviceDefs.cuh). Items left out are
        at least as far as the farthest candidate, d_C, so their ratios are at least d_C / max ρ: the score is
        exact (up to the index's recall) whenever the k smallest candidate ratios are below that, i.e. unless
        densities in the bank differ by more than d_C / d_k."""
        if self.kind == "flat":
            return len(self)
        return min(len(self), max(APPROX_CANDIDATES, k, neighbors + 1))

    def ldn_score(
        self, queries: np.ndarray, k: int, neighbors: int, exclude_self: bool = False, density: np.ndarray | None = None
    ) -> np.ndarray:
        """Local density normalisation (Wilkinghoff et al., ICASSP 2025): the mean of the k smallest ratios
        d(x, y) / ρ(y) over bank items y (exact with the flat index: every item is a candidate; see
        ``ldn_candidates``)."""
        rho = self.local_density(neighbors) if density is None else density
        dist, idx = self.search(queries, self.ldn_candidates(k), exclude_self)
        ratios = np.sort(dist / np.maximum(rho[idx], 1e-12), axis=1)
        return ratios[:, :k].mean(axis=1)

    def held_out_ldn_scores(self, k: int, neighbors: int, block: int = 512) -> np.ndarray:
        """Leave-one-out LDN scores of the bank's own items: item i scored by the bank without item i, with the
        other items' densities ρ recomputed without item i too (issue 11). Exact and O(N²) with the flat index;
        O(N·C) over the C = ``ldn_candidates`` nearest with an approximate one. NaN for a one-item bank (nothing
        is left)."""
        n = len(self)
        if n < 2:
            return np.full(n, np.nan)
        c = min(self.ldn_candidates(k, neighbors), n - 1)
        dist, idx = self.search(self.embeddings, c, exclude_self=True)  # [N, C], nearest first
        out = np.empty(n)
        for lo in range(0, n, block):
            rows = np.arange(lo, min(lo + block, n))
            rho = _held_out_densities(dist, idx, neighbors, rows) if n > 2 else np.ones((len(rows), c))
            ratios = np.sort(dist[rows] / np.maximum(rho, 1e-12), axis=1)
            out[rows] = ratios[:, : min(k, n - 1)].mean(axis=1)
        return out


def ivf_lists(n: int) -> int:
    """IVF list count for ``n`` items: 4·√n (the faiss wiki's lower end, 4 to 16·√n), but no more lists than
    give each ``IVF_MIN_POINTS`` training points."""
    return max(1, min(round(4 * math.sqrt(n)), n // IVF_MIN_POINTS))


def ivf_probes(nlist: int) -> int:
    """Lists scanned per query: √nlist, about 1 / √nlist of the bank (recall@10 0.97-0.98 on the clustered
    20k x 64 banks of ``tests/test_knn_index.py``)."""
    return math.ceil(math.sqrt(nlist))


def _usable_kind(index: str, n: int) -> str:
    """``index``, or ``flat`` with a warning for an IVF over fewer items than two lists need to train."""
    if index == "ivf" and n < 2 * IVF_MIN_POINTS:
        warnings.warn(
            f"MemoryBank: {n} items are too few to train an IVF index (needs {2 * IVF_MIN_POINTS}); "
            "using exact flat search",
            stacklevel=3,
        )
        return "flat"
    return index


def _faiss_metric(metric: str) -> int:
    return faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2


def _ivf_index(x: np.ndarray, metric: int, nlist: int, nprobe: int) -> faiss.Index:
    """faiss.IndexIVFFlat over ``x``: k-means (spherical for inner product, as faiss's IndexIVF does) on a seeded
    sample of ``IVF_TRAIN_POINTS`` per list, built on the CPU, then copied to all GPUs faiss sees (the copy keeps
    nprobe: faiss/gpu/GpuIndexIVF.cu, copyFrom)."""
    dim = x.shape[1]
    ivf = faiss.IndexIVFFlat(faiss.IndexFlat(dim, metric), dim, nlist, metric)
    sample = np.random.default_rng(0).permutation(len(x))[: IVF_TRAIN_POINTS * nlist]
    ivf.train(x[np.sort(sample)])
    ivf.add(x)
    ivf.nprobe = nprobe
    return faiss.index_cpu_to_all_gpus(ivf) if faiss.get_num_gpus() > 0 else ivf


def _hnsw_index(x: np.ndarray, metric: int, m: int, ef_search: int) -> faiss.Index:
    hnsw = faiss.IndexHNSWFlat(x.shape[1], m, metric)
    hnsw.add(x)
    hnsw.hnsw.efSearch = ef_search
    return hnsw


def _sq_norms64(x: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """Squared float64 norms of the rows of ``x``, a chunk at a time (no float64 copy of a large bank)."""
    out = np.empty(len(x))
    for lo in range(0, len(x), chunk):
        rows = x[lo : lo + chunk].astype(np.float64)
        out[lo : lo + chunk] = (rows * rows).sum(1)
    return out


def _unit64(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)


def _held_out_densities(dist: np.ndarray, idx: np.ndarray, neighbors: int, rows: np.ndarray) -> np.ndarray:
    """``out[r, c]``: the ``local_density(neighbors)`` of candidate ``idx[rows[r], c]`` in the bank without item
    ``rows[r]``. ``dist, idx``: every item's nearest others, nearest first ([N, C], C > ``neighbors`` or
    C = N - 1); needs N > 2."""
    n = len(dist)
    m = min(neighbors, n - 2)  # the smaller bank leaves each item N - 2 others
    base = dist[:, :m].mean(axis=1)  # j keeps its m nearest when the removed item is not among them
    swapped = (dist[:, : m + 1].sum(axis=1, keepdims=True) - dist[:, :m]) / m  # [j, p]: idx[j, p] removed
    j = idx[rows]  # [R, C]: the candidates of the held-out items
    removed = idx[j, :m] == rows[:, None, None]  # [R, C, m]: the held-out item is j's p-th nearest
    return np.where(removed.any(axis=2), swapped[j, removed.argmax(axis=2)], base[j])


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
    index: str = "flat"  # the banks' faiss index: flat (exact) | ivf | hnsw (large banks; see MemoryBank)

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}: choose one of {BACKENDS}")
        if self.index not in INDEXES:
            raise ValueError(f"unknown index {self.index!r}: choose one of {INDEXES}")
        if self.k < 1 or self.ldn_neighbors < 1:
            raise ValueError("k and ldn_neighbors must be >= 1")

    @property
    def label(self) -> str:
        extra = f" K={self.ldn_neighbors}" if self.backend in LDN_BACKENDS else ""
        extra += f",w={self.target_weight:g}" if self.backend == "wdbldn" else ""
        extra += f" {self.index}" if self.index != "flat" else ""
        return f"{self.metric[:3]} k={self.k} {self.backend}{extra}"


class KnnBackend:
    """Fitted banks for one machine: ``score(queries)`` and leave-one-out ``train_scores()``."""

    def __init__(self, cfg: BackendConfig, embeddings: np.ndarray, domains: np.ndarray):
        self.cfg = cfg
        self.embeddings = np.asarray(embeddings, dtype=np.float32)
        self.domains = np.asarray(domains)
        if cfg.backend in ("raw", "ldn"):
            self.banks = {None: MemoryBank(self.embeddings, cfg.metric, cfg.index)}
        else:
            present = sorted(set(self.domains.tolist()))
            self.banks = {d: MemoryBank(self.embeddings[self.domains == d], cfg.metric, cfg.index) for d in present}
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
