"""Evaluation of image tokenizers: reconstruction metrics (PSNR, SSIM, codebook usage, perplexity, rFID) and sample grids."""

from .fid import (
    INCEPTION_WEIGHTS_FILE,
    INCEPTION_WEIGHTS_URL,
    CallableFeatureExtractor,
    FIDFeatureExtractor,
    InceptionFeatureExtractor,
    InceptionWeightsNotFoundError,
    default_inception_weights_path,
)
from .metrics import CodebookUsage, ReconstructionMetrics
from .samples import save_sample_grid

__all__ = [
    "INCEPTION_WEIGHTS_FILE",
    "INCEPTION_WEIGHTS_URL",
    "CallableFeatureExtractor",
    "CodebookUsage",
    "FIDFeatureExtractor",
    "InceptionFeatureExtractor",
    "InceptionWeightsNotFoundError",
    "ReconstructionMetrics",
    "default_inception_weights_path",
    "save_sample_grid",
]
