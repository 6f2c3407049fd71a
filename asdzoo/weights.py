"""Official weight files that registry entries are built from (the GenRep paper systems' frozen encoders).

asdzoo does not redistribute these files. An entry names each file it needs (:class:`WeightFile`) and refers to it
in its kwargs as ``"weights:<key>"``; :func:`asdzoo.hub.resolve_weight_files` finds the files when it is loaded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REFERENCE = re.compile(r"^weights:([a-z0-9][a-z0-9_.-]*)$")


@dataclass(frozen=True)
class WeightFile:
    """One official file: ``filename`` is its name as published (a relative path where the loader reads the
    folder name too, as M2D's sizes are parsed from it); ``where`` says how to get it; ``url`` only where it is a
    direct link to the file itself."""

    key: str
    filename: str
    where: str
    url: str | None = None

    def __post_init__(self):
        if not REFERENCE.match(f"weights:{self.key}"):
            raise ValueError(f"weight file key {self.key!r}: use lower-case letters, digits, '-', '_' or '.'")
        if Path(self.filename).is_absolute() or ".." in Path(self.filename).parts:
            raise ValueError(f"weight file {self.key!r}: filename must be a relative path inside a weights folder")


def referenced_keys(kwargs) -> list[str]:
    """Keys of every ``"weights:<key>"`` string in a (nested) kwargs structure, in order of appearance."""
    if isinstance(kwargs, str):
        m = REFERENCE.match(kwargs)
        return [m[1]] if m else []
    values = kwargs.values() if isinstance(kwargs, Mapping) else kwargs if isinstance(kwargs, (list, tuple)) else []
    keys: list[str] = []
    for v in values:
        keys += [k for k in referenced_keys(v) if k not in keys]
    return keys


def substitute(kwargs, paths: Mapping[str, Path]):
    """``kwargs`` with every ``"weights:<key>"`` replaced by the resolved file path."""
    if isinstance(kwargs, str):
        m = REFERENCE.match(kwargs)
        return str(paths[m[1]]) if m else kwargs
    if isinstance(kwargs, Mapping):
        return {k: substitute(v, paths) for k, v in kwargs.items()}
    if isinstance(kwargs, (list, tuple)):
        return type(kwargs)(substitute(v, paths) for v in kwargs)
    return kwargs
