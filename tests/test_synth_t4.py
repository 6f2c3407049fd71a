"""FOA helpers (closed-form and physical checks) and the built-in Task 4 generator (determinism, atomicity, layout,
levels, references present in the mixtures, classes a simple classifier can tell apart)."""

import copy
import json
import re

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import spectrogram

from asdzoo.audio.foa import (
    SPEED_OF_SOUND,
    diffuse_foa_noise,
    direction_of,
    encode_foa,
    load_room_irs,
    save_room_irs,
    simulate_foa_rir,
)
from asdzoo.data import synth_t4
from asdzoo.data.s5 import LABELS, SAMPLE_RATE
from asdzoo.data.synth import checksum
from asdzoo.data.synth_t4 import SynthT4Config, dry_sound, generate, render_scene

TINY = dict(seconds=2.0, train_sources=1, valid_sources=2, positions_per_room=6, valid_scenes=2, test_scenes=2)


@pytest.fixture(scope="module")
def t4_root(tmp_path_factory):
    return generate(SynthT4Config.small(seed=7), tmp_path_factory.mktemp("t4") / "data", workers=2, progress=False)


def _intensity_direction(foa: np.ndarray) -> tuple[float, float]:
    """Direction of the time-averaged active intensity (W*X, W*Y, W*Z) of an FOA segment [4, T] (W, Y, Z, X)."""
    w, y, z, x = foa
    return direction_of(np.array([np.sum(w * x), np.sum(w * y), np.sum(w * z)]))


def _arrival_area(x: np.ndarray, at: int) -> float:
    """Area of one arrival (a fractional-delay sinc) at sample ``at``, less the slow baseline the responses' 10 Hz
    high-pass leaves around it."""
    baseline = np.mean(np.r_[x[at - 30 : at - 12], x[at + 13 : at + 31]])
    return float(np.sum(x[at - 8 : at + 9]) - 17 * baseline)


# ------------------------------------------------------------------------------------------------ FOA


def test_plane_wave_encoding_closed_form():
    s = np.random.default_rng(0).standard_normal(100)
    front, left, up = encode_foa(s, 0, 0), encode_foa(s, 90, 0), encode_foa(s, 0, 90)
    np.testing.assert_allclose(front[3], front[0])  # +x: X = W, Y = Z = 0
    np.testing.assert_allclose(front[1:3], 0, atol=1e-12)
    np.testing.assert_allclose(left[1], left[0])  # +y (az 90, counter-clockwise): Y = W
    np.testing.assert_allclose(left[[2, 3]], 0, atol=1e-12)
    np.testing.assert_allclose(up[2], up[0])
    np.testing.assert_allclose(encode_foa(s, 180, 0)[3], -s)
    np.testing.assert_allclose(encode_foa(s, 30, 0)[1], 0.5 * s)  # sin 30 deg
    for az, el in np.random.default_rng(1).uniform([-180, -90], [180, 90], (20, 2)):
        foa = encode_foa(s, az, el)  # SN3D first order: X^2 + Y^2 + Z^2 = W^2 for a plane wave
        np.testing.assert_allclose(np.sum(foa[1:] ** 2, axis=0), foa[0] ** 2, rtol=1e-12)
        np.testing.assert_allclose(_intensity_direction(foa), (az, el), atol=1e-9)


def test_simulated_rir_direct_path_and_floor_reflection():
    room, mic = np.array([10.0, 8.0, 4.0]), np.array([5.0, 4.0, 1.0])
    src = mic + np.array([0.8, 0.6, 0.0])  # 1 m away at azimuth 36.87 deg, level with the array
    rir = simulate_foa_rir(room, None, src, mic, max_order=2, absorption=0.2, diffuse_tail=False)
    sr, c = SAMPLE_RATE, SPEED_OF_SOUND
    delay = 1.0 / c * sr
    peak = int(np.argmax(np.abs(rir[0])))
    assert abs(peak - delay) <= 0.5  # delay = distance / c, to the nearest sample
    window = slice(int(delay) - 8, int(delay) + 9)
    az, el = _intensity_direction(rir[:, window])
    assert abs(az - np.degrees(np.arctan2(0.6, 0.8))) < 1.0 and abs(el) < 1.0
    direct = _arrival_area(rir[0], int(delay))
    assert direct == pytest.approx(1 / (4 * np.pi), rel=0.02)  # 1/(4 pi r), r = 1 m
    # floor reflection: image source mirrored in z = 0, path sqrt(1 + 2^2) m; next arrival (ceiling) is ~6 m
    image = src * np.array([1, 1, -1])
    d = np.linalg.norm(image - mic)
    t = int(round(d / c * sr))
    az, el = _intensity_direction(rir[:, t - 8 : t + 9])
    want_az, want_el = direction_of(image - mic)
    assert abs(az - want_az) < 2.0 and abs(el - want_el) < 2.0 and el < -60
    assert _arrival_area(rir[0], t) == pytest.approx(np.sqrt(0.8) / (4 * np.pi * d), rel=0.02)  # 1 reflection


def test_simulated_rir_reverberates_for_rt60_with_a_continuous_diffuse_tail():
    room, rt60 = np.array([7.0, 5.5, 3.0]), 0.6
    rir = simulate_foa_rir(room, rt60, [2.2, 1.6, 1.4], [3.1, 2.5, 1.5])
    w = rir[0]
    decay = 10 * np.log10(np.cumsum(w[::-1] ** 2)[::-1] / np.sum(w**2))  # Schroeder integral
    t20 = 3 * (np.argmax(decay < -25) - np.argmax(decay < -5)) / SAMPLE_RATE
    assert t20 == pytest.approx(rt60, rel=0.1)
    start = int(15 * room.min() / np.sqrt(3) / SPEED_OF_SOUND * SAMPLE_RATE)  # last image-complete sample
    before, after = np.mean(w[start - 320 : start] ** 2), np.mean(w[start + 160 : start + 480] ** 2)
    assert abs(10 * np.log10(after / before) + 60 * 0.015 / rt60) < 2.0  # level continues (less 15 ms of decay)
    late = rir[:, start + 1000 : start + 6000]
    np.testing.assert_allclose(np.mean(late[1:] ** 2, axis=1) / np.mean(late[0] ** 2), 1 / 3, rtol=0.2)  # diffuse


def test_diffuse_noise_is_incoherent_with_sn3d_powers():
    x = diffuse_foa_noise(4 * SAMPLE_RATE, np.random.default_rng(0), slope_db_per_octave=-3.0)
    corr = np.corrcoef(x)
    assert np.max(np.abs(corr[0, 1:])) < 0.05 and np.max(np.abs(corr[1:, 1:] - np.eye(3))) < 0.05
    power = np.mean(x**2, axis=1)
    np.testing.assert_allclose(power[1:] / power[0], 1 / 3, rtol=0.1)
    f, _, pxx = spectrogram(x[0], fs=SAMPLE_RATE, nperseg=4096)
    band = [pxx[(f >= lo) & (f < 2 * lo)].sum() for lo in (500, 2000)]
    assert abs(10 * np.log10(band[1] / band[0])) < 1.0  # pink: equal power per octave


def test_room_ir_file_round_trip_and_channel_check(tmp_path):
    irs = np.random.default_rng(0).standard_normal((3, 4, 50)).astype(np.float32)
    dirs = np.array([[0.0, 0.0], [90.0, 10.0], [-45.0, -20.0]])
    save_room_irs(tmp_path / "office.npz", irs, dirs, 32000)
    room = load_room_irs(tmp_path / "office.npz")
    assert room.room == "office" and room.sr == 32000
    np.testing.assert_array_equal(room.irs, irs)
    np.testing.assert_array_equal(room.directions, dirs)
    with pytest.raises(ValueError, match="irs"):
        save_room_irs(tmp_path / "bad.npz", irs[:, :2], dirs, 32000)


# ------------------------------------------------------------------------------------------------ generator


def test_same_seed_same_bytes_any_workers_other_seed_other_bytes(tmp_path):
    a = checksum(generate(SynthT4Config.small(**TINY, seed=3), tmp_path / "a", workers=2, progress=False))
    b = checksum(generate(SynthT4Config.small(**TINY, seed=3), tmp_path / "b", workers=1, progress=False))
    c = checksum(generate(SynthT4Config.small(**TINY, seed=4), tmp_path / "c", workers=1, progress=False))
    assert a == b and a != c


def test_failure_leaves_no_output(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(synth_t4, "render_scene", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        generate(SynthT4Config.small(**TINY), tmp_path / "out", workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_layout_formats_and_reference_names(t4_root):
    cfg = SynthT4Config.small(seed=7)
    n = int(cfg.seconds * SAMPLE_RATE)
    for split in ("train", "valid"):
        classes = sorted(p.name for p in (t4_root / "sound_event" / split).iterdir())
        assert classes == sorted(LABELS)
        for wav in (t4_root / "sound_event" / split).rglob("*.wav"):
            info = sf.info(str(wav))
            assert (info.channels, info.samplerate) == (1, SAMPLE_RATE) and info.frames <= n
        assert not set(p.name for p in (t4_root / "interference" / split).iterdir()) & set(LABELS)
        for wav in (t4_root / "noise" / split).glob("*.wav"):
            assert (sf.info(str(wav)).channels, sf.info(str(wav)).samplerate) == (4, SAMPLE_RATE)
        for file in (t4_root / "room_ir" / split).glob("*.npz"):
            room = load_room_irs(file)
            assert room.irs.shape[:2] == (cfg.positions_per_room, 4) and room.sr == SAMPLE_RATE
    test = t4_root / "synthesized" / "test"
    mixtures = sorted(p.stem for p in (test / "soundscape").glob("*.wav"))
    assert len(mixtures) == cfg.test_scenes
    for name in mixtures:
        info = sf.info(str(test / "soundscape" / f"{name}.wav"))
        assert (info.channels, info.samplerate, info.frames) == (4, SAMPLE_RATE, n)
    pattern = re.compile(rf"^({'|'.join(mixtures)})_(\d+)_({'|'.join(LABELS)})$")
    per_mixture = {name: 0 for name in mixtures}
    for ref in (test / "oracle_target").glob("*.wav"):
        match = pattern.match(ref.stem)
        assert match, ref.name
        per_mixture[match.group(1)] += 1
        info = sf.info(str(ref))
        assert (info.channels, info.samplerate, info.frames) == (1, SAMPLE_RATE, n)
    assert all(1 <= k <= 3 for k in per_mixture.values())


def test_valid_metadata_follows_the_baseline_settings(t4_root):
    cfg = SynthT4Config.small(seed=7)
    scenes = json.loads((t4_root / "metadata" / "valid.json").read_text())
    assert len(scenes) == cfg.valid_scenes
    for scene in scenes:
        conf = scene["config"]
        assert (t4_root / scene["room"]["file"]).is_file()
        assert 1 <= len(scene["fg_events"]) <= 3 and len(scene["int_events"]) <= 2
        for e in scene["fg_events"]:
            assert e["label"] in LABELS and 5 <= e["snr"] <= 20
            assert (t4_root / conf["foreground_dir"] / e["source_file"]).is_file()
            assert e["event_time"] >= 0 and e["event_time"] + e["event_duration"] <= cfg.seconds + 1e-9
        for e in scene["int_events"]:
            assert e["label"] not in LABELS and 0 <= e["snr"] <= 15
        for a in scene["fg_events"]:
            for b in scene["fg_events"]:
                if a is not b and a["label"] == b["label"]:
                    assert a["source_file"] != b["source_file"]
                    cos = np.dot(a["event_position"][0], b["event_position"][0])
                    assert np.degrees(np.arccos(np.clip(cos, -1, 1))) >= 60 - 1e-3


def _residual(w: np.ndarray, ref: np.ndarray) -> float:
    """Energy of W left after subtracting a reference, relative to W's energy: < 1 only if the reference is in W at
    its own level and time; an unrelated signal adds its energy (> 1)."""
    return float(np.sum((w - ref) ** 2) / np.sum(w**2))


def test_levels_follow_ref_db_and_references_sit_in_channel_0(t4_root):
    scenes = json.loads((t4_root / "metadata" / "valid.json").read_text())
    quiet = copy.deepcopy(scenes[0])
    quiet["fg_events"], quiet["int_events"] = [], []
    background, refs = render_scene(quiet, t4_root)
    assert refs == [] and 10 * np.log10(np.mean(background.astype(np.float64) ** 2)) == pytest.approx(-55, abs=0.01)
    # each target alone at 30 dB over the background: W = reference (direct + first 50 ms) + late reverberation
    rendered = []
    for scene in scenes:
        for event in scene["fg_events"]:
            loud = dict(copy.deepcopy(scene), fg_events=[dict(event, snr=30.0)], int_events=[])
            mixture, [(label, ref)] = render_scene(loud, t4_root)
            assert label == event["label"]
            rendered.append((mixture[0].astype(np.float64), ref.astype(np.float64)))
    assert len(rendered) >= 4
    own = [_residual(w, ref) for w, ref in rendered]
    other = [_residual(w, rendered[(i + 1) % len(rendered)][1]) for i, (w, _) in enumerate(rendered)]
    # the late part is what is left: up to ~0.8 of W for impulsive sounds far away in the most reverberant rooms
    assert max(own) < 0.9 and np.median(own) < 0.5 and min(other) > 1.0


def test_written_test_references_are_present_in_their_mixture(t4_root):
    test = t4_root / "synthesized" / "test"
    w, refs = [], []
    for mix_path in sorted((test / "soundscape").glob("*.wav")):
        w.append(sf.read(str(mix_path), dtype="float64")[0][:, 0])
        refs.append(
            sum(sf.read(str(p), dtype="float64")[0] for p in (test / "oracle_target").glob(f"{mix_path.stem}_*"))
        )
    own = [_residual(w[i], refs[i]) for i in range(len(w))]
    other = [_residual(w[i], refs[(i + 1) % len(w)]) for i in range(len(w))]
    assert max(own) < 1.0 and np.median(own) < 0.6 and min(other) > 1.0


def _features(x: np.ndarray) -> np.ndarray:
    """Per-band log-power mean, spread and frame-to-frame change: a crude tagger's view of a sound."""
    f, _, s = spectrogram(x, fs=SAMPLE_RATE, nperseg=1024, noverlap=512)
    edges = np.geomspace(50, 15000, 25)
    bands = np.log10(np.stack([s[(f >= lo) & (f < hi)].sum(0) for lo, hi in zip(edges[:-1], edges[1:])]) + 1e-10)
    active = bands[:, bands.max(0) > bands.max() - 5]  # frames where the sound is on
    flux = np.abs(np.diff(bands, axis=1)).mean(1)
    return np.concatenate([active.mean(1) - active.mean(), active.std(1), flux])


def test_classes_are_distinguishable_with_variation_within():
    feats, labels = [], []
    for c, label in enumerate(LABELS):
        for i in range(5):
            feats.append(_features(dry_sound(label, 3.0, np.random.default_rng([11, c, i]))))
            labels.append(c)
    feats, labels = np.array(feats), np.array(labels)
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-9)
    dist = np.linalg.norm(feats[:, None] - feats[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    nearest = labels[np.argmin(dist, axis=1)]
    assert np.mean(nearest == labels) > 0.85  # leave-one-out 1-NN
    assert np.min(dist) > 0  # no two sources alike: intra-class variation
