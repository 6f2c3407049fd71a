"""Scoring speed: clips/s for embedding extraction and queries/s for exact kNN (faiss vs torch matmul top-k).

    python benchmarks/scoring.py [--banks 1000 100000 1000000] [--dim 512]

Prints numbers and the faiss/torch ratio; CI does not run this.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from asdzoo.scoring.knn import MemoryBank


def embed_speed(encoder: str, seconds: float = 10.0, batch: int = 8, repeats: int = 2) -> float:
    from asdzoo.systems.genrep import GenRep

    model = GenRep(encoder=encoder)
    wave = torch.randn(batch, 2, int(seconds * 16000)) * 0.1
    model.embed(wave[:1])  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        model.embed(wave)
    return batch * repeats / (time.perf_counter() - t0)


def torch_topk(bank: torch.Tensor, queries: torch.Tensor, k: int, chunk: int = 256) -> torch.Tensor:
    out = []
    for i in range(0, len(queries), chunk):
        sims = queries[i : i + chunk] @ bank.T
        out.append(1 - sims.topk(k, dim=1).values)
    return torch.cat(out)


def knn_speed(n_bank: int, dim: int, n_query: int, k: int = 1) -> tuple[float, float, float]:
    rng = np.random.default_rng(0)
    bank = rng.standard_normal((n_bank, dim), dtype=np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    q = rng.standard_normal((n_query, dim), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    mb = MemoryBank(bank, "cosine")
    mb.search(q[:8], k)
    t0 = time.perf_counter()
    d_faiss = mb.search(q, k)[0]
    t_faiss = time.perf_counter() - t0
    tb, tq = torch.from_numpy(bank), torch.from_numpy(q)
    torch_topk(tb, tq[:8], k)
    t0 = time.perf_counter()
    d_torch = torch_topk(tb, tq, k).numpy()
    t_torch = time.perf_counter() - t0
    return n_query / t_faiss, n_query / t_torch, float(np.abs(d_faiss - d_torch).max())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--banks", type=int, nargs="+", default=[1000, 100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--encoders", nargs="+", default=["logmel", "aisfx"])
    args = ap.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print("\nembedding extraction, 10 s two-channel clips, batch 8 (near_only):")
    for enc in args.encoders:
        print(f"  {enc:<8} {embed_speed(enc):8.2f} clips/s")
    print(f"\nexact cosine kNN (k=1), {args.queries} queries, dim {args.dim}:")
    print(f"  {'bank':>9} {'faiss q/s':>12} {'torch q/s':>12} {'faiss/torch':>12} {'max |diff|':>11}")
    for n in args.banks:
        qf, qt, diff = knn_speed(n, args.dim, args.queries)
        print(f"  {n:>9} {qf:12.0f} {qt:12.0f} {qf / qt:12.2f} {diff:11.2e}")


if __name__ == "__main__":
    main()
