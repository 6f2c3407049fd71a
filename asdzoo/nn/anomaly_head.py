"""The multi-level anomaly head of paper 004 §2.3 (eq. 4-6): a softmax-weighted fusion of pooled intermediate
encoder features added to the final-layer feature, L2-normalised, then a two-layer MLP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MultiLevelAnomalyHead(nn.Module):
    """``forward(h0 [B, D], levels: M tensors [B, D]) -> z [B, out_dim]``.

    Eq. 4: ``ĥ = Σ_m β_m h^(m)``, ``β = softmax(α)`` with ``α ∈ R^M`` learnable, initialised to zeros (equal weights).
    Eq. 5: ``h̃ = (h^(0) + ĥ) / ‖h^(0) + ĥ‖₂``.
    Eq. 6, in the paper's printed order: ``z = W2 ReLU(BN(Dropout_p(W1 h̃ + b1))) + b2``.
    """

    def __init__(self, dim: int, num_levels: int, hidden: int = 256, out_dim: int = 128, dropout: float = 0.1):
        super().__init__()
        if num_levels < 1:
            raise ValueError(f"num_levels must be >= 1 (eq. 4 fuses M >= 1 intermediate features), got {num_levels}")
        self.alpha = nn.Parameter(torch.zeros(num_levels))
        self.fc1 = nn.Linear(dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.bn = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, out_dim)

    @property
    def beta(self) -> torch.Tensor:
        """Eq. 4's fusion weights ``softmax(α)`` ``[M]``."""
        return self.alpha.softmax(dim=0)

    def fuse(self, h0: torch.Tensor, levels: list[torch.Tensor]) -> torch.Tensor:
        """Eq. 4-5: the unit-norm fused feature ``h̃`` ``[B, D]``."""
        if len(levels) != len(self.alpha):
            raise ValueError(f"expected {len(self.alpha)} intermediate features, got {len(levels)}")
        h_hat = torch.einsum("m,mbd->bd", self.beta.to(h0.dtype), torch.stack(levels))
        return F.normalize(h0 + h_hat, dim=-1)

    def forward(self, h0: torch.Tensor, levels: list[torch.Tensor]) -> torch.Tensor:
        h = self.fuse(h0, levels)
        return self.fc2(F.relu(self.bn(self.dropout(self.fc1(h)))))  # eq. 6
