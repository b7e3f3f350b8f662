"""Vector quantization after Huh et al., ICML 2023 (pure PyTorch, no Hugging Face imports)."""

from .affine import LearnedAffine, RunningStatisticsAffine
from .alternating import alternating_codebook_step
from .codebook import Codebook
from .commitment import beta_commitment_loss, beta_from_vqvae_weight
from .grouped import GroupedVectorQuantizer
from .kmeans import kmeans_plus_plus_init
from .replacement import replace_dead_codes
from .residual import ResidualVectorQuantizer
from .search import nearest_code_indices
from .synchronized_update import synchronized_straight_through
from .vector_quantizer import QuantizerBase, VectorQuantizer, VectorQuantizerOutput


def build_quantizer(quantizer_type: str = "vector", num_groups: int = 1, num_quantizers: int = 1, **kwargs) -> QuantizerBase:
    """A quantizer by name: "vector", "grouped" (with num_groups) or "residual" (with num_quantizers)."""
    if quantizer_type == "vector":
        return VectorQuantizer(**kwargs)
    if quantizer_type == "grouped":
        return GroupedVectorQuantizer(num_groups=num_groups, **kwargs)
    if quantizer_type == "residual":
        return ResidualVectorQuantizer(num_quantizers=num_quantizers, **kwargs)
    raise ValueError(f"unknown quantizer_type {quantizer_type!r}; use 'vector', 'grouped' or 'residual'")


__all__ = [
    "Codebook",
    "GroupedVectorQuantizer",
    "LearnedAffine",
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
    "synchronized_straight_through",
]
