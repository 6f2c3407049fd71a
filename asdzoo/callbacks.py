"""Lightning callbacks that connect training to the zoo."""

from __future__ import annotations

import logging
import os
import random

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from asdzoo.hub import save_pretrained
from asdzoo.tasks.task2 import dev_official_score

log = logging.getLogger(__name__)


class SavePretrained(L.Callback):
    """At the end of ``fit``, write the trained model with ``save_pretrained`` (then ``asdzoo install DIR``).
    Lightning has run every ``on_train_end`` hook by then (end-of-training state such as the AE's covariances,
    the dev-selected weights), so this only writes. ``use_best``: write the weights of the trainer's
    ``ModelCheckpoint`` best checkpoint (e.g. minimum validation loss) instead of the last epoch's. ``dirpath``
    None: ``<trainer.default_root_dir>/model``, so one config serves runs that differ only in their root."""

    def __init__(self, dirpath: str | None = None, name: str | None = None, use_best: bool = False):
        self.dirpath, self.name, self.use_best = dirpath, name, use_best

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        best = getattr(trainer.checkpoint_callback, "best_model_path", "") if self.use_best else ""
        if self.use_best and not best:
            log.warning(
                "SavePretrained(use_best=True): no best checkpoint (no ModelCheckpoint or no monitored "
                "value, e.g. no validation data); the last epoch's weights are written"
            )
        if best:
            state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
            pl_module.load_state_dict(state)
            log.info("SavePretrained: weights of %s", best)
        if trainer.is_global_zero:
            save_pretrained(pl_module, self.dirpath or os.path.join(trainer.default_root_dir, "model"), self.name)


class DevSetSelection(L.Callback):
    """Development-set checkpoint selection (System 2 of paper 000): every ``every_n_epochs`` epochs the model
    scores the labelled dev data with its own detector (fit on ``train/``, score ``test/``), the official score is
    logged as ``dev/official``, and the weights of the best epoch are restored when training ends (before
    ``SavePretrained`` writes them). The dev root defaults to the data module's ``root``."""

    def __init__(self, data_root: str | None = None, every_n_epochs: int = 1):
        self.data_root, self.every_n_epochs = data_root, every_n_epochs
        self.best_score, self.best_epoch, self.best_state = float("-inf"), None, None
        self.history: list[tuple[int, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if (epoch + 1) % self.every_n_epochs and not self._last_epoch(trainer):
            return
        root = self.data_root or trainer.datamodule.root
        was_training = pl_module.training
        score = dev_official_score(pl_module, root)
        pl_module.train(was_training)
        self.history.append((epoch, score))
        pl_module.log("dev/official", score, prog_bar=True)
        if score > self.best_score:
            self.best_score, self.best_epoch = score, epoch
            self.best_state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}

    def state_dict(self) -> dict:
        """Saved in Lightning checkpoints, so that a run resumed with ``--ckpt_path`` still restores the best epoch
        seen before the interruption."""
        return {
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
            "history": list(self.history),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self.best_score, self.best_epoch = state_dict["best_score"], state_dict["best_epoch"]
        self.best_state, self.history = state_dict["best_state"], [tuple(h) for h in state_dict["history"]]

    @staticmethod
    def _last_epoch(trainer: L.Trainer) -> bool:
        return trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.best_state is not None:
            pl_module.load_state_dict(self.best_state)
            log.info("dev-set selection: restored epoch %d (official score %.4f)", self.best_epoch, self.best_score)


class ResumableCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` whose checkpoints also carry the random-number state (torch, CUDA, numpy,
    python), put back on ``--ckpt_path``. Lightning saves none, so a resumed run drew its random crops, dropout and
    noise like the first epochs and ended elsewhere than the uninterrupted run. The state is stored as tensors, lists
    and tuples so that the checkpoint still loads with ``weights_only=True``. The data order is the loaders' own
    state: every data module trains from a ``StatefulDataLoader``, which Lightning checkpoints with the fit loop and
    which continues an interrupted epoch where it stopped (asdzoo.data.resumable), so a resume mid-epoch is exact
    too."""

    def state_dict(self) -> dict:
        return {**super().state_dict(), "rng_states": _rng_states()}

    def load_state_dict(self, state_dict: dict) -> None:
        state = dict(state_dict)
        rng = state.pop("rng_states", None)
        super().load_state_dict(state)
        if rng is not None:
            _set_rng_states(rng)


def _rng_states() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {"torch": torch.get_rng_state(), "numpy": (kind, keys.tolist(), pos, has_gauss, gauss)}
    states["python"] = random.getstate()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
