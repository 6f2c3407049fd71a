import json

import pytest
import torch
from safetensors.torch import load_file

from asdzoo.encoders import load_encoder
from asdzoo.encoders.m2d import M2D, load_m2d_tagger, parse_m2d_name

from reference import reference_dir


@pytest.fixture(scope="module")
def ref():
    d = reference_dir("m2d")
    return d, load_file(str(d / "m2d_io.safetensors"))


@pytest.fixture(scope="module")
def enc(ref):
    return M2D(checkpoint=str(ref[0] / "tiny_m2d_enconly.pth"), num_heads=4).eval()


def test_front_end_and_chunked_encode(ref, enc):
    _, io = ref
    with torch.no_grad():
        for case in "AB":
            assert (enc.log_mel(io[f"{case}_input_waveform"]) - io[f"{case}_log_mel"]).abs().max() < 2e-4
            assert (enc.encode(io[f"{case}_input_waveform"]) - io[f"{case}_encode"]).abs().max() < 1e-4
        lms = enc.normalize(enc.log_mel(io["B_input_waveform"]))[..., :240]
        assert (enc.backbone.forward_encoder(lms) - io["B_forward_encoder_with_cls"]).abs().max() < 1e-4
    assert enc.encode(io["A_input_waveform"]).shape[1] == 68  # 1101 frames: 62 + 6 patches over two chunks
    assert (enc.timestamps_ms(352000, 68) - io["A_timestamps_ms"][0].double()).abs().max() < 1e-3
    assert torch.equal(enc.backbone.norm_stats, torch.tensor([-7.25, 4.5]))  # stored stats, not the default


def test_evar_head_switches_to_flat_features(ref):
    d, io = ref
    m = M2D(checkpoint=str(d / "tiny_m2d_evarhead.pth"), num_heads=4).eval()
    assert m.cfg.flat_features
    with torch.no_grad():
        assert (m.encode(io["B_input_waveform"]) - io["C_encode_flat"]).abs().max() < 1e-4
        assert (m.logits(io["B_input_waveform"]) - io["C_logits"]).abs().max() < 1e-4


@pytest.mark.parametrize("file,prefix", [("tiny_m2dat_1c.ckpt", "D_m2dat_1c"), ("tiny_m2dat_4c.ckpt", "E_m2dat_4c")])
def test_task4_taggers(ref, file, prefix):
    d, io = ref
    tagger = load_m2d_tagger(str(d / file), num_heads=4)
    with torch.no_grad():
        assert (tagger(io["D_input_mixture"]) - io[f"{prefix}_logits"]).abs().max() < 1e-4
        pred = tagger.predict(io["D_input_mixture"])
    assert torch.equal(pred["label_vector"], io[f"{prefix}_pred_label_vector"])
    assert (pred["probabilities"] - io[f"{prefix}_pred_prob"]).abs().max() < 1e-5


def test_real_base_layout_and_names(ref):
    d, _ = ref
    spec = json.loads((d / "real_base_state_dict_shapes.json").read_text())
    shapes = spec.get("state_dict", spec)
    model = M2D()  # explicit default config = ViT-Base 80x1001p16x16, 32 kHz
    state = model.backbone.state_dict()
    assert {k: list(v.shape) for k, v in state.items()} == {k: list(v) for k, v in shapes.items()}
    assert parse_m2d_name("m2d_as_vit_base-80x1001p16x16p32k-240413_AS-FT_enconly") == {
        "input_size": (80, 1001),
        "patch_size": (16, 16),
        "sample_rate": 32000,
    }
    assert parse_m2d_name("m2d_vit_base-80x608p16x16-221006-mr7")["input_size"] == (80, 608)


def test_protocol_16k_input_and_padding_invariance(ref):
    d, _ = ref
    enc = load_encoder("m2d", checkpoint=str(d / "tiny_m2d_enconly.pth"), num_heads=4)
    wave = torch.randn(2, 40000) * 0.1
    wave[1, 24000:] = 0
    with torch.no_grad():
        frames, mask = enc(wave, torch.tensor([40000, 24000]))
        alone, _ = enc(wave[1:, :24000])
    assert frames.shape[-1] == 320 and mask.sum(1).tolist() == [frames.shape[1], alone.shape[1]]
    assert torch.allclose(frames[1, : alone.shape[1]], alone[0], atol=1e-5)
