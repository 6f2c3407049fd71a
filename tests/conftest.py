"""Shared fixtures: one small synthetic data set per test session, an isolated ASDZOO_HOME."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SMALL = dict(machines=("fan", "valve"), train_source=30, train_target=6, test_per_group=10, seconds=3.0, seed=0)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    from asdzoo.data.synth import SynthConfig, generate

    return generate(tmp_path_factory.mktemp("synth") / "t2", SynthConfig(**SMALL), workers=2, progress=False)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ASDZOO_HOME", str(tmp_path / "asdzoo_home"))
    return tmp_path / "asdzoo_home"


def machine_batches(root, machine):
    """(train batch, test batch) of one machine as collated tensors."""
    from asdzoo.data.task2 import Task2Dataset, collate_clips, scan_clips

    out = []
    for split in ("train", "test"):
        ds = Task2Dataset(scan_clips(root, machine, split))
        out.append(collate_clips([ds[i] for i in range(len(ds))]))
    return out
