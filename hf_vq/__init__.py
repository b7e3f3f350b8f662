"""hf_vq: VQ-VAE / VQGAN image tokenizers for the Hugging Face ecosystem.

The vector quantizer implements Huh et al., "Straightening Out the Straight-Through Estimator"
(ICML 2023): affine re-parameterised codes, alternating optimisation, the synchronized update and the
improved commitment loss, plus k-means++ initialisation and dead-code replacement.

Importing hf_vq registers its models with transformers' Auto classes (AutoConfig, AutoModel,
AutoImageProcessor, AutoModelForImageClassification); the diffusers pipelines
(`VQGANPipeline`, `MaskGITPipeline`, `AutoregressivePipeline`) and `MaskGITScheduler` are imported on first use.
"""

from .models import (
    MaskGITConfig,
    MaskGITModel,
    TokenViTConfig,
    TokenViTForImageClassification,
    VQGANConfig,
    VQGANImageProcessor,
    VQGANModel,
)
from .quantization import (
    FiniteScalarQuantizer,
    GroupedVectorQuantizer,
    ResidualVectorQuantizer,
    VectorQuantizer,
    VectorQuantizerOutput,
)

__version__ = "0.1.0"

__all__ = [
    "AutoregressivePipeline",
    "FiniteScalarQuantizer",
    "GroupedVectorQuantizer",
    "MaskGITConfig",
    "MaskGITModel",
    "MaskGITPipeline",
    "MaskGITScheduler",
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


# diffusers pieces are imported on first use: diffusers is only needed by those who use them.
_LAZY_DIFFUSERS = {
    "VQGANPipeline": "hf_vq.pipelines.vqgan.pipeline_vqgan",
    "MaskGITPipeline": "hf_vq.pipelines.maskgit.pipeline_maskgit",
    "AutoregressivePipeline": "hf_vq.pipelines.autoregressive.pipeline_autoregressive",
    "MaskGITScheduler": "hf_vq.schedulers.scheduling_maskgit",
}


def __getattr__(name: str):
    if name in _LAZY_DIFFUSERS:
        import importlib

        return getattr(importlib.import_module(_LAZY_DIFFUSERS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
