import math

import torch

from asdzoo.audio.channels import softmask_enhance
from asdzoo.systems.genrep import compose

N = torch.tensor([[0.6, 0.8]])
F = torch.tensor([[1.0, 0.0]])


def _l2(x):
    return x / x.norm(dim=-1, keepdim=True)


def test_near_only_and_far_weighted_concat():
    assert torch.equal(compose("near_only", {"near": N})["main"], N)
    z = compose("n_0.5f", {"near": N, "far": F})["main"]
    assert torch.allclose(z, _l2(torch.tensor([[0.6, 0.8, 0.5, 0.0]])))
    assert torch.allclose(compose("n_f", {"near": N, "far": F})["main"], _l2(torch.tensor([[0.6, 0.8, 1.0, 0.0]])))


def test_absolute_difference_branch():
    diff = _l2(torch.tensor([[0.4, 0.8]]))  # |N - F| = (0.4, 0.8)
    z = compose("absdif_0.5", {"near": N, "far": F})["main"]
    assert torch.allclose(z, _l2(torch.cat([N, F, 0.5 * diff], dim=-1)))


def test_softmask_branches():
    out = compose("sfsoft_a03f05", {"near": N, "far": F, "enh": F})
    assert set(out) == {"near", "enh", "stereo"}
    assert torch.allclose(out["stereo"], _l2(torch.cat([N, F], dim=-1)))


def _tone(f, n=16000):
    return torch.sin(2 * math.pi * f * torch.arange(n) / 16000)[None]


def test_softmask_without_far_signal_is_identity():
    near = _tone(440) + 0.1 * torch.randn(1, 16000)
    out = softmask_enhance(near, torch.zeros_like(near), alpha=0.5, floor=0.7)
    assert torch.allclose(out, near, atol=1e-4)


def test_softmask_full_leakage_scales_by_clipped_mask():
    # far == near: H = 1, R = 1, M = clip(1 - alpha / 2, floor, 1)
    near = _tone(440) + 0.1 * torch.randn(1, 16000)
    out = softmask_enhance(near, near.clone(), alpha=0.3, floor=0.5)
    assert torch.allclose(out, 0.85 * near, atol=1e-3)
    out = softmask_enhance(near, near.clone(), alpha=0.8, floor=0.7)  # 1 - 0.4 = 0.6 < floor
    assert torch.allclose(out, 0.7 * near, atol=1e-3)


def test_softmask_suppresses_leaked_component_only():
    machine, interferer = _tone(300), _tone(2000)
    near = machine + 0.5 * interferer
    far = 2.0 * interferer
    out = softmask_enhance(near, far, alpha=0.5, floor=0.5)
    spec = lambda x: torch.fft.rfft(x[0, 4000:12000]).abs()  # noqa: E731
    ratio_machine = spec(out)[150] / spec(near)[150]  # 300 Hz bin of an 8000-sample window
    ratio_interf = spec(out)[1000] / spec(near)[1000]  # 2000 Hz bin
    assert ratio_machine > 0.95 and ratio_interf < 0.8


def test_softmask_padding_invariance():
    near, far = torch.randn(2, 12000), torch.randn(2, 12000)
    near[1, 9000:] = far[1, 9000:] = 0
    batch = softmask_enhance(near, far, 0.5, 0.7, lengths=torch.tensor([12000, 9000]))
    alone = softmask_enhance(near[1:, :9000], far[1:, :9000], 0.5, 0.7)
    assert torch.allclose(batch[1, :9000], alone[0], atol=1e-5) and batch[1, 9000:].abs().max() == 0
    assert torch.allclose(batch[0], softmask_enhance(near[:1], far[:1], 0.5, 0.7)[0], atol=1e-5)
