"""DCASE 2026 Task 4 data: label vectors, dev-test matching, scenes mixed on the fly, validation, DataModules.

Fixture trees are written here with soundfile (and the room writer of ``asdzoo.audio.foa``); generated mixtures are
checked against an independent decomposition: least squares over the files the scene names gives each part's gain,
from which the SNRs are measured and the references predicted in closed form.
"""

import dataclasses
import itertools
import json
import re
import shutil
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import fftconvolve

from asdzoo.audio.foa import foa_gains, load_room_irs, save_room_irs
from asdzoo.data.s5 import LABELS, SILENCE, TAGGER_CLASSES
from asdzoo.data.task4 import (
    QUERY_DIM,
    DevTestSet,
    EpochSampler,
    GeneratedSet,
    SeparatorDataModule,
    SourcePool,
    SynthSettings,
    TaggerDataModule,
    ValidationSet,
    angles_between,
    collate_scenes,
    draw_scene,
    label_vector,
    labels_from_vector,
    match_references,
    separator_query,
    tagger_targets,
)

SR = 32000
SECONDS = 0.5
CLIP = int(SR * SECONDS)
# 12 positions around the array; direct sound at sample DIRECT + 3 p, late tail only from 1700 samples after it, so
# the official dry window (6 ms before to 50 ms after the W peak) holds the direct spike alone
POSITIONS = np.array([[az, (-20.0, 0.0, 20.0)[i % 3]] for i, az in enumerate(range(0, 360, 30))])
DIRECT = 40
EVENTS = {  # file (relative to sound_event/train) -> seconds; Speech has two recordings: a.wav and the spk1 folder
    "Speech/a.wav": 0.3,
    "Speech/spk1/b.wav": 0.7,
    "Speech/spk1/c.wav": 0.4,
    "Dishes/d.wav": 0.25,
    "Cough/e.wav": 0.6,
    "Cough/f.wav": 0.2,
    "Doorbell/g.wav": 0.35,
}
INTERFERERS = {"Hammer/h.wav": 0.3, "Wind/w.wav": 0.8}


def write(path, data, sr=SR, subtype="FLOAT"):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.atleast_2d(data).T, sr, subtype=subtype, format="WAV")


def direct_amplitude(room: int, position: int) -> float:
    return 0.5 + 0.04 * position + 0.1 * room


def write_room(path, room: int, rng, sr=SR):
    length = 2400
    irs = np.zeros((len(POSITIONS), 4, length))
    for p, (az, el) in enumerate(POSITIONS):
        peak = DIRECT + 3 * p
        irs[p, :, peak] = direct_amplitude(room, p) * foa_gains(az, el)
        tail = length - (peak + 1700)
        irs[p, :, peak + 1700 :] = 0.02 * rng.standard_normal((4, tail)) * np.exp(-np.arange(tail) / 200)
    save_room_irs(path, irs, POSITIONS, sr)


def build_sources(root, rng):
    for folder, files in (("sound_event", EVENTS), ("interference", INTERFERERS)):
        for file, seconds in files.items():
            n = int(seconds * SR)
            write(root / folder / "train" / file, 0.3 * rng.standard_normal(n) * np.hanning(n), subtype="PCM_16")
    for name, seconds in (("n1.wav", 2.2), ("n2.wav", 0.6)):
        write(root / "noise" / "train" / name, 0.05 * rng.standard_normal((4, int(seconds * SR))), subtype="PCM_16")
    for room in range(2):
        write_room(root / "room_ir" / "train" / f"room{room}.npz", room, rng)


def build_dev_test(folder, rng, names=("mix_1", "mix_10", "mix_1_2"), samples=8000):
    """Mixtures whose names are prefixes of one another, with references in both official patterns."""
    references = {
        "mix_1": ["mix_1_0_Speech.wav", "mix_1_Dishes.wav"],
        "mix_10": ["mix_10_0_Cough.wav", "mix_10_1_Cough.wav", "mix_10_2_Speech.wav"],
        "mix_1_2": ["mix_1_2_Doorbell.wav"],
    }
    data = {}
    for name in names:
        data[name] = rng.standard_normal((4, samples)).astype(np.float32) * 0.1
        write(folder / "soundscape" / f"{name}.wav", data[name])
        for ref in references[name]:
            data[ref] = rng.standard_normal(samples).astype(np.float32) * 0.1
            write(folder / "oracle_target" / ref, data[ref])
    return data


@pytest.fixture(scope="module")
def t4_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("t4")
    rng = np.random.default_rng(0)
    build_sources(root, rng)
    build_dev_test(root / "synthesized" / "test", rng)
    return root


@pytest.fixture(scope="module")
def pool(t4_root):
    return SourcePool(t4_root, "train", SECONDS)


# ---------------------------------------------------------------------------------------------------------------------
# Label vectors


def test_label_vector_layouts_by_value():
    labels = ["Speech", SILENCE, "AlarmClock"]
    stack = label_vector(labels, "stack", "onehot")
    expected = torch.zeros(3, 19)
    expected[0, 15] = expected[1, 18] = expected[2, 0] = 1
    assert torch.equal(stack, expected)
    zeros = label_vector(labels, "stack", "zeros")
    assert zeros.shape == (3, 18) and torch.equal(zeros, expected[:, :18]) and zeros[1].sum() == 0
    assert torch.equal(label_vector(labels, "concat", "zeros"), expected[:, :18].flatten())
    multihot = label_vector(["Speech", "Speech", "Dishes", SILENCE], "multihot", "onehot")
    assert torch.nonzero(multihot).flatten().tolist() == [7, 15, 18] and multihot.sum() == 3
    assert label_vector([SILENCE] * 3, "multihot", "zeros").sum() == 0


@pytest.mark.parametrize("mode,silence", list(itertools.product(["stack", "concat", "multihot"], ["onehot", "zeros"])))
def test_label_vector_inverse_round_trip(mode, silence):
    rng = np.random.default_rng(1)
    for _ in range(50):
        labels = [TAGGER_CLASSES[i] for i in rng.integers(0, 19, 3)]
        back = labels_from_vector(label_vector(labels, mode, silence), mode, silence)
        if mode == "multihot":  # only which classes are present survives
            kept = {lab for lab in labels if silence == "onehot" or lab != SILENCE}
            assert back == sorted(kept, key=TAGGER_CLASSES.index)
        else:
            assert back == labels
    scores = torch.tensor([[0.1] * 18 + [0.9], [0.0] * 18 + [0.0]])  # per-slot scores decode by argmax
    scores[1, 4] = 0.3
    assert labels_from_vector(scores, "stack", "onehot") == [SILENCE, "Clapping"]


def test_tagger_targets_and_separator_query():
    labels = [SILENCE, "Speech", "Dishes"]
    assert tagger_targets(labels).tolist() == [18, 15, 7]
    assert tagger_targets(["Cough"]).tolist() == [5, 18, 18]
    query = separator_query(labels)  # silence moved last, 3 x 18 slot-major, silence as zeros
    assert query.shape == (QUERY_DIM,) == (54,) and query.sum() == 2
    assert query[15] == 1 and query[18 + 7] == 1 and not query[36:].any()
    assert labels_from_vector(query, "concat", "zeros") == ["Speech", "Dishes", SILENCE]


def test_unknown_label_is_named():
    with pytest.raises(ValueError, match="'Spech'"):
        label_vector(["Speech", "Spech"])
    with pytest.raises(ValueError, match="'Dog'"):
        separator_query(["Dog"])
    with pytest.raises(ValueError, match="4 labels"):
        tagger_targets(["Speech"] * 4)


# ---------------------------------------------------------------------------------------------------------------------
# Dev-test set


def test_reference_names_match_their_own_soundscape(tmp_path):
    names = ["mix_1", "mix_10", "mix_1_2"]
    files = [tmp_path / f for f in ["mix_1_0_Speech.wav", "mix_1_Dishes.wav", "mix_10_Speech.wav", "mix_1_2_Cough.wav"]]
    matched = match_references(names, files)
    got = {name: [(p.name, label) for p, label in refs] for name, refs in matched.items()}
    assert got == {
        "mix_1": [("mix_1_0_Speech.wav", "Speech"), ("mix_1_Dishes.wav", "Dishes")],
        "mix_10": [("mix_10_Speech.wav", "Speech")],  # not mix_1 with number 0
        "mix_1_2": [("mix_1_2_Cough.wav", "Cough")],  # the longest name wins over mix_1 with number 2
    }


def test_dev_test_items(tmp_path):
    data = build_dev_test(tmp_path, np.random.default_rng(2))
    dataset = DevTestSet(tmp_path)
    assert [s.name for s in dataset.scenes] == ["mix_1", "mix_10", "mix_1_2"]  # sorted by file name
    item = dataset[1]
    assert item["name"] == "mix_10" and item["labels"] == ["Cough", "Cough", "Speech"]
    assert torch.equal(item["mixture"], torch.from_numpy(data["mix_10"]))
    expected = np.stack([data[f"mix_10_{k}_{lab}.wav"] for k, lab in enumerate(["Cough", "Cough", "Speech"])])
    assert torch.equal(item["dry_sources"], torch.from_numpy(expected))
    item = dataset[2]
    assert item["labels"] == ["Doorbell", SILENCE, SILENCE] and item["dry_sources"].shape == (3, 8000)
    assert not item["dry_sources"][1:].any() and torch.equal(
        item["dry_sources"][0], torch.tensor(data["mix_1_2_Doorbell.wav"])
    )
    mixtures_only = DevTestSet(tmp_path, references=False)[0]
    assert set(mixtures_only) == {"mixture", "name"}


def _nan(path):
    data = np.full((4, 100), 0.1, dtype=np.float32)
    data[2, 50] = np.nan
    write(path, data)


DEV_TEST_FAULTS = {  # name -> (change to a good dev-test folder, file or folder named in the error)
    "mixture with 2 channels": (lambda f: write(f / "soundscape/mix_1.wav", np.zeros((2, 8000))), "mix_1.wav"),
    "mixture at 16 kHz": (lambda f: write(f / "soundscape/mix_10.wav", np.zeros((4, 8000)), sr=16000), "mix_10.wav"),
    "empty mixture": (lambda f: write(f / "soundscape/mix_1_2.wav", np.zeros((4, 0))), "mix_1_2.wav"),
    "NaN in mixture": (lambda f: _nan(f / "soundscape/mix_1.wav"), "mix_1.wav"),
    "unreadable mixture": (lambda f: (f / "soundscape/mix_10.wav").write_bytes(b"RIFF0000garbage"), "mix_10.wav"),
    "unknown label": (lambda f: write(f / "oracle_target/mix_1_3_Spech.wav", np.zeros(8000)), "mix_1_3_Spech.wav"),
    "reference without mixture": (lambda f: write(f / "oracle_target/mix_2_Pour.wav", np.zeros(8000)), "mix_2_Pour"),
    "reference too short": (lambda f: write(f / "oracle_target/mix_1_Dishes.wav", np.zeros(7999)), "mix_1_Dishes"),
    "stereo reference": (lambda f: write(f / "oracle_target/mix_1_0_Speech.wav", np.zeros((2, 8000))), "mix_1_0_Sp"),
    "4 references": (lambda f: write(f / "oracle_target/mix_10_3_Pour.wav", np.zeros(8000)), "mix_10.wav"),
    "no soundscape folder": (lambda f: shutil.rmtree(f / "soundscape"), "soundscape"),
    "no oracle_target folder": (lambda f: shutil.rmtree(f / "oracle_target"), "oracle_target"),
}


@pytest.mark.parametrize("fault", DEV_TEST_FAULTS)
def test_dev_test_faults_name_the_file(tmp_path, fault):
    build_dev_test(tmp_path, np.random.default_rng(3))
    change, named = DEV_TEST_FAULTS[fault]
    change(tmp_path)
    with pytest.raises((ValueError, FileNotFoundError), match=re.escape(named)):
        dataset = DevTestSet(tmp_path)
        [dataset[i] for i in range(len(dataset))]


# ---------------------------------------------------------------------------------------------------------------------
# Scenes: an independent decomposition of the mixture into the parts its metadata names


def decompose(item, root):
    """Least-squares gains of the scene's parts (background, then every source as file segment * RIR, placed), the
    relative residual, the SNRs those gains give (full wet signal over background, mean squares over 4 channels) and
    the references they predict (gain * W direct amplitude * segment, delayed by the direct path)."""
    scene, mixture = item["scene"], item["mixture"].double().numpy()
    conf = scene["config"]
    samples = round(conf["duration"] * SR)
    room_file = scene["room"]["file"]
    room = load_room_irs(root / room_file)
    room_id = int(room.room[-1])
    bg = scene["bg_events"][0]
    noise, _ = sf.read(
        root / conf["background_dir"] / bg["source_file"],
        start=round(bg["source_time"] * SR),
        frames=samples,
        always_2d=True,
    )
    columns, wets, predicted = [noise.T], [], []
    for event in scene["fg_events"] + scene["int_events"]:
        folder = conf["foreground_dir"] if event["role"] == "foreground" else conf["interference_dir"]
        x, _ = sf.read(
            root / folder / event["source_file"],
            start=round(event["source_time"] * SR),
            frames=round(event["event_duration"] * SR),
        )
        onset, p = round(event["event_time"] * SR), event["rir_index"]
        wet = fftconvolve(x[None], room.irs[p].astype(np.float64), axes=1)
        placed = np.zeros((4, samples))
        n = min(wet.shape[1], samples - onset)
        placed[:, onset : onset + n] = wet[:, :n]
        columns.append(placed)
        wets.append(wet)
        delayed = np.zeros(samples)
        start = onset + DIRECT + 3 * p
        delayed[start : start + len(x)] = direct_amplitude(room_id, p) * x[: max(samples - start, 0)]
        predicted.append(delayed)
    design = np.stack([c.ravel() for c in columns], axis=1)
    gains = np.linalg.lstsq(design, mixture.ravel(), rcond=None)[0]
    residual = np.linalg.norm(design @ gains - mixture.ravel()) / np.linalg.norm(mixture)
    noise_power = gains[0] ** 2 * np.mean(noise**2)
    snrs = [10 * np.log10(g**2 * np.mean(w**2) / noise_power) for g, w in zip(gains[1:], wets)]
    references = [g * r for g, r in zip(gains[1:], predicted[: len(scene["fg_events"])])]
    return residual, snrs, references, 10 * np.log10(noise_power)


BASELINE = SynthSettings()


def check_scene(item, root, settings=BASELINE):
    residual, snrs, references, noise_db = decompose(item, root)
    scene = item["scene"]
    events = scene["fg_events"] + scene["int_events"]
    assert residual < 1e-6  # the mixture is the sum of its named parts (float32 rounding only: measured 2.6e-8)
    assert abs(noise_db - settings.ref_db) < 1e-3
    for event, snr in zip(events, snrs):
        low, high = settings.snr_range if event["role"] == "foreground" else settings.interference_snr_range
        assert low <= snr <= high and abs(snr - event["snr"]) < 1e-4, (event, snr)  # measured within 1.2e-8 dB
    labels = [e["label"] for e in scene["fg_events"]]
    assert item["labels"] == labels + [SILENCE] * (3 - len(labels))
    dry = item["dry_sources"].double().numpy()
    for slot, reference in enumerate(references):
        assert np.abs(dry[slot] - reference).max() <= 1e-6 * np.abs(reference).max()  # measured 8e-8
    assert not dry[len(references) :].any()
    return np.abs(dry[: len(references)]).max() if references else 0.0


def test_generated_mixture_is_the_sum_of_its_parts_at_the_drawn_snrs(pool, t4_root):
    generated = GeneratedSet(pool, SynthSettings(seconds=SECONDS), dataset_length=8, seed=5)
    roles = Counter()
    for i in range(8):
        item = generated[i]
        assert item["mixture"].shape == (4, CLIP) and item["mixture"].dtype == torch.float32
        check_scene(item, t4_root)
        roles.update(e["role"] for e in item["scene"]["fg_events"] + item["scene"]["int_events"])
    assert roles["foreground"] >= 8 and roles["interference"] >= 1
    tagger = GeneratedSet(pool, SynthSettings(event_range=(0, 3), seconds=SECONDS), dataset_length=40, seed=5)
    empty = next(i for i in range(40) if not tagger.scene(i)["fg_events"])  # a tagger scene without events
    item = tagger[empty]
    check_scene(item, t4_root)
    assert item["labels"] == [SILENCE] * 3 and not item["dry_sources"].any() and item["mixture"].abs().max() > 0


def test_event_counts_duplicates_and_angles_over_many_draws(pool):
    for event_range in ((0, 3), (1, 3)):
        settings = SynthSettings(event_range=event_range, seconds=SECONDS)
        counts, interferers, duplicated, multi = Counter(), Counter(), 0, 0
        for i in range(300):
            scene = draw_scene(pool, settings, np.random.default_rng([9, i]), "s")
            fg = scene["fg_events"]
            counts[len(fg)] += 1
            interferers[len(scene["int_events"])] += 1
            per_class = Counter(e["label"] for e in fg)
            multi += len(fg) >= 2
            duplicated += max(per_class.values(), default=1) > 1
            assert max(per_class.values(), default=1) <= 1 + settings.max_duplicates
            directions = pool.room(scene["room"]["file"]).directions
            for a, b in itertools.combinations(fg, 2):
                if a["label"] == b["label"]:
                    angle = angles_between(directions[[a["rir_index"]]], directions[[b["rir_index"]]])[0, 0]
                    assert angle >= 60.0
                    if a["label"] == "Speech" and per_class["Speech"] == 2:  # two recordings: never the same one
                        in_spk1 = {e["source_file"].startswith("Speech/spk1/") for e in (a, b)}
                        assert in_spk1 == {True, False}
            for e in fg + scene["int_events"]:
                assert 0 <= e["event_time"] * SR < CLIP - e["event_duration"] * SR + 1
        assert set(counts) == set(range(event_range[0], event_range[1] + 1))
        assert set(interferers) == {0, 1, 2}
        assert 0.38 < duplicated / multi < 0.62  # duplicate rate 0.5 among scenes of >= 2 events


def test_scenes_are_reproducible_per_seed_index_and_epoch(pool, t4_root):
    generated = GeneratedSet(pool, SynthSettings(event_range=(0, 3), seconds=SECONDS), dataset_length=4, seed=1)
    again = GeneratedSet(SourcePool(t4_root, "train", SECONDS), generated.settings, dataset_length=4, seed=1)
    assert torch.equal(generated[2]["mixture"], again[2]["mixture"])
    assert generated.scene(2, epoch=1) == generated[4 + 2]["scene"]  # key = epoch * length + index
    assert generated.scene(2, epoch=1) != generated.scene(2, epoch=0) != generated.scene(3, epoch=0)
    other_seed = GeneratedSet(pool, generated.settings, dataset_length=4, seed=2)
    assert other_seed.scene(2) != generated.scene(2)
    sampler = EpochSampler(4)
    sampler.set_epoch(3)
    assert list(sampler) == [12, 13, 14, 15]
    loaders = [
        torch.utils.data.DataLoader(generated, 2, sampler=EpochSampler(4), num_workers=w, collate_fn=collate_scenes)
        for w in (0, 2)
    ]
    for loader in loaders:
        loader.sampler.set_epoch(1)
    for a, b in zip(*loaders):
        assert torch.equal(a["mixture"], b["mixture"]) and a["names"] == b["names"]
    assert a["names"] == ["scene_e1_00000002", "scene_e1_00000003"]


# ---------------------------------------------------------------------------------------------------------------------
# Validation scenes from metadata/valid.json


def hand_made_scene():
    """One validation scene in the schema of ``asdzoo.data.synth_t4``; times are binary fractions, so they are exact
    sample counts whichever rounding a reader applies."""

    def event(label, file, start, duration, onset, position, snr, role="foreground"):
        return dict(
            label=label,
            source_file=file,
            source_time=start,
            event_time=onset,
            event_duration=duration,
            rir_index=position,
            event_position=[[1.0, 0.0, 0.0]],
            snr=snr,
            role=role,
        )

    config = dict(
        duration=SECONDS,
        sr=SR,
        ref_db=-55,
        direct_range_ms=[6, 50],
        foreground_dir="sound_event/train",
        interference_dir="interference/train",
        background_dir="noise/train",
    )
    return dict(
        name="valid_0000",
        config=config,
        room=dict(file="room_ir/train/room1.npz"),
        fg_events=[
            event("Cough", "Cough/e.wav", 0.0625, 0.375, 0.0625, 6, 12.0),
            event("Speech", "Speech/a.wav", 0.0, 0.25, 0.125, 0, 7.5),
        ],
        int_events=[event("Wind", "Wind/w.wav", 0.1875, 0.5, 0.0, 3, 4.0, "interference")],
        bg_events=[
            dict(
                label=None,
                source_file="n1.wav",
                source_time=1,
                event_time=0,
                event_duration=SECONDS,
                event_position=None,
                snr=0,
                role="background",
            )
        ],
    )


def test_validation_scenes_are_rebuilt_from_the_files_they_name(t4_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(t4_root, root)
    (root / "metadata").mkdir()
    (root / "metadata" / "valid.json").write_text(json.dumps([hand_made_scene()]))
    validation = ValidationSet(root)
    item = validation[0]
    assert item["name"] == "valid_0000" and item["labels"] == ["Cough", "Speech", SILENCE]
    assert check_scene(item, root) > 0
    assert torch.equal(item["mixture"], ValidationSet(root)[0]["mixture"])
    (root / "metadata" / "valid.json").write_text('[{"name": "x"}]')
    with pytest.raises(ValueError, match="valid.json"):
        ValidationSet(root)
    scene = hand_made_scene()
    scene["fg_events"][1]["source_file"] = "Speech/zz.wav"
    (root / "metadata" / "valid.json").write_text(json.dumps([scene]))
    with pytest.raises(ValueError, match="zz.wav"):
        ValidationSet(root)
    scene["fg_events"][1]["source_file"] = "Speech/spk1/c.wav"
    scene["fg_events"][1]["source_time"] = 0.25  # 0.25 + 0.25 s of a 0.4 s file
    (root / "metadata" / "valid.json").write_text(json.dumps([scene]))
    with pytest.raises(ValueError, match=re.escape("c.wav: has 12800 samples, needs at least 16000")):
        ValidationSet(root)


# ---------------------------------------------------------------------------------------------------------------------
# Source pool faults and the DataModules


POOL_FAULTS = {
    "unknown class folder": (lambda r: write(r / "sound_event/train/Spech/x.wav", np.zeros(3000)), "Spech"),
    "stereo background": (lambda r: write(r / "noise/train/n3.wav", np.zeros((2, 20000))), "n3.wav"),
    "background shorter than a clip": (lambda r: write(r / "noise/train/n3.wav", np.zeros((4, 100))), "n3.wav"),
    "event at 16 kHz": (lambda r: write(r / "sound_event/train/Pour/p.wav", np.zeros(3000), sr=16000), "p.wav"),
    "no room folder": (lambda r: shutil.rmtree(r / "room_ir"), "room_ir"),
    "SOFA rooms only": (
        lambda r: [p.unlink() for p in (r / "room_ir/train").glob("*.npz")] + [(r / "room_ir/train/a.sofa").touch()],
        "SOFA",
    ),
    "room at 16 kHz": (
        lambda r: write_room(r / "room_ir/train/room0.npz", 0, np.random.default_rng(0), 16000),
        "room0",
    ),
}


@pytest.mark.parametrize("fault", POOL_FAULTS)
def test_source_faults_name_the_file(t4_root, tmp_path, fault):
    root = tmp_path / "root"
    shutil.copytree(t4_root, root)
    change, named = POOL_FAULTS[fault]
    change(root)
    with pytest.raises((ValueError, FileNotFoundError), match=re.escape(named)):
        generated = GeneratedSet(SourcePool(root, "train", SECONDS), SynthSettings(seconds=SECONDS), 6, seed=0)
        [generated[i] for i in range(6)]


def test_datamodules_batches(t4_root):
    tagger = TaggerDataModule(str(t4_root), batch_size=3, dataset_length=6, segment_seconds=SECONDS, seed=4)
    separator = SeparatorDataModule(str(t4_root), batch_size=3, dataset_length=6, segment_seconds=SECONDS, seed=4)
    assert (tagger.event_range, tagger.settings.event_range, separator.settings.event_range) == ((0, 3), (0, 3), (1, 3))
    assert TaggerDataModule(str(t4_root)).batch_size == 32 and SeparatorDataModule(str(t4_root)).dataset_length == 10112
    for dm in (tagger, separator):
        dm.setup("fit")
        batch = next(iter(dm.train_dataloader()))
        assert batch["mixture"].shape == (3, 4, CLIP) and batch["dry_sources"].shape == (3, 3, CLIP)
        for b, labels in enumerate(batch["labels"]):
            assert batch["classes"][b].tolist() == [TAGGER_CLASSES.index(lab) for lab in labels]
            assert labels_from_vector(batch["query"][b], "concat", "zeros") == labels
            assert [bool(row.any()) for row in batch["dry_sources"][b]] == [lab != SILENCE for lab in labels]
        assert dm.val_dataloader() == []  # no metadata/valid.json in this tree
        dm.setup("test")
        test = next(iter(dm.test_dataloader()))
        assert test["names"] == ["mix_1", "mix_10", "mix_1_2"]
        assert test["classes"].tolist() == [[15, 7, 18], [5, 5, 15], [8, 18, 18]]
        assert test["query"].shape == (3, 54) and set(LABELS) >= {lab for ls in test["labels"] for lab in ls} - {
            SILENCE
        }


def test_silent_segments_are_drawn_again(tmp_path):
    """A source that is silent for most of its length (an impulsive sound) never yields an all-zero segment, which
    peak normalisation would turn into NaN; one with no sound at all is refused by name."""
    rng = np.random.default_rng(3)
    build_sources(tmp_path, rng)
    hit = np.zeros(4 * CLIP)
    hit[3 * CLIP + 100 : 3 * CLIP + 400] = 0.5 * rng.standard_normal(300)  # sound only in the last quarter
    for label in ("Dishes", "Cough", "Doorbell"):
        for f in (tmp_path / "sound_event" / "train" / label).glob("*.wav"):
            f.unlink()
        write(tmp_path / "sound_event" / "train" / label / "hit.wav", hit, subtype="PCM_16")
    pool = SourcePool(tmp_path, "train", SECONDS)
    settings = SynthSettings(event_range=(1, 3), seconds=SECONDS)
    drawn = 0
    for i in range(60):
        scene = draw_scene(pool, settings, np.random.default_rng([4, i]), "s")
        for e in scene["fg_events"]:
            start = int(round(e["source_time"] * SR))
            segment = sf.read(tmp_path / "sound_event/train" / e["source_file"], dtype="float32")[0]
            assert np.abs(segment[start : start + int(round(e["event_duration"] * SR))]).max() > 0
            drawn += e["source_file"].endswith("hit.wav")
    assert drawn > 20  # the mostly silent files were used, from their sounding part
    write(tmp_path / "sound_event" / "train" / "Dishes" / "hit.wav", np.zeros(4 * CLIP), subtype="PCM_16")
    for label in ("Cough", "Doorbell", "Speech"):
        shutil.rmtree(tmp_path / "sound_event" / "train" / label)
    with pytest.raises(ValueError, match="random segments of Dishes were silent"):
        draw_scene(
            SourcePool(tmp_path, "train", SECONDS), SynthSettings((1, 1), SECONDS), np.random.default_rng(0), "s"
        )


def test_duplicates_without_a_far_enough_position_are_left_out(t4_root):
    """A room whose positions all lie within 30 degrees cannot hold same-class sources 60 degrees apart: such scenes
    keep their distinct classes and drop the duplicate instead of failing."""
    pool = SourcePool(t4_root, "train", SECONDS)
    for file in pool.rooms:
        room = pool.room(file)
        pool.room_cache[file] = dataclasses.replace(room, directions=np.zeros_like(room.directions) + [[0.0, 0.0]])
        pool.room_cache[file].directions[1::2, 0] = 30.0
    settings = SynthSettings(event_range=(2, 3), seconds=SECONDS)
    for i in range(80):
        fg = draw_scene(pool, settings, np.random.default_rng([5, i]), "s")["fg_events"]
        labels = [e["label"] for e in fg]
        assert len(set(labels)) == len(labels) and len(labels) >= 1
