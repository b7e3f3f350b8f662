"""Nearest-code search that never materialises more than a bounded block of the distance matrix.

For euclidean distance, argmin_k ||z - c_k||^2 = argmin_k (||c_k||^2 - 2 z.c_k): the ||z||^2 term is
the same for every code and is dropped, so one block costs a single fused `addmm` plus an `argmin`.
Rows of `vectors` are processed in blocks of at most `max_block_elements` distances, so memory stays
bounded (N = K = 65536 would otherwise need a 16 GiB matrix) while each block is still one GEMM.
"""

from __future__ import annotations

import torch

# Default block sizes, in float32 distances. CPU: 2**20 (4 MiB), so the block that the GEMM writes is
# still in cache when argmin reads it, and the allocator reuses one heap buffer for every block
# instead of mapping (and page-faulting) fresh memory each time: 1.5-4x faster than 2**24 on a 2-core
# EPYC (scripts/benchmark_quantizer.py, docs/benchmarks.md). Accelerators: 2**24 (64 MiB) keeps each
# GEMM large enough to fill the device.
CPU_MAX_BLOCK_ELEMENTS = 2**20
ACCELERATOR_MAX_BLOCK_ELEMENTS = 2**24


def default_max_block_elements(device: torch.device) -> int:
    """Block size used when none is given: cache-sized on CPU, large on accelerators."""
    return CPU_MAX_BLOCK_ELEMENTS if device.type == "cpu" else ACCELERATOR_MAX_BLOCK_ELEMENTS


def _rows_per_block(vectors: torch.Tensor, num_codes: int, max_block_elements: int | None) -> int:
    if max_block_elements is None:
        max_block_elements = default_max_block_elements(vectors.device)
    return max(1, max_block_elements // max(num_codes, 1))


@torch.no_grad()
def nearest_code_indices(
    vectors: torch.Tensor,
    codebook: torch.Tensor,
    distance: str = "euclidean",
    max_block_elements: int | None = None,
) -> torch.Tensor:
    """Index of the nearest code for each row of `vectors` (N, D) in `codebook` (K, D).

    For `distance="cosine"` both inputs must already be l2-normalised; the nearest code is then the
    one with the largest dot product. `max_block_elements` bounds how many distances exist at once
    (None: `default_max_block_elements(vectors.device)`).
    """
    if vectors.ndim != 2 or codebook.ndim != 2 or vectors.shape[1] != codebook.shape[1]:
        raise ValueError(
            f"nearest_code_indices expects vectors (N, D) and codebook (K, D) with the same D; "
            f"got {tuple(vectors.shape)} and {tuple(codebook.shape)}"
        )
    num_vectors, num_codes = vectors.shape[0], codebook.shape[0]
    rows_per_block = _rows_per_block(vectors, num_codes, max_block_elements)
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
