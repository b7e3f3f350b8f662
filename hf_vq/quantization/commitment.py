"""Idea 3b of Huh et al. (2023): the commitment loss with a convex weighting beta in [0, 1].

    L = (1 - beta) * ||z - sg(q)||^2  +  beta * ||sg(z) - q||^2
             commitment_loss              codebook_loss

The classic VQ-VAE loss ||sg(z) - q||^2 + b * ||z - sg(q)||^2 is the same up to a factor with
b = (1 - beta) / beta (b = 0.25 <=> beta = 0.8). Both parts are returned so they can be reported
separately; the loss is never folded into the quantized output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def beta_commitment_loss(
    vectors: torch.Tensor, codes: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (loss, commitment_loss, codebook_loss), each a mean-squared-error scalar."""
    commitment_loss = F.mse_loss(vectors, codes.detach())
    codebook_loss = F.mse_loss(vectors.detach(), codes)
    loss = (1.0 - beta) * commitment_loss + beta * codebook_loss
    return loss, commitment_loss, codebook_loss


def beta_from_vqvae_weight(commitment_weight: float) -> float:
    """beta of this loss equivalent (up to a factor) to the classic VQ-VAE commitment weight b."""
    return 1.0 / (1.0 + commitment_weight)
