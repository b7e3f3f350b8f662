"""Vector quantization after Huh et al., ICML 2023 (pure PyTorch, no Hugging Face imports).

`QuantizerConfig` (config.py) holds, checks and documents every option; `build_quantizer(config)` (registry.py) builds
the quantizer it names. A new quantizer method is one file here: a `QuantizerBase` subclass with `from_config` and
`reset_parameters`, registered with `@register_quantizer("name")`, plus one line `"name": "file"` in
`config.QUANTIZER_MODULES` (and its options as `QuantizerConfig` fields): `build_quantizer` imports the file when the
type is first built, and saved checkpoints carry it. The imports below are the public names, not a registration.
"""

from .affine import LearnedAffine, RunningStatisticsAffine
from .alternating import alternating_codebook_step
from .alternating_sgd import sgd_codebook_step
from .codebook import Codebook
from .commitment import beta_commitment_loss, beta_from_vqvae_weight
from .config import QuantizerConfig
from .ema import EMACodebookStatistics
from .fsq import FiniteScalarQuantizer
from .grouped import GroupedVectorQuantizer
from .kmeans import kmeans_plus_plus_init
from .registry import QUANTIZERS, build_quantizer, register_quantizer
from .replacement import replace_dead_codes
from .residual import ResidualVectorQuantizer
from .rotation_trick import rotation_trick
from .search import nearest_code_indices
from .simvq import LinearCodebookTransform
from .synchronized_update import synchronized_straight_through
from .vector_quantizer import NonFiniteInputError, QuantizerBase, VectorQuantizer, VectorQuantizerOutput, check_finite

__all__ = [
    "Codebook",
    "EMACodebookStatistics",
    "FiniteScalarQuantizer",
    "GroupedVectorQuantizer",
    "LearnedAffine",
    "LinearCodebookTransform",
    "NonFiniteInputError",
    "QUANTIZERS",
    "QuantizerBase",
    "QuantizerConfig",
    "ResidualVectorQuantizer",
    "RunningStatisticsAffine",
    "VectorQuantizer",
    "VectorQuantizerOutput",
    "alternating_codebook_step",
    "beta_commitment_loss",
    "beta_from_vqvae_weight",
    "build_quantizer",
    "check_finite",
    "kmeans_plus_plus_init",
    "nearest_code_indices",
    "register_quantizer",
    "replace_dead_codes",
    "rotation_trick",
    "sgd_codebook_step",
    "synchronized_straight_through",
]
