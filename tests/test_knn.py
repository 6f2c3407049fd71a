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
    be = KnnBackend(BackendConfig(metric="euclidean", k=1, backend="domain_z"), emb, dom)
    mu_t, sd_t = be.z_stats[1]
    assert mu_t == pytest.approx(14 / 3) and sd_t == pytest.approx(np.std([4, 4, 6]) + 1e-12)
    q = np.array([[12.0]], dtype=np.float32)  # target distance 2, source distance 9
    expected = min((9 - 1) / 1e-12, (2 - 14 / 3) / np.std([4, 4, 6]))
    assert be.score(q)[0] == pytest.approx(expected)


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
