"""The nearest-code search backends agree with the blocked PyTorch search, and "auto" picks the right one.

Agreement means: identical indices where the nearest code is unique beyond float32 rounding, the lowest index
where codes are exact duplicates or at exactly equal distance, and otherwise an index whose exact (float64)
distance equals the minimum up to float32 rounding (each backend sums the products in its own order).
The Triton kernel runs on CUDA where there is one, else through Triton's interpreter on the CPU: triton reads
TRITON_INTERPRET when it is first imported (importing hf_vq already imports it), so the interpreted cases run in a
subprocess started with TRITON_INTERPRET=1 (`test_triton_cases_under_the_interpreter`).
"""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import hf_vq.quantization.search as search
from hf_vq import VectorQuantizer
from hf_vq.quantization.search import (
    SearchBackendUnavailableError,
    blocked_nearest_code_indices,
    nearest_code_indices,
    resolve_search_backend,
)
from hf_vq.quantization.search_faiss import faiss_available
from hf_vq.quantization.search_triton import triton_available

needs_faiss = pytest.mark.skipif(not faiss_available(), reason="faiss-cpu is not installed")
INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")  # as triton saw it at import
TRITON_HERE = triton_available() and (torch.cuda.is_available() or INTERPRETING)
needs_triton = pytest.mark.skipif(
    not TRITON_HERE, reason="triton cases run on CUDA, or in the TRITON_INTERPRET=1 subprocess of this file"
)

BACKENDS = [
    pytest.param("faiss", marks=needs_faiss),
    pytest.param("triton", marks=needs_triton),
]

# Many small tensor operations: one thread (k-means tests ran 40x slower with two under load).
pytestmark = pytest.mark.usefixtures("one_thread")


def _search(backend, vectors, codebook, distance="euclidean"):
    if backend == "triton" and not INTERPRETING:
        return nearest_code_indices(vectors.cuda(), codebook.cuda(), distance, backend=backend).cpu()
    return nearest_code_indices(vectors, codebook, distance, backend=backend)


@pytest.mark.slow
@pytest.mark.skipif(
    not triton_available() or INTERPRETING, reason="triton is not installed, or this is the subprocess"
)
def test_triton_cases_under_the_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(Path(__file__).parents[1]))
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        __file__,
        "-k",
        "triton and not interpreter",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-2000:]


def _scores64(vectors, codebook, distance):
    """Exact scores to minimise, in float64: squared distances, or minus the dot product for cosine."""
    vectors, codebook = vectors.double(), codebook.double()
    if distance == "cosine":
        return -(vectors @ codebook.t())
    return torch.cdist(vectors, codebook).pow(2)


def assert_nearest(indices, vectors, codebook, distance="euclidean"):
    """Every index points at a code whose exact score is the minimum, up to float32 rounding of the terms."""
    scores = _scores64(vectors, codebook, distance)
    chosen = scores.gather(1, indices[:, None]).squeeze(1)
    best = scores.min(dim=1).values
    magnitude = vectors.double().pow(2).sum(1) + codebook.double().pow(2).sum(1).max()
    tolerance = 64 * torch.finfo(torch.float32).eps * magnitude
    worst = (chosen - best - tolerance).max()
    assert worst <= 0, f"a chosen code is farther than the nearest by more than rounding: {worst.item()}"


def _normalized(*tensors):
    return [F.normalize(t, dim=-1) for t in tensors]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize("embed_dim", [3, 8, 40, 130])
def test_backends_agree_with_blocked_search_on_random_inputs(backend, distance, embed_dim):
    generator = torch.Generator().manual_seed(embed_dim)
    vectors, codebook = (
        torch.randn(150, embed_dim, generator=generator),
        torch.randn(300, embed_dim, generator=generator),
    )
    if distance == "cosine":
        vectors, codebook = _normalized(vectors, codebook)
    expected = blocked_nearest_code_indices(vectors, codebook, distance)
    found = _search(backend, vectors, codebook, distance)
    assert found.dtype == torch.long and found.shape == (150,)
    assert_nearest(found, vectors, codebook, distance)
    assert (found == expected).float().mean() >= 0.98  # random data: ties beyond rounding are rare


@pytest.mark.parametrize("backend", ["blocked", *BACKENDS])
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_duplicate_codes_resolve_to_the_lowest_index(backend, distance):
    generator = torch.Generator().manual_seed(0)
    codebook = torch.randn(200, 8, generator=generator)
    # Codes 3, 77 and 190 are one vector; 150 and 5 another. Vectors sit on them or next to them.
    codebook[77] = codebook[190] = codebook[3]
    codebook[150] = codebook[5]
    vectors = torch.cat([codebook[[190, 77, 3, 150, 5]], codebook[[190, 150]] + 1e-3])
    if distance == "cosine":
        vectors, codebook = _normalized(vectors, codebook)
    assert _search(backend, vectors, codebook, distance).tolist() == [3, 3, 3, 5, 5, 3, 5]


@pytest.mark.parametrize("backend", ["blocked", *BACKENDS])
def test_exact_ties_between_different_codes_resolve_to_the_lowest_index(backend):
    # Codes on an integer grid, vectors halfway between two or four of them: every term is exact in float32,
    # so the tie is exact in every backend and the rule alone decides.
    grid = torch.stack(torch.meshgrid(torch.arange(6.0), torch.arange(6.0), indexing="ij"), dim=-1).reshape(-1, 2)
    codebook = grid.flip(0).contiguous()  # the lowest index is not the first code of the grid
    vectors = torch.tensor([[0.5, 0.0], [2.5, 3.5], [5.0, 4.5], [1.0, 1.0]])
    scores = torch.cdist(vectors.double(), codebook.double())
    lowest_tied = [int(torch.nonzero(row == row.min())[0]) for row in scores]
    assert _search(backend, vectors, codebook).tolist() == lowest_tied
    assert blocked_nearest_code_indices(vectors, codebook, max_block_elements=8).tolist() == lowest_tied


@pytest.mark.parametrize("backend", ["blocked", *BACKENDS])
@pytest.mark.parametrize("scale", [1e-4, 1e4, 1e12])
def test_huge_and_tiny_norms(backend, scale):
    generator = torch.Generator().manual_seed(1)
    shift = torch.full((8,), 3.0 * scale)  # far from the origin: ||c||^2 dwarfs the differences between codes
    codebook = torch.randn(257, 8, generator=generator) * scale + shift
    vectors = torch.randn(100, 8, generator=generator) * scale + shift
    assert_nearest(_search(backend, vectors, codebook), vectors, codebook)


@pytest.mark.parametrize("backend", ["blocked", *BACKENDS])
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_bfloat16_inputs_are_searched_in_float32(backend, distance):
    generator = torch.Generator().manual_seed(2)
    vectors, codebook = torch.randn(120, 16, generator=generator), torch.randn(200, 16, generator=generator)
    if distance == "cosine":
        vectors, codebook = _normalized(vectors, codebook)
    vectors, codebook = vectors.bfloat16(), codebook.bfloat16()
    found = _search(backend, vectors, codebook, distance)
    expected = blocked_nearest_code_indices(vectors.float(), codebook.float(), distance)
    assert_nearest(found, vectors.float(), codebook.float(), distance)
    assert (found == expected).float().mean() >= 0.98


def test_blocked_search_tiles_huge_codebooks_and_matches_untiled():
    generator = torch.Generator().manual_seed(3)
    vectors, codebook = torch.randn(600, 8, generator=generator), torch.randn(2000, 8, generator=generator)
    untiled = blocked_nearest_code_indices(vectors, codebook, max_block_elements=600 * 2000)
    tiled = blocked_nearest_code_indices(vectors, codebook, max_block_elements=256 * 64)  # 256 rows x 64 codes a tile
    assert_nearest(tiled, vectors, codebook)
    assert (tiled == untiled).float().mean() >= 0.99


def test_auto_choice():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_search_backend("auto", cpu, 8) == ("faiss" if faiss_available() else "blocked")
    assert resolve_search_backend("auto", cpu, 64) == "blocked"  # FAISS is slower than PyTorch's GEMM there
    assert resolve_search_backend("auto", cuda, 64) == ("triton" if triton_available() else "blocked")
    assert resolve_search_backend("auto", torch.device("meta"), 8) == "blocked"
    assert resolve_search_backend("blocked", cuda, 8) == "blocked"


def test_auto_falls_back_to_blocked_without_faiss(monkeypatch):
    monkeypatch.setattr(search, "faiss_available", lambda: False)
    assert resolve_search_backend("auto", torch.device("cpu"), 8) == "blocked"
    vectors, codebook = torch.randn(10, 8), torch.randn(20, 8)
    assert torch.equal(nearest_code_indices(vectors, codebook), blocked_nearest_code_indices(vectors, codebook))


def test_forced_backends_fail_clearly_when_they_cannot_run(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="unknown search_backend 'fast'"):
        nearest_code_indices(torch.randn(2, 4), torch.randn(3, 4), backend="fast")
    with pytest.raises(SearchBackendUnavailableError, match="searches CPU tensors only"):
        resolve_search_backend("faiss", torch.device("cuda"), 8)
    if triton_available():
        with pytest.raises(SearchBackendUnavailableError, match="needs CUDA tensors.*TRITON_INTERPRET=1"):
            nearest_code_indices(torch.randn(2, 4), torch.randn(3, 4), backend="triton")
    monkeypatch.setattr(search, "faiss_available", lambda: False)
    monkeypatch.setattr(search, "triton_available", lambda: False)
    with pytest.raises(SearchBackendUnavailableError, match="pip install faiss-cpu"):
        nearest_code_indices(torch.randn(2, 4), torch.randn(3, 4), backend="faiss")
    with pytest.raises(SearchBackendUnavailableError, match="needs the triton package"):
        VectorQuantizer(embed_dim=4, codebook_size=8, search_backend="triton")
    with pytest.raises(ValueError, match="unknown search_backend"):
        VectorQuantizer(embed_dim=4, codebook_size=8, search_backend="gpu")


def test_search_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="same D"):
        nearest_code_indices(torch.randn(2, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match="at least one code"):
        nearest_code_indices(torch.randn(2, 4), torch.randn(0, 4))
    with pytest.raises(ValueError, match="unknown distance"):
        nearest_code_indices(torch.randn(2, 4), torch.randn(3, 4), "manhattan")


@needs_faiss
def test_quantizer_gives_the_same_tokens_with_every_cpu_backend():
    torch.manual_seed(0)
    inputs = torch.randn(2, 8, 6, 6)
    outputs = {}
    for backend in ("blocked", "faiss"):
        torch.manual_seed(1)
        quantizer = VectorQuantizer(embed_dim=8, codebook_size=64, search_backend=backend).eval()
        outputs[backend] = quantizer(inputs).indices
    assert torch.equal(outputs["blocked"], outputs["faiss"])


@needs_faiss
def test_quantizer_with_the_faiss_search_runs_under_torch_compile():
    # Dynamo cannot trace FAISS (its C globals raise inside the tracer): the search must run as a graph break.
    torch.manual_seed(0)
    quantizer = VectorQuantizer(embed_dim=8, codebook_size=64, search_backend="faiss", channel_dim=-1).eval()
    inputs = torch.randn(32, 8)
    compiled = torch.compile(quantizer, backend="eager")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert torch.equal(compiled(inputs).indices, quantizer(inputs).indices)
    # The availability checks run inside the compiled forward; Dynamo warns at each functools.cache'd call it traces.
    assert not [str(w.message) for w in caught if "lru_cache" in str(w.message)]


@needs_faiss
def test_faiss_search_over_codebook_chunks_keeps_the_lowest_index(monkeypatch):
    import hf_vq.quantization.search_faiss as search_faiss

    monkeypatch.setattr(search_faiss, "CHUNK_VALUES", 8 * 50)  # 50 codes per FAISS call: 4 chunks
    generator = torch.Generator().manual_seed(4)
    codebook = torch.randn(200, 8, generator=generator)
    codebook[170] = codebook[120] = codebook[30]  # one code in three chunks
    vectors = torch.cat([codebook[[170, 120, 30]], torch.randn(100, 8, generator=generator)])
    found = search_faiss.faiss_nearest_code_indices(vectors, codebook)
    assert found[:3].tolist() == [30, 30, 30]
    assert_nearest(found, vectors, codebook)
    assert torch.equal(found[3:], blocked_nearest_code_indices(vectors[3:], codebook))


def test_nan_scores_from_an_overflowing_code_still_give_an_index_in_range():
    # An infinite code makes ||c||^2 - 2 z.c = inf - inf = NaN for the rows with z_0 > 0: the CPU search's minimum
    # marking matches nothing there, and those rows are searched again with argmin (which takes the NaN, as torch
    # does); the row without a NaN keeps its true nearest code.
    codebook = torch.tensor([[0.0, 1.0], [float("inf"), 0.0], [2.0, 2.0], [-1.0, 0.0]])
    vectors = torch.tensor([[1.0, 0.0], [0.1, 0.9], [2.0, 2.1], [-1.0, 0.1]])
    scores = torch.addmm(codebook.pow(2).sum(dim=1), vectors, codebook.t(), beta=1.0, alpha=-2.0)
    assert torch.isnan(scores[:3]).any(dim=1).all() and not torch.isnan(scores[3]).any()
    assert blocked_nearest_code_indices(vectors, codebook).tolist() == scores.argmin(dim=1).tolist()
    tiled = blocked_nearest_code_indices(vectors, codebook, max_block_elements=2)  # running minimum over tiles
    assert all(0 <= index < codebook.shape[0] for index in tiled.tolist()) and int(tiled[3]) == 3


def test_blocked_search_under_a_float64_default_dtype():
    # The scratch buffer and the cosine offsets follow the (float32) inputs, not torch's default dtype.
    generator = torch.Generator().manual_seed(4)
    vectors, codebook = torch.randn(50, 8, generator=generator), torch.randn(30, 8, generator=generator)
    expected = {distance: blocked_nearest_code_indices(vectors, codebook, distance) for distance in search.DISTANCES}
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for distance in search.DISTANCES:
            assert torch.equal(blocked_nearest_code_indices(vectors, codebook, distance), expected[distance])
    finally:
        torch.set_default_dtype(previous)
