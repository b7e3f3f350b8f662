"""k-means++ initialisation: distinct codes, every code kept, determinism, quality, speed-relevant paths, and sync."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_vq.quantization.kmeans import EXACT_SEEDS, kmeans_plus_plus_init
from hf_vq.quantization.search import nearest_code_indices

# Many small tensor operations: one thread (k-means tests ran 40x slower with two under load).
pytestmark = pytest.mark.usefixtures("one_thread")


def _distinct_rows(codes: torch.Tensor) -> int:
    return torch.unique(codes, dim=0).shape[0]


def _exact_cdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")  # exact zeros for equal rows


def _cost(vectors: torch.Tensor, centres: torch.Tensor) -> float:
    nearest = centres[nearest_code_indices(vectors, centres)]
    return float((vectors - nearest).pow(2).sum(dim=1).mean())


def _exact_kmeans_plus_plus(vectors: torch.Tensor, num_codes: int, generator: torch.Generator) -> torch.Tensor:
    """Textbook k-means++ seeding, one centre per step: the reference the batched seeding is held to."""
    chosen = [int(torch.randint(vectors.shape[0], (1,), generator=generator))]
    nearest = (vectors - vectors[chosen[0]]).pow(2).sum(dim=1)
    for _ in range(num_codes - 1):
        chosen.append(int(torch.multinomial(nearest, 1, generator=generator)))
        nearest = torch.minimum(nearest, (vectors - vectors[chosen[-1]]).pow(2).sum(dim=1))
    return vectors[chosen]


def test_codes_are_distinct_data_vectors_even_with_duplicates_in_the_data():
    generator = torch.Generator().manual_seed(0)
    distinct = torch.randn(400, 3, generator=generator)
    vectors = distinct[torch.randint(400, (3000,), generator=generator)]  # every vector about 7 times
    centres = kmeans_plus_plus_init(vectors, 150, num_iterations=0, generator=generator)
    assert centres.shape == (150, 3) and _distinct_rows(centres) == 150
    assert bool((_exact_cdist(centres, distinct).min(dim=1).values == 0).all())  # seeds are data vectors


def test_more_codes_than_distinct_vectors_keeps_every_code():
    vectors = torch.randn(50, 4).repeat(3, 1)  # 150 vectors, 50 distinct
    centres = kmeans_plus_plus_init(vectors, 200, generator=torch.Generator().manual_seed(0))
    assert centres.shape == (200, 4) and _distinct_rows(centres) == 200
    # Every distinct data vector is a code; the other 150 codes lie close to data vectors.
    assert bool((_exact_cdist(vectors, centres).min(dim=1).values == 0).all())
    assert float(_exact_cdist(centres, vectors).min(dim=1).values.max()) < 0.2


def test_identical_vectors_still_give_distinct_codes():
    centres = kmeans_plus_plus_init(torch.full((10, 3), 1000.0), 4, generator=torch.Generator().manual_seed(0))
    assert _distinct_rows(centres) == 4
    assert float((centres - 1000.0).abs().max()) < 1.0


def test_same_seed_same_codebook():
    vectors = torch.randn(2000, 8)
    first = kmeans_plus_plus_init(vectors, 300, generator=torch.Generator().manual_seed(5))
    second = kmeans_plus_plus_init(vectors, 300, generator=torch.Generator().manual_seed(5))
    other = kmeans_plus_plus_init(vectors, 300, generator=torch.Generator().manual_seed(6))
    assert torch.equal(first, second) and not torch.equal(first, other)


def test_one_centre_per_well_separated_cluster():
    generator = torch.Generator().manual_seed(0)
    means = torch.randn(EXACT_SEEDS, 2, generator=generator) * 1000
    labels = torch.arange(EXACT_SEEDS).repeat_interleave(20)
    vectors = means[labels] + torch.randn(labels.shape[0], 2, generator=generator)
    centres = kmeans_plus_plus_init(vectors, EXACT_SEEDS, num_iterations=0, generator=generator)
    assert nearest_code_indices(centres, means).unique().numel() == EXACT_SEEDS


def test_batched_seeding_costs_no_more_than_one_at_a_time_seeding():
    generator = torch.Generator().manual_seed(1)
    means = torch.randn(100, 4, generator=generator) * 4
    vectors = means[torch.randint(100, (4000,), generator=generator)] + torch.randn(4000, 4, generator=generator)
    seeds = range(3)
    ours = [
        _cost(vectors, kmeans_plus_plus_init(vectors, 400, 0, generator=torch.Generator().manual_seed(s)))
        for s in seeds
    ]
    exact = [_cost(vectors, _exact_kmeans_plus_plus(vectors, 400, torch.Generator().manual_seed(s))) for s in seeds]
    assert sum(ours) <= 1.1 * sum(exact), (ours, exact)


def test_lloyd_iterations_lower_the_cost_and_stop_when_converged():
    vectors = torch.randn(3000, 2)
    seeded = kmeans_plus_plus_init(vectors, 100, 0, generator=torch.Generator().manual_seed(0))
    refined = kmeans_plus_plus_init(vectors, 100, 10, generator=torch.Generator().manual_seed(0))
    converged = kmeans_plus_plus_init(vectors, 100, 1000, generator=torch.Generator().manual_seed(0))
    assert _cost(vectors, converged) <= _cost(vectors, refined) < 0.95 * _cost(vectors, seeded)


def test_rejects_bad_inputs():
    with pytest.raises(ValueError, match="non-empty"):
        kmeans_plus_plus_init(torch.randn(0, 3), 4)
    with pytest.raises(ValueError, match="num_codes >= 1"):
        kmeans_plus_plus_init(torch.randn(5, 3), 0)


@pytest.mark.distributed
@pytest.mark.slow
def test_two_processes_initialise_identical_codebooks(tmp_path):
    worker = Path(__file__).with_name("distributed_kmeans_worker.py")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[1]))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",
        str(worker),
        str(tmp_path),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    first, second = (torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2))
    for size in (64, 1024):
        assert torch.equal(first[size], second[size]), f"codebook of {size} codes differs between ranks"
        assert _distinct_rows(first[size]) == size
    # Both ranks' data shaped the codebook (rank 1's vectors are shifted by +3 in every dimension).
    assert bool((first[64].mean(dim=1) > 1.5).any() and (first[64].mean(dim=1) < 1.5).any())
