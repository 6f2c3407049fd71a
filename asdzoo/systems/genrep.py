"""GenRep for two-channel data (paper 001): frozen encoder -> preprocessing -> pooling -> input method ->
kNN backend; training-free.

Views are what the encoder sees: ``near``, ``far`` and ``enh`` (the soft-mask enhanced near channel).
Branches are what gets scored: one (``main``) for the embedding-level input methods (eqs. 2-5), three
(``near``, ``enh``, ``stereo`` = n_f concatenation) fused as in eq. 13 for the soft-mask methods.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from asdzoo.audio.channels import softmask_enhance
from asdzoo.config import CapturesInit
from asdzoo.encoders import load_encoder
from asdzoo.nn.batching import map_batches
from asdzoo.nn.pooling import l2_normalize, pool, preprocess
from asdzoo.scoring.bank_detector import BankDetector
from asdzoo.scoring.cache import code_digest, weights_digest
from asdzoo.scoring.fusion import fuse
from asdzoo.scoring.knn import BackendConfig

# name -> (kind, parameter): paper 001 §2.3, seven configurations
INPUT_METHODS = {
    "near_only": ("near", None),
    "n_0.5f": ("concat", 0.5),
    "n_f": ("concat", 1.0),
    "absdif_1": ("absdif", 1.0),
    "absdif_0.5": ("absdif", 0.5),
    "sfsoft_a03f05": ("sfsoft", (0.3, 0.5)),
    "sfsoft_a05f07": ("sfsoft", (0.5, 0.7)),
}
SFSOFT_WEIGHTS = {"near": 0.6, "enh": 0.2, "stereo": 0.2}  # eq. 13


def views_for(method: str) -> tuple[str, ...]:
    kind, _ = INPUT_METHODS[method]
    return {"near": ("near",), "concat": ("near", "far"), "absdif": ("near", "far"), "sfsoft": ("near", "far", "enh")}[
        kind
    ]


def compose(method: str, z: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Input method on L2-normalised pooled views -> scored branches."""
    kind, param = INPUT_METHODS[method]
    if kind == "near":
        return {"main": z["near"]}
    if kind == "concat":  # eq. 3
        return {"main": l2_normalize(torch.cat([z["near"], param * z["far"]], dim=-1))}
    if kind == "absdif":  # eqs. 4-5
        diff = l2_normalize((z["near"] - z["far"]).abs())
        return {"main": l2_normalize(torch.cat([z["near"], z["far"], param * diff], dim=-1))}
    stereo = l2_normalize(torch.cat([z["near"], z["far"]], dim=-1))
    return {"near": z["near"], "enh": z["enh"], "stereo": stereo}


@dataclass
class PoolingConfig:
    method: str = "mean"
    p: float = 3.0
    alpha: float = 1.0
    tau: float | None = None
    rho: float | None = None

    @property
    def label(self) -> str:
        pre = "" if self.tau is None and self.rho is None else f" pre({self.tau},{self.rho})"
        par = {
            "mean": "",
            "gem": f"(p={self.p:g})",
            "rdp": f"(a={self.alpha:g})",
            "rdpgem": f"(a={self.alpha:g},p={self.p:g})",
        }
        return f"{self.method}{par[self.method]}{pre}"

    def apply(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return l2_normalize(pool(preprocess(frames, self.tau, self.rho), mask, self.method, self.p, self.alpha))


class GenRep(CapturesInit, BankDetector, nn.Module):
    """Training-free detector; ``fit`` builds the per-machine memory banks, ``score`` returns kNN scores.
    Meets the Task 2 frame interface, so the pipeline caches its encoder frames."""

    def __init__(
        self,
        encoder: str = "logmel",
        encoder_args: dict | None = None,
        layer: int | None = None,
        input_method: str = "near_only",
        pooling: dict | None = None,
        backend: dict | None = None,
        batch_size: int = 16,
    ):
        super().__init__()
        if input_method not in INPUT_METHODS:
            raise ValueError(f"unknown input method {input_method!r}; choose from {list(INPUT_METHODS)}")
        self.encoder = load_encoder(encoder, layer=layer, **(encoder_args or {}))
        self.encoder.requires_grad_(False).eval()
        self.input_method = input_method
        self.pooling = PoolingConfig(**(pooling or {}))
        self.backend_cfg = BackendConfig(**(backend or {}))
        self.batch_size = batch_size
        self._fitted: dict | None = None

    def saved_config(self, config: dict) -> dict:
        return config | {k: dict(config[k] or {}) for k in ("encoder_args", "pooling", "backend")}

    def configured(self, pooling: dict, backend: dict, input_method: str | None = None) -> GenRep:
        """An unfitted copy with other pooling/backend (and input method) settings sharing this frozen encoder."""
        method = input_method or self.input_method
        if method not in INPUT_METHODS:
            raise ValueError(f"unknown input method {method!r}; choose from {list(INPUT_METHODS)}")
        other = copy.copy(self)
        other.reconfigured(pooling=dict(pooling), backend=dict(backend), input_method=method)
        other.pooling, other.backend_cfg, other._fitted = PoolingConfig(**pooling), BackendConfig(**backend), None
        other.input_method = method
        return other

    # -- embeddings ------------------------------------------------------------------------------
    @torch.inference_mode()
    def view_frames(
        self, wave: torch.Tensor, lengths: torch.Tensor | None = None, views: tuple[str, ...] | None = None
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Encoder frames and masks of each view of ``wave [B, 2, S]`` (``[B, 1, S]`` for near-only)."""
        views = views or views_for(self.input_method)
        if "far" in views and wave.shape[1] < 2:
            raise ValueError(
                f"input method {self.input_method!r} needs two-channel (near, far) audio, got "
                f"{wave.shape[1]} channel(s); use near_only for mono data"
            )
        out = {}
        for view in views:
            if view == "near":
                x = wave[:, 0]
            elif view == "far":
                x = wave[:, 1]
            else:
                alpha, floor = INPUT_METHODS[self.input_method][1]
                x = softmask_enhance(wave[:, 0], wave[:, 1], alpha, floor, lengths=lengths)
            out[view] = self.encoder(x, lengths)
        return out

    def branches_from_frames(self, frames: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return compose(self.input_method, {v: self.pooling.apply(f, m) for v, (f, m) in frames.items()})

    def embed(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Clip embeddings per branch (``main``, or ``near``/``enh``/``stereo`` for soft-mask methods)."""
        return map_batches(
            lambda w, n: self.branches_from_frames(self.view_frames(w, n)), wave, lengths, self.batch_size
        )

    # -- Task 2 frame interface (asdzoo.tasks.task2.FrameDetector) -----------------------------------
    def frame_views(self) -> tuple[str, ...]:
        return views_for(self.input_method)

    def frame_cache_key(self) -> dict:
        """Frames depend on the encoder (class, arguments, weights), the front-end code and, for the enhanced
        view only, the soft-mask parameters of the input method."""
        return {
            "encoder": f"{type(self.encoder).__module__}.{type(self.encoder).__name__}",
            "encoder_config": self.encoder.config,
            "weights": weights_digest(self.encoder),
            "code": code_digest("audio", "encoders"),
            "input_method": self.input_method if "enh" in self.frame_views() else None,
        }

    def fit_frames(self, frames: dict[str, tuple[torch.Tensor, torch.Tensor]], domains) -> GenRep:
        return self.fit_embeddings(self.branches_from_frames(frames), domains)

    def score_frames(self, frames: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> np.ndarray:
        return self.score_embeddings(self.branches_from_frames(frames))

    def combine_branches(self, per_branch: dict[str, np.ndarray]) -> np.ndarray:
        """One branch as is; the soft-mask methods' three branches fused with eq. 13's weights."""
        if list(per_branch) == ["main"]:
            return per_branch["main"]
        names = list(SFSOFT_WEIGHTS)
        return fuse(
            [per_branch[b] for b in names], [self._train_scores[b] for b in names], [SFSOFT_WEIGHTS[b] for b in names]
        )


class GenRepFusion(CapturesInit, nn.Module):
    """Score-level fusion of GenRep systems (paper 001 §2.8, eqs. 17-18): each member is fitted on the same clips,
    its test scores are Z-aligned by its own leave-one-out training-normal scores, then weighted (λ ≥ 0, Σλ = 1).

    ``members``: GenRep constructor arguments, one dict per system (each with its own encoder)."""

    def __init__(self, members: list[dict], weights: list[float]):
        super().__init__()
        if len(members) != len(weights) or not members:
            raise ValueError(f"GenRepFusion needs one weight per member, got {len(members)} members, {len(weights)}")
        w = np.asarray(weights, dtype=float)
        if (w < 0).any() or not np.isclose(w.sum(), 1.0):
            raise ValueError(f"fusion weights must be non-negative and sum to 1, got {weights}")
        self.members = nn.ModuleList(GenRep(**m) for m in members)
        self.weights = [float(x) for x in weights]

    def fit(self, waves: torch.Tensor, domains, lengths: torch.Tensor | None = None) -> GenRepFusion:
        for m in self.members:
            m.fit(waves, domains, lengths)
        return self

    def score(self, waves: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        scores = [m.score(waves, lengths).numpy() for m in self.members]
        fused = fuse(scores, [m.train_scores() for m in self.members], self.weights)
        return torch.from_numpy(np.asarray(fused, dtype=np.float64))

    def train_scores(self) -> np.ndarray:
        """The members' leave-one-out training scores fused like test scores (for the decision threshold)."""
        train = [m.train_scores() for m in self.members]
        return fuse(train, train, self.weights)

    def fitted_state(self) -> dict[str, torch.Tensor]:
        return {f"{i}.{k}": v for i, m in enumerate(self.members) for k, v in m.fitted_state().items()}

    def load_fitted_state(self, state: dict[str, torch.Tensor]) -> None:
        for i, m in enumerate(self.members):
            m.load_fitted_state({k.split(".", 1)[1]: v for k, v in state.items() if k.split(".", 1)[0] == str(i)})
