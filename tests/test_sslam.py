"""SSLAM = EAT-base with other weights (../shared/reference/sslam/README.md): EAT's loader and numerics, checked on
the EAT reference's tiny fairseq checkpoint and vectors (../shared/reference/eat)."""

import inspect

import pytest
import torch
from safetensors.torch import load_file

from asdzoo.encoders import load_encoder
from asdzoo.encoders.eat import EAT, SSLAM

from encoder_checks import assert_padding_invariant
from reference import reference_dir

TINY = "tiny_eat_fairseq_style.pt"


@pytest.fixture(scope="module")
def ref():
    d = reference_dir("eat")
    return d, load_file(str(d / "eat_io.safetensors"))


def assert_eat_reference(model, io, clip):
    """The outputs of the EAT reference test (tests/test_vit_encoders.py), within its tolerances."""
    w = io[f"wav_{clip}"][None]
    with torch.no_grad():
        # atol 2e-4 as the README allows: float32 rounding in near-silent bins (log power -14) reaches 9e-5 here
        assert (model.features(w) - io[f"input_{clip}"]).abs().max() < 2e-4
        tokens = model.encode_features(io[f"input_{clip}"])
        assert (tokens - io[f"all_tokens_{clip}"]).abs().max() < 1e-4
        assert (tokens[:, 0] - io[f"utterance_{clip}"]).abs().max() < 1e-4
        assert (model.encode_features(model.features(w)) - io[f"all_tokens_{clip}"]).abs().max() < 5e-4
        frames, _ = model(w)
    assert torch.allclose(frames[0], io[f"frame_tokens_{clip}"][0].view(-1, 8, 64).mean(1), atol=5e-4)


@pytest.mark.parametrize("clip,target_length", [(0, 256), (1, None)])
def test_pretraining_checkpoint_reproduces_eat_reference(ref, clip, target_length):
    d, io = ref
    model = SSLAM(checkpoint=str(d / TINY), target_length=target_length).eval()
    assert_eat_reference(model, io, clip)


def test_finetuned_layout_loads_to_the_same_outputs(ref, tmp_path):
    d, io = ref
    tiny = torch.load(d / TINY, weights_only=True)["model"]
    finetuned = {f"model.{k}": v for k, v in tiny.items()} | {
        "head.weight": torch.randn(527, 64),
        "head.bias": torch.randn(527),
    }
    path = tmp_path / "sslam_as2m_finetuned.pt"
    torch.save({"model": finetuned}, path)  # no cfg: the sizes are given, as for a checkpoint without them
    model = SSLAM(checkpoint=str(path), embed_dim=64, depth=2, num_heads=4).eval()
    pretrained = SSLAM(checkpoint=str(d / TINY)).eval()
    assert model.state_dict().keys() == pretrained.state_dict().keys()  # head dropped, encoder kept
    x = io["input_1"]
    with torch.no_grad():
        assert torch.equal(model.encode_features(x), pretrained.encode_features(x))
    assert_eat_reference(model, io, 1)


def test_defaults_are_eat_base_and_protocol(ref):
    d, _ = ref
    defaults = {k: p.default for k, p in inspect.signature(SSLAM).parameters.items()}
    assert (defaults["embed_dim"], defaults["depth"], defaults["num_heads"]) == (768, 12, 12)
    with torch.device("meta"):  # the full-size model, without allocating it
        base = SSLAM()
    assert len(base.blocks) == 12 and base.blocks[0].attn.num_heads == 12 and base.embed_dim == 768
    assert base.blocks[0].attn.qkv.weight.shape == (3 * 768, 768) and base.blocks[0].mlp.fc1.weight.shape[0] == 3072
    assert isinstance(base, EAT) and base.sample_rate == 16000
    enc = load_encoder("sslam", checkpoint=str(d / TINY)).eval()
    assert type(enc) is SSLAM
    assert_padding_invariant(enc, total=20000, valid=12000)
