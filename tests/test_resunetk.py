"""ResUNetK against the official ResUNet30 run on formula weights (``../shared/reference/resunetk``), plus its
checkpoint loading and the closed-form STFT kernels it carries for official checkpoints."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from resunetk_weights import formula_weight
from safetensors.torch import load_file, save_file

from asdzoo.nn.resunetk import HOP, N_FFT, ResUNetK, load_resunetk, torchlibrosa_kernels

from reference import reference_dir

OFFICIAL_PARAMETERS = 29_888_747  # the official count includes torchlibrosa's frozen STFT/ISTFT Conv1d weights
KERNEL_ELEMENTS = 2 * 513 * 1024 + 2 * 1024 * 1024
SMALL_WIDTH = 0.125
TINY_WIDTH = 0.0625


@pytest.fixture(scope="module")
def ref():
    return reference_dir("resunetk")


@pytest.fixture(scope="module")
def manifest(ref):
    return json.loads((ref / "weights_manifest.json").read_text())


@pytest.fixture(scope="module")
def io(ref):
    return load_file(str(ref / "resunetk_io.safetensors"))


@pytest.fixture(scope="module")
def formula_state(manifest):
    """Every generated tensor of the reference model (all keys but torchlibrosa's analytic kernels)."""
    return {
        key: formula_weight(key, tuple(meta["shape"]))
        for key, meta in manifest.items()
        if not meta["rule"].startswith("torchlibrosa")
    }


@pytest.fixture(scope="module")
def official_ckpt(formula_state, tmp_path_factory):
    """A Lightning checkpoint in the official layout: ``{'state_dict': {'model.<key>': ...}}``."""
    state = {f"model.{k}": torch.from_numpy(v) for k, v in formula_state.items()}
    state.update({f"model.base.{k}": v for k, v in torchlibrosa_kernels().items()})
    path = tmp_path_factory.mktemp("resunetk") / "resunetk.ckpt"
    torch.save({"state_dict": state, "epoch": 7, "global_step": 1234}, path)
    return path


@pytest.fixture(scope="module")
def official_run(official_ckpt, io):
    """The official-size model loaded from that checkpoint, run once on the reference inputs with hooks."""
    model = load_resunetk(official_ckpt)
    caught = {}
    taps = {
        "intermediate_label_embedding_out": (model.label_embedding, lambda out: out),
        "intermediate_encoder_block6_out_pooled": (model.base.encoder_block6, lambda out: out[0]),
        "intermediate_conv_block7a_out_pooled": (model.base.conv_block7a, lambda out: out[0]),
        "intermediate_after_conv_out_sample0_first8frames": (model.base.after_conv, lambda out: out[:1, :, :8]),
    }
    for name, (module, pick) in taps.items():
        module.register_forward_hook(lambda _m, _i, out, name=name, pick=pick: caught.__setitem__(name, pick(out)))
    with torch.no_grad():
        out = model(io["input_mixture"], io["input_label_vector"])
        caught["stft_magnitude"] = model.base.spectrogram_phase(io["input_mixture"])[0]
    return model, out, caught


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


# -- the weight generator is the reference's, bit for bit ------------------------------------------------------


def test_formula_weights_reproduce_the_manifest_checksums(formula_state, manifest):
    assert len(formula_state) == 337
    for key, w in formula_state.items():
        meta, w64 = manifest[key], w.astype(np.float64)
        assert w64.sum() == meta["sum"], key
        assert w64.ravel()[:4].tolist() == meta["first4"], key
        assert math.isclose((w64**2).sum(), meta["sum_sq"], rel_tol=1e-12), key


# -- layout ----------------------------------------------------------------------------------------------------


def test_default_model_has_the_official_state_dict_and_size(manifest):
    model = ResUNetK()
    state = model.state_dict()
    assert sorted(state) == sorted(manifest)
    for key, meta in manifest.items():
        assert list(state[key].shape) == meta["shape"], key
        assert str(state[key].dtype).removeprefix("torch.") == meta["dtype"], key
    trainable = sum(p.numel() for p in model.parameters())
    kernels = sum(v.numel() for k, v in state.items() if k.startswith(("base.stft.", "base.istft.conv")))
    assert kernels == KERNEL_ELEMENTS
    assert trainable + kernels == OFFICIAL_PARAMETERS
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    unused = {f"base.decoder_block{i}.bn2.{w}" for i in range(1, 7) for w in ("weight", "bias")}
    unused |= {f"film.decoder_block{i}->beta2.{w}" for i in range(1, 7) for w in ("weight", "bias")}
    assert frozen == unused  # the official model's unused parameters, frozen for DDP


def test_the_frozen_parameters_are_the_ones_no_gradient_reaches():
    model = ResUNetK(width=0.0625).requires_grad_(True)
    labels = torch.zeros(2, 54)
    labels[:, [0, 19, 38]] = 1
    model(torch.randn(2, 4, 8000), labels)["waveform"].square().mean().backward()
    assert {n for n, p in model.named_parameters() if p.grad is None} == {
        n for n, p in ResUNetK(width=0.0625).named_parameters() if not p.requires_grad
    }


# -- numbers against the official run --------------------------------------------------------------------------


def test_waveform_and_source_mask_match_the_reference(official_run, io):
    _, out, _ = official_run
    assert out["waveform"].shape == io["output_waveform"].shape
    assert max_abs(out["waveform"], io["output_waveform"]) <= 1e-4
    assert torch.equal(out["source_mask"], io["output_source_mask"])
    assert torch.equal(out["waveform"][0, 2], torch.zeros_like(out["waveform"][0, 2]))  # silent slot
    assert out["waveform"][1, 2].abs().max() > 0.01


def test_stft_magnitude_matches_the_reference(official_run, io):
    assert max_abs(official_run[2]["stft_magnitude"], io["stft_magnitude"]) <= 2e-4


@pytest.mark.parametrize(
    "name",
    [
        "intermediate_label_embedding_out",
        "intermediate_encoder_block6_out_pooled",
        "intermediate_conv_block7a_out_pooled",
        "intermediate_after_conv_out_sample0_first8frames",
    ],
)
def test_intermediates_match_the_reference(official_run, io, name):
    got, want = official_run[2][name], io[name]
    assert got.shape == want.shape
    assert max_abs(got, want) <= 1e-5 * want.abs().max().item() + 1e-5


# -- checkpoints -----------------------------------------------------------------------------------------------


def test_lightning_checkpoint_loads_every_official_tensor(official_run, formula_state):
    model = official_run[0]
    assert not model.training
    state = model.state_dict()
    for key, w in formula_state.items():
        assert torch.equal(state[key], torch.from_numpy(w)), key


def small_lightning_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {f"model.{k}": v for k, v in ResUNetK(width=SMALL_WIDTH).state_dict().items()}


@pytest.mark.parametrize(
    "edit, named",
    [
        (lambda s: s.pop("model.base.decoder_block3.conv_block2.shortcut.bias"), "decoder_block3.conv_block2.shortcut"),
        (lambda s: s.__setitem__("model.base.extra.weight", torch.zeros(3)), "base.extra.weight"),
        (lambda s: s.__setitem__("model.base.out_conv.bias", torch.zeros(2)), "base.out_conv.bias"),
    ],
    ids=["missing", "unexpected", "wrong-shape"],
)
def test_checkpoint_with_other_keys_fails_naming_file_and_key(tmp_path, edit, named):
    state = small_lightning_state()
    edit(state)
    path = tmp_path / "broken.ckpt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(ValueError, match=re.escape(str(path))) as err:
        load_resunetk(path, width=SMALL_WIDTH)
    assert named in str(err.value)


def test_checkpoint_with_other_stft_kernels_fails(tmp_path):
    """Kernels of a Hamming instead of a Hann window: the frozen transform is not ResUNetK's, so it must not load."""
    state = small_lightning_state()
    n = torch.arange(N_FFT, dtype=torch.float64)
    angle = 2 * torch.pi * ((n[: N_FFT // 2 + 1, None] * n) % N_FFT) / N_FFT
    hamming = torch.hamming_window(N_FFT, periodic=True, dtype=torch.float64)
    state["model.base.stft.conv_real.weight"] = (torch.cos(angle) * hamming).float()[:, None]
    path = tmp_path / "hamming.ckpt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(ValueError, match="base.stft.conv_real.weight: not torchlibrosa's analytic"):
        load_resunetk(path, width=SMALL_WIDTH)


def test_flat_safetensors_checkpoint_loads(tmp_path, io):
    torch.manual_seed(1)
    source = ResUNetK(width=SMALL_WIDTH).eval()
    with torch.no_grad():  # non-trivial running statistics, so a loader that skipped buffers would show
        for module in source.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "resunetk_small.safetensors"
    save_file(source.state_dict(), str(path))
    loaded = load_resunetk(path, width=SMALL_WIDTH)
    mixture, query = io["input_mixture"][:, :, :4000], io["input_label_vector"]
    with torch.no_grad():
        assert torch.equal(loaded(mixture, query)["waveform"], source(mixture, query)["waveform"])


# -- the analytic kernels are the transform torch.stft / torch.istft compute --------------------------------------


def test_analytic_stft_kernels_are_the_windowed_dft():
    kernels = torchlibrosa_kernels()
    wave = torch.randn(2, 4000, generator=torch.Generator().manual_seed(0))
    padded = F.pad(wave[:, None], (N_FFT // 2, N_FFT // 2), mode="reflect")
    window = torch.hann_window(N_FFT)
    spec = torch.stft(wave, N_FFT, HOP, window=window, center=True, pad_mode="reflect", return_complex=True)
    assert max_abs(F.conv1d(padded, kernels["stft.conv_real.weight"], stride=HOP), spec.real) <= 1e-4
    assert max_abs(F.conv1d(padded, kernels["stft.conv_imag.weight"], stride=HOP), spec.imag) <= 1e-4
    assert max_abs(kernels["istft.ola_window"], torch.hann_window(N_FFT, dtype=torch.float64) ** 2) <= 1e-7


def test_analytic_istft_kernels_are_the_windowed_inverse_dft():
    kernels = torchlibrosa_kernels()
    half = torch.randn(3, N_FFT // 2 + 1, 5, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    half[:, 0].imag = 0  # a real frame's DC and Nyquist bins are real
    half[:, -1].imag = 0
    full = torch.cat([half, half[:, 1:-1].flip(1).conj()], dim=1)  # Hermitian completion, as torchlibrosa does
    real, imag = kernels["istft.conv_real.weight"], kernels["istft.conv_imag.weight"]
    frames = F.conv1d(full.real, real) - F.conv1d(full.imag, imag)
    expected = torch.fft.irfft(half, n=N_FFT, dim=1) * torch.hann_window(N_FFT)[:, None]
    assert max_abs(frames, expected) <= 1e-6


# -- width: the small models that tests and CPU demos train ----------------------------------------------------------


def test_small_width_model_trains_and_only_the_official_unused_tensors_get_no_gradient():
    """Adam steps on one mixture raise the queried slot's SNR; every parameter gets a gradient except the decoder
    ``bn2`` and FiLM ``decoder_blockN->beta2``, which the official model builds but never uses."""
    gen = torch.Generator().manual_seed(0)
    tone = 0.3 * torch.sin(2 * torch.pi * 440 * torch.arange(4000) / 32000)
    mixture = 0.1 * torch.randn(1, 4, 4000, generator=gen) + tone
    query = torch.zeros(1, 54)
    query[0, 15] = 1.0  # slot 0: Speech; slots 1 and 2 silent
    torch.manual_seed(0)
    model = ResUNetK(width=TINY_WIDTH)
    optim = torch.optim.Adam(model.parameters(), lr=1e-2)

    def snr_db() -> torch.Tensor:
        est = model(mixture, query)["waveform"][0, 0, 0]
        return 10 * torch.log10(tone.pow(2).sum() / (tone - est).pow(2).sum())

    start = snr_db().item()
    for step in range(8):
        optim.zero_grad()
        (-snr_db()).backward()
        if step == 0:
            no_grad = {name for name, p in model.named_parameters() if p.grad is None or not p.grad.any()}
            unused = {n for n, _ in model.named_parameters() if re.search(r"decoder_block\d(\.bn2\.|->beta2)", n)}
            assert no_grad == unused and len(unused) == 6 * 4
        optim.step()
    assert snr_db().item() > start + 1.0
