"""On-disk cache of encoder frames, keyed by file content and by everything that determines the frames (encoder
configuration, a digest of its weights and of the front-end code), so a second run with another pooling or backend
never re-embeds and a retrained checkpoint or a front-end fix never serves stale frames
(``$ASDZOO_HOME/cache/frames``)."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from asdzoo.atomic import atomic_path


def file_digest(path: str | Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_digest(module: torch.nn.Module) -> str:
    """Digest of a module's parameters and buffers (names, shapes, dtypes, values)."""
    h = hashlib.sha1()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@functools.lru_cache
def code_digest(*packages: str) -> str:
    """Digest of the source files of asdzoo sub-packages (e.g. ``audio``, ``encoders``): any code change to how
    frames are computed gives new cache entries. Read once per process (the pipeline asks per machine)."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha1()
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


class FrameCache:
    def __init__(self, root: str | Path, key: dict):
        digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.dir = Path(root) / digest
        self.key = key

    def _path(self, file_sha: str, view: str) -> Path:
        return self.dir / f"{file_sha}.{view}.safetensors"

    def get(self, file_sha: str, view: str) -> torch.Tensor | None:
        p = self._path(file_sha, view)
        return load_file(str(p))["frames"] if p.is_file() else None

    def put(self, file_sha: str, view: str, frames: torch.Tensor) -> None:
        with atomic_path(self._path(file_sha, view)) as tmp:
            save_file({"frames": frames.contiguous()}, str(tmp))
