"""k-means++ initialisation of the codebook, on CPU or GPU, keeping every code, fast up to 2^18 codes.

vqtorch's version needs CUDA and cupy and silently shrinks the codebook when the batch holds fewer
vectors than codes. Here everything is plain PyTorch over the nearest-code search (search.py, so FAISS on
the CPU and the fused kernel on CUDA), and the codebook always keeps `num_codes` distinct codes:

- Duplicate vectors are merged first (each distinct vector keeps its multiplicity as a weight), so two
  centres can never be the same vector.
- When the data has at most `num_codes` distinct vectors, every distinct vector is a centre (what
  k-means++ would pick, one by one, without the cost) and the remaining codes are data vectors plus
  small noise.
- Otherwise the seeding is k-means++ drawn in rounds: each round draws a batch of new centres at once,
  without replacement, with probability proportional to weight x squared distance to the nearest centre
  chosen so far (Efraimidis-Spirakis keys), then updates those distances with one search against the
  batch. The first `EXACT_SEEDS` rounds draw one centre each, exactly as k-means++ does; after that a
  round draws a fraction (`SEEDING_GROWTH`) of the centres already chosen, so the seeding takes
  O(log K) rounds and its distance work is one N x K search in all, instead of K passes over the data
  with a sampling step each (the old loop spent 60% of its 15 s at K = 16384 in `torch.multinomial`).
  Drawing many centres per round against distances that are not yet updated is the trade k-means||
  (Bahmani et al., 2012) makes too; on clustered data it reached the same k-means cost as one-at-a-time
  k-means++ (docs/benchmarks.md).
- Lloyd iterations stop early once no centre moves.
"""

from __future__ import annotations

import math

import torch

from .search import nearest_code_indices

# New centres drawn per seeding round, as a fraction of those already chosen, once the first
# EXACT_SEEDS centres have been drawn one at a time (plain k-means++, which reliably puts one centre in
# each of a few well-separated clusters; a batch can put two in one and miss another).
SEEDING_GROWTH = 0.25
EXACT_SEEDS = 64


@torch.no_grad()
def kmeans_plus_plus_init(
    vectors: torch.Tensor,
    num_codes: int,
    num_iterations: int = 10,
    noise_scale: float = 1e-2,
    generator: torch.Generator | None = None,
    search_backend: str = "auto",
) -> torch.Tensor:
    """`num_codes` distinct centres (num_codes, D) from k-means++ seeding followed by Lloyd iterations.

    Example:
        >>> import torch
        >>> data = torch.cat([torch.randn(100, 2) * 0.1 + 5, torch.randn(100, 2) * 0.1 - 5])
        >>> centres = kmeans_plus_plus_init(data, 2, generator=torch.Generator().manual_seed(0))
        >>> sorted(round(float(c)) for c in centres[:, 0])
        [-5, 5]
    """
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise ValueError(f"k-means needs a non-empty (N, D) matrix of vectors, got shape {tuple(vectors.shape)}")
    if num_codes < 1:
        raise ValueError(f"k-means needs num_codes >= 1, got {num_codes}")
    vectors = vectors.float()
    distinct, weights = torch.unique(vectors, dim=0, return_counts=True)
    if distinct.shape[0] <= num_codes:
        order = torch.randperm(distinct.shape[0], generator=generator).to(distinct.device)
        centres = distinct[order]  # every distinct vector; Lloyd would leave each where it is
    else:
        centres = _seed(distinct, weights.float(), num_codes, generator, search_backend)
        centres = _lloyd(vectors, centres, num_iterations, search_backend)
    return _fill_with_jittered_vectors(centres, vectors, num_codes, noise_scale, generator)


def _seed(
    points: torch.Tensor, weights: torch.Tensor, num_codes: int, generator: torch.Generator | None, search_backend: str
) -> torch.Tensor:
    """k-means++ seeding in rounds over distinct `points` with multiplicities `weights` (see the module docstring).
    Needs more distinct points than `num_codes`, so every round finds points at a positive distance."""
    first = int(torch.multinomial(weights.cpu(), 1, generator=generator))
    chosen = [torch.tensor([first], device=points.device)]
    nearest = (points - points[first]).pow(2).sum(dim=1)
    num_chosen = 1
    while num_chosen < num_codes:
        batch = 1 if num_chosen < EXACT_SEEDS else math.ceil(SEEDING_GROWTH * num_chosen)
        batch = min(num_codes - num_chosen, batch)
        picks = _weighted_sample_without_replacement(weights * nearest, batch, generator)
        chosen.append(picks)
        num_chosen += batch
        new_centres = points[picks]
        assignment = nearest_code_indices(points, new_centres, backend=search_backend)
        nearest = torch.minimum(nearest, (points - new_centres[assignment]).pow(2).sum(dim=1))
        nearest[picks] = 0  # exactly, whatever the rounding of the line above
    return points[torch.cat(chosen)]


def _weighted_sample_without_replacement(
    weights: torch.Tensor, count: int, generator: torch.Generator | None
) -> torch.Tensor:
    """`count` indices drawn without replacement with probability proportional to `weights` (Efraimidis and
    Spirakis, 2006: the `count` largest keys u^(1/w), compared as log(u) / w). Zero weights are never drawn."""
    uniform = torch.rand(weights.shape[0], generator=generator, dtype=torch.float64).to(weights.device)
    keys = torch.log(uniform.clamp_min(1e-300)) / weights.double()  # -inf where the weight is 0
    return torch.topk(keys, count, sorted=False).indices


def _lloyd(vectors: torch.Tensor, centres: torch.Tensor, num_iterations: int, search_backend: str) -> torch.Tensor:
    for _ in range(num_iterations):
        updated = _lloyd_step(vectors, centres, search_backend)
        if torch.equal(updated, centres):
            break
        centres = updated
    return centres


def _lloyd_step(vectors: torch.Tensor, centres: torch.Tensor, search_backend: str = "auto") -> torch.Tensor:
    """One assignment + mean step; a centre that no vector picks keeps its position."""
    assignment = nearest_code_indices(vectors, centres, backend=search_backend)
    sums = torch.zeros_like(centres).index_add_(0, assignment, vectors)
    counts = torch.bincount(assignment, minlength=centres.shape[0]).to(vectors.dtype)
    used = counts > 0
    updated = centres.clone()
    updated[used] = sums[used] / counts[used, None]
    return updated


def _fill_with_jittered_vectors(
    centres: torch.Tensor, vectors: torch.Tensor, num_codes: int, noise_scale: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Complete `centres` to `num_codes` rows with random data vectors plus noise, so that no two
    codes coincide and each extra code still sits in the data's region."""
    missing = num_codes - centres.shape[0]
    if missing == 0:
        return centres
    picks = torch.randint(vectors.shape[0], (missing,), generator=generator).to(vectors.device)
    # Noise relative to the data's spread, and never below float32 resolution at the data's magnitude (so that
    # jittered copies of one vector differ even when all vectors are equal).
    floor = 1e-3 * (1.0 + vectors.abs().amax())
    spread = noise_scale * vectors.std(dim=0, unbiased=False).clamp_min(floor)
    jitter = torch.randn(missing, vectors.shape[1], generator=generator).to(vectors.device) * spread
    return torch.cat([centres, vectors[picks] + jitter])


__all__ = ["kmeans_plus_plus_init"]
