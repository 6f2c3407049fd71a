"""Parts of paper 002 (multistream): NT-Xent, the variance hinge, embedding spread, contrastive views, target
oversampling, MemMixup, the mean-L2 kNN bank with leave-one-out scores, rank normalisation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from asdzoo.audio.augment import contrastive_view
from asdzoo.nn.contrastive import embedding_spread, nt_xent, variance_hinge
from asdzoo.scoring.memmixup import MixupBank, memmixup, oversample_target
from asdzoo.scoring.rank import rank_against, rank_normalise


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# -- NT-Xent, variance hinge, spread ------------------------------------------------------------------
def test_nt_xent_equals_the_definition_written_out():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    tau, n, total = 0.07, 4, 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        sims = [float(z[i] @ z[j]) / tau for j in range(2 * n) if j != i]
        total += -(float(z[i] @ z[pos]) / tau - math.log(sum(math.exp(s) for s in sims)))
    assert float(nt_xent(z1, z2, tau)) == pytest.approx(total / (2 * n), rel=1e-5)


def test_nt_xent_is_low_for_matching_views_and_high_for_swapped_ones():
    z = F.normalize(torch.eye(8)[:5], dim=-1)
    matched, swapped = nt_xent(z, z), nt_xent(z, z.roll(1, 0))
    assert float(matched) < 0.01 and float(swapped) > 10.0


def test_variance_hinge_is_zero_for_a_spread_batch_and_target_for_a_collapsed_one():
    spread = torch.cat([torch.eye(16), -torch.eye(16)])  # per dimension: std of √16·z = √(2/32·16) = 1
    assert float(variance_hinge(spread)) == pytest.approx(0.0, abs=1e-6)
    collapsed = F.normalize(torch.ones(10, 16), dim=-1)
    assert float(variance_hinge(collapsed)) == pytest.approx(1.0 - math.sqrt(1e-4), abs=1e-6)


def test_embedding_spread_equals_the_mean_pairwise_squared_distance_over_two():
    z = torch.randn(7, 5, generator=torch.Generator().manual_seed(1))
    u = F.normalize(z, dim=-1)
    pairs = [float((u[i] - u[j]).pow(2).sum()) for i, j in itertools.combinations(range(7), 2)]
    assert float(embedding_spread(z)) == pytest.approx(np.mean(pairs) / 2, rel=1e-6)
    assert float(embedding_spread(z[:1].repeat(5, 1))) == pytest.approx(0.0, abs=1e-12)
    assert float(embedding_spread(3.0 * z)) == pytest.approx(float(embedding_spread(z)), rel=1e-6)


# -- contrastive views --------------------------------------------------------------------------------
def test_view_removes_one_span_shifts_the_rest_and_keeps_padding_zero():
    sr, wave = 100, torch.arange(1, 1001, dtype=torch.float64).repeat(2, 1)
    lengths = torch.tensor([1000, 600])
    view = contrastive_view(wave, lengths, torch.Generator().manual_seed(3), sr, noise_std=0.0, gain_db=0.0)
    for b, length in enumerate(lengths.tolist()):
        kept = view[b, : length - 50]
        assert (view[b, length - 50 :] == 0).all()  # the removed 0.5 s is padded back at the end, padding stays 0
        jumps = (kept.diff() != 1).nonzero().flatten()
        assert len(jumps) <= 1  # one span removed, order kept
        if len(jumps):
            assert float(kept[jumps[0] + 1] - kept[jumps[0]]) == 51.0
        assert set(kept.tolist()) <= set(wave[b, :length].tolist())


def test_view_gain_is_within_three_db_and_noise_has_the_stated_std():
    wave = torch.ones(200, 16000)
    g = torch.Generator().manual_seed(0)
    gained = contrastive_view(wave, None, g, noise_std=0.0, drop_seconds=0.0)
    ratio_db = 20 * torch.log10(gained[:, 0])
    assert float(ratio_db.abs().max()) <= 3.0 and float(ratio_db.std()) > 1.0
    noisy = contrastive_view(torch.zeros(4, 16000), None, g, gain_db=0.0, drop_seconds=0.0)
    assert float(noisy.std()) == pytest.approx(0.005, rel=0.02)


def test_two_views_from_one_generator_differ_and_the_same_seed_repeats():
    wave = torch.randn(3, 16000, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(5)
    a, b = contrastive_view(wave, None, g), contrastive_view(wave, None, g)
    again = contrastive_view(wave, None, torch.Generator().manual_seed(5))
    assert not torch.equal(a, b) and torch.equal(a, again)


# -- oversampling, MemMixup, bank -----------------------------------------------------------------------
def test_oversampling_bounds_the_source_to_target_ratio():
    emb = np.arange(48, dtype=float).reshape(24, 2)
    domains = np.array([0] * 21 + [1] * 3)
    rows, origins = oversample_target(emb, domains, max_ratio=2)
    n_target = int((domains[origins] == 1).sum())
    assert n_target == 11 and 21 / n_target <= 2 < 21 / (n_target - 1)
    assert np.bincount(origins[domains[origins] == 1])[21:].tolist() in ([4, 4, 3], [4, 3, 4], [3, 4, 4])
    np.testing.assert_array_equal(rows, emb[origins])
    same, _ = oversample_target(emb, np.array([0] * 12 + [1] * 12), max_ratio=2)
    np.testing.assert_array_equal(same, emb)


def test_memmixup_rows_are_unit_norm_convex_combinations_of_their_pair():
    bank = _unit(np.random.default_rng(0).random((30, 8)))
    rows, pairs = memmixup(bank, np.arange(30), np.random.default_rng(1), alpha=0.4)
    assert rows.shape == (60, 8)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(rows[:30], bank, atol=1e-7)
    for row, (i, j) in zip(rows[30:], pairs[30:]):
        assert i != j
        # row ∝ λ b_i + (1 − λ) b_j: solve for (a, b) ≥ 0 by least squares and check the fit is exact
        coef, *_ = np.linalg.lstsq(np.stack([bank[i], bank[j]], 1), row, rcond=None)
        assert (coef >= -1e-6).all()
        np.testing.assert_allclose(coef[0] * bank[i] + coef[1] * bank[j], row, atol=1e-5)
    again, _ = memmixup(bank, np.arange(30), np.random.default_rng(1), alpha=0.4)
    np.testing.assert_array_equal(rows, again)


def test_bank_score_is_the_mean_of_the_k_smallest_l2_distances():
    rng = np.random.default_rng(2)
    emb, queries = _unit(rng.random((40, 6))), _unit(rng.random((5, 6)))
    bank = MixupBank(emb, np.array([0] * 36 + [1] * 4), k=5, seed=3)
    brute = np.sort(np.linalg.norm(queries[:, None] - bank.rows[None], axis=2), axis=1)[:, :5].mean(1)
    np.testing.assert_allclose(bank.score(queries), brute, rtol=1e-5)
    np.testing.assert_allclose(bank.score(7 * queries), brute, rtol=1e-5)  # queries are re-normalised


def test_leave_one_out_excludes_every_row_made_from_the_clip():
    rng = np.random.default_rng(4)
    emb = _unit(rng.random((25, 4)))
    bank = MixupBank(emb, np.array([0] * 22 + [1] * 3), k=3, max_ratio=5, seed=1)
    loo = bank.train_scores()
    for i in range(25):
        others = ~(bank.origins == i).any(axis=1)
        d = np.sort(np.linalg.norm(bank.rows[others] - emb[i], axis=1))[:3].mean()
        assert loo[i] == pytest.approx(d, rel=1e-5)


# -- rank normalisation ---------------------------------------------------------------------------------
def test_rank_normalise_equals_a_brute_force_rank_per_group():
    scores = np.array([0.3, 0.1, 0.9, 0.5, 0.2, 0.7, 0.4])
    groups = np.array([0, 0, 0, 1, 1, 1, 1])
    expected = np.empty(7)
    for g in (0, 1):
        idx = np.flatnonzero(groups == g)
        for i in idx:
            expected[i] = sum(scores[j] < scores[i] for j in idx) / (len(idx) - 1)
    np.testing.assert_allclose(rank_normalise(scores, groups), expected)
    np.testing.assert_allclose(rank_normalise(np.exp(3 * scores) - 2, groups), expected)  # monotone invariance
    np.testing.assert_allclose(rank_normalise([2.0, 2.0, 5.0]), [0.25, 0.25, 1.0])  # ties share the average rank
    assert rank_normalise([4.0], [1]).tolist() == [0.5]


def test_rank_against_counts_reference_scores_below_with_ties_half():
    ref = np.array([1.0, 2.0, 2.0, 3.0])
    np.testing.assert_allclose(rank_against([0.5, 2.0, 2.5, 9.0], ref), [0.0, 0.5, 0.75, 1.0])
    with pytest.raises(ValueError, match="at least one"):
        rank_against([1.0], [])
