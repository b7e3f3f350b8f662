"""Nearest-code search: one entry point, `nearest_code_indices`, with three backends behind it.

- "blocked" (pure PyTorch, every device, the fallback): argmin_k ||z - c_k||^2 = argmin_k (||c_k||^2 - 2 z.c_k)
  (||z||^2 is the same for every code and is dropped), one fused `addmm` plus `argmin` per block of rows. At most
  `max_block_elements` distances exist at once (N = K = 65536 would otherwise need a 16 GiB matrix); when a single
  row of distances is larger than that (huge codebooks), the codes are tiled too and a running minimum is kept.
- "faiss" (CPU, `faiss-cpu`): exact `faiss.knn` with k = 1 (IndexFlatL2 arithmetic), whose fused kernel reduces
  distances to the best code without storing them: 0.03-0.2x the blocked search's time for D <= 32 (search_faiss.py).
- "triton" (CUDA): a fused kernel that keeps a running minimum per row and never writes the distance matrix
  (search_triton.py).

"auto" picks triton on CUDA when it is installed, FAISS on the CPU when it is installed and faster for the code
dimension (D <= 32), and the blocked search everywhere else; a forced backend that cannot run raises `SearchBackendUnavailableError` saying why.

Every backend computes in float32 whatever the input dtype (bf16 values are exact in float32; products of two bf16
values too), and breaks ties by the lowest code index. Codes at exactly equal distance (duplicate codes) therefore
give the same index on every backend. Codes whose distances differ only by float32 rounding may not: each backend
sums the D products in its own order (and FAISS adds ||z||^2), so such near-ties can resolve to either code; the
tests accept an index there only if its exact (float64) distance equals the minimum up to that rounding.
"""

from __future__ import annotations

import os

import torch

from .search_faiss import faiss_available, faiss_nearest_code_indices, faiss_wins
from .search_triton import triton_available, triton_nearest_code_indices

SEARCH_BACKENDS = ("auto", "blocked", "faiss", "triton")
DISTANCES = ("euclidean", "cosine")

# Default block sizes, in float32 distances. CPU: 2**18 (1 MiB, one reused scratch buffer), so the block that
# the GEMM writes is still in the core's L2 cache when the row minima read it, and it is never page-faulted
# again. With the minimum-marking reduction (_lowest_index_of_minimum_) 2**18 took 0.89-0.96x the time of
# 2**17 and 0.86-0.94x that of 2**20 on a 2-core EPYC (one thread, D = 32 to 128, K = 1024 to 16384;
# docs/benchmarks.md). Accelerators: 2**24 (64 MiB) keeps each GEMM large enough to fill the device.
CPU_MAX_BLOCK_ELEMENTS = 2**18
ACCELERATOR_MAX_BLOCK_ELEMENTS = 2**24
# Fewest rows a block keeps before the codes are tiled as well: a GEMM of a handful of rows runs at a fraction
# of the speed of one with a few hundred (at K = 262144 and 2**20 distances a block would hold 4 rows).
MIN_ROWS_PER_BLOCK = 256
# Widest tile of codes whose column numbers float32 holds exactly (see _lowest_index_of_minimum_).
MAX_EXACT_TILE_CODES = 2**24


class SearchBackendUnavailableError(RuntimeError):
    """A forced search backend cannot run here (package missing, or tensors on a device it does not serve)."""


def default_max_block_elements(device: torch.device) -> int:
    """Block size used when none is given: cache-sized on CPU, large on accelerators."""
    return CPU_MAX_BLOCK_ELEMENTS if device.type == "cpu" else ACCELERATOR_MAX_BLOCK_ELEMENTS


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


# Run eagerly under torch.compile: Dynamo cannot trace FAISS's C globals or the backend dispatch, and the search
# (no gradient, integer output) gains nothing from being traced; the graph breaks around it instead.
@torch.compiler.disable
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
        raise ValueError(f"vectors are on {vectors.device} but the codebook is on {codebook.device}; move them together")
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; use 'euclidean' or 'cosine'")


@torch.no_grad()
def blocked_nearest_code_indices(
    vectors: torch.Tensor, codebook: torch.Tensor, distance: str = "euclidean", max_block_elements: int | None = None
) -> torch.Tensor:
    """The pure PyTorch search: blocks of rows (and, for huge codebooks, of codes), float32, lowest index on ties."""
    vectors, codebook = vectors.float(), codebook.float()
    if max_block_elements is None:
        max_block_elements = default_max_block_elements(vectors.device)
    num_vectors, num_codes = vectors.shape[0], codebook.shape[0]
    rows_per_block, codes_per_tile = _block_shape(num_vectors, num_codes, max_block_elements)
    # Euclidean: ||c||^2 - 2 z.c; cosine: -z.c. Both are minimised, so one code path serves both.
    offsets = codebook.pow(2).sum(dim=1) if distance == "euclidean" else codebook.new_zeros(num_codes)
    alpha = -2.0 if distance == "euclidean" else -1.0
    # One scratch buffer for every block's distances: it stays in cache and is never page-faulted again.
    scratch = vectors.new_empty(rows_per_block * codes_per_tile)  # float32, whatever the default dtype
    indices = torch.empty(num_vectors, dtype=torch.long, device=vectors.device)
    for start in range(0, num_vectors, rows_per_block):
        block = vectors[start : start + rows_per_block]
        indices[start : start + rows_per_block] = _block_argmin(block, codebook, offsets, alpha, codes_per_tile, scratch)
    return indices


def _block_shape(num_vectors: int, num_codes: int, max_block_elements: int) -> tuple[int, int]:
    """(rows, codes) of one block of distances: all codes if enough rows fit, else tiles of the codebook too."""
    rows_per_block = max(1, max_block_elements // num_codes)
    codes_per_tile = num_codes
    if rows_per_block < MIN_ROWS_PER_BLOCK and num_vectors > rows_per_block:
        rows_per_block = min(num_vectors, MIN_ROWS_PER_BLOCK)
        codes_per_tile = max(1, max_block_elements // rows_per_block)
    return min(rows_per_block, num_vectors), min(codes_per_tile, num_codes, MAX_EXACT_TILE_CODES)


def _block_argmin(
    block: torch.Tensor, codebook: torch.Tensor, offsets: torch.Tensor, alpha: float, tile: int, scratch: torch.Tensor
) -> torch.Tensor:
    """argmin over the codes for one block of rows, `tile` codes at a time with a running minimum (strict `<`:
    the lowest index wins ties across tiles as within one)."""
    best, best_index = _tile_min(block, codebook[:tile], offsets[:tile], alpha, scratch)
    for start in range(tile, codebook.shape[0], tile):
        tile_best, tile_index = _tile_min(block, codebook[start : start + tile], offsets[start : start + tile], alpha, scratch)
        better = tile_best < best
        best = torch.where(better, tile_best, best)
        best_index = torch.where(better, tile_index + start, best_index)
    return best_index


def _tile_min(
    block: torch.Tensor, codes: torch.Tensor, offsets: torch.Tensor, alpha: float, scratch: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Smallest score of each row against `codes` and the lowest index reaching it; overwrites `scratch`."""
    scores = scratch[: block.shape[0] * codes.shape[0]].view(block.shape[0], codes.shape[0])
    torch.addmm(offsets, block, codes.t(), beta=1.0, alpha=alpha, out=scores)
    if scores.device.type != "cpu":
        return scores.min(dim=1)
    best = scores.amin(dim=1, keepdim=True)
    indices = _lowest_index_of_minimum_(scores, best)
    unmatched = indices == scores.shape[1]  # a NaN score (inf - inf from an overflowing code) matched nothing
    if bool(unmatched.any()):
        rescored = torch.addmm(offsets, block[unmatched], codes.t(), beta=1.0, alpha=alpha)
        indices[unmatched] = rescored.argmin(dim=1)
    return best.squeeze(1), indices


def _lowest_index_of_minimum_(scores: torch.Tensor, row_minimum: torch.Tensor) -> torch.Tensor:
    """The lowest column index where each row of `scores` equals `row_minimum`, found with vectorised passes only;
    `scores` is overwritten. On the CPU `Tensor.argmin(dim=1)` tracks an index per element and runs about 10x slower
    than `amin` (one thread, 128 x 1024 float32: 92 us against 8 us, beside 176 us for the GEMM at D = 64); marking
    the minima, weighting column j by (width - j) and taking the row maximum gives the same index in 40 us
    (docs/benchmarks.md). The weights are exact in float32 up to 2**24 columns (MAX_EXACT_TILE_CODES)."""
    width = scores.shape[1]
    weights = torch.arange(width, 0, -1, dtype=scores.dtype, device=scores.device)
    scores.eq_(row_minimum).mul_(weights)
    return width - scores.amax(dim=1).long()


__all__ = [
    "SEARCH_BACKENDS",
    "SearchBackendUnavailableError",
    "blocked_nearest_code_indices",
    "check_search_backend",
    "default_max_block_elements",
    "nearest_code_indices",
    "resolve_search_backend",
]
