"""The official Task 4 formats: SOFA room files and the per-scene SpAudSyn metadata list of ``metadata/valid.json``.

SOFA files are written here with h5py in netCDF-4's layout (HDF5 datasets named after the SOFA variables, their axes
attached as dimension scales ``M``, ``R``, ``N``, ``E``, ``I``, ``C``, text attributes as bytes), the layout that
netCDF4-python writes and SpAudSyn's ``sofa`` package reads. Expected values are closed forms: impulses at known
samples and channels, positions from spherical coordinates, energy ratios from the SNRs the metadata names.
"""

import json
import re
import shutil

import h5py
import numpy as np
import pytest
import soundfile as sf
import torch

from asdzoo.audio.foa import foa_gains
from asdzoo.audio.rooms import load_room
from asdzoo.data.s5 import SILENCE
from asdzoo.data.task4 import GeneratedSet, SourcePool, SynthSettings, ValidationSet

from test_task4_data import SECONDS, build_sources, write

SR = 32000
SPHERICAL = "degree, degree, metre"


def write_sofa(path, irs, source, *, dims=("M", "R", "N"), sr=SR, kind="spherical", units=SPHERICAL, extra=None):
    """A SOFA room file: ``irs [M, R, N]`` stored along ``dims`` (an ``E`` axis of size 1 added if named),
    ``SourcePosition`` [M, 3] of Type ``kind``, the listener at the origin; ``extra`` adds or replaces variables as
    ``name: (values, axes, attributes)``. ``dims=None`` leaves Data.IR without dimension scales."""
    irs = np.asarray(irs, dtype=np.float64)
    axes = dims or ("M", "R", "N")
    stored = irs[..., None] if "E" in axes else irs
    stored = np.transpose(stored, [("M", "R", "N", "E").index(d) for d in axes])
    variables = {
        "Data.IR": (stored, dims, {}),
        "Data.SamplingRate": ([float(sr)], "I", {"Units": "hertz"}),
        "SourcePosition": (source, "MC", {"Type": kind, "Units": units}),
        "ListenerPosition": ([[0.0, 0.0, 0.0]], "IC", {"Type": "cartesian", "Units": "metre"}),
        **(extra or {}),
    }
    sizes = {"I": 1, "C": 3, "M": irs.shape[0], "R": irs.shape[1], "N": irs.shape[2], "E": 1}
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs.update({"Conventions": np.bytes_("SOFA"), "SOFAConventions": np.bytes_("SingleRoomSRIR")})
        for name, size in sizes.items():
            f.create_dataset(name, (size,), "f4").make_scale(name)
        for name, (values, names, attributes) in variables.items():
            data = f.create_dataset(name, data=np.asarray(values, dtype=np.float64))
            for axis, dim in enumerate(names or ()):
                data.dims[axis].attach_scale(f[dim])
            data.attrs.update({key: np.bytes_(value) for key, value in attributes.items()})


def read_wav(path):
    return sf.read(str(path), dtype="float64", always_2d=True)[0].T


def cartesian(az, el, r):
    az, el = np.deg2rad(az), np.deg2rad(el)
    return r * np.array([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)])


# ---------------------------------------------------------------------------------------------------------------------
# Reading rooms

SOURCES = [(30.0, 10.0, 2.0), (-90.0, 0.0, 1.0), (150.0, -45.0, 0.5)]  # azimuth, elevation (deg), radius (m)


def impulses():
    """Position p: one impulse of height p + 1 at sample 10 + p in channel (p + 1) % 4."""
    irs = np.zeros((len(SOURCES), 4, 32))
    for p in range(len(SOURCES)):
        irs[p, (p + 1) % 4, 10 + p] = p + 1
    return irs


@pytest.mark.parametrize(
    "dims",
    [("M", "R", "N"), ("M", "R", "N", "E"), ("M", "R", "E", "N"), None],
    ids=["SingleRoomSRIR-MRN", "SingleRoomMIMOSRIR-MRNE", "FIR-E-MREN", "unnamed-axes"],
)
def test_impulses_come_back_in_their_channel_at_their_sample(tmp_path, dims):
    write_sofa(tmp_path / "hall.sofa", impulses(), SOURCES, dims=dims)
    room = load_room(tmp_path / "hall.sofa")
    assert (room.room, room.sr, room.irs.shape, len(room.irs)) == ("hall", SR, (3, 4, 32), 3)
    for p in range(3):
        assert np.array_equal(room.irs[p], impulses()[p])
        assert np.argmax(np.abs(room.irs[p]).max(axis=1)) == (p + 1) % 4 and np.argmax(room.irs[p].max(0)) == 10 + p
    np.testing.assert_allclose(room.directions, [s[:2] for s in SOURCES], atol=1e-12)
    np.testing.assert_allclose(room.positions, [cartesian(*s) for s in SOURCES], atol=1e-12)


def test_positions_in_radians_and_cartesian(tmp_path):
    radians = [(np.deg2rad(az), np.deg2rad(el), r) for az, el, r in SOURCES]
    write_sofa(tmp_path / "rad.sofa", impulses(), radians, units="rad, rad, metre")
    np.testing.assert_allclose(load_room(tmp_path / "rad.sofa").directions, [s[:2] for s in SOURCES], atol=1e-12)
    points = [[1.0, 1.0, 0.0], [0.0, -2.0, 2.0], [-3.0, 0.0, 0.0]]
    write_sofa(tmp_path / "xyz.sofa", impulses(), points, kind="cartesian", units="metre")
    room = load_room(tmp_path / "xyz.sofa")
    np.testing.assert_allclose(room.directions, [[45.0, 0.0], [-90.0, 45.0], [180.0, 0.0]], atol=1e-12)
    assert np.array_equal(room.positions, points)  # stored as they are: what SpAudSyn metadata names


def test_directions_are_seen_from_the_listener_and_its_view(tmp_path):
    """Listener at (1, 0, 0) looking along +y (View spherical, Up taking View's Type): a source at (1, 2, 0) is in
    front of it, one at (3, 0, 0) to its right, one at (1, 1, -1) in front 45 degrees down."""
    listener = {
        "ListenerPosition": ([[1.0, 0.0, 0.0]], "IC", {"Type": "cartesian", "Units": "metre"}),
        "ListenerView": ([[90.0, 0.0, 1.0]], "IC", {"Type": "spherical", "Units": SPHERICAL}),
        "ListenerUp": ([[0.0, 90.0, 1.0]], "IC", {}),
    }
    points = [[1.0, 2.0, 0.0], [3.0, 0.0, 0.0], [1.0, 1.0, -1.0]]
    write_sofa(tmp_path / "turned.sofa", impulses(), points, kind="cartesian", units="metre", extra=listener)
    room = load_room(tmp_path / "turned.sofa")
    np.testing.assert_allclose(room.directions, [[0.0, 0.0], [-90.0, 0.0], [0.0, -45.0]], atol=1e-12)
    assert np.array_equal(room.positions, points)


# ---------------------------------------------------------------------------------------------------------------------
# Training scenes from SOFA rooms


@pytest.fixture(scope="module")
def npz_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("npz")
    build_sources(root, np.random.default_rng(0))
    return root


def sofa_copy(npz_root, destination):
    """The same tree with every .npz room stored as SOFA instead (positions spherical at 1.5 m)."""
    shutil.copytree(npz_root, destination)
    for npz in sorted((destination / "room_ir" / "train").glob("*.npz")):
        room = load_room(npz)
        sources = np.column_stack([room.directions, np.full(len(room.directions), 1.5)])
        write_sofa(npz.with_suffix(".sofa"), room.irs, sources)
        npz.unlink()
    return destination


def test_training_scenes_from_sofa_rooms_equal_those_from_npz_rooms(npz_root, tmp_path):
    sofa_root = sofa_copy(npz_root, tmp_path / "sofa")
    settings = SynthSettings(seconds=SECONDS)
    from_npz = GeneratedSet(SourcePool(npz_root, "train", SECONDS), settings, dataset_length=6, seed=3)
    from_sofa = GeneratedSet(SourcePool(sofa_root, "train", SECONDS), settings, dataset_length=6, seed=3)
    assert from_sofa.pool.rooms == ["room_ir/train/room0.sofa", "room_ir/train/room1.sofa"]
    for i in range(6):
        a, b = from_npz[i], from_sofa[i]
        assert b["scene"]["room"]["file"] == a["scene"]["room"]["file"].replace(".npz", ".sofa")
        for x, y in zip(
            a["scene"]["fg_events"] + a["scene"]["int_events"], b["scene"]["fg_events"] + b["scene"]["int_events"]
        ):
            np.testing.assert_allclose(y.pop("event_position"), x.pop("event_position"), atol=1e-12)
            assert x == y
        assert torch.equal(a["mixture"], b["mixture"]) and torch.equal(a["dry_sources"], b["dry_sources"])
        assert a["labels"] == b["labels"] and a["mixture"].abs().max() > 0


def garbage(path):
    path.write_bytes(b"\x89HDF\r\n\x1a\nnot really")


def truncated(path):
    write_sofa(path, np.ones((12, 4, 4000)), [[0.0, 0.0, 1.0]] * 12)
    path.write_bytes(path.read_bytes()[:6000])


def with_nan(path):
    irs = np.ones((12, 4, 64))
    irs[:, 2, 7] = np.nan
    write_sofa(path, irs, [[30.0 * p, 0.0, 1.0] for p in range(12)])


def twelve(**kwargs):
    return lambda path: write_sofa(path, np.ones((12, 4, 64)), [[30.0 * p, 0.0, 1.0] for p in range(12)], **kwargs)


ROOM_FAULTS = {  # name -> (writes room_ir/train/bad.sofa, what the error says besides the file name)
    "not HDF5": (garbage, "unreadable SOFA file"),
    "truncated": (truncated, "unreadable SOFA file"),
    "16 kHz": (twelve(sr=16000), "room responses at 16000 Hz, expected 32000 Hz"),
    "2 receivers": (
        lambda p: write_sofa(p, np.ones((12, 2, 64)), [[30.0 * i, 0.0, 1.0] for i in range(12)]),
        "expected 4-channel FOA responses",
    ),
    "NaN": (with_nan, "non-finite values in Data.IR of measurement"),
    "no Type": (twelve(kind=""), "SourcePosition:Type is missing"),
    "angles in grad": (twelve(units="grad, grad, metre"), "angles neither in degrees nor in radians"),
    "no Data.IR": (lambda p: h5py.File(p, "w").close(), "no Data.IR variable"),
}


@pytest.mark.parametrize("fault", ROOM_FAULTS)
def test_bad_sofa_rooms_are_named(npz_root, tmp_path, fault):
    root = tmp_path / "root"
    shutil.copytree(npz_root, root)
    for npz in (root / "room_ir" / "train").glob("*.npz"):
        npz.unlink()
    change, problem = ROOM_FAULTS[fault]
    change(root / "room_ir" / "train" / "bad.sofa")
    with pytest.raises(ValueError, match=re.escape("bad.sofa: ") + ".*" + re.escape(problem)):
        generated = GeneratedSet(SourcePool(root, "train", SECONDS), SynthSettings(seconds=SECONDS), 4, seed=0)
        [generated[i] for i in range(4)]


def test_other_ir_layouts_are_refused(tmp_path):
    write_sofa(tmp_path / "turned.sofa", impulses(), SOURCES, dims=("R", "M", "N"))
    with pytest.raises(
        ValueError, match=re.escape("turned.sofa: Data.IR of shape (4, 3, 32) with axes ('R', 'M', 'N')")
    ):
        load_room(tmp_path / "turned.sofa")
    with h5py.File(tmp_path / "two.sofa", "w") as f:  # M, R, E, N with two emitters
        for name, size in {"M": 2, "R": 4, "E": 2, "N": 16}.items():
            f.create_dataset(name, (size,), "f4").make_scale(name)
        data = f.create_dataset("Data.IR", data=np.ones((2, 4, 2, 16)))
        for axis, dim in enumerate("MREN"):
            data.dims[axis].attach_scale(f[dim])
    with pytest.raises(ValueError, match=re.escape("two.sofa: 2 emitters per measurement")):
        load_room(tmp_path / "two.sofa")


# ---------------------------------------------------------------------------------------------------------------------
# The official metadata/valid.json: per-scene SpAudSyn metadata files

SCENE_SECONDS = 0.5
DIRECT = 5  # direct-path sample of both room positions


@pytest.fixture(scope="module")
def official_root(tmp_path_factory):
    """A dev_set in the official layout: a SOFA room with positions at azimuth 0 (X) and 90 (Y), two targets, a
    background; the metadata names paths from the baseline's working directory, as SpAudSyn writes them."""
    root = tmp_path_factory.mktemp("dev_set")
    rng = np.random.default_rng(1)
    for file, n in (("Speech/a.wav", 4000), ("Dishes/d.wav", 3000)):
        write(root / "sound_event/valid" / file, rng.standard_normal(n) * np.hanning(n))
    write(root / "noise/valid/bg.wav", 0.1 * rng.standard_normal((4, 2 * SR)))
    irs = np.zeros((2, 4, 64))
    for p, az in enumerate((0.0, 90.0)):
        irs[p, :, DIRECT] = foa_gains(az, 0.0)
    write_sofa(root / "room_ir/valid/place1.sofa", irs, [[0.0, 0.0, 1.5], [90.0, 0.0, 1.5]])
    (root / "metadata/valid").mkdir(parents=True)
    (root / "metadata/valid/scene_a.json").write_text(json.dumps(spaudsyn_metadata()))
    (root / "metadata/valid.json").write_text(json.dumps([{"metadata_path": "valid/scene_a.json"}]))
    return root


def spaudsyn_event(label, file, source_time, event_time, duration, position, snr):
    return dict(
        label=label,
        source_file=file,
        source_time=source_time,
        event_time=event_time,
        event_duration=duration,
        event_position=[position],
        snr=snr,
        role="foreground",
    )


def spaudsyn_metadata():
    """Times a fraction of a sample past whole samples, where SpAudSyn's truncation and rounding would differ; the
    events are listed out of onset order."""
    folders = {
        f"{k}_dir": f"data/dev_set/{v}/valid" for k, v in (("foreground", "sound_event"), ("background", "noise"))
    }
    return {
        "config": dict(duration=SCENE_SECONDS, sr=SR, max_event_overlap=3, max_event_dur=10.0, ref_db=-55, **folders)
        | {"interference_dir": "data/dev_set/interference/valid", "room_config": {}, "verbose": False},
        "fg_events": [
            spaudsyn_event("Speech", "Speech/a.wav", 100.7 / SR, 6000.9 / SR, 3000.6 / SR, [0.0, 1.5, 0.0], 12.0),
            spaudsyn_event("Dishes", "Dishes/d.wav", 0, 1000.2 / SR, 3000 / SR, [1.5, 0.0, 0.0], 6.5),
        ],
        "bg_events": [
            dict(
                label=None,
                source_file="bg.wav",
                source_time=1,
                event_time=0,
                event_duration=SCENE_SECONDS,
                event_position=None,
                snr=0,
                role="background",
            )
        ],
        "int_events": [],
        "room": {
            "module": "src.room",
            "main": "SofaRoom.from_metadata",
            "args": {"metadata": {"sofa_path": "data/dev_set/room_ir/valid/place1.sofa", "direct_range_ms": [6, 50]}},
        },
    }


def test_official_metadata_list_rebuilds_the_scene(official_root):
    item = ValidationSet(official_root)[0]
    assert item["name"] == "soundscape_0000" and item["labels"] == ["Dishes", "Speech", SILENCE]  # by onset
    mixture, dry = item["mixture"].double().numpy(), item["dry_sources"].double().numpy()
    noise = read_wav(official_root / "noise/valid/bg.wav")[:, SR : SR + int(SCENE_SECONDS * SR)]
    background = noise * 10 ** ((-55 - 10 * np.log10(np.mean(noise**2))) / 20)
    events = mixture - background
    for channel, slot, file, start, onset, count, snr in (
        (3, 0, "Dishes/d.wav", 0, 1000, 3000, 6.5),  # azimuth 0: X only (and W)
        (1, 1, "Speech/a.wav", 100, 6000, 3000, 12.0),  # azimuth 90: Y only (and W); first sample int(100.7)
    ):
        segment = read_wav(official_root / "sound_event/valid" / file)[0, start : start + count]
        part = events[channel]
        window = slice(onset + DIRECT, onset + DIRECT + count)
        gain = part[window] @ segment / (segment @ segment)
        assert np.abs(part[window] - gain * segment).max() < 1e-6 * np.abs(part).max()
        assert np.abs(np.delete(part, np.r_[window])).max() < 1e-6 * np.abs(part).max()
        # wet power over its full length (count + 63 samples, 4 channels; W carries the same as this channel)
        wet_power = 2 * np.sum(part**2) / (4 * (count + 63))
        assert abs(10 * np.log10(wet_power / np.mean(background**2)) - snr) < 1e-4
        np.testing.assert_allclose(dry[slot], part, atol=1e-6 * np.abs(part).max())  # reference: W's direct path
    assert not dry[2].any()


def _edit(change):
    def edited():
        metadata = spaudsyn_metadata()
        change(metadata)
        return metadata

    return edited


METADATA_FAULTS = {  # name -> (metadata of scene_a.json, what the error says besides the file name)
    "position not in the room": (
        _edit(lambda m: m["fg_events"][0].update(event_position=[[0.0, -1.5, 0.0]])),
        "position [0.0, -1.5, 0.0] of Speech/a.wav matches 0 of the room's 2 SourcePositions",
    ),
    "moving source": (
        _edit(lambda m: m["fg_events"][1].update(event_position=[[1.5, 0.0, 0.0], [0.0, 1.5, 0.0]])),
        "not one static [[x, y, z]]",
    ),
    "another room type": (_edit(lambda m: m["room"].update(main="ShoeboxRoom.from_metadata")), "only SpAudSyn's"),
    "tiled background": (_edit(lambda m: m["bg_events"][0].update(source_time=None)), "source_time null"),
    "path outside the data folders": (
        _edit(lambda m: m["config"].update(foreground_dir="elsewhere/valid")),
        "path 'elsewhere/valid' is in none of the data folders",
    ),
    "no room": (_edit(lambda m: m.pop("room")), "not SpAudSyn scene metadata (KeyError: 'room')"),
    "unknown class": (_edit(lambda m: m["fg_events"][0].update(label="Dog")), "has label 'Dog', not a Task 4 class"),
}


@pytest.mark.parametrize("fault", METADATA_FAULTS)
def test_official_metadata_faults_name_the_scene_file(official_root, tmp_path, fault):
    root = tmp_path / "root"
    shutil.copytree(official_root, root)
    metadata, problem = METADATA_FAULTS[fault]
    (root / "metadata/valid/scene_a.json").write_text(json.dumps(metadata()))
    with pytest.raises(ValueError, match=re.escape("scene_a.json: ") + ".*" + re.escape(problem)):
        ValidationSet(root)


def test_missing_files_and_mixed_lists_are_named(official_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(official_root, root)
    (root / "metadata/valid.json").write_text(json.dumps([{"metadata_path": "valid/nope.json"}]))
    with pytest.raises(FileNotFoundError, match=re.escape("nope.json: missing SpAudSyn scene metadata")):
        ValidationSet(root)
    metadata = spaudsyn_metadata()
    metadata["room"]["args"]["metadata"]["sofa_path"] = "data/dev_set/room_ir/valid/gone.sofa"
    (root / "metadata/valid/scene_b.json").write_text(json.dumps(metadata))
    (root / "metadata/valid.json").write_text(json.dumps([{"metadata_path": "valid/scene_b.json"}]))
    with pytest.raises(ValueError, match=re.escape("room_ir/valid/gone.sofa: file not found")):
        ValidationSet(root)
    (root / "metadata/valid.json").write_text(json.dumps([{"metadata_path": "valid/scene_a.json"}, {"name": "x"}]))
    with pytest.raises(ValueError, match=re.escape("valid.json: expected a list of scenes with keys")):
        ValidationSet(root)
