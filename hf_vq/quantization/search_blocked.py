"""The "blocked" nearest-code search (pure PyTorch, every device): the fallback of every other backend.

argmin_k ||z - c_k||^2 = argmin_k (||c_k||^2 - 2 z.c_k) (||z||^2 is the same for every code and is dropped), one
fused `addmm` plus a row minimum per block of rows; see search.py for the backends and their common contract.
"""

from __future__ import annotations

import torch

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


def default_max_block_elements(device: torch.device) -> int:
    """Block size used when none is given: cache-sized on CPU, large on accelerators."""
    return CPU_MAX_BLOCK_ELEMENTS if device.type == "cpu" else ACCELERATOR_MAX_BLOCK_ELEMENTS


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
        indices[start : start + rows_per_block] = _block_argmin(
            block, codebook, offsets, alpha, codes_per_tile, scratch
        )
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
        tile_best, tile_index = _tile_min(
            block, codebook[start : start + tile], offsets[start : start + tile], alpha, scratch
        )
        better = tile_best < best
        best = torch.where(better, tile_best, best)
        best_index = torch.where(better, tile_index + start, best_index)
    return best_index


def _tile_min(
    block: torch.Tensor, codes: torch.Tensor, offsets: torch.Tensor, alpha: float, scratch: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Smallest score of each row against `codes` and the lowest index reaching it; overwrites `scratch`."""
    if torch.compiler.is_compiling():
        # Traced (torch.compile / torch.export): a functional graph has no `out=` buffers, and the CPU path's NaN
        # fallback below needs a host sync; the plain row minimum, as on accelerators.
        return torch.addmm(offsets, block, codes.t(), beta=1.0, alpha=alpha).min(dim=1)
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
    "ACCELERATOR_MAX_BLOCK_ELEMENTS",
    "CPU_MAX_BLOCK_ELEMENTS",
    "MAX_EXACT_TILE_CODES",
    "MIN_ROWS_PER_BLOCK",
    "blocked_nearest_code_indices",
    "default_max_block_elements",
]
