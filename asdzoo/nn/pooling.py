"""Frame preprocessing and temporal pooling of GenRep (paper 001 §2.5-2.6, after Wilkinghoff et al. 2026).

All poolings take ``frames [B, T, D]`` and a valid-frame ``mask [B, T]`` so padding never changes a result.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

RDP_EPS = 1e-8


def preprocess(frames: torch.Tensor, tau: float | None = None, rho: float | None = None) -> torch.Tensor:
    """Low-value hard threshold (values below ``tau`` -> 0) and spike suppression (values above ``rho`` -> tanh)."""
    x = frames
    if tau is not None:
        x = torch.where(x < tau, torch.zeros_like(x), x)
    if rho is not None:
        x = torch.where(x > rho, torch.tanh(x), x)
    return x


def _weights_mean(mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(torch.float64)
    return m / m.sum(dim=1, keepdim=True).clamp(min=1)


def rdp_weights(frames: torch.Tensor, mask: torch.Tensor, alpha: float) -> torch.Tensor:
    """Eq. 15: w_t ∝ (1 + d_t / max_u d_u)^alpha with d_t the distance of frame t to the temporal mean."""
    x = frames.to(torch.float64)
    mean = (x * _weights_mean(mask)[..., None]).sum(dim=1, keepdim=True)
    d = (x - mean).norm(dim=-1).masked_fill(~mask, 0.0)
    d_hat = d / (d.amax(dim=1, keepdim=True) + RDP_EPS)
    w = (1.0 + d_hat) ** alpha * mask
    return w / w.sum(dim=1, keepdim=True)


def _weighted_power_mean(x: torch.Tensor, w: torch.Tensor, p: float) -> torch.Tensor:
    """(Σ_t w_t max(0, x_t)^p)^(1/p), computed on x / max(x) so large p cannot overflow (exactly equal)."""
    x = x.to(torch.float64).clamp(min=0.0)
    scale = x.amax(dim=1, keepdim=True).clamp(min=1e-30)
    return scale[:, 0] * ((w[..., None] * (x / scale) ** p).sum(dim=1)) ** (1.0 / p)


def pool(
    frames: torch.Tensor, mask: torch.Tensor, method: str = "mean", p: float = 3.0, alpha: float = 1.0
) -> torch.Tensor:
    """``mean`` | ``gem`` (eq. 14) | ``rdp`` (eq. 15) | ``rdpgem`` (eq. 16) over valid frames -> ``[B, D]``."""
    if method == "mean":
        out = (frames.to(torch.float64) * _weights_mean(mask)[..., None]).sum(dim=1)
    elif method == "gem":
        out = _weighted_power_mean(frames, _weights_mean(mask), p)
    elif method == "rdp":
        out = (rdp_weights(frames, mask, alpha)[..., None] * frames.to(torch.float64)).sum(dim=1)
    elif method == "rdpgem":
        out = _weighted_power_mean(frames, rdp_weights(frames, mask, alpha), p)
    else:
        raise ValueError(f"unknown pooling {method!r}: choose mean, gem, rdp or rdpgem")
    return out.to(frames.dtype)


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1, eps=1e-12)
