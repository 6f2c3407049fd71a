"""OpenL3 against ../shared/reference/openl3: outputs of the official marl/openl3 0.4.2 code (Kapre 0.3.5, TF 2.15)
with the README's formula weights.

Checks: the Slaney mel filterbanks against the stored sparse Kapre matrices; the dB spectrograms of all three input
representations; the four block outputs from the stored spectrograms; embeddings (512 and 6144) and framing of
``get_audio_embedding``; the Keras HDF5 weight conversion (files written here in the ``save_weights`` layout); the
16 kHz encoder protocol. Tolerances are the README's: spectrograms 5e-3 dB, blocks 1e-4, embeddings 2e-4, frame counts
and timestamps exact. The full-size network runs on CPU, so each unique 1-s window goes through it once per repr.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math

import h5py
import numpy as np
import pytest
import torch
from resunetk_weights import uniform_pm1
from safetensors.numpy import load_file

from asdzoo.encoders.aisfx import resample_kaiser_best
from asdzoo.encoders.openl3 import (
    CANONICAL_LAYERS,
    INPUT_REPRS,
    OpenL3,
    frame_audio,
    frame_timestamps,
    load_keras_h5,
    pool_embedding,
    save_safetensors,
    slaney_mel_filterbank,
)

from encoder_checks import assert_padding_invariant
from reference import reference_dir

SPEC_ATOL, BLOCK_ATOL, EMB_ATOL = 5e-3, 1e-4, 2e-4
CASES = [f"clip{c}_c{k}_h{h}" for c in "AB" for k in (1, 0) for h in ("01", "05")]
# windows of the hop-0.1 cases checked (all of them would be 40 full-size windows): first, middle, last (end padding)
H01_WINDOWS = {"clipA_c1_h01": (0, 3, 8), "clipB_c0_h01": (1, 10)}


def openl3_weight(key: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """The README's ``make``: the ResUNetK stream with OpenL3's scales (bn0 scaled to dB inputs)."""
    v = uniform_pm1(key, int(np.prod(shape)) if shape else 1, seed)
    if key == "bn0.running_mean":
        w = -40.0 + 5.0 * v
    elif key == "bn0.running_var":
        w = 400.0 * (1.0 + 0.25 * v)
    elif key.endswith("running_mean"):
        w = 0.1 * v
    elif key.endswith("running_var"):
        w = 1.0 + 0.25 * v
    elif key.endswith(".weight") and len(shape) == 1:
        w = 1.0 + 0.1 * v
    elif key.endswith(".bias"):
        w = 0.05 * v
    else:
        w = np.sqrt(6.0 / np.prod(shape[1:])) * v
    return w.astype(np.float32).reshape(shape)


@pytest.fixture(scope="module")
def ref():
    d = reference_dir("openl3")
    manifest = json.loads((d / "weights_manifest.json").read_text())
    meta = json.loads((d / "meta.json").read_text())
    return load_file(str(d / "openl3_io.safetensors")), manifest, meta


@pytest.fixture(scope="module")
def weights(ref):
    manifest = ref[1]
    return {k: torch.from_numpy(openl3_weight(k, tuple(v["torch_shape"]))) for k, v in manifest.items()}


@pytest.fixture(scope="module")
def encoders(weights):
    encs = {}
    for r in INPUT_REPRS:
        enc = OpenL3(input_repr=r, embedding_size=512).eval()
        enc.net.load_state_dict(weights)
        encs[r] = enc
    return encs


def t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x)


def max_err(a: torch.Tensor, b) -> float:
    return (a - torch.as_tensor(b)).abs().max().item()


def test_formula_weights_match_the_manifest(ref, weights):
    manifest = ref[1]
    assert list(manifest) == list(OpenL3(embedding_size=512).net.state_dict())  # canonical names, Keras order
    for key, entry in manifest.items():
        digest = hashlib.sha256(weights[key].numpy().astype("<f4").tobytes()).hexdigest()
        assert digest == entry["sha256_float32_le"], key


@pytest.mark.parametrize("n_mels", [128, 256])
def test_mel_filterbank_equals_kapre(ref, n_mels):
    io = ref[0]
    kapre = np.zeros((n_mels, 1025), np.float32)
    kapre[io[f"melfb{n_mels}_rows"], io[f"melfb{n_mels}_cols"]] = io[f"melfb{n_mels}_vals"]
    mine = slaney_mel_filterbank(48000, 2048, n_mels)
    assert mine.dtype == np.float32 and mine.shape == kapre.shape
    # all entries but one bit-identical; the last filter's value at 24 kHz is ~1e-17 here and 0 in the reference,
    # a one-ulp difference of libm's exp/log in the top band edge
    assert np.abs(mine - kapre).max() < 1e-12 and (mine != kapre).sum() <= 1


@pytest.mark.parametrize("r", INPUT_REPRS)
def test_front_end_spectrograms(ref, encoders, r):
    io = ref[0]
    with torch.no_grad():
        spec = encoders[r].frontend(t(io["frames_input"])[:, 0])
    assert spec.shape == io[f"{r}_spec"].shape
    assert max_err(spec, io[f"{r}_spec"]) <= SPEC_ATOL
    assert spec.amax(dim=(1, 2, 3)).eq(0).all() and spec.min() >= -80  # per-window max 0 dB, floor -80 dB


@pytest.mark.parametrize("r", INPUT_REPRS)
def test_block_outputs_from_the_stored_spectrogram(ref, encoders, r):
    io, net = ref[0], encoders[r].net
    with torch.no_grad():
        x = net.bn0(t(io[f"{r}_spec"]))
        for b in range(1, 5):
            x = getattr(net, f"block{b}")(x)
            first = io[f"{r}_block{b}_out_first4ch_frame1" if b < 4 else f"{r}_block4_out_first16ch_frame1"]
            assert x.shape[2:] == first.shape[2:]
            assert max_err(x[1:, : first.shape[1]], first) <= BLOCK_ATOL, b
            assert max_err(x.mean(dim=(2, 3)), io[f"{r}_block{b}_out_chmean"]) <= BLOCK_ATOL, b
            assert max_err(x.amax(dim=(2, 3)), io[f"{r}_block{b}_out_chmax"]) <= BLOCK_ATOL, b


def _case_windows(io, case: str) -> torch.Tensor:
    clip, c, h = case.split("_")
    return frame_audio(t(io[f"clip_{clip[-1]}"]), hop_size=int(h[1:]) / 10, center=c == "c1")


def test_framing_counts_and_timestamps(ref):
    io = ref[0]
    for case in CASES:
        clip, c, h = case.split("_")
        hop = int(h[1:]) / 10
        windows = _case_windows(io, case)
        ts = frame_timestamps(windows.shape[0], hop)
        assert windows.shape == (len(io[f"ts_{case}"]), 48000) and torch.equal(ts, t(io[f"ts_{case}"])), case
        if c == "c1":  # centred: the first window is 24000 zeros, then the clip's first half second
            assert windows[0, :24000].eq(0).all() and torch.equal(windows[0, 24000:], t(io[f"clip_{clip[-1]}"])[:24000])


@pytest.fixture(scope="module")
def embedded(ref, encoders):
    """Block-4 maps of every window that the checks below need, each unique window through the network once."""
    io = ref[0]
    wanted = {case: range(len(io[f"ts_{case}"])) for case in CASES if case.endswith("h05")} | H01_WINDOWS
    windows = {case: _case_windows(io, case) for case in wanted}
    unique: dict[bytes, torch.Tensor] = {}
    for case, rows in wanted.items():
        for i in rows:
            unique.setdefault(windows[case][i].numpy().tobytes(), windows[case][i])
    keys = list(unique)
    batch = torch.stack([unique[k] for k in keys])
    maps = {}
    with torch.no_grad():
        for r, enc in encoders.items():
            fmap = enc.net(enc.frontend(batch))
            maps[r] = {k: fmap[j] for j, k in enumerate(keys)}
    return wanted, windows, maps


@pytest.mark.parametrize("r", INPUT_REPRS)
def test_embeddings_512_and_6144(ref, embedded, r):
    io = ref[0]
    wanted, windows, maps = embedded
    checked = 0
    for case, rows in wanted.items():
        fmap = torch.stack([maps[r][windows[case][i].numpy().tobytes()] for i in rows])
        for size in (512, 6144):
            name = f"{r}_e{size}_{case}"
            if name in io:
                emb = pool_embedding(fmap, size)
                assert max_err(emb, io[name][list(rows)]) <= EMB_ATOL, name
                checked += 1
    assert checked == (6 + 4 if r == "mel128" else 6 + 2)


def test_embed_48k_end_to_end(ref, weights):
    io = ref[0]
    enc = OpenL3(input_repr="mel128", embedding_size=6144, hop_size=0.5, center=False).eval()
    enc.net.load_state_dict(weights)
    with torch.no_grad():
        emb, ts = enc.embed_48k(t(io["clip_A"]))
    assert emb.shape == (2, 6144) == (len(ts), enc.embed_dim) and torch.equal(ts, t(io["ts_clipA_c0_h05"]))
    assert max_err(emb, io["mel128_e6144_clipA_c0_h05"]) <= EMB_ATOL


# -- Keras HDF5 weights --------------------------------------------------------------------------------------------


def _keras_layer_names(meta) -> list[str]:
    """The layers of ``_construct_mel128_audio_network(include_frontend=True)`` as built second in a session
    (``batch_normalization_8``, ``conv2d_7``, ...): meta.json lists them after the input; the loader appends the
    final pooling and flatten, which the saved model does not have."""
    names = [name for name, _ in meta["keras_layer_output_shapes_frames_input"]["mel128_512"]]
    assert names[-2:] == ["max_pooling2d_6", "flatten"]
    return ["input_2"] + names[:-2]


def _keras_values(weights, manifest, torch_name: str) -> list[tuple[str, np.ndarray]]:
    """(Keras weight name suffix, value in Keras layout) of one canonical layer, in the order Keras stores them."""
    out = []
    for key, entry in manifest.items():
        if key.rsplit(".", 1)[0] == torch_name:
            value = weights[key].numpy()
            suffix = entry["keras_weight"].rsplit("/", 1)[-1]
            out.append((suffix, value.transpose(2, 3, 1, 0) if value.ndim == 4 else value))
    return out


def write_keras_h5(
    path, weights, manifest, meta, skip: str | None = None, bad_shape: str | None = None, group: str | None = None
) -> None:
    """A Keras 2 ``save_weights`` file: root attrs ``layer_names``/``backend``/``keras_version``, one group per
    layer with attr ``weight_names``, datasets at ``<layer>/<weight_name>``; weightless layers are interleaved.
    ``group="model_weights"`` writes it as ``model.save()`` does."""
    all_names = _keras_layer_names(meta)
    weighted = [n for n in all_names if n.startswith(("batch_normalization", "conv2d", "audio_embedding"))]
    torch_of = dict(zip(weighted, CANONICAL_LAYERS, strict=True))
    layer_names = [n for n in all_names if n != skip]
    with h5py.File(path, "w") as h5:
        f = h5.create_group(group) if group else h5
        f.attrs["layer_names"] = np.array([n.encode() for n in layer_names])
        f.attrs["backend"], f.attrs["keras_version"] = b"tensorflow", b"2.15.0"
        for layer in layer_names:
            g = f.create_group(layer)
            values = _keras_values(weights, manifest, torch_of[layer]) if layer in torch_of else []
            names = [f"{layer}/{suffix}".encode() for suffix, _ in values]
            g.attrs["weight_names"] = np.array(names) if names else np.asarray([])
            for name, (_, value) in zip(names, values):
                g.create_dataset(name.decode(), data=value[..., :-1] if layer == bad_shape else value)


@pytest.fixture(scope="module")
def keras_file(ref, weights, tmp_path_factory):
    _, manifest, meta = ref
    path = tmp_path_factory.mktemp("openl3") / "openl3_audio_mel128_music.h5"
    write_keras_h5(path, weights, manifest, meta)
    return path


def test_keras_h5_converts_by_layer_order(ref, weights, keras_file, tmp_path):
    state = load_keras_h5(keras_file)
    assert list(state) == list(weights) and all(torch.equal(state[k], weights[k]) for k in weights)
    saved_model = tmp_path / "full_model.h5"
    write_keras_h5(saved_model, weights, ref[1], ref[2], group="model_weights")
    assert all(torch.equal(v, weights[k]) for k, v in load_keras_h5(saved_model).items())
    gz = tmp_path / "openl3_audio_mel128_music.h5.gz"
    gz.write_bytes(gzip.compress(keras_file.read_bytes()))
    st = tmp_path / "openl3_mel128_music.safetensors"
    save_safetensors(load_keras_h5(gz), st)
    io = ref[0]
    for path in (keras_file, st):
        enc = OpenL3(input_repr="mel128", embedding_size=512, hop_size=0.5, center=False, checkpoint=str(path))
        with torch.no_grad():
            emb, _ = enc.eval().embed_48k(t(io["clip_A"]))
        assert max_err(emb, io["mel128_e512_clipA_c0_h05"]) <= EMB_ATOL, path.name


def test_keras_h5_errors_name_the_file(ref, weights, keras_file, tmp_path):
    _, manifest, meta = ref
    bad = tmp_path / "bad_shape.h5"
    write_keras_h5(bad, weights, manifest, meta, bad_shape="conv2d_9")
    with pytest.raises(ValueError, match=r"bad_shape\.h5: block2\.conv1\.weight has shape"):
        load_keras_h5(bad)
    short = tmp_path / "missing.h5"
    write_keras_h5(short, weights, manifest, meta, skip="batch_normalization_11")
    with pytest.raises(ValueError, match=r"missing\.h5: 15 Keras layers have weights, OpenL3 has 16"):
        load_keras_h5(short)
    with pytest.raises(ValueError, match=r"openl3_audio_mel128_music\.h5: weights for input_repr='mel128'"):
        OpenL3(input_repr="mel256", checkpoint=str(keras_file))
    junk = tmp_path / "junk.h5.gz"
    junk.write_bytes(gzip.compress(b"not an HDF5 file"))
    with pytest.raises(ValueError, match=r"junk\.h5\.gz: cannot be read as HDF5"):
        load_keras_h5(junk)
    tiny = tmp_path / "tiny.safetensors"
    save_safetensors({k: v[:1] if v.ndim == 4 else v for k, v in weights.items()}, tiny)
    # widths are read from the file's convs: the cut conv then disagrees with its batch norm
    with pytest.raises(ValueError, match=r"tiny\.safetensors: block1\.bn1\.\w+ has shape"):
        OpenL3(checkpoint=str(tiny))
    with pytest.raises(ValueError, match=r"tiny\.safetensors: block1\.conv1\.weight has shape"):
        OpenL3(checkpoint=str(tiny), channels=(64, 128, 256, 512))


# -- 16 kHz encoder protocol ---------------------------------------------------------------------------------------

TINY = dict(input_repr="mel128", embedding_size=6144, channels=(4, 4, 4, 8))


def test_forward_at_16k_is_resample_then_embed():
    torch.manual_seed(0)
    enc = OpenL3(**TINY).eval()
    wave = torch.randn(2, 24000) * 0.1
    with torch.no_grad():
        frames, mask = enc(wave, torch.tensor([24000, 14000]))
        for i, n in enumerate((24000, 14000)):
            emb, _ = enc.embed_48k(resample_kaiser_best(wave[i, :n], 16000, 48000))
            assert mask[i].sum() == emb.shape[0] and torch.allclose(frames[i, : emb.shape[0]], emb, atol=1e-6)
    assert frames.shape[-1] == enc.embed_dim == 12 * 8


@pytest.mark.parametrize("hop_size, center", [(0.1, True), (0.5, False)])
def test_mask_counts_follow_the_framing_rule(hop_size, center):
    enc = OpenL3(**TINY, hop_size=hop_size, center=center).eval()
    lengths = torch.tensor([24000, 14000, 8000])
    with torch.no_grad():
        _, mask = enc(torch.zeros(3, 24000), lengths)
    for n, valid in zip(lengths.tolist(), mask.sum(1).tolist()):
        padded = 3 * n + (24000 if center else 0)  # 48 kHz samples
        hop = round(hop_size * 48000)
        assert valid == (1 if padded <= 48000 else 1 + math.ceil((padded - 48000) / hop))


def test_padding_invariance_and_layers():
    torch.manual_seed(1)
    assert_padding_invariant(OpenL3(**TINY).eval())
    enc = OpenL3(**TINY, layer=2).eval()
    with torch.no_grad():
        frames, _ = enc(torch.randn(1, 16000) * 0.1)
    assert frames.shape == (1, 6, 12 * 4) == (1, 6, enc.embed_dim)
