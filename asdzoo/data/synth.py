"""Built-in synthetic DCASE 2026 Task 2 data (``asdzoo synth t2 OUT``).

Each clip is a room simulation (pyroomacoustics image-source RIRs) of one machine and one interfering
noise source, recorded by a near microphone (~0.3 m from the machine) and a far microphone (several
metres away, close to the interferer), written in the exact DCASE 2026 layout:
``<out>/<machine>/{train,test}/section_00_<domain>_<split>_<label>_<NNNN>_spd_<v>_room_<r>_noise_<n>.wav``
plus ``attributes_00.csv``. Domain shift: the target domain uses other operating speeds, another room
(longer reverberation) and another noise type. Anomalies are physical faults of graded severity.
Everything is derived from one seed: the same seed gives byte-identical files.
"""

from __future__ import annotations

import csv
import io
import multiprocessing as mp
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.signal import butter, fftconvolve, sosfilt

SAMPLE_RATE = 16000

# Operating speeds (shaft rotation in Hz) per domain; the target domain runs at speeds never seen in source.
SPEEDS = {"source": (18, 22, 26), "target": (31, 35)}
ROOMS = {
    "source": dict(name="A", dims=(7.0, 6.0, 3.2), rt60=0.35),
    "target": dict(name="B", dims=(11.0, 8.0, 4.0), rt60=0.7),
}
NOISES = {"source": 1, "target": 2}
FAULTS = {
    "fan": ("imbalance", "bearing"),
    "gearbox": ("tooth", "wear"),
    "valve": ("rattle", "leak"),
    "pump": ("cavitation", "bearing"),
}


@dataclass(frozen=True)
class SynthConfig:
    machines: tuple[str, ...] = ("fan", "gearbox", "valve")
    train_source: int = 60
    train_target: int = 6
    test_per_group: int = 12  # clips per (domain, normal/anomaly) in test/
    seconds: float = 6.0
    seed: int = 0
    severity: tuple[float, float] = (0.15, 0.8)


# ------------------------------------------------------------------------------------------------
# Sources


def _t(n: int) -> np.ndarray:
    return np.arange(n) / SAMPLE_RATE


def _band(x: np.ndarray, lo: float, hi: float, order: int = 4) -> np.ndarray:
    sos = butter(order, [lo, min(hi, SAMPLE_RATE / 2 - 50)], btype="band", fs=SAMPLE_RATE, output="sos")
    return sosfilt(sos, x)


def _harmonics(f0: np.ndarray | float, n: int, amps, rng) -> np.ndarray:
    """Sum of harmonics k*f0 (f0 may vary over time: the phase is integrated)."""
    f0 = np.broadcast_to(np.asarray(f0, dtype=float), (n,))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    return sum(a * np.sin((k + 1) * phase + rng.uniform(0, 2 * np.pi)) for k, a in enumerate(amps))


def _impulses(times: np.ndarray, n: int, freq: float, decay: float, rng) -> np.ndarray:
    """Damped resonances (freq Hz, decay time s) struck at ``times`` seconds."""
    length = int(5 * decay * SAMPLE_RATE)
    tt = _t(length)
    ring = np.exp(-tt / decay) * np.sin(2 * np.pi * freq * tt)
    out = np.zeros(n + length)
    for t0 in times:
        i = int(t0 * SAMPLE_RATE)
        if 0 <= i < n:
            out[i : i + length] += rng.uniform(0.7, 1.0) * ring
    return out[:n]


def _speed_track(speed: float, n: int, rng) -> np.ndarray:
    """Shaft speed with slow drift (+-1.5 %), as real machines never run perfectly steady."""
    drift = np.interp(np.arange(n), np.linspace(0, n, 6), rng.normal(0, 0.008, 6))
    return speed * (1 + drift)


def machine_sound(kind: str, speed: float, n: int, rng, fault: str | None, severity: float) -> np.ndarray:
    f_rot = _speed_track(speed, n, rng)
    t = _t(n)
    if kind == "fan":
        blades = 7
        x = _harmonics(blades * f_rot, n, [1.0, 0.5, 0.3, 0.15, 0.08], rng)
        flow = _band(rng.standard_normal(n), 150, 4000) * (1 + 0.1 * np.sin(2 * np.pi * np.cumsum(f_rot) / SAMPLE_RATE))
        x = x + 1.2 * flow / (flow.std() + 1e-9) * 0.5
        if fault == "imbalance":  # strong once-per-revolution component and amplitude modulation
            x = x * (1 + 0.5 * severity * np.sin(2 * np.pi * np.cumsum(f_rot) / SAMPLE_RATE))
            x = x + 1.0 * severity * _harmonics(f_rot, n, [1.0, 0.4], rng)
        elif fault == "bearing":  # outer-race defect: impulses at 3.6 x shaft speed exciting a 3 kHz mode
            period = 1 / (3.6 * speed)
            times = np.arange(rng.uniform(0, period), n / SAMPLE_RATE, period)
            times = times + rng.normal(0, 0.03 * period, len(times))  # slip of the rolling elements
            x = x + 1.5 * severity * _impulses(times, n, 3000, 0.004, rng)
    elif kind == "gearbox":
        teeth = 19
        mesh = teeth * f_rot
        shaft_phase = 2 * np.pi * np.cumsum(f_rot) / SAMPLE_RATE
        x = _harmonics(mesh, n, [1.0, 0.45, 0.2], rng) * (1 + 0.15 * np.sin(shaft_phase))
        x = x + 0.6 * _harmonics(f_rot * 2, n, [0.3, 0.2], rng) + 0.15 * _band(rng.standard_normal(n), 80, 6000)
        if fault == "tooth":  # broken tooth: one mesh-frequency burst per revolution
            times = np.cumsum(np.full(int(n / SAMPLE_RATE * speed) + 2, 1 / speed)) + rng.uniform(0, 1 / speed)
            x = x + 1.6 * severity * _impulses(times, n, float(np.mean(mesh)) * 2, 0.006, rng)
        elif fault == "wear":  # worn flanks: stronger higher mesh harmonics and broadband mesh noise
            x = x + 0.9 * severity * _harmonics(mesh, n, [0, 0.4, 0.6, 0.5], rng)
            x = x + 0.5 * severity * _band(rng.standard_normal(n), 1500, 5000)
    elif kind == "valve":
        cycle = speed / 12.0  # open/close cycles per second scale with the operating speed
        opens = np.arange(rng.uniform(0, 1 / cycle), n / SAMPLE_RATE, 1 / cycle)
        closes = opens + 0.45 / cycle
        x = 0.8 * _impulses(opens, n, 1400, 0.01, rng) + 1.0 * _impulses(closes, n, 2300, 0.008, rng)
        gate = (np.mod(t * cycle - opens[0] * cycle, 1.0) < 0.45).astype(float)
        hiss = _band(rng.standard_normal(n), 2000, 6000)
        x = x + 0.25 * gate * hiss / (hiss.std() + 1e-9) + 0.3 * _harmonics(50.0, n, [1.0, 0.5, 0.25], rng)
        if fault == "rattle":  # loose part: random extra clicks at a different resonance
            k = int(rng.poisson(6 * n / SAMPLE_RATE))
            x = x + 1.0 * severity * _impulses(rng.uniform(0, n / SAMPLE_RATE, k), n, 3600, 0.005, rng)
        elif fault == "leak":  # seat leak: hiss while the valve should be closed
            x = x + 0.6 * severity * (1 - gate) * hiss / (hiss.std() + 1e-9)
    elif kind == "pump":
        x = _harmonics(f_rot * 5, n, [1.0, 0.6, 0.3], rng) + 0.4 * _band(rng.standard_normal(n), 100, 2500)
        if fault == "cavitation":  # bubble collapse: random broadband crackle
            crackle = rng.standard_normal(n) * (rng.random(n) < 0.01)
            x = x + 6.0 * severity * _band(crackle, 2500, 7000)
        elif fault == "bearing":
            times = np.arange(0, n / SAMPLE_RATE, 1 / (4.2 * speed))
            x = x + 1.5 * severity * _impulses(times, n, 3300, 0.004, rng)
    else:
        raise ValueError(f"unknown synthetic machine {kind!r}; choose from {sorted(FAULTS)}")
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def interferer(noise_type: int, n: int, rng) -> np.ndarray:
    """noise 1: pink (HVAC-like) noise; noise 2: babble-like syllabic-rate modulated band noise."""
    if noise_type == 1:
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.maximum(np.fft.rfftfreq(n, 1 / SAMPLE_RATE), 20.0)
        x = np.fft.irfft(spec / np.sqrt(f), n)
    else:
        x = np.zeros(n)
        for _ in range(4):
            env = np.clip(_band(rng.standard_normal(n), 2, 8, order=2), 0, None)
            x += env * _band(rng.standard_normal(n), rng.uniform(200, 500), rng.uniform(1500, 3500))
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


# ------------------------------------------------------------------------------------------------
# Room acoustics


@lru_cache(maxsize=32)
def room_rirs(domain: str, variant: int, seed: int) -> tuple[tuple[np.ndarray, ...], ...]:
    """RIRs ``[mic][source]`` (mics: near, far; sources: machine, interferer) of one room layout."""
    import pyroomacoustics as pra

    room = ROOMS[domain]
    rng = np.random.default_rng([seed, variant, 7 if domain == "source" else 11])
    dims = np.array(room["dims"])
    absorption, max_order = pra.inverse_sabine(room["rt60"], dims)
    shoebox = pra.ShoeBox(dims, fs=SAMPLE_RATE, materials=pra.Material(absorption), max_order=min(max_order, 12))
    machine = np.array([1.5 + rng.uniform(0, 0.5), 1.5 + rng.uniform(0, 0.5), 0.8])
    direction = rng.normal(size=3) * np.array([1, 1, 0.2])
    near = machine + 0.3 * direction / np.linalg.norm(direction)
    far = np.array([dims[0] - 1.5 - rng.uniform(0, 0.8), dims[1] - 1.5 - rng.uniform(0, 0.8), 1.5])
    noise_src = far + np.array([-0.8, 0.4 + rng.uniform(0, 0.3), 0.2])
    shoebox.add_source(machine)
    shoebox.add_source(noise_src)
    shoebox.add_microphone_array(np.c_[near, far])
    shoebox.compute_rir()
    keep = int(0.6 * SAMPLE_RATE)
    return tuple(tuple(np.asarray(shoebox.rir[m][s][:keep]) for s in range(2)) for m in range(2))


# ------------------------------------------------------------------------------------------------
# Clips and the data set


@dataclass(frozen=True)
class ClipPlan:
    machine: str
    split: str
    domain: str
    label: str
    index: int
    speed: int
    rng_key: tuple[int, ...]

    @property
    def attributes(self) -> str:
        return f"spd_{self.speed}_room_{ROOMS[self.domain]['name']}_noise_{NOISES[self.domain]}"

    @property
    def file_name(self) -> str:
        return f"section_00_{self.domain}_{self.split}_{self.label}_{self.index:04d}_{self.attributes}.wav"


def plan_clips(cfg: SynthConfig) -> list[ClipPlan]:
    plans = []
    for m_idx, machine in enumerate(cfg.machines):
        if machine not in FAULTS:
            raise ValueError(f"unknown synthetic machine {machine!r}; choose from {sorted(FAULTS)}")
        groups = [("train", "source", "normal", cfg.train_source), ("train", "target", "normal", cfg.train_target)]
        groups += [("test", d, lab, cfg.test_per_group) for d in ("source", "target") for lab in ("normal", "anomaly")]
        for g_idx, (split, domain, label, count) in enumerate(groups):
            speeds = SPEEDS[domain]
            for i in range(count):
                key = (cfg.seed, m_idx, g_idx, i)
                speed = speeds[i % len(speeds)]
                plans.append(ClipPlan(machine, split, domain, label, i, speed, key))
    return plans


def render_clip(plan: ClipPlan, cfg: SynthConfig) -> np.ndarray:
    """``[2, samples]`` float32 near/far recording of one planned clip."""
    rng = np.random.default_rng(list(plan.rng_key))
    n = int(round(cfg.seconds * SAMPLE_RATE))
    fault = None
    severity = 0.0
    if plan.label == "anomaly":
        fault = FAULTS[plan.machine][plan.index % 2]
        severity = rng.uniform(*cfg.severity)
    src = machine_sound(plan.machine, plan.speed * rng.uniform(0.98, 1.02), n, rng, fault, severity)
    noise = interferer(NOISES[plan.domain], n, rng)
    rirs = room_rirs(plan.domain, int(rng.integers(0, 3)), cfg.seed)
    machine_gain = 10 ** (rng.uniform(-3, 3) / 20)
    noise_gain = 10 ** (rng.uniform(-2, 2) / 20) * 0.8
    out = np.zeros((2, n))
    for mic in range(2):
        out[mic] = fftconvolve(machine_gain * src, rirs[mic][0])[:n] + fftconvolve(noise_gain * noise, rirs[mic][1])[:n]
    out += 1e-3 * rng.standard_normal((2, n))  # microphone self-noise
    return out.astype(np.float32)


def _render_to_bytes(args) -> tuple[ClipPlan, bytes]:
    import soundfile as sf

    plan, cfg, scale = args
    buf = io.BytesIO()
    sf.write(buf, (render_clip(plan, cfg) * scale).T, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return plan, buf.getvalue()


def generate(out: str | Path, cfg: SynthConfig = SynthConfig(), workers: int = 2, progress: bool = True) -> Path:
    """Write the whole data set to ``out`` atomically (a temporary folder renamed at the end)."""
    from tqdm import tqdm

    from asdzoo.atomic import atomic_dir

    plans = plan_clips(cfg)
    # One fixed scale for every clip keeps relative levels while avoiding 16-bit clipping.
    scale = 0.02
    with atomic_dir(out) as tmp:
        jobs = [(p, cfg, scale) for p in plans]
        ctx = mp.get_context("fork") if workers > 1 else None
        pool = ctx.Pool(workers) if ctx else None
        results = pool.imap(_render_to_bytes, jobs, chunksize=4) if pool else map(_render_to_bytes, jobs)
        try:
            for plan, data in tqdm(results, total=len(jobs), desc="synth t2", disable=not progress, unit="clip"):
                folder = tmp / plan.machine / plan.split
                folder.mkdir(parents=True, exist_ok=True)
                (folder / plan.file_name).write_bytes(data)
        finally:
            if pool:
                pool.close()
                pool.join()
        for machine in cfg.machines:
            with open(tmp / machine / "attributes_00.csv", "w", newline="") as f:
                w = csv.writer(f, lineterminator="\n")
                w.writerow(["file_name", "d1p", "d1v", "d2p", "d2v", "d3p", "d3v"])
                for p in plans:
                    if p.machine == machine:
                        w.writerow(
                            [
                                f"{machine}/{p.split}/{p.file_name}",
                                "spd",
                                p.speed,
                                "room",
                                ROOMS[p.domain]["name"],
                                "noise",
                                NOISES[p.domain],
                            ]
                        )
    return Path(out)


def checksum(root: str | Path) -> int:
    """CRC over every file's relative path and bytes (determinism checks)."""
    crc = 0
    for p in sorted(Path(root).rglob("*")):
        if p.is_file():
            crc = zlib.crc32(str(p.relative_to(root)).encode(), crc)
            crc = zlib.crc32(p.read_bytes(), crc)
    return crc
