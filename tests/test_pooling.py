import math

import pytest
import torch

from asdzoo.nn.pooling import pool, preprocess, rdp_weights

# one clip, 3 valid frames of 2 dims (+ one padded frame that must be ignored)
X = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [2.0, 4.0], [99.0, 99.0]]], dtype=torch.float64)
M = torch.tensor([[True, True, True, False]])


def test_mean_and_gem_hand_computed():
    assert torch.allclose(pool(X, M, "mean"), torch.tensor([[2.0, 2.0]], dtype=torch.float64))
    gem3 = torch.tensor([[((1 + 27 + 8) / 3) ** (1 / 3), ((0 + 8 + 64) / 3) ** (1 / 3)]], dtype=torch.float64)
    assert torch.allclose(pool(X, M, "gem", p=3), gem3)
    assert torch.allclose(pool(X, M, "gem", p=1), pool(X, M, "mean"))  # p = 1 is the mean of max(0, x)


def test_gem_clamps_negatives_and_survives_large_p():
    x = torch.tensor([[[-5.0], [2.0]]], dtype=torch.float64)
    assert torch.allclose(
        pool(x, torch.ones(1, 2, dtype=torch.bool), "gem", p=3),
        torch.tensor([[(8 / 2) ** (1 / 3)]], dtype=torch.float64),
    )
    big = torch.full((1, 3, 1), 1e4)
    assert torch.isfinite(pool(big, torch.ones(1, 3, dtype=torch.bool), "gem", p=9)).all()


def test_rdp_weights_hand_computed():
    # mean (2, 2); distances: sqrt(1+4)=sqrt5, sqrt(1+0)=1, sqrt(0+4)=2; normalised by sqrt5
    d = torch.tensor([math.sqrt(5), 1.0, 2.0]) / math.sqrt(5)
    for alpha in (1.0, 9.0):
        w = (1 + d) ** alpha
        w = w / w.sum()
        got = rdp_weights(X, M, alpha)[0]
        assert torch.allclose(got[:3], w.double(), atol=1e-7) and got[3] == 0
        expected = (w.double()[:, None] * X[0, :3]).sum(0)
        assert torch.allclose(pool(X, M, "rdp", alpha=alpha)[0], expected, atol=1e-7)
        gem = ((w.double()[:, None] * X[0, :3] ** 3).sum(0)) ** (1 / 3)
        assert torch.allclose(pool(X, M, "rdpgem", alpha=alpha, p=3)[0], gem, atol=1e-7)


def test_rdp_alpha_zero_is_mean():
    assert torch.allclose(pool(X, M, "rdp", alpha=0.0), pool(X, M, "mean"))


def test_preprocess_threshold_and_tanh():
    x = torch.tensor([0.05, 0.12, 0.25, 0.8, 3.0])
    assert torch.allclose(preprocess(x, 0.10, 0.3), torch.tensor([0.0, 0.12, 0.25, math.tanh(0.8), math.tanh(3.0)]))
    assert torch.equal(preprocess(x, None, None), x)


@pytest.mark.parametrize("method", ["mean", "gem", "rdp", "rdpgem"])
def test_padding_never_changes_pooling(method):
    torch.manual_seed(0)
    x = torch.rand(1, 5, 4)
    padded = torch.cat([x, torch.rand(1, 7, 4) * 50], dim=1)
    mask = torch.tensor([[True] * 5 + [False] * 7])
    a = pool(x, torch.ones(1, 5, dtype=torch.bool), method, p=3, alpha=9)
    b = pool(padded, mask, method, p=3, alpha=9)
    assert torch.allclose(a, b, atol=1e-6)


def test_unknown_pooling():
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        pool(X, M, "max")
