import math

import torch

from asdzoo.audio.features import log_mel, mel_filterbank, resample, stacked_log_mel


def test_resample_sine_is_accurate_and_length_rule():
    t = torch.arange(16000) / 16000
    y = resample(torch.sin(2 * math.pi * 440 * t), 16000, 44100)
    assert y.shape[-1] == 44100
    t2 = torch.arange(44100) / 44100
    assert (y[2000:-2000] - torch.sin(2 * math.pi * 440 * t2[2000:-2000])).abs().max() < 2e-3
    # and back down: band-limited round trip
    z = resample(y, 44100, 16000)
    assert z.shape[-1] == 16000 and (z[500:-500] - torch.sin(2 * math.pi * 440 * t[500:-500])).abs().max() < 3e-3


def test_resample_removes_content_above_new_nyquist():
    t = torch.arange(32000) / 32000
    y = resample(torch.sin(2 * math.pi * 12000 * t), 32000, 16000)  # 12 kHz cannot exist at 16 kHz
    assert y[200:-200].abs().max() < 0.02


def test_mel_filterbank_closed_form_properties():
    fb = mel_filterbank(16000, 1024, 64, htk=True, norm=None)
    assert fb.shape == (513, 64) and fb.max() <= 1.0 + 1e-6 and fb.min() >= 0
    centres = fb.argmax(dim=0)
    assert (centres[1:] >= centres[:-1]).all()  # filters ordered by frequency
    l1 = mel_filterbank(16000, 1024, 64, htk=True, norm="l1")
    assert torch.allclose(l1.sum(dim=0), torch.ones(64), atol=1e-5)
    slaney = mel_filterbank(16000, 1024, 64, htk=False, norm="slaney")
    # area normalisation: each triangle's integral over Hz is 1 (sum times bin width)
    assert torch.allclose(slaney.sum(dim=0) * (8000 / 512), torch.ones(64), rtol=0.15)


def test_log_mel_sine_peaks_in_its_band():
    t = torch.arange(16000) / 16000
    mel = log_mel(torch.sin(2 * math.pi * 1000 * t), 16000)
    fb = mel_filterbank(16000, 1024, 128)
    expected = int(fb[round(1000 / (8000 / 512))].argmax())
    assert abs(int(mel[10].argmax()) - expected) <= 1


def test_stacked_log_mel_concatenates_consecutive_frames():
    w = torch.randn(8000)
    mel = log_mel(w, 16000)
    v = stacked_log_mel(w, frames=5)
    assert v.shape == (mel.shape[0] - 4, 640)
    assert torch.equal(v[3, 128:256], mel[4]) and torch.equal(v[3, :128], mel[3])
