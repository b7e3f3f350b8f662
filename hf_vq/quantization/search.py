"""Nearest-code search: one entry point, `nearest_code_indices`, with three backends behind it.

- "blocked" (pure PyTorch, every device, the fallback): argmin_k ||z - c_k||^2 = argmin_k (||c_k||^2 - 2 z.c_k)
  (||z||^2 is the same for every code and is dropped), one fused `addmm` plus `argmin` per block of rows. At most
  `max_block_elements` distances exist at once (N = K = 65536 would otherwise need a 16 GiB matrix); when a single
  row of distances is larger than that (huge codebooks), the codes are tiled too and a running minimum is kept
  (search_blocked.py). It is also what "auto" runs under torch.compile / torch.export: the one traceable backend.
- "faiss" (CPU, `faiss-cpu`): exact `faiss.knn` with k = 1 (IndexFlatL2 arithmetic), whose fused kernel reduces
  distances to the best code without storing them: 0.03-0.2x the blocked search's time for D <= 32 (search_faiss.py).
- "triton" (CUDA): a fused kernel that keeps a running minimum per row and never writes the distance matrix
  (search_triton.py).

"auto" picks triton on CUDA when it is installed, FAISS on the CPU when it is installed and faster for the code
dimension (D <= 32), and the blocked search everywhere else; a forced backend that cannot run raises
`SearchBackendUnavailableError` saying why.

Every backend computes in float32 whatever the input dtype (bf16 values are exact in float32; products of two bf16
values too), and breaks ties by the lowest code index. Codes at exactly equal distance (duplicate codes) therefore
give the same index on every backend. Codes whose distances differ only by float32 rounding may not: each backend
sums the D products in its own order (and FAISS adds ||z||^2), so such near-ties can resolve to either code; the
tests accept an index there only if its exact (float64) distance equals the minimum up to that rounding.
"""

from __future__ import annotations

import os

import torch

# The blocked search and its block sizes live in search_blocked.py (which search_faiss.py falls back on); re-exported.
from .search_blocked import (
    ACCELERATOR_MAX_BLOCK_ELEMENTS,
    CPU_MAX_BLOCK_ELEMENTS,
    MAX_EXACT_TILE_CODES,
    MIN_ROWS_PER_BLOCK,
    blocked_nearest_code_indices,
    default_max_block_elements,
)
from .search_faiss import faiss_available, faiss_nearest_code_indices, faiss_wins
from .search_triton import triton_available, triton_nearest_code_indices

SEARCH_BACKENDS = ("auto", "blocked", "faiss", "triton")
DISTANCES = ("euclidean", "cosine")


class SearchBackendUnavailableError(RuntimeError):
    """A forced search backend cannot run here (package missing, or tensors on a device it does not serve)."""


def check_search_backend(backend: str) -> None:
    """Fail early (e.g. when a quantizer is built) on an unknown backend name or a forced one not installed."""
    if backend not in SEARCH_BACKENDS:
        raise ValueError(f"unknown search_backend {backend!r}; use one of {SEARCH_BACKENDS}")
    if backend == "faiss" and not faiss_available():
        raise SearchBackendUnavailableError(
            "search_backend='faiss' needs the faiss-cpu package: `pip install faiss-cpu`, or use search_backend='auto'"
        )
    if backend == "triton" and not triton_available():
        raise SearchBackendUnavailableError(
            "search_backend='triton' needs the triton package (shipped with CUDA builds of PyTorch), "
            "or use search_backend='auto'"
        )


def resolve_search_backend(backend: str, device: torch.device, embed_dim: int) -> str:
    """The backend that `nearest_code_indices(..., backend=backend)` runs for `embed_dim`-dimensional tensors on
    `device`: "auto" is triton on CUDA, FAISS on the CPU where it is the faster one (D <= 32), else blocked."""
    if backend == "auto" and torch.compiler.is_compiling():
        # Under torch.compile / torch.export the search is traced into the graph (no graph break, exportable): only
        # the pure PyTorch search can be. A forced "faiss" or "triton" still runs, eagerly, at a graph break.
        return "blocked"
    check_search_backend(backend)
    if backend == "auto":
        if device.type == "cuda" and triton_available():
            return "triton"
        if device.type == "cpu" and faiss_available() and faiss_wins(embed_dim):
            return "faiss"
        return "blocked"
    if backend == "faiss" and device.type != "cpu":
        raise SearchBackendUnavailableError(
            f"search_backend='faiss' searches CPU tensors only, got tensors on {device}; use 'auto' or 'triton'"
        )
    if backend == "triton" and device.type != "cuda" and not _triton_interpreted(device):
        raise SearchBackendUnavailableError(
            f"search_backend='triton' needs CUDA tensors, got tensors on {device} (set TRITON_INTERPRET=1 to run the "
            "kernel interpreted on the CPU, slowly, for testing); use 'auto' or 'blocked'"
        )
    return backend


def _triton_interpreted(device: torch.device) -> bool:
    return device.type == "cpu" and os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@torch.no_grad()
def nearest_code_indices(
    vectors: torch.Tensor,
    codebook: torch.Tensor,
    distance: str = "euclidean",
    max_block_elements: int | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Index (int64) of the nearest code for each row of `vectors` (N, D) in `codebook` (K, D).

    For `distance="cosine"` both inputs must already be l2-normalised; the nearest code is then the one with the
    largest dot product. `backend`: "auto", "blocked", "faiss" or "triton" (see the module docstring).
    `max_block_elements` bounds how many distances the blocked search holds at once (None: a per-device default).

    Example:
        >>> import torch
        >>> codebook = torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
        >>> nearest_code_indices(torch.tensor([[0.9, 1.2], [-0.1, 0.0]]), codebook, backend="blocked").tolist()
        [1, 0]
    """
    _check_inputs(vectors, codebook, distance)
    chosen = resolve_search_backend(backend, vectors.device, vectors.shape[1])
    if chosen == "faiss":
        return faiss_nearest_code_indices(vectors, codebook, distance)
    if chosen == "triton":
        return triton_nearest_code_indices(vectors, codebook, distance)
    return blocked_nearest_code_indices(vectors, codebook, distance, max_block_elements)


def _check_inputs(vectors: torch.Tensor, codebook: torch.Tensor, distance: str) -> None:
    if vectors.ndim != 2 or codebook.ndim != 2 or vectors.shape[1] != codebook.shape[1]:
        raise ValueError(
            f"nearest_code_indices expects vectors (N, D) and codebook (K, D) with the same D; "
            f"got {tuple(vectors.shape)} and {tuple(codebook.shape)}"
        )
    if codebook.shape[0] == 0:
        raise ValueError("nearest_code_indices needs a codebook with at least one code, got shape (0, D)")
    if vectors.device != codebook.device:
        raise ValueError(
            f"vectors are on {vectors.device} but the codebook is on {codebook.device}; move them together"
        )
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; use 'euclidean' or 'cosine'")


__all__ = [
    "ACCELERATOR_MAX_BLOCK_ELEMENTS",
    "CPU_MAX_BLOCK_ELEMENTS",
    "MAX_EXACT_TILE_CODES",
    "MIN_ROWS_PER_BLOCK",
    "SEARCH_BACKENDS",
    "SearchBackendUnavailableError",
    "blocked_nearest_code_indices",
    "check_search_backend",
    "default_max_block_elements",
    "nearest_code_indices",
    "resolve_search_backend",
]
