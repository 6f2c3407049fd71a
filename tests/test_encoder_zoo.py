"""Every encoder behind the protocol: tiny random configs run forward and backward; masks are honest;
transformers-backed encoders agree with transformers' own front-ends; LoRA on CLAP trains and merges."""

import pytest
import torch

from asdzoo.encoders import ENCODERS, load_encoder

from encoder_checks import assert_lora_trains_and_merges, assert_padding_invariant

TINY_VIT = dict(embed_dim=32, depth=2, num_heads=2)
TINY = {
    "logmel": {},
    "aisfx": dict(pretrained=False),
    "beats": dict(
        encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64, encoder_attention_heads=2, embed_dim=64
    ),
    "m2d": TINY_VIT,
    "eat": TINY_VIT,
    "sslam": TINY_VIT,
    "m2d_clap": TINY_VIT,
    "openl3": dict(input_repr="mel128", embedding_size=512, hop_size=0.5, channels=(4, 4, 4, 4)),
    "dasheng": dict(TINY_VIT, target_length=64),
    "ced": dict(TINY_VIT, target_length=48, outputdim=5),
    "ast": dict(
        checkpoint=None,
        config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_length=256),
    ),
    "clap": dict(
        checkpoint=None,
        config=dict(
            hidden_size=32,
            depths=[1, 1],
            num_attention_heads=[2, 2],
            patch_embeds_hidden_size=16,
            window_size=8,
            projection_dim=16,
            enable_fusion=False,
        ),
    ),
    "wavlm": dict(
        checkpoint=None,
        config=dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            conv_dim=(32,) * 7,
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2,
        ),
    ),
    "aum": dict(spectrogram_size=(128, 192), embed_dim=32, depth=2, d_state=4, unshuffle=2),
}


def test_every_registered_encoder_has_a_tiny_config_and_weight_metadata():
    from asdzoo.encoders import ENCODER_WEIGHTS

    assert set(TINY) == set(ENCODERS) == set(ENCODER_WEIGHTS)


@pytest.mark.parametrize("name", sorted(TINY))
def test_forward_backward_and_masks(name):
    torch.manual_seed(0)
    enc = load_encoder(name, **TINY[name])
    wave = (torch.randn(2, 24000) * 0.1).requires_grad_(True)
    lengths = torch.tensor([24000, 14000])
    frames, mask = enc(wave, lengths)
    assert frames.shape[0] == 2 and frames.shape[-1] == enc.embed_dim and mask.dtype == torch.bool
    assert torch.isfinite(frames).all() and mask[0].sum() >= mask[1].sum() > 0
    (frames[mask].pow(2).mean()).backward()
    grads = [p.grad for p in enc.parameters() if p.requires_grad]
    if name != "clap":  # CLAP's front-end is transformers' numpy extractor: no gradient to the waveform
        assert wave.grad is not None and wave.grad[0].abs().sum() > 0
        assert wave.grad[1, 14000:].abs().sum() == 0  # nothing flows from padding: it never reaches a valid frame
    if grads:
        assert any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", ["ast", "clap", "wavlm", "beats"])
def test_padding_never_changes_valid_frames(name):
    torch.manual_seed(1)
    assert_padding_invariant(load_encoder(name, **TINY[name]).eval())


def test_ast_front_end_matches_transformers_feature_extractor():
    from transformers import ASTFeatureExtractor

    enc = load_encoder("ast", **TINY["ast"])
    x = torch.randn(1, 32000) * 0.1
    ref = ASTFeatureExtractor(max_length=256)([x[0].numpy()], sampling_rate=16000, return_tensors="pt")["input_values"]
    assert (enc.features(x) - ref).abs().max() < 1e-4


def test_clap_resamples_16k_to_48k_before_its_extractor():
    enc = load_encoder("clap", **TINY["clap"]).eval()
    assert enc.extractor.sampling_rate == 48000 and enc.extractor.truncation == "rand_trunc"
    t = torch.arange(32000) / 16000
    tone = torch.sin(2 * torch.pi * 1000 * t)[None] * 0.3
    with torch.no_grad():
        a, _ = enc(tone)
        b, _ = enc(torch.sin(2 * torch.pi * 3000 * t)[None] * 0.3)
    assert not torch.allclose(a, b)  # different content, different frames (the audio really reaches the model)
    fused = load_encoder("clap", checkpoint=None, config={**TINY["clap"]["config"], "enable_fusion": True})
    assert fused.extractor.truncation == "fusion"


def test_lora_on_clap_query_value_trains_and_merges():
    torch.manual_seed(0)
    # one channel: the final LayerNorm fixes the mean over channels
    assert_lora_trains_and_merges(
        load_encoder("clap", **TINY["clap"]),
        ["query", "value"],
        torch.randn(1, 16000) * 0.1,
        lambda frames: (frames[..., 0].mean() - 1.0) ** 2,
        steps=8,
    )
