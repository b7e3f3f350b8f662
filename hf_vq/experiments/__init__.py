"""The paper's experiments: VQ bottlenecks in classifiers and VQ autoencoders, run per variant."""

from .autoencoder import (
    AutoencoderResult,
    ConvVQAutoencoder,
    evaluate_autoencoder,
    images_to_tensor,
    train_autoencoder,
)
from .classifiers import CLASSIFIERS, AlexNetVQ, ResNet18VQ, ViTVQ
from .defaults import ARCHITECTURES, VARIANT_METHODS, ArchitectureDefaults, ablation_options
from .runner import RunResult, run_one

__all__ = [
    "ARCHITECTURES",
    "AlexNetVQ",
    "ArchitectureDefaults",
    "AutoencoderResult",
    "CLASSIFIERS",
    "ConvVQAutoencoder",
    "ResNet18VQ",
    "RunResult",
    "VARIANT_METHODS",
    "ViTVQ",
    "ablation_options",
    "evaluate_autoencoder",
    "images_to_tensor",
    "run_one",
    "train_autoencoder",
]
