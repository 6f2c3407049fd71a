"""AisfxEncoder against the aisfx wheel's own code (network, librosa front-end, blocking), on the same audio.

The wheel (installed ``--no-deps``; its pins are librosa 0.9.2 / numpy 1.23) is run as shipped, with two shims:
- its ``load_weights`` calls ``torch.load`` without ``weights_only``; torch >= 2.6 defaults to ``True`` and the
  checkpoint holds numpy scalars, so the test lets that one call load the wheel's own file with ``False``;
- librosa >= 0.10 resamples in ``librosa.load`` with soxr by default, librosa 0.9.2 (the wheel's pin) with
  resampy's ``kaiser_best``: the 16 kHz test passes ``res_type="kaiser_best"`` to get the pinned behaviour.
Framing: the wheel's ``spectrogram_librosa.compute_spectrogram`` returns ``[mel, time]`` (its essentia path and
the network want ``[time, mel]``; ``inference.main(spectrogram_type="librosa")`` passes it on untransposed), so
the test transposes it. ``inference.main`` then cuts 100-frame blocks (hop 50, partial block dropped) and keeps
one max-pooled vector per block; AisfxEncoder returns the frames of the whole clip instead, and the last test
shows that the wheel's block embeddings are exactly asdzoo's network on those blocks.
Tolerances: spectrogram |Δ| <= 2e-5 (values up to ~1; float32 FFTs in both), frames and embeddings
|Δ| <= 1e-4 + 1e-4·|ref| (values up to ~5; measured ~5e-6).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import soundfile as sf
import torch

from asdzoo.encoders.aisfx import AISFX_SAMPLE_RATE, AisfxEncoder

from reference import running_in_ci

SPEC_ATOL = 2e-5
FRAME_TOL = dict(atol=1e-4, rtol=1e-4)


def _import_wheel():
    try:
        import librosa  # noqa: F401  (the wheel's front-end needs it; dev extra)
        from aisfx import inference, preprocessing
        from aisfx.spectrogram import spectrogram_librosa
    except ImportError as err:
        if running_in_ci():
            pytest.fail(f"the aisfx reference test needs the aisfx wheel and librosa (dev extra): {err}", False)
        pytest.skip(f"aisfx wheel or librosa missing: {err}")
    return inference, preprocessing, spectrogram_librosa


@pytest.fixture(scope="module")
def wheel():
    inference, preprocessing, spectrogram_librosa = _import_wheel()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "load", functools.partial(torch.load, weights_only=False))
        weights, ds_dict = inference.load_weights("cpu")
    model = inference.load_bestModel(weights, ds_dict, "cpu")  # CrossNet(EmbeddingNet('max', 3, 1, 64)), eval()
    return inference, preprocessing, spectrogram_librosa, model


def _audio(sr: int, seconds: float = 4.0) -> np.ndarray:
    """A 200 Hz -> 7.5 kHz sweep, a decaying noise burst (energy up to Nyquist) and a quiet tail; peak 0.6."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    sweep = 0.3 * np.sin(2 * np.pi * (200 * t + (7300 / (2 * seconds)) * t**2))
    burst = 0.2 * rng.normal(size=t.size) * np.exp(-3 * t)
    y = (sweep + burst) * (t < 0.8 * seconds) + 0.01 * rng.normal(size=t.size)
    return (0.6 * y / np.abs(y).max()).astype(np.float32)


def _wheel_spectrogram(wheel, path) -> np.ndarray:
    inference, preprocessing, spectrogram_librosa, _ = wheel
    spec = spectrogram_librosa.compute_spectrogram(
        filename=str(path),
        sr=inference.SAMPLE_RATE,
        block_size=inference.SPEC_BLOCK_LENGTH,
        hop_size=inference.SPEC_HOP_LENGTH,
        n_mels=inference.MEL_BINS,
        f_min=inference.F_MIN,
        f_max=inference.F_MAX,
    )
    assert spec.shape[0] == inference.MEL_BINS  # [mel, time]: see the module docstring
    return preprocessing.spectrogram_normalize(spec).T  # [time, mel], "original" normalisation (max 9.4578)


def _wheel_frames(model, spec: np.ndarray) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """The wheel's network on ``[time, mel]``: each conv block's output averaged over frequency (captured with
    hooks, as asdzoo defines its frames) and the wheel's own embedding (their max over time, layer 4)."""
    net, outputs = model.embedding_net, {}
    hooks = [
        getattr(net, f"conv_block{i}").register_forward_hook(
            lambda module, inp, out, i=i: outputs.__setitem__(i, out.mean(dim=3).transpose(1, 2)[0].numpy())
        )
        for i in range(1, 5)
    ]
    try:
        with torch.no_grad():
            embedding = model.get_embedding(torch.tensor(spec[None], dtype=torch.float32))[0].numpy()
    finally:
        for h in hooks:
            h.remove()
    return outputs, embedding


def _compare(wheel, path, wave: np.ndarray, sample_rate: int):
    ref_spec = _wheel_spectrogram(wheel, path)
    ref_frames, ref_embedding = _wheel_frames(wheel[3], ref_spec)
    x = torch.from_numpy(wave)[None]
    with torch.no_grad():
        for layer in (1, 2, 3, 4):
            enc = AisfxEncoder(layer=layer)
            enc.sample_rate = sample_rate
            if layer == 4:
                ours_spec = enc.spectrogram(x)[0].numpy()
                assert ours_spec.shape == ref_spec.shape
                np.testing.assert_allclose(ours_spec, ref_spec, rtol=0, atol=SPEC_ATOL)
            frames, mask = enc(x)
            assert mask.all() and frames.shape[-1] == enc.embed_dim
            np.testing.assert_allclose(frames[0].numpy(), ref_frames[layer], **FRAME_TOL)
        np.testing.assert_allclose(frames[0].max(dim=0).values.numpy(), ref_embedding, **FRAME_TOL)
    return ref_spec


def test_frames_match_wheel_at_44k(wheel, tmp_path):
    # no resampling on either side: front-end (STFT, mel, log, normalisation) and network only
    wave = _audio(AISFX_SAMPLE_RATE)
    sf.write(tmp_path / "a.wav", wave, AISFX_SAMPLE_RATE, subtype="FLOAT")
    spec = _compare(wheel, tmp_path / "a.wav", wave, AISFX_SAMPLE_RATE)
    assert spec.shape == (1 + len(wave) // 1024, 96)  # centred frames: 1 + n // hop


def test_frames_match_wheel_from_16k(wheel, tmp_path, monkeypatch):
    # DCASE audio is 16 kHz: the wheel's librosa.load(sr=44100) resamples (kaiser_best under its librosa pin)
    import librosa

    monkeypatch.setattr(librosa, "load", functools.partial(librosa.load, res_type="kaiser_best"))
    wave = _audio(16000)
    sf.write(tmp_path / "a.wav", wave, 16000, subtype="FLOAT")
    _compare(wheel, tmp_path / "a.wav", wave, 16000)


def test_wheel_blocks_are_asdzoo_network_on_blocks(wheel, tmp_path):
    inference = wheel[0]
    wave = _audio(AISFX_SAMPLE_RATE)
    sf.write(tmp_path / "a.wav", wave, AISFX_SAMPLE_RATE, subtype="FLOAT")
    spec = _wheel_spectrogram(wheel, tmp_path / "a.wav")  # 173 frames -> blocks at 0, 50 (150 is partial)
    blocks = inference.model_get_embedding(spec, 0.5, True, wheel[3], "cpu").numpy()
    assert blocks.shape == (2, 512)
    net = AisfxEncoder().net
    with torch.no_grad():
        for b, start in enumerate((0, 50)):
            ours = net(torch.tensor(spec[None, start : start + 100], dtype=torch.float32)).max(dim=1).values[0]
            np.testing.assert_allclose(ours.numpy(), blocks[b], **FRAME_TOL)
