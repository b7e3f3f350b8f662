"""Codebook usage statistics returned by every forward."""

from __future__ import annotations

import torch


def perplexity_and_usage(code_counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """exp(entropy) of the code distribution in the batch, and the fraction of codes used."""
    counts = code_counts.float()
    probs = counts / counts.sum().clamp_min(1.0)
    entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum()
    return entropy.exp(), (counts > 0).float().mean()
