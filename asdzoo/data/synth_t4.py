"""Built-in synthetic DCASE 2026 Task 4 (S5) data (``asdzoo synth t4 OUT``): 4-channel FOA sound scenes at 32 kHz.

Written, from one seed and atomically, in the official development-set layout
(``../shared/reference/s5_facts``)::

    OUT/sound_event/{train,valid}/<Class>/<Class>_<NNNN>.wav   mono dry target sources, 18 classes (LABELS)
    OUT/interference/{train,valid}/<Category>/*.wav            mono dry non-target sounds
    OUT/noise/{train,valid}/noise_<NN>.wav                     4-channel diffuse FOA background
    OUT/room_ir/{train,valid}/room_<split>_<NN>.npz            FOA RIRs of one room at many source positions
    OUT/metadata/valid.json                                    every validation scene, to render on the fly
    OUT/synthesized/test/soundscape/test_<NNNN>.wav            4-channel FOA mixtures
    OUT/synthesized/test/oracle_target/test_<NNNN>_<k>_<Label>.wav   1-channel references

Sources are peak-normalised 16-bit files; mixtures and references are 24-bit WAV because at the official levels
(``ref_db`` -55 dBFS) 16 bits would put quantisation noise only ~40 dB under the quietest events (24 bits: ~90 dB);
not float WAV, whose libsndfile PEAK chunk carries a time stamp and would break byte-identical output. Test scenes
are drawn from the ``valid`` pools (sources, interferers, noise and rooms) with their own random draws, as the
built-in set has no third pool.

Scene rendering follows SpAudSyn (``nttcslab/SpAudSyn`` ``src/spatial_audio_synthesizer.py`` and ``src/room.py``
``SofaRoom``, read for this module), which the official baseline uses to build its data:
each source segment is peak-normalised; its RIR is normalised to unit energy averaged over channels; the source is
convolved with it (full length) and scaled so that the wet event's mean power (all channels) is ``ref_db + snr`` dB;
the background is scaled to ``ref_db`` dB (snr 0); the event is added at ``int(event_time * sr)``, cut at the clip end.

Reference ("oracle target") = SpAudSyn's dry target with ``dry_channel 0``: the same scaled source convolved with the
W-channel RIR kept only from 6 ms before to 50 ms after its peak (``direct_range_ms [6, 50]``), zero elsewhere, placed
at the event's onset. Why: the metric compares estimates with mixture channel 0 (W) and the official references are
built this way, so the reference is the event's direct sound plus early reflections as they appear in W, time-aligned
with the mixture, and its level is the event's level in the mixture; the late reverberation is not part of the target.

``metadata/valid.json`` schema: a list of scenes, each::

    {"name": "valid_0000",
     "config": {"duration": s, "sr": 32000, "ref_db": -55, "direct_range_ms": [6, 50], "foreground_dir":
                "sound_event/valid", "interference_dir": "interference/valid", "background_dir": "noise/valid"},
     "room": {"file": "room_ir/valid/room_valid_00.npz", "dims": [x, y, z], "rt60": s, "mic_position": [x, y, z]},
     "fg_events" / "int_events": [{"label", "source_file" (relative to its dir), "source_time" (s, into the file),
                                   "event_time" (s, onset in the scene), "event_duration" (s), "rir_index" (into the
                                   room file), "event_position": [[x, y, z]] (unit vector towards the source, array
                                   frame), "snr" (dB), "role": "foreground" | "interference"}],
     "bg_events": [{"label": null, "source_file", "source_time" (whole seconds), "event_time": 0,
                    "event_duration": s, "event_position": null, "snr": 0, "role": "background"}]}

Segments start at ``round(source_time * sr)`` and last ``round(event_duration * sr)`` samples; events are added at
``int(event_time * sr)`` (as SpAudSyn). :func:`render_scene` renders one scene from these fields alone, as the
Task 4 readers do for validation. Scenes hold 1-3 targets; a further target repeats an earlier class with probability
``dupse_rate`` (at most ``max_dupse`` repeats, another file, >= 60 degrees from same-class events: the 2026 baseline's
``dupse`` settings), else takes a new class; 0-2 interferers at 0-15 dB, targets at 5-20 dB (baseline settings).
"""

from __future__ import annotations

import json
import multiprocessing as mp
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from scipy.signal import butter, fftconvolve, istft, sosfilt, stft

from asdzoo.audio.foa import diffuse_foa_noise, direction_of, foa_gains, load_room_irs, save_room_irs, simulate_foa_rir
from asdzoo.data.s5 import LABELS, SAMPLE_RATE

SR = SAMPLE_RATE
REF_DB = -55.0
DIRECT_RANGE_MS = (6, 50)
SOURCE_PEAK = 0.89  # -1 dBFS: the files are peak-normalised again when used


@dataclass(frozen=True)
class SynthT4Config:
    """Sizes (per split) and scene settings; ``SynthT4Config.small()`` is the tiny set the tests use."""

    seconds: float = 10.0  # clip length
    train_sources: int = 24  # dry sources per class
    valid_sources: int = 6
    train_interferers: int = 8  # per interference category
    valid_interferers: int = 3
    train_noise: int = 6
    valid_noise: int = 3
    train_rooms: int = 4
    valid_rooms: int = 2
    positions_per_room: int = 24
    valid_scenes: int = 40
    test_scenes: int = 30
    seed: int = 0
    events: tuple[int, int] = (1, 3)  # targets per scene (inclusive)
    snr_range: tuple[float, float] = (5.0, 20.0)
    interferers: tuple[int, int] = (0, 2)
    interferer_snr_range: tuple[float, float] = (0.0, 15.0)
    dupse_rate: float = 0.5
    max_dupse: int = 2
    dupse_min_angle: float = 60.0

    @classmethod
    def small(cls, **overrides) -> SynthT4Config:
        """A set written in seconds: 3 s clips, few files of each kind, one room per split."""
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown SynthT4Config fields {sorted(unknown)}")
        sizes = dict(
            seconds=3.0,
            train_sources=2,
            valid_sources=2,
            train_interferers=1,
            valid_interferers=1,
            train_noise=1,
            valid_noise=1,
            train_rooms=1,
            valid_rooms=1,
            positions_per_room=12,
            valid_scenes=4,
            test_scenes=4,
        )
        return cls(**{**sizes, **overrides})


# ------------------------------------------------------------------------------------------------
# Signal helpers


def _t(n: int) -> np.ndarray:
    return np.arange(n) / SR


def _band(x: np.ndarray, lo: float, hi: float, order: int = 4) -> np.ndarray:
    sos = butter(order, [lo, min(hi, SR / 2 - 100)], btype="band", fs=SR, output="sos")
    return sosfilt(sos, x, axis=-1)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def _phase(f, n: int) -> np.ndarray:
    return 2 * np.pi * np.cumsum(np.broadcast_to(np.asarray(f, dtype=float), (n,))) / SR


def _harmonics(f0, n: int, amps, rng) -> np.ndarray:
    """Harmonic series on a (possibly time-varying) fundamental; partials above Nyquist are dropped."""
    f0 = np.broadcast_to(np.asarray(f0, dtype=float), (n,))
    phase = _phase(f0, n)
    out = np.zeros(n)
    for k, a in enumerate(amps, start=1):
        if k * f0.max() < SR / 2 - 500:
            out += a * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    return out


def _ring(freqs, amps, decays, length: int, rng) -> np.ndarray:
    """A struck resonator: exponentially decaying partials (Hz, linear amplitude, seconds)."""
    t = _t(length)
    out = np.zeros(length)
    for f, a, d in zip(freqs, amps, decays):
        if f < SR / 2 - 500:
            out += a * np.exp(-t / d) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    return out


def _burst(length: int, lo: float, hi: float, decay: float, rng) -> np.ndarray:
    """A band-limited noise burst with an instant attack and exponential decay (claps, clicks, thuds)."""
    return _band(rng.standard_normal(length), lo, hi, order=2) * np.exp(-_t(length) / decay)


def _add(out: np.ndarray, sound: np.ndarray, at_seconds: float, gain: float = 1.0) -> None:
    i = int(at_seconds * SR)
    if 0 <= i < len(out):
        m = min(len(sound), len(out) - i)
        out[i : i + m] += gain * sound[:m]


def _gate(n: int, starts, lengths, ramp: float = 0.003) -> np.ndarray:
    """0/1 envelope on [start, start + length) seconds with short linear ramps (no clicks)."""
    t = _t(n)
    env = np.zeros(n)
    for s, d in zip(starts, lengths):
        env = np.maximum(env, np.clip(np.minimum((t - s) / ramp, (s + d - t) / ramp), 0, 1))
    return env


def _shaped(x: np.ndarray, gain) -> np.ndarray:
    """Time-varying filter: ``gain(freqs [F], times [T]) -> [F, T]`` multiplies the STFT of ``x``."""
    f, t, spec = stft(x, fs=SR, nperseg=512)
    _, y = istft(spec * gain(f[:, None], t[None, :]), fs=SR, nperseg=512)
    return y[: len(x)] if len(y) >= len(x) else np.pad(y, (0, len(x) - len(y)))


def _formants(f, centres, bandwidths, amps=None) -> np.ndarray:
    """Sum of resonance curves: the spectral envelope of a vocal tract (or any cavity)."""
    amps = np.ones(len(centres)) if amps is None else amps
    return sum(a / (1 + ((f - c) / b) ** 2) for c, b, a in zip(centres, bandwidths, amps))


def _onsets(n: int, rate: float, rng, jitter: float = 0.1) -> np.ndarray:
    period = 1 / rate
    times = np.arange(rng.uniform(0.02, 0.5 * period), n / SR - 0.05, period)
    return times + rng.normal(0, jitter * period, len(times))


# ------------------------------------------------------------------------------------------------
# Target classes: each returns a mono dry source of n samples. Parameters are drawn per source (pitch, rate, decay),
# so a class varies within itself while keeping the spectro-temporal structure that tells it from the others.


def _alarm_clock(n, rng):
    """Beeping: groups of 2-4 short square-ish tones at 1.8-3.5 kHz, repeated about once a second."""
    f = rng.uniform(1800, 3500)
    beep = rng.uniform(0.05, 0.09)
    k, period = int(rng.integers(2, 5)), rng.uniform(0.5, 1.0)
    starts = [g + j * 2 * beep for g in np.arange(rng.uniform(0, 0.2), n / SR, period) for j in range(k)]
    return _gate(n, starts, [beep] * len(starts)) * _harmonics(f, n, [1.0, 0, 0.33, 0, 0.2], rng)


def _bicycle_bell(n, rng):
    """Metallic rings: inharmonic partials of a small bell (2.5-4.2 kHz), single dings or a lever trill."""
    f0 = rng.uniform(2500, 4200)
    ratios = np.array([1.0, 1.47, 2.09, 2.56]) * rng.uniform(0.98, 1.02, 4)
    decay = rng.uniform(0.3, 0.9)
    ring = _ring(f0 * ratios, [1.0, 0.6, 0.35, 0.2], decay / np.array([1, 1.6, 2.4, 3.2]), n, rng)
    strikes = (
        np.arange(int(rng.integers(3, 8))) / rng.uniform(12, 20)
        if rng.random() < 0.5
        else np.cumsum(rng.uniform(0.15, 0.35, int(rng.integers(1, 4))))
    )
    out = np.zeros(n)
    for s in strikes + rng.uniform(0, 0.1):
        _add(out, ring, s, rng.uniform(0.7, 1.0))
    return out


def _blender(n, rng):
    """Motor hum (100-300 Hz, many harmonics) whose speed and chopping noise fluctuate with the load."""
    load = 1 + 0.08 * _unit(_band(rng.standard_normal(n), 1, 6, order=1))
    f0 = rng.uniform(100, 300) * load * np.clip(_t(n) / 0.25, 0.3, 1)  # spin-up
    hum = _harmonics(f0, n, 1 / np.arange(1, 16), rng)
    chop = np.abs(_band(rng.standard_normal(n), rng.uniform(3, 8), 20, order=1))
    return _unit(hum) + 0.6 * _unit(chop) * _unit(_band(rng.standard_normal(n), 300, 8000))


def _buzzer(n, rng):
    """A harsh sawtooth buzz (90-400 Hz, flat to 10 kHz) in 1-3 steady bursts."""
    f0 = rng.uniform(90, 400)
    k = int(rng.integers(1, 4))
    lengths = rng.uniform(0.3, max(0.35, n / SR / k - 0.15), k)
    starts = np.cumsum(np.r_[0.02, lengths[:-1] + rng.uniform(0.1, 0.3, k - 1)])
    return _gate(n, starts, lengths) * _harmonics(f0, n, 1 / np.arange(1, 40) ** 0.7, rng)


def _clapping(n, rng):
    """Hand claps: 5-15 ms band-noise bursts (0.6-6 kHz) at 2.5-6 per second."""
    out = np.zeros(n)
    lo = rng.uniform(500, 1200)
    for s in _onsets(n, rng.uniform(2.5, 6), rng, 0.08):
        burst = _burst(int(0.08 * SR), lo * rng.uniform(0.8, 1.2), 6000, rng.uniform(0.005, 0.015), rng)
        _add(out, burst, s, rng.uniform(0.6, 1.0))
    return out


def _cough(n, rng):
    """1-3 coughs: an explosive burst then a noisy, weakly voiced vowel with formants, fast decay."""
    out = np.zeros(n)
    f0 = rng.uniform(100, 260)
    f1, f2 = rng.uniform(500, 850), rng.uniform(1100, 1800)
    t = 0.02
    for _ in range(int(rng.integers(1, 4))):
        length = int(rng.uniform(0.2, 0.4) * SR)
        src = rng.standard_normal(length) + 0.5 * _unit(_harmonics(f0 * rng.uniform(0.9, 1.1), length, [1, 0.5], rng))
        voice = _shaped(src, lambda f, _: _formants(f, [f1, f2, 2600], [120, 180, 300], [1, 0.7, 0.3]))
        env = np.exp(-_t(length) / rng.uniform(0.06, 0.12))
        _add(out, _unit(voice) * env + 2 * _burst(length, 200, 5000, 0.02, rng), t)
        t += length / SR + rng.uniform(0.1, 0.4)
    return out


def _cupboard(n, rng):
    """Hinge creak (stick-slip pulses exciting a 400-1200 Hz panel mode) then the door's closing thud and click."""
    out = np.zeros(n)
    creak_len = int(min(rng.uniform(0.3, 0.8), n / SR / 2) * SR)
    rate = rng.uniform(30, 60) * (1 + np.sin(np.linspace(0, np.pi * rng.uniform(0.5, 1.5), creak_len)))
    pulses = np.flatnonzero(np.diff(np.floor(_phase(rate, creak_len) / (2 * np.pi))) > 0)
    panel = _ring([rng.uniform(400, 1200), rng.uniform(1500, 2500)], [1, 0.4], [0.01, 0.005], 800, rng)
    creak = np.zeros(creak_len)
    for p in pulses:
        _add(creak, panel, p / SR, rng.uniform(0.5, 1.0))
    _add(out, creak, 0.02, 0.5)
    close = min(0.02 + creak_len / SR + rng.uniform(0.2, 1.2), n / SR - 0.3)
    thud = _ring([rng.uniform(80, 160)], [1.0], [rng.uniform(0.04, 0.08)], int(0.3 * SR), rng)
    _add(out, thud + 0.6 * _burst(int(0.3 * SR), 2000, 5000, 0.008, rng), close)
    return out


def _dishes(n, rng):
    """Clinking crockery: short inharmonic rings at 2-7 kHz at random instants, an occasional scrape."""
    out = np.zeros(n)
    for s in np.sort(rng.uniform(0, n / SR - 0.05, int(rng.poisson(rng.uniform(3, 8) * n / SR)) + 1)):
        base = rng.uniform(2000, 4500)
        clink = _ring(
            base * np.array([1, rng.uniform(1.3, 1.8), rng.uniform(2.1, 2.9)]),
            [1, 0.6, 0.4],
            rng.uniform(0.03, 0.15) * np.array([1, 0.7, 0.5]),
            int(0.4 * SR),
            rng,
        )
        _add(out, clink, s, rng.uniform(0.4, 1.0))
    if rng.random() < 0.4:
        _add(out, _burst(int(0.15 * SR), 1000, 4000, 0.05, rng), rng.uniform(0, n / SR - 0.2), 0.5)
    return out


def _doorbell(n, rng):
    """Ding-dong: 2-4 sustained harmonic notes (500-900 Hz) a third or a scale step apart, long decays."""
    out = np.zeros(n)
    f = rng.uniform(500, 900)
    steps = [0, -4] if rng.random() < 0.6 else list(rng.choice([0, -2, -4, -5, -7], int(rng.integers(3, 5))))
    spacing = rng.uniform(0.4, 0.7)
    decay = rng.uniform(0.8, 1.5)
    for j, step in enumerate(steps):
        fj = f * 2 ** (step / 12)
        note = _ring(fj * np.array([1, 2, 3, 4.2]), [1, 0.5, 0.25, 0.15], decay / np.array([1, 1.5, 2, 3]), n, rng)
        _add(out, note, 0.02 + j * spacing)
    return out


def _footsteps(n, rng):
    """Walking: a low heel thud (60-400 Hz) and a toe scuff/click (1-4 kHz) at 1.4-2.4 steps per second."""
    out = np.zeros(n)
    lo = rng.uniform(50, 90)
    for j, s in enumerate(_onsets(n, rng.uniform(1.4, 2.4), rng, 0.05)):
        side = 1.0 if j % 2 else rng.uniform(0.7, 0.9)
        _add(out, _burst(int(0.15 * SR), lo, 400, rng.uniform(0.02, 0.04), rng), s, side)
        _add(out, _burst(int(0.05 * SR), 1000, 4000, 0.008, rng), s + rng.uniform(0.05, 0.1), 0.3 * side)
    return out


def _hair_dryer(n, rng):
    """Bright, steady air rush (mostly above 0.8 kHz) with a faint motor whine, fading in and out."""
    rush = _band(rng.standard_normal(n), rng.uniform(700, 1200), 12000, order=2)
    whine = _harmonics(rng.uniform(250, 450), n, [1.0, 0.5, 0.3], rng)
    env = np.clip(np.minimum(_t(n) / 0.15, (n / SR - _t(n)) / 0.2), 0, 1)
    return env * (_unit(rush) + 0.15 * _unit(whine))


def _fans(n, rng):
    """Low-frequency flow noise (below 1.5 kHz) with a 40-120 Hz blade-pass tone and a slow swell."""
    flow = _band(rng.standard_normal(n), 50, rng.uniform(800, 1500), order=2)
    blade = _harmonics(rng.uniform(40, 120), n, [1.0, 0.5, 0.3], rng)
    swell = 1 + 0.2 * np.sin(_phase(rng.uniform(0.2, 1.0), n))
    return swell * (_unit(flow) + 0.5 * _unit(blade))


def _keyboard(n, rng):
    """Piano-like notes from a scale (C3-C6): harmonic partials whose upper ones decay faster; some chords."""
    out = np.zeros(n)
    scale = np.array([0, 2, 4, 5, 7, 9, 11])
    root = 48 + int(rng.integers(0, 24))
    t = 0.02
    while t < n / SR - 0.2:
        notes = [root + scale[int(rng.integers(0, 7))] + 12 * int(rng.integers(0, 2))]
        if rng.random() < 0.3:
            notes += [notes[0] + 4, notes[0] + 7]
        decay = rng.uniform(0.4, 1.2)
        for m in notes:
            f = 440 * 2 ** ((m - 69) / 12)
            k = np.arange(1, 9)
            partials = f * k * np.sqrt(1 + 1e-4 * k**2)  # slight string stiffness
            _add(out, _ring(partials, 1 / k**1.2, decay / k**0.7, int(2 * decay * SR), rng), t, 1 / len(notes))
        t += rng.uniform(0.15, 0.5)
    return out


def _percussion(n, rng):
    """A drum-kit groove: pitch-dropping kick, noisy snare, short hi-hats on a 16th grid at 80-160 BPM."""
    out = np.zeros(n)
    step = 60 / rng.uniform(80, 160) / 4
    kick_len = int(0.3 * SR)
    kick = np.sin(2 * np.pi * np.cumsum(50 + 110 * np.exp(-_t(kick_len) / 0.03)) / SR) * np.exp(-_t(kick_len) / 0.15)
    snare = _burst(kick_len, 1000, 6000, 0.06, rng) + 0.5 * _ring([180], [1], [0.05], kick_len, rng)
    hat = _band(rng.standard_normal(int(0.05 * SR)), 6000, 15000) * np.exp(-_t(int(0.05 * SR)) / 0.015)
    kicks, snares = {0, 8} | ({10} if rng.random() < 0.5 else set()), {4, 12}
    for i in range(int(n / SR / step)):
        s = 0.02 + i * step
        if i % 16 in kicks:
            _add(out, kick, s)
        if i % 16 in snares:
            _add(out, snare, s, 0.8)
        if i % 2 == 0 or rng.random() < 0.2:
            _add(out, hat, s, 0.3)
    return out


def _pour(n, rng):
    """Pouring liquid: noise bursts (gurgles at 8-20 Hz) through a cavity resonance that rises as the vessel fills."""
    start, end = rng.uniform(300, 600), rng.uniform(1500, 3000)
    duration = n / SR

    def cavity(f, t):
        fc = start * (end / start) ** (t / duration)
        return 0.05 + _formants(f, [fc], [0.15 * fc]) + 0.5 * _formants(f, [2.2 * fc], [0.2 * fc])

    gurgle = np.clip(_band(rng.standard_normal(n), rng.uniform(8, 12), 20, order=1), 0, None)
    stream = _shaped(rng.standard_normal(n), cavity)
    return _unit(gurgle) * _unit(stream) + 0.2 * _unit(_band(rng.standard_normal(n), 2000, 8000))


VOWELS = np.array([[730, 1090, 2440], [270, 2290, 3010], [530, 1840, 2480], [570, 840, 2410], [300, 870, 2240]])


def _speech(n, rng):
    """Talking: a glottal source (90-250 Hz, falling intonation) at 3-6 syllables/s, vowel formants changing per
    syllable, fricative noise between some syllables, pauses between words."""
    f0 = rng.uniform(90, 250) * (1 - 0.15 * _t(n) / (n / SR)) * (1 + 0.05 * _unit(_band(rng.standard_normal(n), 2, 6)))
    glottal = _harmonics(f0, n, 1 / np.arange(1, 40) ** 1.5, rng)
    starts, lengths, vowels, t = [], [], [], rng.uniform(0.02, 0.2)
    while t < n / SR - 0.15:
        length = rng.uniform(0.12, 0.3)
        starts.append(t)
        lengths.append(length)
        vowels.append(VOWELS[int(rng.integers(0, len(VOWELS)))] * rng.uniform(0.9, 1.15))
        t += length + (rng.uniform(0.2, 0.5) if rng.random() < 0.2 else rng.uniform(0.02, 0.08))
    starts, lengths = np.array(starts), np.array(lengths)

    def tract(f, frame_t):
        idx = np.clip(np.searchsorted(starts, frame_t[0], side="right") - 1, 0, len(starts) - 1)
        centres = np.array(vowels)[idx].T  # [3, frames]
        return _formants(f, centres[:, None, :], np.array([90, 120, 200])[:, None, None], np.array([1, 0.6, 0.3]))

    voiced = _gate(n, starts, lengths, ramp=0.02) * _shaped(glottal, tract)
    fric_starts = starts[rng.random(len(starts)) < 0.4] - 0.05
    fricative = _gate(n, fric_starts, [0.05] * len(fric_starts), ramp=0.01) * _band(rng.standard_normal(n), 3000, 9000)
    return _unit(voiced) + 0.4 * _unit(fricative + 1e-9)


def _typing(n, rng):
    """Keystrokes: bright 2-7 kHz clicks with a key-bottom thock and a weaker release, typed in bursts."""
    out = np.zeros(n)
    thock_f = rng.uniform(300, 800)
    t = 0.02
    while t < n / SR - 0.1:
        space = rng.random() < 0.12
        gain = rng.uniform(0.6, 1.0)
        click = _burst(int(0.05 * SR), 2000, 7000, 0.003, rng)
        thock = _ring([thock_f * (0.6 if space else 1.0)], [1.0], [0.01], int(0.05 * SR), rng)
        _add(out, click + (1.0 if space else 0.5) * thock, t, gain)
        _add(out, click, t + rng.uniform(0.06, 0.1), 0.3 * gain)
        t += rng.uniform(0.3, 0.8) if rng.random() < 0.1 else rng.uniform(0.08, 0.2)
    return out


def _vacuum(n, rng):
    """A loud broadband roar with a strong high motor whine (0.6-1.2 kHz) and its harmonics."""
    whine = _harmonics(rng.uniform(600, 1200) * (1 + 0.01 * np.sin(_phase(0.3, n))), n, [1.0, 0.4, 0.2], rng)
    roar = _band(rng.standard_normal(n), 80, 12000, order=1)
    env = np.clip(np.minimum(_t(n) / 0.3, (n / SR - _t(n)) / 0.3), 0, 1)
    return env * (_unit(roar) + 0.7 * _unit(whine))


# class -> (synthesis, duration range in seconds, capped at the clip length)
TARGET_CLASSES = {
    "AlarmClock": (_alarm_clock, (1.5, 5.0)),
    "BicycleBell": (_bicycle_bell, (0.8, 2.5)),
    "Blender": (_blender, (2.0, 6.0)),
    "Buzzer": (_buzzer, (0.8, 3.0)),
    "Clapping": (_clapping, (1.5, 5.0)),
    "Cough": (_cough, (0.6, 2.0)),
    "CupboardOpenClose": (_cupboard, (1.0, 3.0)),
    "Dishes": (_dishes, (1.5, 5.0)),
    "Doorbell": (_doorbell, (1.5, 3.5)),
    "FootSteps": (_footsteps, (2.0, 6.0)),
    "HairDryer": (_hair_dryer, (2.0, 6.0)),
    "MechanicalFans": (_fans, (2.0, 6.0)),
    "MusicalKeyboard": (_keyboard, (1.5, 5.0)),
    "Percussion": (_percussion, (2.0, 6.0)),
    "Pour": (_pour, (2.0, 5.0)),
    "Speech": (_speech, (1.5, 5.0)),
    "Typing": (_typing, (2.0, 6.0)),
    "VacuumCleaner": (_vacuum, (2.0, 6.0)),
}
assert tuple(TARGET_CLASSES) == LABELS  # one synthesiser per official class, in the official order


# ------------------------------------------------------------------------------------------------
# Interference: non-target sounds (never a label slot), of kinds none of the 18 classes has


def _crumpling(n, rng):
    """Crumpled paper/foil: dense random crackles in bursts."""
    density = np.clip(_band(rng.standard_normal(n), 1, 5, order=1), 0, None)
    crackle = rng.standard_normal(n) * (rng.random(n) < 0.02)
    return _unit(density) * _band(crackle, 1000, 9000)


def _engine(n, rng):
    """An idling engine: low firing harmonics (20-50 Hz) and rumble."""
    f0 = rng.uniform(20, 50) * (1 + 0.02 * np.sin(_phase(0.5, n)))
    return _unit(_harmonics(f0, n, [1, 0.8, 0.7, 0.5, 0.4, 0.3, 0.2, 0.1], rng)) + 0.3 * _unit(
        _band(rng.standard_normal(n), 40, 600)
    )


def _bird(n, rng):
    """Bird chirps: fast 2-6 kHz frequency sweeps, 50-150 ms, in phrases."""
    out = np.zeros(n)
    for s in _onsets(n, rng.uniform(2, 6), rng, 0.3):
        length = int(rng.uniform(0.05, 0.15) * SR)
        f = np.linspace(rng.uniform(2000, 4000), rng.uniform(3000, 6000), length)
        _add(out, np.sin(_phase(f, length)) * np.hanning(length), s)
    return out


def _siren(n, rng):
    """A wailing siren: a harmonic tone sweeping slowly between about 600 and 1400 Hz."""
    f = rng.uniform(600, 800) + rng.uniform(400, 600) * (0.5 + 0.5 * np.sin(_phase(1 / rng.uniform(1, 3), n)))
    return _harmonics(f, n, [1, 0.4, 0.2], rng)


INTERFERENCE_CATEGORIES = {
    "Crumpling": (_crumpling, (1.0, 4.0)),
    "Engine": (_engine, (2.0, 6.0)),
    "BirdChirp": (_bird, (1.0, 4.0)),
    "Siren": (_siren, (2.0, 6.0)),
}


def dry_sound(kind: str, seconds: float, rng) -> np.ndarray:
    """Mono dry source of a target class or interference category, ``seconds`` long, peak ``SOURCE_PEAK``."""
    table = {**TARGET_CLASSES, **INTERFERENCE_CATEGORIES}
    if kind not in table:
        raise ValueError(f"unknown synthetic sound {kind!r}; choose from {sorted(table)}")
    n = int(round(seconds * SR))
    x = table[kind][0](n, rng)
    fade = np.clip(np.minimum(np.arange(n), np.arange(n)[::-1]) / (0.005 * SR), 0, 1)  # 5 ms: no edge clicks
    x = x * fade
    return SOURCE_PEAK * x / (np.max(np.abs(x)) + 1e-12)


def _draw_seconds(kind: str, clip_seconds: float, rng) -> float:
    lo, hi = {**TARGET_CLASSES, **INTERFERENCE_CATEGORIES}[kind][1]
    hi = min(hi, clip_seconds)
    return round(float(rng.uniform(min(lo, 0.6 * hi), hi)), 3)


# ------------------------------------------------------------------------------------------------
# Rooms and backgrounds


def simulate_room(cfg: SynthT4Config, split: str, index: int) -> dict:
    """One shoebox room: FOA RIRs ``[P, 4, L]`` from ``positions_per_room`` source positions around one array."""
    rng = np.random.default_rng([cfg.seed, 3, _SPLITS.index(split), index])
    dims = np.array([rng.uniform(4, 10), rng.uniform(3, 8), rng.uniform(2.5, 4)])
    rt60 = float(rng.uniform(0.2, 0.7))
    mic = np.array([dims[0] / 2, dims[1] / 2, rng.uniform(1.2, 1.7)]) + np.r_[rng.uniform(-0.5, 0.5, 2), 0]
    length = int((0.8 * rt60 + 0.05) * SR)  # to about -48 dB: keeps files small, the rest is below the background
    irs, directions = [], []
    for _ in range(cfg.positions_per_room):
        az, el, dist = rng.uniform(-180, 180), rng.uniform(-25, 35), rng.uniform(1.0, 2.5)
        src = np.clip(mic + dist * _unit_vector(az, el), 0.3, dims - 0.3)
        rir = simulate_foa_rir(dims, rt60, src, mic, sr=SR)[:, :length]
        irs.append(np.pad(rir, ((0, 0), (0, length - rir.shape[1]))))
        directions.append(direction_of(src - mic))
    return dict(irs=np.stack(irs), directions=np.array(directions), dims=dims, rt60=rt60, mic=mic)


def background_noise(cfg: SynthT4Config, split: str, index: int) -> np.ndarray:
    """``[4, L]`` diffuse FOA background ``NOISE_EXTRA`` s longer than a clip: a tilted spectrum, band-limited by one
    filter common to all channels (a common linear filter keeps the field diffuse)."""
    rng = np.random.default_rng([cfg.seed, 4, _SPLITS.index(split), index])
    n = int(round((cfg.seconds + NOISE_EXTRA) * SR))
    field = diffuse_foa_noise(n, rng, slope_db_per_octave=float(rng.uniform(-6, -1.5)))
    field = _band(field, rng.uniform(30, 120), rng.uniform(4000, 14000), order=2)
    return 0.1 * field / np.sqrt(np.mean(field[0] ** 2))


NOISE_EXTRA = 4.0
_SPLITS = ("train", "valid", "test")


# ------------------------------------------------------------------------------------------------
# Scenes: plan (metadata only) and render (from the files named in the metadata)


@dataclass(frozen=True)
class Pools:
    """What a split offers to scenes: files (relative to their folder) with their lengths in samples."""

    sources: dict  # label -> [(file, samples)]
    interferers: list  # [(category, file, samples)]
    noise: list  # [(file, samples)]
    rooms: list  # [room metadata dict with "file" and "directions"]


def _segment(samples: int, seconds: float, rng) -> tuple[float, float]:
    """(source_time, event_duration) of a segment of at most ``seconds`` from a file of ``samples``."""
    duration = min(samples / SR, seconds)
    start = rng.uniform(0, samples / SR - duration) if samples / SR > duration else 0.0
    return round(float(start), 4), round(float(duration), 4)


def _unit_vector(azimuth: float, elevation: float) -> np.ndarray:
    """(x, y, z) of a direction: the X, Y, Z gains of its plane wave."""
    return foa_gains(azimuth, elevation)[[3, 1, 2]]


def _angle(a, b) -> float:
    """Angle in degrees between two (azimuth, elevation) directions."""
    return float(np.degrees(np.arccos(np.clip(_unit_vector(*a) @ _unit_vector(*b), -1, 1))))


def _event(label, file, samples, room, rir_index, snr, role, cfg, rng) -> dict:
    source_time, duration = _segment(samples, cfg.seconds, rng)
    return {
        "label": label,
        "source_file": file,
        "source_time": source_time,
        "event_time": round(float(rng.uniform(0, cfg.seconds - duration)), 4),
        "event_duration": duration,
        "rir_index": int(rir_index),
        "event_position": [np.round(_unit_vector(*room["directions"][rir_index]), 6).tolist()],
        "snr": round(float(snr), 3),
        "role": role,
    }


def plan_scene(name: str, split: str, pools: Pools, cfg: SynthT4Config, rng) -> dict:
    """Metadata of one scene (module docstring); draws follow the baseline's on-the-fly synthesis settings."""
    room = pools.rooms[int(rng.integers(len(pools.rooms)))]
    positions = len(room["directions"])
    fg, used, n_dupse = [], set(), 0
    for _ in range(int(rng.integers(cfg.events[0], cfg.events[1] + 1))):
        labels = [e["label"] for e in fg]
        label, places = None, range(positions)
        if n_dupse < cfg.max_dupse and labels and rng.random() < cfg.dupse_rate:
            label = labels[int(rng.integers(len(labels)))]
            same = [room["directions"][e["rir_index"]] for e in fg if e["label"] == label]
            places = [i for i in places if all(_angle(room["directions"][i], d) >= cfg.dupse_min_angle for d in same)]
            if not places or all(f in used for f, _ in pools.sources[label]):
                label, places = None, range(positions)  # no other file or no place far enough: a new class
        if label is None:
            fresh = [lab for lab in LABELS if lab not in labels]
            label = fresh[int(rng.integers(len(fresh)))]
        else:
            n_dupse += 1
        files = [(f, s) for f, s in pools.sources[label] if f not in used]
        file, samples = files[int(rng.integers(len(files)))]
        used.add(file)
        rir_index = places[int(rng.integers(len(places)))]
        fg.append(_event(label, file, samples, room, rir_index, rng.uniform(*cfg.snr_range), "foreground", cfg, rng))
    interferers = []
    for _ in range(int(rng.integers(cfg.interferers[0], cfg.interferers[1] + 1))):
        category, file, samples = pools.interferers[int(rng.integers(len(pools.interferers)))]
        snr = rng.uniform(*cfg.interferer_snr_range)
        interferers.append(
            _event(category, file, samples, room, rng.integers(positions), snr, "interference", cfg, rng)
        )
    noise_file, noise_samples = pools.noise[int(rng.integers(len(pools.noise)))]
    spare_seconds = noise_samples / SR - cfg.seconds
    background = {
        "label": None,
        "source_file": noise_file,
        "source_time": int(np.floor(rng.uniform(0, spare_seconds))) if spare_seconds > 0 else 0,
        "event_time": 0,
        "event_duration": cfg.seconds,
        "event_position": None,
        "snr": 0,
        "role": "background",
    }
    folder = "valid" if split == "test" else split
    return {
        "name": name,
        "config": {
            "duration": cfg.seconds,
            "sr": SR,
            "ref_db": REF_DB,
            "direct_range_ms": list(DIRECT_RANGE_MS),
            "foreground_dir": f"sound_event/{folder}",
            "interference_dir": f"interference/{folder}",
            "background_dir": f"noise/{folder}",
        },
        "room": {k: room[k] for k in ("file", "dims", "rt60", "mic_position")},
        "fg_events": sorted(fg, key=lambda e: e["event_time"]),
        "int_events": sorted(interferers, key=lambda e: e["event_time"]),
        "bg_events": [background],
    }


def _read(path: Path, start: int, count: int) -> np.ndarray:
    import soundfile as sf

    data, sr = sf.read(str(path), start=start, frames=count, dtype="float64", always_2d=True)
    if sr != SR:
        raise ValueError(f"{path}: sample rate {sr}, expected {SR}")
    return data.T


def render_scene(
    scene: dict, root: str | Path, rooms: dict | None = None
) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    """Render one scene of ``valid.json`` from the files under ``root``: the ``[4, T]`` float32 mixture and the
    ``(label, [T] float32 reference)`` of each target, in ``fg_events`` order (rules in the module docstring).
    ``rooms`` caches loaded room files by path."""
    root = Path(root)
    conf = scene["config"]
    sr, total = conf["sr"], int(round(conf["duration"] * conf["sr"]))
    rooms = {} if rooms is None else rooms
    room_file = scene["room"]["file"]
    if room_file not in rooms:
        rooms[room_file] = load_room_irs(root / room_file)
    irs = rooms[room_file].irs
    mixture = np.zeros((irs.shape[1], total))
    for bg in scene["bg_events"]:
        noise = _read(root / conf["background_dir"] / bg["source_file"], int(round(bg["source_time"] * sr)), total)
        mixture[:, : noise.shape[1]] += noise * 10 ** ((conf["ref_db"] + bg["snr"]) / 20 - _power_db(noise) / 20)
    direct = [int(ms * sr / 1000) for ms in conf["direct_range_ms"]]
    references = []
    for event in scene["fg_events"] + scene["int_events"]:
        folder = conf["foreground_dir"] if event["role"] == "foreground" else conf["interference_dir"]
        start, count = int(round(event["source_time"] * sr)), int(round(event["event_duration"] * sr))
        x = _read(root / folder / event["source_file"], start, count)[0]
        x = x / np.max(np.abs(x))
        rir = irs[event["rir_index"]].astype(np.float64)
        rir = rir / np.sqrt(np.mean(np.sum(rir**2, axis=-1)))
        wet = fftconvolve(x[None, :], rir, axes=1)
        scale = 10 ** ((conf["ref_db"] + event["snr"] - _power_db(wet)) / 20)
        onset = int(event["event_time"] * sr)
        end = min(onset + wet.shape[1], total)
        mixture[:, onset:end] += scale * wet[:, : end - onset]
        if event["role"] == "foreground":
            peak = int(np.argmax(np.abs(rir[0])))
            lo, hi = max(peak - direct[0], 0), min(peak + direct[1], rir.shape[1] - 1)
            early = np.zeros(rir.shape[1])
            early[lo : hi + 1] = rir[0, lo : hi + 1]
            reference = np.zeros(total)
            reference[onset:end] = scale * fftconvolve(x, early)[: end - onset]
            references.append((event["label"], reference.astype(np.float32)))
    return mixture.astype(np.float32), references


def _power_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(x)) + 1e-30))


def reference_name(scene_name: str, index: int, label: str) -> str:
    """Official oracle-target file name ``<soundscape>_<number>_<label>.wav``."""
    return f"{scene_name}_{index}_{label}.wav"


# ------------------------------------------------------------------------------------------------
# Jobs (each seeded on its own, so results do not depend on the number of workers) and the data set


def _write_wav(path: Path, data: np.ndarray, subtype: str) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.atleast_2d(data).T, SR, subtype=subtype, format="WAV")


def _source_job(args):
    root, cfg, split, kind, role, index = args
    stream = 1 if role == "foreground" else 2
    rng = np.random.default_rng([cfg.seed, stream, _SPLITS.index(split), _kind_id(kind), index])
    x = dry_sound(kind, _draw_seconds(kind, cfg.seconds, rng), rng)
    folder = "sound_event" if role == "foreground" else "interference"
    file = f"{kind}/{kind}_{index:04d}.wav"
    _write_wav(root / folder / split / file, x, "PCM_16")
    return role, split, kind, file, len(x)


def _room_job(args):
    root, cfg, split, index = args
    room = simulate_room(cfg, split, index)
    file = f"room_ir/{split}/room_{split}_{index:02d}.npz"
    (root / file).parent.mkdir(parents=True, exist_ok=True)
    save_room_irs(root / file, room["irs"], room["directions"], SR)
    meta = dict(dims=np.round(room["dims"], 4).tolist(), rt60=round(room["rt60"], 4))
    return split, {
        "file": file,
        **meta,
        "mic_position": np.round(room["mic"], 4).tolist(),
        "directions": room["directions"].tolist(),
    }


def _noise_job(args):
    root, cfg, split, index = args
    noise = background_noise(cfg, split, index)
    file = f"noise_{index:02d}.wav"
    _write_wav(root / "noise" / split / file, noise, "PCM_16")
    return split, file, noise.shape[1]


def _scene_job(args):
    root, scene = args
    mixture, references = render_scene(scene, root)
    folder = root / "synthesized" / "test"
    _write_wav(folder / "soundscape" / f"{scene['name']}.wav", mixture, "PCM_24")
    for k, (label, ref) in enumerate(references):
        _write_wav(folder / "oracle_target" / reference_name(scene["name"], k, label), ref, "PCM_24")
    return scene["name"]


def _kind_id(kind: str) -> int:
    return list({**TARGET_CLASSES, **INTERFERENCE_CATEGORIES}).index(kind)


def generate(cfg: SynthT4Config, out: str | Path, workers: int = 2, progress: bool = True) -> Path:
    """Write the whole data set to ``out`` atomically (a temporary folder renamed at the end)."""
    from tqdm import tqdm

    from asdzoo.atomic import atomic_dir

    with atomic_dir(out) as tmp:
        ctx = mp.get_context("fork") if workers > 1 else None
        pool = ctx.Pool(workers) if ctx else None

        def run(fn, jobs, what):
            results = pool.imap(fn, jobs) if pool else map(fn, jobs)
            return list(tqdm(results, total=len(jobs), desc=f"synth t4 {what}", disable=not progress))

        try:
            source_jobs = [
                (tmp, cfg, split, kind, role, i)
                for split in ("train", "valid")
                for role, table, count in (
                    ("foreground", TARGET_CLASSES, getattr(cfg, f"{split}_sources")),
                    ("interference", INTERFERENCE_CATEGORIES, getattr(cfg, f"{split}_interferers")),
                )
                for kind in table
                for i in range(count)
            ]
            sources = run(_source_job, source_jobs, "sources")
            rooms = run(
                _room_job,
                [(tmp, cfg, s, i) for s in ("train", "valid") for i in range(getattr(cfg, f"{s}_rooms"))],
                "rooms",
            )
            noise = run(
                _noise_job,
                [(tmp, cfg, s, i) for s in ("train", "valid") for i in range(getattr(cfg, f"{s}_noise"))],
                "noise",
            )
            pools = Pools(
                sources={
                    lab: [(f, n) for r, s, k, f, n in sources if r == "foreground" and s == "valid" and k == lab]
                    for lab in LABELS
                },
                interferers=[(k, f, n) for r, s, k, f, n in sources if r == "interference" and s == "valid"],
                noise=[(f, n) for s, f, n in noise if s == "valid"],
                rooms=[r for s, r in rooms if s == "valid"],
            )
            scenes = {
                split: [
                    plan_scene(f"{split}_{i:04d}", split, pools, cfg, np.random.default_rng([cfg.seed, 5, j, i]))
                    for i in range(getattr(cfg, f"{split}_scenes"))
                ]
                for j, split in enumerate(("valid", "test"))
            }
            (tmp / "metadata").mkdir()
            (tmp / "metadata" / "valid.json").write_text(json.dumps(scenes["valid"], indent=1))
            (tmp / "synthesized" / "test" / "soundscape").mkdir(parents=True)
            (tmp / "synthesized" / "test" / "oracle_target").mkdir()
            run(_scene_job, [(tmp, scene) for scene in scenes["test"]], "test scenes")
        finally:
            if pool:
                pool.close()
                pool.join()
    return Path(out)


def synth_t4_command(
    out: str | Path,
    seed: int = 0,
    small: bool = False,
    seconds: float | None = None,
    workers: int = 2,
    progress: bool = True,
) -> Path:
    """What ``asdzoo synth t4 OUT`` runs: the default set (or ``small``), optionally with another clip length."""
    overrides = {"seed": seed, **({"seconds": seconds} if seconds is not None else {})}
    cfg = SynthT4Config.small(**overrides) if small else SynthT4Config(**overrides)
    return generate(cfg, out, workers=workers, progress=progress)
