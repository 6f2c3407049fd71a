"""The system contract (issue 9): a new system is its module plus one registry entry; the Task 2 pipeline runs any
detector; configs come from constructor arguments; the four bugs found in the architecture review stay fixed."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from toy_energy import EnergyDetector, GainDetector, log_energy

import asdzoo
from asdzoo.cli import main
from asdzoo.hub import save_pretrained
from asdzoo.tasks.task2 import dev_official_score, load_machine
from asdzoo.zoo import ZOO, ZooEntry, register

from conftest import fit_quietly, machine_batches

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def toy_entry():
    """The one registry entry the toy system needs (removed again after the test)."""
    entry = register(
        ZooEntry(
            "toy-energy",
            architecture="toy_energy:EnergyDetector",
            task="task2",
            description="Log-energy deviation from the training clips.",
            paper="-",
            license="Apache-2.0",
            weights="training-free",
        )
    )
    yield entry
    ZOO.pop(entry.name)


def test_a_new_system_needs_only_its_module_and_one_entry(toy_entry, synth_root, tmp_path):
    out = tmp_path / "scores"
    assert main(["score", "toy-energy", "--data-root", str(synth_root), "--out", str(out), "--quiet"]) == 0
    # every written score is the closed form recomputed here from the raw clips
    tr, te = machine_batches(synth_root, "fan")
    e_train = log_energy(tr["wave"], tr["lengths"])
    expected = ((log_energy(te["wave"], te["lengths"]) - e_train.mean()).abs() / e_train.std()).numpy()
    names = [c.name for c in load_machine(synth_root, "fan").test]
    rows = dict(csv.reader((out / "anomaly_score_fan_section_00_test.csv").read_text().splitlines()))
    assert np.allclose([float(rows[n]) for n in names], expected, rtol=1e-12)
    # a fitted toy model saves and loads by its registered class, identical scores
    det = asdzoo.load("toy-energy").fit(tr["wave"], tr["domain"], tr["lengths"])
    save_pretrained(det, tmp_path / "toy", name="toy-energy")
    cfg = json.loads((tmp_path / "toy" / "config.json").read_text())
    assert cfg["architecture"] == "EnergyDetector" and cfg["config"] == {"channel": 0}
    assert (tmp_path / "toy" / "README.md").read_text().startswith("---\nlibrary_name: asdzoo")
    assert "# toy-energy" in (tmp_path / "toy" / "README.md").read_text()
    again = asdzoo.load(tmp_path / "toy")
    assert torch.equal(again.score(te["wave"], te["lengths"]), det.score(te["wave"], te["lengths"]))


def test_pipeline_refuses_an_object_that_is_no_detector(synth_root):
    with pytest.raises(TypeError, match="not a Task 2 detector"):
        dev_official_score(torch.nn.Linear(2, 2), synth_root)


def test_config_is_captured_from_init_arguments_through_kwargs():
    from asdzoo.systems.beats_distill import BeatsDistillStudent

    from conftest import TINY_BEATS

    s = BeatsDistillStudent(beats=TINY_BEATS, lora_rank=4, tau=3.0, warn_random_init=False)
    cfg = s.config
    # the student's own argument, a shared one given through **kwargs, and a shared default
    assert cfg["tau"] == 3.0 and cfg["lora_rank"] == 4 and cfg["asp_hidden"] == 128
    assert cfg["teacher"] is None and cfg["beats_checkpoint"] is None
    rebuilt = BeatsDistillStudent(**cfg)
    assert rebuilt.config == cfg
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in s.state_dict().items()}
    assert EnergyDetector(channel=1).config == {"channel": 1}


def test_a_subclass_default_for_a_base_argument_is_what_the_config_saves():
    """A subclass that re-declares a base argument with its own default (``x=5, **kwargs``) used to save the
    base's default instead (issue 11: SSLAM's EAT-base defaults)."""
    from asdzoo.config import CapturesInit

    class Base(CapturesInit):
        def __init__(self, x: int = 1, y: int = 2):
            self.x, self.y = x, y

    class Sub(Base):
        def __init__(self, x: int = 5, **kwargs):
            super().__init__(x=x, **kwargs)

    assert Sub().config == {"x": 5, "y": 2} and Sub(x=7, y=3).config == {"x": 7, "y": 3}
    assert Sub(**Sub(x=7).config).x == 7


def test_bug1_card_is_the_registry_card_without_importing_the_registry_first(tmp_path):
    """``save_pretrained(..., name=...)`` used to look the name up in a registry nobody had loaded (as under
    train_cli.py), writing the plain '# AEBaseline' card."""
    code = (
        "from asdzoo.systems.ae_baseline import AEBaseline\n"
        "from asdzoo.hub import save_pretrained\n"
        f"save_pretrained(AEBaseline(hidden=8), {str(tmp_path / 'ae')!r}, name='dcase-ae-mse')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    card = (tmp_path / "ae" / "README.md").read_text()
    assert "# dcase-ae-mse" in card and "# AEBaseline" not in card


def test_bug2_ae_covariances_are_fitted_once_under_train_cli(synth_root, tmp_path, monkeypatch):
    from asdzoo.callbacks import SavePretrained
    from asdzoo.data.frames import LogMelFrameDataModule
    from asdzoo.systems.ae_baseline import AEBaseline

    calls = []
    original = AEBaseline.fit_covariances
    monkeypatch.setattr(AEBaseline, "fit_covariances", lambda self, *a: calls.append(1) or original(self, *a))
    model = AEBaseline(hidden=16, score_type="mahalanobis")
    fit_quietly(
        model,
        LogMelFrameDataModule(str(synth_root), "valve"),
        max_epochs=1,
        callbacks=[SavePretrained(str(tmp_path / "ae"))],
    )
    assert len(calls) == 1
    assert bool(asdzoo.load(tmp_path / "ae").has_domain.all())


def test_bug3_feature_size_is_declared_once(synth_root, tmp_path):
    """``--model.n_mels 64`` used to leave the data module at 128 bins and crash on a shape mismatch."""
    from train_cli import main as train

    out = tmp_path / "ae64"
    train(
        [
            "fit",
            "--config",
            str(REPO / "asdzoo/configs/dcase_ae.yaml"),
            "--model.n_mels",
            "64",
            "--data.root",
            str(synth_root),
            "--data.machine",
            "valve",
            "--trainer.max_epochs",
            "1",
            "--trainer.default_root_dir",
            str(tmp_path / "run"),
            "--trainer.callbacks",
            json.dumps([{"class_path": "asdzoo.callbacks.SavePretrained", "init_args": {"dirpath": str(out)}}]),
        ]
    )
    assert asdzoo.load(out).encoder[0].in_features == 64 * 5


def test_bug4_frame_cache_key_follows_weights_and_code(synth_root, tmp_path, isolated_home):
    """The cache key had no weights digest: a retrained checkpoint at the same path served stale frames."""
    from asdzoo.systems.genrep import GenRep

    from conftest import TINY_BEATS

    torch.manual_seed(0)
    a = GenRep(encoder="beats", encoder_args=dict(cfg=TINY_BEATS))
    torch.manual_seed(1)
    b = GenRep(encoder="beats", encoder_args=dict(cfg=TINY_BEATS))
    assert a.config == b.config and a.frame_cache_key()["encoder_config"] == b.frame_cache_key()["encoder_config"]
    assert a.frame_cache_key() != b.frame_cache_key()
    assert a.frame_cache_key()["code"] and a.frame_cache_key() == a.frame_cache_key()
    # through the pipeline: the second model must not be served the first one's cached frames
    from asdzoo.tasks.task2 import fit_and_score

    data = load_machine(synth_root, "valve")
    cache = isolated_home / "cache"
    sa, _ = fit_and_score(a, data, cache)
    sb, _ = fit_and_score(b, data, cache)
    sb_fresh, _ = fit_and_score(b, data, None)
    assert np.array_equal(sb, sb_fresh) and not np.allclose(sa, sb)


def test_dev_selection_restores_a_best_epoch_that_is_not_the_last(synth_root):
    """Gains 0.5, 1.0, -1.0 over three epochs: the first two rank clips alike, the last inverts the ranking."""
    from asdzoo.callbacks import DevSetSelection

    model = GainDetector(schedule=(0.5, 1.0, -1.0))
    selection = DevSetSelection(data_root=str(synth_root))
    loader = DataLoader([torch.zeros(1)], batch_size=1)
    import lightning as L

    L.Trainer(
        accelerator="cpu",
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[selection],
    ).fit(model, loader)
    scores = dict(selection.history)
    assert scores[0] == pytest.approx(scores[1], abs=1e-12) and scores[2] < 0.5 < scores[0]
    assert selection.best_epoch == 0 and float(model.gain.detach()) == pytest.approx(0.5)
    assert dev_official_score(model, synth_root) == pytest.approx(selection.best_score, abs=1e-12)
