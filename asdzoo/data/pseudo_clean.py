"""Dataset preparation for beats-distill (paper 000 §2.3): ILRMA pseudo-clean waveforms for every two-channel file of
a Task 2 root, written next to the data as ``<root>-pseudo-clean/<machine>/<split>/<file>.wav`` (resumable: files
already there are skipped; each file is written atomically). The separation itself is :mod:`asdzoo.audio.separation`.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

from tqdm import tqdm

from asdzoo.audio.io import read_audio, write_audio
from asdzoo.audio.separation import separate
from asdzoo.data.task2 import list_machines, require_two_channels, scan_clips


def pseudo_clean_path(out_root: Path, machine: str, split: str, name: str) -> Path:
    return Path(out_root) / machine / split / name


def default_output(root: str | Path) -> Path:
    """Next to the data as given: ``<root>-pseudo-clean`` (symbolic links are not followed, so the training configs'
    ``<root>-pseudo-clean`` default finds it)."""
    root = Path(os.path.abspath(root))
    return root.parent / f"{root.name}-pseudo-clean"


def _job(args) -> tuple[str, float, float]:
    src, dst, n_iter = args
    wave = read_audio(src, channels=2, sample_rate=16000)
    t0 = time.perf_counter()
    result = separate(wave.numpy(), n_iter)
    write_audio(dst, result.pseudo_clean[None], 16000)
    return str(dst), time.perf_counter() - t0, wave.shape[-1] / 16000


def prepare_pseudo_clean(
    root: str | Path,
    out: str | Path | None = None,
    splits=("train",),
    machines=None,
    workers: int = 2,
    n_iter: int = 30,
    progress: bool = True,
) -> dict:
    """Write ``<out>/<machine>/<split>/<file>.wav`` for every two-channel file; files already there are skipped
    (resumable), each file is written atomically. Returns counts and the real-time factor."""
    out = Path(out) if out else default_output(root)
    jobs = []
    for machine in machines or list_machines(root):
        for split in splits:
            clips = scan_clips(root, machine, split)
            require_two_channels(clips, "ILRMA pseudo-clean separation")
            jobs += [(c.path, pseudo_clean_path(out, machine, split, c.name), n_iter) for c in clips]
    todo = [j for j in jobs if not j[1].is_file()]
    busy = audio = 0.0
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")  # fork would copy torch's OpenMP pool state and can deadlock the workers
    with ctx.Pool(workers) if workers > 1 and len(todo) > 1 else _Serial() as pool:
        for _, seconds, duration in tqdm(
            pool.imap_unordered(_job, todo),
            total=len(todo),
            disable=not progress,
            desc="ILRMA pseudo-clean",
            unit="file",
        ):
            busy += seconds
            audio += duration
    wall = time.perf_counter() - t0
    return {
        "out": str(out),
        "files": len(jobs),
        "written": len(todo),
        "skipped": len(jobs) - len(todo),
        "rtf_per_core": busy / audio if audio else None,
        "rtf_wall": wall / audio if audio else None,
    }


class _Serial:
    """Stand-in for a process pool when ``workers == 1``."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def imap_unordered(fn, jobs):
        return map(fn, jobs)
