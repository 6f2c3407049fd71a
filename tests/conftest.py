"""Shared fixtures: one small synthetic data set per test session, an isolated ASDZOO_HOME."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from thresholds import test_seed

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The ``easy`` preset's physics at a small size with obvious faults only (severity 0.5-1): a unit test shows that a
# system detects at all on 10 test clips per group; how well it does on realistic data is the suite's job (README).
# The seed comes from ASDZOO_TEST_SEED so the pass marks in ``thresholds.py`` are measured over several seeds.
SMALL = dict(machines=("fan", "valve"), train_source=30, train_target=6, test_per_group=10, seconds=3.0)
SMALL_SEVERITY = (0.5, 1.0)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    from asdzoo.data.synth import SynthConfig, generate

    cfg = SynthConfig.from_preset("easy", **SMALL, severity=SMALL_SEVERITY, seed=test_seed())
    return generate(tmp_path_factory.mktemp("synth") / "t2", cfg, workers=2, progress=False)


@pytest.fixture(scope="session")
def pseudo_clean(synth_root) -> str:
    """The pseudo-clean near channels of ``synth_root`` (ILRMA, beats-distill's teacher input)."""
    from asdzoo.data.pseudo_clean import prepare_pseudo_clean

    return prepare_pseudo_clean(synth_root, workers=2, progress=False)["out"]


@pytest.fixture(scope="session")
def t4_root(tmp_path_factory) -> Path:
    """A small built-in FOA set (Task 4) for the taggers' and separators' training tests."""
    from asdzoo.data.synth_t4 import SynthT4Config, generate

    cfg = SynthT4Config.small(seed=test_seed(), train_sources=4, valid_scenes=24, test_scenes=3)
    return generate(cfg, tmp_path_factory.mktemp("t4") / "synth_t4", workers=2, progress=False)


TINY_BEATS = dict(
    encoder_layers=2, encoder_embed_dim=64, encoder_ffn_embed_dim=128, encoder_attention_heads=4, embed_dim=128
)


def fit_quietly(model, datamodule, **trainer_kwargs) -> None:
    """``Trainer.fit`` on CPU without logger, checkpoints, progress bar, summary or validation loop."""
    import lightning as L

    quiet = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    L.Trainer(accelerator="cpu", limit_val_batches=0, **quiet, **trainer_kwargs).fit(model, datamodule)


@pytest.fixture(scope="session")
def pretrained_beats(synth_root, tmp_path_factory) -> Path:
    """A tiny BEATs pre-trained on the synthetic training audio (BEATs iteration 1, 100 epochs, ~40 s on 2 cores):
    the stand-in for the official checkpoint, which cannot be downloaded here."""
    import lightning as L

    from asdzoo.data.task2 import Task2DataModule
    from asdzoo.encoders.beats_pretrain import BEATsPretrainer

    L.seed_everything(0)
    model = BEATsPretrainer(beats=TINY_BEATS, fbank_window="hamming")
    fit_quietly(
        model, Task2DataModule(str(synth_root), batch_size=8, segment_seconds=2.0, class_by=None), max_epochs=100
    )
    return model.export(tmp_path_factory.mktemp("beats") / "beats_pretrained.safetensors")


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
