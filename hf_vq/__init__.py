"""hf_vq: VQ-VAE / VQGAN image tokenizers for the Hugging Face ecosystem.

The vector quantizer implements Huh et al., "Straightening Out the Straight-Through Estimator"
(ICML 2023): affine re-parameterised codes, alternating optimisation, the synchronized update and the
improved commitment loss, plus k-means++ initialisation and dead-code replacement.

Importing hf_vq registers its models with transformers' Auto classes (AutoConfig, AutoModel,
AutoImageProcessor, AutoModelForImageClassification).
"""

from .models import (
    TokenViTConfig,
    TokenViTForImageClassification,
    VQGANConfig,
    VQGANImageProcessor,
    VQGANModel,
)
from .quantization import FiniteScalarQuantizer, GroupedVectorQuantizer, ResidualVectorQuantizer, VectorQuantizer, VectorQuantizerOutput

__version__ = "0.1.0"

__all__ = [
    "FiniteScalarQuantizer",
    "GroupedVectorQuantizer",
    "ResidualVectorQuantizer",
    "TokenViTConfig",
    "TokenViTForImageClassification",
    "VQGANConfig",
    "VQGANImageProcessor",
    "VQGANModel",
    "VQGANPipeline",
    "VectorQuantizer",
    "VectorQuantizerOutput",
    "__version__",
]


def __getattr__(name: str):
    # The diffusers pipeline is imported on first use: diffusers is only needed by those who use it.
    if name == "VQGANPipeline":
        from .models.vqgan.pipeline_vqgan import VQGANPipeline

        return VQGANPipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
