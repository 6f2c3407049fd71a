import numpy as np
import pytest

from asdzoo.scoring.fusion import fuse, zalign
from asdzoo.scoring.knn import BackendConfig, KnnBackend, MemoryBank


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("k", [1, 3, 10])
def test_faiss_equals_brute_force(metric, k):
    rng = np.random.default_rng(k)
    bank, q = _unit(rng.normal(size=(300, 32))), _unit(rng.normal(size=(40, 32)))
    d = 1 - q @ bank.T if metric == "cosine" else np.linalg.norm(q[:, None] - bank[None], axis=-1)
    expected = np.sort(d, axis=1)[:, :k].mean(axis=1)
    assert np.allclose(MemoryBank(bank, metric).knn_score(q, k), expected, atol=1e-5)


def test_leave_one_out_excludes_self():
    bank = np.array([[0.0], [1.0], [3.0]], dtype=np.float32)
    mb = MemoryBank(bank, "euclidean")
    assert np.allclose(mb.knn_score(bank, 1, exclude_self=True), [1.0, 1.0, 2.0])
    assert np.allclose(mb.knn_score(bank, 1), [0.0, 0.0, 0.0])


def test_ldn_worked_example():
    # bank on a line: 0, 1, 3 ; densities with 1 neighbour: rho = [1, 1, 2]
    bank = np.array([[0.0], [1.0], [3.0]], dtype=np.float32)
    mb = MemoryBank(bank, "euclidean")
    assert np.allclose(mb.local_density(1), [1, 1, 2])
    # query 5: ratios d/rho = 5/1, 4/1, 2/2 -> min 1.0 ; k=2 -> mean(1, 4) = 2.5
    assert np.allclose(mb.ldn_score(np.array([[5.0]]), 1, 1), [1.0])
    assert np.allclose(mb.ldn_score(np.array([[5.0]]), 2, 1), [2.5])


def test_domain_z_uses_training_leave_one_out_statistics():
    src = np.array([[0.0], [1.0], [2.0], [3.0]], dtype=np.float32)  # LOO k=1 distances: 1, 1, 1, 1 -> std 0
    tgt = np.array([[10.0], [14.0], [20.0]], dtype=np.float32)  # LOO: 4, 4, 6 -> mean 14/3
    emb = np.concatenate([src, tgt])
    dom = np.array([0, 0, 0, 0, 1, 1, 1])
    with pytest.warns(UserWarning, match="domain 0 has leave-one-out scores with no spread"):
        be = KnnBackend(BackendConfig(metric="euclidean", k=1, backend="domain_z"), emb, dom)
    mu_t, sd_t = be.z_stats[1]
    assert mu_t == pytest.approx(14 / 3) and sd_t == pytest.approx(np.std([4, 4, 6]))
    # the source bank's spread is 0: it falls back to the spread of all banks' leave-one-out scores pooled
    pooled_sd = np.std([1, 1, 1, 1, 4, 4, 6])
    assert be.z_stats[0] == pytest.approx((1.0, pooled_sd))
    q = np.array([[12.0]], dtype=np.float32)  # target distance 2, source distance 9
    expected = min((9 - 1) / pooled_sd, (2 - 14 / 3) / np.std([4, 4, 6]))
    assert be.score(q)[0] == pytest.approx(expected)


def test_domain_z_keeps_a_one_clip_target_bank_in_the_minimum():
    # before the fallback a one-clip bank got sigma = 1e-12: any query not identical to its clip scored ~1e11 there,
    # so the target bank dropped out of the minimum and a query next to the target clip looked anomalous
    src = np.array([[0.0], [1.0], [2.5], [3.0], [5.0]], dtype=np.float32)  # LOO k=1: 1, 1, 0.5, 0.5, 2
    emb = np.concatenate([src, [[50.0]]]).astype(np.float32)
    dom = np.array([0] * 5 + [1])
    with pytest.warns(UserWarning, match="domain 1 has one clip"):
        be = KnnBackend(BackendConfig(metric="euclidean", k=1, backend="domain_z"), emb, dom)
    loo = np.array([1, 1, 0.5, 0.5, 2])
    assert be.z_stats[1] == pytest.approx((loo.mean(), loo.std()))  # pooled = the source bank's scores
    near_target, far_from_both = np.array([[50.5]], np.float32), np.array([[30.0]], np.float32)
    assert be.score(near_target)[0] == pytest.approx((0.5 - loo.mean()) / loo.std())
    assert be.score(near_target)[0] < be.score(far_from_both)[0]


def test_cosine_distances_of_near_duplicates_are_exact():
    # 1 - cos = 5e-7: the float32 inner product has tens of percent relative error there (issue 11)
    rng = np.random.default_rng(3)
    a = _unit(rng.normal(size=(1, 512)))
    b = _unit(a + 1e-3 * _unit(rng.normal(size=(1, 512))) * np.sqrt(2 * 5e-7) / 1e-3)
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    a64, b64 = (_unit(x.astype(np.float64)) for x in (a32, b32))
    exact = 0.5 * np.sum((a64 - b64) ** 2)  # = 1 - cos of the stored vectors, without cancellation
    bank = MemoryBank(np.concatenate([b32, _unit(rng.normal(size=(20, 512))).astype(np.float32)]), "cosine")
    dist, idx = bank.search(a32, 1)
    assert idx[0, 0] == 0 and abs(dist[0, 0] - exact) / exact < 1e-6
    euclid = MemoryBank(np.concatenate([b32, a32 + 1.0]), "euclidean").search(a32, 1)[0][0, 0]
    assert abs(euclid - np.linalg.norm(a32.astype(np.float64) - b32)) < 1e-12


def test_ldn_neighbourhood_defaults_to_one_and_is_labelled():
    assert BackendConfig().ldn_neighbors == 1
    assert BackendConfig("cosine", 3, "ldn", ldn_neighbors=4).label == "cos k=3 ldn K=4"
    assert BackendConfig("cosine", 3, "raw", ldn_neighbors=4).label == "cos k=3 raw"
    with pytest.raises(ValueError, match="ldn_neighbors"):
        BackendConfig(ldn_neighbors=0)


def test_dldn_is_min_over_domain_ldn_and_wdbldn_weights_target():
    rng = np.random.default_rng(0)
    emb = np.concatenate([rng.normal(0, 1, (50, 4)), rng.normal(5, 0.2, (5, 4))]).astype(np.float32)
    dom = np.array([0] * 50 + [1] * 5)
    q = rng.normal(5, 0.2, (3, 4)).astype(np.float32)
    dldn = KnnBackend(BackendConfig("euclidean", 1, "dldn", ldn_neighbors=2), emb, dom)
    per = [MemoryBank(emb[dom == d], "euclidean").ldn_score(q, 1, 2) for d in (0, 1)]
    assert np.allclose(dldn.score(q), np.minimum(*per))
    w = KnnBackend(BackendConfig("euclidean", 1, "wdbldn", ldn_neighbors=2, target_weight=2.0), emb, dom)
    assert np.allclose(w.score(q), np.minimum(per[0], 2.0 * per[1]))


def test_train_scores_never_match_themselves():
    rng = np.random.default_rng(1)
    emb = _unit(rng.normal(size=(30, 8))).astype(np.float32)
    for backend in ("raw", "ldn", "domain_z", "dldn"):
        be = KnnBackend(BackendConfig("cosine", 1, backend), emb, np.array([0] * 25 + [1] * 5))
        s = be.train_scores()
        assert np.isfinite(s).all() and len(s) == 30
        if backend == "raw":
            assert (s > 1e-4).all()


def test_fusion_eqs_17_18():
    train = [np.array([1.0, 3.0]), np.array([10.0, 30.0])]
    s = [np.array([2.0, 5.0]), np.array([20.0, 50.0])]
    assert np.allclose(zalign(s[0], train[0]), [0.0, 3.0])
    assert np.allclose(fuse(s, train, [0.5, 0.5]), [0.0, 3.0])
    with pytest.raises(ValueError, match="sum to 1"):
        fuse(s, train, [0.5, 0.6])


def _fusion_roots_and_members(seed=0, n_members=3):
    """Two fake roots of one machine each; member 0 separates source anomalies, member 1 target anomalies,
    member 2 is noise. Test clips: 40 source normals, 40 target normals, 20 anomalies per domain."""
    from types import SimpleNamespace

    from asdzoo.search import Candidate

    rng = np.random.default_rng(seed)
    roots, members = [], [Candidate("x", "near_only", {}, {}) for _ in range(n_members)]
    for r in range(2):
        dom = np.array([0] * 40 + [1] * 40 + [0] * 20 + [1] * 20)
        y = np.array([0] * 80 + [1] * 40)
        clips = [
            SimpleNamespace(label="anomaly" if a else "normal", domain="target" if d else "source")
            for a, d in zip(y, dom)
        ]
        roots.append(SimpleNamespace(data={"m": SimpleNamespace(test=clips)}))
        signal = [(y == 1) & (dom == 0), (y == 1) & (dom == 1), np.zeros(len(y), bool)]
        for i, c in enumerate(members):
            c.test_scores[r, "m"] = rng.normal(size=len(y)) + 1.5 * signal[i]
            c.train_scores[r, "m"] = rng.normal(size=50)
    return roots, members


def test_fitted_fusion_weights_equal_the_exhaustive_grid_optimum():
    from asdzoo.search import _compositions, fit_fusion_weights, fused_per_root

    roots, members = _fusion_roots_and_members()
    fit = fit_fusion_weights(members, roots, step=0.1, coarse=0.1)
    grid = list(_compositions(10, 3, 1))
    assert len(grid) == 66 and all(sum(g) == 10 for g in grid)
    ranked = max(grid, key=lambda g: (min(p := fused_per_root(members, roots, np.array(g) / 10)), np.mean(p)))
    assert fit.weights == pytest.approx(np.array(ranked) / 10) and sum(fit.weights) == pytest.approx(1.0)
    assert fit.evaluated == 66
    singles = [min(fused_per_root(members, roots, np.eye(3)[i])) for i in range(3)]
    # the two complementary members both get weight, the noise member little, and the fusion beats each single one
    assert fit.weights[0] > 0.2 and fit.weights[1] > 0.2 and fit.weights[2] < 0.2
    assert fit.worst > max(singles) + 0.02


def test_fusion_weight_refinement_moves_in_fine_steps():
    from asdzoo.search import fit_fusion_weights

    roots, members = _fusion_roots_and_members(seed=1)
    fit = fit_fusion_weights(members, roots, step=0.05, coarse=0.5)
    assert all(abs(w * 20 - round(w * 20)) < 1e-9 for w in fit.weights) and sum(fit.weights) == pytest.approx(1.0)
    coarse_only = fit_fusion_weights(members, roots, step=0.5, coarse=0.5)
    assert (fit.worst, fit.mean) >= (coarse_only.worst, coarse_only.mean)
    assert fit.evaluated > 6  # the 6 coarse vectors, then refinement moves
    with pytest.raises(ValueError, match="divide 1"):
        fit_fusion_weights(members, roots, step=0.3)


def test_fusion_members_skip_configurations_with_identical_scores():
    from asdzoo.search import Candidate, fusion_members

    roots, members = _fusion_roots_and_members()
    twin = Candidate("x", "near_only", {"method": "gem", "p": 1}, {})  # another pooling label, the same scores
    twin.test_scores = dict(members[0].test_scores)
    for c, alpha in zip(members, (1, 9, 16)):  # three distinct embeddings
        c.pooling = {"method": "rdp", "alpha": alpha}
    chosen = fusion_members([members[0], twin, members[1], members[2]], 2)
    assert [id(c) for c in chosen] == [id(members[0]), id(members[1])]
