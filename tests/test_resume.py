"""Resumable training (issue 16): every training config writes Lightning ``last`` checkpoints during an epoch, and a
``train_cli.py fit`` killed mid-epoch and resumed with ``--ckpt_path last`` ends on the uninterrupted run's weights,
bit for bit on CPU. The kill test drives the real CLI in subprocesses on the AE baseline (the cheapest config), with
its step-checkpoint interval set to one epoch of the tiny data: a plain ``DataLoader`` cannot skip the batches of a
half-done epoch, so only a checkpoint on an epoch boundary resumes exactly (asdzoo.callbacks.ResumableCheckpoint)."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "asdzoo/configs").glob("*.yaml"))
# 10 clips x 90 vectors of 3 s (128 mels x 5 frames, hop 512) = 900 vectors = 9 batches of 100 per epoch.
BATCH, STEPS_PER_EPOCH, EPOCHS = 100, 9, 3
KILL_AT = STEPS_PER_EPOCH + 4  # mid-way through the second epoch, after the step checkpoint of step 9


class HangAfterStep(L.Callback):
    """Holds a run at a known point so that the kill lands there: at the start of the batch after global step
    ``step`` (that step's checkpoints are on disk), write ``marker`` and wait until killed. Lightning's SIGTERM
    handler only sets ``trainer.received_sigterm`` (the loop stops at its next check), so the wait ends on that."""

    def __init__(self, step: int, marker: str):
        self.step, self.marker = step, marker

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            Path(self.marker).write_text(str(os.getpid()))
            while not trainer.received_sigterm:
                time.sleep(0.05)


def _callback_class(path: str) -> type:
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_config_writes_last_checkpoints_mid_epoch(config):
    """A Lightning ModelCheckpoint with save_last and every_n_train_steps, and checkpointing left on."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    trainer = yaml.safe_load(config.read_text())["trainer"]
    assert trainer.get("enable_checkpointing", True), f"{config.name}: enable_checkpointing is off"
    steps = [
        cb.get("init_args", {})
        for cb in trainer.get("callbacks", [])
        if issubclass(_callback_class(cb["class_path"]), ModelCheckpoint)
    ]
    resumable = [a for a in steps if a.get("save_last") and a.get("every_n_train_steps", 0) > 0]
    assert resumable, f"{config.name}: no ModelCheckpoint with save_last and every_n_train_steps"


def test_dev_set_selection_state_survives_a_checkpoint(tmp_path):
    """The best dev epoch and its weights go through a checkpoint file (weights_only load) unchanged."""
    from asdzoo.callbacks import DevSetSelection

    before = DevSetSelection(every_n_epochs=2)
    before.best_score, before.best_epoch, before.history = 0.7, 3, [(1, 0.5), (3, 0.7)]
    before.best_state = {"w": torch.arange(4.0)}
    torch.save({"cb": before.state_dict()}, tmp_path / "c.ckpt")
    after = DevSetSelection(every_n_epochs=2)
    after.load_state_dict(torch.load(tmp_path / "c.ckpt", weights_only=True)["cb"])
    assert (after.best_score, after.best_epoch, after.history) == (0.7, 3, [(1, 0.5), (3, 0.7)])
    assert torch.equal(after.best_state["w"], torch.arange(4.0))


@pytest.fixture(scope="module")
def ae_data(tmp_path_factory) -> Path:
    from asdzoo.data.synth import SynthConfig, generate

    cfg = SynthConfig.from_preset(
        "easy", machines=("fan",), train_source=8, train_target=2, test_per_group=1, seconds=3.0, seed=0
    )
    return generate(tmp_path_factory.mktemp("resume_synth") / "t2", cfg, workers=2, progress=False)


def _ae_config(root: Path, out: Path, hang: HangAfterStep | None = None) -> Path:
    """dcase_ae.yaml on the tiny data, its step checkpoint every epoch; optionally held at ``hang``."""
    cfg = yaml.safe_load((REPO / "asdzoo/configs/dcase_ae.yaml").read_text())
    cfg["trainer"].update(max_epochs=EPOCHS, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False)
    cfg["data"]["init_args"].update(root=str(root), machine="fan", batch_size=BATCH)
    callbacks = cfg["trainer"]["callbacks"]
    (ckpt,) = [cb for cb in callbacks if cb["class_path"] == "asdzoo.callbacks.ResumableCheckpoint"]
    ckpt["init_args"]["every_n_train_steps"] = STEPS_PER_EPOCH
    if hang is not None:
        callbacks.append({"class_path": "test_resume.HangAfterStep", "init_args": vars(hang)})
    path = out / ("killed.yaml" if hang else "run.yaml")
    path.write_text(yaml.safe_dump(cfg))
    return path


def _fit_cmd(config: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "train_cli.py"), "fit", "--config", str(config), *extra]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}


def _fit(run_dir: Path, root: Path, *extra: str) -> dict[str, torch.Tensor]:
    """An uninterrupted (or resumed) run in ``run_dir``; returns the written model's state."""
    import asdzoo

    subprocess.run(_fit_cmd(_ae_config(root, run_dir), *extra), cwd=run_dir, env=_env(), check=True)
    return asdzoo.load(run_dir / "runs/dcase_ae/fan/model").state_dict()


def _fit_and_kill(run_dir: Path, root: Path, sig: signal.Signals) -> None:
    marker = run_dir / "held"
    config = _ae_config(root, run_dir, HangAfterStep(KILL_AT, str(marker)))
    proc = subprocess.Popen(_fit_cmd(config), cwd=run_dir, env=_env())
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before step {KILL_AT}"
            assert time.monotonic() < deadline, f"no step {KILL_AT} within 120 s"
            time.sleep(0.1)
        proc.send_signal(sig)
        # SIGKILL: rc -9. SIGTERM: Lightning stops at its next loop check with SIGTERMException, a SystemExit
        # without a code, so rc 0 then: "not finished" is checked on the missing model instead.
        rc = proc.wait(timeout=60)
        assert rc == (-signal.SIGKILL if sig == signal.SIGKILL else 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def uninterrupted(ae_data, tmp_path_factory) -> dict[str, torch.Tensor]:
    return _fit(tmp_path_factory.mktemp("uninterrupted"), ae_data)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_run_resumes_to_the_uninterrupted_weights(sig, ae_data, uninterrupted, tmp_path):
    """Killed at step 13 (mid epoch 2) with the last checkpoint at step 9; ``--ckpt_path last`` must end on the
    uninterrupted run's weights and Mahalanobis covariances exactly (tolerance 0 on CPU)."""
    _fit_and_kill(tmp_path, ae_data, sig)
    assert not (tmp_path / "runs/dcase_ae/fan/model").exists(), "the killed run must not have finished"
    last = tmp_path / "runs/dcase_ae/checkpoints/last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == STEPS_PER_EPOCH

    resumed = _fit(tmp_path, ae_data, "--ckpt_path", "last")
    assert resumed.keys() == uninterrupted.keys()
    diff = {k: (resumed[k].double() - uninterrupted[k].double()).abs().max().item() for k in resumed}
    assert max(diff.values()) == 0, {k: d for k, d in diff.items() if d}
