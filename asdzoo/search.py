"""``asdzoo search``: GenRep's configuration search on one or several dev roots (paper 001 §2.5-2.8, Table 2).

With several roots (presets and seeds of the built-in suite, or real dev sets) every configuration is scored on
each, and configurations are ranked by their worst official score, the rule by which zoo defaults are chosen: a
default must hold up on data it was not tuned on, and the mean hides a set where it breaks.

Staged, as in the paper: (1) input method x preprocessing x pooling with the reference backend
(cosine, k=1, raw); (2) the backend grid of Table 2 for the best ``--top`` stage-1 configurations.
``--full`` crosses everything instead. Encoder frames are computed once per clip and view (and cached
on disk), so the whole search costs one embedding pass.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from asdzoo.metrics.task2 import official_score, section_metrics
from asdzoo.scoring.fusion import fuse
from asdzoo.scoring.knn import BackendConfig
from asdzoo.systems.genrep import INPUT_METHODS, GenRep, PoolingConfig, views_for
from asdzoo.tasks.task2 import cached_frames, frame_cache_for, load_machine

PREPROCESSING = [(None, None), (None, 0.2), (None, 0.3), (None, 0.4), (0.10, 0.3), (0.15, 0.3)]
# The thresholds above are on activation values (paper 001 §2.4); log-mel frames are dB levels far above them, so
# every value would be tanh-squashed to 1 and every clip would get the same embedding (all scores tied, AUC 0.5).
NO_PREPROCESSING = {"logmel"}
POOLINGS = (
    [dict(method="mean")]
    + [dict(method="gem", p=p) for p in (1, 3, 9)]
    + [dict(method="rdp", alpha=a) for a in (1, 9, 16, 19, 20)]
    + [dict(method="rdpgem", alpha=a, p=3) for a in (1, 9)]
)
REFERENCE_BACKEND = dict(metric="cosine", k=1, backend="raw")


LDN_NEIGHBORS = (1, 4)  # LDN's density neighbourhood K as the public LDN/DLDN implementations use it


def backend_grid() -> list[dict]:
    """Table 2, with LDN's K searched too: the LDN backends appear once per K of ``LDN_NEIGHBORS``."""
    metrics = ("euclidean", "cosine")
    single = [dict(metric=m, k=k, backend="raw") for m in metrics for k in (1, 3, 5, 10, 20)]
    single += [
        dict(metric=m, k=k, backend="ldn", ldn_neighbors=n)
        for m in metrics
        for k in (1, 3, 5, 10, 20)
        for n in LDN_NEIGHBORS
    ]
    domain = [dict(metric=m, k=1, backend="domain_z") for m in metrics]
    domain += [dict(metric=m, k=1, backend="dldn", ldn_neighbors=n) for m in metrics for n in LDN_NEIGHBORS]
    domain += [
        dict(metric=m, k=1, backend="wdbldn", target_weight=w, ldn_neighbors=n)
        for m in metrics
        for w in (0.5, 2.0)
        for n in LDN_NEIGHBORS
    ]
    return single + domain


@dataclass
class Candidate:
    encoder: str
    input_method: str
    pooling: dict
    backend: dict
    score: float = float("nan")  # worst official score over the roots (the ranking key)
    per_root: list = field(default_factory=list)  # official score on each root
    test_scores: dict = field(default_factory=dict)  # (root index, machine) -> np.ndarray
    train_scores: dict = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return float(np.mean(self.per_root))

    @property
    def label(self) -> str:
        pooling, backend = PoolingConfig(**self.pooling).label, BackendConfig(**self.backend).label
        return f"{self.encoder} | {self.input_method} | {pooling} | {backend}"

    def genrep_kwargs(self) -> dict:
        return dict(encoder=self.encoder, input_method=self.input_method, pooling=self.pooling, backend=self.backend)


class SearchData:
    """Frames of every view of every clip, per machine, for one encoder."""

    def __init__(self, root, encoder: str, layer=None, cache_root=None, machines=None, progress=True):
        from asdzoo.data.task2 import list_machines

        self.encoder = encoder
        self.machines = machines or list_machines(root)
        self.data = {m: load_machine(root, m) for m in self.machines}
        self.frames: dict = {}
        self.base = GenRep(encoder=encoder, layer=layer)  # one frozen encoder shared by every configuration
        for method in INPUT_METHODS:
            model = self.base.configured(self.base.config["pooling"], self.base.config["backend"], method)
            cache = frame_cache_for(model, cache_root)
            for m, d in self.data.items():
                if d.channels < 2 and method != "near_only":
                    continue
                for split, clips in (("train", d.train), ("test", d.test)):
                    todo = [v for v in views_for(method) if (m, split, self._view_key(method, v)) not in self.frames]
                    if not todo:
                        continue
                    out = cached_frames(
                        model,
                        clips,
                        d.channels,
                        tuple(todo),
                        cache,
                        progress=progress,
                        desc=f"{encoder} {method} {m}/{split}",
                    )
                    for v, fm in out.items():
                        self.frames[(m, split, self._view_key(method, v))] = fm

    @staticmethod
    def _view_key(method: str, view: str) -> str:
        return f"enh:{method}" if view == "enh" else view

    def methods(self) -> list[str]:
        two = all(d.channels == 2 for d in self.data.values())
        return list(INPUT_METHODS) if two else ["near_only"]

    def machine_frames(self, machine: str, split: str, method: str) -> dict:
        return {v: self.frames[(machine, split, self._view_key(method, v))] for v in views_for(method)}

    def triplets(self, cand: Candidate, root_index: int) -> list[float]:
        """AUC(s), AUC(t), pAUC of every machine for one configuration; keeps its scores for fusion."""
        model = self.base.configured(cand.pooling, cand.backend, cand.input_method)
        trip = []
        for m, d in self.data.items():
            dom = np.array([int(c.domain == "target") for c in d.train])
            model.fit_frames(self.machine_frames(m, "train", cand.input_method), dom)
            s = model.score_frames(self.machine_frames(m, "test", cand.input_method))
            cand.test_scores[root_index, m], cand.train_scores[root_index, m] = s, model.train_scores()
            trip += _triplet(d, s)
        return trip


def evaluate(cand: Candidate, roots: list[SearchData]) -> Candidate:
    """Official score of ``cand`` on every root; ``cand.score`` is the worst of them."""
    cand.per_root = [official_score(sd.triplets(cand, i)) for i, sd in enumerate(roots)]
    cand.score = min(cand.per_root)
    return cand


def _triplet(d, scores) -> list[float]:
    y = np.array([int(c.label == "anomaly") for c in d.test])
    dom = np.array([int(c.domain == "target") for c in d.test])
    v = section_metrics(y, scores, dom)
    return [v["AUC (source)"], v["AUC (target)"], v["pAUC"]]


def run_search(roots: list[SearchData], top: int = 3, full: bool = False, methods=None, log=print) -> list[Candidate]:
    """Every configuration of one encoder scored on every root (the same encoder in each ``SearchData``), best
    worst-case first."""
    encoder = roots[0].encoder
    pre_options = [(None, None)] if encoder in NO_PREPROCESSING else PREPROCESSING
    methods = methods or sorted(set.intersection(*(set(sd.methods()) for sd in roots)), key=list(INPUT_METHODS).index)
    if full:
        grid = itertools.product(methods, pre_options, POOLINGS, backend_grid())
        return sorted((evaluate(_cand(encoder, m, pre, pl, be), roots) for m, pre, pl, be in grid), key=_rank)
    stage1 = sorted(
        (
            evaluate(_cand(encoder, m, pre, pl, REFERENCE_BACKEND), roots)
            for m, pre, pl in itertools.product(methods, pre_options, POOLINGS)
        ),
        key=_rank,
    )
    log(f"stage 1 ({len(stage1)} configurations): best worst-case {100 * stage1[0].score:.2f}  {stage1[0].label}")
    stage2 = [
        evaluate(Candidate(c.encoder, c.input_method, c.pooling, be), roots)
        for c in stage1[:top]
        for be in backend_grid()
    ]
    return sorted(stage1 + stage2, key=_rank)


def _rank(c: Candidate) -> tuple[float, float]:
    return (-c.score, -c.mean)


def _cand(encoder, method, pre, pooling, backend) -> Candidate:
    return Candidate(encoder, method, {**pooling, "tau": pre[0], "rho": pre[1]}, dict(backend))


def fusion_members(cands: list[Candidate], n: int) -> list[Candidate]:
    """The best configuration of each of the ``n`` best distinct embeddings (encoder, input method, pooling):
    fusing two backends of one embedding adds little, and a configuration whose scores equal a chosen one's
    (GeM p=1 and mean on non-negative frames) adds nothing."""
    chosen, seen = [], set()
    for c in cands:
        key = (c.encoder, c.input_method, PoolingConfig(**c.pooling).label)
        if key not in seen and not any(_same_scores(c, o) for o in chosen):
            chosen.append(c)
            seen.add(key)
        if len(chosen) == n:
            break
    return chosen


def _same_scores(a: Candidate, b: Candidate) -> bool:
    return a.test_scores.keys() == b.test_scores.keys() and all(
        np.array_equal(a.test_scores[k], b.test_scores[k]) for k in a.test_scores
    )


def fused_per_root(members: list[Candidate], roots: list[SearchData], weights) -> list[float]:
    """Official score on each root of the members fused with ``weights`` (eqs. 17-18)."""
    per_root = []
    for i, sd in enumerate(roots):
        trip = []
        for m, d in sd.data.items():
            s = fuse([c.test_scores[i, m] for c in members], [c.train_scores[i, m] for c in members], list(weights))
            trip += _triplet(d, s)
        per_root.append(official_score(trip))
    return per_root


@dataclass
class FusionFit:
    weights: list[float]
    per_root: list[float]
    evaluated: int  # weight vectors scored

    @property
    def worst(self) -> float:
        return min(self.per_root)

    @property
    def mean(self) -> float:
        return float(np.mean(self.per_root))


def fit_fusion_weights(
    members: list[Candidate], roots: list[SearchData], step: float = 0.05, coarse: float = 0.1
) -> FusionFit:
    """Non-negative fusion weights summing to one (eq. 18), chosen on the dev roots by the worst official score
    (then the mean), like every other choice of the search.

    Every weight vector of the ``coarse`` simplex grid is scored, then the best is refined on the ``step`` grid
    by moving ``step`` of weight from one member to another while that improves it (the paper's fusion weights
    are multiples of 0.05). Scoring the whole 0.05 grid of five members (10,626 vectors) would take minutes."""
    units = round(1 / step)
    if not np.isclose(units * step, 1.0) or not 1 <= round(coarse / step) <= units:
        raise ValueError(f"fusion weight steps must divide 1 (step {step}, coarse {coarse})")
    seen: dict[tuple[int, ...], tuple[float, float]] = {}

    def rank(counts: tuple[int, ...]) -> tuple[float, float]:
        if counts not in seen:
            per_root = fused_per_root(members, roots, np.array(counts) / units)
            seen[counts] = (min(per_root), float(np.mean(per_root)))
        return seen[counts]

    best = max(_compositions(units, len(members), round(coarse / step)), key=rank)
    improved = True
    while improved:
        improved = False
        for i, j in itertools.permutations(range(len(members)), 2):
            if best[i] == 0:
                continue
            moved = list(best)
            moved[i], moved[j] = moved[i] - 1, moved[j] + 1
            if rank(tuple(moved)) > rank(best):
                best, improved = tuple(moved), True
    weights = [c / units for c in best]
    return FusionFit(weights, fused_per_root(members, roots, weights), len(seen))


def _compositions(total: int, parts: int, unit: int):
    """Every tuple of ``parts`` non-negative multiples of ``unit`` summing to ``total`` (the remainder, when
    ``unit`` does not divide ``total``, goes to the first part)."""
    coarse_total, rest = divmod(total, unit)
    for bars in itertools.combinations(range(coarse_total + parts - 1), parts - 1):
        edges = (-1, *bars, coarse_total + parts - 1)
        counts = [unit * (edges[p + 1] - edges[p] - 1) for p in range(parts)]
        counts[0] += rest
        yield tuple(counts)
