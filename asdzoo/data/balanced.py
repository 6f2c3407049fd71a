"""Domain-balanced normal clips for fine-tuning (paper 004 §3.1): every epoch draws a fixed number of clips per
machine, half source and half target, oversampling the few target clips (DCASE has ~990 source, 10 target), plus a
held-out split of normal clips for early stopping and, optionally, other machines' clips as pseudo-outliers."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset
from torchdata.stateful_dataloader import StatefulDataLoader

from asdzoo.data.resumable import ResumableSampler, derived_generator, train_loader
from asdzoo.data.task2 import Task2Dataset, collate_clips, held_out_split, list_machines, scan_clips


class DomainBalancedSampler(ResumableSampler):
    """``per_group`` indices per epoch for every group (machine), half from each domain present (a group with one
    domain gives all from it); each domain is drawn without replacement while it lasts, then reshuffled (so target
    clips repeat, source clips rarely). Seeded per epoch: the same seed gives the same order, resumed runs too, and
    a run resumed mid-epoch continues the interrupted epoch (:class:`ResumableSampler`)."""

    def __init__(self, groups: Sequence[int], domains: Sequence[int], per_group: int, seed: int = 0):
        self.pools: list[list[torch.Tensor]] = []
        groups, domains = torch.as_tensor(groups), torch.as_tensor(domains)
        for g in groups.unique().tolist():
            in_group = groups == g
            self.pools.append([(in_group & (domains == d)).nonzero().flatten() for d in (0, 1)])
            self.pools[-1] = [p for p in self.pools[-1] if len(p)]
        super().__init__(per_group * len(self.pools))
        self.per_group, self.seed = per_group, seed

    def order(self, epoch: int) -> list[int]:
        gen = derived_generator(self.seed, epoch)
        picks = []
        for pools in self.pools:
            shares = [self.per_group // len(pools) + (i < self.per_group % len(pools)) for i in range(len(pools))]
            for pool, n in zip(pools, shares):
                reps = -(-n // len(pool))
                order = torch.cat([pool[torch.randperm(len(pool), generator=gen)] for _ in range(reps)])
                picks.append(order[:n])
        picks = torch.cat(picks)
        return picks[torch.randperm(len(picks), generator=gen)].tolist()


class _WithOthers(Dataset):
    """Items of ``base`` with a random clip of ``others`` attached as ``other_wave`` (a pseudo-outlier source)."""

    def __init__(self, base: Dataset, others: Dataset, seed: int):
        self.base, self.others, self.gen = base, others, torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        j = int(torch.randint(len(self.others), (), generator=self.gen))
        return self.base[i] | {"other_wave": self.others[j]["wave"]}

    def state_dict(self) -> dict:
        """The draws' generator: a ``StatefulDataLoader`` checkpoints it with its sampler, so a resumed run draws
        the uninterrupted run's outlier clips (in the loading process, i.e. with ``num_workers`` 0)."""
        return {"generator": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.gen.set_state(state["generator"])


def collate_with_others(items: list[dict]) -> dict:
    batch = collate_clips(items)
    if "other_wave" in items[0]:
        longest = max(it["other_wave"].shape[-1] for it in items)
        other = torch.zeros(len(items), items[0]["other_wave"].shape[0], longest)
        for b, it in enumerate(items):
            other[b, :, : it["other_wave"].shape[-1]] = it["other_wave"]
        batch["other_wave"] = other
    return batch


class BalancedNormalsDataModule(L.LightningDataModule):
    """Normal training clips of ``machines`` (all machines of ``root`` by default), ``clips_per_machine`` per epoch,
    domain-balanced (:class:`DomainBalancedSampler`); ``val_fraction`` of them held out per machine and domain for
    validation. ``other_machine_outliers``: every training item also carries a clip of a machine outside
    ``machines`` (``outlier_machines``, default: the rest of the root) for the other-machine pseudo-outliers."""

    def __init__(
        self,
        root: str,
        machines: list[str] | None = None,
        clips_per_machine: int = 1000,
        val_fraction: float = 0.1,
        batch_size: int = 256,
        num_workers: int = 0,
        channels: int = 2,
        segment_seconds: float | None = 10.0,
        other_machine_outliers: bool = False,
        outlier_machines: list[str] | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_set"):
            return
        h = self.hparams
        available = list_machines(h.root)
        machines = h.machines or available
        clips = [c for m in machines for c in scan_clips(h.root, m, "train")]
        groups = [machines.index(c.machine) for c in clips]
        train_idx, val_idx = [], []
        for g in range(len(machines)):
            members = [i for i, grp in enumerate(groups) if grp == g]
            tr, va = held_out_split([int(clips[i].domain == "target") for i in members], h.val_fraction, h.seed + g)
            train_idx += [members[i] for i in tr]
            val_idx += [members[i] for i in va]
        crop = dict(channels=h.channels, segment_seconds=h.segment_seconds)
        train = [clips[i] for i in train_idx]
        self.train_set = Task2Dataset(train, random_crop=True, **crop)
        self.val_set = Task2Dataset([clips[i] for i in val_idx], **crop) if val_idx else None
        self.sampler = DomainBalancedSampler(
            [groups[i] for i in train_idx], [int(c.domain == "target") for c in train], h.clips_per_machine, h.seed
        )
        if h.other_machine_outliers:
            others = h.outlier_machines or [m for m in available if m not in machines]
            if not others:
                raise ValueError(
                    f"{h.root}: other_machine_outliers needs machines outside {machines} (set outlier_machines or "
                    "train on fewer machines)"
                )
            pool = Task2Dataset([c for m in others for c in scan_clips(h.root, m, "train")], random_crop=True, **crop)
            self.train_set = _WithOthers(self.train_set, pool, h.seed)
            if self.val_set is not None:  # validation outliers are made the same way as training ones
                self.val_set = _WithOthers(self.val_set, pool, h.seed + 1)

    def train_dataloader(self) -> StatefulDataLoader:
        h = self.hparams
        return train_loader(
            self.train_set, h.batch_size, self.sampler, num_workers=h.num_workers, collate_fn=collate_with_others
        )

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        h = self.hparams
        return DataLoader(self.val_set, h.batch_size, num_workers=h.num_workers, collate_fn=collate_with_others)
