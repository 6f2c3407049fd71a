"""multistream (paper 002): the six streams at their stated sizes, contrastive training that moves only adapters and
heads, saved models without official backbones, rank fusion, the transductive pipeline, registry systems, the CLI
config, and detection above the untrained start. Tiny random-weight (or tiny pre-trained) encoders on the tests'
synthetic data."""

from __future__ import annotations

import copy
import json
import shutil

import lightning as L
import numpy as np
import pytest
import torch
from safetensors import safe_open
from sklearn.metrics import roc_auc_score

from asdzoo.data.task2 import Task2DataModule
from asdzoo.hub import WeightsNotAvailableError, install, load, save_pretrained
from asdzoo.scoring.rank import rank_against, rank_normalise
from asdzoo.systems.multistream import ContrastiveStream, MultiStream
from asdzoo.tasks.task2 import all_clips, fit_and_score, load_machine, score_root
from asdzoo.zoo import MEF6_WEIGHTS, ZOO

from conftest import fit_quietly, machine_batches
from test_encoder_zoo import TINY
from thresholds import check

TINY_BEATS = TINY["beats"]
SMALL_HEAD = dict(embed_dim=16, batch_size=32)


def tiny_beats(**kw) -> ContrastiveStream:
    return ContrastiveStream(**dict(kind="beats", encoder_config=TINY_BEATS) | SMALL_HEAD | kw)


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# -- §2.2: the six streams ----------------------------------------------------------------------------------
PAPER_STREAMS = {
    "clap": (dict(kind="clap"), 131_328),
    "wavlm": (dict(kind="wavlm"), 196_864),
    "beats-r16": (dict(kind="beats", lora_rank=16, lora_alpha=32), 491_776),
    "beats-r32": (dict(kind="beats", lora_rank=32, lora_alpha=64), 786_688),
    "clap-lora": (dict(kind="clap_lora", lora_rank=8, lora_alpha=16), 205_056),
    "ast": (dict(kind="ast"), 196_864),
}


@pytest.mark.parametrize("stream", list(PAPER_STREAMS))
def test_each_stream_at_real_size_has_the_papers_trainable_parameter_count(stream):
    """Real-size architectures with random weights (each encoder's default config is its paper size): the count pins
    down the head width and where the adapters sit; the registry entry uses the same arguments."""
    kwargs, count = PAPER_STREAMS[stream]
    model = ContrastiveStream(encoder_config={}, **kwargs)
    assert trainable(model) == count
    entry = next(e for n, e in ZOO.items() if n.startswith(f"multistream-{stream}"))
    assert entry.kwargs == kwargs


def test_lora_sits_on_the_last_four_blocks_only():
    beats = ContrastiveStream(kind="beats", encoder_config={}, lora_rank=16)
    layers = {n.split("layers.")[1].split(".")[0] for n, _ in beats.named_parameters() if "lora_A" in n}
    projections = {n.split("self_attn.")[1].split(".")[0] for n, _ in beats.named_parameters() if "lora_A" in n}
    assert layers == {"8", "9", "10", "11"} and projections == {"q_proj", "k_proj", "v_proj"}
    clap = ContrastiveStream(kind="clap_lora", encoder_config={}, lora_rank=8)
    blocks = {n.split("encoder.layers.")[1][:10] for n, _ in clap.named_parameters() if "lora_A" in n}
    assert blocks == {"2.blocks.4", "2.blocks.5", "3.blocks.0", "3.blocks.1"}  # HTS-AT depths (2, 2, 6, 2)
    assert {n.split("attention.self.")[1].split(".")[0] for n, _ in clap.named_parameters() if "lora_A" in n} == {
        "query",
        "value",
    }


# -- §2.3: contrastive training -----------------------------------------------------------------------------
def fixed_batch_loss(model, batch) -> float:
    model.eval()
    torch.manual_seed(123)  # the same two views every time
    with torch.no_grad():
        out = float(model.contrastive_loss(batch["wave"], batch["lengths"])["nt_xent"])
    model.train()
    return out


def test_training_lowers_infonce_and_moves_only_adapters_and_head(synth_root):
    L.seed_everything(0)
    model = tiny_beats(lora_rank=4, lora_blocks=1, lr=1e-3)
    train, _ = machine_batches(synth_root, "fan")
    batch = {k: v[:32] for k, v in train.items()}
    encoder_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    before = fixed_batch_loss(model, batch)
    fit_quietly(model, Task2DataModule(str(synth_root), batch_size=32, class_by=None), max_epochs=15)
    after = fixed_batch_loss(model, batch)
    check("multistream: NT-Xent on a fixed batch, after / before 15 epochs", after / before)
    encoder_after = model.encoder.state_dict()
    frozen = [k for k in encoder_before if "lora_" not in k]
    assert frozen and all(torch.equal(encoder_before[k], encoder_after[k]) for k in frozen)
    lora_b = [k for k in encoder_before if "lora_B" in k]
    assert lora_b and all(not torch.equal(encoder_before[k], encoder_after[k]) for k in lora_b)
    assert all(not torch.equal(v, model.head.state_dict()[k]) for k, v in head_before.items())


def test_a_frozen_stream_trains_its_head_only(synth_root):
    L.seed_everything(0)
    model = ContrastiveStream(kind="wavlm", encoder_config=TINY["wavlm"]["config"], **SMALL_HEAD)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit_quietly(model, Task2DataModule(str(synth_root), batch_size=32, class_by=None), max_epochs=1)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"head.0.weight", "head.0.bias"}


# -- saving ----------------------------------------------------------------------------------------------------
def saved_keys(folder) -> set[str]:
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return set(f.keys())


def fitted_fan(model, synth_root):
    train, test = machine_batches(synth_root, "fan")
    model.fit(train["wave"], train["domain"], train["lengths"])
    return test


def test_saved_stream_leaves_out_its_official_backbone_and_scores_identically(pretrained_beats, synth_root, tmp_path):
    L.seed_everything(0)
    model = ContrastiveStream(kind="beats", checkpoint=str(pretrained_beats), lora_rank=4, lora_blocks=2, **SMALL_HEAD)
    with torch.no_grad():  # trained-looking adapters, so that leaving them out would change the scores
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    test = fitted_fan(model, synth_root)
    folder = save_pretrained(model, tmp_path / "stream")
    keys = saved_keys(folder)
    assert not [k for k in keys if k.startswith("encoder.") and "lora_" not in k]
    assert {k for k in keys if "lora_" in k} == {k for k, _ in model.named_parameters() if "lora_" in k}
    assert {"head.0.weight", "head.0.bias"} <= keys and any(k.startswith("fitted::") for k in keys)
    again = load(folder)
    online = model.score(test["wave"], test["lengths"])
    assert torch.equal(again.score(test["wave"], test["lengths"]), online)
    assert torch.equal(
        again.score_set(test["wave"], test["domain"], test["lengths"]),
        model.score_set(test["wave"], test["domain"], test["lengths"]),
    )


def test_a_random_weight_stream_saves_its_backbone(synth_root, tmp_path):
    L.seed_everything(1)
    model = tiny_beats()
    test = fitted_fan(model, synth_root)
    folder = save_pretrained(model, tmp_path / "stream")
    assert {f"encoder.{k}" for k in model.encoder.state_dict()} <= saved_keys(folder)
    assert torch.equal(load(folder).score(test["wave"], test["lengths"]), model.score(test["wave"], test["lengths"]))


# -- §2.4-2.5: fusion and the pipeline ----------------------------------------------------------------------
def two_streams() -> MultiStream:
    L.seed_everything(2)
    streams = {
        "beats": dict(kind="beats", encoder_config=TINY_BEATS) | SMALL_HEAD,
        "wavlm": dict(kind="wavlm", encoder_config=TINY["wavlm"]["config"]) | SMALL_HEAD,
    }
    return MultiStream(streams, {"beats": 0.3, "wavlm": 0.7})


def test_fusion_is_the_weighted_sum_of_rank_normalised_stream_scores(synth_root):
    model = two_streams()
    test = fitted_fan(model, synth_root)
    raw = model.raw_scores(test["wave"], test["lengths"])
    domains = test["domain"].numpy()
    expected = 0.3 * rank_normalise(raw[:, 0], domains) + 0.7 * rank_normalise(raw[:, 1], domains)
    np.testing.assert_allclose(model.score_set(test["wave"], test["domain"], test["lengths"]).numpy(), expected)
    beats = copy.deepcopy(model.streams["beats"])
    train, _ = machine_batches(synth_root, "fan")
    beats.fit(train["wave"], train["domain"], train["lengths"])
    np.testing.assert_allclose(beats.raw_scores(test["wave"], test["lengths"])[:, 0], raw[:, 0], rtol=1e-6)
    online = 0.3 * rank_against(raw[:, 0], model._train_raw[0]) + 0.7 * rank_against(raw[:, 1], model._train_raw[1])
    np.testing.assert_allclose(model.score(test["wave"], test["lengths"]).numpy(), online)


@pytest.mark.parametrize(
    "weights, message",
    [({"a": 0.5, "b": 0.4}, "sum to 1"), ({"a": 1.2, "b": -0.2}, "non-negative"), ({"a": 1.0}, "one fusion weight")],
)
def test_fusion_weights_must_be_one_per_stream_non_negative_and_sum_to_one(weights, message):
    streams = {n: dict(kind="beats", encoder_config=TINY_BEATS) | SMALL_HEAD for n in ("a", "b")}
    with pytest.raises(ValueError, match=message):
        MultiStream(streams, weights)


def eval_named_copy(root, machine, tmp_path):
    """A copy of one machine whose test names carry no label or domain (evaluation-set names)."""
    out = tmp_path / "eval" / machine
    shutil.copytree(root / machine / "train", out / "train")
    (out / "test").mkdir()
    for i, path in enumerate(sorted((root / machine / "test").glob("*.wav"))):
        shutil.copy(path, out / "test" / f"section_00_{i:04d}.wav")
    return tmp_path / "eval"


def test_pipeline_ranks_per_domain_on_dev_names_and_per_machine_on_eval_names(synth_root, tmp_path):
    L.seed_everything(3)
    model = tiny_beats()
    data = load_machine(synth_root, "fan")
    scores, train_scores = fit_and_score(model, data)
    det = copy.deepcopy(model)
    train, test = all_clips(data.train, data.channels), all_clips(data.test, data.channels)
    det.fit(train["wave"], torch.tensor([int(c.domain == "target") for c in data.train]), train["lengths"])
    raw = det.raw_scores(test["wave"], test["lengths"])[:, 0]
    domains = np.array([int(c.domain == "target") for c in data.test])
    np.testing.assert_allclose(scores, rank_normalise(raw, domains))
    assert all(scores[domains == d].max() == 1.0 for d in (0, 1))  # ranks within each domain span [0, 1]
    np.testing.assert_allclose(train_scores, det.train_scores())

    eval_root = eval_named_copy(synth_root, "fan", tmp_path)
    assert load_machine(eval_root, "fan").test[0].domain is None
    eval_scores, _ = fit_and_score(model, load_machine(eval_root, "fan"))
    np.testing.assert_allclose(eval_scores, rank_normalise(raw))  # same clips, same order: one group per machine
    said = []
    score_root(model, eval_root, tmp_path / "out", progress=False, log=said.append)
    assert "rank-normalised over the test set per machine (names carry no domain)" in said[0]

    online = tiny_beats(rank_mode="online")
    online.load_state_dict(model.state_dict())
    online_scores, _ = fit_and_score(online, data)
    np.testing.assert_allclose(online_scores, rank_against(raw, det._train_raw[0]))


# -- the registry -------------------------------------------------------------------------------------------------
def test_submitted_systems_load_by_name_once_their_streams_are_installed(synth_root, tmp_path, isolated_home):
    entry = ZOO["multistream-mef6-hyb"]
    assert entry.kwargs["streams"] == {
        "clap": "multistream-clap",
        "beats-r16": "multistream-beats-r16-7m",
        "clap-lora": "multistream-clap-lora-12m",
        "wavlm": "multistream-wavlm",
        "beats-r32": "multistream-beats-r32-7m",
        "ast": "multistream-ast-12m",
    }
    assert set(entry.requires) == set(entry.kwargs["streams"].values())
    with pytest.raises(WeightsNotAvailableError, match="multistream_ast.yaml"):
        load("multistream-mef6-hyb")
    L.seed_everything(4)
    stream = save_pretrained(tiny_beats(), tmp_path / "stream")  # a stand-in for each trained stream
    for name in entry.requires:
        install(stream, name)
    model = load("multistream-mef6-hyb")
    assert dict(zip(model.streams, model.fusion_weights)) == MEF6_WEIGHTS
    test = fitted_fan(model, synth_root)
    again = load(save_pretrained(model, tmp_path / "system"))
    set_scores = model.score_set(test["wave"], test["domain"], test["lengths"])
    assert torch.equal(again.score_set(test["wave"], test["domain"], test["lengths"]), set_scores)


def test_mef5_weights_are_the_papers():
    weights = ZOO["multistream-mef5-7m"].kwargs["weights"]
    assert weights == {
        "clap": 0.22,
        "beats-r16": 0.26,
        "clap-lora": 0.26,
        "wavlm": 0.10,
        "beats-r32": 0.15,
        "ast": 0.01,
    }
    assert sum(weights.values()) == pytest.approx(1.0)


# -- LightningCLI ---------------------------------------------------------------------------------------------------
def test_the_beats_config_trains_with_lightning_cli_and_exports(pretrained_beats, synth_root, tmp_path):
    """multistream_beats_r16.yaml as shipped, made small (the tiny pre-trained BEATs, 2 adapted blocks, 3 s clips):
    early stopping and checkpointing watch val/spread on the held-out clips, SavePretrained writes the model."""
    from train_cli import main as train

    root = tmp_path / "run"
    train(
        [
            "fit",
            "--config",
            "asdzoo/configs/multistream_beats_r16.yaml",
            "--model.checkpoint",
            str(pretrained_beats),
            "--model.lora_blocks",
            "2",
            "--model.embed_dim",
            "16",
            "--data.root",
            str(synth_root),
            "--data.segment_seconds",
            "3",
            "--data.batch_size",
            "16",
            "--data.val_fraction",
            "0.25",
            "--trainer.max_epochs",
            "2",
            "--trainer.accelerator",
            "cpu",
            "--trainer.default_root_dir",
            str(root),
        ]
    )
    config = json.loads((root / "model" / "config.json").read_text())
    assert config["name"] == "multistream-beats-r16-7m" and config["config"]["lora_rank"] == 16
    model = load(root / "model")
    assert isinstance(model, ContrastiveStream) and model.official_backbone
    assert not [k for k in saved_keys(root / "model") if k.startswith("encoder.") and "lora_" not in k]
    assert list(root.glob("**/*.ckpt"))  # the val/spread checkpoint


def test_extra_roots_add_machines_and_val_fraction_holds_out_per_machine_and_domain(synth_root, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(synth_root / "fan" / "train", other / "pump" / "train")
    dm = Task2DataModule(str(synth_root), extra_roots=[str(other)], class_by=None, val_fraction=0.25)
    dm.setup()
    train = [c for c in dm.train_set.clips]
    val = [c for c in dm.val_set.clips]
    assert {c.machine for c in train} == {c.machine for c in val} == {"fan", "valve", "pump"}
    assert not {c.path for c in train} & {c.path for c in val}
    for machine in ("fan", "pump"):
        for domain in ("source", "target"):
            n_val = sum(c.machine == machine and c.domain == domain for c in val)
            n_all = n_val + sum(c.machine == machine and c.domain == domain for c in train)
            assert n_val == max(1, round(0.25 * n_all)), (machine, domain, n_val, n_all)


# -- detection ------------------------------------------------------------------------------------------------------
def mean_auc(model, root) -> float:
    aucs = []
    for machine in ("fan", "valve"):
        data = load_machine(root, machine)
        scores, _ = fit_and_score(model, data)
        aucs.append(roc_auc_score([int(c.meta.is_anomaly) for c in data.test], scores))
    return float(np.mean(aucs))


def test_a_lora_stream_detects_above_chance_after_a_short_run(pretrained_beats, synth_root):
    """The paper's recipe (lr 1e-4, 256-d head) for 20 epochs on LoRA over the tiny pre-trained BEATs (the stand-in
    for BEATs_iter3_plus_AS2M). On this data contrastive training does not add measurably to the pre-trained start
    (about 0.65-0.68 before and after on seeds 1, 10, 11; see the issue note): the detection is the backbone's, and
    the mark says the trained stream still detects."""
    L.seed_everything(0)
    model = ContrastiveStream(kind="beats", checkpoint=str(pretrained_beats), lora_rank=4, lora_blocks=2)
    fit_quietly(model, Task2DataModule(str(synth_root), batch_size=16, class_by=None), max_epochs=20)
    check("multistream beats stream: mean AUC of fan and valve", mean_auc(model, synth_root))
