"""The Audio-Mamba scan's CUDA path, checked as far as a CPU can check it.

``selective_scan`` hands tensors on a ``KERNEL_DEVICES`` device to mamba-ssm's ``selective_scan_fn``. Here that
device list points at the CPU and the kernel at a stand-in with the same signature that

- enforces the argument contract of the CUDA op: the dtype, shape and layout checks of ``selective_scan_fwd`` in
  mamba-ssm's ``csrc/selective_scan/selective_scan.cpp`` (input dtype float32/float16/bfloat16; A, D and delta_bias
  float32; delta, z and input-dependent B/C in the input dtype; state size <= 256), after what its Python wrapper
  ``SelectiveScanFn.forward`` does first (last dimension made contiguous, a 3-D B/C regrouped as one group);
- computes the sequential definition, so the model's numbers through it can be compared with the chunked scan.

Every mixer variant (Fo-Fo, Fo-Bi, Bi-Bi, gated fusion) runs through it in float32 and under bfloat16 autocast (the
dtypes a GPU run trains in), and its outputs and gradients are compared with the chunked scan's. That shows the
forward calls a GPU run makes are ones the kernel accepts, with every argument in its place (the backward op takes
the same tensors); the kernel's own numerics and its backward need a GPU: ``test_gpu_*`` below run there (skipped
here).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import asdzoo.nn.selective_scan as ss
from asdzoo.encoders.aum import AudioMamba
from asdzoo.nn.selective_scan import selective_scan_sequential

from reference import reference_dir

INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
TINY = dict(spectrogram_size=(32, 64), embed_dim=16, depth=2, d_state=4, num_classes=3)
GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


class KernelContractError(RuntimeError):
    """A call the CUDA op would reject (its TORCH_CHECK)."""


def require(ok: bool, what: str) -> None:
    if not ok:
        raise KernelContractError(what)


class KernelStandIn:
    """mamba-ssm's ``selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    return_last_state=False)``: its checks, then the sequential scan. Records each call's input dtype."""

    def __init__(self):
        self.calls: list[dict] = []

    def __call__(
        self, u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False
    ):
        u, delta, B, C = (t if t.stride(-1) == 1 else t.contiguous() for t in (u, delta, B, C))
        B4, C4 = (M[:, None] if M.dim() == 3 else M for M in (B, C))  # (b, n, L) -> (b, 1, n, L)
        itype = u.dtype
        require(itype in INPUT_DTYPES, f"u dtype {itype}")
        require(A.dtype == torch.float32 and A.dim() == 2, f"A must be float32 (dim, d_state), got {A.dtype}")
        batch, dim, length = u.shape
        n = A.shape[1]
        require(n <= 256, "selective_scan only supports state dimension <= 256")
        require(delta.dtype == itype and delta.shape == u.shape, f"delta {delta.dtype} {tuple(delta.shape)}")
        for name, M in (("B", B4), ("C", C4)):
            if M.dim() >= 3:
                require(M.dtype == itype, f"input-dependent {name} must be in u's dtype {itype}, got {M.dtype}")
                require(M.shape == (batch, M.shape[1], n, length), f"{name} shape {tuple(M.shape)}")
            else:
                require(M.dtype == torch.float32 and M.shape == (dim, n), f"{name} {M.dtype} {tuple(M.shape)}")
        for name, v in (("D", D), ("delta_bias", delta_bias)):
            require(v is None or (v.dtype == torch.float32 and v.shape == (dim,)), f"{name} must be float32 (dim,)")
        require(z is None or (z.dtype == itype and z.shape == u.shape), "z must be in u's dtype, shape of u")
        require(isinstance(delta_softplus, bool) and isinstance(return_last_state, bool), "flags must be bools")
        self.calls.append({"dtype": itype, "variable_BC": B4.dim() == 4, "softplus": delta_softplus})
        B3, C3 = (M[:, 0] if M.dim() == 4 else M for M in (B4, C4))
        return selective_scan_sequential(u, delta, A, B3, C3, D, z, delta_bias, delta_softplus, return_last_state)


@pytest.fixture
def kernel(monkeypatch) -> KernelStandIn:
    """Route CPU tensors to the stand-in, as CUDA tensors go to mamba-ssm."""
    stand_in = KernelStandIn()
    monkeypatch.setattr(ss, "KERNEL_DEVICES", ("cpu",))
    monkeypatch.setattr(ss, "_kernel", lambda: stand_in)
    return stand_in


def scan_args(dtype: torch.dtype = torch.float32, seed: int = 0) -> list:
    g = torch.Generator().manual_seed(seed)
    b, d, n, length = 2, 6, 4, 37
    u, delta, z = (torch.randn(b, d, length, generator=g).to(dtype) for _ in range(3))
    A = -torch.exp(torch.randn(d, n, generator=g))
    B, C = (torch.randn(b, n, length, generator=g).to(dtype) for _ in range(2))
    return [u, delta, A, B, C, torch.randn(d, generator=g), z, torch.randn(d, generator=g)]


def test_the_stand_in_rejects_what_the_kernel_rejects(kernel):
    u, delta, A, B, C, D, z, bias = scan_args(torch.bfloat16)
    ss.selective_scan(u, delta, A, B, C, D, z, bias, True)  # the contract: accepted
    assert kernel.calls == [{"dtype": torch.bfloat16, "variable_BC": True, "softplus": True}]
    broken = {
        "B": (u, delta, A, B.float(), C, D, z, bias),  # input-dependent B in float32 next to a bfloat16 u
        "D": (u, delta, A, B, C, D.bfloat16(), z, bias),
        "delta_bias": (u, delta, A, B, C, D, z, bias.bfloat16()),
        "delta": (u, delta.float(), A, B, C, D, z, bias),
        "A": (u, delta, A.double(), B, C, D, z, bias),
        "z": (u, delta, A, B, C, D, z.float(), bias),
    }
    for name, args in broken.items():
        with pytest.raises(KernelContractError, match=name):
            ss.selective_scan(*args, True)


def test_the_kernel_path_gives_the_scan_and_last_state_of_the_definition(kernel, monkeypatch):
    args = scan_args()
    got_out, got_last = ss.selective_scan(*args, True, True)
    kernel.calls.clear()
    monkeypatch.setattr(ss, "KERNEL_DEVICES", ())  # the chunked pure-torch scan
    want_out, want_last = ss.selective_scan(*args, True, True)
    assert kernel.calls == []
    torch.testing.assert_close(got_out, want_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_last, want_last, atol=1e-5, rtol=1e-5)


def test_float64_never_reaches_the_kernel(kernel):
    """The kernel takes float32/16/bf16 inputs only: a float64 scan (a precision check) takes the chunked path."""
    args = [t.double() for t in scan_args()]
    out = ss.selective_scan(*args, True)
    assert kernel.calls == [] and out.dtype == torch.float64
    torch.testing.assert_close(out, selective_scan_sequential(*args, True), atol=1e-10, rtol=1e-10)


def run_model(model: AudioMamba, spec: torch.Tensor, autocast: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits and every parameter's gradient of ``logits.square().sum()``."""
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model.forward_spectrogram(spec)["logits"]
    logits.float().square().sum().backward()
    return logits.detach().float(), {k: p.grad.clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize("autocast", [False, True], ids=["float32", "bf16-autocast"])
@pytest.mark.parametrize(
    "variant",
    [dict(bimamba_type="none"), dict(bimamba_type="v1"), dict(bimamba_type="v2"), dict(gated_fusion=True)],
    ids=["Fo-Fo", "Fo-Bi", "Bi-Bi", "gated"],
)
def test_every_mixer_variant_runs_through_the_kernel_contract(kernel, monkeypatch, variant, autocast):
    torch.manual_seed(0)
    model = AudioMamba(**TINY, **variant)
    for p in model.parameters():  # away from the init's symmetries (gate 0, D 1, ...)
        p.data.add_(0.05 * torch.randn_like(p))
    spec = torch.randn(2, 64, 32)
    got, got_grads = run_model(model, spec, autocast)
    scans_per_block = 1 if variant.get("bimamba_type") == "none" else 2
    assert len(kernel.calls) == TINY["depth"] * scans_per_block  # forward calls; autograd runs the backward
    assert {c["dtype"] for c in kernel.calls} == {torch.bfloat16 if autocast else torch.float32}
    assert all(c["variable_BC"] and c["softplus"] for c in kernel.calls)
    monkeypatch.setattr(ss, "KERNEL_DEVICES", ())
    want, want_grads = run_model(model, spec, autocast)
    tol = 3e-2 if autocast else 1e-5  # bf16 rounding of the same float32 scans, in a different summation order
    torch.testing.assert_close(got, want, atol=tol, rtol=tol)
    for k, g in want_grads.items():
        scale = float(g.abs().max()) + 1e-12
        assert float((got_grads[k] - g).abs().max()) <= tol * scale + 1e-7, k


def official_tiny() -> tuple[AudioMamba, dict]:
    """The official tiny v2 model (../shared/reference/aum) with its recorded inputs and outputs."""
    ref = reference_dir("aum")
    model = AudioMamba(spectrogram_size=(128, 64), depth=2, embed_dim=64, d_state=8, num_classes=10).eval()
    model.load_state_dict(torch.load(ref / "aum_tiny_v2_state_dict.pt", weights_only=True), strict=True)
    return model, np.load(ref / "aum_tiny_v2_io.npz")


def test_official_tiny_model_through_the_kernel_path_matches_the_reference(kernel):
    model, io = official_tiny()
    with torch.no_grad():
        out = model.forward_spectrogram(torch.from_numpy(io["input"]))
    assert len(kernel.calls) == 4  # 2 blocks x 2 directions, as the reference README counts them
    np.testing.assert_allclose(out["logits"].numpy(), io["logits"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(out["final_hidden"].numpy(), io["final_hidden"], atol=1e-4, rtol=0)


# -- on a GPU (skipped without one) ---------------------------------------------------------------------------------
@GPU
def test_gpu_official_tiny_model_matches_the_reference(monkeypatch):
    """With mamba-ssm installed this runs its CUDA kernel, else the chunked scan on the GPU (no TF32)."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    model, io = official_tiny()
    with torch.no_grad():
        out = model.cuda().forward_spectrogram(torch.from_numpy(io["input"]).cuda())
    np.testing.assert_allclose(out["logits"].cpu().numpy(), io["logits"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(out["final_hidden"].cpu().numpy(), io["final_hidden"], atol=1e-4, rtol=0)


@GPU
def test_gpu_training_step_matches_the_cpu_under_bf16_autocast():
    """The same step under bf16 autocast on the GPU and on the CPU. Tolerance 5e-2 of each gradient's scale: set
    from the CPU stand-in's 3e-2 with room for the GPU's other kernels, not measured (no GPU was lent)."""
    torch.manual_seed(0)
    model = AudioMamba(**TINY)
    spec = torch.randn(2, 64, 32)
    want, want_grads = run_model(model, spec, autocast=True)
    model.cuda().zero_grad()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model.forward_spectrogram(spec.cuda())["logits"]
    logits.float().square().sum().backward()
    torch.testing.assert_close(logits.float().cpu(), want, atol=5e-2, rtol=5e-2)
    for k, p in model.named_parameters():
        scale = float(want_grads[k].abs().max()) + 1e-12
        assert float((p.grad.cpu() - want_grads[k]).abs().max()) <= 5e-2 * scale + 1e-7, k
