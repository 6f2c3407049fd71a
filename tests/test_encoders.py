import pytest
import torch

from asdzoo.encoders import load_encoder
from asdzoo.encoders.aisfx import AisfxEncoder, bundled_checkpoint_path, load_aisfx_state


def test_aisfx_loads_real_bundled_weights_safely():
    state = load_aisfx_state(bundled_checkpoint_path())
    enc = AisfxEncoder()
    for k, v in enc.net.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert state["conv_block1.bn1.running_var"].std() > 0  # trained statistics, not an init


def test_aisfx_frames_and_layers():
    x = torch.randn(2, 32000) * 0.1
    frames, mask = load_encoder("aisfx")(x)
    assert frames.shape[-1] == 512 and mask.all() and (frames >= 0).all()  # ReLU features
    frames2, _ = load_encoder("aisfx", layer=2)(x)
    assert frames2.shape[-1] == 128 and frames2.shape[1] > frames.shape[1]  # earlier layer: finer time grid


def test_logmel_mask_and_values():
    enc = load_encoder("logmel")
    x = torch.zeros(2, 16000)
    x[0] = torch.sin(torch.arange(16000) * 0.3)
    frames, mask = enc(x, torch.tensor([16000, 8000]))
    assert mask.sum(1).tolist() == [32, 16]
    assert (frames[1, 16:] == 0).all() and frames[0].max() > 50  # dB above -100 dB floor


def test_unknown_encoder():
    with pytest.raises(ValueError, match="unknown encoder 'wav2vec'"):
        load_encoder("wav2vec")
