"""beats-distill (paper 000): pseudo-clean separation, teacher -> student training, save/load, scoring."""

import copy
import json

import lightning as L
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import asdzoo
from asdzoo.audio.separation import separate
from asdzoo.data.pseudo_clean import prepare_pseudo_clean
from asdzoo.data.task2 import Task2DataModule
from asdzoo.hub import install, save_pretrained
from asdzoo.systems.beats_distill import BeatsDistillStudent, BeatsDistillTeacher, negative_snr
from asdzoo.tasks.task2 import dev_official_score

from conftest import TINY_BEATS, fit_quietly, machine_batches
from thresholds import check

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


def test_prepare_is_resumable_and_complete(synth_root, pseudo_clean, tmp_path):
    again = prepare_pseudo_clean(synth_root, pseudo_clean, workers=1, progress=False)
    assert again["written"] == 0 and again["skipped"] == 72
    ds = Task2DataModule(str(synth_root), pseudo_clean_root=pseudo_clean, segment_seconds=2.0, batch_size=4)
    ds.setup()
    item = ds.train_set[0]
    assert item["pseudo_clean"].shape == item["wave"].shape[-1:]


@pytest.fixture(scope="module")
def pretrained(pretrained_beats):
    """TINY settings on the pre-trained tiny BEATs (the stand-in for the official checkpoint)."""
    return dict(TINY, beats=None, beats_checkpoint=str(pretrained_beats))


@pytest.fixture(scope="module")
def trained(synth_root, pseudo_clean, pretrained, tmp_path_factory):
    """Teacher (20 epochs), a student started from it (the default) and a fresh student (for the KD test)."""
    out = tmp_path_factory.mktemp("distill")
    dm = Task2DataModule(str(synth_root), batch_size=8, segment_seconds=2.0, pseudo_clean_root=pseudo_clean)
    L.seed_everything(0)
    teacher = BeatsDistillTeacher(**pretrained)
    fit_quietly(teacher, dm, max_epochs=20)
    save_pretrained(teacher, out / "teacher")
    fresh = BeatsDistillStudent(teacher=str(out / "teacher"), init_from_teacher=False, **pretrained)
    frozen_before = {k: v.clone() for k, v in fresh.teacher.state_dict().items()}
    batch = next(iter(dm.train_dataloader()))
    fresh.setup("fit")
    kd_before = fresh.losses(batch)["kd"].item()
    fit_quietly(fresh, dm, max_steps=40)
    fresh.eval()
    with torch.no_grad():
        kd_after = fresh.losses(batch)["kd"].item()
    student = BeatsDistillStudent(teacher=str(out / "teacher"), **pretrained)
    fit_quietly(student, dm, max_epochs=10)
    save_pretrained(student, out / "student", name="beats-distill")
    return dict(
        out=out, teacher=teacher, fresh=fresh, student=student, frozen_before=frozen_before, kd=(kd_before, kd_after)
    )


def test_teacher_is_frozen_and_bit_identical_after_stage_2(trained):
    after = trained["fresh"].teacher.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in trained["frozen_before"].items())
    assert not any(p.requires_grad for p in trained["fresh"].teacher.parameters())
    assert "teacher" not in json.dumps(list(trained["fresh"].state_dict()))  # never saved with the student
    assert copy.deepcopy(trained["fresh"]).teacher is trained["fresh"].teacher  # shared, not copied, by deep copies


def test_kd_loss_decreases(trained):
    before, after = trained["kd"]
    check("beats-distill student: KD loss after / before", after / before)


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
        "--model.segment_seconds",
        "2",
    ]
    args += [f"--model.{k}={TINY[k]}" for k in ("lora_rank", "lora_alpha", "embed_dim", "asp_hidden", "sub_centers")]
    if stage == "student":
        args += ["--model.teacher", str(trained["out"] / "teacher")]
    with pytest.warns(UserWarning, match="RANDOM weights"):
        main(args)
    model = asdzoo.load(tmp_path / "model")
    assert type(model).__name__ == f"BeatsDistill{stage.capitalize()}" and model.classifier is not None


def _pooled_auc(model, root, machine):
    tr, te = machine_batches(root, machine)
    det = model.fit(tr["wave"], tr["domain"], tr["lengths"])
    return roc_auc_score(te["label"].numpy(), det.score(te["wave"], te["lengths"]).numpy())


def test_student_detects_well_above_chance(trained, synth_root):
    """Short CPU run on the pre-trained tiny BEATs: each machine's anomalies rank above its normals."""
    # The mean over the two machines, not each: the fan alone is weak on some data seeds (0.57 on seed 0, see the
    # mark's measurements), the valve on others; together they show detection on every seed.
    aucs = [_pooled_auc(trained["student"], synth_root, machine) for machine in ("fan", "valve")]
    check("beats-distill student: mean pooled AUC of fan and valve", sum(aucs) / 2)
    check("beats-distill student: official score", dev_official_score(trained["student"], synth_root))


def test_student_learns_the_attribute_classes(trained, synth_root):
    """The auxiliary objective is learnt: held-out normal test clips get their attribute class."""
    from asdzoo.data.task2 import Task2Dataset, class_labels, collate_clips, scan_clips

    train = [c for m in ("fan", "valve") for c in scan_clips(synth_root, m, "train")]
    test = [c for m in ("fan", "valve") for c in scan_clips(synth_root, m, "test") if c.label == "normal"]
    labels, names = class_labels(train + test, "attribute")
    assert names == class_labels(train, "attribute")[1]  # test normals use the training attribute classes
    truth = torch.tensor(labels[len(train) :])
    ds = Task2Dataset(test)
    batch = collate_clips([ds[i] for i in range(len(ds))])
    student = trained["student"].eval()
    with torch.no_grad():
        predicted = student.classifier.logits(student.embed_batch(batch["wave"], batch["lengths"])).argmax(-1)
    check("beats-distill student: attribute accuracy on test normals", (predicted == truth).float().mean().item())


def test_student_starts_from_the_teacher(trained, pretrained):
    student = BeatsDistillStudent(teacher=str(trained["out"] / "teacher"), **pretrained)
    student.setup("fit")
    teacher = trained["teacher"].state_dict()
    shared = [k for k in student.state_dict() if k.split(".")[0] in ("encoder", "head", "classifier")]
    assert shared and all(torch.equal(student.state_dict()[k], teacher[k]) for k in shared)
    fresh = BeatsDistillStudent(teacher=str(trained["out"] / "teacher"), init_from_teacher=False, **pretrained)
    fresh.setup("fit")
    assert not torch.equal(fresh.head.projection.weight, trained["teacher"].head.projection.weight)
    other = BeatsDistillStudent(teacher=str(trained["out"] / "teacher"), **(pretrained | {"embed_dim": 16}))
    with pytest.raises(ValueError, match="cannot start from the teacher"):
        other.setup("fit")


def test_dev_set_selection_restores_the_best_epoch(synth_root, pseudo_clean):
    from asdzoo.callbacks import DevSetSelection

    dm = Task2DataModule(str(synth_root), batch_size=8, segment_seconds=2.0, pseudo_clean_root=pseudo_clean)
    L.seed_everything(1)
    teacher = BeatsDistillTeacher(**TINY)
    selection = DevSetSelection(every_n_epochs=1)
    fit_quietly(teacher, dm, max_epochs=3, callbacks=[selection])
    scores = [s for _, s in selection.history]
    assert [e for e, _ in selection.history] == [0, 1, 2]
    assert selection.best_score == max(scores) and selection.best_epoch == scores.index(max(scores))
    assert dev_official_score(teacher, synth_root) == pytest.approx(selection.best_score, abs=1e-9)


def test_dev_score_needs_labelled_test_names(tmp_path, synth_root):
    import shutil

    root = tmp_path / "eval"
    shutil.copytree(synth_root / "fan", root / "fan")
    first = sorted((root / "fan" / "test").glob("*.wav"))[0]
    first.rename(first.with_name("section_00_0001.wav"))
    with pytest.raises(ValueError, match="section_00_0001.wav has no label"):
        dev_official_score(BeatsDistillTeacher(**TINY), root)
