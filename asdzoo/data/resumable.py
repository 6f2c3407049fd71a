"""Training loaders that resume mid-epoch (issue 16): torchdata's ``StatefulDataLoader`` and samplers that save their
position, the interface Lightning checkpoints.

Lightning (2.6) stores the ``state_dict()`` of every training loader that has one with the fit loop's state in each
checkpoint and loads it back into the new loader before the resumed run draws its first batch
(lightning/pytorch/loops/fit_loop.py: ``FitLoop.on_save_checkpoint`` writes ``combined_loader``;
``FitLoop.setup_data`` calls ``_load_combined_loader_states`` before ``iter``; both go through
``CombinedLoader._state_dicts`` / ``_load_state_dicts`` in lightning/pytorch/utilities/combined_loader.py).
``StatefulDataLoader`` saves its sampler's own ``state_dict`` when the sampler has one; otherwise it replays the
sampler and skips the items already drawn (torchdata 0.11, stateful_dataloader/sampler.py: ``_BatchSamplerIterator``).
A replay is not enough for an epoch-seeded sampler: Lightning loads the state and creates the iterator in
``setup_data``, before it calls ``set_epoch`` for the resumed epoch (``FitLoop.on_advance_start``), so the replayed
pass would be epoch 0's. Hence :class:`ResumableSampler`, whose state names the epoch and the position.

Under DDP, Lightning would replace or wrap a training sampler that is not a ``DistributedSampler``
(``DistributedSampler`` / ``DistributedSamplerWrapper``: lightning/pytorch/trainer/connectors/data_connector.py
``_requires_distributed_sampler``); neither has a state, so a resumed run would replay epoch 0's order, and after a
checkpoint at an epoch's last batch lose the next epoch. A :class:`ResumableSampler` shards itself across the ranks
instead, as a ``DistributedSampler`` does, and Lightning keeps it. Rank 0's checkpointed state serves every rank:
the shards are equally long, so all ranks have drawn as many items at any step.

No draw from torch's global generator either: a loader draws its workers' base seed from ``generator`` (the global one
when None) whenever it creates an iterator (torch/utils/data/dataloader.py: ``_BaseDataLoaderIter.__init__``), and a
resumed run creates one more, after ``asdzoo.callbacks.ResumableCheckpoint`` has put the global state back; random
crops and dropout would then differ from the uninterrupted run's.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Iterator

import torch
from torch import distributed as dist
from torch.utils.data import Dataset, DistributedSampler, Sampler
from torchdata.stateful_dataloader import StatefulDataLoader


def derived_generator(seed: int, index: int) -> torch.Generator:
    """Generator ``index`` of ``seed``, seeded ``seed * 100_003 + index`` so that nearby seeds' epochs do not meet."""
    return torch.Generator().manual_seed((seed * 100_003 + index) % 2**64)


def train_loader(dataset: Dataset, batch_size: int, sampler: Sampler | None = None, **kwargs) -> StatefulDataLoader:
    """A data module's training loader: ``sampler``, or a :class:`ShuffleSampler` of the run's seed
    (``seed_everything``; ``torch.initial_seed`` draws nothing; under DDP every rank must have it, as with every
    config's ``seed_everything: 0``). The loader's own generator only seeds its workers."""
    seed = torch.initial_seed()
    sampler = sampler if sampler is not None else ShuffleSampler(len(dataset), seed)
    return StatefulDataLoader(
        dataset, batch_size, sampler=sampler, generator=torch.Generator().manual_seed(seed), **kwargs
    )


def _world() -> tuple[int, int]:
    """(world size, rank) of the default process group, as torch's ``DistributedSampler`` takes them; (1, 0)
    without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class ResumableSampler(DistributedSampler, metaclass=ABCMeta):
    """A sampler whose pass is ``order(epoch)`` (``size`` items), the epoch set by Lightning's ``set_epoch`` (a pass
    without one in between takes the next epoch). Its ``state_dict`` names the pass and how far it got, so that a
    loaded state makes the next pass continue the interrupted one. Under DDP each rank takes positions ``rank, rank +
    world, ...`` of the pass, padded with its first items to a multiple of the world size as torch's
    ``DistributedSampler`` pads (see the module docstring for why it shards itself).

    A finished pass resumes as the next epoch's: Lightning checkpoints at the epoch's last batch before the loader
    has raised ``StopIteration`` (its fetcher does not read ahead when the length is known:
    lightning/pytorch/loops/fetchers.py ``_PrefetchDataFetcher.__iter__``), and a resumed run takes the next epoch's
    batches from that restored iterator, without a new ``iter`` (training_epoch_loop.py ``on_run_start``); replaying
    the finished pass would leave that epoch empty."""

    def __init__(self, size: int) -> None:  # not DistributedSampler's, which needs the process group already
        self.size, self.epoch = size, 0
        self._skip = 0  # items of the next pass drawn before the checkpoint
        self._progress: tuple[int, int] | None = None  # (epoch, items drawn) of the latest pass

    @abstractmethod
    def order(self, epoch: int) -> list[int]:
        """The pass of ``epoch``: indices into the dataset (each subclass's sampling rule)."""

    def __len__(self) -> int:
        return -(-self.size // _world()[0])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        """A generator: the pass starts at the first ``next``, after Lightning's ``set_epoch``, not at ``iter``."""
        epoch, skip = self.epoch, self._skip
        self.epoch, self._skip = epoch + 1, 0
        shard = self._shard(self.order(epoch))
        self._progress = (epoch, skip)
        for i in range(skip, len(shard)):
            self._progress = (epoch, i + 1)
            yield shard[i]

    def _shard(self, order: list[int]) -> list[int]:
        world, rank = _world()
        return [order[i % len(order)] for i in range(rank, len(self) * world, world)]

    def state_dict(self) -> dict[str, int]:
        epoch, drawn = self._progress or (self.epoch, 0)
        return {"epoch": epoch, "drawn": drawn}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        epoch, drawn = state_dict["epoch"], state_dict["drawn"]
        if drawn >= len(self):
            epoch, drawn = epoch + 1, 0
        self.epoch, self._skip = epoch, drawn
        self._progress = (epoch, drawn)


class ShuffleSampler(ResumableSampler):
    """All ``size`` indices once per epoch, in an order drawn from a generator of (``seed``, epoch)."""

    def __init__(self, size: int, seed: int):
        super().__init__(size)
        self.seed = seed

    def order(self, epoch: int) -> list[int]:
        return torch.randperm(self.size, generator=derived_generator(self.seed, epoch)).tolist()


class WeightedSampler(ResumableSampler):
    """``len(weights)`` indices per epoch, drawn with replacement in proportion to ``weights`` (as torch's
    ``WeightedRandomSampler``), from a generator of (``seed``, epoch)."""

    def __init__(self, weights: list[float], seed: int):
        super().__init__(len(weights))
        self.weights, self.seed = torch.as_tensor(weights, dtype=torch.double), seed

    def order(self, epoch: int) -> list[int]:
        gen = derived_generator(self.seed, epoch)
        return torch.multinomial(self.weights, self.size, replacement=True, generator=gen).tolist()
