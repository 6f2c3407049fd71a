"""KnnBackend.train_scores() is leave-one-out for every backend and both distances: a clip never finds itself.

Definition checked, by brute force (one backend refitted per clip): clip i's training score equals
``KnnBackend(cfg, all clips but i).score(clip i)``. For ldn / dldn / wdbldn that refit also recomputes the other
clips' local densities ρ without clip i (issue 11). For domain_z the z statistics stay those of the whole
training bank (the fixed normaliser every test clip gets), so the refit's statistics are replaced by the full
fit's; raw has no statistics. The tolerance (rtol 1e-5, atol 1e-6) only covers faiss' float32 distances, which
the refits compute in other batches (on this machine they agree bit for bit). Worked examples on a line give
closed forms.
"""

from __future__ import annotations

import numpy as np
import pytest

from asdzoo.scoring.knn import BACKENDS, BackendConfig, KnnBackend, MemoryBank

RTOL, ATOL = 1e-5, 1e-6


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _data(seed: int = 0):
    """Two domains with clusters (so held-out clips are often among the others' nearest neighbours), an exact
    duplicate pair in the source domain, and a one-clip-per-cluster target domain."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, 6))
    src = centres[rng.integers(0, 4, 34)] + 0.3 * rng.normal(size=(34, 6))
    src = np.concatenate([src, src[:1]])  # clip 34 duplicates clip 0
    tgt = 2.0 + rng.normal(size=(7, 6))
    emb = _unit(np.concatenate([src, tgt])).astype(np.float32)
    return emb, np.array([0] * len(src) + [1] * len(tgt))


def _brute_force(cfg: BackendConfig, emb: np.ndarray, dom: np.ndarray) -> np.ndarray:
    full = KnnBackend(cfg, emb, dom)
    out = np.empty(len(emb))
    for i in range(len(emb)):
        rest = np.arange(len(emb)) != i
        refit = KnnBackend(cfg, emb[rest], dom[rest])
        if cfg.backend == "domain_z":  # the normaliser of the whole training bank
            refit.z_stats = {d: full.z_stats[d] for d in refit.z_stats}
        out[i] = refit.score(emb[i : i + 1])[0]
    return out


CONFIGS = [
    BackendConfig(metric, k, backend, ldn_neighbors=n, target_weight=2.0 if backend == "wdbldn" else 1.0)
    for backend in BACKENDS
    for metric in ("cosine", "euclidean")
    for k, n in ((1, 2), (3, 5))
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.label.replace(" ", "_"))
def test_train_scores_equal_brute_force_leave_one_out(cfg):
    emb, dom = _data()
    got = KnnBackend(cfg, emb, dom).train_scores()
    want = _brute_force(cfg, emb, dom)
    assert np.isfinite(want).all()
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("backend", ["ldn", "dldn", "wdbldn"])
def test_held_out_clip_is_removed_from_the_densities(backend):
    # The brute-force test above would also pass for an implementation that only drops the clip's own bank
    # entry (keeping the full-bank densities) if the data never made the difference visible: show that it does.
    emb, dom = _data()
    cfg = BackendConfig("euclidean", 1, backend, ldn_neighbors=2)
    be = KnnBackend(cfg, emb, dom)
    stale = np.empty(len(emb))  # statistics of the full bank, only the clip's own entry excluded
    for d in be.banks:
        own = dom == d
        s = [be._bank_scores(d, emb[own], exclude_self=True)]
        s += [be._bank_scores(o, emb[own], exclude_self=False) for o in be.banks if o != d]
        stale[own] = np.min(s, axis=0)
    exact = _brute_force(cfg, emb, dom)
    assert np.max(np.abs(stale - exact)) > 1e-2
    np.testing.assert_allclose(be.train_scores(), exact, rtol=RTOL, atol=ATOL)


LINE = np.array([[0.0], [1.0], [3.0], [4.0]], dtype=np.float32)


def test_ldn_worked_example_on_a_line():
    # Full-bank densities (1 neighbour) are all 1. Holding out x=1 leaves {0, 3, 4} with rho = 3, 1, 1:
    # ratios 1/3, 2/1, 3/1 -> 1/3 (the full-bank densities would give 1). Holding out x=0 leaves {1, 3, 4},
    # rho = 2, 1, 1: ratios 1/2, 3, 4 -> 1/2. By symmetry x=3 -> 1/3 and x=4 -> 1/2.
    be = KnnBackend(BackendConfig("euclidean", 1, "ldn", ldn_neighbors=1), LINE, np.zeros(4, int))
    np.testing.assert_allclose(be.train_scores(), [0.5, 1 / 3, 1 / 3, 0.5], rtol=1e-6)
    np.testing.assert_allclose(be.density[None], [1.0, 1.0, 1.0, 1.0])  # what score() of queries uses


def test_domain_z_worked_example_on_a_line():
    # Bank 0, 1, 3, 7: leave-one-out 1-NN distances 1, 1, 2, 4 -> mean 2, std sqrt(1.5). Training scores are
    # those distances z-scored with the whole bank's statistics: (1 - 2, 1 - 2, 2 - 2, 4 - 2) / sqrt(1.5).
    line = np.array([[0.0], [1.0], [3.0], [7.0]], dtype=np.float32)
    be = KnnBackend(BackendConfig("euclidean", 1, "domain_z"), line, np.zeros(4, int))
    assert be.z_stats[0] == pytest.approx((2.0, 1.5**0.5), rel=1e-9)
    np.testing.assert_allclose(be.train_scores(), np.array([-1.0, -1.0, 0.0, 2.0]) / 1.5**0.5, rtol=1e-6)


def test_duplicate_clip_finds_its_twin_but_never_itself():
    emb, dom = _data()
    for backend in ("raw", "ldn"):
        be = KnnBackend(BackendConfig("euclidean", 1, backend), emb, dom)
        s = be.train_scores()
        assert max(s[0], s[34]) < 1e-3  # the twin is at distance 0 (up to float32 round-off)
        unique = KnnBackend(BackendConfig("euclidean", 1, backend), emb[1:], dom[1:]).train_scores()
        assert unique[33] > 0.05  # without its twin, clip 34 has only other clips to find
        np.testing.assert_allclose(unique[33], _brute_force(be.cfg, emb[1:], dom[1:])[33], rtol=RTOL)


def test_small_domains():
    # a one-clip target domain leaves no target bank when held out: scored by the source bank alone;
    # a two-clip domain leaves a one-clip bank (density 1, domain-Z statistics mean 0 / std 0 + 1e-12).
    emb, dom = _data()
    for n_target in (1, 2):
        e = np.concatenate([emb[:35], emb[35 : 35 + n_target]])
        d = np.concatenate([dom[:35], dom[35 : 35 + n_target]])
        for backend in ("domain_z", "dldn", "wdbldn"):
            cfg = BackendConfig("euclidean", 1, backend, ldn_neighbors=2, target_weight=2.0)
            np.testing.assert_allclose(KnnBackend(cfg, e, d).train_scores(), _brute_force(cfg, e, d), rtol=RTOL)


def test_held_out_ldn_blocks_and_one_item_bank():
    emb, _ = _data()
    bank = MemoryBank(emb, "cosine")
    whole = bank.held_out_ldn_scores(3, 5)
    np.testing.assert_array_equal(bank.held_out_ldn_scores(3, 5, block=7), whole)  # blocks change nothing
    assert np.isnan(MemoryBank(LINE[:1], "euclidean").held_out_ldn_scores(1, 1)).all()
