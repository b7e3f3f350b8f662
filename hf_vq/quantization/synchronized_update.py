"""Idea 3a of Huh et al. (2023): the synchronized update.

    out = z + sg(q - z) + nu * q - sg(nu * q)

The forward value is q. The encoder receives the task gradient unchanged (plain straight-through),
while the codebook (and the affine parameters) receive nu times the task gradient in the same step,
which removes the one-step delay between encoder and codebook updates. nu = 0 is plain STE.
"""

from __future__ import annotations

import torch


def synchronized_straight_through(vectors: torch.Tensor, codes: torch.Tensor, nu: float) -> torch.Tensor:
    """Straight-through output whose value is `codes`, with the synchronized codebook gradient."""
    out = vectors + (codes - vectors).detach()
    if nu > 0:
        out = out + nu * codes - (nu * codes).detach()
    return out
