"""Audio-Mamba speed: (a) the selective scan against the sequential loop, (b) a training step at 10 s with
pixel-unshuffle r=4 against r=1 (the paper's Table 1 claims 720 -> 90 min, 8x), (c) inference latency at 10 s of AuM
against AST of the same width and depth (clips/s, peak memory).

    python benchmarks/aum.py --quick      # < 2 min on 2 cores: depth 4 for (b) and (c), L up to 4096 for (a)
    python benchmarks/aum.py              # AuM-small (384 wide, depth 24), L 1024 and 8192
    python benchmarks/aum.py --device cuda  # on a GPU: (a) is mamba-ssm's kernel when it imports, else the chunked
                                            # scan; (b) runs under bf16 autocast; (c) reports peak GPU memory

On the CPU each (c) measurement runs in a fresh process, so its peak resident memory (VmHWM) belongs to it alone; the
resident size after building the model is printed too, the difference is what inference added.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp

import torch
from task4 import median_seconds  # benchmarks/task4.py: warm-up call, then the median

SR, SECONDS = 16000, 10


def seconds(fn, repeats: int, device: str) -> float:
    """Median wall time of ``fn`` (after a warm-up), waiting for the GPU's queued work on CUDA."""
    if device == "cpu":
        return median_seconds(fn, repeats)
    return median_seconds(lambda: (fn(), torch.cuda.synchronize()), repeats)


def bench_scan(lengths: list[int], repeats: int, device: str) -> None:
    from asdzoo.nn import selective_scan as ss

    path = "mamba-ssm kernel" if device != "cpu" and ss._kernel() is not None else "chunked scan"
    print(f"(a) selective scan ({path}), {device}, batch 2, dim 384, d_state 16, input-dependent B/C, float32")
    g = torch.Generator().manual_seed(0)
    for length in lengths:
        b, d, n = 2, 384, 16
        u, z = (torch.randn(b, d, length, generator=g) for _ in range(2))
        delta = 0.1 * torch.randn(b, d, length, generator=g)
        dt = torch.exp(torch.rand(d, generator=g) * (math.log(0.1) - math.log(0.001)) + math.log(0.001))
        bias = dt + torch.log(-torch.expm1(-dt))  # softplus(bias) in [0.001, 0.1], as Mamba initialises dt_proj
        A = -torch.arange(1.0, n + 1).repeat(d, 1)  # S4D-real
        B, C = (torch.randn(b, n, length, generator=g) for _ in range(2))
        args = tuple(t.to(device) for t in (u, delta, A, B, C, torch.ones(d), z, bias)) + (True,)
        with torch.no_grad():
            t_chunk = seconds(lambda a=args: ss.selective_scan(*a), repeats, device)
            t_seq = seconds(lambda a=args: ss.selective_scan_sequential(*a), repeats, device)
            err = (ss.selective_scan(*args) - ss.selective_scan_sequential(*args)).abs().max().item()
        print(
            f"  L={length:5d}: {path} {t_chunk * 1e3:8.1f} ms, sequential {t_seq * 1e3:8.1f} ms, "
            f"speed-up {t_seq / t_chunk:5.2f}x, max |diff| {err:.2e}"
        )


def aum(depth: int, unshuffle: int = 1, width: int = 384):
    from asdzoo.encoders.aum import AudioMamba

    return AudioMamba(embed_dim=width, depth=depth, d_state=16, bimamba_type="v2", num_classes=7, unshuffle=unshuffle)


def bench_train(depth: int, batch: int, repeats: int, device: str) -> None:
    precision = "float32" if device == "cpu" else "bf16 autocast"
    print(f"(b) training step (forward + backward + AdamW), AuM 384 wide, depth {depth}, batch {batch}, 10 s")
    print(f"    {device}, {precision}")
    spec = torch.randn(batch, 1024, 128, device=device)
    target = torch.randint(0, 7, (batch,), device=device)
    times = {}
    for r in (4, 1):
        torch.manual_seed(0)
        model = aum(depth, r).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(model=model, opt=opt):
            with torch.autocast(device, dtype=torch.bfloat16, enabled=device != "cpu"):
                logits = model.forward_spectrogram(spec)["logits"]
            loss = torch.nn.functional.cross_entropy(logits.float(), target)
            opt.zero_grad()
            loss.backward()
            opt.step()

        times[r] = seconds(step, repeats, device)
        print(f"  r={r}: {model.num_patches + 1:4d} tokens, {times[r] * 1e3:8.1f} ms / step")
    print(f"  r=1 / r=4 time ratio: {times[1] / times[4]:.2f}x (paper: 720 / 90 min = 8x, on a GPU)")


def _status_mib(field: str) -> float:
    """VmRSS / VmHWM of this process from /proc (ru_maxrss would carry the parent's peak across exec)."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def _model(name: str, depth: int) -> torch.nn.Module:
    if name == "aum":
        return aum(depth)
    from asdzoo.encoders.hf import ASTEncoder

    cfg = dict(hidden_size=384, num_hidden_layers=depth, num_attention_heads=6, intermediate_size=1536)
    return ASTEncoder(checkpoint=None, config=dict(cfg, max_length=1024))


def _infer(args) -> dict:
    name, depth, repeats = args
    torch.manual_seed(0)
    model = _model(name, depth).eval()
    wave = torch.randn(1, SR * SECONDS) * 0.1
    built = _status_mib("VmRSS")
    with torch.inference_mode():
        seconds = median_seconds(lambda: model(wave), repeats)
    return {"name": name, "seconds": seconds, "built_mib": built, "peak_mib": _status_mib("VmHWM")}


def _infer_gpu(name: str, depth: int, repeats: int, device: str) -> None:
    torch.manual_seed(0)
    torch.cuda.reset_peak_memory_stats()
    model = _model(name, depth).to(device).eval()
    built = torch.cuda.memory_allocated() / 2**20
    wave = torch.randn(1, SR * SECONDS, device=device) * 0.1
    with torch.inference_mode():
        t = seconds(lambda: model(wave), repeats, device)
    peak = torch.cuda.max_memory_allocated() / 2**20
    print(f"  {name}: {t * 1e3:8.1f} ms/clip, {1 / t:6.2f} clips/s, peak GPU memory {peak:.0f} MiB (model {built:.0f})")


def bench_infer(depth: int, repeats: int, device: str) -> None:
    print(f"(c) inference, 1 clip of 10 s, {device}, float32, 384 wide, depth {depth}")
    print("    AST: 6 heads, MLP 1536, strides 10")
    if device != "cpu":
        for name in ("aum", "ast"):
            _infer_gpu(name, depth, repeats, device)
        return
    ctx = mp.get_context("spawn")
    for name in ("aum", "ast"):
        with ctx.Pool(1) as pool:
            r = pool.map(_infer, [(name, depth, repeats)])[0]
        print(
            f"  {name}: {r['seconds'] * 1e3:8.1f} ms/clip, {1 / r['seconds']:6.2f} clips/s, peak RSS "
            f"{r['peak_mib']:.0f} MiB (after build {r['built_mib']:.0f} MiB, +{r['peak_mib'] - r['built_mib']:.0f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small depth and lengths: under 2 min on 2 cores")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}")
    depth, repeats = (4, 2) if args.quick else (24, 3)
    bench_scan([1024, 4096] if args.quick else [1024, 8192], repeats, args.device)
    bench_train(depth, 2, repeats, args.device)
    bench_infer(depth, repeats, args.device)


if __name__ == "__main__":
    main()
