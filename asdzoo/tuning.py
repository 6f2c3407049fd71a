"""BOHB-style hyperparameter search with optuna (paper 004 §3.2): a TPE sampler (the model-based half of BOHB) with a
Hyperband pruner (reduction factor 3, budget in epochs), maximising the validation AUC a model logs as ``val/auc``.

Studies live in an SQLAlchemy storage URL (SQLite by default), so an interrupted search resumes where it stopped:
trials already finished are kept and the sampler continues from them. A trial whose process died (killed, out of
memory, preempted) stops sending heartbeats; once it has been silent for two heartbeats, the next trial to start marks
it failed and queues its parameters again (optuna's heartbeat), so the resumed search re-runs the trial it lost (a
search resumed sooner finds it still running and retries it at the first trial that starts after that).

A system takes part by offering ``search_space(trial) -> dict`` (constructor overrides) and ``finetune(waves, domains,
lengths, callbacks=..., max_epochs=...)``; the search is per machine, as the paper tunes machine-specific models.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import lightning as L

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 60  # a running trial records a heartbeat this often; silent for two of them, it counts as lost


class ReportToTrial(L.Callback):
    """After each validation, report ``monitor`` to the optuna trial (step = epoch) and stop a pruned trial."""

    def __init__(self, trial, monitor: str = "val/auc"):
        self.trial, self.monitor, self.best = trial, monitor, float("-inf")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import optuna

        value = trainer.callback_metrics.get(self.monitor)
        if value is None or trainer.sanity_checking:
            return
        value = float(value)
        self.best = max(self.best, value)
        self.trial.report(value, trainer.current_epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {trainer.current_epoch} ({self.monitor} {value:.4f})")


@dataclass
class TuneResult:
    study: str
    storage: str
    best_value: float
    best_params: dict
    finished: int
    pruned: int


def make_study(name: str, storage: str, max_epochs: int, seed: int = 0, heartbeat: int = HEARTBEAT_SECONDS):
    """A resumable maximising study: TPE sampler + Hyperband pruner (min 1 epoch, max ``max_epochs``, eta 3), in an
    RDB storage with heartbeats every ``heartbeat`` seconds; a lost trial is retried once."""
    import warnings

    import optuna

    with warnings.catch_warnings():  # the heartbeat is "experimental" in optuna since 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
        rdb = optuna.storages.RDBStorage(
            storage, heartbeat_interval=heartbeat, grace_period=2 * heartbeat, heartbeat_stale_trial_callback=retry
        )
    return optuna.create_study(
        study_name=name,
        storage=rdb,
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs, reduction_factor=3),
    )


def tune_machine(
    model_name: str,
    data_root: str | Path,
    machine: str,
    trials: int,
    storage: str | None = None,
    study_name: str | None = None,
    max_epochs: int = 100,
    fixed: dict | None = None,
    seed: int = 0,
    progress: bool = True,
    heartbeat: int = HEARTBEAT_SECONDS,
) -> TuneResult:
    """Search ``model_name``'s space on one machine's training clips; ``fixed`` overrides its registry arguments in
    every trial (e.g. ``backbone`` = a stage-1 folder)."""
    import optuna

    from asdzoo.tasks.task2 import all_clips, load_machine
    from asdzoo.zoo import ZOO, architecture_class

    if model_name not in ZOO:
        raise ValueError(f"tune: {model_name!r} is not a registry name (tuning builds the entry with new arguments)")
    entry = ZOO[model_name]
    cls = architecture_class(entry.class_name)
    if not hasattr(cls, "search_space"):
        raise ValueError(f"tune: {model_name!r} ({cls.__name__}) has no search space")
    data = load_machine(data_root, machine)
    train = all_clips(data.train, data.channels)
    domains = [int(c.domain == "target") for c in data.train]
    study_name = study_name or f"{model_name}-{machine}"
    storage = storage or f"sqlite:///{study_name}.db"

    def objective(trial) -> float:
        kwargs = entry.kwargs | (fixed or {}) | cls.search_space(trial)
        report = ReportToTrial(trial)
        model = cls(**kwargs)
        model.finetune(train["wave"], domains, train["lengths"], callbacks=[report], max_epochs=max_epochs)
        if report.best == float("-inf"):
            raise ValueError(f"{machine}: no validation AUC was logged (too few training clips to hold any out?)")
        return report.best

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = make_study(study_name, storage, max_epochs, seed, heartbeat)
    counted = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)  # a lost or failed trial is not one
    done = sum(t.state in counted for t in study.trials)
    study.optimize(objective, n_trials=max(0, trials - done), show_progress_bar=progress)
    states = [t.state for t in study.trials]
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not finished:
        raise ValueError(f"tune {study_name}: no trial completed ({len(states)} pruned or failed)")
    return TuneResult(
        study_name,
        storage,
        study.best_value,
        study.best_params,
        len(finished),
        sum(s == optuna.trial.TrialState.PRUNED for s in states),
    )


def result_json(result: TuneResult) -> str:
    return json.dumps(result.__dict__, indent=1)


__all__ = ["ReportToTrial", "TuneResult", "make_study", "result_json", "tune_machine"]
