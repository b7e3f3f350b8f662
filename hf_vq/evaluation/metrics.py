"""Reconstruction quality of an image tokenizer: PSNR, SSIM, codebook usage and perplexity, and optionally rFID.

Everything accumulates in torchmetrics states over the whole evaluation set and is reduced across processes
when `compute()` runs under torch.distributed (Accelerate starts it), so the numbers describe the set, not
the mean of per-batch numbers: codebook usage in particular counts a code as used if any batch used it.
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure
from torchmetrics.image.fid import FrechetInceptionDistance

from ..quantization.metrics import perplexity_and_usage
from .fid import (
    CallableFeatureExtractor,
    FIDFeatureExtractor,
    InceptionFeatureExtractor,
    InceptionWeightsNotFoundError,
    as_feature_module,
)

__all__ = [
    "CallableFeatureExtractor",
    "CodebookUsage",
    "FIDFeatureExtractor",
    "InceptionFeatureExtractor",
    "InceptionWeightsNotFoundError",
    "ReconstructionMetrics",
]

# torchmetrics' default (Wang et al. 2004): an 11x11 Gaussian window with sigma 1.5.
SSIM_KERNEL_SIZE = 11


class CodebookUsage(Metric):
    """Histogram of code ids over a whole evaluation set -> fraction of codes used and perplexity (exp entropy).

    Ids of grouped or residual quantizers (a trailing axis) all count into the one histogram.

    Example:

    ```python
    >>> import torch
    >>> from hf_vq.evaluation import CodebookUsage
    >>> usage = CodebookUsage(codebook_size=4)
    >>> usage.update(torch.tensor([[0, 1]]))
    >>> {name: round(float(value), 3) for name, value in usage.compute().items()}
    {'codebook_usage': 0.5, 'perplexity': 2.0}

    ```
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, codebook_size: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if codebook_size <= 0:
            raise ValueError(f"codebook_size must be positive, got {codebook_size}")
        self.codebook_size = codebook_size
        self.add_state("counts", default=torch.zeros(codebook_size, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, image_tokens: torch.Tensor) -> None:
        ids = image_tokens.reshape(-1).long()
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.codebook_size):
            raise ValueError(
                f"code ids must lie in [0, {self.codebook_size}), got {int(ids.min())}..{int(ids.max())}; is "
                f"codebook_size the model's config.codebook_size?"
            )
        self.counts += torch.bincount(ids, minlength=self.codebook_size)

    def compute(self) -> dict[str, torch.Tensor]:
        perplexity, usage = perplexity_and_usage(self.counts)
        return {"codebook_usage": usage, "perplexity": perplexity}


class ReconstructionMetrics(nn.Module):
    """PSNR, SSIM, codebook usage/perplexity and (with a feature extractor) rFID of reconstructions.

    `update(originals, reconstructions, image_tokens)` takes batches in the model's [-1, 1] space, grayscale or
    RGB; `compute()` returns floats `{"psnr", "ssim", "codebook_usage", "perplexity", "rfid"}`, the last three
    only when `codebook_size` / `fid_feature_extractor` are given. PSNR is the mean of per-image PSNRs (as
    tokenizer papers report it); PSNR and SSIM are measured on images mapped to [0, 1] (data_range=1) after
    clamping reconstructions to [-1, 1], as they would be displayed: SSIM's luminance term is not invariant to a
    shift, so measuring it on [-1, 1] values would not give the standard SSIM.

    In several processes each updates with its own share and `compute()` (a collective: call it on every rank)
    sums the states; move the metrics to the device first (`metrics.to(accelerator.device)`), NCCL needs it.

    Example:

    ```python
    >>> import torch
    >>> from hf_vq.evaluation import ReconstructionMetrics
    >>> metrics = ReconstructionMetrics(codebook_size=8)
    >>> images = torch.rand(4, 1, 16, 16) * 2 - 1
    >>> metrics.update(images, images, image_tokens=torch.tensor([[0, 1], [2, 3], [0, 1], [2, 3]]))
    >>> result = metrics.compute()
    >>> round(result["ssim"], 4), result["codebook_usage"], round(result["perplexity"], 4)
    (1.0, 0.5, 4.0)

    ```
    """

    def __init__(
        self, codebook_size: int | None = None, fid_feature_extractor: FIDFeatureExtractor | None = None
    ) -> None:
        super().__init__()
        self.psnr = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3), reduction="elementwise_mean")
        self.ssim = StructuralSimilarityIndexMeasure(data_range=1.0, kernel_size=SSIM_KERNEL_SIZE, sigma=1.5)
        self.codebook = CodebookUsage(codebook_size) if codebook_size is not None else None
        self.fid = None
        if fid_feature_extractor is not None:
            self.fid = FrechetInceptionDistance(
                feature=as_feature_module(fid_feature_extractor), reset_real_features=True
            )

    @torch.no_grad()
    def update(
        self, originals: torch.Tensor, reconstructions: torch.Tensor, image_tokens: torch.Tensor | None = None
    ) -> None:
        """Add a batch: images (B, C, H, W) in [-1, 1] and, with `codebook_size`, their code ids."""
        _check_images(originals, reconstructions)
        if self.codebook is not None and image_tokens is None:
            raise ValueError(
                "pass image_tokens=... (the model's output.image_tokens) or build with codebook_size=None"
            )
        originals = originals.float().clamp(-1.0, 1.0)
        reconstructions = reconstructions.float().clamp(-1.0, 1.0)
        real, fake = (originals + 1.0) / 2.0, (reconstructions + 1.0) / 2.0
        self.psnr.update(fake, real)
        self.ssim.update(fake, real)
        if self.codebook is not None:
            self.codebook.update(image_tokens)
        if self.fid is not None:
            self.fid.update(originals, real=True)
            self.fid.update(reconstructions, real=False)

    def compute(self) -> dict[str, float]:
        """Metrics over everything added since the last `reset()`, over all processes."""
        if self.ssim.update_count == 0:
            raise RuntimeError("ReconstructionMetrics.compute() before any update(): there is nothing to measure")
        result = {"psnr": float(self.psnr.compute()), "ssim": float(self.ssim.compute())}
        if self.codebook is not None:
            result.update({name: float(value) for name, value in self.codebook.compute().items()})
        if self.fid is not None:
            result["rfid"] = float(self.fid.compute())
        return result

    def reset(self) -> None:
        for metric in (self.psnr, self.ssim, self.codebook, self.fid):
            if metric is not None:
                metric.reset()


def _check_images(originals: torch.Tensor, reconstructions: torch.Tensor) -> None:
    if originals.shape != reconstructions.shape or originals.ndim != 4 or originals.shape[1] not in (1, 3):
        raise ValueError(
            f"originals and reconstructions must both be (batch, 1 or 3, height, width); got {tuple(originals.shape)} "
            f"and {tuple(reconstructions.shape)}"
        )
    if min(originals.shape[-2:]) < SSIM_KERNEL_SIZE:
        raise ValueError(
            f"SSIM's {SSIM_KERNEL_SIZE}x{SSIM_KERNEL_SIZE} Gaussian window needs images of at least "
            f"{SSIM_KERNEL_SIZE}x{SSIM_KERNEL_SIZE} pixels, got {tuple(originals.shape[-2:])}"
        )
