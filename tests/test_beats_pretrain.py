"""BEATs pre-training from scratch (iteration 1 objective) and its checkpoint."""

import json

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from asdzoo.encoders.beats import BEATs
from asdzoo.encoders.beats_pretrain import BEATsPretrainer, RandomProjectionTokenizer, fbank_patches

from conftest import TINY_BEATS, machine_batches
from thresholds import check


def test_patches_follow_the_patch_embedding_token_order():
    """A patch embedding whose output channel c copies patch pixel c reproduces ``fbank_patches`` exactly."""
    enc = BEATs(cfg=dict(TINY_BEATS, embed_dim=256))
    eye = torch.eye(256).reshape(256, 1, 16, 16)
    fb = torch.randn(2, 100, 128)
    tokens = F.conv2d(fb[:, None], eye, stride=16).flatten(2).transpose(1, 2)
    assert torch.equal(tokens, fbank_patches(fb, 16))
    assert enc.patch_embedding.weight.shape == eye.shape  # the same conv geometry as the encoder's


def test_tokenizer_is_seeded_scale_invariant_and_spreads_over_the_codebook(synth_root):
    tr, _ = machine_batches(synth_root, "fan")
    enc = BEATs(cfg=TINY_BEATS)
    patches = fbank_patches(enc.preprocess(tr["wave"][:8, 0]), 16)
    a, b = RandomProjectionTokenizer(256, seed=0), RandomProjectionTokenizer(256, seed=1)
    labels = a(patches)
    assert torch.equal(labels, RandomProjectionTokenizer(256, seed=0)(patches))
    assert not torch.equal(labels, b(patches))
    assert torch.equal(labels, a(3.0 * patches))  # L2-normalised look-up: the level does not change the code
    check("beats tokenizer: distinct codes on 8 fan clips", labels.unique().numel())  # no collapse to a few


def test_masked_prediction_learns_and_masks_three_quarters(synth_root):
    tr, _ = machine_batches(synth_root, "valve")
    torch.manual_seed(0)
    model = BEATsPretrainer(beats=TINY_BEATS, warmup_steps=1, lr=1e-3)
    seen = []
    model.beats.encoder.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[1]))
    wave = tr["wave"][:8, 0, :32000]
    before, _ = model.masked_prediction_loss(wave)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(60):
        loss, _ = model.masked_prediction_loss(wave)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after, accuracy = model.masked_prediction_loss(wave)
    tokens = model.beats.patch_tokens(model.beats.preprocess(wave)).shape[1]
    assert seen[0] == round(0.25 * tokens)  # only the visible quarter goes through the encoder
    check("beats pretrain: masked-prediction loss after / before", after / before)
    check("beats pretrain: masked-prediction accuracy", accuracy)


def _mean_token_auc(encoder: BEATs, root) -> float:
    """Mean pooled tokens of the near channel, cosine k=1 against the machine's training clips, AUC over all tests."""
    aucs = []
    with torch.no_grad():
        for machine in ("fan", "valve"):
            tr, te = machine_batches(root, machine)
            bank = F.normalize(encoder(tr["wave"][:, 0])[0].mean(1), dim=-1)
            query = F.normalize(encoder(te["wave"][:, 0])[0].mean(1), dim=-1)
            aucs.append(roc_auc_score(te["label"].numpy(), (1 - (query @ bank.T).max(1).values).numpy()))
    return float(np.mean(aucs))


def test_pretrained_checkpoint_loads_and_its_features_detect_better_than_random(pretrained_beats, synth_root):
    """The exported file loads like an official checkpoint, and pre-training is what makes its features useful."""
    from safetensors import safe_open

    with safe_open(str(pretrained_beats), "pt") as f:
        assert json.loads(f.metadata()["cfg"])["encoder_embed_dim"] == TINY_BEATS["encoder_embed_dim"]
    pretrained = BEATs(checkpoint=str(pretrained_beats), fbank_window="hamming").eval()
    torch.manual_seed(0)
    random = BEATs(cfg=TINY_BEATS, fbank_window="hamming").eval()
    learnt, chance = _mean_token_auc(pretrained, synth_root), _mean_token_auc(random, synth_root)
    check("beats pretrained tokens: AUC", learnt)
    check("beats pretrained tokens: AUC gain over random weights", learnt - chance)


def test_pretrain_config_writes_a_loadable_checkpoint(synth_root, tmp_path):
    from train_cli import main

    out = tmp_path / "beats.safetensors"
    main(
        [
            "fit",
            "--config",
            "asdzoo/configs/beats_pretrain.yaml",
            "--data.root",
            str(synth_root),
            "--data.segment_seconds",
            "2",
            "--model.beats",
            json.dumps(TINY_BEATS),
            "--trainer.fast_dev_run",
            "true",
            "--trainer.default_root_dir",
            str(tmp_path),
            "--trainer.callbacks.path",
            str(out),
        ]
    )
    loaded = BEATs(checkpoint=str(out), fbank_window="hamming")
    assert loaded.cfg.encoder_layers == TINY_BEATS["encoder_layers"] and not list(tmp_path.glob(".*.tmp"))
