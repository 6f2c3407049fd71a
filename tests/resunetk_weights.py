"""The deterministic weight formula of ``../shared/reference/resunetk`` (its README, "Weight formula").

The official ResUNet30 is too large to ship, so its reference vectors were produced with weights that anyone can
regenerate from the state_dict key alone: a splitmix64 stream seeded by the FNV-1a hash of the key gives uniform
values in [-1, 1), scaled by a rule chosen from the key's suffix and the tensor's rank.
"""

from __future__ import annotations

import numpy as np

_MASK64 = (1 << 64) - 1
_FNV_OFFSET, _FNV_PRIME = 0xCBF29CE484222325, 0x100000001B3
_SEED_MIX = 0xD1B54A32D192ED03
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1, _MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_MANTISSA_BITS = 24  # the top 24 bits of each 64-bit word become one value


def fnv1a_64(text: str) -> int:
    h = _FNV_OFFSET
    for byte in text.encode("utf-8"):
        h = ((h ^ byte) * _FNV_PRIME) & _MASK64
    return h


def uniform_pm1(key: str, n: int, seed: int = 0) -> np.ndarray:
    """``n`` float64 values in [-1, 1): splitmix64 of consecutive counters, top 24 bits, centred and scaled."""
    start = np.uint64(fnv1a_64(key) ^ ((seed * _SEED_MIX) & _MASK64))
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps modulo 2**64 on purpose
        z = start + np.arange(n, dtype=np.uint64) + np.uint64(_GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX2)
        z = z ^ (z >> np.uint64(31))
    top = (z >> np.uint64(64 - _MANTISSA_BITS)).astype(np.int64) - (1 << (_MANTISSA_BITS - 1))
    return top.astype(np.float64) / (1 << (_MANTISSA_BITS - 1))


def formula_weight(key: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """The tensor stored under ``key`` (an official state_dict name), computed in float64 and rounded once."""
    if key.endswith("num_batches_tracked"):
        return np.zeros(shape, np.int64)
    v = uniform_pm1(key, int(np.prod(shape)) if shape else 1, seed)
    if key.endswith("running_mean"):
        w = 0.1 * v
    elif key.endswith("running_var"):
        w = 1.0 + 0.25 * v
    elif key.endswith(".weight") and len(shape) == 1:  # BatchNorm / LayerNorm scale
        w = 1.0 + 0.1 * v
    elif key.endswith(".bias"):
        w = 0.05 * v
    else:  # conv / linear / transposed-conv weight in torch's layout: fan = product of all but the first axis
        w = np.sqrt(3.0 / np.prod(shape[1:])) * v
    return w.astype(np.float32).reshape(shape)
