"""The quantizer of hf_vq (Huh et al., ICML 2023), copied with this checkpoint for trust_remote_code."""

from .affine import LearnedAffine, RunningStatisticsAffine
from .codebook import Codebook
from .ema import EMACodebookStatistics
from .fsq import FiniteScalarQuantizer
from .grouped import GroupedVectorQuantizer
from .residual import ResidualVectorQuantizer
from .simvq import LinearCodebookTransform
from .vector_quantizer import QuantizerBase, VectorQuantizer, VectorQuantizerOutput

# This module is already the checkpoint's copy: the quantizer files are its siblings.
remote_code_source = None

__all__ = ['Codebook', 'EMACodebookStatistics', 'FiniteScalarQuantizer', 'GroupedVectorQuantizer', 'LearnedAffine', 'LinearCodebookTransform', 'QuantizerBase', 'ResidualVectorQuantizer', 'RunningStatisticsAffine', 'VectorQuantizer', 'VectorQuantizerOutput']
