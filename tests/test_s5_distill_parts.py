"""Paper 003's distillation parts against closed forms and brute force: linear CKA, permutation-invariant KD,
temporal pooling to 32 bins, the EMA update, spatial-token masking, and the Qwen2-Audio encoder loader (only the
audio tower's shards are read, strictly)."""

from __future__ import annotations

import json
from itertools import permutations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from asdzoo.encoders.qwen2_audio import TeacherCache, load_qwen2_audio_encoder, random_qwen2_audio_encoder
from asdzoo.nn.distill import linear_cka, mean_cosine_distance, pit_kd_loss, pool_bins
from asdzoo.systems.s5_distill import MaskedSDTagger, mask_spatial_tokens

TINY_QWEN = dict(
    d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64, num_mel_bins=128,
    max_source_positions=50,
)  # fmt: skip
TINY_M2D = dict(m2d=dict(embed_dim=64, depth=3, num_heads=4), track_in=64, track_hidden=32)


def feature_space_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Kornblith et al. 2019, linear CKA in feature space: ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)."""
    x, y = x.double() - x.double().mean(0), y.double() - y.double().mean(0)
    return float((y.T @ x).norm() ** 2 / ((x.T @ x).norm() * (y.T @ y).norm()))


def test_linear_cka_closed_forms_and_invariances():
    # one feature each: CKA is the squared Pearson correlation; [1, 2, 3] vs [1, 0, 2] -> (1 / (sqrt 2 sqrt 2))^2
    x, y = torch.tensor([[[1.0], [2.0], [3.0]]]), torch.tensor([[[1.0], [0.0], [2.0]]])
    assert linear_cka(x, y).item() == pytest.approx(0.25, abs=1e-6)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 32, 20, generator=g), torch.randn(3, 32, 48, generator=g)
    assert torch.allclose(linear_cka(x, x), torch.ones(3), atol=1e-5)
    expected = torch.tensor([feature_space_cka(a, b) for a, b in zip(x, y)], dtype=torch.float64)
    assert torch.allclose(linear_cka(x, y).double(), expected, atol=1e-5)
    q, _ = torch.linalg.qr(torch.randn(48, 48, generator=g))
    assert torch.allclose(linear_cka(x, 7.5 * y @ q), linear_cka(x, y), atol=1e-5)  # orthogonal + isotropic scale
    assert torch.allclose(linear_cka(x + 3.0, y), linear_cka(x, y), atol=1e-5)  # centred: offsets do not count
    assert not torch.allclose(linear_cka(x * torch.linspace(0.1, 5, 20), y), linear_cka(x, y), atol=1e-3)


def test_mean_cosine_distance_is_one_minus_cosine_of_time_means():
    x, y = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    expected = 1 - F.cosine_similarity(x.mean(1), y.mean(1), dim=-1)
    assert torch.allclose(mean_cosine_distance(x, y), expected)
    assert torch.allclose(mean_cosine_distance(x, 3 * x), torch.zeros(2), atol=1e-6)


def test_pit_kd_equals_the_brute_force_minimum_and_keeps_the_teacher_out_of_the_graph():
    g = torch.Generator().manual_seed(1)
    student = torch.randn(6, 3, 19, generator=g, requires_grad=True)
    teacher = torch.randn(6, 3, 19, generator=g, requires_grad=True)
    temperature = 1.5
    loss, perm = pit_kd_loss(student, teacher, temperature)

    def kl(s, t):  # T^2 KL(softmax(t / T) || softmax(s / T)), the slot mean of one pairing
        p = F.softmax(t / temperature, -1)
        return temperature**2 * (p * (p.log() - F.log_softmax(s / temperature, -1))).sum(-1).mean()

    best = []
    for b in range(6):
        costs = {pi: kl(student[b, list(pi)], teacher[b]) for pi in permutations(range(3))}
        best.append(min(costs.values()))
        assert tuple(perm[b].tolist()) == min(costs, key=costs.get)
    assert loss.item() == pytest.approx(torch.stack(best).mean().item(), rel=1e-5)
    loss.backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0
    same, _ = pit_kd_loss(teacher[:, [2, 0, 1]].detach(), teacher)
    assert same.item() == pytest.approx(0.0, abs=1e-6)  # a permuted copy of the teacher costs nothing


@pytest.mark.parametrize("frames", [45, 100, 20, 64])
def test_pool_bins_averages_floor_ceil_spans_for_any_length(frames):
    tokens = torch.randn(2, frames, 3)
    pooled = pool_bins(tokens, 32)
    assert pooled.shape == (2, 32, 3)
    for i in range(32):
        lo, hi = (i * frames) // 32, -((-(i + 1) * frames) // 32)  # floor(i T / 32), ceil((i + 1) T / 32)
        assert torch.allclose(pooled[:, i], tokens[:, lo:hi].mean(1), atol=1e-6)
    if frames == 64:
        assert torch.allclose(pooled, tokens.view(2, 32, 2, 3).mean(2))


def test_ema_teacher_follows_equation_1():
    tagger = MaskedSDTagger(channels=1, aux_blocks=(2, 3), ema_momentum=0.9, **TINY_M2D)
    teacher = tagger.ema_teacher.module
    start = {k: v.clone() for k, v in tagger.model.state_dict().items()}
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in start.items())  # starts as the student
    with torch.no_grad():
        for p in tagger.model.parameters():
            p.add_(1.0)
        tagger.model.head.m2d_out_norm.running_var.mul_(3.0)
    tagger.ema_teacher.update_parameters(tagger.model)
    now = tagger.model.state_dict()
    for key, value in teacher.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value, 0.9 * start[key] + 0.1 * now[key], atol=1e-6), key
    assert not any(p.requires_grad for p in teacher.parameters())
    assert not any(k.startswith("_ema") for k in tagger.state_dict())  # never saved with the tagger


def test_aux_blocks_must_exist_in_the_encoder():
    with pytest.raises(ValueError, match=r"aux_blocks .* \(1\.\.3\)"):
        MaskedSDTagger(channels=1, aux_blocks=(9, 10), **TINY_M2D)


def test_spatial_token_masking_hides_the_given_share_per_frame_and_channel():
    feats = torch.arange(4 * 200 * 4 * 2, dtype=torch.float32).view(4, 200, 8)
    assert torch.allclose(mask_spatial_tokens(feats, 4, 0.0), feats.mean(1))
    torch.manual_seed(0)
    ones = torch.ones(64, 200, 4 * 2)
    tokens = torch.randn(64, 200, 4, 1).expand(-1, -1, -1, 2).reshape(64, 200, 8)
    pooled = mask_spatial_tokens(torch.cat([ones, tokens], 0), 4, 0.3)
    assert torch.allclose(pooled[:64], torch.ones(64, 8))  # a mean over visible tokens: constants stay
    # different frames survive in different channels: the per-channel means differ from the full mean
    full = tokens.view(64, 200, 4, 2).mean(1).reshape(64, 8)
    assert (pooled[64:] - full).abs().mean() > 0.01
    assert torch.equal(pooled[64:, 0::2], pooled[64:, 1::2])  # one draw per (frame, channel), all its features


def _fake_qwen_checkpoint(folder, encoder, prefix="audio_tower."):
    """A Qwen2-Audio-shaped folder: config with ``audio_config``, the audio tower in one shard, a language-model
    tensor in another, and the index that names them."""
    folder.mkdir()
    audio = {k: (list(v) if isinstance(v, tuple) else v) for k, v in encoder.config.to_dict().items()}
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2_audio", "audio_config": audio}))
    tower = {prefix + k: v.contiguous() for k, v in encoder.state_dict().items()}
    save_file(tower, str(folder / "model-00001-of-00002.safetensors"))
    save_file({"language_model.lm_head.weight": torch.zeros(4, 4)}, str(folder / "model-00002-of-00002.safetensors"))
    weight_map = {k: "model-00001-of-00002.safetensors" for k in tower}
    weight_map["language_model.lm_head.weight"] = "model-00002-of-00002.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


def test_qwen_loader_reads_only_the_audio_tower_strictly(tmp_path, monkeypatch):
    source = random_qwen2_audio_encoder(TINY_QWEN, seed=3)
    _fake_qwen_checkpoint(tmp_path / "qwen", source)
    loaded = load_qwen2_audio_encoder(str(tmp_path / "qwen"))
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in source.state_dict().items())
    # from the Hub: only the index, the config and the shard with audio_tower tensors are fetched
    import huggingface_hub

    fetched = []

    def download(repo_id, filename, **_):
        fetched.append(filename)
        return str(tmp_path / "qwen" / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(huggingface_hub, "file_exists", lambda repo, name: (tmp_path / "qwen" / name).is_file())
    hub = load_qwen2_audio_encoder("Qwen/Qwen2-Audio-7B")
    assert sorted(fetched) == ["config.json", "model-00001-of-00002.safetensors", "model.safetensors.index.json"]
    assert all(torch.equal(v, hub.state_dict()[k]) for k, v in source.state_dict().items())
    # transformers >= 5 writes the tower under 'model.audio_tower.'
    _fake_qwen_checkpoint(tmp_path / "qwen5", source, prefix="model.audio_tower.")
    assert torch.equal(load_qwen2_audio_encoder(str(tmp_path / "qwen5")).conv1.weight, source.conv1.weight)


def test_qwen_loader_errors_name_the_checkpoint(tmp_path):
    source = random_qwen2_audio_encoder(TINY_QWEN, seed=3)
    _fake_qwen_checkpoint(tmp_path / "qwen", source)
    config = json.loads((tmp_path / "qwen/config.json").read_text())
    config["audio_config"]["d_model"] = 64  # the weights no longer fit
    (tmp_path / "qwen/config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="qwen: its audio_tower tensors do not fit"):
        load_qwen2_audio_encoder(str(tmp_path / "qwen"))
    with pytest.raises(FileNotFoundError, match="config.json: missing"):
        load_qwen2_audio_encoder(str(tmp_path))


def test_teacher_cache_computes_each_content_once():
    calls = []

    def compute(waves):
        calls.append(len(waves))
        return waves[:, :4] * 2

    cache = TeacherCache(max_entries=3)
    a, b = torch.randn(2, 10), torch.randn(1, 10)
    first = cache(compute, a)
    again = cache(compute, torch.cat([b, a.clone()]))
    assert calls == [2, 1] and (cache.hits, cache.misses) == (2, 3)
    assert torch.equal(again[1:], first) and torch.equal(again[0], b[0, :4] * 2)
    cache(compute, torch.randn(1, 10))  # a fourth entry: the least recently used one goes
    assert len(cache.entries) == 3 and cache.key(b[0]) not in cache.entries
