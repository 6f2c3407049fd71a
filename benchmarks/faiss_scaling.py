"""Large memory banks (issue 16): ``MemoryBank(index="flat" | "ivf" | "hnsw")`` on unit vectors, cosine.

    python benchmarks/faiss_scaling.py [--sizes 100000 1000000] [--dim 512] [--queries 1000] [--clusters 0 --spread 0.5]

For every bank size: build time, search time (``MemoryBank.search``, k = 10, all queries in one call, float64
re-scoring included), recall@1 and recall@10 against the flat bank's neighbours, and the build and speed ratios to
the flat bank, all measured in the same run. Each approximate bank is built once with its default parameters (the
first row of its kind), then searched again with the other ``--nprobe`` / ``--ef-search`` values. Uniform random
unit vectors in 512 dimensions have no cluster structure, the hardest case for both approximate indexes (real
embeddings cluster by machine and domain; ``--clusters``), so their recalls are lower bounds. IVF searches on the
GPUs when faiss sees one (``faiss.get_num_gpus() > 0``); flat and HNSW (faiss has no GPU HNSW) stay on the CPU.
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np

from asdzoo.scoring.knn import HNSW_EF_SEARCH, HNSW_M, MemoryBank, ivf_lists, ivf_probes

CHUNK = 50_000
K = 10


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


def timed_build(data: np.ndarray, kind: str, **params) -> tuple[MemoryBank, float]:
    t0 = time.perf_counter()
    bank = MemoryBank(data, "cosine", kind, **params)
    return bank, time.perf_counter() - t0


def timed_search(bank: MemoryBank, queries: np.ndarray) -> tuple[np.ndarray, float]:
    """All queries in one call, after a warm-up call of 32 queries (faiss's BLAS path starts at 20; the first
    call pays for starting the thread pool)."""
    bank.search(queries[:32], K)
    t0 = time.perf_counter()
    idx = bank.search(queries, K)[1]
    return idx, time.perf_counter() - t0


def recall(found: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Mean fraction of the exact ``k`` nearest that the index returned among its ``k``."""
    return float(np.mean([len(set(f[:k]) & set(e[:k])) / k for f, e in zip(found, exact)]))


def set_nprobe(bank: MemoryBank, nprobe: int) -> None:
    if faiss.get_num_gpus() > 0:  # a GPU index, or replicas of it on several GPUs
        faiss.GpuParameterSpace().set_index_parameter(bank.index, "nprobe", nprobe)
    else:
        bank.index.nprobe = nprobe


def set_ef_search(bank: MemoryBank, ef: int) -> None:
    bank.index.hnsw.efSearch = ef


def knob_rows(kind: str, n: int, args) -> list[tuple[str, int]]:
    """(label, knob value) to search with: the MemoryBank default first, then the sweep."""
    if kind == "ivf":
        nlist = args.nlist or ivf_lists(n)
        default = ivf_probes(nlist)
        values = [default] + [p for p in args.nprobe if p != default and p <= nlist]
        return [(f"ivf{nlist} nprobe={p}", p) for p in values]
    values = [HNSW_EF_SEARCH] + [e for e in args.ef_search if e != HNSW_EF_SEARCH]
    return [(f"hnsw{args.hnsw_m} ef={e}", e) for e in values]


def run_size(n: int, args) -> None:
    data = unit_vectors(n, args.dim, seed=0, clusters=args.clusters, spread=args.spread)
    queries = unit_vectors(args.queries, args.dim, seed=2, clusters=args.clusters, spread=args.spread)
    flat, flat_build = timed_build(data, "flat")
    truth, flat_query = timed_search(flat, queries)
    del flat
    kind_of = f"{args.clusters} clusters, spread {args.spread:g}" if args.clusters else "uniform"
    print(f"\nN={n:,} d={args.dim} {kind_of} queries={args.queries} GPUs={faiss.get_num_gpus()}", end="")
    print(f" CPU threads={faiss.omp_get_max_threads()}")
    print(f"{'index':<22}{'build s':>10}{'search s':>10}{'R@1':>8}{'R@10':>8}{'build x':>10}{'speed-up':>10}")
    print(f"{'flat (exact)':<22}{flat_build:>10.3f}{flat_query:>10.4f}{1:>8.3f}{1:>8.3f}{1:>10.2f}{1:>10.2f}")
    for kind in args.kinds:
        params = dict(nlist=args.nlist or None) if kind == "ivf" else dict(hnsw_m=args.hnsw_m)
        bank, build_s = timed_build(data, kind, **params)
        for label, value in knob_rows(kind, n, args):
            (set_nprobe if kind == "ivf" else set_ef_search)(bank, value)
            found, query_s = timed_search(bank, queries)
            r1, r10 = recall(found, truth, 1), recall(found, truth, 10)
            ratio, speedup = build_s / flat_build, flat_query / query_s
            print(f"{label:<22}{build_s:>10.3f}{query_s:>10.4f}{r1:>8.3f}{r10:>8.3f}{ratio:>10.2f}{speedup:>10.2f}")
        del bank


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--clusters", type=int, default=0, help="clustered unit vectors instead of uniform ones")
    ap.add_argument("--spread", type=float, default=0.5, help="noise per unit norm around the cluster centres")
    ap.add_argument("--kinds", nargs="+", default=["ivf", "hnsw"], choices=["ivf", "hnsw"])
    ap.add_argument("--nlist", type=int, default=0, help="IVF lists (default: MemoryBank's, ~4 sqrt(N))")
    ap.add_argument("--nprobe", type=int, nargs="+", default=[16, 64, 256], help="IVF probes besides the default")
    ap.add_argument("--hnsw-m", type=int, default=HNSW_M)
    ap.add_argument("--ef-search", type=int, nargs="+", default=[32, 512], help="HNSW beams besides the default")
    args = ap.parse_args()
    for n in args.sizes:
        run_size(n, args)


if __name__ == "__main__":
    main()
