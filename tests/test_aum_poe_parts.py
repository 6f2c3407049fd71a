"""Training pieces of aum-poe (paper 004 §2.3-2.5): gradient reversal, the two-optimizer pattern, the multi-level
anomaly head (eq. 4-6), the centre and pOE / OC-SVDD losses (eq. 8-9), the pseudo-outlier generators and the
windows of clips longer than the model's input.
All closed-form cases or invariances."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from asdzoo.data.pseudo_outliers import (
    KINDS,
    OtherMachineOutliers,
    PseudoOutlierMix,
    SpectralPerturbation,
    add_harmonics,
    add_impacts,
    band_gain,
    speed_shift,
)
from asdzoo.encoders.aum import AudioMamba
from asdzoo.nn.anomaly_head import MultiLevelAnomalyHead
from asdzoo.nn.grl import GradientReversal, gradient_reversal
from asdzoo.nn.multicrop import random_crops
from asdzoo.nn.poe import MomentumCentre, oc_svdd_loss, poe_loss

SR = 16000


# -- gradient reversal and the two optimizers ---------------------------------------------------------------
@pytest.mark.parametrize("lam", [1.0, 0.3])
def test_grl_gives_the_feature_extractor_minus_lambda_times_the_loss_gradient(lam):
    g = torch.Generator().manual_seed(0)
    x, a, t = (torch.randn(*s, generator=g, dtype=torch.float64) for s in [(5, 4), (2, 3), (5, 2)])
    feature = nn.Linear(4, 3, bias=False).double()
    e = feature(x)
    out = GradientReversal(lam)(e)
    assert torch.equal(out, e)  # identity forward
    (0.5 * (out @ a.T - t).pow(2).sum()).backward()  # fixed quadratic loss L(e) = ½‖A e − t‖²
    dl_de = (e.detach() @ a.T - t) @ a  # ∂L/∂e = Aᵀ(Ae − t), per row
    torch.testing.assert_close(feature.weight.grad, -lam * dl_de.T @ x, rtol=0, atol=1e-12)


def test_grl_function_form_matches_module():
    x = torch.randn(3, 2, requires_grad=True)
    gradient_reversal(x, 2.0).sum().backward()
    assert torch.equal(x.grad, torch.full((3, 2), -2.0))


def _two_optimizer_setup():
    torch.manual_seed(0)
    feature, classifier = nn.Linear(6, 4), nn.Linear(4, 2)
    opt_f = torch.optim.AdamW(feature.parameters(), lr=1e-2, weight_decay=1e-2)
    opt_d = torch.optim.AdamW(classifier.parameters(), lr=1e-2, weight_decay=1e-2)
    return feature, classifier, opt_f, opt_d, torch.randn(8, 6), torch.randint(2, (8,))


def _snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def _identical(module, snapshot):
    return all(torch.equal(p, q) for p, q in zip(module.parameters(), snapshot))


def test_classifier_step_on_detached_embeddings_leaves_features_bit_identical():
    feature, classifier, _, opt_d, x, d = _two_optimizer_setup()
    before_f, before_d = _snapshot(feature), _snapshot(classifier)
    F.cross_entropy(classifier(feature(x).detach()), d).backward()
    opt_d.step()
    assert all(p.grad is None for p in feature.parameters())
    assert _identical(feature, before_f) and not _identical(classifier, before_d)


def test_feature_step_through_grl_leaves_classifier_bit_identical():
    feature, classifier, opt_f, _, x, d = _two_optimizer_setup()
    before_f, before_d = _snapshot(feature), _snapshot(classifier)
    z = feature(x)
    frozen = {k: v.detach() for k, v in classifier.named_parameters()}
    adv = F.cross_entropy(torch.func.functional_call(classifier, frozen, (gradient_reversal(z, 1.0),)), d)
    (z.pow(2).mean() + 0.5 * adv).backward()  # an anomaly loss + λ_adv L_adv (eq. 11)
    opt_f.step()
    assert all(p.grad is None for p in classifier.parameters())
    assert _identical(classifier, before_d) and not _identical(feature, before_f)


# -- anomaly head ---------------------------------------------------------------------------------------------
def _head_inputs(b=6, d=8, m=3):
    g = torch.Generator().manual_seed(1)
    return torch.randn(b, d, generator=g), [torch.randn(b, d, generator=g) for _ in range(m)]


def test_fusion_weights_are_a_softmax_starting_uniform():
    head = MultiLevelAnomalyHead(8, 3, hidden=16, out_dim=4, dropout=0.1)
    torch.testing.assert_close(head.beta, torch.full((3,), 1 / 3))
    head.alpha.data = torch.tensor([0.3, -2.0, 1.5])
    assert abs(float(head.beta.sum().detach()) - 1) < 1e-6


def test_fused_feature_is_unit_norm_and_dominant_level_matches_closed_form():
    h0, levels = _head_inputs()
    head = MultiLevelAnomalyHead(8, 3, hidden=16, out_dim=4, dropout=0.1)
    torch.testing.assert_close(head.fuse(h0, levels).norm(dim=-1), torch.ones(6))
    head.alpha.data = torch.tensor([0.0, 40.0, 0.0])  # β ≈ (0, 1, 0)
    torch.testing.assert_close(head.fuse(h0, levels), F.normalize(h0 + levels[1], dim=-1), rtol=0, atol=1e-6)


def test_head_output_is_eq6_in_printed_order_and_deterministic_in_eval():
    h0, levels = _head_inputs()
    head = MultiLevelAnomalyHead(8, 3, hidden=16, out_dim=4, dropout=0.5)
    head.bn.running_mean.uniform_(-0.2, 0.2), head.bn.running_var.uniform_(0.5, 2.0)
    head.eval()
    h = F.normalize(h0 + sum(levels) / 3, dim=-1)
    a = head.fc1(h)
    bn = (a - head.bn.running_mean) / (head.bn.running_var + head.bn.eps).sqrt() * head.bn.weight + head.bn.bias
    expected = head.fc2(torch.relu(bn))
    torch.testing.assert_close(head(h0, levels), expected)
    assert torch.equal(head(h0, levels), head(h0, levels))
    head.train()
    assert not torch.equal(head(h0, levels), head(h0, levels))  # dropout is active in training


# -- centre and losses ----------------------------------------------------------------------------------------
def test_centre_momentum_closed_form_after_three_updates():
    g = torch.Generator().manual_seed(2)
    batches = [torch.randn(n, 5, generator=g, requires_grad=True) for n in (4, 7, 3)]
    centre = MomentumCentre(5, momentum=0.99)
    centre.update(torch.empty(0, 5))
    assert not centre.initialised
    for b in batches:
        centre.update(b)
    m1, m2, m3 = (b.detach().mean(0) for b in batches)
    torch.testing.assert_close(centre.centre, 0.99 * (0.99 * m1 + 0.01 * m2) + 0.01 * m3)
    assert bool(centre.initialised) and not centre.centre.requires_grad
    before = centre.centre.clone()
    centre.update(torch.empty(0, 5))
    assert torch.equal(centre.centre, before)
    assert set(centre.state_dict()) == {"centre", "initialised"}


def test_poe_loss_closed_form_and_empty_groups():
    c = torch.tensor([1.0, 0.0])
    z = torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, 3.0], [1.0, 0.2]], requires_grad=True)
    is_out = torch.tensor([False, False, True, True])
    cos = torch.tensor([1 / math.sqrt(2), 1.0, 0.0, 1 / math.sqrt(1.04)])
    expected = (1 - cos[:2]).mean() + F.relu(cos[2:] - 0.5).mean()
    torch.testing.assert_close(poe_loss(z, is_out, c, 0.5), expected)
    only_normals = poe_loss(z, torch.zeros(4, dtype=torch.bool), c, 0.5)
    torch.testing.assert_close(only_normals, (1 - cos).mean())
    only_outliers = poe_loss(z, torch.ones(4, dtype=torch.bool), c, 0.5)
    torch.testing.assert_close(only_outliers, F.relu(cos - 0.5).mean())
    only_outliers.backward()  # an empty group keeps the graph usable
    assert z.grad is not None
    assert float(oc_svdd_loss(z[:0], c).detach()) == 0.0


def test_oc_svdd_is_the_unit_sphere_distance():
    z, c = torch.randn(9, 8), torch.randn(8)
    dist = (F.normalize(z, dim=-1) - F.normalize(c, dim=0)).pow(2).sum(-1).mean()
    torch.testing.assert_close(oc_svdd_loss(z, c), dist)
    torch.testing.assert_close(oc_svdd_loss(z, c), 2 * (1 - F.cosine_similarity(z, c[None])).mean())


@pytest.mark.parametrize("dim", [2, 8])
def test_poe_training_pulls_normals_in_and_pushes_outliers_past_the_margin(dim):
    g = torch.Generator().manual_seed(dim)
    c = F.normalize(torch.randn(dim, generator=g), dim=0)
    normals = (c + 0.8 * torch.randn(16, dim, generator=g)).requires_grad_(True)
    outliers = (c + 0.3 * torch.randn(16, dim, generator=g)).requires_grad_(True)  # start close to the centre
    is_out = torch.cat([torch.zeros(16), torch.ones(16)]).bool()
    delta = 0.2
    cos0 = F.cosine_similarity(normals, c[None]).mean()
    opt = torch.optim.SGD([normals, outliers], lr=4.0)
    for _ in range(300):
        opt.zero_grad()
        poe_loss(torch.cat([normals, outliers]), is_out, c, delta).backward()
        opt.step()
    cos_n, cos_o = F.cosine_similarity(normals, c[None]), F.cosine_similarity(outliers, c[None])
    assert cos_n.mean() > max(cos0, 0.99)
    assert cos_o.max() < delta


# -- pseudo-outliers ------------------------------------------------------------------------------------------
def _tone(hz, s=SR, c=2, noise=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(s) / SR
    return torch.sin(2 * math.pi * hz * t).repeat(c, 1) + noise * torch.randn(c, s, generator=g)


def _power(x):
    return torch.fft.rfft(x.mean(0)).abs().pow(2)


def _peak_hz(x):
    return float(_power(x).argmax()) * SR / x.shape[-1]


def _band_db(x, lo, hi):
    f = torch.fft.rfftfreq(x.shape[-1], 1 / SR)
    return 10 * math.log10(float(_power(x)[(f >= lo) & (f <= hi)].sum()))


def _rms(x):
    return float(x.pow(2).mean().sqrt())


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_shift_moves_a_sinusoid_by_the_factor(factor):
    x = _tone(1000.0)
    y = speed_shift(x, factor)
    assert y.shape == x.shape
    assert abs(_peak_hz(y) / (1000.0 * factor) - 1) < 0.02
    assert abs(_rms(y) / _rms(x) - 1) < 0.01


def test_notch_and_peak_filters_change_their_band():
    x = _tone(300.0, noise=1.0)
    fc, q = 2000.0, 2.0
    lo, hi = fc - fc / (8 * q), fc + fc / (8 * q)  # within ±σ/2 of the centre
    notched, boosted = band_gain(x, fc, q, -30.0), band_gain(x, fc, q, 15.0)
    assert _band_db(x, lo, hi) - _band_db(notched, lo, hi) > 10
    assert _band_db(boosted, lo, hi) - _band_db(x, lo, hi) > 5
    for y in (notched, boosted):
        assert y.shape == x.shape and abs(_rms(y) / _rms(x) - 1) < 0.01


def test_harmonics_add_energy_at_2f_and_3f():
    x = _tone(500.0, noise=0.3)
    y = add_harmonics(x, [0.2, 0.2], [0.0, 1.0])
    for k in (2, 3):
        assert _band_db(y, 500 * k - 2, 500 * k + 2) - _band_db(x, 500 * k - 2, 500 * k + 2) > 10
    assert abs(_rms(y) / _rms(x) - 1) < 0.01


def test_impacts_add_short_bursts():
    x = _tone(300.0, noise=0.3)
    y = add_impacts(x, [4000, 12000], [0.004, 0.004], [2000.0, 3000.0], [8.0, 8.0])
    for onset in (4000, 12000):
        seg = slice(onset, onset + 64)
        assert 10 * math.log10(_rms(y[:, seg]) ** 2 / _rms(x[:, seg]) ** 2) > 10
    assert abs(_rms(y) / _rms(x) - 1) < 0.01


def _max_band_change_db(x, y, bands=500):
    """Largest change of power (dB) over ``bands`` equal-width bands of the spectrum."""
    px, py = (_power(v)[1:].reshape(bands, -1).sum(-1) for v in (x, y))
    return float((10 * (py / px).log10()).abs().max())


def _normals(b=3, c=2, s=SR):
    return torch.stack([_tone(200.0 + 150 * i, s=s, c=c, noise=0.5, seed=i) * (i + 1) for i in range(b)])


@pytest.mark.parametrize("kind", KINDS)
def test_every_perturbation_keeps_shape_and_rms_and_changes_the_spectrum(kind):
    wave = _normals()
    pert = SpectralPerturbation(kinds=(kind,), seed=3)
    out = pert(wave)
    assert out.shape == wave.shape and out.dtype == wave.dtype
    for x, y in zip(wave, out):
        assert abs(_rms(y) / _rms(x) - 1) < 0.01
        assert _max_band_change_db(x, y) > 6  # a measurable spectral change (a fresh noise draw gives ~3 dB)
    torch.testing.assert_close(SpectralPerturbation(kinds=(kind,), seed=3)(wave), out, rtol=0, atol=0)


def test_other_machine_outliers_fit_length_channels_and_rms():
    ref = _normals()
    pool = torch.stack([_tone(3000.0, s=int(1.5 * SR), c=1, seed=9 + i) for i in range(4)])
    out = OtherMachineOutliers(seed=1)(pool, ref)
    assert out.shape == ref.shape
    short = OtherMachineOutliers(seed=1)(pool[..., : SR // 3], ref)
    assert short.shape == ref.shape
    for x, y in zip(ref, out):
        assert abs(_rms(y) / _rms(x) - 1) < 0.01
        assert abs(_peak_hz(y) - 3000.0) < 5  # the pool clip's content, not the reference's
        assert torch.equal(y[0], y[1])  # a mono pool clip copied to both channels


def test_mix_is_seeded_draws_by_weight_and_matches_its_sources():
    wave, pool = _normals(), _normals(b=4) * 0.1
    mix = PseudoOutlierMix({"spectral": 1.0, "other_machine": 1.0}, seed=5)
    out = mix.make(wave, pool, 7)
    assert out.shape == (7, *wave.shape[1:])
    torch.testing.assert_close(
        PseudoOutlierMix({"spectral": 1.0, "other_machine": 1.0}, seed=5).make(wave, pool, 7), out, rtol=0, atol=0
    )
    assert not torch.equal(mix.make(wave, pool, 7), out)  # the stream continues
    assert not torch.equal(
        PseudoOutlierMix({"spectral": 1.0}, seed=6).make(wave, None, 7),
        PseudoOutlierMix({"spectral": 1.0}, seed=7).make(wave, None, 7),
    )
    for i, y in enumerate(out):
        assert abs(_rms(y) / _rms(wave[i % 3]) - 1) < 0.01  # outlier i comes from normal clip i % B
    speed_only = PseudoOutlierMix({"speed": 1.0, "notch": 0.0}, seed=0)
    assert speed_only.weights == {"speed": 1.0}
    assert PseudoOutlierMix({"speed": 1.0}).make(wave, None, 0).shape == (0, *wave.shape[1:])


def test_mix_rejects_bad_configs():
    with pytest.raises(ValueError, match="unknown"):
        PseudoOutlierMix({"reverb": 1.0})
    with pytest.raises(ValueError, match="positive sum"):
        PseudoOutlierMix({"speed": 0.0})
    with pytest.raises(ValueError, match="no pool"):
        PseudoOutlierMix({"other_machine": 1.0}).make(_normals(), None, 2)
    with pytest.raises(ValueError, match=r"\[B, C, S\]"):
        PseudoOutlierMix({"speed": 1.0}).make(torch.zeros(2, SR), None, 2)


# -- windows: a model shorter than the clips crops at random in training and averages windows in scoring ----------
def test_random_crops_are_in_clip_slices_of_the_segment_length():
    wave = torch.arange(3 * 2 * 100, dtype=torch.float32).reshape(3, 2, 100)
    lengths = torch.tensor([100, 70, 30])
    gen = torch.Generator().manual_seed(0)
    starts = set()
    for _ in range(20):
        crops, lens = random_crops(wave, lengths, 40, gen)
        assert crops.shape == (3, 2, 40) and lens.tolist() == [40, 40, 30]
        for i, (n, m) in enumerate(zip(lengths.tolist(), lens.tolist())):
            s = int(crops[i, 0, 0] - wave[i, 0, 0])
            assert 0 <= s <= n - m and torch.equal(crops[i, :, :m], wave[i, :, s : s + m])
            assert not crops[i, :, m:].any()
        starts.add(int(crops[0, 0, 0]))
    assert len(starts) > 5  # offsets drawn over the whole clip, not a fixed start


def test_random_crops_leave_a_batch_that_fits_alone_and_draw_nothing():
    wave, lengths = torch.randn(2, 1, 30), torch.tensor([30, 20])
    state = torch.get_rng_state()
    crops, lens = random_crops(wave, lengths, 40)
    assert crops is wave and lens is lengths and torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("frontend", ["stft", "kaldi"])
def test_window_samples_is_the_longest_input_losing_less_than_one_token_column(frontend):
    aum = AudioMamba(spectrogram_size=(128, 1024), embed_dim=16, depth=1, d_state=4, unshuffle=4, frontend=frontend)
    raw = (lambda s: 1 + (s - 400) // 160) if frontend == "kaldi" else (lambda s: s // aum.hop_length + 1)
    column = aum.patch_size * aum.unshuffle
    assert raw(aum.window_samples) <= 1024 + column - 1 < raw(aum.window_samples + 1)
    assert aum.window_samples >= 10 * SR  # the paper's 10 s clip is one window (1026 frames, 2 cropped)


def test_long_clips_are_windowed_so_their_end_changes_the_embedding():
    """A 64-frame Audio-Mamba (~1.2 s window): the last second of a 3 s clip moves its embedding; cut to the first
    window (as before) it could not. A clip within one window is embedded whole, as one crop."""
    from asdzoo.systems.aum_poe import AumPoe

    tiny = dict(spectrogram_size=(128, 64), embed_dim=16, depth=2, d_state=4, unshuffle=4)
    model = AumPoe(backbone=None, aum=tiny, head_hidden=16, embed_dim=8, unfreeze_blocks=1).eval()
    assert model.segment == model.encoder.window_samples < 3 * SR
    clip = 0.1 * torch.randn(1, 2, 3 * SR, generator=torch.Generator().manual_seed(0))
    changed = clip.clone()
    changed[..., -SR:] *= 4
    z, z_changed = model.embed(clip)["main"], model.embed(changed)["main"]
    assert (z - z_changed).abs().max() > 1e-3
    short = clip[..., : model.segment]
    with torch.no_grad():
        whole = F.normalize(model.embed_batch(short), dim=-1)
    torch.testing.assert_close(model.embed(short)["main"], whole, atol=1e-6, rtol=1e-5)
