"""Access to ``../shared/reference`` (CI has ``shared/`` beside the checkout); tests skip with a reason without it."""

from pathlib import Path

import pytest

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


def reference_dir(name: str) -> Path:
    path = REFERENCE / name
    if not path.is_dir():
        pytest.skip(f"reference vectors not found at {path} (../shared/reference is absent)")
    return path
