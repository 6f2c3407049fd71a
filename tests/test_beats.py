import json

import pytest
import torch
from safetensors.torch import load_file

from asdzoo.audio.kaldi import fbank
from asdzoo.encoders import load_encoder
from asdzoo.encoders.beats import BEATs, BEATsConfig, load_beats_checkpoint, relative_position_buckets

from encoder_checks import assert_lora_trains_and_merges
from reference import reference_dir


@pytest.fixture(scope="module")
def ref():
    d = reference_dir("beats")
    return d, load_file(str(d / "beats_io.safetensors"))


@pytest.fixture(scope="module")
def tiny(ref):
    return BEATs(checkpoint=str(ref[0] / "tiny_beats.pt")).eval()


def test_kaldi_fbank_matches_reference(ref):
    _, io = ref
    got = (fbank(io["input_waveform"] * 2**15) - 15.41663) / (2 * 6.55582)
    assert (got - io["fbank"]).abs().max() < 1e-4


def test_intermediates_and_features_match(ref, tiny):
    _, io = ref
    wave, pad = io["input_waveform"], io["input_padding_mask"]
    with torch.no_grad():
        x = tiny.patch_embedding(tiny.preprocess(wave)[:, None])
        assert (x - io["intermediate_patch_embedding_out"]).abs().max() < 1e-4
        x = tiny.layer_norm(x.flatten(2).transpose(1, 2))
        assert (x - io["intermediate_patch_layer_norm_out"]).abs().max() < 1e-4
        assert (tiny.post_extract_proj(x) - io["intermediate_post_extract_proj_out"]).abs().max() < 1e-4
        feats, mask = tiny.extract_features(wave, pad)
        assert (feats - io["features"]).abs().max() < 1e-4 and torch.equal(mask, io["padding_mask_out"])
        for i in (0, 1):
            layer_out = tiny.extract_features(wave, pad, layer=i)[0]
            assert (layer_out - io[f"intermediate_encoder_layer{i}_out_TBC"].transpose(0, 1)).abs().max() < 1e-4
        assert (tiny.extract_features(wave)[0] - io["features_no_padding_mask"]).abs().max() < 1e-4
    assert torch.equal(relative_position_buckets(144, 144, 320, 800).int(), io["rel_pos_bucket"].int())


def test_encoder_protocol_runs_each_clip_alone(ref, tiny):
    _, io = ref
    with torch.no_grad():
        frames, mask = tiny(io["input_waveform"], torch.tensor([48000, 32000]))
    assert mask.sum(1).tolist() == [144, 96]
    assert (frames[0] - io["features_single_clip0"]).abs().max() < 1e-4
    assert (frames[1, :96] - io["features_single_clip1"]).abs().max() < 1e-4 and (frames[1, 96:] == 0).all()


def test_finetuned_probabilities_and_labels(ref):
    d, _ = ref
    io = load_file(str(d / "beats_finetuned_io.safetensors"))
    model = BEATs(checkpoint=str(d / "tiny_beats_finetuned.pt")).eval()
    with torch.no_grad():
        probs, mask = model.extract_features(io["input_waveform"], io["input_padding_mask"])
        assert (probs - io["probs"]).abs().max() < 1e-5 and torch.equal(mask, io["padding_mask_out"])
        assert (model.extract_features(io["input_waveform"])[0] - io["probs_no_padding_mask"]).abs().max() < 1e-5
    assert model.label_dict[3] == "class_3"


def test_safetensors_copy_loads_identically(ref, tiny):
    d, io = ref
    other = BEATs(checkpoint=str(d / "tiny_beats_weights.safetensors")).eval()
    with torch.no_grad():
        assert torch.equal(
            other.extract_features(io["input_waveform"])[0], tiny.extract_features(io["input_waveform"])[0]
        )


def test_real_base_layouts_load_strictly(ref):
    d, _ = ref
    shapes = json.loads((d / "real_base_state_dict_shapes.json").read_text())
    for kind in ("pretrained", "finetuned"):
        spec = shapes[kind]
        state = {k: torch.randn(v) for k, v in spec["state_dict"].items()}
        model = BEATs(spec["cfg_used"])
        model.load_official_state_dict(state)  # strict: every key used, none missing
        # weight_g [1, 1, 128] is folded into the positional conv weight at load time
        assert sum(p.numel() for p in model.parameters()) == int(spec["n_params"]) - 128
    assert BEATsConfig() == BEATsConfig.from_dict(shapes["pretrained"]["cfg_used"])  # defaults = the base model
    bad = {k: torch.randn(v) for k, v in shapes["pretrained"]["state_dict"].items()}
    bad.pop("encoder.layers.3.fc1.weight")
    with pytest.raises(ValueError, match="missing"):
        BEATs().load_official_state_dict(bad)


def test_load_encoder_with_overrides_and_layer(ref):
    d, io = ref
    enc = load_encoder("beats", checkpoint=str(d / "tiny_beats.pt"), layer=0)
    frames, _ = enc(io["input_waveform"][:1])
    assert frames.shape == (1, 144, 64)
    tiny_cfg = load_beats_checkpoint(str(d / "tiny_beats.pt"))["cfg"]
    random = load_encoder("beats", **{**tiny_cfg, "encoder_layers": 1})
    assert random.cfg.encoder_layers == 1 and isinstance(random.cfg, BEATsConfig)


def test_lora_on_q_and_v_trains_and_merges(ref):
    d, io = ref
    target = torch.ones(64)
    assert_lora_trains_and_merges(
        BEATs(checkpoint=str(d / "tiny_beats.pt")),
        ["q_proj", "v_proj"],
        io["input_waveform"][:1],
        lambda frames: (frames.mean(dim=(0, 1)) - target).pow(2).mean(),
        steps=15,
    )
