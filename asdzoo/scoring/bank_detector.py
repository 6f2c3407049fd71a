"""kNN memory banks over clip embeddings as a Task 2 detector: any system that can embed a clip composes it."""

from __future__ import annotations

import numpy as np
import torch

from asdzoo.scoring.knn import KnnBackend


class BankDetector:
    """kNN memory banks over clip embeddings, one per branch (GenRep's soft-mask methods have three).

    Subclasses provide ``embed(wave, lengths) -> {branch: [B, D]}``, ``backend_cfg`` and, when there are several
    branches, ``combine_branches``. Training scores are leave-one-out on the banks (thresholds, Z alignment).
    """

    _fitted: dict | None = None

    def combine_branches(self, per_branch: dict[str, np.ndarray]) -> np.ndarray:
        if list(per_branch) != ["main"]:
            raise ValueError(f"{type(self).__name__} has branches {list(per_branch)} but no rule to combine them")
        return per_branch["main"]

    def fit_embeddings(self, emb: dict[str, torch.Tensor], domains):
        domains = np.asarray(torch.as_tensor(domains).cpu())
        self._fitted = {"domains": domains, "embeddings": {b: e.float().cpu().numpy() for b, e in emb.items()}}
        self._backends = {b: KnnBackend(self.backend_cfg, e, domains) for b, e in self._fitted["embeddings"].items()}
        self._train_scores = {b: k.train_scores() for b, k in self._backends.items()}
        return self

    def fit(self, waves: torch.Tensor, domains, lengths: torch.Tensor | None = None):
        """Normal training clips ``[N, 2, S]`` of one machine, with domains (0 source, 1 target)."""
        return self.fit_embeddings(self.embed(waves, lengths), domains)

    def branch_scores(self, emb: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        if self._fitted is None:
            raise RuntimeError(f"{type(self).__name__}.score before fit: call fit(normal_clips, domains) first")
        return {b: self._backends[b].score(e.float().cpu().numpy()) for b, e in emb.items()}

    def score_embeddings(self, emb: dict[str, torch.Tensor]) -> np.ndarray:
        return self.combine_branches(self.branch_scores(emb))

    def score(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Anomaly scores ``[B]`` (higher = more anomalous)."""
        return torch.from_numpy(np.asarray(self.score_embeddings(self.embed(wave, lengths)), dtype=np.float64))

    def train_scores(self) -> np.ndarray:
        """Leave-one-out scores of the training clips, combined like test scores (for thresholds)."""
        return self.combine_branches(self._train_scores)

    def fitted_state(self) -> dict[str, torch.Tensor]:
        if self._fitted is None:
            return {}
        state = {"domains": torch.as_tensor(self._fitted["domains"])}
        state.update({f"bank.{b}": torch.from_numpy(e) for b, e in self._fitted["embeddings"].items()})
        return state

    def load_fitted_state(self, state: dict[str, torch.Tensor]) -> None:
        emb = {k.split(".", 1)[1]: v for k, v in state.items() if k.startswith("bank.")}
        self.fit_embeddings(emb, state["domains"])
