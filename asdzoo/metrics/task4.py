"""The official DCASE 2026 Task 4 (S5) metrics: CAPI-SDRi and label accuracy.

Definitions follow ``nttcslab/dcase2026_task4_baseline`` @ 20e6992 (summarised in ``../shared/reference/capi_sdri``
and ``../shared/reference/s5_facts``):
- CAPI-SDRi (``s5capi_metric.py``, ``S5ClassAwareMetric(metricfunc='sdr')``): per mixture, every class present in the
  estimate or the reference (silence excluded) contributes entries. A class on one side only gives one 0 per source
  (false negatives / positives). Otherwise the same-class estimates and references are paired: every reference
  combination of size TP = min(n_est, n_ref) (outer loop) times every estimate permutation (inner loop); the pairing
  with the highest mean SNR wins (first one on ties; chosen by SNR, not SNRi); its entries are
  ``SNR(est, ref) - SNR(mixture, ref)``, then |n_est - n_ref| zeros. The mixture value is the mean of all entries,
  ``None`` when no label is present on either side; the dataset value is the mean over non-``None`` mixtures.
  "SDR" is torchmetrics' plain ``signal_noise_ratio`` (zero_mean False), on channel 0 of every signal.
- Label accuracy (``label_metric.py``), silence removed: mixture-level = % of mixtures whose label multisets are equal;
  source-level = sum TP / (sum TP + sum FP + sum FN) * 100 with multiset counts.
The per-class rows of :class:`S5Evaluation` are an asdzoo addition (the official code reports only the totals).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations, permutations

import torch
from torchmetrics.functional.audio import signal_noise_ratio

from asdzoo.data.s5 import LABEL_INDEX, LABELS, SILENCE


@dataclass(frozen=True)
class ClassScore:
    """One class of one mixture. ``snr`` / ``improvements`` hold the chosen pairs' SNR / SNRi, then one 0 per
    unmatched source; pair k matches estimate ``est_perm[k]`` to reference ``ref_perm[k]``, indices counted among
    this class's estimates / references in slot order (as the official ``_pi_metric`` reports them)."""

    label: str
    n_est: int
    n_ref: int
    snr: tuple[float, ...]
    improvements: tuple[float, ...]
    est_perm: tuple[int, ...] = ()
    ref_perm: tuple[int, ...] = ()

    @property
    def matched_improvements(self) -> tuple[float, ...]:
        return self.improvements[: len(self.est_perm)]


@dataclass(frozen=True)
class SampleScore:
    """CAPI-SDRi of one mixture and the per-class entries it averages."""

    value: float
    classes: dict[str, ClassScore]


@dataclass(frozen=True)
class LabelCount:
    """Multiset label matches of one class: TP = min(n_est, n_ref), FP / FN = the surplus on either side."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: LabelCount) -> LabelCount:
        return LabelCount(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)


def _check_labels(labels: Sequence[str]) -> None:
    unknown = [lb for lb in labels if lb not in LABEL_INDEX]
    if unknown:
        raise ValueError(f"unknown Task 4 labels {unknown}; expected one of {LABELS} or {SILENCE!r}")


def _channel0(x, ndim: int) -> torch.Tensor:
    """float32 like the official run; signals with a channel axis are reduced to channel 0 (as ``evaluate.py``)."""
    x = torch.as_tensor(x, dtype=torch.float32)
    return x[..., 0, :] if x.ndim == ndim + 1 else x


def _class_score(label: str, est: torch.Tensor, ref: torch.Tensor, mixture: torch.Tensor) -> ClassScore:
    n_est, n_ref = len(est), len(ref)
    n_tp = min(n_est, n_ref)
    padding = (0.0,) * abs(n_est - n_ref)
    if n_tp == 0:
        return ClassScore(label, n_est, n_ref, padding, padding)
    shape = (n_ref, n_est, est.shape[-1])
    pair_snr = signal_noise_ratio(est[None].expand(shape), ref[:, None].expand(shape))  # [n_ref, n_est]
    mixture_snr = signal_noise_ratio(mixture.expand_as(ref), ref)  # [n_ref]
    pairings = [(r, e) for r in combinations(range(n_ref), n_tp) for e in permutations(range(n_est), n_tp)]
    ref_idx = torch.tensor([r for r, _ in pairings])
    est_idx = torch.tensor([e for _, e in pairings])
    best = int(torch.argmax(pair_snr[ref_idx, est_idx].mean(dim=1)))  # first maximum, as the official argmax
    snr = pair_snr[ref_idx[best], est_idx[best]]
    improvement = snr - mixture_snr[ref_idx[best]]
    return ClassScore(
        label,
        n_est,
        n_ref,
        tuple(snr.tolist()) + padding,
        tuple(improvement.tolist()) + padding,
        pairings[best][1],
        pairings[best][0],
    )


def capi_sdri_sample(
    est_labels: Sequence[str],
    est_waves,
    ref_labels: Sequence[str],
    ref_waves,
    mixture,
) -> SampleScore | None:
    """CAPI-SDRi of one mixture, or ``None`` when neither side has a non-silence label.

    ``est_waves`` / ``ref_waves``: ``[n, T]`` (or ``[n, C, T]``), slot k carrying ``*_labels[k]``; ``mixture``:
    ``[T]`` (or ``[C, T]``). Only channel 0 is scored; waveforms of silence slots are ignored.
    """
    _check_labels([*est_labels, *ref_labels])
    est_waves, ref_waves, mixture = _channel0(est_waves, 2), _channel0(ref_waves, 2), _channel0(mixture, 1)
    if len(est_labels) != len(est_waves) or len(ref_labels) != len(ref_waves):
        raise ValueError(
            f"{len(est_labels)} / {len(ref_labels)} labels for {len(est_waves)} / {len(ref_waves)} waveforms"
        )
    present = sorted((set(est_labels) | set(ref_labels)) - {SILENCE}, key=LABEL_INDEX.__getitem__)
    if not present:
        return None
    classes = {
        c: _class_score(
            c,
            est_waves[[k for k, lb in enumerate(est_labels) if lb == c]],
            ref_waves[[k for k, lb in enumerate(ref_labels) if lb == c]],
            mixture,
        )
        for c in present
    }
    entries = [v for score in classes.values() for v in score.improvements]
    return SampleScore(sum(entries) / len(entries), classes)


def label_counts(est_labels: Sequence[str], ref_labels: Sequence[str]) -> dict[str, LabelCount]:
    """Per-class multiset TP / FP / FN of one mixture, silence removed."""
    _check_labels([*est_labels, *ref_labels])
    est = Counter(lb for lb in est_labels if lb != SILENCE)
    ref = Counter(lb for lb in ref_labels if lb != SILENCE)
    return {
        c: LabelCount(min(est[c], ref[c]), max(est[c] - ref[c], 0), max(ref[c] - est[c], 0))
        for c in sorted(est.keys() | ref.keys(), key=LABEL_INDEX.__getitem__)
    }


def label_accuracy(counts: Sequence[dict[str, LabelCount]]) -> tuple[float | None, float | None]:
    """(mixture-level, source-level) accuracy in % over per-mixture :func:`label_counts`; ``None`` if undefined."""
    if not counts:
        return None, None
    exact = sum(all(c.fp == c.fn == 0 for c in mixture.values()) for mixture in counts)
    total = sum((c for mixture in counts for c in mixture.values()), LabelCount())
    denominator = total.tp + total.fp + total.fn
    return 100.0 * exact / len(counts), (100.0 * total.tp / denominator if denominator else None)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


class S5Evaluation:
    """Accumulates mixtures (one :meth:`update` each) into the official totals plus a per-class table."""

    def __init__(self) -> None:
        self.samples: list[SampleScore | None] = []
        self.counts: list[dict[str, LabelCount]] = []

    def update(
        self,
        est_labels: Sequence[str],
        est_waves,
        ref_labels: Sequence[str],
        ref_waves,
        mixture,
    ) -> SampleScore | None:
        sample = capi_sdri_sample(est_labels, est_waves, ref_labels, ref_waves, mixture)
        self.samples.append(sample)
        self.counts.append(label_counts(est_labels, ref_labels))
        return sample

    def per_class(self) -> list[dict]:
        """One row per class seen: label counts, the class's mean CAPI-SDRi entry (zeros for FN/FP included) and
        the mean SNRi of its matched pairs only (``None`` where a class has no such entry)."""
        scores = [s.classes[c] for s in self.samples if s is not None for c in s.classes]
        rows = []
        for label in LABELS:
            mine = [s for s in scores if s.label == label]
            if not mine:
                continue
            count = sum((m.get(label, LabelCount()) for m in self.counts), LabelCount())
            rows.append(
                {
                    "label": label,
                    "n_ref": sum(s.n_ref for s in mine),
                    "n_est": sum(s.n_est for s in mine),
                    "tp": count.tp,
                    "fp": count.fp,
                    "fn": count.fn,
                    "capi_sdri": _mean([v for s in mine for v in s.improvements]),
                    "sdri_matched": _mean([v for s in mine for v in s.matched_improvements]),
                }
            )
        return rows

    def compute(self) -> dict:
        values = [s.value for s in self.samples if s is not None]
        accuracy_mixture, accuracy_source = label_accuracy(self.counts)
        return {
            "n_mixtures": len(self.samples),
            "n_scored": len(values),
            "capi_sdri": _mean(values),
            "accuracy_mixture": accuracy_mixture,
            "accuracy_source": accuracy_source,
            "per_class": self.per_class(),
        }
