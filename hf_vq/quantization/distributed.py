"""The few collective operations that keep codebook state identical across processes.

Every function is a no-op (returns its input) when torch.distributed is not initialised, so the
quantizer runs unchanged on one CPU. Codebook state (k-means centres, replaced codes, running
statistics, usage counters) is always computed from all ranks and then broadcast, never per rank.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of `tensor` over all ranks (a new tensor; the input is left alone)."""
    if not is_distributed():
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite `tensor` in place on every rank with the value it has on `src`."""
    if is_distributed():
        dist.broadcast(tensor, src=src)
    return tensor


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate equally shaped tensors from all ranks along the first dimension."""
    if not is_distributed():
        return tensor
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor.contiguous())
    return torch.cat(gathered, dim=0)


def sample_rows_from_all_ranks(
    vectors: torch.Tensor, count: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """`count` rows drawn from the union of every rank's `vectors`, identical on all ranks.

    Each rank draws `count` rows of its own (with replacement when it has fewer), the draws are
    gathered, and rank 0 picks `count` of the pooled rows; the pick is broadcast so that every rank
    ends with the same rows.
    """
    local = vectors[_random_rows(vectors.shape[0], count, vectors.device, generator)]
    pooled = all_gather_cat(local)
    choice = _random_rows(pooled.shape[0], count, vectors.device, generator)
    broadcast_(choice)
    return pooled[choice]


def _random_rows(population: int, count: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    if population >= count:
        return torch.randperm(population, generator=generator)[:count].to(device)
    return torch.randint(population, (count,), generator=generator).to(device)


def all_reduce_min_int(value: int, device: torch.device) -> int:
    """The smallest `value` over all ranks (e.g. a sample size every rank can provide)."""
    if not is_distributed():
        return value
    tensor = torch.tensor([value], device=device, dtype=torch.long)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor)
