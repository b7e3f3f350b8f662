"""Nearest-code search on the CPU with FAISS: exact k = 1 search, no index to train, no approximation.

`faiss.knn` (the arithmetic of `IndexFlatL2` / `IndexFlatIP`, without copying the codebook into an index) computes
distances with BLAS in tiles and reduces every tile to the running best code while the tile is still in cache, so
the distance matrix is never written out and read back; on one thread that took 0.08x the time of the blocked
PyTorch search at D = 8, K = 16384 (docs/benchmarks.md). It works on float32 numpy views of the CPU tensors (no
copy when they already are contiguous float32).

Where it wins (one thread, 2-core EPYC, docs/benchmarks.md): FAISS has a fused distance + argmin kernel for small
code dimensions and uses plain BLAS tiles otherwise. For D <= 32 it took 0.03-0.2x the blocked search's time; for
D >= 40 it was slower (1.3-2x at D = 64: PyTorch's GEMM beats the BLAS inside the faiss-cpu wheel). Hence
`faiss_wins`. Cosine search (l2-normalised inputs) runs as an L2 search too: for unit vectors
||z - c||^2 = 2 - 2 z.c, so the nearest code is the same, and only the L2 search has the fused kernel.

FAISS falls back to a per-pair loop (30x slower here) when N * D is below its `distance_compute_blas_threshold`
(128000 in faiss 1.15: any batch under 16384 vectors at D = 8); the search lowers it for the duration of the call.

FAISS is imported lazily by name: it is a regular dependency where its wheels exist, and this file is also copied
into saved checkpoints for `trust_remote_code=True`, where it may be missing (the search then falls back to the
blocked PyTorch one).
"""

from __future__ import annotations

import importlib
import importlib.util

import numpy as np
import torch

from .search_blocked import blocked_nearest_code_indices

# Largest code dimension for which FAISS beats the blocked PyTorch search on the CPU (see the module docstring).
FAISS_MAX_WINNING_DIM = 32
# Smallest N * D for which FAISS's BLAS / fused path is used instead of its per-pair loop.
_BLAS_THRESHOLD = 20
# Codes searched per FAISS call, as float32 values (1 MiB): FAISS's fused kernel streams the whole codebook past
# each small group of queries, so a codebook larger than the cache is read from memory again and again (at
# K = 262144, D = 8 a step took 9x the time of K = 65536). Chunks of the codebook that stay in cache, with a
# running best across chunks, keep the time linear in K.
CHUNK_VALUES = 2**18


def faiss_wins(embed_dim: int) -> bool:
    """Whether FAISS is the faster CPU search for codes of `embed_dim` dimensions (measured, see the docstring)."""
    return embed_dim <= FAISS_MAX_WINNING_DIM


# Looked up once, at import, and not with functools.cache: the check runs inside torch.compile'd quantizers, and
# Dynamo warns at every lru_cache-wrapped call it traces; a module constant it reads silently.
_FAISS_INSTALLED = importlib.util.find_spec("faiss") is not None


def faiss_available() -> bool:
    """Whether the `faiss` package (faiss-cpu) can be imported."""
    return _FAISS_INSTALLED


def _faiss():
    return importlib.import_module("faiss")


def _float32_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to(torch.float32).contiguous().numpy()


# Run eagerly under torch.compile: Dynamo cannot trace the backend's foreign kernels; the graph breaks around it
# (search.resolve_search_backend picks the traceable blocked search under "auto" instead).
@torch.compiler.disable
@torch.no_grad()
def faiss_nearest_code_indices(
    vectors: torch.Tensor, codebook: torch.Tensor, distance: str = "euclidean"
) -> torch.Tensor:
    """Index (int64) of the nearest code for each row of the CPU tensor `vectors` (N, D) in `codebook` (K, D).

    Uses as many threads as PyTorch does (`torch.get_num_threads()`). Ties go to the lowest index (FAISS keeps the
    first best code with a strict comparison). Rows whose every distance overflows float32 (FAISS answers -1) are
    searched again by the blocked PyTorch search.
    """
    faiss = _faiss()
    threads = torch.get_num_threads()
    if faiss.omp_get_max_threads() != threads:
        faiss.omp_set_num_threads(threads)
    del distance  # cosine inputs are l2-normalised: the L2 nearest code is the cosine nearest code
    queries, codes = _float32_numpy(vectors), _float32_numpy(codebook)
    chunk = max(1, CHUNK_VALUES // codes.shape[1])
    saved_threshold = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = _BLAS_THRESHOLD
    try:
        best, found = faiss.knn(queries, codes[:chunk], 1, metric=faiss.METRIC_L2)
        for start in range(chunk, codes.shape[0], chunk):
            distances, chunk_found = faiss.knn(queries, codes[start : start + chunk], 1, metric=faiss.METRIC_L2)
            better = (distances < best) & (chunk_found >= 0)  # strict: on ties the earlier, lower index stays
            best = np.where(better, distances, best)
            found = np.where(better, chunk_found + start, found)
    finally:
        faiss.cvar.distance_compute_blas_threshold = saved_threshold
    indices = torch.from_numpy(np.ascontiguousarray(found[:, 0])).to(torch.long)
    missing = indices < 0
    if bool(missing.any()):
        indices[missing] = blocked_nearest_code_indices(vectors[missing], codebook)
    return indices


__all__ = ["FAISS_MAX_WINNING_DIM", "faiss_available", "faiss_nearest_code_indices", "faiss_wins"]
