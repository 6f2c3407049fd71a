"""SOFA (AES69) room impulse-response files, read with h5py: the rooms of the official DCASE 2026 Task 4 data.

Facts used, with their sources:

- The dev set stores one room per file, ``room_ir/{train,valid}/<place>.sofa``. SpAudSyn's ``SofaRoom``
  (``nttcslab/SpAudSyn`` ``src/room.py``) opens it with the ``sofa`` package (python-sofa), takes the sizes of
  ``Data.IR`` by dimension name (M measurements = source positions, R receivers = mixture channels, N samples) and
  ``Data.SamplingRate``; a source position is one measurement, named by its ``SourcePosition`` as cartesian
  coordinates (``Source.Position.get_values(system="cartesian")``), which scene metadata stores and matches back with
  ``np.isclose(..., atol=1e-6)``. It passes the receivers on unchanged and ignores ``Data.Delay`` and the listener and
  receiver variables; a file at another rate it resamples (asdzoo refuses it). Its ``example/metadata.json`` describes
  such a room: 32 kHz, 4 channels, 108 positions, 174763 samples.
- A SOFA file is netCDF-4, i.e. HDF5: each variable is a dataset of its name (``Data.IR``), its dimensions are
  attached dimension scales named ``M``, ``R``, ``N``, ``E``, ``I``, ``C`` and ``Type``/``Units`` are attributes
  (checked against files written by netCDF4-python). ``Data.IR`` is ``mrn`` for DataType FIR (``SingleRoomSRIR``,
  ``GeneralFIR``) and ``mrne`` for FIR-E (``SingleRoomMIMOSRIR``) in ``sofacoustics/SOFAtoolbox``
  ``conventions/*.csv``; python-sofa's FIR-E order is ``('M', 'R', 'E', 'N')`` (``datatypes/FIRE.py``, used by
  ``MultiSpeakerBRIR``). ``SourcePosition`` and ``ListenerPosition`` are ``IC`` or ``MC``, ``Type`` cartesian (Units
  metre) or spherical (Units "degree, degree, metre": azimuth counter-clockwise from +x, elevation up from the
  horizontal plane, radius; python-sofa ``spatial/coordinates.py``); ``ListenerView`` / ``ListenerUp`` (default
  [1 0 0] / [0 0 1]) turn the listener, and Up takes View's ``Type``.
- Channel order: no source found says which FOA convention the official files use, and SOFA has no attribute for
  it. The receivers are kept in file order, as SpAudSyn does, so rooms and the official mixtures agree; asdzoo names
  that order AmbiX (W, Y, Z, X with SN3D, :mod:`asdzoo.audio.foa`).
"""

from __future__ import annotations

import contextlib
import operator
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asdzoo.audio.foa import RoomIRs, direction_of, foa_gains
from asdzoo.audio.io import AudioError

# Data.IR axes: FIR (mrn), FIR-E as SOFAtoolbox's SingleRoomMIMOSRIR (mrne) and python-sofa's FIRE (M, R, E, N)
IR_LAYOUTS = (("M", "R", "N"), ("M", "R", "N", "E"), ("M", "R", "E", "N"))
_DEGREES = {"degree", "degrees", "deg", "°"}
_RADIANS = {"radian", "radians", "rad"}


@dataclass(frozen=True)
class SofaIRs:
    """``Data.IR`` of a SOFA room read one measurement at a time, as SpAudSyn does: a room of ~100 positions of ~5 s
    is hundreds of MB that every data worker would otherwise hold. ``irs[p]`` is position ``p``'s ``[R, N]``."""

    path: Path
    dims: tuple[str, ...]  # Data.IR's axes in the file, one of IR_LAYOUTS
    shape: tuple[int, int, int]  # (M, R, N)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> np.ndarray:
        select = (operator.index(index), *(0 if d == "E" else slice(None) for d in self.dims[1:]))
        with _sofa_file(self.path) as sofa:
            ir = sofa["Data.IR"][select]
        if not np.isfinite(ir).all():
            raise AudioError(self.path, f"non-finite values in Data.IR of measurement {index}")
        return ir


def read_sofa_room(path: str | os.PathLike) -> RoomIRs:
    """One room from a SOFA file: responses (read lazily), rate, ``SourcePosition`` as stored (cartesian) and the
    source directions seen from the listener (azimuth, elevation in degrees, in its View/Up frame)."""
    path = Path(path)
    with _sofa_file(path) as sofa:
        dims, shape = _ir_layout(sofa, path)
        sr = _sampling_rate(sofa, path)
        source = _coordinates(sofa, "SourcePosition", path, shape[0])
        listener = _coordinates(sofa, "ListenerPosition", path, shape[0], default=(0.0, 0.0, 0.0))
        view = _coordinates(sofa, "ListenerView", path, shape[0], default=(1.0, 0.0, 0.0))
        up = _coordinates(sofa, "ListenerUp", path, shape[0], default=(0.0, 0.0, 1.0), type_from="ListenerView")
    directions = np.stack(direction_of(_in_listener_frame(source - listener, view, up)), axis=-1)
    return RoomIRs(irs=SofaIRs(path, dims, shape), directions=directions, sr=sr, room=path.stem, positions=source)


@contextlib.contextmanager
def _sofa_file(path: Path):
    """The open HDF5 file; failures to open or read it (not HDF5, truncated, corrupt) name the file."""
    import h5py

    try:
        with h5py.File(path, "r") as sofa:
            yield sofa
    except FileNotFoundError:
        raise AudioError(path, "file not found") from None
    except OSError as err:
        raise AudioError(path, f"unreadable SOFA file (netCDF-4 / HDF5): {err}") from None


def _text(value) -> str:
    """An attribute as text: netCDF writes fixed-length bytes, other writers str or one-element arrays."""
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0] if value.size else ""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def _dimension_names(data) -> tuple[str, ...] | None:
    """netCDF-4 attaches each dimension to a variable as an HDF5 dimension scale named after it (``/M``)."""
    names = tuple(dim[0].name.rsplit("/", 1)[-1] if len(dim) else None for dim in data.dims)
    return None if None in names else names


def _ir_layout(sofa, path: Path) -> tuple[tuple[str, ...], tuple[int, int, int]]:
    """Axis names of ``Data.IR`` and its (M, R, N) sizes; unnamed axes are SOFA's FIR order (M, R, N). A single
    emitter (FIR-E) is one source per position; more are refused."""
    if "Data.IR" not in sofa:
        kind = _text(sofa.attrs.get("DataType")) or "missing"
        raise AudioError(path, f"no Data.IR variable (DataType {kind}): expected impulse responses (FIR)")
    data = sofa["Data.IR"]
    dims = _dimension_names(data) or (("M", "R", "N") if data.ndim == 3 else None)
    if dims not in IR_LAYOUTS:
        raise AudioError(path, f"Data.IR of shape {data.shape} with axes {dims}: expected one of {IR_LAYOUTS}")
    sizes = dict(zip(dims, data.shape))
    if sizes.get("E", 1) != 1:
        raise AudioError(path, f"{sizes['E']} emitters per measurement: only one source per position is read")
    return dims, (sizes["M"], sizes["R"], sizes["N"])


def _sampling_rate(sofa, path: Path) -> int:
    if "Data.SamplingRate" not in sofa:
        raise AudioError(path, "no Data.SamplingRate variable")
    rates = np.unique(np.asarray(sofa["Data.SamplingRate"][()], dtype=float))
    if rates.size != 1 or rates[0] != np.round(rates[0]):
        raise AudioError(path, f"Data.SamplingRate {rates.tolist()}: expected one whole rate for all measurements")
    return int(rates[0])


def _coordinates(sofa, name: str, path: Path, measurements: int, default=None, type_from: str | None = None):
    """``[M, 3]`` cartesian rows of a SOFA coordinate variable (an ``IC`` row repeats over M); spherical values are
    converted. ``default`` stands in for an absent variable; ``type_from`` names the variable holding its Type."""
    if name not in sofa:
        if default is None:
            raise AudioError(path, f"no {name} variable")
        return np.tile(np.asarray(default, dtype=float), (measurements, 1))
    values = np.asarray(sofa[name][()], dtype=float)
    if values.ndim != 2 or values.shape[1] != 3 or values.shape[0] not in (1, measurements):
        raise AudioError(path, f"{name} of shape {values.shape}, expected (1, 3) or ({measurements}, 3)")
    attrs = sofa[type_from if type_from and type_from in sofa else name].attrs
    kind = _text(attrs.get("Type"))
    if kind == "spherical":
        values = _spherical_to_cartesian(values, _text(attrs.get("Units")) or "degree", name, path)
    elif kind != "cartesian":
        raise AudioError(path, f"{name}:Type is {kind or 'missing'}, expected cartesian or spherical")
    return np.broadcast_to(values, (measurements, 3)).copy()


def _spherical_to_cartesian(values: np.ndarray, units: str, name: str, path: Path) -> np.ndarray:
    """(azimuth, elevation, radius) rows to (x, y, z); the angle unit is the first of ``Units``."""
    angle_unit = units.split(",")[0].strip().lower()
    if angle_unit in _RADIANS:
        angles = np.rad2deg(values[:, :2])
    elif angle_unit in _DEGREES:
        angles = values[:, :2]
    else:
        raise AudioError(path, f"{name}:Units {units!r}: angles neither in degrees nor in radians")
    return foa_gains(angles[:, 0], angles[:, 1])[:, [3, 1, 2]] * values[:, 2:3]  # X, Y, Z gains = unit vector


def _in_listener_frame(offsets: np.ndarray, view: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Offsets ``[M, 3]`` in the listener's axes: x along View, z along Up made orthogonal to it, y = z x x (left)."""
    x = view / np.linalg.norm(view, axis=1, keepdims=True)
    z = up - np.sum(up * x, axis=1, keepdims=True) * x
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    y = np.cross(z, x)
    return np.stack([np.sum(offsets * axis, axis=1) for axis in (x, y, z)], axis=1)
