"""Gradient reversal layer (Ganin & Lempitsky, ICML 2015), used by paper 004 §2.5 (eq. 10, Fig. 3): the domain
classifier sees the embedding unchanged, while the feature extractor receives the classifier's gradient times -lam,
so minimising the total loss makes the embedding *worse* for domain classification."""

from __future__ import annotations

import torch
from torch import nn


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lam: float) -> torch.Tensor:
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.lam * grad, None


def gradient_reversal(x: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    """Identity forward; backward multiplies the incoming gradient by ``-lam`` (no gradient for ``lam``)."""
    return _GradientReversal.apply(x, float(lam))


class GradientReversal(nn.Module):
    """Module form of :func:`gradient_reversal`; ``lam`` is a plain attribute so a schedule may change it."""

    def __init__(self, lam: float = 1.0):
        super().__init__()
        self.lam = lam

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gradient_reversal(x, self.lam)

    def extra_repr(self) -> str:
        return f"lam={self.lam}"
