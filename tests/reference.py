"""Access to ``../shared/reference`` (CI has ``shared/`` beside the checkout).

Without it, tests skip with a reason; with ``CI=true`` (or ``1``) a missing folder is a failure, so a CI job
can never pass by silently skipping every reference test.
"""

import os
from pathlib import Path

import pytest

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def reference_dir(name: str, root: Path = REFERENCE) -> Path:
    path = Path(root) / name
    if not path.is_dir():
        if running_in_ci():
            pytest.fail(
                f"reference vectors not found at {path}: CI={os.environ['CI']} requires ../shared/reference "
                "beside the checkout (reference tests must run in CI, not skip)",
                pytrace=False,
            )
        pytest.skip(f"reference vectors not found at {path} (../shared/reference is absent)")
    return path
