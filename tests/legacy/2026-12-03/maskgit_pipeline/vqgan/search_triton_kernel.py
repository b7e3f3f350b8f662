"""The Triton kernel of the fused nearest-code search (search_triton.py runs it; its docstring explains it).

Kept in its own module, imported at the first call of the triton backend: importing triton costs about 0.3 s, which
an import of hf_vq on a machine without a GPU should not pay.
"""

try:  # optional: CUDA builds of PyTorch ship triton; this file is also copied into checkpoints for remote code
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where triton is not installed
    triton = None
    tl = None


if triton is not None:

    def _nearest_code_kernel(
        vectors_ptr,
        codes_ptr,
        code_norms_ptr,
        out_ptr,
        num_vectors,
        num_codes,
        embed_dim,
        COSINE: tl.constexpr,
        SINGLE_D: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        BLOCK_D: tl.constexpr,
        UPCAST: tl.constexpr,
    ):
        rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        row_ok = rows < num_vectors
        row_offsets = rows.to(tl.int64) * embed_dim
        dims = tl.arange(0, BLOCK_D)
        best = tl.full((BLOCK_N,), float("inf"), tl.float32)
        best_index = tl.zeros((BLOCK_N,), tl.int64)
        if SINGLE_D:
            x = tl.load(
                vectors_ptr + row_offsets[:, None] + dims[None, :],
                mask=row_ok[:, None] & (dims[None, :] < embed_dim),
                other=0.0,
            )
        for start in range(0, num_codes, BLOCK_K):
            codes = start + tl.arange(0, BLOCK_K)
            code_ok = codes < num_codes
            code_offsets = codes.to(tl.int64) * embed_dim
            dot = tl.zeros((BLOCK_N, BLOCK_K), tl.float32)
            if SINGLE_D:
                c = tl.load(
                    codes_ptr + code_offsets[None, :] + dims[:, None],
                    mask=code_ok[None, :] & (dims[:, None] < embed_dim),
                    other=0.0,
                )
                if UPCAST:
                    dot = tl.dot(x.to(tl.float32), c.to(tl.float32), dot, input_precision="ieee")
                else:
                    dot = tl.dot(x, c, dot, input_precision="ieee")
            else:
                for d_start in range(0, embed_dim, BLOCK_D):
                    d = d_start + dims
                    xc = tl.load(
                        vectors_ptr + row_offsets[:, None] + d[None, :],
                        mask=row_ok[:, None] & (d[None, :] < embed_dim),
                        other=0.0,
                    )
                    c = tl.load(
                        codes_ptr + code_offsets[None, :] + d[:, None],
                        mask=code_ok[None, :] & (d[:, None] < embed_dim),
                        other=0.0,
                    )
                    if UPCAST:
                        dot = tl.dot(xc.to(tl.float32), c.to(tl.float32), dot, input_precision="ieee")
                    else:
                        dot = tl.dot(xc, c, dot, input_precision="ieee")
            if COSINE:
                scores = -dot
            else:
                norms = tl.load(code_norms_ptr + codes, mask=code_ok, other=0.0)
                scores = norms[None, :] - 2.0 * dot
            scores = tl.where(code_ok[None, :], scores, float("inf"))
            tile_best = tl.min(scores, axis=1)
            tile_index = tl.argmin(scores, axis=1, tie_break_left=True).to(tl.int64) + start
            better = tile_best < best
            best = tl.where(better, tile_best, best)
            best_index = tl.where(better, tile_index, best_index)
        tl.store(out_ptr + rows, best_index, mask=row_ok)
