"""beats-distill (paper 000): pseudo-clean separation, teacher -> student training, save/load, scoring."""

import json

import lightning as L
import numpy as np
import pytest
import torch

import asdzoo
from asdzoo.audio.separation import prepare_pseudo_clean, separate
from asdzoo.data.task2 import Task2DataModule
from asdzoo.hub import install, save_pretrained
from asdzoo.systems.beats_distill import BeatsDistillStudent, BeatsDistillTeacher, negative_snr

from conftest import machine_batches

TINY_BEATS = dict(
    encoder_layers=2, encoder_embed_dim=64, encoder_ffn_embed_dim=128, encoder_attention_heads=4, embed_dim=128
)
TINY = dict(
    beats=TINY_BEATS,
    lora_rank=8,
    lora_alpha=8,
    embed_dim=32,
    asp_hidden=32,
    sub_centers=4,
    lr=1e-3,
    segment_seconds=2.0,
    warn_random_init=False,
)


def _snr(est, ref):
    return 10 * np.log10((ref**2).sum() / ((est - ref) ** 2).sum())


def test_ilrma_pseudo_clean_separates_and_picks_the_near_source():
    """ILRMA needs sources whose power varies over time; a machine running up and down and babble noise, mixed
    instantaneously with the machine dominant at the near mic: the pseudo-clean output recovers the machine."""
    from asdzoo.data.synth import interferer, machine_sound

    rng = np.random.default_rng(0)
    n = 16000 * 4
    t = np.arange(n) / 16000
    machine = machine_sound("gearbox", 22, n, rng, None, 0.0) * (1 + 0.9 * np.sin(2 * np.pi * 0.7 * t))
    babble = interferer(2, n, rng)
    mixture = np.stack([machine + 0.4 * babble, 0.15 * machine + babble])
    result = separate(mixture)
    assert np.array_equal(separate(mixture).pseudo_clean, result.pseudo_clean)  # seeded: reproducible
    assert result.near_far_ratio[result.chosen] > 10 * min(result.near_far_ratio)
    assert _snr(result.pseudo_clean, machine) > _snr(mixture[0], machine) + 10.0


@pytest.fixture(scope="module")
def pseudo_clean(synth_root):
    return prepare_pseudo_clean(synth_root, workers=2, progress=False)["out"]


def test_prepare_is_resumable_and_complete(synth_root, pseudo_clean, tmp_path):
    again = prepare_pseudo_clean(synth_root, pseudo_clean, workers=1, progress=False)
    assert again["written"] == 0 and again["skipped"] == 72
    ds = Task2DataModule(str(synth_root), pseudo_clean_root=pseudo_clean, segment_seconds=2.0, batch_size=4)
    ds.setup()
    item = ds.train_set[0]
    assert item["pseudo_clean"].shape == item["wave"].shape[-1:]


@pytest.fixture(scope="module")
def trained(synth_root, pseudo_clean, tmp_path_factory):
    out = tmp_path_factory.mktemp("distill")
    dm = Task2DataModule(str(synth_root), batch_size=8, segment_seconds=2.0, pseudo_clean_root=pseudo_clean)
    L.seed_everything(0)
    teacher = BeatsDistillTeacher(**TINY)
    L.Trainer(
        max_steps=30,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(teacher, dm)
    save_pretrained(teacher, out / "teacher")
    student = BeatsDistillStudent(teacher=str(out / "teacher"), **TINY)
    frozen_before = {k: v.clone() for k, v in student.teacher.state_dict().items()}
    batch = next(iter(dm.train_dataloader()))
    student.setup("fit") if student.classifier is None else None
    kd_before = student.losses(batch)["kd"].item()
    L.Trainer(
        max_steps=40,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(student, dm)
    student.eval()
    with torch.no_grad():
        kd_after = student.losses(batch)["kd"].item()
    save_pretrained(student, out / "student", name="beats-distill")
    return dict(out=out, teacher=teacher, student=student, frozen_before=frozen_before, kd=(kd_before, kd_after))


def test_teacher_is_frozen_and_bit_identical_after_stage_2(trained):
    after = trained["student"].teacher.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in trained["frozen_before"].items())
    assert not any(p.requires_grad for p in trained["student"].teacher.parameters())
    assert "teacher" not in json.dumps(list(trained["student"].state_dict()))  # never saved with the student


def test_kd_loss_decreases(trained):
    before, after = trained["kd"]
    assert after < 0.8 * before, trained["kd"]


def test_save_install_load_by_name_gives_identical_scores(trained, synth_root):
    tr, te = machine_batches(synth_root, "fan")
    student = trained["student"].fit(tr["wave"], tr["domain"], tr["lengths"])
    expected = student.score(te["wave"][:6], te["lengths"][:6])
    install(trained["out"] / "student", "beats-distill")
    loaded = asdzoo.load("beats-distill").fit(tr["wave"], tr["domain"], tr["lengths"])
    assert torch.equal(loaded.score(te["wave"][:6], te["lengths"][:6]), expected)


def test_multi_crop_scores_average_the_crop_scores(trained, synth_root):
    tr, te = machine_batches(synth_root, "fan")
    det = trained["student"].fit(tr["wave"], tr["domain"], tr["lengths"])
    clip = te["wave"][:1]  # 3 s > the 2 s training segment: crops at 0, 1 s (half hop) and the tail
    crops = torch.cat([clip[..., 0:32000], clip[..., 16000:48000]])
    crop_scores = det.score(crops)
    assert torch.allclose(det.score(clip), crop_scores.mean().reshape(1), atol=1e-6)


def test_student_refuses_mono_and_negative_snr_is_exact():
    with pytest.raises(ValueError, match="two-channel"):
        BeatsDistillStudent(**TINY).embed_batch(torch.randn(2, 16000))
    x = torch.randn(2, 100)
    assert torch.allclose(negative_snr(x + 0.1 * x, x), torch.tensor(-20.0), atol=1e-4)


@pytest.mark.parametrize("stage", ["teacher", "student"])
def test_lightning_cli_configs_fast_dev_run(stage, synth_root, pseudo_clean, trained, tmp_path):
    from train_cli import main

    args = [
        "fit",
        "--config",
        f"asdzoo/configs/beats_distill_{stage}.yaml",
        "--data.root",
        str(synth_root),
        "--data.pseudo_clean_root",
        pseudo_clean,
        "--data.segment_seconds",
        "2",
        "--trainer.fast_dev_run",
        "true",
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.callbacks.dirpath",
        str(tmp_path / "model"),
        "--model.beats",
        json.dumps(TINY_BEATS),
        "--model.lora_rank",
        "4",
        "--model.segment_seconds",
        "2",
    ]
    if stage == "student":
        args += ["--model.teacher", str(trained["out"] / "teacher")]
    with pytest.warns(UserWarning, match="RANDOM weights"):
        main(args)
    model = asdzoo.load(tmp_path / "model")
    assert type(model).__name__ == f"BeatsDistill{stage.capitalize()}" and model.classifier is not None
