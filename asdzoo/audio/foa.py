"""First-order Ambisonics (FOA) helpers: plane-wave encoding, image-source FOA room responses, diffuse FOA noise and
the per-room impulse-response files of asdzoo's built-in Task 4 data.

Convention (``asdzoo.data.s5.FOA_CHANNELS``): AmbiX, i.e. ACN channel order (W, Y, Z, X) with SN3D normalisation, so a
unit plane wave from azimuth ``az`` and elevation ``el`` gives W = 1, Y = sin(az) cos(el), Z = sin(el),
X = cos(az) cos(el). Azimuth is measured counter-clockwise from +x (the front) seen from above, so +y is the left
(az = 90 deg); elevation is positive upwards. Room coordinates are used as the array's frame: front = room +x.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asdzoo.data.s5 import FOA_CHANNELS, SAMPLE_RATE

SPEED_OF_SOUND = 343.0  # m/s, pyroomacoustics' default (``pra.constants.get("c")``)


def foa_gains(azimuth_deg, elevation_deg) -> np.ndarray:
    """SN3D gains ``[..., 4]`` (W, Y, Z, X) of plane waves from the given directions (degrees)."""
    az = np.deg2rad(np.asarray(azimuth_deg, dtype=float))
    el = np.deg2rad(np.asarray(elevation_deg, dtype=float))
    az, el = np.broadcast_arrays(az, el)
    return np.stack([np.ones_like(az), np.sin(az) * np.cos(el), np.sin(el), np.cos(az) * np.cos(el)], axis=-1)


def encode_foa(signal_or_ir: np.ndarray, azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """``[4, L]`` FOA of a mono signal (or impulse response) arriving as a plane wave from one direction."""
    x = np.asarray(signal_or_ir)
    if x.ndim != 1:
        raise ValueError(f"encode_foa expects a mono signal [L], got shape {x.shape}")
    return foa_gains(azimuth_deg, elevation_deg)[:, None] * x[None, :]


def direction_of(vector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Azimuth and elevation (degrees) of vectors ``[..., 3]`` (x, y, z) in the convention above."""
    v = np.asarray(vector, dtype=float)
    azimuth = np.degrees(np.arctan2(v[..., 1], v[..., 0]))
    elevation = np.degrees(np.arctan2(v[..., 2], np.hypot(v[..., 0], v[..., 1])))
    return azimuth, elevation


def simulate_foa_rir(
    room_dim,
    rt60: float | None,
    source_pos,
    mic_pos,
    sr: int = SAMPLE_RATE,
    max_order: int = 15,
    absorption: float | None = None,
    diffuse_tail: bool = True,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """``[4, L]`` FOA room impulse response of a shoebox room: pyroomacoustics image sources, then a diffuse tail.

    Each image source is one plane wave at the microphone: delay = distance / c, amplitude = wall damping /
    (4 pi distance), direction = from the microphone towards the image; it is placed with pyroomacoustics' windowed-sinc
    fractional delay and encoded with its own FOA gains, so reflections arrive from their true directions (not a mono
    response copied to four channels). Give ``rt60`` (Sabine inversion sets the wall absorption) or ``absorption``
    (energy absorption of every wall). Time zero is the emission: the direct path peaks at ``distance / c * sr``.

    Image sources up to ``max_order`` reflections cover every path up to ``max_order * min(room_dim) / sqrt(3)``
    metres; later the response would thin out (and image counts grow as order^3), so from there ``diffuse_tail`` adds
    diffuse FOA noise at the images' expected level there (energy c / (4 pi V) per second: the image density
    4 pi c^3 t^2 / V times the 1/(4 pi c t)^2 energy of each, damped by (1 - absorption) per reflection, one per mean
    free path 4V/S), decaying at ``rt60`` (or, given ``absorption``, Eyring's rate). ``rng`` draws the tail; by default
    it is seeded from the geometry (deterministic).
    """
    dims = np.asarray(room_dim, dtype=float)
    if (rt60 is None) == (absorption is None):
        raise ValueError("give exactly one of rt60 or absorption")
    if rt60 is not None:
        import pyroomacoustics as pra

        absorption = float(pra.inverse_sabine(rt60, dims)[0])
    rir = _image_sources(dims, absorption, source_pos, mic_pos, sr, max_order)
    if not diffuse_tail:
        return rir
    volume, surface = np.prod(dims), 2 * (dims[0] * dims[1] + dims[0] * dims[2] + dims[1] * dims[2])
    if rt60 is None:  # Eyring: energy falls by (1 - absorption) per reflection, one per mean free path 4V/S
        rt60 = 6 * np.log(10) * 4 * volume / (-SPEED_OF_SOUND * surface * np.log1p(-absorption))
    start = int(max_order * dims.min() / np.sqrt(3) / SPEED_OF_SOUND * sr)  # images complete up to here
    fade = int(0.005 * sr)
    length = max(rir.shape[1], start + fade + int(rt60 * sr))
    if rng is None:
        rng = np.random.default_rng(np.frombuffer(np.r_[dims, source_pos, mic_pos, absorption].tobytes(), np.uint32))
    # expected image-source energy per sample at ``start`` (Eyring), then the decay of ``rt60``
    reflections = SPEED_OF_SOUND * surface * start / sr / (4 * volume)
    at_start = SPEED_OF_SOUND / (4 * np.pi * volume * sr) * (1 - absorption) ** reflections
    level = np.sqrt(at_start) * 10 ** (-3 * (np.arange(length) - start) / sr / rt60)
    ramp = np.clip((np.arange(length) - start) / fade, 0, 1)
    out = np.zeros((4, length))
    out[:, : rir.shape[1]] = rir * np.cos(0.5 * np.pi * ramp[: rir.shape[1]])
    tail = diffuse_foa_noise(length, rng, slope_db_per_octave=0.0, sr=sr)  # white, like the frequency-flat images
    return out + tail * level * np.sin(0.5 * np.pi * ramp)


def _image_sources(dims, absorption, source_pos, mic_pos, sr, max_order) -> np.ndarray:
    """``[4, L]`` FOA sum of the image sources, high-passed as pyroomacoustics does its own RIRs."""
    import pyroomacoustics as pra
    from scipy.signal import sosfiltfilt

    room = pra.ShoeBox(dims, fs=sr, materials=pra.Material(float(absorption)), max_order=int(max_order))
    room.add_source(np.asarray(source_pos, dtype=float))
    room.add_microphone(np.asarray(mic_pos, dtype=float))
    room.image_source_model()
    source = room.sources[0]
    visible = room.visibility[0][0].astype(bool)
    offsets = source.images[:, visible].T - np.asarray(mic_pos, dtype=float)[None, :]
    distance = np.linalg.norm(offsets, axis=1)
    amplitude = source.damping[0, visible] / (4 * np.pi * distance)
    gains = foa_gains(*direction_of(offsets)) * amplitude[:, None]  # [images, 4]

    taps = pra.constants.get("frac_delay_length")
    half = (taps - 1) // 2
    delay = distance / SPEED_OF_SOUND * sr
    whole = np.floor(delay).astype(int)
    kernels = pra.fractional_delay(delay - whole)  # [images, taps], centred on tap ``half``
    # build with ``half`` samples of lead-in so the sinc's leading taps fit, then drop it: time zero = emission
    index = (whole[:, None] + np.arange(taps)[None, :]).ravel()
    length = int(whole.max()) + taps
    rir = np.stack([np.bincount(index, (kernels * g[:, None]).ravel(), minlength=length) for g in gains.T])[:, half:]
    # all images are positive pressure impulses, so their sum piles up at DC; pyroomacoustics removes that with a
    # zero-phase high-pass (constants rir_hpf_fc = 10 Hz, rir_hpf_kwargs) in compute_rir: the same on every channel
    sos = pra.utilities.design_highpass_filter_sos(
        sr, pra.constants.get("rir_hpf_fc"), **pra.constants.get("rir_hpf_kwargs")
    )
    return sosfiltfilt(sos, rir, axis=1)


def diffuse_foa_noise(
    n_samples: int,
    rng: np.random.Generator,
    n_directions: int = 64,
    slope_db_per_octave: float = -3.0,
    sr: int = SAMPLE_RATE,
) -> np.ndarray:
    """``[4, n_samples]`` spatially diffuse FOA noise, W at unit RMS.

    A diffuse field is many uncorrelated plane waves from all directions: independent coloured noises from
    ``n_directions`` directions spread evenly over the sphere (a Fibonacci lattice, randomly rotated) are encoded and
    summed, so W is uncorrelated with X, Y, Z and each of X, Y, Z carries a third of W's power (SN3D). Random rather
    than evenly spread directions would leave a chance net direction (W-X correlation ~ 1/sqrt(n_directions)).
    ``slope_db_per_octave``: spectral tilt (-3 = pink).
    """
    k = np.arange(n_directions) + 0.5
    z = 1 - 2 * k / n_directions
    ring = np.sqrt(1 - z**2)
    golden = np.pi * (3 - np.sqrt(5)) * k
    lattice = np.stack([ring * np.cos(golden), ring * np.sin(golden), z], axis=1)
    rotation, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    gains = foa_gains(*direction_of(lattice @ rotation.T))  # [directions, 4]
    # white noise per direction drawn directly as its spectrum (independent complex Gaussians), then tilted
    freqs = np.fft.rfftfreq(n_samples, 1 / sr)
    spectra = rng.standard_normal((n_directions, len(freqs))) + 1j * rng.standard_normal((n_directions, len(freqs)))
    tilt = (np.maximum(freqs, 20.0) / 1000.0) ** (slope_db_per_octave / (20 * np.log10(2)))
    tilt[0] = 0.0  # no DC
    field = np.fft.irfft((gains.T @ spectra) * tilt, n_samples)
    return field / (np.sqrt(np.mean(field[0] ** 2)) + 1e-12)


@dataclass(frozen=True)
class RoomIRs:
    """FOA impulse responses of one room measured (or simulated) at many source positions around one array."""

    # [positions, 4, L], channels FOA_CHANNELS; a SOFA room's (asdzoo.audio.sofa.SofaIRs) reads one position at a time
    irs: np.ndarray | Sequence[np.ndarray]
    directions: np.ndarray  # [positions, 2] azimuth, elevation in degrees, convention of this module
    sr: int
    room: str
    positions: np.ndarray | None = None  # [positions, 3] a SOFA room's SourcePosition (x, y, z): what SpAudSyn names


# One file per room, many source positions: asdzoo's own ``.npz`` (written here for the built-in data, directions as
# azimuth/elevation) or an official SOFA file (``room_ir/<split>/<place>.sofa``), read by :mod:`asdzoo.audio.sofa`,
# which cites the facts it follows; :func:`asdzoo.audio.rooms.load_room` reads either.
def save_room_irs(path: str | os.PathLike, irs: np.ndarray, directions: np.ndarray, sr: int) -> None:
    """Write one room's responses ``irs [P, 4, L]`` and source ``directions [P, 2]`` (az, el deg) to ``path`` (.npz),
    atomically; the room name is the file's stem."""
    from asdzoo.atomic import atomic_path

    irs = np.asarray(irs, dtype=np.float32)
    directions = np.asarray(directions, dtype=np.float64)
    if irs.ndim != 3 or irs.shape[1] != len(FOA_CHANNELS) or directions.shape != (irs.shape[0], 2):
        raise ValueError(f"expected irs [P, 4, L] and directions [P, 2], got {irs.shape} and {directions.shape}")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, irs=irs, directions=directions, sr=np.int64(sr), channels=np.array(FOA_CHANNELS))


def load_room_irs(path: str | os.PathLike) -> RoomIRs:
    """Read a file written by :func:`save_room_irs`; any fault is a ValueError naming the file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            channels = tuple(str(c) for c in data["channels"])
            irs, directions, sr = data["irs"], data["directions"], int(data["sr"])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: unreadable room IR file ({err})") from None
    if channels != FOA_CHANNELS:
        raise ValueError(f"{path}: channel order {channels}, expected {FOA_CHANNELS}")
    if not np.isfinite(irs).all():
        raise ValueError(f"{path}: non-finite impulse responses")
    return RoomIRs(irs=irs, directions=directions, sr=sr, room=Path(path).stem)
