"""Batch-level statistics under DDP (issue 16): in two real gloo processes, each holding an uneven shard of a batch,
the helpers of ``asdzoo.nn.distributed`` make NT-Xent + the variance hinge, the pOE centre, AdaCos' adaptive scale
and a validation AUC equal to one process on the whole batch — and the gradients, after DDP's average over the
processes, equal the one-process gradients. Without them each process's shard would be its own batch (checked too:
the per-shard loss is another number)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from sklearn.metrics import roc_auc_score

from asdzoo.nn.contrastive import nt_xent, variance_hinge
from asdzoo.nn.distributed import gather, gather_with_grad, world_size
from asdzoo.nn.heads import SubClusterAdaCos
from asdzoo.nn.poe import MomentumCentre

WORLD = 2
SHARDS = (slice(0, 5), slice(5, 8))  # uneven, as at the end of an epoch


def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "z1": torch.randn(8, 16, generator=g),
        "z2": torch.randn(8, 16, generator=g),
        "labels": torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]),
        "scores": torch.rand(8, generator=g),
        "outlier": torch.tensor([0, 1, 0, 1, 1, 0, 0, 1]),
    }


def statistics(b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Everything the systems compute from a batch, on whatever this process holds (gathered where they gather)."""
    z1, z2 = b["z1"].clone().requires_grad_(), b["z2"].clone().requires_grad_()
    g1, g2 = gather_with_grad(z1), gather_with_grad(z2)
    loss = nt_xent(g1, g2, 0.07) + 0.1 * 0.5 * (variance_hinge(g1) + variance_hinge(g2))
    loss.backward()
    centre = MomentumCentre(16, 0.9)
    centre.update(b["z1"])
    centre.update(b["z2"])
    head = SubClusterAdaCos(16, 3, sub_centers=2)
    torch.nn.init.normal_(head.centers, generator=torch.Generator().manual_seed(1))
    head.update_scale(head.cosine(b["z1"]), b["labels"])
    scores, labels = gather(b["scores"]), gather(b["outlier"])
    return {
        "loss": loss.detach(),
        # DDP averages parameter gradients over the processes; a gradient on the inputs stands in for them here
        "grad_z1": z1.grad / world_size(),
        "grad_z2": z2.grad / world_size(),
        "centre": centre.centre,
        "scale": head.scale,
        "auc": torch.tensor(roc_auc_score(labels.numpy(), scores.numpy())),
        "shard_loss": nt_xent(b["z1"], b["z2"], 0.07),
    }


def _worker(rank: int, init_file: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        shard = {k: v[SHARDS[rank]] for k, v in batch().items()}
        results[rank] = statistics(shard)
    finally:
        dist.destroy_process_group()


def test_sharded_statistics_equal_the_whole_batch(tmp_path):
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(str(tmp_path / "init"), results), nprocs=WORLD, join=True)
        shards = [dict(results[r]) for r in range(WORLD)]
    whole = statistics(batch())
    assert world_size() == 1
    for rank, got in enumerate(shards):
        for name in ("loss", "centre", "scale", "auc"):
            torch.testing.assert_close(got[name], whole[name], rtol=1e-6, atol=1e-7, msg=f"rank {rank}: {name}")
        for name in ("grad_z1", "grad_z2"):
            torch.testing.assert_close(
                got[name], whole[name][SHARDS[rank]], rtol=1e-5, atol=1e-8, msg=f"rank {rank}: {name}"
            )
        # what a process would compute from its shard alone is a different loss
        assert abs(float(got["shard_loss"]) - float(whole["loss"])) > 0.1
