"""hf_vq: VQ-VAE / VQGAN image tokenizers for the Hugging Face ecosystem.

The vector quantizer implements Huh et al., "Straightening Out the Straight-Through Estimator"
(ICML 2023): affine re-parameterised codes, alternating optimisation, the synchronized update and the
improved commitment loss, plus k-means++ initialisation and dead-code replacement.
"""

from .quantization import GroupedVectorQuantizer, ResidualVectorQuantizer, VectorQuantizer, VectorQuantizerOutput

__version__ = "0.1.0"

__all__ = ["GroupedVectorQuantizer", "ResidualVectorQuantizer", "VectorQuantizer", "VectorQuantizerOutput", "__version__"]
