"""Reconstruction metrics against hand-computed values, rFID on features we control, and sample grids."""

import inspect
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE

from hf_vq.evaluation import (
    INCEPTION_WEIGHTS_FILE,
    CallableFeatureExtractor,
    CodebookUsage,
    InceptionFeatureExtractor,
    InceptionWeightsNotFoundError,
    ReconstructionMetrics,
    save_sample_grid,
)


def constant_images(values, channels=1, size=16):
    """One constant image per value, in the model's [-1, 1] space."""
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, channels, size, size).clone()


# --- PSNR and SSIM -----------------------------------------------------------------------------------------------


def test_psnr_is_the_mean_of_per_image_psnrs():
    # In [0, 1]: errors 0.05 and 0.1 -> 10*log10(1/0.0025) = 26.02 dB and 20 dB; their mean, not the PSNR of the
    # pooled error (22.04 dB).
    originals = constant_images([0.0, 0.0])
    reconstructions = constant_images([0.1, -0.2])
    metrics = ReconstructionMetrics()
    metrics.update(originals, reconstructions)
    assert metrics.compute()["psnr"] == pytest.approx((10 * math.log10(1 / 0.0025) + 20.0) / 2, abs=1e-4)


def test_reconstructions_are_clamped_to_the_image_range():
    metrics = ReconstructionMetrics()
    metrics.update(constant_images([0.0]), constant_images([3.0]))  # shown as 1.0: error 0.5 in [0, 1]
    assert metrics.compute()["psnr"] == pytest.approx(10 * math.log10(1 / 0.25), abs=1e-4)


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_of_constant_images_is_the_luminance_term(channels):
    # Constant images have no variance, so SSIM reduces to (2ab + C1) / (a^2 + b^2 + C1), with C1 = (0.01 * 1)^2
    # on [0, 1] images: a = 0.5, b = 0.75 for the [-1, 1] values 0 and 0.5.
    metrics = ReconstructionMetrics()
    metrics.update(constant_images([0.0], channels), constant_images([0.5], channels))
    c1 = 0.01**2
    expected = (2 * 0.5 * 0.75 + c1) / (0.5**2 + 0.75**2 + c1)
    # 1e-3: float32 variances E[x^2] - E[x]^2 of constant windows are not exactly 0. SSIM measured on [-1, 1]
    # values instead would give (0 + C1') / (0.25 + C1') ~ 0.002.
    assert metrics.compute()["ssim"] == pytest.approx(expected, abs=1e-3)


def test_identical_images_score_perfect_ssim_and_infinite_psnr():
    images = torch.rand(3, 3, 24, 24) * 2 - 1
    metrics = ReconstructionMetrics()
    metrics.update(images, images.clone())
    result = metrics.compute()
    assert result["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert math.isinf(result["psnr"])
    assert set(result) == {"psnr", "ssim"}


def test_metrics_accumulate_over_batches_until_reset():
    metrics = ReconstructionMetrics()
    metrics.update(constant_images([0.0]), constant_images([0.1]))
    metrics.update(constant_images([0.0]), constant_images([-0.2]))
    assert metrics.compute()["psnr"] == pytest.approx((10 * math.log10(1 / 0.0025) + 20.0) / 2, abs=1e-4)
    metrics.reset()
    with pytest.raises(RuntimeError, match="before any update"):
        metrics.compute()


def test_mismatched_shapes_and_tiny_images_are_refused():
    with pytest.raises(ValueError, match="batch, 1 or 3"):
        ReconstructionMetrics().update(torch.zeros(2, 1, 16, 16), torch.zeros(2, 1, 16, 8))
    with pytest.raises(ValueError, match="at least 11x11"):
        ReconstructionMetrics().update(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8))


# --- codebook usage and perplexity -------------------------------------------------------------------------------


def test_usage_and_perplexity_come_from_the_whole_set_not_per_batch():
    # Each batch uses one code (per-batch perplexity 1, usage 1/4); together they use 2 of 4 codes equally.
    metrics = ReconstructionMetrics(codebook_size=4)
    images = constant_images([0.0, 0.0])
    metrics.update(images, images, image_tokens=torch.zeros(2, 3, 3, dtype=torch.long))
    metrics.update(images, images, image_tokens=torch.ones(2, 3, 3, dtype=torch.long))
    result = metrics.compute()
    assert result["codebook_usage"] == pytest.approx(0.5)
    assert result["perplexity"] == pytest.approx(2.0, abs=1e-5)


def test_perplexity_of_a_known_histogram():
    usage = CodebookUsage(codebook_size=8)
    usage.update(torch.tensor([0, 0, 0, 1]))  # p = (3/4, 1/4)
    result = usage.compute()
    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert float(result["perplexity"]) == pytest.approx(expected, rel=1e-5)
    assert float(result["codebook_usage"]) == pytest.approx(2 / 8)


def test_code_ids_are_checked():
    metrics = ReconstructionMetrics(codebook_size=4)
    images = constant_images([0.0])
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        metrics.update(images, images, image_tokens=torch.tensor([[4]]))
    with pytest.raises(ValueError, match="image_tokens"):
        metrics.update(images, images)


# --- rFID ----------------------------------------------------------------------------------------------------------


def pixel_features(images: torch.Tensor) -> torch.Tensor:
    """Mean of each 8x8 quadrant of 16x16 images: 4 features."""
    return torch.nn.functional.avg_pool2d(images, 8).flatten(1)


def fid_metrics() -> ReconstructionMetrics:
    return ReconstructionMetrics(fid_feature_extractor=CallableFeatureExtractor(pixel_features, num_features=4))


def small_images(count=256):
    """Images whose quadrants are constant, in [-0.4, 0.4] so that a shift of 0.5 is not clamped."""
    quadrants = (torch.rand(count, 1, 2, 2, generator=torch.Generator().manual_seed(0)) - 0.5) * 0.8
    return quadrants.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)


def test_frechet_distance_of_identical_sets_is_zero():
    metrics = fid_metrics()
    images = small_images()
    metrics.update(images, images.clone())
    assert metrics.compute()["rfid"] == pytest.approx(0.0, abs=1e-4)


def test_frechet_distance_of_a_shifted_set_is_the_squared_shift():
    # Same covariance, means 0.5 apart in each of 4 features: the Frechet distance is 4 * 0.5^2 = 1.
    metrics = fid_metrics()
    images = small_images()
    metrics.update(images, images + 0.5)
    assert metrics.compute()["rfid"] == pytest.approx(1.0, abs=1e-3)


def test_any_object_with_num_features_can_extract_features():
    class MeanBrightness:
        num_features = 1

        def __call__(self, images):
            return images.mean(dim=(1, 2, 3)).unsqueeze(1)

    metrics = ReconstructionMetrics(fid_feature_extractor=MeanBrightness())
    images = small_images()
    metrics.update(images, images)
    assert metrics.compute()["rfid"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(TypeError, match="CallableFeatureExtractor"):
        ReconstructionMetrics(fid_feature_extractor=pixel_features)


def test_feature_shape_is_checked():
    extractor = CallableFeatureExtractor(pixel_features, num_features=3)
    with pytest.raises(ValueError, match="expected"):
        extractor(torch.zeros(2, 1, 16, 16))


def test_missing_inception_weights_name_what_is_missing(tmp_path, monkeypatch):
    missing = tmp_path / "inception.pth"
    with pytest.raises(InceptionWeightsNotFoundError, match="CallableFeatureExtractor") as error:
        InceptionFeatureExtractor(weights_path=missing)
    assert str(missing) in str(error.value) and INCEPTION_WEIGHTS_FILE in str(error.value)
    if not _TORCH_FIDELITY_AVAILABLE:
        assert "pip install torch-fidelity" in str(error.value)
    # Without a path it looks where torch-fidelity downloads to: torch hub's checkpoint folder.
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(
        InceptionWeightsNotFoundError, match=str(tmp_path / "hub" / "checkpoints" / INCEPTION_WEIGHTS_FILE)
    ):
        InceptionFeatureExtractor()


@pytest.mark.skipif(_TORCH_FIDELITY_AVAILABLE, reason="torch-fidelity is installed here")
def test_present_weights_without_torch_fidelity_name_only_the_package(tmp_path):
    weights = tmp_path / INCEPTION_WEIGHTS_FILE
    weights.write_bytes(b"placeholder")
    with pytest.raises(InceptionWeightsNotFoundError) as error:
        InceptionFeatureExtractor(weights_path=weights)
    assert "torch-fidelity" in str(error.value) and "weights file" not in str(error.value)


# --- several processes -------------------------------------------------------------------------------------------


def distributed_case():
    """Eight image pairs and their codes: ranks 0 and 1 each get four (codes 0-3 on rank 0, 4-7 on rank 1)."""
    generator = torch.Generator().manual_seed(0)
    originals = torch.rand(8, 1, 16, 16, generator=generator) * 2 - 1
    reconstructions = (originals + 0.1 * torch.randn(8, 1, 16, 16, generator=generator)).clamp(-1, 1)
    tokens = torch.arange(8).view(8, 1, 1)
    metrics = ReconstructionMetrics(
        8, CallableFeatureExtractor(lambda images: images.mean(dim=(2, 3)), num_features=1)
    )
    return originals, reconstructions, tokens, metrics


WORKER = """
import json, sys, torch, torch.distributed as dist
from hf_vq.evaluation import CallableFeatureExtractor, ReconstructionMetrics

{case}

dist.init_process_group("gloo")
rank = dist.get_rank()
originals, reconstructions, tokens, metrics = distributed_case()
half = slice(4 * rank, 4 * rank + 4)
metrics.update(originals[half], reconstructions[half], tokens[half])
result = metrics.compute()  # a collective: every rank calls it
if rank == 0:
    with open(sys.argv[1], "w") as out:
        json.dump(result, out)
dist.destroy_process_group()
"""


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_measure_the_whole_set(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(case=inspect.getsource(distributed_case)))
    output = tmp_path / "result.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[1]))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",
        str(script),
        str(output),
    ]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    shared = json.loads(output.read_text())

    originals, reconstructions, tokens, alone = distributed_case()
    alone.update(originals, reconstructions, tokens)
    expected = alone.compute()
    # Each rank used 4 of the 8 codes; the reduced histogram has all 8 (a per-rank number would say 0.5).
    assert shared["codebook_usage"] == pytest.approx(1.0)
    assert set(shared) == set(expected) == {"psnr", "ssim", "codebook_usage", "perplexity", "rfid"}
    for name, value in expected.items():
        assert shared[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


# --- sample grids --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("channels", "mode"), [(1, "L"), (3, "RGB")])
def test_sample_grid_places_each_reconstruction_beside_its_original(tmp_path, channels, mode):
    originals = constant_images([-1.0, -1.0, -1.0, -1.0, -1.0], channels, size=8)
    reconstructions = constant_images([1.0] * 5, channels, size=8)
    path = save_sample_grid(originals, reconstructions, tmp_path / "samples" / "grid.png", nrow=2)
    image = PIL.Image.open(path)
    assert image.format == "PNG" and image.mode == mode
    # 2 pairs per row -> 4 tiles of 8 px and 5 gaps of 2 px across; 3 rows of 8 px and 4 gaps down.
    assert image.size == (4 * 8 + 5 * 2, 3 * 8 + 4 * 2)
    pixels = np.asarray(image.convert("L"))
    assert pixels[2, 2] == 0 and pixels[2, 2 + 8 + 2] == 255  # original (black), then its reconstruction (white)
    assert pixels[2 + 2 * 10, 2 + 2 * 10] == 0  # the fifth pair has only its first row's slot; the rest is padding


def test_sample_grid_refuses_mismatched_batches(tmp_path):
    with pytest.raises(ValueError, match="differ in shape"):
        save_sample_grid(torch.zeros(2, 1, 8, 8), torch.zeros(3, 1, 8, 8), tmp_path / "grid.png")
    with pytest.raises(ValueError, match="1 or 3"):
        save_sample_grid(torch.zeros(2, 2, 8, 8), torch.zeros(2, 2, 8, 8), tmp_path / "grid.png")
