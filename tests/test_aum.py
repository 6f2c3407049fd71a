"""Audio-Mamba against the official code's reference vectors (../shared/reference/aum, tolerance 1e-4 per its
README), the official key lists, the chunked scan against its sequential definition, and the paper's additions
(pixel-unshuffle token count, gated fusion, the 1024-frame front-end)."""

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from asdzoo.encoders.aum import AudioMamba, load_aum_state
from asdzoo.nn.mamba import Mamba
from asdzoo.nn.selective_scan import causal_conv1d, selective_scan, selective_scan_sequential

from reference import reference_dir

TINY_REF = dict(spectrogram_size=(128, 64), depth=2, embed_dim=64, d_state=8, num_classes=10, bimamba_type="v2")
KEY_LISTS = {
    "aum_base_v2_128x1024_keys.txt": dict(embed_dim=768, bimamba_type="v2"),
    "aum_small_v2_128x1024_keys.txt": dict(embed_dim=384, bimamba_type="v2"),
    "aum_tiny_v2_128x1024_keys.txt": dict(embed_dim=192, bimamba_type="v2"),
    "aum_base_v1_128x1024_keys.txt": dict(embed_dim=768, bimamba_type="v1"),
}


@pytest.fixture(scope="module")
def ref():
    return reference_dir("aum")


@pytest.fixture(scope="module")
def tiny_out(ref):
    model = AudioMamba(**TINY_REF).eval()
    model.load_state_dict(torch.load(ref / "aum_tiny_v2_state_dict.pt", weights_only=True), strict=True)
    io = np.load(ref / "aum_tiny_v2_io.npz")
    with torch.no_grad():
        out = model.forward_spectrogram(torch.from_numpy(io["input"]))
    return model, out, io


def close(got, want, atol=1e-4, rtol=0.0):
    want = torch.as_tensor(np.asarray(want))
    assert got.shape == want.shape
    err = (got.detach().double() - want.double()).abs()
    assert (err <= atol + rtol * want.double().abs()).all(), f"max abs error {err.max().item():.3g}"


def test_tiny_model_matches_official_outputs(tiny_out):
    model, out, io = tiny_out
    assert model.token_position == int(io["token_position"]) == 16
    close(out["layers_input"], io["layers_input"])
    for i, (hidden, residual) in enumerate(out["blocks"]):
        close(hidden, io[f"block{i}_hidden"])
        close(residual, io[f"block{i}_residual"])
    close(out["final_hidden"], io["final_hidden"])
    close(out["cls"], io["cls_embedding"])
    close(out["logits"], io["logits"])


def test_checkpoint_wrapped_and_prefixed_loads_strictly(ref, tmp_path):
    state = torch.load(ref / "aum_tiny_v2_state_dict.pt", weights_only=True)
    path = tmp_path / "aum.pth"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, path)
    model = AudioMamba(checkpoint=str(path), spectrogram_size=(128, 64))
    assert (model.embed_dim, model.depth, model.head.out_features) == (64, 2, 10)
    assert torch.equal(model.state_dict()["pos_embed.pos_embed"], state["pos_embed.pos_embed"])
    torch.save({"model": {"x": torch.zeros(1)}}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="bad.pth"):
        load_aum_state(str(tmp_path / "bad.pth"))


def parse_key_list(path):
    rows = [line.rstrip("\n").split("\t") for line in path.read_text().splitlines() if line and line[0] != "#"]
    return {k: (tuple(int(s) for s in shape.strip("[]").split(",")), dtype) for k, shape, dtype in rows}


@pytest.mark.parametrize("name", sorted(KEY_LISTS))
def test_real_size_key_names_and_shapes(ref, name):
    with torch.device("meta"):
        model = AudioMamba(spectrogram_size=(128, 1024), patch_size=16, depth=24, num_classes=527, **KEY_LISTS[name])
    got = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}
    assert got == parse_key_list(ref / name)


@pytest.mark.parametrize("case", ["fixed_BC", "variable_BC"])
@pytest.mark.parametrize("fn", [selective_scan, selective_scan_sequential])
def test_selective_scan_matches_reference(ref, case, fn):
    d = np.load(ref / f"selective_scan_{case}.npz")
    t = {k: torch.from_numpy(d[k]) for k in d.files}
    out, last = fn(t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["z"], t["delta_bias"], True, True)
    close(out, d["out"], atol=1e-4, rtol=1e-4)
    close(last, d["last_state"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float64, 1e-10)])
@pytest.mark.parametrize("variable", [True, False])
@pytest.mark.parametrize("decay_shift,path", [(-3.0, "cumsum"), (3.0, "doubling")])
def test_chunked_scan_equals_sequential(monkeypatch, dtype, tol, variable, decay_shift, path):
    import asdzoo.nn.selective_scan as ss

    calls = []
    doubling = ss._doubling
    monkeypatch.setattr(ss, "_doubling", lambda *a: calls.append(1) or doubling(*a))
    g = torch.Generator().manual_seed(0)
    b, d, n, length = 2, 6, 5, 203  # 203 = 3 * 64 + 11: a ragged last chunk
    u, delta, z = (torch.randn(b, d, length, generator=g, dtype=dtype) for _ in range(3))
    A = -torch.exp(torch.randn(d, n, generator=g, dtype=dtype) + decay_shift)  # +3: too strong for the cumsum form
    shape = (b, n, length) if variable else (d, n)
    B, C = (torch.randn(*shape, generator=g, dtype=dtype) for _ in range(2))
    D, bias = torch.randn(d, generator=g, dtype=dtype), torch.randn(d, generator=g, dtype=dtype)
    want = selective_scan_sequential(u, delta, A, B, C, D, z, bias, True, True)
    got = selective_scan(u, delta, A, B, C, D, z, bias, True, True)
    assert bool(calls) == (path == "doubling")
    for w, o in zip(want, got):
        assert o.dtype == dtype
        torch.testing.assert_close(o, w, atol=tol, rtol=tol)


def test_causal_conv_closed_form():
    x = torch.arange(1.0, 7.0).view(1, 1, 6)
    w = torch.tensor([[1.0, 10.0, 100.0]])  # oldest tap first: y_t = x_{t-2} + 10 x_{t-1} + 100 x_t
    y = causal_conv1d(x, w, torch.tensor([0.5]), activation=None)
    torch.testing.assert_close(y[0, 0], torch.tensor([100.5, 210.5, 321.5, 432.5, 543.5, 654.5]))
    torch.testing.assert_close(
        causal_conv1d(x, w, None, "silu"), torch.nn.functional.silu(causal_conv1d(x, w, None, None))
    )


def test_pixel_unshuffle_token_count():
    for r, n in [(1, 512), (2, 128), (4, 32)]:
        with torch.device("meta"):
            model = AudioMamba(embed_dim=32, depth=1, d_state=4, unshuffle=r)
        assert model.num_patches == n == 128 * 1024 // (16**2 * r**2)
        assert model.patch_embed.proj.in_channels == r * r
    model = AudioMamba(spectrogram_size=(128, 256), embed_dim=16, depth=1, d_state=4, unshuffle=4)
    assert model.tokens(torch.randn(1, 256, 128)).shape == (1, 8 + 1, 16)


def test_front_end_gives_1024_frames_for_10_s():
    model = AudioMamba(embed_dim=16, depth=1, d_state=4)
    spec = model.spectrogram(torch.randn(2, 160000) * 0.1)
    assert spec.shape == (2, 1024, 128) and torch.isfinite(spec).all()
    assert model.valid_frames(160000) == 1024 and 160000 // model.hop_length + 1 >= 1024
    kaldi = AudioMamba(embed_dim=16, depth=1, d_state=4, frontend="kaldi")
    assert kaldi.spectrogram(torch.randn(1, 160000) * 0.1).shape == (1, 1024, 128)
    assert kaldi.valid_frames(160000) == 998


def test_gated_fusion_at_half_equals_average():
    torch.manual_seed(0)
    plain = Mamba(16, d_state=4, bimamba_type="v2")
    gated = Mamba(16, d_state=4, bimamba_type="v2", gated_fusion=True)
    assert "gate_proj.weight" not in plain.state_dict()
    gated.load_state_dict(plain.state_dict(), strict=False)  # gate_proj is zero: g = sigmoid(0) = 0.5
    h = torch.randn(2, 9, 16)
    torch.testing.assert_close(gated(h), plain(h), atol=1e-6, rtol=1e-6)
    with torch.no_grad():
        gated.gate_proj.bias.fill_(40.0)  # g = 1 in float32: the forward direction alone
    forward_only = Mamba(16, d_state=4, bimamba_type="none")
    forward_only.load_state_dict(plain.state_dict(), strict=False)
    torch.testing.assert_close(gated(h), forward_only(h), atol=1e-6, rtol=1e-6)


def fo_bi_reference(mixer: Mamba, h: torch.Tensor) -> torch.Tensor:
    """AuM's v1 ("Fo-Bi") mixer as ViM's ``bimamba_inner_ref`` composes it (AuM's vendored
    ``mamba_ssm/ops/selective_scan_interface.py``; ``Mamba.forward`` calls ``bimamba_inner_fn`` for v1), step by step:
    one causal conv (here nn.Conv1d's symmetric padding cropped to L, as mamba's slow path does), one x_proj/dt_proj;
    the backward scan takes the same conv output, delta, B, C and z flipped, with A_b and the shared D and delta
    bias; ``y + y_b.flip`` (no halving: ``if_devide_out`` is a v2 option), then out_proj."""
    length, width = h.shape[1], mixer.conv1d.weight.shape[-1]
    x, z = (h @ mixer.in_proj.weight.T).transpose(1, 2).chunk(2, dim=1)
    conv = F.conv1d(x, mixer.conv1d.weight, mixer.conv1d.bias, padding=width - 1, groups=x.shape[1])
    x = F.silu(conv[..., :length])
    dt, B, C = torch.split(x.transpose(1, 2) @ mixer.x_proj.weight.T, [mixer.dt_rank, mixer.d_state, mixer.d_state], -1)
    delta = (dt @ mixer.dt_proj.weight.T).transpose(1, 2)
    B, C = B.transpose(1, 2), C.transpose(1, 2)
    bias, D = mixer.dt_proj.bias, mixer.D
    y = selective_scan_sequential(x, delta, -torch.exp(mixer.A_log), B, C, D, z, bias, True)
    flipped = (t.flip(-1) for t in (x, delta, B, C, z))
    x_b, delta_b, B_b, C_b, z_b = flipped
    y_b = selective_scan_sequential(x_b, delta_b, -torch.exp(mixer.A_b_log), B_b, C_b, D, z_b, bias, True)
    return (y + y_b.flip(-1)).transpose(1, 2) @ mixer.out_proj.weight.T


@torch.no_grad()
def test_fo_bi_mixer_is_vims_bimamba_inner_ref():
    """The v1 numerics (the reference data are v2 only): the mixer against the composition above, also after its
    backward decay A_b alone is moved (so the backward direction is shown to count, with its own A)."""
    torch.manual_seed(0)
    mixer = Mamba(16, d_state=4, bimamba_type="v1")  # if_devide_out stays at AuM's True: v1 must ignore it
    for p in mixer.parameters():
        p.add_(0.1 * torch.randn_like(p))
    h = torch.randn(2, 23, 16)
    before = mixer(h)
    torch.testing.assert_close(before, fo_bi_reference(mixer, h), atol=1e-5, rtol=1e-5)
    mixer.A_b_log.add_(1.0)
    after = mixer(h)
    torch.testing.assert_close(after, fo_bi_reference(mixer, h), atol=1e-5, rtol=1e-5)
    assert (after - before).abs().max() > 1e-3


def test_gated_option_absent_by_default():
    keys = AudioMamba(embed_dim=16, depth=1, d_state=4).state_dict()
    assert not any("gate_proj" in k for k in keys)
    keys = AudioMamba(embed_dim=16, depth=1, d_state=4, gated_fusion=True).state_dict()
    assert "layers.0.mixer.gate_proj.weight" in keys


def test_embed_layers_and_protocol_ignore_batch_padding():
    torch.manual_seed(0)
    model = AudioMamba(spectrogram_size=(32, 160), embed_dim=16, depth=3, d_state=4).eval()
    wave = torch.randn(2, 24000) * 0.1
    lengths = torch.tensor([24000, 14000])
    with torch.no_grad():
        cls, pooled = model.embed_layers(wave, lengths)
        cls1, pooled1 = model.embed_layers(wave[1:, :14000])
        frames, mask = model(wave, lengths)
    assert cls.shape == (2, 16) and len(pooled) == model.depth == len(model.layers)
    torch.testing.assert_close(cls[1:], cls1)
    torch.testing.assert_close(pooled[2][1:], pooled1[2])
    # 14000 samples -> 90 frames -> 6 of 10 time columns of 16 frames, x 2 frequency rows
    assert frames.shape == (2, 20, 16) and mask.sum(1).tolist() == [20, 12]


def test_no_mamba_ssm_or_triton_import_on_cpu():
    code = (
        "import sys, torch\n"
        "from asdzoo.nn.selective_scan import selective_scan\n"
        "from asdzoo.encoders.aum import AudioMamba\n"
        "u = torch.randn(1, 4, 8)\n"
        "selective_scan(u, u, -torch.ones(4, 2), torch.randn(4, 2), torch.randn(4, 2))\n"
        "AudioMamba(spectrogram_size=(32, 32), embed_dim=8, depth=1, d_state=2)(torch.randn(1, 4000))\n"
        "assert 'mamba_ssm' not in sys.modules and 'triton' not in sys.modules, sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
