"""DCASE 2026 Task 4 baseline on CPU: speed and peak memory of the separator, the tagger and the whole chain, official
sizes with random weights, 4-channel 32 kHz mixtures.

    python benchmarks/task4.py                         # 10 s clips, 2 threads, median of 3 (several minutes)
    python benchmarks/task4.py --quick                 # 2 s clips, one repeat: a smoke test
    python benchmarks/task4.py --threads 4 --batch 8 --width 0.125

Real-time factor (RTF) = processing time / audio duration at batch 1 (below 1: faster than real time). Ratios come
from the same run, so they depend less on the machine than the absolute numbers (other jobs on shared cores still
move both; starved OpenMP threads can make a call several times slower):
    separator at --width: official RTF / its RTF;   tagger 4c: 1c clips/s / 4c clips/s;
    chain: its time / (tagger time + separator time), each at batch 1 (about 1 when chaining adds no overhead).
Each model is measured in a fresh process, so its peak resident memory (ru_maxrss above the RSS after imports:
weights, activations and allocator caches) is its own. CI does not run this.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import sys
import time

import torch

from asdzoo.data.s5 import LABELS, MIX_CHANNELS, SAMPLE_RATE
from asdzoo.data.task4 import separator_query
from asdzoo.systems.s5_baseline import S5Separator
from asdzoo.zoo import ZOO

TAGGER_CHANNELS = (1, MIX_CHANNELS)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def median_seconds(fn, repeats: int) -> float:
    """One warm-up call (oneDNN prepares its kernels per input shape), then the median of ``repeats`` timed calls."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _learnable_millions(model: torch.nn.Module) -> float:
    return sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6


def _build(kind: str, size: float):
    """The model of one row and how to call it on a mixture; the official sizes come from the zoo registry."""
    if kind == "separator":
        query = separator_query(list(LABELS[:3]))[None]  # every slot active (silent slots are computed anyway)
        return S5Separator(width=size), lambda model, mixture: model(mixture, query.expand(len(mixture), -1))
    if kind == "tagger":
        return ZOO[f"s5-m2dat-{int(size)}c"].build(), lambda model, mixture: model(mixture)
    return ZOO[f"s5-baseline-{int(size)}c"].build(), lambda model, mixture: model.separate(mixture)


def _measure(job: tuple) -> dict:
    """In a fresh process: seconds per call at batch 1 (and at ``batch`` for the tagger), peak RSS increase over the
    process after its imports (this module imports the models' modules, so their import cost is not counted)."""
    kind, size, seconds, batch, repeats, threads = job
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    base = _rss_mib()
    model, call = _build(kind, size)
    model.eval()
    samples = int(seconds * SAMPLE_RATE)
    batches = sorted({1, batch}) if kind == "tagger" else [1]
    out = dict(kind=kind, size=size, params_m=_learnable_millions(model))
    with torch.inference_mode():
        for b in batches:
            mixture = torch.randn(b, MIX_CHANNELS, samples) * 0.1
            out[f"s_batch{b}"] = median_seconds(lambda mixture=mixture: call(model, mixture), repeats)
    out["peak_mib"] = _rss_mib() - base
    return out


def measure(job: tuple) -> dict:
    """``_measure`` in a new process forked from a server that has imported this module once (so each measurement
    starts fresh without paying torch's and lightning's import time again) and has run no torch op (so no thread pool
    is forked)."""
    with mp.get_context("forkserver").Pool(1) as pool:
        return pool.apply(_measure, (job,))


def table(rows: dict, seconds: float, batch: int, width: float) -> list[str]:
    """The printed table: one line per model, the ratios described in the module docstring in the last columns."""
    sep, small, tag1 = rows[("separator", 1.0)], rows[("separator", width)], rows[("tagger", 1)]
    clips_key = f"s_batch{batch}"
    entries = [
        ("separator ResUNetK", sep, None, ""),
        (f"separator width {width:g}", small, sep["s_batch1"] / small["s_batch1"], "official / this RTF"),
    ]
    for c in TAGGER_CHANNELS:
        tag = rows[("tagger", c)]
        entries.append((f"tagger M2D {c}c", tag, tag[clips_key] / tag1[clips_key], "1c / this clips/s"))
    for c in TAGGER_CHANNELS:
        chain = rows[("chain", c)]
        parts = rows[("tagger", c)]["s_batch1"] + sep["s_batch1"]
        entries.append((f"chain {c}c", chain, chain["s_batch1"] / parts, f"chain / (tagger {c}c + separator)"))
    lines = [f"{'model':<22}{'params M':>9}{'peak MiB':>10}{'RTF b1':>9}{f'clips/s b{batch}':>13}{'ratio':>8}  of"]
    for name, r, ratio, what in entries:
        clips = f"{batch / r[clips_key]:13.2f}" if clips_key in r else f"{'-':>13}"
        ratio_text = f"{'-':>8}" if ratio is None else f"{ratio:8.2f}"
        rtf = r["s_batch1"] / seconds
        lines.append(
            f"{name:<22}{r['params_m']:9.2f}{r['peak_mib']:10.0f}{rtf:9.3f}{clips}{ratio_text}  {what}".rstrip()
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in every measurement")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls after the warm-up (the median is kept)")
    ap.add_argument("--batch", type=int, default=4, help="tagger batch for clips/s")
    ap.add_argument("--seconds", type=float, default=10.0, help="mixture length")
    ap.add_argument("--width", type=float, default=0.0625, help="the small separator to compare (the tests' size)")
    ap.add_argument("--quick", action="store_true", help="2 s clips, one repeat: a smoke test")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.repeats = 2.0, 1
    jobs = [("separator", 1.0), ("separator", args.width)]
    jobs += [(kind, c) for c in TAGGER_CHANNELS for kind in ("tagger", "chain")]
    print(
        f"torch {torch.__version__}, threads {args.threads}, {args.seconds:g} s {MIX_CHANNELS}-channel mixtures at "
        f"{SAMPLE_RATE} Hz, random weights, median of {args.repeats} after one warm-up",
        flush=True,
    )
    rows = {}
    for kind, size in jobs:
        r = measure((kind, size, args.seconds, args.batch, args.repeats, args.threads))
        rows[(kind, size)] = r
        timings = ", ".join(f"{k} {v:.2f}" for k, v in r.items() if k.startswith("s_batch"))
        print(f"  measured {kind} {size:g}: {timings} s, peak {r['peak_mib']:.0f} MiB", file=sys.stderr, flush=True)
    print("\n".join(table(rows, args.seconds, args.batch, args.width)))


if __name__ == "__main__":
    main()
