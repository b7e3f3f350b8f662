"""Fused nearest-code search for CUDA, in Triton: distances and a running minimum, never the distance matrix.

Each program takes BLOCK_N rows, walks the codebook BLOCK_K codes at a time, computes that tile of scores with
`tl.dot` (bf16 or float32 inputs, float32 accumulation), reduces it to its best code per row, and keeps a running
best across tiles. Scores are ||c||^2 - 2 z.c (euclidean; ||z||^2 is common to every code) or -z.c (cosine, on
l2-normalised inputs). Nothing of size N x K ever reaches memory: at N = 16384, K = 262144 the unfused search
writes and reads back 16 GiB of distances per call.

Ties: `tl.argmin` keeps the first (lowest) index within a tile, and a later tile replaces the running best only
when strictly better, so the lowest index wins, as in the blocked search.

Float32 inputs use `input_precision="ieee"` (not TF32, whose 10-bit mantissa would pick wrong codes). The kernel is
tested on the CPU through Triton's interpreter (`TRITON_INTERPRET=1`, tests/test_search.py); it is compiled lazily,
at the first call, so that the interpreter setting in force then is the one used.
"""

import functools
import importlib.util
import os

import torch

# Tile sizes. BLOCK_D covers the whole code dimension when D <= MAX_SINGLE_BLOCK_D (the rows then stay in
# registers for the whole walk over the codebook); larger D is walked in chunks of CHUNK_D.
BLOCK_N = 64
BLOCK_K = 128
MAX_SINGLE_BLOCK_D = 128
CHUNK_D = 64
NUM_WARPS = 4


# Looked up once, at import: a module constant, not functools.cache, for the reason given in search_faiss.py.
_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None


def triton_available() -> bool:
    """Whether the `triton` package can be imported (checked without importing it)."""
    return _TRITON_INSTALLED


@functools.cache
def _compiled_kernel(interpret: bool):
    """The kernel wrapped by `triton.jit`, which reads TRITON_INTERPRET when it wraps (one wrapper per setting)."""
    del interpret  # part of the cache key only
    from .search_triton_kernel import _nearest_code_kernel, triton

    return triton.jit(_nearest_code_kernel)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _next_power_of_two(value: int) -> int:
    return 1 << max(0, value - 1).bit_length()


# Run eagerly under torch.compile: Dynamo cannot trace the backend's foreign kernels; the graph breaks around it
# (search.resolve_search_backend picks the traceable blocked search under "auto" instead).
@torch.compiler.disable
@torch.no_grad()
def triton_nearest_code_indices(
    vectors: torch.Tensor,
    codebook: torch.Tensor,
    distance: str = "euclidean",
    block_n: int = BLOCK_N,
    block_k: int = BLOCK_K,
    num_warps: int = NUM_WARPS,
) -> torch.Tensor:
    """Index (int64) of the nearest code for each row of `vectors` (N, D) in `codebook` (K, D), fused in one kernel.

    bf16 and float32 inputs are read as they are (both cast to the wider of the two dtypes when they differ; any
    other dtype to float32); products are accumulated in float32. `block_n`, `block_k`, `num_warps`: tile sizes
    (powers of two, at least 16), for tuning on a given GPU.
    """
    if not triton_available():
        raise ImportError("the fused nearest-code search needs the triton package")
    dtype = torch.promote_types(vectors.dtype, codebook.dtype)
    if dtype not in (torch.float32, torch.bfloat16):
        dtype = torch.float32
    vectors = vectors.detach().to(dtype).contiguous()
    codebook = codebook.detach().to(dtype).contiguous()
    num_vectors, embed_dim = vectors.shape
    code_norms = codebook.float().pow(2).sum(dim=1)
    indices = torch.empty(num_vectors, dtype=torch.long, device=vectors.device)
    if num_vectors == 0:
        return indices
    single_d = embed_dim <= MAX_SINGLE_BLOCK_D
    block_d = max(16, _next_power_of_two(embed_dim)) if single_d else CHUNK_D
    interpreting = _interpreting()
    kernel = _compiled_kernel(interpreting)
    grid = (-(-num_vectors // block_n),)
    kernel[grid](
        vectors,
        codebook,
        code_norms,
        indices,
        num_vectors,
        codebook.shape[0],
        embed_dim,
        COSINE=distance == "cosine",
        SINGLE_D=single_d,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        BLOCK_D=block_d,
        # Triton's interpreter multiplies bf16 tiles wrongly (it sees their raw bits); it gets float32 tiles, which
        # hold the same values. Compiled, bf16 tiles go to the tensor cores as they are.
        UPCAST=interpreting and dtype != torch.float32,
        num_warps=num_warps,
    )
    return indices


__all__ = ["triton_available", "triton_nearest_code_indices"]
