"""What every Task 2 detector offers: fit on normal clips of one machine, score clips, decide."""
from __future__ import annotations

import numpy as np
import scipy.stats
import torch


def batches(waves: torch.Tensor, lengths: torch.Tensor | None, batch_size: int):
    """Yield ``(wave, lengths)`` slices of a ``[N, C, S]`` tensor."""
    for i in range(0, len(waves), batch_size):
        yield waves[i:i + batch_size], None if lengths is None else lengths[i:i + batch_size]


def decision_threshold(train_scores: np.ndarray, quantile: float = 0.9) -> float:
    """As the official baseline: the ``quantile`` point of a gamma distribution fitted to training scores
    (falls back to the empirical quantile when the fit is degenerate)."""
    s = np.asarray(train_scores, dtype=float)
    shift = s.min() - 1e-6 if s.min() <= 0 else 0.0
    try:
        shape, loc, scale = scipy.stats.gamma.fit(s - shift)
        thr = float(scipy.stats.gamma.ppf(quantile, shape, loc=loc, scale=scale)) + shift
        if np.isfinite(thr):
            return thr
    except (ValueError, RuntimeError, FloatingPointError):
        pass
    return float(np.quantile(s, quantile))
