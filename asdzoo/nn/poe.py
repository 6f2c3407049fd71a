"""Anomaly objectives of paper 004 §2.5: the momentum-updated SVDD-inspired centre (eq. 8), the pseudo outlier
exposure loss (eq. 9) and the OC-SVDD loss of the fine-tuning ablation (Table 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from asdzoo.nn.distributed import gather


class MomentumCentre(nn.Module):
    """The centre ``c`` of the normal embeddings, a moving average of batch means (buffers, saved with the model).

    The first :meth:`update` sets ``c = mean(z_normal)``; later ones apply ``c ← μ·c + (1 − μ)·mean(z_normal)`` with
    ``μ = momentum`` (0.99, §3.2). Eq. 8 as printed, ``c ← (1 − μ)·c + μ·ẑ_normal``, would put 0.99 on the new batch
    and make ``c`` almost the last batch's mean; "updated using momentum μ" means the momentum is on the old centre,
    which is what we keep. Updates run under ``no_grad`` on detached embeddings: ``c`` is never learned by gradient.
    """

    def __init__(self, dim: int, momentum: float = 0.99):
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.register_buffer("centre", torch.zeros(dim))
        self.register_buffer("initialised", torch.tensor(False))

    @torch.no_grad()
    def update(self, z_normal: torch.Tensor) -> None:
        """One update from a batch of normal embeddings ``[B, D]`` (under DDP: every process's batch, so that ``c``
        is the one-process centre); an empty batch leaves ``c`` unchanged."""
        z_normal = gather(z_normal)
        if len(z_normal) == 0:
            return
        mean = z_normal.detach().to(self.centre).mean(dim=0)
        if bool(self.initialised):
            self.centre.mul_(self.momentum).add_(mean, alpha=1.0 - self.momentum)
        else:
            self.centre.copy_(mean)
            self.initialised.fill_(True)


def _group_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x``, 0 for an empty group (still attached to the graph, so ``backward`` works either way)."""
    return x.sum() / max(len(x), 1)


def poe_loss(z: torch.Tensor, is_outlier: torch.Tensor, centre: torch.Tensor, margin: float) -> torch.Tensor:
    """Eq. 9: ``mean_{normals}(1 − cos(z, c)) + mean_{outliers} max(0, cos(z, c) − δ)`` with ``δ = margin``.

    ``is_outlier [B]`` (True = pseudo-outlier); an empty group contributes 0. ``c`` is detached (eq. 8 updates it).
    """
    is_outlier = is_outlier.bool()
    cos = F.cosine_similarity(z, centre.detach().to(z)[None], dim=-1)
    return _group_mean(1 - cos[~is_outlier]) + _group_mean(F.relu(cos[is_outlier] - margin))


def oc_svdd_loss(z_normal: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """The ablation's OC-SVDD objective on normal embeddings only (Ruff et al., ICML 2018, on the unit sphere):
    ``mean ‖z/‖z‖ − c/‖c‖‖²``. The paper does not define it; both ``z`` and ``c`` are L2-normalised so the loss has
    the scale of eq. 9 and equals ``2·(1 − cos(z, c))``: eq. 9's normal term without the outlier term, which is
    exactly the difference the ablation rows "pOE" vs "OC-SVDD" isolate. 0 for an empty batch; ``c`` is detached."""
    diff = F.normalize(z_normal, dim=-1) - F.normalize(centre.detach().to(z_normal), dim=-1)[None]
    return _group_mean(diff.pow(2).sum(dim=-1))
