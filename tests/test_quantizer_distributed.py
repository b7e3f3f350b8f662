"""Two real processes (torchrun, gloo on the CPU) end a few training steps with identical codebooks."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("distributed_quantizer_worker.py")
# Codebooks in a quantizer's state (FSQ has none), and the kinds run with affine="running" (see the worker).
CODEBOOKS_PER_KIND = {"vector": 1, "grouped": 2, "residual": 2, "fsq": 0}
RUNNING_AFFINE_KINDS = ("vector", "grouped", "residual")


def run_two_ranks(kind: str, output_dir: Path) -> tuple[list[dict], dict]:
    """The two ranks' final quantizer states, and rank 0's initial one."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[1]))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",
        str(WORKER),
        kind,
        str(output_dir),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [torch.load(output_dir / f"rank{rank}.pt") for rank in range(2)], torch.load(
        output_dir / "initial_rank0.pt"
    )


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize(
    "kind",
    [
        "vector",
        "grouped",
        "residual",
        "vector_simvq_sgd_rotation",
        "residual_simvq_sgd_rotation",
        "vector_ema",
        "grouped_ema",
        "grouped_sgd_learned",
        "fsq",
    ],
)
def test_two_processes_keep_identical_codebooks(kind, tmp_path):
    (first, second), initial = run_two_ranks(kind, tmp_path)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), f"{key} differs between ranks"
    # The run did exercise the synchronised machinery: k-means ran, every codebook moved from its initial codes,
    # and (affine="running") the running statistics took in all 4 training batches.
    assert all(bool(value) for key, value in first.items() if key.endswith("initialized"))
    codebooks = [key for key in first if key.endswith("embedding.weight")]
    assert len(codebooks) == CODEBOOKS_PER_KIND[kind.split("_")[0]]
    for key in codebooks:
        assert not torch.isclose(first[key], initial[key]).any(), f"{key}: some codes never moved"
    if kind in RUNNING_AFFINE_KINDS:
        updates = [int(value) for key, value in first.items() if key.endswith("num_updates")]
        assert updates and all(count == 4 for count in updates), updates
