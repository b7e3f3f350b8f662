"""Evaluation of image tokenizers (reconstruction metrics: PSNR, SSIM, codebook usage, perplexity, rFID), of token
priors (generation metrics judged by a classifier hf_vq trains, within-class diversity), and sample grids."""

from .diversity import WithinClassDiversity, diversity_ratio
from .fid import (
    INCEPTION_WEIGHTS_FILE,
    INCEPTION_WEIGHTS_URL,
    CallableFeatureExtractor,
    FIDFeatureExtractor,
    InceptionFeatureExtractor,
    InceptionWeightsNotFoundError,
    default_inception_weights_path,
)
from .generation import ClassifierJudge, GenerationMetrics, load_classifier_judge
from .metrics import CodebookUsage, ReconstructionMetrics
from .samples import save_image_grid, save_sample_grid

__all__ = [
    "INCEPTION_WEIGHTS_FILE",
    "INCEPTION_WEIGHTS_URL",
    "CallableFeatureExtractor",
    "ClassifierJudge",
    "CodebookUsage",
    "FIDFeatureExtractor",
    "GenerationMetrics",
    "InceptionFeatureExtractor",
    "InceptionWeightsNotFoundError",
    "ReconstructionMetrics",
    "default_inception_weights_path",
    "load_classifier_judge",
    "WithinClassDiversity",
    "diversity_ratio",
    "save_image_grid",
    "save_sample_grid",
]
