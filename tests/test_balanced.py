"""Domain-balanced sampling and held-out splits for fine-tuning (asdzoo.data.balanced, paper 004 §3.1)."""

from collections import Counter

import torch

from asdzoo.data.balanced import BalancedNormalsDataModule, DomainBalancedSampler
from asdzoo.data.task2 import held_out_split


def test_each_machine_gets_its_clips_half_from_each_domain():
    groups = [0] * 50 + [1] * 30
    domains = [0] * 45 + [1] * 5 + [0] * 30  # machine 1 has no target clip
    sampler = DomainBalancedSampler(groups, domains, per_group=20, seed=3)
    picks = list(sampler)
    assert len(picks) == len(sampler) == 40
    per = Counter((groups[i], domains[i]) for i in picks)
    assert per == {(0, 0): 10, (0, 1): 10, (1, 0): 20}
    # the 5 target clips are oversampled (each exactly twice), the source clips drawn without repetition
    target = Counter(i for i in picks if domains[i] == 1)
    assert sorted(target.values()) == [2] * 5
    assert max(Counter(i for i in picks if groups[i] == 0 and domains[i] == 0).values()) == 1


def test_sampler_is_seeded_per_epoch():
    args = ([0] * 12, [0] * 10 + [1] * 2, 8)
    a, b = DomainBalancedSampler(*args, seed=1), DomainBalancedSampler(*args, seed=1)
    a.set_epoch(4), b.set_epoch(4)
    assert list(a) == list(b)
    b.set_epoch(5)
    assert list(DomainBalancedSampler(*args, seed=1).__iter__()) != list(b)


def test_held_out_split_keeps_both_domains_and_never_a_whole_domain():
    domains = [0] * 40 + [1] * 3 + [0] * 2
    train, held = held_out_split(domains, 0.1, seed=0)
    assert sorted(train + held) == list(range(len(domains)))
    held_domains = Counter(domains[i] for i in held)
    assert held_domains == {0: 4, 1: 1}
    assert Counter(domains[i] for i in train)[1] == 2
    assert held_out_split([0, 1], 0.5)[1] == []  # one clip per domain: nothing can be held out
    assert held_out_split([0] * 10, 0.0)[1] == []


def test_data_module_holds_out_per_machine_and_attaches_other_machines(synth_root):
    dm = BalancedNormalsDataModule(
        str(synth_root),
        machines=["fan"],
        clips_per_machine=12,
        batch_size=6,
        segment_seconds=1.0,
        other_machine_outliers=True,
    )
    dm.setup("fit")
    train_names = {c.name for c in dm.train_set.base.clips}
    val_clips = dm.val_set.base.clips
    assert not train_names & {c.name for c in val_clips} and all(c.machine == "fan" for c in val_clips)
    assert {c.domain for c in val_clips} == {"source", "target"}
    assert "other_wave" in next(iter(dm.val_dataloader()))
    batch = next(iter(dm.train_dataloader()))
    assert batch["wave"].shape == (6, 2, 16000) and batch["other_wave"].shape == (6, 2, 16000)
    valve = {c.name for c in dm.train_set.others.clips}
    assert all(c.machine == "valve" for c in dm.train_set.others.clips) and valve
    assert int(batch["domain"].sum()) >= 1  # the 6 target clips are drawn as often as the source ones
    assert not torch.equal(batch["wave"], batch["other_wave"])
