"""M2D-CLAP audio branch against the official portable runtime's vectors (../shared/reference/m2d_clap)."""

import argparse
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from asdzoo.encoders import load_encoder
from asdzoo.encoders.m2d import parse_m2d_name
from asdzoo.encoders.m2d_clap import M2DClap, split_m2d_clap_state

from encoder_checks import assert_padding_invariant
from reference import reference_dir

DIR24 = "m2d_clap_vit_base-80x608p16x16-tiny2024"
DIR25 = "m2d_clap_vit_base-80x1001p16x16p16kpBpTI-tiny2025"
REAL24 = "m2d_clap_vit_base-80x608p16x16-240128/checkpoint-300.pth"
REAL25 = "m2d_clap_vit_base-80x1001p16x16p16kpBpTI-2025/checkpoint-30.pth"
TRAINING_ONLY = ("mask_token", "decoder_", "logit_scale", "target_")


def err(x, y):
    return (x.float() - y).abs().max().item()


@pytest.fixture(scope="module")
def ref():
    d = reference_dir("m2d_clap")
    return d, load_file(str(d / "m2d_clap_io.safetensors"))


@pytest.fixture(scope="module")
def clap24(ref):
    return M2DClap(checkpoint=str(ref[0] / DIR24 / "checkpoint-300.pth"), num_heads=4).eval()


@pytest.fixture(scope="module")
def clap25(ref):
    return M2DClap(checkpoint=str(ref[0] / DIR25 / "checkpoint-30.pth"), num_heads=4).eval()


def test_2024_mlp_projector_checkpoint(ref, clap24):
    _, io = ref
    w = io["A_input_waveform"]
    assert clap24.cfg.input_size == (80, 608) and clap24.cfg.sample_rate == 16000  # from the folder name
    assert torch.equal(clap24.backbone.norm_stats, torch.tensor([-7.1, 4.2]))  # absent in 2024 files: the default
    with torch.no_grad():
        flat = clap24.encode(w)
        assert err(flat, io["A_encode_flat"]) < 1e-4  # 641 frames: 38 + 3 patches, 5 tokens each
        assert err(clap24.encode(w, flat_features=False), io["A_encode_stacked"]) < 1e-4
        emb, ts = clap24.timestamp_embeddings(w)
        assert err(emb, io["A_encode_flat_avg_per_frame"]) < 1e-4 and err(ts, io["A_timestamps_ms"]) < 1e-3
        assert err(clap24.audio_proj.pooled(flat), io["A_clap_pre_proj_mean"]) < 1e-4
        assert err(clap24.clap_audio(w), io["A_clap_audio"]) < 1e-4
        assert err(clap24.audio_proj.pooled(io["A_encode_flat"]), io["A_clap_pre_proj_mean"]) < 1e-5
        assert err(clap24.audio_proj(io["A_encode_flat"]), io["A_clap_audio"]) < 1e-5


def test_2025_semantic_projector_checkpoint(ref, clap25):
    _, io = ref
    w = io["B_input_waveform"]
    assert clap25.cfg.input_size == (80, 1001) and len(clap25.audio_proj.sem_blocks) == 1  # sem_mode 1
    assert clap25.audio_proj.norm.eps == 1e-5 and clap25.audio_proj.sem_blocks[0].norm1.eps == 1e-5
    assert torch.allclose(clap25.backbone.norm_stats, torch.tensor([-6.9, 4.1]))  # stored stats, not the default
    with torch.no_grad():
        assert err(clap25.log_mel(w), io["B_log_mel"]) < 2e-4
        flat = clap25.encode(w)
        assert err(flat, io["B_encode_flat"]) < 1e-4
        assert err(clap25.encode(w, flat_features=False), io["B_encode_stacked"]) < 1e-4
        assert err(clap25.audio_proj.blocks_out(flat), io["B_clap_sem_block_out"]) < 1e-4
        assert err(clap25.clap_audio(w), io["B_clap_audio"]) < 1e-4
        assert err(clap25.audio_proj.blocks_out(io["B_encode_flat"]), io["B_clap_sem_block_out"]) < 1e-5
        assert err(clap25.audio_proj(io["B_encode_flat"]), io["B_clap_audio"]) < 1e-5


def test_2025_two_chunks(ref, clap25):
    _, io = ref
    w = io["C_input_waveform"]  # 1051 frames: 62 + 4 patches (the remainder of the last chunk padded to 16)
    with torch.no_grad():
        assert err(clap25.encode(w), io["C_encode_flat"]) < 1e-4
        assert err(clap25.clap_audio(w), io["C_clap_audio"]) < 1e-4
        assert err(clap25.audio_proj(io["C_encode_flat"]), io["C_clap_audio"]) < 1e-5
        assert err(clap25.timestamp_embeddings(w)[1], io["C_timestamps_ms"]) < 1e-3


def test_protocol_frames_and_clap_outputs(ref):
    d, io = ref
    path = str(d / DIR25 / "checkpoint-30.pth")
    frames_enc = load_encoder("m2d_clap", checkpoint=path, num_heads=4).eval()
    assert frames_enc.sample_rate == 16000 and frames_enc.embed_dim == 320
    assert_padding_invariant(frames_enc, total=24000, valid=15000)
    clap = load_encoder("m2d_clap", checkpoint=path, num_heads=4, output="clap").eval()
    w = io["B_input_waveform"]
    with torch.no_grad():
        frames, mask = clap(w, torch.tensor([48000, 30000]))
        alone = clap.clap_audio(w[1:, :30000])
    assert clap.embed_dim == 64 and frames.shape == (2, 1, 64) and mask.all()
    assert err(frames[0, 0], io["B_clap_audio"][0]) < 1e-4 and err(frames[1], alone) < 1e-5


def test_checkpoint_keys_that_do_not_fit_fail_in_one_line(ref, tmp_path):
    d, _ = ref
    junk = tmp_path / "junk.pth"
    torch.save({"model": {"foo": torch.zeros(3)}}, junk)
    enconly = reference_dir("m2d") / "tiny_m2d_enconly.pth"  # M2D without the CLAP projector
    wrong_size = tmp_path / "m2d_clap_vit_base-80x608p16x16-x" / "checkpoint-30.pth"  # 2025 weights, 608-frame name
    wrong_size.parent.mkdir()
    shutil.copy(d / DIR25 / "checkpoint-30.pth", wrong_size)
    for path, what in [(junk, "no ViT keys"), (enconly, "audio_proj"), (wrong_size, "pos_embed")]:
        with pytest.raises(ValueError) as e:
            M2DClap(checkpoint=str(path), num_heads=4)
        assert str(path) in str(e.value) and what in str(e.value) and "\n" not in str(e.value)


def test_real_2024_file_with_argparse_namespace_loads_weights_only(ref, clap24, tmp_path):
    d, io = ref
    state = torch.load(d / DIR24 / "checkpoint-300.pth", weights_only=True)["model"]
    path = tmp_path / DIR24 / "checkpoint-300.pth"
    path.parent.mkdir()
    torch.save({"model": state, "epoch": 300, "args": argparse.Namespace(lr=1e-4, model="m2d_clap_vit_base")}, path)
    with pytest.raises(Exception, match="Namespace"):  # plain weights_only refuses it: the loader allows that class
        torch.load(path, weights_only=True)
    m = M2DClap(checkpoint=str(path), num_heads=4).eval()
    with torch.no_grad():
        assert torch.equal(m.clap_audio(io["A_input_waveform"]), clap24.clap_audio(io["A_input_waveform"]))


def test_real_base_layouts_and_folder_names(ref):
    d, _ = ref
    spec = json.loads((d / "real_base_state_dict_shapes.json").read_text())
    files = {k.split(" ")[0]: v for k, v in spec.items()}  # "<folder>/<file> ['model'] (how it was rebuilt)"
    for name in [REAL24, REAL25]:
        backbone, proj = split_m2d_clap_state({k: torch.empty(s, device="meta") for k, s in files[name].items()})
        fields = parse_m2d_name(name.split("/")[0])
        assert fields.get("sample_rate", 16000) == 16000  # no "p16k" in the 2024 name: the 16 kHz default
        with torch.device("meta"):
            model = M2DClap(**fields, projector="semantic" if "sem_token" in proj else "mlp")
        vit = {k: list(v.shape) for k, v in model.backbone.state_dict().items()}
        assert vit == {k: list(backbone[k].shape) for k in vit}  # ViT-Base 768/12, 5 x 38 or 5 x 62 positions
        assert all(k.startswith(TRAINING_ONLY) for k in set(backbone) - set(vit))  # only training keys dropped
        assert {k: list(v.shape) for k, v in model.audio_proj.state_dict().items()} == {
            k: list(v.shape) for k, v in proj.items()
        }
    assert "norm_stats" not in files[REAL24] and "backbone.norm_stats" in files[REAL25]
