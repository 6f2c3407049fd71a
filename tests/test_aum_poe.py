"""aum-poe (paper 004): stage 1 learns machine types, stage 2 detects, its two optimizers keep to their own
parameters, the frozen blocks stay frozen, saved models score identically, the registry entries load, and the
BOHB-style search runs and resumes. Tiny random-weight Audio-Mambas on the tests' synthetic data."""

from __future__ import annotations

import copy

import lightning as L
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from asdzoo.data.task2 import Task2DataModule, class_labels, collate_clips
from asdzoo.hub import WeightsNotAvailableError, install, load, save_pretrained
from asdzoo.systems.aum_poe import AumPoe, AumPretrainer

from conftest import fit_quietly, machine_batches
from thresholds import check

# 3 s clips -> 308 frames at hop 156, padded to 320; r = 4 and 16x16 patches: a 2 x 5 grid of 10 tokens
TINY_AUM = dict(spectrogram_size=(128, 320), embed_dim=32, depth=4, d_state=8, unshuffle=4)
FAST_STAGE2 = dict(
    unfreeze_blocks=2,
    head_hidden=32,
    embed_dim=16,
    batch_size=16,
    fit_epochs=10,
    lr=1e-3,
    clips_per_machine=96,
    patience=10,
)


@pytest.fixture(scope="module")
def stage1_dir(synth_root, tmp_path_factory):
    """A tiny stage-1 backbone trained on both machines' normal clips (machine-type cross-entropy)."""
    L.seed_everything(0)
    model = AumPretrainer(aum=TINY_AUM, lr=1e-3)
    data = Task2DataModule(str(synth_root), batch_size=8, segment_seconds=3.0, class_by="machine")
    fit_quietly(model, data, max_epochs=6)
    return save_pretrained(model, tmp_path_factory.mktemp("aum") / "stage1", "aum-poe-stage1")


def machine_type_accuracy(model: AumPretrainer, root) -> float:
    dm = Task2DataModule(str(root), batch_size=64, class_by="machine")
    dm.setup()
    batch = collate_clips([dm.train_set[i] for i in range(len(dm.train_set))])
    with torch.no_grad():
        model.eval()
        return float((model.logits(batch["wave"], batch["lengths"]).argmax(-1) == batch["class"]).float().mean())


def test_stage1_learns_machine_types(stage1_dir, synth_root):
    L.seed_everything(0)
    untrained = AumPretrainer(aum=TINY_AUM, num_classes=2)
    trained = load(stage1_dir)
    before, after = machine_type_accuracy(untrained, synth_root), machine_type_accuracy(trained, synth_root)
    assert after > before and after > 0.9, (before, after)


def test_held_out_normals_carry_the_training_sets_class_labels(synth_root):
    held = Task2DataModule(str(synth_root), class_by="machine", val_fraction=0.25)
    held.setup()
    names = held.train_set.class_names
    assert {c.machine for c in held.val_set.clips} == set(names)
    assert not any(c.label == "anomaly" for c in held.val_set.clips)
    assert held.val_set.classes == [names.index(c.machine) for c in held.val_set.clips]
    on_test = Task2DataModule(str(synth_root), class_by="machine")
    on_test.setup()  # test/ clips (anomalies among them) carry no class labels
    assert set(on_test.val_set.classes) == {-1}
    valve = [c for c in held.val_set.clips if c.machine == "valve"]
    with pytest.raises(ValueError, match=f"{valve[0].path}: class 'valve'.*not one of the 1 training classes"):
        class_labels(valve, "machine", names=["fan"])


def test_stage1_validation_reports_machine_type_accuracy_of_held_out_normals(stage1_dir, synth_root):
    """What ``val_fraction`` in aum_poe_stage1.yaml logs (this backbone saw those clips in training: the check is
    that the metric tells a trained backbone from an untrained one, and that test/ is refused)."""
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    held = Task2DataModule(str(synth_root), batch_size=8, class_by="machine", val_fraction=0.25)
    trained = trainer.validate(load(stage1_dir), held, verbose=False)[0]
    L.seed_everything(0)
    untrained = trainer.validate(AumPretrainer(aum=TINY_AUM, num_classes=2), held, verbose=False)[0]
    check("aum-poe stage 1: machine-type accuracy of held-out normals", trained["val/acc"])
    check("aum-poe stage 1: held-out cross-entropy, untrained minus trained", untrained["val/ce"] - trained["val/ce"])
    with pytest.raises(ValueError, match="val_fraction > 0"):
        trainer.validate(load(stage1_dir), Task2DataModule(str(synth_root), class_by="machine"), verbose=False)


def fan_auc(model, synth_root) -> float:
    train, test = machine_batches(synth_root, "fan")
    model.fit(train["wave"], train["domain"], train["lengths"])
    scores = model.score(test["wave"], test["lengths"]).numpy()
    return roc_auc_score(test["label"].numpy(), scores)


def test_stage2_detects_clearly_above_its_untrained_start(stage1_dir, synth_root):
    """The untrained start: random Audio-Mamba and head weights, no fine-tuning (the same kNN detector)."""
    start = AumPoe(backbone=None, aum=TINY_AUM, **FAST_STAGE2 | dict(finetune_in_fit=False))
    tuned = AumPoe(backbone=str(stage1_dir), **FAST_STAGE2)
    before, after = fan_auc(start, synth_root), fan_auc(tuned, synth_root)
    check("aum-poe fan: AUC (all)", after)
    assert after > before + 0.1, (before, after)


def batch_of(synth_root, n=6):
    train, _ = machine_batches(synth_root, "fan")
    idx = torch.cat([torch.arange(n // 2), torch.arange(len(train["wave"]) - n // 2, len(train["wave"]))])
    return {k: v[idx] for k, v in train.items()}


def test_each_optimizer_moves_only_its_own_parameters(synth_root):
    L.seed_everything(0)
    model = AumPoe(backbone=None, aum=TINY_AUM, **FAST_STAGE2)
    batch = batch_of(synth_root)
    out = model.losses(batch)
    out["loss"].backward()
    assert all(p.grad is None for p in model.domain_classifier.parameters())
    frozen = [p for blk in model.encoder.layers[:-2] for p in blk.parameters()]
    assert all(p.grad is None for p in frozen) and not any(p.requires_grad for p in frozen)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.head.parameters() if p.dim() > 1)
    model.zero_grad(set_to_none=True)
    domain_loss = torch.nn.functional.cross_entropy(model.domain_classifier(out["z_normal"].detach()), batch["domain"])
    domain_loss.backward()
    assert all(p.grad is None for p in model.feature_parameters)
    assert all(p.grad is not None for p in model.domain_classifier.parameters())


def test_the_feature_extractor_gets_minus_lambda_times_the_domain_gradient(synth_root):
    """d(loss)/dz = d(anomaly)/dz - lambda_adv * d(domain CE)/dz: the reversal layer inside the real loss."""
    L.seed_everything(0)
    model = AumPoe(backbone=None, aum=TINY_AUM, **FAST_STAGE2, lambda_adv=0.3).eval()
    batch = batch_of(synth_root)
    waves, lengths, is_out = model.with_outliers(batch)
    z = model.embed_batch(waves, lengths).detach().requires_grad_(True)
    model.embed_batch = lambda w, n: z  # the same embeddings, now a leaf
    out = model.losses(batch)
    (g_total,) = torch.autograd.grad(out["loss"], z)
    (g_anom,) = torch.autograd.grad(model.losses(batch)["anomaly"], z)
    zn = z[~is_out]
    ce = torch.nn.functional.cross_entropy(model.domain_classifier(zn), batch["domain"])
    (g_dom,) = torch.autograd.grad(ce, z)
    torch.testing.assert_close(g_total, g_anom - 0.3 * g_dom, rtol=1e-5, atol=1e-7)


def test_fit_changes_only_the_unfrozen_blocks_head_and_domain_classifier(stage1_dir, synth_root):
    model = AumPoe(backbone=str(stage1_dir), **(FAST_STAGE2 | dict(fit_epochs=2)))
    before = copy.deepcopy(model.state_dict())
    train, _ = machine_batches(synth_root, "fan")
    model.fit(train["wave"], train["domain"], train["lengths"])
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    depth = len(model.encoder.layers)
    assert not any(k.startswith(("encoder.patch_embed", "encoder.pos_embed", "encoder.cls_token")) for k in changed)
    for i in range(depth):
        touched = any(k.startswith(f"encoder.layers.{i}.") for k in changed)
        assert touched == (i >= depth - 2), (i, touched)
    assert any(k.startswith("head.") for k in changed) and any(k.startswith("domain_classifier.") for k in changed)
    assert "centre.centre" in changed


def test_saved_detector_scores_identically_and_loads_by_name(stage1_dir, synth_root, tmp_path, isolated_home):
    with pytest.raises(WeightsNotAvailableError, match="aum_poe_stage1.yaml"):
        load("aum-poe")
    install(stage1_dir, "aum-poe-stage1")
    stage1 = load(stage1_dir).encoder.state_dict()
    assert all(torch.equal(v, stage1[k]) for k, v in load("aum-poe").encoder.state_dict().items())
    model = AumPoe(backbone="aum-poe-stage1", **FAST_STAGE2 | dict(fit_epochs=2))
    train, test = machine_batches(synth_root, "fan")
    mono = train["wave"][:, :1]
    model.fit(mono, train["domain"], train["lengths"])
    scores = model.score(test["wave"][:, :1], test["lengths"])
    assert torch.equal(scores, model.score(test["wave"], test["lengths"]))  # near channel of 2-ch input == mono
    again = load(save_pretrained(model, tmp_path / "saved"))
    assert torch.equal(again.score(test["wave"], test["lengths"]), scores)
    np.testing.assert_array_equal(again.train_scores(), model.train_scores())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_detector_on_the_gpu_fine_tunes_there_and_scores_cpu_clips(stage1_dir, synth_root):
    """``asdzoo.load(..., device="cuda")`` then ``fit``/``score`` with clips read on the CPU: stage 2 trains on
    that GPU (not on the CPU, as a hard-coded Trainer accelerator would) and detects like the CPU run."""
    model = AumPoe(backbone=str(stage1_dir), **FAST_STAGE2).cuda()
    auc = fan_auc(model, synth_root)
    assert all(p.is_cuda for p in model.parameters())
    check("aum-poe fan: AUC (all)", auc)


def test_bohb_search_runs_and_resumes(stage1_dir, synth_root, tmp_path, isolated_home):
    from asdzoo.tuning import tune_machine

    install(stage1_dir, "aum-poe-stage1")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    fixed = FAST_STAGE2 | dict(fit_epochs=3, clips_per_machine=16)
    first = tune_machine("aum-poe", synth_root, "fan", 2, storage, "t", max_epochs=3, fixed=fixed, progress=False)
    assert first.finished + first.pruned == 2 and 0 <= first.best_value <= 1
    assert set(first.best_params) == {"lr", "weight_decay", "lambda_adv", "margin", "unfreeze_blocks", "dropout"}
    resumed = tune_machine("aum-poe", synth_root, "fan", 3, storage, "t", max_epochs=3, fixed=fixed, progress=False)
    assert resumed.finished + resumed.pruned == 3  # the two finished trials were kept, one more ran


def test_a_killed_search_resumes_and_reruns_the_trial_it_lost(stage1_dir, synth_root, tmp_path):
    """SIGKILL during a trial (no clean exit: the trial stays RUNNING in the database); a search resumed after two
    heartbeats marks it failed, re-runs its parameters and still completes the number of trials asked for."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    import optuna

    from asdzoo.tuning import make_study, tune_machine

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    make_study("t", storage, max_epochs=2, heartbeat=1)  # the tables exist before two processes open the file
    fixed = FAST_STAGE2 | dict(backbone=str(stage1_dir), clips_per_machine=16, patience=100)
    killed = (
        "from asdzoo.tuning import tune_machine\n"
        f"tune_machine('aum-poe', {str(synth_root)!r}, 'fan', 1, {storage!r}, 't', max_epochs=1000, "
        f"fixed={json.dumps(fixed)}, progress=False, heartbeat=1)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", killed], env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        for _ in range(600):  # up to 60 s for the first trial to start
            time.sleep(0.1)
            if optuna.load_study(study_name="t", storage=storage).trials:
                break
        time.sleep(1.5)  # its heartbeat is recorded
        assert proc.poll() is None, "the trial ended before it could be killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    lost = optuna.load_study(study_name="t", storage=storage).trials
    assert [t.state for t in lost] == [optuna.trial.TrialState.RUNNING]
    time.sleep(3.5)  # silent for more than two heartbeats (SQLite stores heartbeat times in whole seconds)
    quick = fixed | dict(patience=10)
    result = tune_machine(
        "aum-poe", synth_root, "fan", 2, storage, "t", max_epochs=2, fixed=quick, progress=False, heartbeat=1
    )
    trials = optuna.load_study(study_name="t", storage=storage).trials
    assert trials[0].state == optuna.trial.TrialState.FAIL
    retried = [t for t in trials if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == 0]
    assert len(retried) == 1 and retried[0].params == lost[0].params and retried[0].state.is_finished()
    assert result.finished + result.pruned == 2


def test_both_configs_train_with_lightning_cli_and_export(synth_root, stage1_dir, tmp_path):
    """aum_poe_stage1.yaml and aum_poe_generalized.yaml run through train_cli.py (a short run) and write models
    that load; the generalised one then detects through fit() without training again."""
    import json

    from train_cli import main as train

    aum = json.dumps(TINY_AUM)
    common = ["--data.root", str(synth_root), "--trainer.max_epochs", "1", "--trainer.accelerator", "cpu"]
    train(
        [
            "fit",
            "--config",
            "asdzoo/configs/aum_poe_stage1.yaml",
            "--model.aum",
            aum,
            "--data.batch_size",
            "8",
            "--data.segment_seconds",
            "3",
            "--trainer.accumulate_grad_batches",
            "1",
            "--trainer.default_root_dir",
            str(tmp_path / "s1"),
            "--trainer.callbacks.dirpath",
            str(tmp_path / "s1m"),
            *common,
        ]
    )
    assert isinstance(load(tmp_path / "s1m"), AumPretrainer)
    train(
        [
            "fit",
            "--config",
            "asdzoo/configs/aum_poe_generalized.yaml",
            "--model.backbone",
            str(stage1_dir),
            "--model.head_hidden",
            "32",
            "--model.embed_dim",
            "16",
            "--data.batch_size",
            "16",
            "--data.clips_per_machine",
            "16",
            "--data.segment_seconds",
            "3",
            "--trainer.default_root_dir",
            str(tmp_path / "gen"),
            "--trainer.callbacks.dirpath",
            str(tmp_path / "genm"),
            *common,
        ]
    )
    gen = load(tmp_path / "genm")
    assert isinstance(gen, AumPoe) and not gen.hparams.finetune_in_fit and bool(gen.centre.initialised)
    assert 0 <= fan_auc(gen, synth_root) <= 1


def test_entries_name_the_registered_entries_they_need():
    from asdzoo.zoo import ZOO

    assert ZOO["aum-poe"].requires == ("aum-poe-stage1",)
    assert all(r in ZOO and ZOO[r].weights == "train-locally" for e in ZOO.values() for r in e.requires)
