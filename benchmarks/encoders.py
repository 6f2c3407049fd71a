"""Encoder speed and memory: clips/s and peak memory for 10 s clips at batch 1 and 8, full-size random weights.

    python benchmarks/encoders.py                      # every encoder, CPU (and CUDA when present)
    python benchmarks/encoders.py --encoders beats --batches 4 --dtypes fp32 bf16

For BEATs it also prints the efficiency ratio that survives a noisy machine:
    efficiency = clips/s x 98 GFLOP (one 10 s clip) / matmul GFLOP/s of the same dtype measured in the same run
(targets: fp32 >= 0.75, bf16 autocast >= 0.45, with bf16 pooled embeddings within 1e-2 relative of fp32).
Each measurement runs in a fresh process so the peak resident memory belongs to it alone.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time

import torch

BEATS_GFLOP_PER_CLIP = 98.0
FULL_SIZE = {
    "logmel": {},
    "aisfx": dict(pretrained=False),
    "beats": {},
    "m2d": {},
    "eat": {},
    "dasheng": {},
    "ced": {},
    "ast": dict(checkpoint=None, config={}),
    "clap": dict(checkpoint=None, config={}),
    "wavlm": dict(checkpoint=None, config={}),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def matmul_gflops(dtype: torch.dtype, device: str, n: int = 2048, repeats: int = 8) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(args) -> dict:
    name, batch, dtype_name, device, repeats = args
    from asdzoo.encoders import load_encoder

    torch.manual_seed(0)
    enc = load_encoder(name, **FULL_SIZE[name]).to(device).eval()
    wave = torch.randn(batch, 160000, device=device) * 0.1
    autocast = torch.autocast(device, dtype=DTYPES[dtype_name], enabled=dtype_name != "fp32")
    base = _rss_mib()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode(), autocast:
        for _ in range(2):  # warm-up at the measured shape (oneDNN sets up kernels per shape)
            frames, mask = enc(wave)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            frames, mask = enc(wave)
        _sync(device)
        dt = time.perf_counter() - t0
    pooled = (frames.float() * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else _rss_mib() - base
    return dict(
        encoder=name,
        batch=batch,
        dtype=dtype_name,
        device=device,
        clips_per_s=batch * repeats / dt,
        peak_mib=peak,
        pooled=pooled.cpu().tolist(),
    )


def measure(name: str, batch: int, dtype: str, device: str, repeats: int) -> dict:
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_measure, ((name, batch, dtype, device, repeats),))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoders", nargs="+", default=list(FULL_SIZE))
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--dtypes", nargs="+", default=["fp32"], choices=list(DTYPES))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", help="also write the rows as JSON")
    args = ap.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, devices {devices}")
    rows = []
    for device in devices:
        gflops = {d: matmul_gflops(DTYPES[d], device) for d in args.dtypes}
        print(f"\n[{device}] matmul GFLOP/s: " + ", ".join(f"{d} {g:.1f}" for d, g in gflops.items()))
        print(f"{'encoder':<9}{'dtype':>6}{'batch':>6}{'clips/s':>10}{'peak MiB':>10}{'efficiency':>12}")
        for name in args.encoders:
            ref = None
            for dtype in args.dtypes:
                for batch in args.batches:
                    r = measure(name, batch, dtype, device, args.repeats)
                    eff = r["clips_per_s"] * BEATS_GFLOP_PER_CLIP / gflops[dtype] if name == "beats" else None
                    r["efficiency"] = eff
                    rows.append(r)
                    print(
                        f"{name:<9}{dtype:>6}{batch:>6}{r['clips_per_s']:10.2f}{r['peak_mib']:10.0f}"
                        f"{'' if eff is None else f'{eff:12.2f}'}"
                    )
                    if dtype == "fp32" and ref is None:
                        ref = torch.tensor(r["pooled"][0])
                    elif ref is not None and dtype != "fp32":
                        rel = ((torch.tensor(r["pooled"][0]) - ref).norm() / ref.norm()).item()
                        print(f"{'':<9}{'':>6}{'':>6}  pooled embedding vs fp32: {rel:.2e} relative")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{k: v for k, v in r.items() if k != "pooled"} for r in rows], f, indent=1)


if __name__ == "__main__":
    main()
