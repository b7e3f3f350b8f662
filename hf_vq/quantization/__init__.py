"""Vector quantization after Huh et al., ICML 2023 (pure PyTorch, no Hugging Face imports)."""

from .affine import LearnedAffine, RunningStatisticsAffine
from .alternating import alternating_codebook_step
from .alternating_sgd import sgd_codebook_step
from .codebook import Codebook
from .commitment import beta_commitment_loss, beta_from_vqvae_weight
from .ema import EMACodebookStatistics
from .fsq import FiniteScalarQuantizer
from .grouped import GroupedVectorQuantizer
from .kmeans import kmeans_plus_plus_init
from .replacement import replace_dead_codes
from .residual import ResidualVectorQuantizer
from .rotation_trick import rotation_trick
from .search import nearest_code_indices
from .simvq import LinearCodebookTransform
from .synchronized_update import synchronized_straight_through
from .vector_quantizer import NonFiniteInputError, QuantizerBase, VectorQuantizer, VectorQuantizerOutput


def build_quantizer(quantizer_type: str = "vector", num_groups: int = 1, num_quantizers: int = 1, **kwargs) -> QuantizerBase:
    """A quantizer by name: "vector", "grouped" (with num_groups), "residual" (with num_quantizers) or "fsq"
    (with levels and channel_dim only)."""
    if quantizer_type == "fsq":
        return FiniteScalarQuantizer(**kwargs)
    if quantizer_type == "vector":
        return VectorQuantizer(**kwargs)
    if quantizer_type == "grouped":
        return GroupedVectorQuantizer(num_groups=num_groups, **kwargs)
    if quantizer_type == "residual":
        return ResidualVectorQuantizer(num_quantizers=num_quantizers, **kwargs)
    raise ValueError(f"unknown quantizer_type {quantizer_type!r}; use 'vector', 'grouped', 'residual' or 'fsq'")


__all__ = [
    "Codebook",
    "EMACodebookStatistics",
    "FiniteScalarQuantizer",
    "GroupedVectorQuantizer",
    "LearnedAffine",
    "LinearCodebookTransform",
    "NonFiniteInputError",
    "QuantizerBase",
    "ResidualVectorQuantizer",
    "RunningStatisticsAffine",
    "VectorQuantizer",
    "VectorQuantizerOutput",
    "alternating_codebook_step",
    "beta_commitment_loss",
    "beta_from_vqvae_weight",
    "build_quantizer",
    "kmeans_plus_plus_init",
    "nearest_code_indices",
    "replace_dead_codes",
    "rotation_trick",
    "sgd_codebook_step",
    "synchronized_straight_through",
]
