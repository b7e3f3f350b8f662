"""Two real processes (torchrun, gloo on the CPU) train the tokenizer with DDP and end with identical weights and
codebooks; the run saves one checkpoint with both processes' RNG states."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_vq.training.checkpointing import MANIFEST_FILE, checkpoint_problem

from training_helpers import write_images

WORKER = Path(__file__).with_name("training_worker.py")


@pytest.mark.distributed
@pytest.mark.slow
def test_two_processes_keep_identical_weights_and_codebooks(tmp_path):
    data = write_images(tmp_path / "images", count=24)
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), str(WORKER.parent)]),
    )
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",
        str(WORKER),
        str(data),
        str(tmp_path),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "terminate called" not in result.stderr  # gloo torn down cleanly
    first, second = (torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2))
    assert first.keys() == second.keys()
    for key in first:
        if key != "images_seen":
            assert torch.equal(first[key], second[key]), f"{key} differs between the two processes"
    assert int(first["global_step"]) == 6
    # Both processes trained on their own batches: 6 steps x 2 processes x 4 images.
    assert int(first["images_seen"]) == 48
    assert bool(first["generator.quantize.initialized"])
    checkpoint = tmp_path / "run" / "checkpoint-6"
    assert (checkpoint / "random_states_0.pkl").is_file() and (checkpoint / "random_states_1.pkl").is_file()
    # Complete only once both processes had written their part: the manifest lists both RNG files.
    manifest = json.loads((checkpoint / MANIFEST_FILE).read_text())
    assert {"random_states_0.pkl", "random_states_1.pkl", "model.safetensors"} <= set(manifest["files"])
    assert checkpoint_problem(checkpoint) is None and not list((tmp_path / "run").glob("*.tmp"))
    assert (tmp_path / "run" / "model.safetensors").is_file()
