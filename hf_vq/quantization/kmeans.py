"""k-means++ initialisation of the codebook, on CPU or GPU, keeping every code.

vqtorch's version needs CUDA and cupy and silently shrinks the codebook when the batch holds fewer
vectors than codes. Here seeding and Lloyd iterations are plain PyTorch with blocked distance
computations, and when the data cannot fill every code (K > N, or many duplicate vectors) the
remaining codes are data vectors plus small noise, so the codebook always keeps `num_codes` codes.
"""

from __future__ import annotations

import torch

from .search import nearest_code_distances, nearest_code_indices


@torch.no_grad()
def kmeans_plus_plus_init(
    vectors: torch.Tensor,
    num_codes: int,
    num_iterations: int = 10,
    noise_scale: float = 1e-3,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """`num_codes` centres (num_codes, D) from k-means++ seeding followed by Lloyd iterations."""
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise ValueError(f"k-means needs a non-empty (N, D) matrix of vectors, got shape {tuple(vectors.shape)}")
    vectors = vectors.float()
    centres = _seed(vectors, num_codes, noise_scale, generator)
    for _ in range(num_iterations):
        centres = _lloyd_step(vectors, centres)
    return centres


def _seed(vectors: torch.Tensor, num_codes: int, noise_scale: float, generator: torch.Generator | None) -> torch.Tensor:
    num_vectors = vectors.shape[0]
    centres = torch.empty(num_codes, vectors.shape[1], dtype=vectors.dtype, device=vectors.device)
    first = int(torch.randint(num_vectors, (1,), generator=generator))
    centres[0] = vectors[first]
    # Squared distance of every vector to its nearest chosen centre, updated one centre at a time.
    nearest = (vectors - centres[0]).pow(2).sum(dim=1)
    spread = noise_scale * vectors.std().clamp_min(1e-6)
    for k in range(1, num_codes):
        total = float(nearest.sum())
        if total > 0:
            choice = int(torch.multinomial((nearest / total).cpu(), 1, generator=generator))
            centres[k] = vectors[choice]
        else:
            # Every distinct vector is already a centre (K > N): reuse a random vector, jittered so
            # that no two codes coincide. This is where vqtorch drops codes instead.
            choice = int(torch.randint(num_vectors, (1,), generator=generator))
            jitter = torch.randn(vectors.shape[1], generator=generator).to(vectors.device) * spread
            centres[k] = vectors[choice] + jitter
        nearest = torch.minimum(nearest, (vectors - centres[k]).pow(2).sum(dim=1))
    return centres


def _lloyd_step(vectors: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """One assignment + mean step; a centre that no vector picks keeps its position."""
    assignment = nearest_code_indices(vectors, centres)
    sums = torch.zeros_like(centres).index_add_(0, assignment, vectors)
    counts = torch.bincount(assignment, minlength=centres.shape[0]).to(vectors.dtype)
    used = counts > 0
    updated = centres.clone()
    updated[used] = sums[used] / counts[used, None]
    return updated


__all__ = ["kmeans_plus_plus_init", "nearest_code_distances"]
