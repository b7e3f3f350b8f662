"""k-means++ initialisation of the codebook, on CPU or GPU, keeping every code.

vqtorch's version needs CUDA and cupy and silently shrinks the codebook when the batch holds fewer
vectors than codes. Here seeding and Lloyd iterations are plain PyTorch with blocked distance
computations, and when the data cannot fill every code (K > N, or many duplicate vectors) the
remaining codes are data vectors plus small noise, so the codebook always keeps `num_codes` codes.
"""

from __future__ import annotations

import torch

from .search import nearest_code_indices


@torch.no_grad()
def kmeans_plus_plus_init(
    vectors: torch.Tensor,
    num_codes: int,
    num_iterations: int = 10,
    noise_scale: float = 1e-2,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """`num_codes` centres (num_codes, D) from k-means++ seeding followed by Lloyd iterations."""
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise ValueError(f"k-means needs a non-empty (N, D) matrix of vectors, got shape {tuple(vectors.shape)}")
    vectors = vectors.float()
    centres = _seed(vectors, num_codes, generator)
    for _ in range(num_iterations):
        centres = _lloyd_step(vectors, centres)
    return _fill_with_jittered_vectors(centres, vectors, num_codes, noise_scale, generator)


def _seed(vectors: torch.Tensor, num_codes: int, generator: torch.Generator | None) -> torch.Tensor:
    """k-means++ seeding. When the data has fewer distinct vectors than codes, every distinct vector
    becomes a centre and the rest are filled by `_fill_with_jittered_vectors` (vqtorch drops them)."""
    num_vectors = vectors.shape[0]
    centres = torch.empty(num_codes, vectors.shape[1], dtype=vectors.dtype, device=vectors.device)
    centres[0] = vectors[int(torch.randint(num_vectors, (1,), generator=generator))]
    # Squared distance of every vector to its nearest chosen centre, updated one centre at a time.
    nearest = (vectors - centres[0]).pow(2).sum(dim=1)
    for k in range(1, num_codes):
        total = float(nearest.sum())
        if total <= 0:
            return centres[:k]
        choice = int(torch.multinomial((nearest / total).cpu(), 1, generator=generator))
        centres[k] = vectors[choice]
        nearest = torch.minimum(nearest, (vectors - centres[k]).pow(2).sum(dim=1))
    return centres


def _fill_with_jittered_vectors(
    centres: torch.Tensor, vectors: torch.Tensor, num_codes: int, noise_scale: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Complete `centres` to `num_codes` rows with random data vectors plus noise, so that no two
    codes coincide and each extra code still sits in the data's region."""
    missing = num_codes - centres.shape[0]
    if missing == 0:
        return centres
    picks = torch.randint(vectors.shape[0], (missing,), generator=generator).to(vectors.device)
    spread = noise_scale * vectors.std(dim=0, unbiased=False).clamp_min(1e-6)
    jitter = torch.randn(missing, vectors.shape[1], generator=generator).to(vectors.device) * spread
    return torch.cat([centres, vectors[picks] + jitter])


def _lloyd_step(vectors: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """One assignment + mean step; a centre that no vector picks keeps its position."""
    assignment = nearest_code_indices(vectors, centres)
    sums = torch.zeros_like(centres).index_add_(0, assignment, vectors)
    counts = torch.bincount(assignment, minlength=centres.shape[0]).to(vectors.dtype)
    used = counts > 0
    updated = centres.clone()
    updated[used] = sums[used] / counts[used, None]
    return updated


__all__ = ["kmeans_plus_plus_init"]
