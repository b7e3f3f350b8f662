"""Nearest-code search that never materialises more than a bounded block of the distance matrix.

For euclidean distance, argmin_k ||z - c_k||^2 = argmin_k (||c_k||^2 - 2 z.c_k): the ||z||^2 term is
the same for every code and is dropped, so one block costs a single fused `addmm` plus an `argmin`.
Rows of `vectors` are processed in blocks of at most `max_block_elements` distances, so memory stays
bounded (N = K = 65536 would otherwise need a 16 GiB matrix) while each block is still one large
GEMM, which is what the bare, unblocked search costs too.
"""

from __future__ import annotations

import torch

# 2**24 float32 distances = 64 MiB per block: large enough that the GEMM stays efficient, small
# enough that the search fits in cache-friendly pieces and a bounded amount of memory.
DEFAULT_MAX_BLOCK_ELEMENTS = 2**24


@torch.no_grad()
def nearest_code_indices(
    vectors: torch.Tensor,
    codebook: torch.Tensor,
    distance: str = "euclidean",
    max_block_elements: int = DEFAULT_MAX_BLOCK_ELEMENTS,
) -> torch.Tensor:
    """Index of the nearest code for each row of `vectors` (N, D) in `codebook` (K, D).

    For `distance="cosine"` both inputs must already be l2-normalised; the nearest code is then the
    one with the largest dot product.
    """
    if vectors.ndim != 2 or codebook.ndim != 2 or vectors.shape[1] != codebook.shape[1]:
        raise ValueError(
            f"nearest_code_indices expects vectors (N, D) and codebook (K, D) with the same D; "
            f"got {tuple(vectors.shape)} and {tuple(codebook.shape)}"
        )
    num_vectors, num_codes = vectors.shape[0], codebook.shape[0]
    rows_per_block = max(1, max_block_elements // max(num_codes, 1))
    indices = torch.empty(num_vectors, dtype=torch.long, device=vectors.device)
    if distance == "euclidean":
        code_norms = codebook.pow(2).sum(dim=1)
        for start in range(0, num_vectors, rows_per_block):
            block = vectors[start : start + rows_per_block]
            scores = torch.addmm(code_norms, block, codebook.t(), beta=1.0, alpha=-2.0)
            indices[start : start + rows_per_block] = scores.argmin(dim=1)
    elif distance == "cosine":
        for start in range(0, num_vectors, rows_per_block):
            block = vectors[start : start + rows_per_block]
            indices[start : start + rows_per_block] = (block @ codebook.t()).argmax(dim=1)
    else:
        raise ValueError(f"unknown distance {distance!r}; use 'euclidean' or 'cosine'")
    return indices


@torch.no_grad()
def nearest_code_distances(
    vectors: torch.Tensor, codebook: torch.Tensor, max_block_elements: int = DEFAULT_MAX_BLOCK_ELEMENTS
) -> torch.Tensor:
    """Squared euclidean distance from each row of `vectors` to its nearest code (k-means++ weights)."""
    num_codes = codebook.shape[0]
    rows_per_block = max(1, max_block_elements // max(num_codes, 1))
    code_norms = codebook.pow(2).sum(dim=1)
    out = torch.empty(vectors.shape[0], dtype=vectors.dtype, device=vectors.device)
    for start in range(0, vectors.shape[0], rows_per_block):
        block = vectors[start : start + rows_per_block]
        scores = torch.addmm(code_norms, block, codebook.t(), beta=1.0, alpha=-2.0)
        out[start : start + rows_per_block] = (scores.min(dim=1).values + block.pow(2).sum(dim=1)).clamp_min(0)
    return out
