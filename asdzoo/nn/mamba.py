"""Mamba mixer (with ViM/AuM bidirectional variants), RMSNorm and the fused add+norm residual Block.

Written from the computation stated in ../shared/reference/aum/README.md (AuM's vendored, ViM-patched
``mamba_simple.py`` and ``mamba_models.py``); parameter names are the official ones so AuM checkpoints load strictly.

``bimamba_type``:

- ``"none"``: forward scan only.
- ``"v1"`` (AuM "Fo-Bi"): one causal conv / x_proj / dt_proj; the backward scan re-uses their outputs, flipped in time,
  with its own ``A_b`` and the shared ``D``; the two outputs are **summed** (ViM's ``bimamba_inner_fn``; the
  official code applies ``if_devide_out`` only to v2).
- ``"v2"`` (AuM "Bi-Bi"): the backward direction has its own conv1d_b / x_proj_b / dt_proj_b / A_b_log / D_b and runs
  on the time-flipped in_proj output; outputs averaged when ``if_devide_out`` (AuM's default), else summed.

``gated_fusion`` (not in official AuM, which averages): the paper's §2.2 fusion ``y = g * y_f + (1 - g) * y_b`` with
``g = sigmoid(gate_proj(x_f))``, x_f the forward conv-generator output (after SiLU), one gate per channel.
``gate_proj`` is zero-initialised, so g = 0.5 at the start and a v2 model starts exactly as AuM's average; it exists
only when the option is on, so official weights still load strictly without it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from asdzoo.nn.selective_scan import causal_conv1d, selective_scan

BIMAMBA_TYPES = ("none", "v1", "v2")


def drop_path(h: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth per sample (timm's DropPath, as AuM uses it), identity at eval or rate 0."""
    if not training or rate == 0.0:
        return h
    keep = 1.0 - rate
    mask = h.new_empty(h.shape[0], *([1] * (h.dim() - 1))).bernoulli_(keep)
    return h * mask / keep


class RMSNorm(nn.Module):
    """``y = x / sqrt(mean(x^2) + eps) * weight`` computed in float32 (mamba-ssm ``rms_norm_ref(upcast=True)``)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()
        return y.to(x.dtype)


def conv_generator(xz: torch.Tensor, conv1d: nn.Conv1d) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``xz (B, 2*d_inner, L)`` into (x, z) and run the causal depthwise conv + SiLU on x."""
    x, z = xz.chunk(2, dim=1)
    return causal_conv1d(x, conv1d.weight, conv1d.bias, "silu"), z


def scan_direction(x, z, x_proj: nn.Linear, dt_proj: nn.Linear, A_log, D, d_state: int) -> torch.Tensor:
    """x_proj -> (dt, B, C); dt_proj without bias (the bias is the scan's delta_bias, then softplus) -> selective
    scan gated by silu(z): mamba-ssm's ``mamba_inner_ref`` without the output projection."""
    dt_rank = dt_proj.weight.shape[1]
    x_dbl = F.linear(x.transpose(1, 2), x_proj.weight)  # [B, L, dt_rank + 2 n]
    dt, B, C = torch.split(x_dbl, [dt_rank, d_state, d_state], dim=-1)
    delta = F.linear(dt, dt_proj.weight).transpose(1, 2)  # [B, d_inner, L]
    A = -torch.exp(A_log.float())
    return selective_scan(
        x,
        delta,
        A,
        B.transpose(1, 2),
        C.transpose(1, 2),
        D.float(),
        z,
        delta_bias=dt_proj.bias.float(),
        delta_softplus=True,
    )


class Mamba(nn.Module):
    """The Mamba mixer ``(B, L, d_model) -> (B, L, d_model)``; see the module docstring for the variants."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        bimamba_type: str = "v2",
        if_devide_out: bool = True,
        gated_fusion: bool = False,
    ):
        super().__init__()
        if bimamba_type not in BIMAMBA_TYPES:
            raise ValueError(f"bimamba_type must be one of {BIMAMBA_TYPES}, got {bimamba_type!r}")
        if gated_fusion and bimamba_type == "none":
            raise ValueError("gated_fusion needs a backward direction (bimamba_type 'v1' or 'v2')")
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.bimamba_type, self.if_devide_out, self.gated_fusion = bimamba_type, if_devide_out, gated_fusion
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d, self.x_proj, self.dt_proj = self._generator(dt_min, dt_max, dt_init_floor)
        self.A_log = nn.Parameter(self._a_log_init())
        self.D = nn.Parameter(torch.ones(self.d_inner))
        if bimamba_type in ("v1", "v2"):
            self.A_b_log = nn.Parameter(self._a_log_init())
        if bimamba_type == "v2":
            self.conv1d_b, self.x_proj_b, self.dt_proj_b = self._generator(dt_min, dt_max, dt_init_floor)
            self.D_b = nn.Parameter(torch.ones(self.d_inner))
        if gated_fusion:
            self.gate_proj = nn.Linear(self.d_inner, self.d_inner)
            nn.init.zeros_(self.gate_proj.weight)
            nn.init.zeros_(self.gate_proj.bias)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def _a_log_init(self) -> torch.Tensor:
        """S4D-real init: A = -(1..d_state) per channel (Mamba)."""
        return torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1)

    def _generator(self, dt_min, dt_max, floor):
        """conv1d, x_proj, dt_proj of one direction, dt_proj initialised so softplus(bias) is in [dt_min, dt_max]."""
        conv = nn.Conv1d(self.d_inner, self.d_inner, self.d_conv, groups=self.d_inner, padding=self.d_conv - 1)
        x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * self.d_state, bias=False)
        dt_proj = nn.Linear(self.dt_rank, self.d_inner)
        std = self.dt_rank**-0.5
        nn.init.uniform_(dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=floor)
        with torch.no_grad():
            dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        return conv, x_proj, dt_proj

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        xz = self.in_proj(h).transpose(1, 2)  # [B, 2 d_inner, L]
        x_f, z = conv_generator(xz, self.conv1d)
        y_f = scan_direction(x_f, z, self.x_proj, self.dt_proj, self.A_log, self.D, self.d_state)
        if self.bimamba_type == "none":
            return self.out_proj(y_f.transpose(1, 2))
        if self.bimamba_type == "v1":  # backward scan over the same generator outputs, flipped
            y_b = scan_direction(
                x_f.flip(-1), z.flip(-1), self.x_proj, self.dt_proj, self.A_b_log, self.D, self.d_state
            ).flip(-1)
        else:
            x_b, z_b = conv_generator(xz.flip(-1), self.conv1d_b)
            y_b = scan_direction(x_b, z_b, self.x_proj_b, self.dt_proj_b, self.A_b_log, self.D_b, self.d_state).flip(-1)
        return self.out_proj(self._fuse(y_f, y_b, x_f).transpose(1, 2))

    def _fuse(self, y_f: torch.Tensor, y_b: torch.Tensor, x_f: torch.Tensor) -> torch.Tensor:
        if self.gated_fusion:
            g = torch.sigmoid(self.gate_proj(x_f.transpose(1, 2))).transpose(1, 2)
            return g * y_f + (1 - g) * y_b
        if self.bimamba_type == "v2" and self.if_devide_out:
            return (y_f + y_b) / 2
        return y_f + y_b


class Block(nn.Module):
    """AuM/ViM residual block, fused-add-norm form: ``residual = drop_path(h_prev) + residual_prev`` (kept in
    float32), ``h = mixer(RMSNorm(residual))``; returns ``(h, residual)``. The first block gets ``residual=None``."""

    def __init__(self, dim: int, mixer: Mamba, drop_path: float = 0.0, eps: float = 1e-5):
        super().__init__()
        self.mixer = mixer
        self.norm = RMSNorm(dim, eps)
        self.drop_path = drop_path

    def forward(self, h: torch.Tensor, residual: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if residual is None:
            residual = h.float()
        else:
            residual = residual + drop_path(h, self.drop_path, self.training).float()
        return self.mixer(self.norm(residual.to(self.norm.weight.dtype))), residual
