"""Room impulse-response files in either format the Task 4 data comes in: asdzoo's ``.npz`` (the built-in data) or
the official SOFA files. One entry point, so that readers of ``room_ir/`` need not know the format."""

from __future__ import annotations

import os
from pathlib import Path

from asdzoo.audio.foa import RoomIRs, load_room_irs

ROOM_FILES = (".npz", ".sofa")


def load_room(path: str | os.PathLike) -> RoomIRs:
    """One room from ``path`` by its suffix; any fault is a ValueError naming the file."""
    if Path(path).suffix.lower() == ".sofa":
        from asdzoo.audio.sofa import read_sofa_room  # h5py only when a SOFA room is read

        return read_sofa_room(path)
    return load_room_irs(path)
