import pytest
import torch

from asdzoo.metrics.task2 import section_metrics
from asdzoo.systems.ae_baseline import AEBaseline

from conftest import machine_batches
from thresholds import check


def test_architecture_is_the_official_one():
    ae = AEBaseline()
    linear = [m for m in ae.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [
        (640, 128),
        (128, 128),
        (128, 128),
        (128, 128),
        (128, 8),
        (8, 128),
        (128, 128),
        (128, 128),
        (128, 128),
        (128, 640),
    ]
    bn = [m for m in ae.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(bn) == 9 and all(b.momentum == 0.01 and b.eps == 1e-3 for b in bn)


@pytest.mark.parametrize("score_type", ["mse", "mahalanobis"])
def test_ae_learns_and_detects(synth_root, score_type):
    tr, te = machine_batches(synth_root, "fan")
    ae = AEBaseline(score_type=score_type)  # the official 100 epochs: after 15 the fan's AUC was 0.57-0.82 by seed
    before = ae.score(tr["wave"][:4]).mean() if score_type == "mse" else None
    ae.fit(tr["wave"], tr["domain"], tr["lengths"])
    if before is not None:  # reconstruction error fell: it learned
        check("ae mse: train error after / before", float(ae.score(tr["wave"][:4]).mean() / before))
    v = section_metrics(te["label"].numpy(), ae.score(te["wave"]).numpy(), te["domain"].numpy())
    check(f"ae {score_type} fan: AUC (source)", v["AUC (source)"])


def test_lightning_cli_fast_dev_run(synth_root, tmp_path):
    from train_cli import main

    out = tmp_path / "model"
    main(
        [
            "fit",
            "--config",
            "asdzoo/configs/dcase_ae.yaml",
            "--data.root",
            str(synth_root),
            "--trainer.fast_dev_run",
            "true",
            "--trainer.default_root_dir",
            str(tmp_path),
            "--trainer.callbacks.dirpath",
            str(out),
        ]
    )
    import asdzoo

    model = asdzoo.load(out)
    assert isinstance(model, AEBaseline) and model.has_domain.all()  # covariances were fitted at the end of training
