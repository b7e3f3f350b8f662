"""Codebook usage statistics returned by every forward."""

from __future__ import annotations

import torch


def code_counts(indices: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """How often each of the `codebook_size` codes occurs in `indices` (int64, one entry per code).

    `torch.bincount(indices, minlength=codebook_size)` without its data-dependent output size (it grows past the
    codebook for an index >= codebook_size), so that torch.export and torch.compile trace it without a graph break.
    """
    counts = torch.zeros(codebook_size, dtype=torch.long, device=indices.device)
    return counts.index_add_(0, indices, torch.ones_like(indices))


def perplexity_and_usage(code_counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """exp(entropy) of the code distribution in the batch, and the fraction of codes used."""
    counts = code_counts.float()
    probs = counts / counts.sum().clamp_min(1.0)
    entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum()
    return entropy.exp(), (counts > 0).float().mean()
