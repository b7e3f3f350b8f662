"""A 2^18-code quantizer: a training step that revives almost every code stays small in memory and exact in its
usage metrics (configs/vqgan_imagenet256_262k.yaml ships this codebook size)."""

import gc
import math
import sys
from pathlib import Path

import pytest
import torch

from hf_vq import VectorQuantizer, VQGANConfig

CODEBOOK_SIZE = 2**18
CONFIG = Path(__file__).parents[1] / "configs" / "vqgan_imagenet256_262k.yaml"


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


def _peak_extra_mib(run) -> float:
    """Peak resident memory during `run` above the resident memory before it (Linux: VmHWM after resetting it)."""
    gc.collect()
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    run()
    return (_status_kib("VmHWM") - before) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak memory is read from /proc/self/status")
def test_step_that_replaces_almost_every_code_of_a_262k_codebook():
    torch.manual_seed(0)
    options = VQGANConfig.from_yaml(CONFIG).quantizer_kwargs()  # the shipped config's quantizer, all methods on
    assert options["codebook_size"] == CODEBOOK_SIZE and options["kmeans_init"]
    quantizer = VectorQuantizer(**{**options, "replace_freq": 1}, channel_dim=-1).train()
    batches = [torch.randn(512, 8, requires_grad=True) for _ in range(2)]
    quantizer(batches[0]).loss.backward()  # k-means init; then every code unused by this batch is dead
    used_first = int((quantizer.steps_since_used == 0).sum())
    before = quantizer.codebook

    def step():
        out = quantizer(batches[1])
        (out.quantized.sum() + out.loss).backward()
        step.out = out

    peak = _peak_extra_mib(step)
    # The codebook is 8 MiB; the step holds a few copies of it (effective codes, gradient, replacement targets).
    assert peak < 128, f"a step at K = 2^18 took {peak:.0f} MiB beyond its inputs"
    after = quantizer.codebook
    replaced = int((after != before).any(dim=1).sum())
    assert replaced >= CODEBOOK_SIZE - used_first - 512  # the dead ones, but for those the alternating step moved
    assert torch.unique(after, dim=0).shape[0] == CODEBOOK_SIZE  # revived codes differ from each other
    # Usage and perplexity are exact over all 2^18 codes.
    indices = step.out.indices
    counts = torch.bincount(indices, minlength=CODEBOOK_SIZE).double()
    probs = counts[counts > 0] / counts.sum()
    assert float(step.out.usage) == pytest.approx(indices.unique().numel() / CODEBOOK_SIZE, rel=1e-6)
    assert float(step.out.perplexity) == pytest.approx(math.exp(float(-(probs * probs.log()).sum())), rel=1e-5)
