"""The paper's experiments: VQ bottlenecks in classifiers and VQ autoencoders, run per variant."""

from .autoencoder import AutoencoderResult, ConvVQAutoencoder, evaluate_autoencoder, images_to_tensor, train_autoencoder
from .variants import VARIANTS, variant_options

__all__ = [
    "AutoencoderResult",
    "ConvVQAutoencoder",
    "VARIANTS",
    "evaluate_autoencoder",
    "images_to_tensor",
    "train_autoencoder",
    "variant_options",
]
