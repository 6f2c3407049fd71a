"""Mamba's selective scan and causal depthwise conv in pure torch, with the mamba-ssm CUDA kernel when it is there.

Semantics and layouts are those of mamba-ssm's ``selective_scan_fn`` / ``selective_scan_ref`` (per
../shared/reference/aum/README.md): ``delta = softplus(delta + delta_bias)``; ``x_t = exp(delta_t A) x_{t-1} +
delta_t B_t u_t``; ``y_t = <x_t, C_t>``; ``out = (y + D u) * silu(z)``; zero initial state; float32 inside.
u, delta, z: ``(batch, dim, L)``; A: ``(dim, d_state)`` real; B, C: ``(dim, d_state)`` (input-independent) or
``(batch, d_state, L)`` (input-dependent).

On CPU (or without mamba-ssm) the scan runs in chunks, all chunks at once, with the state carried from chunk to chunk
by a loop over chunks (never over time steps). Inside a chunk, in log space: ``S_t = cumsum(delta A)`` (the log
decay from the chunk start, <= 0 since A < 0) and ``x_t = exp(S_t) * cumsum_s(exp(-S_s) delta_s B_s u_s)``. That is
exact algebra, and it cannot overflow as long as ``-S`` stays below ``MAX_LOG_RANGE`` over a chunk; the chunk is
halved until it does, and when decays are too strong even for short chunks the associative form
``(a1, x1) . (a2, x2) = (a1 a2, a2 x1 + x2)`` is solved by recursive doubling (only factors <= 1 multiplied: safe
for any decay, about 3x slower). mamba-ssm / Triton are imported lazily, only for CUDA tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CHUNK = 64
MIN_CUMSUM_CHUNK = 8
MAX_LOG_RANGE = 60.0  # exp(60) ~ 1e26: far from float32 overflow even times large inputs
KERNEL_DEVICES = ("cuda",)  # device types whose tensors go to mamba-ssm's kernel (tests point it at a stand-in)


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
    """mamba-ssm's ``selective_scan_fn``: the CUDA kernel for CUDA tensors when mamba-ssm imports, else the chunked
    pure-torch scan. Returns ``out`` (dtype of ``u``) or ``(out, last_state)``."""
    if u.device.type in KERNEL_DEVICES:
        kernel = _kernel()
        if kernel is not None:
            return kernel(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    return _scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, _chunked_states, chunk)


def selective_scan_sequential(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False
):
    """The definition: one Python step per time step (tests and benchmarks compare the chunked scan to it)."""
    return _scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, _sequential_states, None)


def _scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, states_fn, chunk):
    """Shared pre/post-processing around a state solver ``states_fn(log_decay, drive, chunk) -> x [b, d, n, L]``."""
    if A.is_complex():
        raise ValueError("selective_scan: complex A is not supported (AuM and Mamba-1 use real A)")
    dtype_in = u.dtype
    ct = torch.promote_types(dtype_in, torch.float32)  # float32 inside (as the kernel), float64 stays float64
    u, delta, A = u.to(ct), delta.to(ct), A.to(ct)
    if delta_bias is not None:
        delta = delta + delta_bias.to(ct)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    length = u.shape[-1]
    if chunk:  # pad the small inputs, not the [b, d, n, L] ones: delta 0 means decay 1 and drive 0, a no-op step
        pad = -length % chunk
        delta, u_p = F.pad(delta, (0, pad)), F.pad(u, (0, pad))
        B, C = (F.pad(M, (0, pad)) if M.dim() == 3 else M for M in (B, C))
    else:
        u_p = u
    log_decay = delta[:, :, None] * A[None, :, :, None]  # [b, d, n, L], <= 0 because A < 0
    drive = (delta * u_p)[:, :, None] * _per_step(B, ct)  # delta_t B_t u_t
    x = states_fn(log_decay, drive, _safe_chunk(delta, A, chunk) if chunk else None)
    y = (x * _per_step(C, ct)).sum(2)[..., :length]
    out = y if D is None else y + u * D.to(ct)[:, None]
    if z is not None:
        out = out * F.silu(z.to(ct))
    out = out.to(dtype_in)
    return (out, x[..., length - 1]) if return_last_state else out


def _safe_chunk(delta: torch.Tensor, A: torch.Tensor, chunk: int) -> int:
    """Largest power-of-two chunk (<= ``chunk``) whose log decay cannot exceed MAX_LOG_RANGE, from a bound on the
    per-step decay (max delta per channel times max |A|): computed on the small tensors, no extra pass over the
    big ones. Below MIN_CUMSUM_CHUNK the exact per-chunk check in :func:`_chunked_states` decides."""
    step = (delta.amax(dim=(0, 2)) * A.abs().amax(dim=1)).max().item()
    size = chunk
    while size > MIN_CUMSUM_CHUNK and size * step > MAX_LOG_RANGE:
        size //= 2
    return size


def _per_step(M: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """B or C broadcastable to ``[b, d, n, L]``: ``(d, n)`` is the same at every step, ``(b, n, L)`` varies."""
    if M.dim() == 2:
        return M.to(dtype)[None, :, :, None]
    if M.dim() == 3:
        return M.to(dtype)[:, None]
    raise ValueError(f"selective_scan: B/C must be (dim, d_state) or (batch, d_state, L), got {tuple(M.shape)}")


def _sequential_states(log_decay: torch.Tensor, drive: torch.Tensor, chunk=None) -> torch.Tensor:
    decay = log_decay.exp()
    x = torch.zeros_like(drive[..., 0])
    out = []
    for t in range(drive.shape[-1]):
        x = decay[..., t] * x + drive[..., t]
        out.append(x)
    return torch.stack(out, dim=-1)


def _chunked_states(log_decay: torch.Tensor, drive: torch.Tensor, chunk: int) -> torch.Tensor:
    """All states ``[b, d, n, L]`` (L a multiple of ``chunk``, a power of two): every chunk solved at once (time split
    into ``[n_chunks, size]``), then the state carried from chunk to chunk. The cumulative-sum form is used with the
    largest chunk size (``chunk``, halved as needed, at least ``MIN_CUMSUM_CHUNK``) over which no decay falls below
    ``exp(-MAX_LOG_RANGE)``; when even that fails, recursive doubling, which is safe for any decay."""
    size = chunk
    while size >= MIN_CUMSUM_CHUNK:
        log_cum = _chunks(log_decay, size).cumsum(-1)  # S_t: log decay from the chunk start to t
        if log_cum[..., -1].min().item() >= -MAX_LOG_RANGE:
            return _cumsum_states(log_cum, _chunks(drive, size))
        size //= 2
    x, from_start = _doubling(_chunks(log_decay, chunk).exp(), _chunks(drive, chunk))
    incoming = _carry(x[..., -1], from_start[..., -1])
    return (x + from_start * incoming[..., None]).flatten(-2)


def _cumsum_states(log_cum: torch.Tensor, drive: torch.Tensor) -> torch.Tensor:
    """``x_t = exp(S_t) (carry_in + sum_{s<=t} exp(-S_s) drive_s)`` per chunk, exponents within +-MAX_LOG_RANGE."""
    sums = (drive * torch.exp(-log_cum)).cumsum(-1)
    from_start = torch.exp(log_cum)
    incoming = _carry(from_start[..., -1] * sums[..., -1], from_start[..., -1])
    return (from_start * (sums + incoming[..., None])).flatten(-2)


def _carry(end_state: torch.Tensor, end_decay: torch.Tensor) -> torch.Tensor:
    """State entering each chunk ``[..., n_chunks]`` from each chunk's zero-start end state and total decay: a loop
    over chunks on ``[b, d, n]`` tensors (L / chunk steps), never over time steps."""
    carry, incoming = torch.zeros_like(end_state[..., 0]), []
    for c in range(end_state.shape[-1]):
        incoming.append(carry)
        carry = end_state[..., c] + end_decay[..., c] * carry
    return torch.stack(incoming, dim=-1)


def _chunks(t: torch.Tensor, size: int) -> torch.Tensor:
    """``[..., L] -> [..., L / size, size]`` (a view; L is a multiple of size)."""
    return t.reshape(*t.shape[:-1], -1, size)


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
