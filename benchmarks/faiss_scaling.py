"""Large memory banks (issue 16): exact vs IVF-Flat vs HNSW faiss indexes on random unit vectors, cosine (inner
product) as ``asdzoo.scoring.knn.MemoryBank`` ranks them.

    python benchmarks/faiss_scaling.py [--sizes 100000 1000000] [--dim 512] [--queries 1000] [--max-build-s 300]

For every bank size: build time, query time (all queries in one call), recall@1 and recall@10 against the exact
index's neighbours and the speed ratios to exact search, all measured in the same run. Random unit vectors in 512
dimensions have no cluster structure, the hardest case for both approximate indexes (real embeddings cluster by
machine and domain), so the recalls here are lower bounds. Exact and IVF run on the GPUs when faiss sees one
(``faiss.get_num_gpus() > 0``); faiss has no GPU HNSW, so HNSW stays on the CPU. ``--max-build-s`` time-boxes each
build: the bank is added in chunks and an index whose build runs over is reported as skipped with the time it
would have taken (extrapolated from the chunks added).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import faiss
import numpy as np

CHUNK = 50_000


def unit_vectors(n: int, dim: int, seed: int, clusters: int = 0, spread: float = 0.5) -> np.ndarray:
    """``n`` float32 unit vectors, made in blocks to bound memory: uniform on the sphere (normalised Gaussians), or
    with ``clusters`` > 0 around that many random unit centres (Gaussian noise of ``spread`` per unit norm), closer
    to embeddings that group by machine and domain. The centres come from a fixed seed, so bank and queries share
    them."""
    rng = np.random.default_rng(seed)
    centres = unit_vectors(clusters, dim, seed=12345) if clusters else None
    out = np.empty((n, dim), dtype=np.float32)
    for lo in range(0, n, CHUNK):
        block = rng.standard_normal((min(CHUNK, n - lo), dim), dtype=np.float32)
        if centres is not None:
            block = centres[rng.integers(clusters, size=len(block))] + block * np.float32(spread / np.sqrt(dim))
        out[lo : lo + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def on_gpu(index: faiss.Index) -> faiss.Index:
    return faiss.index_cpu_to_all_gpus(index) if faiss.get_num_gpus() > 0 else index


def build(index: faiss.Index, bank: np.ndarray, max_s: float, train: int = 0) -> tuple[faiss.Index | None, float]:
    """Train on ``train`` bank vectors (IVF), add ``bank`` in chunks; (None, projected seconds) when the build
    runs past ``max_s``."""
    t0 = time.perf_counter()
    if train:
        index.train(bank[np.random.default_rng(1).permutation(len(bank))[:train]])
    for lo in range(0, len(bank), CHUNK):
        index.add(bank[lo : lo + CHUNK])
        elapsed = time.perf_counter() - t0
        done = min(lo + CHUNK, len(bank))
        if elapsed > max_s and done < len(bank):
            return None, elapsed * len(bank) / done
    return index, time.perf_counter() - t0


def timed_search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """All queries in one call, after a warm-up call of 32 queries (faiss's BLAS path starts at 20; the first
    call pays for starting the thread pool)."""
    index.search(queries[:32], k)
    t0 = time.perf_counter()
    _, idx = index.search(queries, k)
    return idx, time.perf_counter() - t0


def recall(found: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Mean fraction of the exact ``k`` nearest that the index returned among its ``k``."""
    return float(np.mean([len(set(f[:k]) & set(e[:k])) / k for f, e in zip(found, exact)]))


def candidates(n: int, dim: int, args) -> list[tuple[str, faiss.Index, int, Callable]]:
    """(label, empty index, training-set size, setter of its search-time knob) for IVF at each nprobe and HNSW at
    each efSearch. IVF trains k-means on 64 vectors per list (faiss warns below 39; more only slows it)."""
    nlist = args.nlist or 1 << round(math.log2(4 * math.sqrt(n)))  # faiss guideline: nlist ~ 4 sqrt(N)
    ivf = on_gpu(faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT))
    hnsw = faiss.IndexHNSWFlat(dim, args.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = args.ef_construction
    out = [(f"ivf{nlist} nprobe={p}", ivf, min(n, 64 * nlist), _set_nprobe(p)) for p in args.nprobe]
    return out + [(f"hnsw{args.hnsw_m} ef={e}", hnsw, 0, _set_ef(e)) for e in args.ef_search]


def _set_nprobe(p: int):
    def apply(index):
        if faiss.get_num_gpus() > 0:
            faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", p)
        else:
            index.nprobe = p

    return apply


def _set_ef(e: int):
    def apply(index):
        index.hnsw.efSearch = e

    return apply


def run_size(n: int, args) -> None:
    bank = unit_vectors(n, args.dim, seed=0, clusters=args.clusters)
    queries = unit_vectors(args.queries, args.dim, seed=2, clusters=args.clusters)
    k = 10
    exact, exact_build = build(on_gpu(faiss.IndexFlatIP(args.dim)), bank, float("inf"))
    truth, exact_query = timed_search(exact, queries, k)
    gpus, threads = faiss.get_num_gpus(), faiss.omp_get_max_threads()
    data = f"{args.clusters} clusters" if args.clusters else "uniform"
    print(f"\nN={n:,} d={args.dim} {data} queries={args.queries} GPUs={gpus} CPU threads={threads}")
    print(f"{'index':<22}{'build s':>10}{'query s':>10}{'R@1':>8}{'R@10':>8}{'build x':>10}{'speed-up':>10}")
    print(f"{'exact (flat)':<22}{exact_build:>10.3f}{exact_query:>10.4f}{1:>8.3f}{1:>8.3f}{1:>10.2f}{1:>10.2f}")
    built: dict[int, tuple] = {}
    for label, index, train, set_knob in candidates(n, args.dim, args):
        if id(index) not in built:
            built[id(index)] = build(index, bank, args.max_build_s, train)
        index_built, build_s = built[id(index)]
        if index_built is None:
            print(f"{label:<22}  skipped: build over {args.max_build_s:.0f} s (projected {build_s:.0f} s)")
            continue
        set_knob(index_built)
        found, query_s = timed_search(index_built, queries, k)
        r1, r10 = recall(found, truth, 1), recall(found, truth, 10)
        ratio, speedup = build_s / exact_build, exact_query / query_s
        print(f"{label:<22}{build_s:>10.3f}{query_s:>10.4f}{r1:>8.3f}{r10:>8.3f}{ratio:>10.2f}{speedup:>10.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--clusters", type=int, default=0, help="clustered unit vectors instead of uniform ones")
    ap.add_argument("--nlist", type=int, default=0, help="IVF lists (default ~4 sqrt(N), a power of two)")
    ap.add_argument("--nprobe", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=40)
    ap.add_argument("--ef-search", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--max-build-s", type=float, default=300.0, help="time box per approximate index build")
    args = ap.parse_args()
    for n in args.sizes:
        run_size(n, args)


if __name__ == "__main__":
    main()
