"""Every training system under Lightning's DDP on CPU (issue 16): its shipped config, made tiny, runs through
``train_cli.py fit`` in 2 gloo processes and in 1, and

- both processes hold the same value of every validation metric (what checkpointing and early stopping watch:
  gathered or ``sync_dist``-averaged, never one process's shard), and
- the 2-process run's metrics match the 1-process run at twice the batch within a stated tolerance.

Measured |1 process − 2 processes| on data seeds 0 / 1 / 2 / 3 (2 cores, torch 2.13); each tolerance is the largest
of the four plus the suite's margin of 0.05 (aum stage 2) or about twice the largest (the rest):

- aum stage 1: train loss and val/acc 0 on every seed (no per-process draws);
- aum stage 2: val AUC 0.031 / 0.094 / 0.047 / 0, train loss 0.063 / 0.009 / 0.005 / 0.035 (pseudo-outliers);
- multistream: val spread 3e-5 / 0.0040 / 0.0012 / 0.0002, train loss 0.027 / 0.0075 / 0.051 / 0.0056;
- beats-distill: teacher 0.024 / 0.0089 / 0.0031 / 0.0078, student 0.0095 / 0.0028 / 0.012 / 0.0029 (BEATs
  pre-training 0.0085, seed 0 only);
- Task 4 (random crops drawn per process), largest of the tagger, separator, SD and Qwen taggers: val loss 0.010 /
  0.074 / 0.044 / 0.020 (on seeds 1-3 the plain tagger; the others at most 0.0065), train loss 0.114 / 0.033 / 0.166 /
  0.170. Seed 1's tagger val loss failed the tolerance of 0.05 set from seed 0 alone.

The fast suite runs aum-poe (both stages) and the separator, the two that did not run under DDP before; the other
systems' runs are in ``make test-slow`` (about 2.5 min more). One config per system class (BEATs pre-training was
measured once: see the distillation test); the configs not run (multistream's other encoders, the 4c and stage-2
variants) differ from these in arguments only. Both runs use the DDP strategy (``devices 1`` for the single one) so
that nothing but the process count differs; asdzoo's samplers shard one seeded order (see test_ddp.py). What is left
to differ: random draws made per process (augmentations, pseudo-outliers, token masks, crops: other streams of
numbers), BatchNorm statistics per process, and float32 summation order. The exact part — batch statistics gathered
across processes — is checked in isolation in test_distributed.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from conftest import TINY_BEATS

REPO = Path(__file__).resolve().parents[1]
SLOW = pytest.mark.slow  # in `make test-slow`: the fast suite keeps the two systems DDP had crashed on
TINY_M2D = ["--model.m2d", json.dumps(dict(embed_dim=64, depth=2, num_heads=4))]
TINY_M2D += ["--model.track_in", "64", "--model.track_hidden", "32"]
QWEN = dict(d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128, max_source_positions=100)
TINY_DISTILL = [f"--model.{k}={v}" for k, v in dict(lora_rank=4, lora_alpha=4, embed_dim=32, asp_hidden=16).items()]
TINY_DISTILL += ["--model.sub_centers=2", "--model.beats", json.dumps(TINY_BEATS), "--model.segment_seconds", "2"]


class RecordMetrics(L.Callback):
    """Writes each process's metrics at the end of fit to ``metrics_rank<r>.json`` in the working directory, with
    ``train_loss``: the last epoch's mean training loss over every process's steps (the logged ``train/*`` values
    are one process's last step)."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(loss.detach().float())

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.train_loss = float(trainer.strategy.reduce(torch.stack(self.losses).mean(), reduce_op="mean"))

    def on_fit_end(self, trainer, pl_module) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        metrics["train_loss"] = self.train_loss
        Path(f"metrics_rank{trainer.global_rank}.json").write_text(json.dumps(metrics))


def fit(run_dir: Path, config: str, processes: int, batch: int, *overrides: str) -> list[dict[str, float]]:
    """``train_cli.py fit`` of ``asdzoo/configs/<config>.yaml`` under DDP on ``processes`` CPU processes at batch
    ``batch // processes``, 2 epochs; every process's final metrics."""
    run_dir.mkdir(parents=True)
    args = [sys.executable, str(REPO / "train_cli.py"), "fit", "--config", str(REPO / f"asdzoo/configs/{config}.yaml")]
    args += ["--trainer.strategy", "ddp", "--trainer.accelerator", "cpu", "--trainer.devices", str(processes)]
    args += ["--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false"]
    args += ["--trainer.callbacks+=test_ddp_configs.RecordMetrics", "--data.batch_size", str(batch // processes)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*args, *overrides], cwd=run_dir, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((run_dir / f"metrics_rank{r}.json").read_text()) for r in range(processes)]


def compare(tmp_path: Path, config: str, batch: int, overrides: list[str], tolerances: dict[str, float]) -> Path:
    """Runs ``config`` in 1 and 2 processes, checks the two points of the module docstring for every metric named
    in ``tolerances`` (absolute), prints the differences; returns the 1-process run's folder."""
    one = fit(tmp_path / "one", config, 1, batch, *overrides)[0]
    two = fit(tmp_path / "two", config, 2, batch, *overrides)
    validation = [k for k in two[0] if k.startswith("val/")]
    assert {k: two[0][k] for k in validation} == {k: two[1][k] for k in validation}, "processes disagree"
    for name, tol in tolerances.items():
        print(f"{config}: {name} 1 process {one[name]:.5g}, 2 processes {two[0][name]:.5g}")
        assert abs(one[name] - two[0][name]) <= tol, (name, one[name], two[0][name])
    return tmp_path / "one"


# -- Task 2 -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def aum_stage1(synth_root, tmp_path_factory) -> Path:
    """aum_poe_stage1 (machine-type cross-entropy) under DDP; its 1-process backbone feeds stage 2."""
    aum = json.dumps(dict(spectrogram_size=(128, 320), embed_dim=32, depth=4, d_state=8, unshuffle=4))
    overrides = ["--data.root", str(synth_root), "--data.segment_seconds", "3", "--model.aum", aum]
    overrides += ["--trainer.accumulate_grad_batches", "1", "--trainer.limit_train_batches", "4"]
    overrides += ["--data.val_fraction", "0.1", "--trainer.limit_val_batches", "1.0"]  # val/acc, gathered
    tol = {"train_loss": 0.01, "val/acc": 0.1}  # both measured equal (seeds 0-3); 0.1 = about one of ~10 clips
    run = compare(tmp_path_factory.mktemp("ddp_aum1"), "aum_poe_stage1", 16, overrides, tol)
    return run / "runs/aum_poe/stage1/model"


def test_aum_poe_stage2_manual_optimisation_runs_under_ddp(aum_stage1, synth_root, tmp_path):
    """Two optimizers, gradient reversal, the moving-average centre and the validation AUC (gathered)."""
    overrides = ["--data.root", str(synth_root), "--data.segment_seconds", "3", "--data.clips_per_machine", "16"]
    overrides += ["--model.backbone", str(aum_stage1), "--model.head_hidden", "32", "--model.embed_dim", "16"]
    compare(tmp_path, "aum_poe_generalized", 16, overrides, {"val/auc": 0.15, "train_loss": 0.12})


@SLOW
def test_multistream_contrastive_stream_runs_under_ddp(pretrained_beats, synth_root, tmp_path):
    """NT-Xent with every process's clips as negatives; the validation spread over all held-out clips."""
    overrides = ["--data.root", str(synth_root), "--data.segment_seconds", "3", "--data.val_fraction", "0.25"]
    overrides += ["--model.checkpoint", str(pretrained_beats), "--model.lora_blocks", "2", "--model.embed_dim", "16"]
    compare(tmp_path, "multistream_beats_r16", 16, overrides, {"val/spread": 0.01, "train_loss": 0.1})


@SLOW
def test_beats_distillation_runs_under_ddp(synth_root, pseudo_clean, tmp_path):
    """The teacher (AdaCos' scale from the whole batch) and the student on that teacher. (BEATs pre-training, whose
    loss is a mean over clips with nothing shared between them, was checked the same way once: 0.0085 apart.)"""
    data = ["--data.root", str(synth_root), "--data.segment_seconds", "2", "--trainer.limit_train_batches", "4"]
    data += ["--data.pseudo_clean_root", pseudo_clean]
    teacher = compare(tmp_path / "teacher", "beats_distill_teacher", 8, [*data, *TINY_DISTILL], {"train_loss": 0.05})
    student = [*data, *TINY_DISTILL, "--model.teacher", str(teacher / "runs/beats_distill/teacher/model")]
    compare(tmp_path / "student", "beats_distill_student", 8, student, {"train_loss": 0.05})


# -- Task 4 -------------------------------------------------------------------------------------------------------
T4_DATA = ["--data.num_workers", "0", "--data.dataset_length", "8", "--data.segment_seconds", "1.0"]
T4_DATA += ["--trainer.limit_val_batches", "2"]


@pytest.mark.parametrize(
    "config, extra",
    [
        ("s5_separator", ["--model.width", "0.0625"]),
        pytest.param("s5_tagger", TINY_M2D, marks=SLOW),
        pytest.param(
            "s5_m2d_sd_1c", [*TINY_M2D, "--model.init_from", "null", "--model.aux_blocks", "[1, 2]"], marks=SLOW
        ),
        pytest.param(
            "s5_m2d_qwen_1c", [*TINY_M2D, "--model.init_from", "null", "--model.teacher", json.dumps(QWEN)], marks=SLOW
        ),
    ],
)
def test_task4_systems_run_under_ddp(config, extra, t4_root, tmp_path):
    """The tagger, the separator (BatchNorm per process), masked self-distillation (EMA teacher) and the Qwen
    distillation (frozen teacher): the validation loss, averaged over the processes' scenes."""
    overrides = ["--data.root", str(t4_root), *T4_DATA, *extra, "--trainer.accumulate_grad_batches", "1"]
    if "qwen" in config:
        overrides += ["--model.teacher_dim", "64"]
    compare(tmp_path, config, 4, overrides, {"val/loss": 0.15, "train_loss": 0.35})
