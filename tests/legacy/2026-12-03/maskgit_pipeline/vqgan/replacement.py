"""Dead-code replacement.

A code that no encoder vector (on any rank) has selected for `replace_freq` consecutive training steps
is reset to a randomly chosen current encoder vector plus small noise. The reset happens in the
effective (post-affine) space through `Codebook.set_effective_codes`, so a revived code lands on the
vector it was given; vqtorch writes the raw weight, which is wrong as soon as the codes are affine.
"""

from __future__ import annotations

import torch

from .codebook import Codebook
from .distributed import broadcast_, sample_rows_from_all_ranks


@torch.no_grad()
def update_dead_code_counters(steps_since_used: torch.Tensor, code_counts: torch.Tensor) -> None:
    """Advance the per-code counters by one step; codes used this step (counts over all ranks) reset to 0."""
    steps_since_used.add_(1).masked_fill_(code_counts > 0, 0)


@torch.no_grad()
def replace_dead_codes(
    codebook: Codebook,
    steps_since_used: torch.Tensor,
    vectors: torch.Tensor,
    replace_freq: int,
    noise_scale: float = 1e-2,
) -> int:
    """Reset every code unused for `replace_freq` steps to an encoder vector; returns how many were reset.

    `steps_since_used` is identical on every rank (it is updated from all-reduced counts), so every rank
    takes the same branch, and the replacement vectors are drawn from all ranks and broadcast.
    """
    dead = torch.nonzero(steps_since_used >= replace_freq).flatten()
    if dead.numel() == 0:
        return 0
    vectors = vectors.detach().float()
    targets = sample_rows_from_all_ranks(vectors, dead.numel())
    # Noise relative to the spread of the encoder output, so that two codes revived from the same
    # vector still differ. Drawn on every rank, then rank 0's draw is broadcast: ranks stay identical.
    spread = noise_scale * vectors.std(dim=0, unbiased=False)
    targets = broadcast_(targets + torch.randn_like(targets) * spread)
    codebook.set_effective_codes(dead, targets)
    steps_since_used[dead] = 0
    return int(dead.numel())
