"""DCASE Task 2: the contract every anomaly detector meets, and the pipeline that runs any of them.

A detector (:class:`AnomalyDetector`) is fitted on the normal training clips of one machine and scores clips; that is
all the pipeline needs to fit per machine, score, set thresholds, write the official submission files and evaluate.
Two optional parts make it better, never different: ``train_scores()`` (leave-one-out training scores for the
decision threshold, where scoring a training clip against a bank that holds it would find itself), and the frame
interface (:class:`FrameDetector`), through which encoder frames are computed once per file and view and kept in the
on-disk frame cache, so re-scoring with other pooling or backend settings never re-embeds. A third,
:class:`SetScorer`, is for transductive detectors, whose score of a clip depends on the whole test set.
"""

from __future__ import annotations

import copy
import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import scipy.stats
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from asdzoo.atomic import atomic_path
from asdzoo.data.task2 import Clip, Task2Dataset, channel_count, collate_clips, list_machines, scan_clips
from asdzoo.hub import load
from asdzoo.metrics.task2 import official_score, section_metrics
from asdzoo.scoring.cache import FrameCache, file_digest

Frames = dict[str, tuple[torch.Tensor, torch.Tensor]]  # view -> (frames [N, T, D], valid mask [N, T])


@runtime_checkable
class AnomalyDetector(Protocol):
    """What every Task 2 model offers. ``waves [N, C, S]``: channel 0 near, 1 far (C = 1 for mono data);
    ``domains [N]``: 0 source, 1 target; ``lengths [N]``: valid samples (None = all)."""

    def fit(self, waves: torch.Tensor, domains: torch.Tensor, lengths: torch.Tensor | None = None):
        """Learn from one machine's normal training clips (memory banks, per-machine training, statistics)."""

    def score(self, waves: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Anomaly scores ``[N]``, higher = more anomalous."""


@runtime_checkable
class LeaveOneOutScores(Protocol):
    def train_scores(self) -> np.ndarray:
        """Scores of the training clips as unseen clips would get them (for the decision threshold)."""


@runtime_checkable
class SetScorer(Protocol):
    """Detectors whose scores are normalised over the whole test set of a machine (transductive, e.g. paper 002's
    rank normalisation per domain): the pipeline collects ``raw_scores`` of every test clip, then calls
    ``set_scores`` once with the clips' domains (None when the test names carry none). ``transductive`` False
    means the detector scores clip by clip after all."""

    transductive: bool

    def raw_scores(self, waves: torch.Tensor, lengths: torch.Tensor | None = None) -> np.ndarray: ...

    def set_scores(self, raw: np.ndarray, domains: np.ndarray | None) -> np.ndarray: ...


def clip_domains(clips: list[Clip]) -> np.ndarray | None:
    """Domains of test clips (0 source, 1 target), or None when any name lacks one (evaluation-set names)."""
    if any(c.domain is None for c in clips):
        return None
    return np.array([int(c.domain == "target") for c in clips])


@runtime_checkable
class FrameDetector(AnomalyDetector, Protocol):
    """Detectors on frozen-encoder frames: the pipeline computes each view's frames once and caches them."""

    def frame_views(self) -> tuple[str, ...]:
        """Names of the encoder inputs (e.g. ``near``, ``far``) the detector needs."""

    def frame_cache_key(self) -> dict:
        """Everything that determines the frames: encoder, its arguments, weights digest, code version."""

    def view_frames(self, waves: torch.Tensor, lengths: torch.Tensor | None, views: tuple[str, ...]) -> Frames: ...

    def fit_frames(self, frames: Frames, domains: torch.Tensor): ...

    def score_frames(self, frames: Frames) -> np.ndarray: ...


def decision_threshold(train_scores: np.ndarray, quantile: float = 0.9) -> float:
    """As the official baseline: the ``quantile`` point of a gamma distribution fitted to training scores
    (falls back to the empirical quantile when the fit is degenerate)."""
    s = np.asarray(train_scores, dtype=float)
    shift = s.min() - 1e-6 if s.min() <= 0 else 0.0
    try:
        shape, loc, scale = scipy.stats.gamma.fit(s - shift)
        thr = float(scipy.stats.gamma.ppf(quantile, shape, loc=loc, scale=scale)) + shift
        if np.isfinite(thr):
            return thr
    except (ValueError, RuntimeError, FloatingPointError):
        pass
    return float(np.quantile(s, quantile))


@dataclass
class MachineData:
    machine: str
    train: list[Clip]
    test: list[Clip]
    channels: int


def load_machine(root: str | Path, machine: str) -> MachineData:
    """Scan one machine; every file of it must have the same channel count (named otherwise)."""
    train, test = scan_clips(root, machine, "train"), scan_clips(root, machine, "test")
    return MachineData(machine, train, test, channel_count(train + test))


def clip_batches(clips: list[Clip], channels: int, batch_size: int = 16):
    """Collated batches ``{'wave', 'lengths', 'domain', ...}`` of the clips, in order."""
    return DataLoader(Task2Dataset(clips, channels=channels), batch_size=batch_size, collate_fn=collate_clips)


def all_clips(clips: list[Clip], channels: int) -> dict:
    """Every clip in one collated batch (a machine's training set, for ``fit``)."""
    return next(iter(clip_batches(clips, channels, batch_size=max(1, len(clips)))))


def _pad_frames(items: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    t_max = max(x.shape[0] for x in items)
    frames = items[0].new_zeros(len(items), t_max, items[0].shape[-1])
    mask = torch.zeros(len(items), t_max, dtype=torch.bool)
    for i, x in enumerate(items):
        frames[i, : x.shape[0]] = x
        mask[i, : x.shape[0]] = True
    return frames, mask


def cached_frames(
    detector: FrameDetector,
    clips: list[Clip],
    channels: int,
    views: tuple[str, ...],
    cache: FrameCache | None,
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "",
) -> Frames:
    """Encoder frames of every view of every clip, read from / written to the frame cache."""
    digests = [file_digest(c.path) for c in clips] if cache else [None] * len(clips)
    found: dict[str, list] = {v: [cache.get(d, v) if cache else None for d in digests] for v in views}
    todo = [i for i in range(len(clips)) if any(found[v][i] is None for v in views)]
    bar = tqdm(total=len(todo), desc=f"embed {desc}".strip(), unit="clip", disable=not progress or not todo)
    batches = clip_batches([clips[i] for i in todo], channels, batch_size) if todo else []
    for start, batch in zip(range(0, len(todo), batch_size), batches):
        idx = todo[start : start + batch_size]
        out = detector.view_frames(batch["wave"], batch["lengths"], views)
        for v, (frames, mask) in out.items():
            for row, i in enumerate(idx):
                f = frames[row, mask[row]].contiguous()
                found[v][i] = f
                if cache:
                    cache.put(digests[i], v, f)
        bar.update(len(idx))
    bar.close()
    return {v: _pad_frames(found[v]) for v in views}


def frame_cache_for(detector: FrameDetector, cache_root: str | Path | None) -> FrameCache | None:
    return None if cache_root is None else FrameCache(Path(cache_root) / "frames", detector.frame_cache_key())


def require_detector(model) -> None:
    if not isinstance(model, AnomalyDetector):
        raise TypeError(
            f"{type(model).__name__} is not a Task 2 detector: it needs fit(waves, domains, lengths) and "
            "score(waves, lengths) (asdzoo.tasks.task2.AnomalyDetector)"
        )


def fit_and_score(
    model, data: MachineData, cache_root: str | Path | None = None, progress: bool = False, batch_size: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Fit a copy of ``model`` on the machine's train clips; return (test scores, training scores)."""
    require_detector(model)
    det = copy.deepcopy(model)
    train_domains = torch.tensor([int(c.domain == "target") for c in data.train])
    if isinstance(det, FrameDetector):
        cache, views = frame_cache_for(det, cache_root), det.frame_views()
        for split, clips in (("train", data.train), ("test", data.test)):
            fr = cached_frames(det, clips, data.channels, views, cache, batch_size, progress, f"{data.machine}/{split}")
            if split == "train":
                det.fit_frames(fr, train_domains)
            else:
                test_scores = np.asarray(det.score_frames(fr))
    else:
        train = all_clips(data.train, data.channels)
        det.fit(train["wave"], train_domains, train["lengths"])
        batches = clip_batches(data.test, data.channels, batch_size)
        if isinstance(det, SetScorer) and det.transductive:
            raw = np.concatenate([det.raw_scores(b["wave"], b["lengths"]) for b in batches])
            test_scores = np.asarray(det.set_scores(raw, clip_domains(data.test)))
        else:
            test_scores = np.concatenate([det.score(b["wave"], b["lengths"]).numpy() for b in batches])
    if isinstance(det, LeaveOneOutScores):
        return test_scores, np.asarray(det.train_scores())
    train_scores = [det.score(b["wave"], b["lengths"]).numpy() for b in clip_batches(data.train, data.channels)]
    return test_scores, np.concatenate(train_scores)


def write_submission(
    out_dir: str | Path, machine: str, clips: list[Clip], scores: np.ndarray, threshold: float
) -> list[Path]:
    """``anomaly_score_<M>_section_<NN>_test.csv`` and ``decision_result_…`` (no header), one pair per section."""
    written = []
    for section in sorted({c.section for c in clips}):
        rows = [(c.name, float(s)) for c, s in zip(clips, scores) if c.section == section]
        for kind, fmt in (("anomaly_score", lambda v: repr(v)), ("decision_result", lambda v: str(int(v > threshold)))):
            path = Path(out_dir) / f"{kind}_{machine}_section_{section}_test.csv"
            with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
                csv.writer(f, lineterminator="\n").writerows([(n, fmt(v)) for n, v in rows])
            written.append(path)
    return written


def score_root(
    model,
    data_root: str | Path,
    out_dir: str | Path,
    machines: list[str] | None = None,
    cache_root: str | Path | None = None,
    progress: bool = True,
    log=print,
) -> list[Path]:
    """``asdzoo score``: per machine, fit on ``train/``, score ``test/``, write the official files."""
    if isinstance(model, (str, Path)):
        model = load(model)
    require_detector(model)
    available = list_machines(data_root)
    machines = machines or available
    unknown = sorted(set(machines) - set(available))
    if unknown:
        raise FileNotFoundError(f"{data_root}: no machine folder {unknown[0]!r}; available: {', '.join(available)}")
    written = []
    for machine in machines:
        data = load_machine(data_root, machine)
        test_scores, train_scores = fit_and_score(model, data, cache_root, progress)
        written += write_submission(out_dir, machine, data.test, test_scores, decision_threshold(train_scores))
        how = ""
        if isinstance(model, SetScorer) and model.transductive:
            how = " per domain" if clip_domains(data.test) is not None else " per machine (names carry no domain)"
            how = f", rank-normalised over the test set{how}"
        log(f"{machine}: scored {len(data.test)} test clips (fitted on {len(data.train)}){how}")
    return written


def dev_official_score(model, data_root: str | Path, machines: list[str] | None = None) -> float:
    """Official score of ``model`` on a development root whose test file names carry labels and domains:
    fit per machine on ``train/``, score ``test/``, hmean over every section's AUC(s), AUC(t), pAUC."""
    triplets = []
    for machine in machines or list_machines(data_root):
        data = load_machine(data_root, machine)
        unlabeled = [c.path.name for c in data.test if c.meta.is_anomaly is None or c.domain is None]
        if unlabeled:
            raise ValueError(f"{data.test[0].path.parent}: {unlabeled[0]} has no label/domain in its name (dev data?)")
        scores, _ = fit_and_score(model, data)
        for section in sorted({c.section for c in data.test}):
            idx = [i for i, c in enumerate(data.test) if c.section == section]
            m = section_metrics(
                [int(data.test[i].meta.is_anomaly) for i in idx],
                scores[idx],
                [int(data.test[i].domain == "target") for i in idx],
            )
            triplets += [m["AUC (source)"], m["AUC (target)"], m["pAUC"]]
    return official_score(triplets)
