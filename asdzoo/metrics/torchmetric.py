"""The official per-section numbers as a torchmetrics ``Metric`` for validation inside Lightning."""

from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from asdzoo.metrics.task2 import official_score, section_metrics


class Task2Score(Metric):
    """Accumulates scores, labels (1 = anomaly) and domains (0 source, 1 target) of one section;
    ``compute()`` returns AUC(source), AUC(target), pAUC and their harmonic mean."""

    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")
        self.add_state("domains", default=[], dist_reduce_fx="cat")

    def update(self, scores: torch.Tensor, labels: torch.Tensor, domains: torch.Tensor) -> None:
        self.scores.append(scores.detach().float().flatten())
        self.labels.append(labels.detach().long().flatten())
        self.domains.append(domains.detach().long().flatten())

    def compute(self) -> dict[str, torch.Tensor]:
        s, y, d = (dim_zero_cat(x).cpu().numpy() for x in (self.scores, self.labels, self.domains))
        v = section_metrics(y, s, d)
        trip = [v["AUC (source)"], v["AUC (target)"], v["pAUC"]]
        out = {"auc_source": trip[0], "auc_target": trip[1], "pauc": trip[2], "hmean": official_score(trip)}
        return {k: torch.tensor(val) for k, val in out.items()}
