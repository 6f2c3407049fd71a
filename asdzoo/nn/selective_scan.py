"""Mamba's selective scan and causal depthwise conv in pure torch, with the mamba-ssm CUDA kernel when it is there.

Semantics and layouts are those of mamba-ssm's ``selective_scan_fn`` / ``selective_scan_ref`` (per
../shared/reference/aum/README.md): ``delta = softplus(delta + delta_bias)``; ``x_t = exp(delta_t A) x_{t-1} +
delta_t B_t u_t``; ``y_t = <x_t, C_t>``; ``out = (y + D u) * silu(z)``; zero initial state; float32 inside.
u, delta, z: ``(batch, dim, L)``; A: ``(dim, d_state)`` real; B, C: ``(dim, d_state)`` (input-independent) or
``(batch, d_state, L)`` (input-dependent).

On CPU (or without mamba-ssm) the scan runs chunk by chunk: a loop over chunks (never over time steps) carries the
state, and each chunk is solved at once. Inside a chunk, in log space: ``S_t = cumsum(delta A)`` (the log decay from
the chunk start, <= 0 since A < 0) and ``x_t = exp(S_t) * (x_start + cumsum_s(exp(-S_s) delta_s B_s u_s))``. That
is exact algebra, and it cannot overflow as long as ``-S`` stays below ``MAX_LOG_RANGE`` over a chunk; the chunk is
chosen short enough from a bound on the decay, and a chunk whose decay is too strong even then is solved in the
associative form ``(a1, x1) . (a2, x2) = (a1 a2, a2 x1 + x2)`` by recursive doubling (only factors <= 1 multiplied:
safe for any decay, about 3x slower). Only one chunk's ``[batch, dim, d_state, chunk]`` terms exist at a time, so
they stay in cache and inference never holds the ``[batch, dim, d_state, L]`` states. mamba-ssm / Triton are imported
lazily, only for CUDA tensors.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

CHUNK = 64
MIN_CUMSUM_CHUNK = 8
MAX_LOG_RANGE = 60.0  # exp(60) ~ 1e26: far from float32 overflow even times large inputs
KERNEL_DEVICES = ("cuda",)  # device types whose tensors go to mamba-ssm's kernel (tests point it at a stand-in)
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # the kernel's input types (float64 is not one)


def _kernel():
    """mamba-ssm's fused scan, or None when it is not installed (imported on first CUDA call only)."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError:
        return None
    return selective_scan_fn


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    chunk: int = CHUNK,
):
    """mamba-ssm's ``selective_scan_fn``: the CUDA kernel for CUDA tensors of its input types when mamba-ssm imports,
    else the chunked pure-torch scan. Returns ``out`` (dtype of ``u``) or ``(out, last_state)``."""
    if u.device.type in KERNEL_DEVICES and u.dtype in KERNEL_DTYPES:
        kernel = _kernel()
        if kernel is not None:
            return kernel(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    solver = partial(_chunked_solver, chunk=chunk)
    return _scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, solver)


def selective_scan_sequential(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False
):
    """The definition: one Python step per time step (tests and benchmarks compare the chunked scan to it)."""
    return _scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, _sequential_solver)


def _scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, solver):
    """Shared pre/post-processing around a solver ``solver(u, delta, A, B, C) -> (y [b, d, L], last state)``."""
    if A.is_complex():
        raise ValueError("selective_scan: complex A is not supported (AuM and Mamba-1 use real A)")
    dtype_in = u.dtype
    ct = torch.promote_types(dtype_in, torch.float32)  # float32 inside (as the kernel), float64 stays float64
    u, delta, A = u.to(ct), delta.to(ct), A.to(ct)
    if delta_bias is not None:
        delta = delta + delta_bias.to(ct)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    y, last = solver(u, delta, A, _per_step(B, ct), _per_step(C, ct))
    out = y if D is None else y + u * D.to(ct)[:, None]
    if z is not None:
        out = out * F.silu(z.to(ct))
    out = out.to(dtype_in)
    return (out, last) if return_last_state else out


def _per_step(M: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """B or C broadcastable to ``[b, d, n, L]``: ``(d, n)`` is the same at every step, ``(b, n, L)`` varies."""
    if M.dim() == 2:
        return M.to(dtype)[None, :, :, None]
    if M.dim() == 3:
        return M.to(dtype)[:, None]
    raise ValueError(f"selective_scan: B/C must be (dim, d_state) or (batch, d_state, L), got {tuple(M.shape)}")


def _steps(M: torch.Tensor, t0: int, t1: int) -> torch.Tensor:
    """Time steps ``t0:t1`` of a ``_per_step`` B or C (an input-independent one is the same at every step)."""
    return M if M.shape[-1] == 1 else M[..., t0:t1]


def _sequential_solver(u, delta, A, B, C):
    """The recurrence itself, one Python step per time step."""
    x = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[-1]):
        dt = delta[..., t, None]  # [b, d, 1]
        x = torch.exp(dt * A) * x + (dt * u[..., t, None]) * _steps(B, t, t + 1)[..., 0]
        ys.append((x * _steps(C, t, t + 1)[..., 0]).sum(-1))
    return torch.stack(ys, dim=-1), x


def _chunked_solver(u, delta, A, B, C, chunk):
    """Chunk by chunk (see the module docstring); returns ``(y [b, d, L], last state [b, d, n])``."""
    size, safe = _chunk_size(delta, A, chunk)
    x_start = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t0 in range(0, u.shape[-1], size):
        t1 = min(t0 + size, u.shape[-1])
        dt = delta[:, :, None, t0:t1]  # [b, d, 1, c]
        log_decay = dt * A[None, :, :, None]  # [b, d, n, c], <= 0 because A < 0
        drive = dt * u[:, :, None, t0:t1] * _steps(B, t0, t1)  # delta_t B_t u_t
        x = _chunk_states(log_decay, drive, x_start, safe)
        x_start = x[..., -1]
        ys.append((x * _steps(C, t0, t1)).sum(2))
    return torch.cat(ys, dim=-1), x_start


def _chunk_size(delta: torch.Tensor, A: torch.Tensor, chunk: int) -> tuple[int, bool]:
    """Largest power-of-two chunk (<= ``chunk``, >= MIN_CUMSUM_CHUNK) whose log decay cannot exceed MAX_LOG_RANGE,
    from a bound on the per-step decay (max delta per channel times max |A|, computed on the small tensors), and
    whether that bound holds (else each chunk is checked exactly in :func:`_chunk_states`)."""
    step = (delta.amax(dim=(0, 2)) * A.abs().amax(dim=1)).max().item()
    size = chunk
    while size > MIN_CUMSUM_CHUNK and size * step > MAX_LOG_RANGE:
        size //= 2
    return size, size * step <= MAX_LOG_RANGE


def _chunk_states(log_decay: torch.Tensor, drive: torch.Tensor, x_start: torch.Tensor, safe: bool) -> torch.Tensor:
    """States ``[b, d, n, c]`` of one chunk entered with state ``x_start [b, d, n]``: the cumulative-sum form when its
    exponents stay within +-MAX_LOG_RANGE (``safe``, or checked here), else recursive doubling."""
    log_cum = log_decay.cumsum(-1)  # S_t: log decay from the chunk start to t
    if safe or log_cum[..., -1].min().item() >= -MAX_LOG_RANGE:
        return torch.exp(log_cum) * (x_start[..., None] + (drive * torch.exp(-log_cum)).cumsum(-1))
    x, from_start = _doubling(log_decay.exp(), drive)
    return x + from_start * x_start[..., None]


def _doubling(a: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Within-chunk states from a zero start along the last axis, ``x_t = sum_{s<=t} (prod_{s<r<=t} a_r) drive_s``,
    by recursive doubling on (decay, state) pairs: after the step with offset k, ``x_t`` sums the last 2k steps and
    ``a_t`` is their decay product. Only factors <= 1 are multiplied, so it cannot overflow. Returns the states and
    the decay from the chunk start to each step."""
    k = 1
    while k < x.shape[-1]:
        x = x + F.pad(a[..., k:] * x[..., :-k], (k, 0))
        a = a * F.pad(a[..., :-k], (k, 0), value=1.0)
        k *= 2
    return x, a


def causal_conv1d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, activation: str | None = "silu"
) -> torch.Tensor:
    """Depthwise causal conv, ``x (batch, dim, L)``, ``weight (dim, width)`` or ``(dim, 1, width)``: left padding
    ``width - 1`` so output t sees inputs t-width+1..t (causal-conv1d's ``causal_conv1d_ref``)."""
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"causal_conv1d: activation must be None, 'silu' or 'swish', got {activation!r}")
    if weight.dim() == 2:
        weight = weight[:, None]
    width = weight.shape[-1]
    out = F.conv1d(
        F.pad(x, (width - 1, 0)), weight.to(x.dtype), None if bias is None else bias.to(x.dtype), groups=x.shape[1]
    )
    return out if activation is None else F.silu(out)
