"""Stages that turn a DCASE data root into official submission files: load, fit per machine, score, decide."""

from __future__ import annotations

import copy
import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from asdzoo.atomic import atomic_path
from asdzoo.data.task2 import Clip, Task2Dataset, channel_count, collate_clips, list_machines, scan_clips
from asdzoo.scoring.cache import FrameCache, file_digest
from asdzoo.systems.detector import decision_threshold


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


def load_waves(clips: list[Clip], channels: int, batch_size: int = 32):
    """Yield collated batches ``{'wave', 'lengths', 'domain', ...}`` of the clips, in order."""
    ds = Task2Dataset(clips, channels=channels)
    for i in range(0, len(ds), batch_size):
        yield collate_clips([ds[j] for j in range(i, min(i + batch_size, len(ds)))])


def _pad_frames(items: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    t_max = max(x.shape[0] for x in items)
    frames = items[0].new_zeros(len(items), t_max, items[0].shape[-1])
    mask = torch.zeros(len(items), t_max, dtype=torch.bool)
    for i, x in enumerate(items):
        frames[i, : x.shape[0]] = x
        mask[i, : x.shape[0]] = True
    return frames, mask


def view_frames(
    model,
    clips: list[Clip],
    channels: int,
    views: tuple[str, ...],
    cache: FrameCache | None,
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "",
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Encoder frames of every view of every clip, read from / written to the frame cache."""
    digests = [file_digest(c.path) for c in clips] if cache else [None] * len(clips)
    found: dict[str, list] = {v: [cache.get(d, v) if cache else None for d in digests] for v in views}
    todo = [i for i in range(len(clips)) if any(found[v][i] is None for v in views)]
    bar = tqdm(total=len(todo), desc=f"embed {desc}".strip(), unit="clip", disable=not progress or not todo)
    for start in range(0, len(todo), batch_size):
        idx = todo[start : start + batch_size]
        batch = collate_clips([Task2Dataset([clips[i] for i in idx], channels=channels)[j] for j in range(len(idx))])
        out = model.view_frames(batch["wave"], batch["lengths"], views)
        for v, (frames, mask) in out.items():
            for row, i in enumerate(idx):
                f = frames[row, mask[row]].contiguous()
                found[v][i] = f
                if cache:
                    cache.put(digests[i], v, f)
        bar.update(len(idx))
    bar.close()
    return {v: _pad_frames(found[v]) for v in views}


def frame_cache_for(model, cache_root: str | Path | None) -> FrameCache | None:
    if cache_root is None:
        return None
    enc = model.config
    key = {
        "encoder": enc["encoder"],
        "encoder_args": enc["encoder_args"],
        "layer": enc["layer"],
        "input_method": enc["input_method"] if "enh" in _views(model) else None,
    }
    return FrameCache(Path(cache_root) / "frames", key)


def _views(model) -> tuple[str, ...]:
    from asdzoo.systems.genrep import views_for

    return views_for(model.input_method)


def fit_and_score(
    model, data: MachineData, cache_root: str | Path | None = None, progress: bool = False, batch_size: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Fit a copy of ``model`` on the machine's train clips; return (test scores, training scores)."""
    det = copy.deepcopy(model)
    train_domains = torch.tensor([int(c.domain == "target") for c in data.train])
    if hasattr(det, "view_frames"):  # embedding detectors: go through the frame cache
        cache = frame_cache_for(det, cache_root)
        views = _views(det)
        fr = view_frames(det, data.train, data.channels, views, cache, batch_size, progress, f"{data.machine}/train")
        det.fit_embeddings(det.branches_from_frames(fr), train_domains)
        fr = view_frames(det, data.test, data.channels, views, cache, batch_size, progress, f"{data.machine}/test")
        return det.score_embeddings(det.branches_from_frames(fr)), det.train_scores()
    train_set = Task2Dataset(data.train, channels=data.channels)
    train = collate_clips([train_set[i] for i in range(len(train_set))])
    det.fit(train["wave"], train_domains, train["lengths"])
    test_scores = np.concatenate(
        [det.score(b["wave"], b["lengths"]).numpy() for b in load_waves(data.test, data.channels)]
    )
    if hasattr(det, "train_scores"):  # bank detectors: leave-one-out scores (a clip would find itself)
        return test_scores, det.train_scores()
    return test_scores, det.score(train["wave"], train["lengths"]).numpy()


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
        from asdzoo.hub import load

        model = load(model)
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
        log(f"{machine}: scored {len(data.test)} test clips (fitted on {len(data.train)})")
    return written


def dev_official_score(model, data_root: str | Path, machines: list[str] | None = None) -> float:
    """Official score of ``model`` on a development root whose test file names carry labels and domains:
    fit per machine on ``train/``, score ``test/``, hmean over every section's AUC(s), AUC(t), pAUC."""
    from asdzoo.metrics.task2 import official_score, section_metrics

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
