import json
import time
from pathlib import Path

import pytest
import torch

import asdzoo
from asdzoo.cards import render_model_card
from asdzoo.hub import (
    ModelNotFoundError,
    WeightsNotAvailableError,
    install,
    list_models,
    load_pretrained_dir,
    publish,
    save_pretrained,
)
from asdzoo.systems.ae_baseline import AEBaseline
from asdzoo.systems.genrep import GenRep
from asdzoo.zoo import ZOO, ZooEntry

from conftest import machine_batches

REPO = Path(__file__).resolve().parents[1]


def test_registry_lists_metadata():
    models = {m["name"]: m for m in list_models()}
    assert {"genrep", "genrep-aisfx", "genrep-logmel", "dcase-ae-mse", "dcase-ae-mahalanobis"} <= set(models)
    for m in models.values():
        assert m["license"] and m["paper"] and m["weights"] and m["input_spec"]
    assert "CC BY 4.0" in models["genrep-aisfx"]["license"]


def test_save_load_roundtrip_is_bit_exact_for_trained_ae(tmp_path, synth_root):
    tr, te = machine_batches(synth_root, "valve")
    ae = AEBaseline(score_type="mahalanobis", epochs=2).fit(tr["wave"], tr["domain"])
    save_pretrained(ae, tmp_path / "ae", name="dcase-ae-mahalanobis")
    assert sorted(p.name for p in (tmp_path / "ae").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    cfg = json.loads((tmp_path / "ae" / "config.json").read_text())
    assert cfg["architecture"] == "AEBaseline" and cfg["asdzoo_version"] == asdzoo.__version__ and cfg["torch_version"]
    loaded = asdzoo.load(tmp_path / "ae")
    for k, v in ae.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    assert torch.equal(ae.score(te["wave"]), loaded.score(te["wave"]))


def test_fitted_genrep_bank_survives_save_and_load(tmp_path, synth_root):
    tr, te = machine_batches(synth_root, "fan")
    g = GenRep(encoder="logmel", input_method="sfsoft_a03f05", backend={"backend": "dldn", "k": 1}).fit(
        tr["wave"], tr["domain"]
    )
    save_pretrained(g, tmp_path / "g")
    loaded = asdzoo.load(str(tmp_path / "g"))
    assert torch.equal(g.score(te["wave"]), loaded.score(te["wave"]))


def test_load_by_name_from_local_store(tmp_path, isolated_home):
    ae = AEBaseline(hidden=16)
    save_pretrained(ae, tmp_path / "trained")
    target = install(tmp_path / "trained", "dcase-ae-mse")
    assert target == isolated_home / "models" / "dcase-ae-mse"
    loaded = asdzoo.load("dcase-ae-mse")  # the store wins over the registry's fresh builder
    assert loaded.hparams.hidden == 16


def test_offline_hub_miss_is_one_clear_fast_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.time()
    with pytest.raises(WeightsNotAvailableError) as err:
        asdzoo.load("some-org/some-model@v1")
    msg = str(err.value)
    assert "some-org/some-model" in msg and "offline" in msg and "save_pretrained" in msg and "asdzoo install" in msg
    assert time.time() - t0 < 5


def test_entry_without_weights_says_how_to_get_them(monkeypatch):
    ae = "asdzoo.systems.ae_baseline:AEBaseline"
    monkeypatch.setitem(
        ZOO,
        "needs-training",
        ZooEntry("needs-training", ae, "task2", "d", "p", "MIT", "train-locally", card_notes="train with train_cli.py"),
    )
    with pytest.raises(WeightsNotAvailableError, match="asdzoo install DIR --name needs-training"):
        asdzoo.load("needs-training")
    monkeypatch.setitem(
        ZOO, "on-hub", ZooEntry("on-hub", ae, "task2", "d", "p", "MIT", "published", hub_repo="org/on-hub")
    )
    with pytest.raises(WeightsNotAvailableError, match="org/on-hub"):
        asdzoo.load("on-hub", local_files_only=True)


def test_unknown_name_and_foreign_architecture(tmp_path):
    with pytest.raises(ModelNotFoundError, match="unknown model 'beets'.*genrep"):
        asdzoo.load("beets")
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "config.json").write_text(json.dumps({"architecture": "os:system", "config": {}}))
    with pytest.raises(ValueError, match="unknown architecture 'os:system'"):
        load_pretrained_dir(tmp_path / "evil")


def test_major_version_mismatch_warns(tmp_path):
    save_pretrained(AEBaseline(hidden=8), tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["asdzoo_version"] = "9.0.0"
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.warns(UserWarning, match="major versions differ"):
        load_pretrained_dir(tmp_path / "m")


def test_publish_dry_run_lists_files(tmp_path):
    save_pretrained(AEBaseline(hidden=8), tmp_path / "m")
    assert publish(tmp_path / "m", "org/x", dry_run=True).files == ["README.md", "config.json", "model.safetensors"]


def test_failed_save_leaves_nothing_behind(tmp_path):
    class Broken(AEBaseline):
        pass

    with pytest.raises(TypeError, match="not a registered asdzoo architecture"):
        save_pretrained(Broken(hidden=8), tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_committed_model_cards_match_the_registry():
    for name, entry in ZOO.items():
        if name in ("needs-training", "on-hub"):
            continue
        path = REPO / "model_cards" / f"{name}.md"
        assert path.read_text() == render_model_card(entry), f"regenerate with `asdzoo cards`: {path}"
