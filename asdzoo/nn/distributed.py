"""Batch-level statistics that mean the same under Lightning's DDP as in one process (issue 16).

A loss that compares clips within a batch (NT-Xent negatives, a batch variance, a moving-average centre) or a
validation metric over the whole set (AUC, embedding spread) changes meaning when each process sees only its shard.
These helpers gather the shards first. With no process group (one process) they return their input unchanged, so
single-process results are bit-identical to code that never called them."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn


def world_size() -> int:
    """Processes in the default group; 1 when torch.distributed is not initialised."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _padded_to_largest(x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """``x`` padded along dim 0 to the largest shard of any process (collectives need equal shapes), and every
    process's true length (shards differ at the end of an epoch)."""
    size = torch.tensor([len(x)], device=x.device)
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    lengths = [int(s) for s in sizes]
    pad = max(lengths) - len(x)
    return torch.cat([x, x.new_zeros((pad, *x.shape[1:]))]) if pad else x, lengths


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Every process's ``x [B_r, ...]`` concatenated in rank order, differentiable.

    The backward pass of ``torch.distributed.nn.functional.all_gather`` sums each process's gradient for the shard
    (reduce-scatter, or all-to-all + sum on gloo), so when every process evaluates the same loss on the gathered
    batch, its local gradient is ``W`` times that loss's gradient and DDP's average over ``W`` processes gives exactly
    the one-process gradient of the loss over the whole batch."""
    if world_size() == 1:
        return x
    padded, lengths = _padded_to_largest(x)
    shards = dist_fn.all_gather(padded)
    return torch.cat([shard[:n] for shard, n in zip(shards, lengths)])


@torch.no_grad()
def gather(x: torch.Tensor) -> torch.Tensor:
    """Every process's ``x [B_r, ...]`` concatenated in rank order, without gradient (validation outputs)."""
    if world_size() == 1:
        return x
    padded, lengths = _padded_to_largest(x)
    shards = [torch.empty_like(padded) for _ in lengths]
    dist.all_gather(shards, padded.contiguous())
    return torch.cat([shard[:n] for shard, n in zip(shards, lengths)])
