"""DCASE 2026 Task 4 (S5) data: label vectors, the dev-test set, validation scenes rebuilt from ``metadata/valid.json``
(asdzoo's scene list or the official list of per-scene SpAudSyn files), training scenes mixed on the fly from rooms
stored as official SOFA or asdzoo ``.npz`` files, and the tagger / separator LightningDataModules.

Layout, label-vector modes and synthesis settings follow the official baseline (``nttcslab/dcase2026_task4_baseline``,
``src/datamodules/dataset.py`` and its configs, and the SpAudSyn synthesizer it copies; summarised in
``../shared/reference/s5_facts``). Every item is ``{'mixture' [4, S], 'dry_sources' [3, S], 'labels' (3 names,
silence-padded), 'name'}``; scene items add ``'scene'``, the metadata that rebuilds them. Training scenes are drawn
here and mixed, like the validation and built-in test scenes, by :func:`asdzoo.data.synth_t4.render_scene`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import lightning as L
import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset
from torchdata.stateful_dataloader import StatefulDataLoader

from asdzoo.audio.foa import RoomIRs
from asdzoo.audio.io import AudioError, audio_info, read_audio
from asdzoo.audio.rooms import ROOM_FILES, load_room
from asdzoo.data.resumable import ResumableSampler, train_loader
from asdzoo.data.s5 import LABEL_INDEX, LABELS, MIX_CHANNELS, N_SLOTS, SAMPLE_RATE, SILENCE, TAGGER_CLASSES
from asdzoo.data.synth_t4 import DIRECT_RANGE_MS, REF_DB, render_scene

QUERY_DIM = N_SLOTS * len(LABELS)  # the separator's 54-d query: 3 slots x 18 classes, slot-major
VALID_METADATA = "metadata/valid.json"
DEV_TEST = "synthesized/test"
SEGMENT_TRIES = 20


# ---------------------------------------------------------------------------------------------------------------------
# Label vectors (official ``_get_label_vector``: 'stack' [3, C], 'concat' [3 C], 'multihot' [C]; silence 'onehot'
# makes it class 18 of C = 19 (tagger), 'zeros' leaves its row empty with C = 18 (separator query)).


def class_index(label: str) -> int:
    """Index of a label in ``TAGGER_CLASSES`` (silence = 18)."""
    try:
        return LABEL_INDEX[label]
    except KeyError:
        raise ValueError(f"unknown Task 4 label {label!r}; expected one of {', '.join(TAGGER_CLASSES)}") from None


def _columns(silence: str) -> int:
    if silence == "onehot":
        return len(TAGGER_CLASSES)
    if silence == "zeros":
        return len(LABELS)
    raise ValueError(f"silence mode {silence!r}: choose 'onehot' or 'zeros'")


def label_vector(labels: list[str], mode: str = "stack", silence: str = "onehot") -> torch.Tensor:
    """One-hot rows of ``labels`` in the official layouts: 'stack' [n, C], 'concat' [n C], 'multihot' [C]."""
    rows = torch.zeros(len(labels), _columns(silence))
    for slot, label in enumerate(labels):
        index = class_index(label)
        if index < rows.shape[1]:  # silence in 'zeros' mode stays an empty row
            rows[slot, index] = 1.0
    if mode == "stack":
        return rows
    if mode == "concat":
        return rows.flatten()
    if mode == "multihot":
        return rows.amax(0) if len(labels) else rows.sum(0)
    raise ValueError(f"label vector mode {mode!r}: choose 'stack', 'concat' or 'multihot'")


def labels_from_vector(vector: torch.Tensor, mode: str = "stack", silence: str = "onehot") -> list[str]:
    """Names from a label vector or per-slot scores: the argmax of each slot, and in 'zeros' mode an all-zero slot is
    silence. 'multihot' only says which classes are present (> 0.5), in class order: slots and counts are lost."""
    v = torch.as_tensor(vector, dtype=torch.float32)
    columns = _columns(silence)
    if mode == "multihot":
        if v.shape != (columns,):
            raise ValueError(f"a multihot vector in {silence!r} mode has shape ({columns},), got {tuple(v.shape)}")
        return [TAGGER_CLASSES[i] for i in torch.nonzero(v > 0.5).flatten().tolist()]
    if mode == "concat":
        if v.ndim != 1 or v.numel() % columns:
            raise ValueError(f"a concat vector in {silence!r} mode has n x {columns} entries, got {tuple(v.shape)}")
        v = v.reshape(-1, columns)
    elif mode != "stack":
        raise ValueError(f"label vector mode {mode!r}: choose 'stack', 'concat' or 'multihot'")
    elif v.ndim != 2 or v.shape[1] != columns:
        raise ValueError(f"a stack vector in {silence!r} mode has shape (n, {columns}), got {tuple(v.shape)}")
    names = [TAGGER_CLASSES[i] for i in v.argmax(1).tolist()]
    if silence == "zeros":
        names = [name if row.any() else SILENCE for row, name in zip(v, names)]
    return names


def pad_labels(labels: list[str]) -> list[str]:
    """``labels`` filled up to the 3 slots with silence."""
    if len(labels) > N_SLOTS:
        raise ValueError(f"{len(labels)} labels {labels} do not fit the {N_SLOTS} output slots")
    return [*labels, *[SILENCE] * (N_SLOTS - len(labels))]


def tagger_targets(labels: list[str]) -> torch.Tensor:
    """Class indices ``[3]`` (silence = 18) of the tagger's per-slot cross-entropy."""
    return torch.tensor([class_index(label) for label in pad_labels(labels)])


def separator_query(labels: list[str]) -> torch.Tensor:
    """The separator's 54-d query: silence slots moved last (as the official S5 chain orders them), one-hot per slot
    over the 18 classes, silence as zeros, slots concatenated."""
    ordered = sorted(pad_labels(labels), key=lambda name: name == SILENCE)
    return label_vector(ordered, "concat", "zeros")


# ---------------------------------------------------------------------------------------------------------------------
# The dev-test set (official ``mode: waveform``): mixtures in ``soundscape/``, dry references in ``oracle_target/``.

_REFERENCE_TAIL = re.compile(r"(?:_(\d+))?_(.+)")  # after the soundscape name: [_<number>]_<label>


@dataclass(frozen=True)
class DevTestScene:
    name: str
    mixture: Path
    references: tuple[Path, ...] = ()
    labels: tuple[str, ...] = ()


def match_references(names: list[str], files: list[Path]) -> dict[str, list[tuple[Path, str]]]:
    """Assign each reference ``<soundscape>_<number>_<label>.wav`` or ``<soundscape>_<label>.wav`` to its soundscape.

    The label must be one of the 18 classes; when soundscape names are prefixes of one another (``mix_1``, ``mix_1_0``)
    the longest name that leaves a valid tail wins. ``mix_10_Speech`` never matches ``mix_1``: a ``_`` must follow it.
    """
    known = set(names)
    matched: dict[str, list[tuple[Path, str]]] = {name: [] for name in names}
    for path in sorted(files):
        stem = path.stem
        prefixes = [stem[:i] for i in range(len(stem) - 1, 0, -1) if stem[i] == "_" and stem[:i] in known]
        # a "_" follows every prefix, so the tail pattern always matches; only its label can be wrong
        splits = [(prefix, _REFERENCE_TAIL.fullmatch(stem[len(prefix) :]).group(2)) for prefix in prefixes]
        valid = [(prefix, label) for prefix, label in splits if label in LABELS]
        if valid:
            prefix, label = valid[0]
            matched[prefix].append((path, label))
        elif splits:
            prefix, label = splits[0]
            raise AudioError(
                path, f"reference of {prefix}.wav with unknown label {label!r}; expected one of {', '.join(LABELS)}"
            )
        else:
            raise AudioError(
                path, "reference without its mixture: no soundscape/<name>.wav for <name>_<number>_<label>.wav"
            )
    return matched


def scan_dev_test(folder: str | os.PathLike, references: bool = True) -> list[DevTestScene]:
    """Scenes of a ``synthesized/test`` folder, sorted by name; ``references=False`` for sets without
    ``oracle_target/`` (the evaluation set)."""
    folder = Path(folder)
    soundscape = folder / "soundscape"
    if not soundscape.is_dir():
        raise FileNotFoundError(f"{soundscape}: missing folder (expected {folder}/soundscape/*.wav)")
    mixtures = sorted(soundscape.glob("*.wav"))
    if not mixtures:
        raise FileNotFoundError(f"{soundscape}: no .wav files")
    if not references:
        return [DevTestScene(p.stem, p) for p in mixtures]
    oracle = folder / "oracle_target"
    if not oracle.is_dir():
        raise FileNotFoundError(f"{oracle}: missing folder (expected dry references <soundscape>_<n>_<label>.wav)")
    matched = match_references([p.stem for p in mixtures], list(oracle.glob("*.wav")))
    scenes = []
    for path in mixtures:
        refs = matched[path.stem]
        if len(refs) > N_SLOTS:
            raise AudioError(path, f"has {len(refs)} references in {oracle}, more than the {N_SLOTS} output slots")
        scenes.append(DevTestScene(path.stem, path, tuple(p for p, _ in refs), tuple(label for _, label in refs)))
    return scenes


class DevTestSet(Dataset):
    """The dev-test mixtures ``[4, S]`` with their dry references zero-padded to 3 slots ``[3, S]``."""

    def __init__(self, folder: str | os.PathLike, references: bool = True):
        self.references = references
        self.scenes = scan_dev_test(folder, references)

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, i: int) -> dict:
        scene = self.scenes[i]
        mixture = read_audio(scene.mixture, channels=MIX_CHANNELS, sample_rate=SAMPLE_RATE)
        item = {"mixture": mixture, "name": scene.name}
        if not self.references:
            return item
        dry = torch.zeros(N_SLOTS, mixture.shape[-1])
        for slot, path in enumerate(scene.references):
            ref = read_audio(path, channels=1, sample_rate=SAMPLE_RATE)[0]
            if ref.shape[-1] != mixture.shape[-1]:
                raise AudioError(path, f"has {ref.shape[-1]} samples but {scene.mixture} has {mixture.shape[-1]}")
            dry[slot] = ref
        return item | {"dry_sources": dry, "labels": pad_labels(list(scene.labels))}


# ---------------------------------------------------------------------------------------------------------------------
# Scenes: drawn here by the baseline's on-the-fly rules (official ``mode: generate``), written in the scene schema of
# ``metadata/valid.json`` and rendered by :func:`asdzoo.data.synth_t4.render_scene` (SpAudSyn's mixing), so training
# scenes, validation scenes and the built-in test set are mixed by one function.


@dataclass(frozen=True)
class SynthSettings:
    """The baseline's training-scene settings (both train configs); only the event count differs by model."""

    event_range: tuple[int, int] = (1, 3)  # separator: "does not train with 0 SEs"; tagger: (0, 3)
    snr_range: tuple[float, float] = (5.0, 20.0)  # target wet level over the background, dB
    interference_range: tuple[int, int] = (0, 2)
    interference_snr_range: tuple[float, float] = (0.0, 15.0)
    ref_db: float = REF_DB  # background level, dB re full scale (mean square over channels)
    duplicate_rate: float = 0.5  # chance that a scene of >= 2 events repeats a class ("dupse")
    duplicate_min_angle: float = 60.0  # degrees between same-class sources
    max_duplicates: int = 2
    seconds: float = 10.0

    @property
    def samples(self) -> int:
        return int(round(self.seconds * SAMPLE_RATE))


_FOLDERS = {"foreground": "sound_event", "interference": "interference", "background": "noise"}


def _wavs(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.wav"))


def _require_dir(folder: Path, expected: str) -> None:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: missing folder (expected {expected})")


def _checked_length(path: Path, channels: int, min_frames: int = 1) -> int:
    """Samples of a source file whose header fits the scene (32 kHz, channel count, long enough)."""
    info = audio_info(path)
    if info.samplerate != SAMPLE_RATE:
        raise AudioError(path, f"sample rate is {info.samplerate} Hz, expected {SAMPLE_RATE} Hz")
    if info.channels != channels:
        raise AudioError(path, f"expected {channels} channel(s), got {info.channels}")
    if info.frames < min_frames:
        raise AudioError(path, f"has {info.frames} samples, needs at least {min_frames}")
    return info.frames


class SourcePool:
    """The files of one split (``train`` or ``valid``) that scenes are drawn from: listed once, sorted (a seed means the
    same scene on every machine) and header-checked, so a bad file is named before training starts rather than deep
    in a worker. Room files are loaded when first used and kept (also for rendering)."""

    def __init__(self, root: str | os.PathLike, split: str = "train", seconds: float = 10.0):
        self.root = Path(root)
        self.split = split
        self.dirs = {role: f"{folder}/{split}" for role, folder in _FOLDERS.items()}
        self.events = self._classes("foreground", "<Class>/*.wav: mono dry events")
        unknown = sorted(set(self.events) - set(LABELS))
        if unknown:
            folder = self.root / self.dirs["foreground"] / unknown[0]
            raise ValueError(f"{folder}: {unknown[0]!r} is not a Task 4 class ({', '.join(LABELS)})")
        self.interference = self._classes("interference", "<category>/*.wav: mono interferers")
        noise = self.root / self.dirs["background"]
        _require_dir(noise, "4-channel FOA background *.wav")
        clip = int(round(seconds * SAMPLE_RATE))
        self.noise = [(self._relative(p, "background"), _checked_length(p, MIX_CHANNELS, clip)) for p in _wavs(noise)]
        if not self.noise:
            raise FileNotFoundError(f"{noise}: no .wav files (4-channel FOA backgrounds)")
        rooms = self.root / "room_ir" / split
        _require_dir(rooms, "one file of FOA impulse responses per room: official .sofa or asdzoo .npz")
        self.rooms = [p.relative_to(self.root).as_posix() for p in sorted(rooms.iterdir()) if p.suffix in ROOM_FILES]
        if not self.rooms:
            raise FileNotFoundError(f"{rooms}: no room files ({' or '.join(ROOM_FILES)})")
        self.room_cache: dict[str, RoomIRs] = {}

    def _relative(self, path: Path, role: str) -> str:
        return path.relative_to(self.root / self.dirs[role]).as_posix()

    def _classes(self, role: str, expected: str) -> dict[str, list[tuple[str, int]]]:
        folder = self.root / self.dirs[role]
        _require_dir(folder, expected)
        classes = {
            d.name: [(self._relative(p, role), _checked_length(p, 1)) for p in _wavs(d)]
            for d in sorted(folder.iterdir())
            if d.is_dir() and not d.name.startswith(".")
        }
        classes = {name: files for name, files in classes.items() if files}
        if not classes:
            raise FileNotFoundError(f"{folder}: no .wav files in its class folders ({expected})")
        return classes

    def has_sound(self, role: str, file: str, start: int, frames: int) -> bool:
        """Whether a segment holds any signal: SpAudSyn peak-normalises every segment, and a silent one (the built-in
        impulsive sources have digital silence between hits) would turn into NaN."""
        segment, _ = sf.read(self.root / self.dirs[role] / file, start=start, frames=frames, dtype="float32")
        return bool(np.abs(segment).max(initial=0.0) > 0)

    def room(self, file: str) -> RoomIRs:
        if file not in self.room_cache:
            self.room_cache[file] = checked_room(self.root / file)
        return self.room_cache[file]


def checked_room(path: Path) -> RoomIRs:
    """A room file fit for the scenes (32 kHz, 4 channels); every fault names the file. A SOFA room's responses are
    read when used, and a non-finite one is named then."""
    room = load_room(path)
    if room.sr != SAMPLE_RATE:
        raise AudioError(path, f"room responses at {room.sr} Hz, expected {SAMPLE_RATE} Hz")
    shape = tuple(room.irs.shape)
    if len(shape) != 3 or shape[1] != MIX_CHANNELS:
        raise AudioError(path, f"expected {MIX_CHANNELS}-channel FOA responses [positions, 4, samples], got {shape}")
    return room


def unit_vectors(directions: np.ndarray) -> np.ndarray:
    """``[P, 3]`` unit vectors (x front, y left, z up) of az/el directions ``[P, 2]`` in degrees (foa convention)."""
    az, el = np.deg2rad(np.asarray(directions, dtype=float)).T
    return np.stack([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)], axis=-1)


def angles_between(directions: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Great-circle angles (degrees) ``[P, Q]`` between az/el directions ``[P, 2]`` and ``[Q, 2]``."""
    return np.degrees(np.arccos(np.clip(unit_vectors(directions) @ unit_vectors(others).T, -1.0, 1.0)))


def _recording(file: str) -> str:
    """What a same-class duplicate must not share: files below one sub-folder of a class folder (a speaker, a session)
    are one recording, files directly in it only themselves (official ``dupse_exclusion_folder_depth: 1``)."""
    below_class = file.split("/")[1:]  # <Class>/...
    return below_class[0] if len(below_class) > 1 else file


def _seconds(samples: int) -> float:
    """A sample position as seconds that reads back as that sample by ``int(t * sr)`` and ``round(t * sr)`` alike
    (a quarter sample late: ``samples / sr`` alone can land a hair below and truncate to the sample before)."""
    return (samples + 0.25) / SAMPLE_RATE


def draw_scene(pool: SourcePool, settings: SynthSettings, rng: np.random.Generator, name: str) -> dict:
    """A random scene by the baseline's rules (``DatasetS3._get_item_generate`` with SpAudSyn), as a scene dict of
    the ``metadata/valid.json`` schema (:mod:`asdzoo.data.synth_t4`).

    One room per scene, every source at a random position of it. Events get distinct classes, except that a scene of
    n >= 2 events turns, with ``duplicate_rate``, 1..min(n-1, max_duplicates) of them into further sources of classes
    already drawn, each more than ``duplicate_min_angle`` from every source of its class and from another recording
    (a class without one reuses a recording: small sets). The order of targets is shuffled (official
    ``shuffle_label``); interferers and a background follow. A source is at most one clip of its file, from a random
    offset, at a random onset; the background starts at a whole second, as in SpAudSyn.
    """
    samples = settings.samples
    room_file = pool.rooms[rng.integers(len(pool.rooms))]
    directions = pool.room(room_file).directions

    def event(role: str, label: str, files: list[tuple[str, int]], position: int, snr_range) -> dict:
        for _ in range(SEGMENT_TRIES):  # a segment without sound is drawn again (not in the official code)
            file, frames = files[rng.integers(len(files))]
            length = min(frames, samples)
            start = int(rng.integers(frames - length + 1))
            if pool.has_sound(role, file, start, length):
                break
        else:
            raise ValueError(f"{pool.root / pool.dirs[role]}: {SEGMENT_TRIES} random segments of {label} were silent")
        onset = int(rng.integers(samples - length + 1))
        return {
            "label": label,
            "source_file": file,
            "source_time": _seconds(start),
            "event_time": _seconds(onset),
            "event_duration": length / SAMPLE_RATE,
            "rir_index": int(position),
            "event_position": [unit_vectors(directions[position][None])[0].tolist()],
            "snr": float(rng.uniform(*snr_range)),
            "role": role,
        }

    n_events = int(rng.integers(settings.event_range[0], settings.event_range[1] + 1))
    n_duplicates = 0
    if n_events >= 2 and rng.random() < settings.duplicate_rate:
        n_duplicates = int(rng.integers(1, min(n_events - 1, settings.max_duplicates) + 1))
    classes = sorted(pool.events)
    originals = [classes[c] for c in rng.choice(len(classes), n_events - n_duplicates, replace=False)]
    positions = len(directions)
    targets = [event("foreground", c, pool.events[c], rng.integers(positions), settings.snr_range) for c in originals]
    for _ in range(n_duplicates):
        label = originals[rng.integers(len(originals))]
        same = [e for e in targets if e["label"] == label]
        taken = directions[[e["rir_index"] for e in same]]
        far = np.flatnonzero((angles_between(directions, taken) > settings.duplicate_min_angle).all(axis=1))
        if not far.size:  # a room with few positions: this duplicate is left out rather than placed too close
            continue
        used = {_recording(e["source_file"]) for e in same}
        files = [f for f in pool.events[label] if _recording(f[0]) not in used] or pool.events[label]
        targets.append(event("foreground", label, files, far[rng.integers(far.size)], settings.snr_range))
    targets = [targets[i] for i in rng.permutation(len(targets))]

    categories = sorted(pool.interference)
    interferers = []
    low, high = settings.interference_range
    for _ in range(int(rng.integers(low, high + 1))):
        category = categories[rng.integers(len(categories))]
        files, snr_range = pool.interference[category], settings.interference_snr_range
        interferers.append(event("interference", category, files, rng.integers(positions), snr_range))

    noise_file, noise_frames = pool.noise[rng.integers(len(pool.noise))]
    spare_seconds = (noise_frames - samples) // SAMPLE_RATE
    background = {
        "label": None,
        "source_file": noise_file,
        "source_time": int(rng.integers(spare_seconds + 1)),
        "event_time": 0,
        "event_duration": settings.seconds,
        "event_position": None,
        "snr": 0,
        "role": "background",
    }
    config = {"duration": settings.seconds, "sr": SAMPLE_RATE, "ref_db": settings.ref_db}
    config |= {"direct_range_ms": list(DIRECT_RANGE_MS)} | {f"{role}_dir": d for role, d in pool.dirs.items()}
    return {
        "name": name,
        "config": config,
        "room": {"file": room_file},
        "fg_events": targets,
        "int_events": interferers,
        "bg_events": [background],
    }


def scene_item(scene: dict, root: str | os.PathLike, rooms: dict | None = None) -> dict:
    """Render a scene dict into a dataset item; ``rooms`` caches room files by path."""
    mixture, references = render_scene(scene, root, rooms)
    if not np.isfinite(mixture).all():
        files = [e["source_file"] for e in scene["fg_events"] + scene["int_events"] + scene["bg_events"]]
        raise ValueError(f"scene {scene['name']}: non-finite samples; one of its files holds NaN or silence: {files}")
    dry = torch.zeros(N_SLOTS, mixture.shape[-1])
    for slot, (_, reference) in enumerate(references):
        dry[slot] = torch.from_numpy(reference)
    return {
        "mixture": torch.from_numpy(mixture),
        "dry_sources": dry,
        "labels": pad_labels([label for label, _ in references]),
        "name": scene["name"],
        "scene": scene,
    }


class GeneratedSet(Dataset):
    """Training scenes drawn on the fly; ``dataset_length`` scenes per epoch.

    Key ``k`` is scene ``k % length`` of epoch ``k // length`` (see :class:`EpochSampler`), drawn from a generator
    seeded with (seed, epoch, index): the same in every worker and run, different in every epoch.
    """

    def __init__(self, pool: SourcePool, settings: SynthSettings, dataset_length: int, seed: int = 0):
        if dataset_length < 1:
            raise ValueError(f"dataset_length must be positive, got {dataset_length}")
        if len(pool.events) < settings.event_range[1]:
            raise ValueError(
                f"{pool.root / pool.dirs['foreground']}: {len(pool.events)} class folder(s) with files, but scenes of "
                f"up to {settings.event_range[1]} events need that many distinct classes"
            )
        self.pool, self.settings, self.length, self.seed = pool, settings, dataset_length, seed

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int, epoch: int = 0) -> dict:
        rng = np.random.default_rng([self.seed, epoch, index])
        return draw_scene(self.pool, self.settings, rng, f"scene_e{epoch}_{index:08d}")

    def __getitem__(self, key: int) -> dict:
        epoch, index = divmod(int(key), self.length)
        return scene_item(self.scene(index, epoch), self.pool.root, self.pool.room_cache)


class EpochSampler(ResumableSampler):
    """Keys ``epoch * size + i`` for a :class:`GeneratedSet` of ``size`` scenes: the epoch travels with each key, so
    workers (persistent or not) need no shared state. Lightning calls ``set_epoch`` before every epoch; a run resumed
    mid-epoch continues the interrupted one (:class:`ResumableSampler`)."""

    def order(self, epoch: int) -> list[int]:
        return list(range(epoch * self.size, (epoch + 1) * self.size))


def check_scene_files(scene: dict, root: Path) -> None:
    """Header checks of every file a scene names (rate, channels, long enough for its segment), so that a bad
    ``valid.json`` entry is named when the set is opened."""
    conf = scene["config"]
    sr, samples = conf["sr"], int(round(conf["duration"] * conf["sr"]))
    if sr != SAMPLE_RATE:
        raise ValueError(f"scene {scene['name']}: sample rate {sr}, expected {SAMPLE_RATE}")
    for event in scene["fg_events"] + scene["int_events"]:
        folder = conf["foreground_dir"] if event["role"] == "foreground" else conf["interference_dir"]
        end = int(round(event["source_time"] * sr)) + int(round(event["event_duration"] * sr))
        _checked_length(root / folder / event["source_file"], 1, end)
    for event in scene["bg_events"]:
        start = int(round(event["source_time"] * sr))
        _checked_length(root / conf["background_dir"] / event["source_file"], MIX_CHANNELS, start + samples)
    if not (root / scene["room"]["file"]).is_file():
        raise FileNotFoundError(f"{root / scene['room']['file']}: room IR file of scene {scene['name']} not found")


# ---------------------------------------------------------------------------------------------------------------------
# The official metadata/valid.json: a list of {"metadata_path": ...}, each a per-scene SpAudSyn metadata file

SCENE_KEYS = {"name", "config", "room", "fg_events", "int_events", "bg_events"}  # asdzoo.data.synth_t4's schema
_DATA_FOLDERS = (*_FOLDERS.values(), "room_ir")


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing {what}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def _under_root(path: str, source: Path) -> str:
    """A path of an official metadata file relative to the data root. The files name paths from the baseline's working
    directory (``data/dev_set/room_ir/train/place203.sofa`` in SpAudSyn's ``example/metadata.json``); assumed: the
    part from the first data folder (sound_event, interference, noise, room_ir) on is the path under the root."""
    parts = PurePosixPath(path).parts
    for i, part in enumerate(parts):
        if part in _DATA_FOLDERS:
            return "/".join(parts[i:])
    raise ValueError(f"{source}: path {path!r} is in none of the data folders {', '.join(_DATA_FOLDERS)}")


def _spaudsyn_event(event: dict, positions: np.ndarray, sr: int, source: Path) -> dict:
    """A target or interferer with its segment in exact samples and the room measurement at its position."""
    point = np.asarray(event["event_position"], dtype=float)
    if point.shape != (1, 3):
        raise ValueError(f"{source}: {event['source_file']} at {event['event_position']}: not one static [[x, y, z]]")
    found = np.flatnonzero(np.isclose(positions, point, atol=1e-6).all(axis=1))
    if found.size != 1:
        raise ValueError(
            f"{source}: position {point[0].tolist()} of {event['source_file']} matches {found.size} of the room's "
            f"{len(positions)} SourcePositions, expected 1"
        )
    if event["role"] == "foreground" and event["label"] not in LABELS:
        raise ValueError(f"{source}: target {event['source_file']} has label {event['label']!r}, not a Task 4 class")
    start, count = int(event["source_time"] * sr), int(event["event_duration"] * sr)
    return {**event, "source_time": _seconds(start), "event_duration": _seconds(count), "rir_index": int(found[0])}


def _spaudsyn_background(event: dict, sr: int, source: Path) -> dict:
    if event["source_time"] is None:
        raise ValueError(
            f"{source}: background {event['source_file']} has source_time null (SpAudSyn then repeats a file shorter "
            "than the scene), which is not supported"
        )
    return {**event, "source_time": _seconds(int(event["source_time"] * sr))}


def scene_from_spaudsyn(metadata: dict, name: str, room_of: Callable[[str], RoomIRs], source: Path) -> dict:
    """One official validation scene, a per-scene SpAudSyn metadata file (``source``), in asdzoo's scene schema, so
    that :func:`render_scene` rebuilds it as the baseline does (``DatasetS3._get_item_metadata``:
    ``SpAudSyn.from_metadata(path)`` then ``synthesize``). ``room_of(file)`` opens a room file under the root.

    Taken from the sources (``nttcslab/SpAudSyn`` ``src/spatial_audio_synthesizer.py``, ``src/room.py``,
    ``example/metadata.json``; ``nttcslab/dcase2026_task4_baseline`` ``src/datamodules/dataset.py``): the keys
    ``config`` {duration, sr, ref_db, foreground_dir, interference_dir, background_dir}, ``room`` {main
    "SofaRoom.from_metadata", args.metadata {sofa_path, direct_range_ms}} and ``fg_events`` / ``int_events`` /
    ``bg_events`` of {label, source_file (relative to its folder), source_time, event_time, event_duration,
    event_position [[x, y, z]], snr, role}; targets and interferers are mixed sorted by ``event_time``, which also
    orders the labels (no shuffling in ``mode: metadata``); an event's RIR is the room measurement whose
    ``SourcePosition`` is ``np.isclose(..., atol=1e-6)`` to its position; segments are read by ``librosa.load`` with
    ``offset`` / ``duration``, i.e. from sample ``int(source_time * sr)`` for ``int(event_duration * sr)`` samples
    (librosa 0.11 ``__soundfile_load``), which the times written here reproduce exactly.

    Assumed or left out: paths are rebased onto the root (:func:`_under_root`); a background with ``source_time``
    null, moving sources and rooms other than ``SofaRoom`` are refused with the file named; sources are read as
    float64 (librosa gives float32: differences ~1e-7 relative), a file at another rate is refused rather than
    resampled, and an all-zero segment fails as non-finite where SpAudSyn would add silence.
    """
    try:
        conf, room = metadata["config"], metadata["room"]
        if not str(room["main"]).endswith("SofaRoom.from_metadata"):
            raise ValueError(f"{source}: room {room['main']!r}: only SpAudSyn's SofaRoom rooms are read")
        room_file = _under_root(room["args"]["metadata"]["sofa_path"], source)
        sr = conf["sr"]
        folders = ("foreground_dir", "interference_dir", "background_dir")
        config = {"duration": conf["duration"], "sr": sr, "ref_db": conf["ref_db"]}
        config |= {"direct_range_ms": list(room["args"]["metadata"]["direct_range_ms"])}
        config |= {key: _under_root(conf[key], source) for key in folders if conf.get(key)}
        positions = room_of(room_file).positions
        if positions is None:
            raise ValueError(f"{source}: room {room_file} has no SourcePosition to find event positions in (use .sofa)")
        by_onset = {role: sorted(metadata[f"{role}_events"], key=lambda e: e["event_time"]) for role in ("fg", "int")}
        return {
            "name": name,
            "config": config,
            "room": {"file": room_file},
            "fg_events": [_spaudsyn_event(e, positions, sr, source) for e in by_onset["fg"]],
            "int_events": [_spaudsyn_event(e, positions, sr, source) for e in by_onset["int"]],
            "bg_events": [_spaudsyn_background(e, sr, source) for e in metadata["bg_events"]],
        }
    except (KeyError, TypeError) as err:
        raise ValueError(f"{source}: not SpAudSyn scene metadata ({type(err).__name__}: {err})") from None


class ValidationSet(Dataset):
    """The scenes of ``metadata/valid.json`` (official ``mode: metadata``), rendered from the files they name.

    The file is either the scene list that ``asdzoo.data.synth_t4`` writes or, as in the official dev set, a list of
    ``{"metadata_path": ...}`` entries, each a per-scene SpAudSyn metadata file relative to ``metadata/`` (baseline
    ``dataset.py``), converted by :func:`scene_from_spaudsyn` and named ``soundscape_<NNNN>`` as the baseline names
    them. Every file the scenes name is checked, and every room opened, here."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        path = self.root / VALID_METADATA
        entries = _read_json(path, "validation metadata")
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"{path}: expected a non-empty list of scenes")
        self.rooms: dict[str, RoomIRs] = {}
        if all(isinstance(e, dict) and "metadata_path" in e for e in entries):
            files = [path.parent / e["metadata_path"] for e in entries]
            scenes = [
                scene_from_spaudsyn(_read_json(file, "SpAudSyn scene metadata"), f"soundscape_{i:04d}", self.room, file)
                for i, file in enumerate(files)
            ]
        elif all(isinstance(s, dict) and s.keys() >= SCENE_KEYS for s in entries):
            scenes = entries
        else:
            raise ValueError(
                f"{path}: expected a list of scenes with keys {sorted(SCENE_KEYS)} (asdzoo.data.synth_t4) or of "
                '{"metadata_path": ...} entries (the official list of SpAudSyn metadata files)'
            )
        for scene in scenes:
            check_scene_files(scene, self.root)
            self.room(scene["room"]["file"])
        self.scenes = scenes

    def room(self, file: str) -> RoomIRs:
        """A room file of the scenes (relative to the root), opened and checked once."""
        if file not in self.rooms:
            self.rooms[file] = checked_room(self.root / file)
        return self.rooms[file]

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, i: int) -> dict:
        return scene_item(self.scenes[i], self.root, self.rooms)


# ---------------------------------------------------------------------------------------------------------------------
# Batches and LightningDataModules


def collate_scenes(items: list[dict]) -> dict:
    """Stack mixtures (and dry sources) ``[B, ...]``; labels give ``classes`` ``[B, 3]`` (tagger targets, silence 18)
    and ``query`` ``[B, 54]`` (separator); ``names`` and, for generated scenes, ``scenes`` stay lists."""
    lengths = {it["mixture"].shape[-1] for it in items}
    if len(lengths) > 1:
        raise ValueError(
            f"mixtures of different lengths {sorted(lengths)} in one batch: {[it['name'] for it in items]}"
        )
    batch = {"mixture": torch.stack([it["mixture"] for it in items]), "names": [it["name"] for it in items]}
    if "labels" in items[0]:
        batch["dry_sources"] = torch.stack([it["dry_sources"] for it in items])
        batch["labels"] = [it["labels"] for it in items]
        batch["classes"] = torch.stack([tagger_targets(it["labels"]) for it in items])
        batch["query"] = torch.stack([separator_query(it["labels"]) for it in items])
    if "scene" in items[0]:
        batch["scenes"] = [it["scene"] for it in items]
    return batch


class Task4DataModule(L.LightningDataModule):
    """Train on scenes mixed on the fly from ``<root>/{sound_event,interference,noise,room_ir}/train``, validate on
    ``metadata/valid.json`` and test on ``synthesized/test`` when they exist.

    ``dataset_length`` and ``batch_size`` default to the official config of the model; ``segment_seconds`` shortens
    the generated clips (e.g. for CPU tests). Use :class:`TaggerDataModule` or :class:`SeparatorDataModule`.
    """

    event_range: tuple[int, int]
    default_length: int
    default_batch_size: int

    def __init__(
        self,
        root: str,
        batch_size: int | None = None,
        num_workers: int = 0,
        dataset_length: int | None = None,
        segment_seconds: float = 10.0,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.root = root
        self.batch_size = batch_size or self.default_batch_size
        self.num_workers = num_workers
        self.dataset_length = dataset_length or self.default_length
        self.settings = SynthSettings(event_range=self.event_range, seconds=segment_seconds)
        self.seed = seed
        self.train_set = self.val_set = self.test_set = None

    def setup(self, stage: str | None = None) -> None:
        root = Path(self.root)
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = GeneratedSet(
                SourcePool(root, "train", self.settings.seconds), self.settings, self.dataset_length, self.seed
            )
        if stage in (None, "fit", "validate") and self.val_set is None and (root / VALID_METADATA).is_file():
            self.val_set = ValidationSet(root)
        if stage in (None, "test", "predict") and self.test_set is None and (root / DEV_TEST).is_dir():
            self.test_set = DevTestSet(root / DEV_TEST)

    def _loader(self, dataset: Dataset | None) -> DataLoader | list:
        if dataset is None:
            return []
        return DataLoader(dataset, self.batch_size, num_workers=self.num_workers, collate_fn=collate_scenes)

    def train_dataloader(self) -> StatefulDataLoader:
        sampler = EpochSampler(len(self.train_set))
        return train_loader(
            self.train_set, self.batch_size, sampler, num_workers=self.num_workers, collate_fn=collate_scenes
        )

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader | list:
        return self._loader(self.test_set)


class TaggerDataModule(Task4DataModule):
    """For the tagger: 0-3 events (official ``m2dat_*`` configs: ``nevent_range [0, 3]``, batch 32, 25088 scenes);
    targets are ``batch['classes']``."""

    event_range = (0, 3)
    default_length = 25088
    default_batch_size = 32


class SeparatorDataModule(Task4DataModule):
    """For the label-queried separator: 1-3 events (``resunetk_capisdr``: batch 4, 10112 scenes); inputs
    ``batch['mixture']`` and ``batch['query']``, targets ``batch['dry_sources']``."""

    event_range = (1, 3)
    default_length = 10112
    default_batch_size = 4
