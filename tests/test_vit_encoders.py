"""EAT, Dasheng and CED against the reference vectors of their official implementations."""

import json

import pytest
import torch
from safetensors.torch import load_file

from asdzoo.audio.kaldi import fbank
from asdzoo.encoders import load_encoder
from asdzoo.encoders.audiotransformer import CED, Dasheng
from asdzoo.encoders.eat import EAT

from encoder_checks import assert_padding_invariant
from reference import reference_dir


def _io(name, file):
    d = reference_dir(name)
    return d, load_file(str(d / file))


@pytest.mark.parametrize("clip,target_length", [(0, 256), (1, None)])
def test_eat(clip, target_length):
    d, io = _io("eat", "eat_io.safetensors")
    m = EAT(checkpoint=str(d / "tiny_eat_fairseq_style.pt"), target_length=target_length).eval()
    w = io[f"wav_{clip}"][None]
    with torch.no_grad():
        # README: about 1e-4. In near-silent bins the log amplifies float32 rounding of the power (a float64 fbank is
        # 4.8e-4 off the reference at log power -13.9), so the tight bound holds where log power > -10
        err, ref = (
            (fbank(w - w.mean(), window_type="hanning")[0] - io[f"fbank_raw_{clip}"]).abs(),
            io[f"fbank_raw_{clip}"],
        )
        assert err[ref > -10].max() < 2e-4 and err.max() < 2e-3
        assert (m.features(w) - io[f"input_{clip}"]).abs().max() < 1e-4
        tokens = m.encode_features(io[f"input_{clip}"])
        assert (tokens - io[f"all_tokens_{clip}"]).abs().max() < 1e-4
        assert (tokens[:, 0] - io[f"utterance_{clip}"]).abs().max() < 1e-4
        assert (m.encode_features(m.features(w)) - io[f"all_tokens_{clip}"]).abs().max() < 5e-4
        frames, _ = m(w)
        assert torch.allclose(frames[0], io[f"frame_tokens_{clip}"][0].view(-1, 8, 64).mean(1), atol=5e-4)


def test_eat_real_large_layout_and_finetuned_prefix():
    d = reference_dir("eat")
    spec = json.loads((d / "real_large_state_dict_shapes.json").read_text())
    shapes = spec.get("state_dict", spec)
    model = EAT(embed_dim=1024, depth=24, num_heads=16)
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == {k: list(v) for k, v in shapes.items()}
    from asdzoo.encoders.eat import normalize_eat_keys

    tiny = torch.load(d / "tiny_eat_fairseq_style.pt", weights_only=True)["model"]
    finetuned = {f"model.{k}": v for k, v in tiny.items()} | {
        "head.weight": torch.zeros(527, 64),
        "fc_norm.weight": torch.zeros(64),
    }
    assert normalize_eat_keys(finetuned).keys() == tiny.keys()


def test_eat_sincos_table_and_hub_port_layout():
    from asdzoo.encoders.eat import PREFIX, normalize_eat_keys, sincos_positions

    d = reference_dir("eat")
    tiny = torch.load(d / "tiny_eat_fairseq_style.pt", weights_only=True)["model"]
    stored = tiny[PREFIX + "fixed_positional_encoder.positions"]
    # the fixed table is the MAE 2-D sin-cos one (the official float32 sin/cos of angles up to 767 rad: ~2e-5)
    assert (sincos_positions(64, 768) - stored).abs().max() < 5e-5
    rename = {"context_encoder.norm.": "pre_norm."}
    port = {}
    for k, v in tiny.items():
        if "fixed_positional_encoder" in k:
            continue  # the port may not store the fixed table: it is rebuilt
        k = k.removeprefix(PREFIX)
        for ours, theirs in rename.items():
            k = k.replace(ours, theirs)
        port[f"model.{k}"] = v
    mapped = normalize_eat_keys(port)
    assert mapped.keys() == tiny.keys()
    model = EAT(embed_dim=64, depth=2, num_heads=4)
    model.load_state_dict(mapped, strict=True)
    _, io = _io("eat", "eat_io.safetensors")
    with torch.no_grad():
        assert (model.encode_features(io["input_1"]) - io["all_tokens_1"]).abs().max() < 1e-4


def test_dasheng_per_clip_and_batched():
    d, io = _io("dasheng", "dasheng_io.safetensors")
    m = Dasheng(checkpoint=str(d / "tiny_dasheng.pt")).eval()
    with torch.no_grad():
        for i in (0, 1):
            w = io[f"wav_{i}"][None]
            assert (m.logmel(w)[0] - io[f"logmel_{i}"]).abs().max() < 1e-3
            assert (m.spec(w)[0] - io[f"spec_{i}"]).abs().max() < 1e-4
            assert (m.forward_features(w)[0] - io[f"out_{i}"]).abs().max() < 1e-4
        official = Dasheng(checkpoint=str(d / "tiny_dasheng.pt"), official_batch_top_db=True).eval()
        assert (official.logmel(io["wav_batch"]) - io["logmel_batch"]).abs().max() < 1e-3
        assert (official.forward_features(io["wav_batch"]) - io["out_batch_nolen"]).abs().max() < 1e-4
        assert (official.forward_features(io["wav_batch"], io["wav_lengths"]) - io["out_batch_len"]).abs().max() < 1e-4
        frames, mask = m(io["wav_batch"], io["wav_lengths"])  # protocol: each clip alone, exactly
        assert mask.sum(1).tolist() == [37, 23] and (frames[1, :23] - io["out_1"]).abs().max() < 1e-4


@pytest.mark.parametrize("clip", [0, 1, 2])
def test_ced_with_the_official_chunk_quirk(clip):
    d, io = _io("ced", "ced_io.safetensors")
    m = CED(checkpoint=str(d / "tiny_ced.pt"), num_heads=4, target_length=48, official_chunk_quirk=True).eval()
    w = io[f"wav_{clip}"][None]
    with torch.no_grad():
        assert (m.logmel(w)[0] - io[f"logmel_{clip}"]).abs().max() < 1e-3
        chunks = m.chunks(m.spec(w))
        assert (torch.cat(chunks) - io[f"chunks_{clip}"]).abs().max() < 1e-4
        tokens = torch.cat([m.encode_patches(m.patch_embed(c)) for c in io[f"chunks_{clip}"].split(1)])
        assert (tokens - io[f"tokens_{clip}"]).abs().max() < 1e-4
        assert (tokens.mean(1) - io[f"token_mean_{clip}"]).abs().max() < 1e-4
        assert (m.probabilities(w) - io[f"output_{clip}"]).abs().max() < 1e-5


def test_ced_default_keeps_the_last_full_chunk():
    d, io = _io("ced", "ced_io.safetensors")
    w = io["wav_2"][None]  # 96 frames = 2 x 48
    quirk = CED(checkpoint=str(d / "tiny_ced.pt"), num_heads=4, target_length=48, official_chunk_quirk=True)
    default = CED(checkpoint=str(d / "tiny_ced.pt"), num_heads=4, target_length=48)
    assert len(quirk.chunks(quirk.spec(w))) == 1 and len(default.chunks(default.spec(w))) == 2
    frames, _ = default.eval()(w)
    assert frames.shape[1] == 6  # 3 time columns from each of the two chunks


@pytest.mark.parametrize("name,key", [("dasheng", "dasheng_base"), ("ced", "ced_base")])
def test_real_base_layouts(name, key):
    d = reference_dir(name)
    shapes = json.loads((d / "real_base_state_dict_shapes.json").read_text())[key]
    model = Dasheng() if name == "dasheng" else CED()  # defaults = the base models
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == {k: list(v) for k, v in shapes.items()}


@pytest.mark.parametrize(
    "name,file,kw",
    [
        ("dasheng", "tiny_dasheng.pt", {}),
        ("ced", "tiny_ced.pt", {"num_heads": 4, "target_length": 48}),
        ("eat", "tiny_eat_fairseq_style.pt", {}),
    ],
)
def test_padding_never_changes_valid_frames(name, file, kw):
    d = reference_dir(name)
    assert_padding_invariant(load_encoder(name, checkpoint=str(d / file), **kw).eval(), total=20000, valid=12000)
