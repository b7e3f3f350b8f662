"""Periodic evaluation during training: reconstruction metrics on the held-out split and a sample grid."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

from ..evaluation import InceptionFeatureExtractor, ReconstructionMetrics, save_sample_grid


def build_rfid_extractor(rfid: bool, rfid_weights: str | None):
    """The Inception feature extractor for rFID, or None when rFID is off. Raises `InceptionWeightsNotFoundError`
    (naming the missing package or file) when it is asked for and cannot be built: better at the start of a
    run than after hours of training."""
    return InceptionFeatureExtractor(weights_path=rfid_weights) if rfid else None


@torch.no_grad()
def evaluate_reconstructions(
    model: torch.nn.Module,
    batches: Iterable[dict],
    device: torch.device,
    grid_path: Path | None,
    num_sample_images: int = 8,
    rfid_extractor: torch.nn.Module | None = None,
    is_main_process: bool = True,
) -> dict[str, float]:
    """PSNR, SSIM, codebook usage, perplexity (and rFID with an extractor) of `model` on `batches`.

    Call on every process with its own share of the data: `ReconstructionMetrics.compute()` sums the states of all
    processes. The main process also writes `grid_path`: the first `num_sample_images` originals beside their
    reconstructions. The model must be in eval mode (no codebook updates)."""
    metrics = ReconstructionMetrics(codebook_size=model.config.codebook_size, fid_feature_extractor=rfid_extractor).to(
        device
    )
    samples: list[tuple[torch.Tensor, torch.Tensor]] = []
    for batch in batches:
        pixel_values = batch["pixel_values"].to(device)
        if pixel_values.shape[0] == 0:
            continue  # every image of this batch was unreadable
        output = model(pixel_values)
        metrics.update(pixel_values, output.reconstruction.float(), output.image_tokens)
        if sum(len(original) for original, _ in samples) < num_sample_images:
            samples.append((pixel_values.cpu(), output.reconstruction.float().cpu()))
    result = metrics.compute()
    if is_main_process and grid_path is not None and samples and num_sample_images > 0:
        originals = torch.cat([original for original, _ in samples])[:num_sample_images]
        reconstructions = torch.cat([reconstruction for _, reconstruction in samples])[:num_sample_images]
        save_sample_grid(originals, reconstructions, grid_path)
    return result
