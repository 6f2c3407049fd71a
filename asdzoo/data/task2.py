"""DCASE Task 2 (2020-2026 layout) datasets: scanning, validation, batching with valid lengths."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset
from torchdata.stateful_dataloader import StatefulDataLoader

from asdzoo.audio.io import AudioError, audio_info, read_audio
from asdzoo.data.filenames import ClipName, parse_clip_name
from asdzoo.data.resumable import WeightedSampler, train_loader

SAMPLE_RATE = 16000
NEAR, FAR = 0, 1  # channel 0 = near microphone (left), 1 = far microphone (right): contract


@dataclass(frozen=True)
class Clip:
    path: Path
    machine: str
    meta: ClipName

    name = property(lambda self: self.meta.name)
    section = property(lambda self: self.meta.section)
    domain = property(lambda self: self.meta.domain)
    label = property(lambda self: self.meta.label)
    attributes = property(lambda self: self.meta.attributes)


def list_machines(root: str | os.PathLike) -> list[str]:
    """Machine folders under a ``dev_data/raw`` or ``eval_data/raw`` root (each with train/ or test/)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data root not found")
    machines = sorted(
        p.name for p in root.iterdir() if p.is_dir() and ((p / "train").is_dir() or (p / "test").is_dir())
    )
    if not machines:
        raise FileNotFoundError(
            f"{root}: no machine folders with train/ or test/ inside (expected <root>/<machine>/train/*.wav)"
        )
    return machines


def scan_clips(root: str | os.PathLike, machine: str, split: str) -> list[Clip]:
    """Sorted clips of ``<root>/<machine>/<split>/``; file names are parsed and must be DCASE names."""
    folder = Path(root) / machine / split
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: missing folder (expected <root>/{machine}/{split}/ with .wav files)")
    clips = [Clip(p, machine, parse_clip_name(p)) for p in sorted(folder.glob("*.wav"))]
    if not clips:
        raise FileNotFoundError(f"{folder}: no .wav files")
    return clips


def channel_count(clips: list[Clip]) -> int:
    """The one channel count shared by all clips; mixing counts is an error naming the odd file."""
    first = None
    for clip in clips:
        n = audio_info(clip.path).channels
        if first is None:
            first = (n, clip.path)
        elif n != first[0]:
            raise AudioError(
                clip.path, f"has {n} channel(s) but {first[1]} has {first[0]}: mixed channel counts in one data set"
            )
    if first[0] not in (1, 2):
        raise AudioError(
            first[1], f"expected mono (2020-2025) or stereo near/far (2026) audio, got {first[0]} channels"
        )
    return first[0]


def require_two_channels(clips: list[Clip], method: str) -> None:
    """Two-channel methods refuse single-channel (pre-2026) data with a message that says why."""
    if channel_count(clips) != 2:
        raise AudioError(
            clips[0].path,
            f"{method} needs two-channel (near, far) audio; this data set is mono "
            "(DCASE 2020-2025 layout). Use a near-only configuration instead.",
        )


def class_labels(clips: list[Clip], by: str, names: Sequence[str] | None = None) -> tuple[list[int], list[str]]:
    """Integer class labels for classification objectives: by 'machine' (machine type), 'section' (machine x
    section) or 'attribute' (machine x section x attribute string). ``names``: an existing class list to label by
    (a validation set labelled as its training set); by default the sorted classes of ``clips``."""
    if by == "machine":
        keys = [c.machine for c in clips]
    elif by == "section":
        keys = [f"{c.machine}_{c.section}" for c in clips]
    elif by == "attribute":
        keys = [f"{c.machine}_{c.section}_{c.attributes or 'noAttribute'}" for c in clips]
    else:
        raise ValueError(f"class labels by {by!r}: choose 'machine', 'section' or 'attribute'")
    names = sorted(set(keys)) if names is None else list(names)
    index = {k: i for i, k in enumerate(names)}
    for clip, key in zip(clips, keys):
        if key not in index:
            raise ValueError(f"{clip.path}: class {key!r} (by {by}) is not one of the {len(names)} training classes")
    return [index[k] for k in keys], names


class Task2Dataset(Dataset):
    """Clips as ``{'wave': [C, S], 'length', 'label', 'domain', 'class', 'index'}``.

    ``channels`` is required of every file (2 for 2026 near/far data); ``segment_seconds`` crops
    (random offset when ``random_crop``) to at most that length.
    """

    def __init__(
        self,
        clips: list[Clip],
        channels: int = 2,
        sample_rate: int = SAMPLE_RATE,
        resample: bool = False,
        segment_seconds: float | None = None,
        random_crop: bool = False,
        class_by: str | None = None,
        pseudo_clean_root: str | None = None,
        class_names: Sequence[str] | None = None,
    ):
        if not clips:
            raise ValueError("Task2Dataset needs at least one clip")
        self.clips = clips
        self.channels = channels
        self.sample_rate = sample_rate
        self.resample = resample
        self.segment = None if segment_seconds is None else int(round(segment_seconds * sample_rate))
        self.random_crop = random_crop
        # without class_by there are no class labels: -1, so a classification loss fails loudly instead of learning 0
        unlabelled = ([-1] * len(clips), [])
        self.classes, self.class_names = class_labels(clips, class_by, class_names) if class_by else unlabelled
        self.pseudo_clean_root = pseudo_clean_root

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict:
        clip = self.clips[i]
        wave = read_audio(clip.path, channels=self.channels, sample_rate=self.sample_rate, resample=self.resample)
        if self.pseudo_clean_root is not None:  # paired pseudo-clean view, cropped with the same offset
            pc_path = Path(self.pseudo_clean_root) / clip.machine / clip.path.parent.name / clip.name
            if not pc_path.is_file():
                raise FileNotFoundError(
                    f"{pc_path}: no pseudo-clean file for {clip.path}; run "
                    f"`asdzoo prepare pseudo-clean {clip.path.parents[2]}` first"
                )
            pc = read_audio(pc_path, channels=1, sample_rate=self.sample_rate)
            if pc.shape[-1] != wave.shape[-1]:
                raise AudioError(pc_path, f"has {pc.shape[-1]} samples but {clip.path} has {wave.shape[-1]}")
            wave = torch.cat([wave, pc])
        if self.segment is not None and wave.shape[-1] > self.segment:
            start = int(torch.randint(0, wave.shape[-1] - self.segment + 1, ())) if self.random_crop else 0
            wave = wave[:, start : start + self.segment]
        item = {}
        if self.pseudo_clean_root is not None:
            item["pseudo_clean"], wave = wave[-1], wave[:-1]
        return item | {
            "wave": wave,
            "length": wave.shape[-1],
            "label": -1 if clip.label is None else int(clip.label == "anomaly"),
            "domain": -1 if clip.domain is None else int(clip.domain == "target"),
            "class": self.classes[i],
            "index": i,
        }


def collate_clips(items: list[dict]) -> dict:
    """Pad waves to the longest clip; ``lengths`` keeps each clip's valid samples."""
    longest = max(it["length"] for it in items)
    wave = torch.zeros(len(items), items[0]["wave"].shape[0], longest)
    for b, it in enumerate(items):
        wave[b, :, : it["length"]] = it["wave"]
    batch = {"wave": wave, "lengths": torch.tensor([it["length"] for it in items])}
    if "pseudo_clean" in items[0]:
        batch["pseudo_clean"] = torch.zeros(len(items), longest)
        for b, it in enumerate(items):
            batch["pseudo_clean"][b, : it["length"]] = it["pseudo_clean"]
    for key in ("label", "domain", "class", "index"):
        batch[key] = torch.tensor([it[key] for it in items])
    return batch


def held_out_split(domains: Sequence[int], fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """(train, held-out) indices: ``fraction`` of each domain held out, at least one clip of a domain that has two
    or more (so target-domain behaviour is validated too), never a whole domain."""
    domains = torch.as_tensor(domains)
    gen = torch.Generator().manual_seed(seed)
    train, held = [], []
    for d in (0, 1):
        idx = (domains == d).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)].tolist()
        n = 0 if len(idx) < 2 or fraction <= 0 else min(len(idx) - 1, max(1, round(fraction * len(idx))))
        held += idx[:n]
        train += idx[n:]
    return sorted(train), sorted(held)


def _hold_out(clips: list[Clip], fraction: float) -> tuple[list[Clip], list[Clip]]:
    """(train, held-out): ``fraction`` of each machine's clips per domain, by :func:`held_out_split` (seed 0)."""
    train, held = [], []
    for machine in sorted({c.machine for c in clips}):
        own = [c for c in clips if c.machine == machine]
        keep, out = held_out_split([int(c.domain == "target") for c in own], fraction)
        train += [own[i] for i in keep]
        held += [own[i] for i in out]
    return train, held


class Task2DataModule(L.LightningDataModule):
    """Train on ``train/`` of the chosen machines, validate on ``test/`` (dev labels).

    ``target_oversample`` repeats target-domain clips that many times per epoch on average (they are ~1% of
    DCASE training data); ``class_by`` adds section/attribute class labels for classification objectives.
    ``extra_roots``: more roots whose machines' ``train/`` clips join the training set (DCASE's evaluation-set
    additional training data: the "all 12 machines" scope of paper 002). ``val_fraction`` > 0 validates on that
    fraction of each machine's and domain's normal training clips, held out, instead of ``test/`` (objectives
    that must not see test data); those clips carry the training set's ``class_by`` labels.
    """

    def __init__(
        self,
        root: str,
        machines: list[str] | None = None,
        batch_size: int = 16,
        num_workers: int = 0,
        channels: int = 2,
        segment_seconds: float | None = None,
        target_oversample: float = 1.0,
        class_by: str | None = "attribute",
        resample: bool = False,
        pseudo_clean_root: str | None = None,
        extra_roots: list[str] | None = None,
        val_fraction: float = 0.0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.extra_roots = list(extra_roots or [])
        self.val_fraction = val_fraction
        self.root = root
        self.machines = machines
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.channels = channels
        self.segment_seconds = segment_seconds
        self.target_oversample = target_oversample
        self.class_by = class_by
        self.resample = resample
        self.pseudo_clean_root = pseudo_clean_root

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_set"):
            return
        machines = self.machines or list_machines(self.root)
        train = [c for m in machines for c in scan_clips(self.root, m, "train")]
        train += [c for root in self.extra_roots for m in list_machines(root) for c in scan_clips(root, m, "train")]
        held: list[Clip] = []
        if self.val_fraction > 0:
            train, held = _hold_out(train, self.val_fraction)
        self.train_set = Task2Dataset(
            train,
            self.channels,
            resample=self.resample,
            segment_seconds=self.segment_seconds,
            random_crop=True,
            class_by=self.class_by,
            pseudo_clean_root=self.pseudo_clean_root,
        )
        labels = {}
        if self.val_fraction > 0:
            val = held  # never test data, even where too few clips could be held out
            if self.class_by:  # held-out normals carry the training set's class labels (e.g. stage-1 accuracy)
                labels = dict(class_by=self.class_by, class_names=self.train_set.class_names)
        else:
            val = [
                c for m in machines if (Path(self.root) / m / "test").is_dir() for c in scan_clips(self.root, m, "test")
            ]
        self.val_set = Task2Dataset(val, self.channels, resample=self.resample, **labels) if val else None

    @property
    def num_classes(self) -> int:
        """Number of classification targets (scans file names only; no audio is read)."""
        self.setup()
        return len(self.train_set.class_names)

    def train_dataloader(self) -> StatefulDataLoader:
        sampler = None
        if self.target_oversample != 1.0:
            weights = [self.target_oversample if c.domain == "target" else 1.0 for c in self.train_set.clips]
            sampler = WeightedSampler(weights, seed=torch.initial_seed())
        return train_loader(
            self.train_set, self.batch_size, sampler, num_workers=self.num_workers, collate_fn=collate_clips
        )

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return DataLoader(self.val_set, self.batch_size, num_workers=self.num_workers, collate_fn=collate_clips)
