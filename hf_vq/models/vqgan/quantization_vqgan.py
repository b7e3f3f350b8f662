"""The quantizer classes that `modeling_vqgan.py` builds, seen through one sibling module.

Why this file exists: `register_for_auto_class` copies `modeling_vqgan.py` into a saved checkpoint together with
the files it imports *relatively from its own folder* (transformers follows only `from .name import` lines, and
resolves every one of them next to the modeling file). The quantizer lives two packages up, in
`hf_vq.quantization`, and must stay the single source of truth (it is the paper's code, tested on its own).

So the modeling file imports the quantizer only through `from .quantization_vqgan import ...`:

- inside the installed package, this module re-exports `hf_vq.quantization` with absolute imports (which the
  copier ignores);
- when a checkpoint is saved, `VQGANModel.save_pretrained` copies the quantizer's own files (they import each other
  only as flat siblings, `from .codebook import ...`) into the checkpoint and writes `remote_code_source()` as this
  module's copy, so that `trust_remote_code=True` loads the checkpoint where hf_vq is not installed, running the
  very same quantizer code.
"""

from hf_vq.quantization.affine import LearnedAffine, RunningStatisticsAffine
from hf_vq.quantization.codebook import Codebook
from hf_vq.quantization.config import QUANTIZER_TYPES, QuantizerConfig, check_option_names
from hf_vq.quantization.ema import EMACodebookStatistics
from hf_vq.quantization.fsq import FiniteScalarQuantizer
from hf_vq.quantization.grouped import GroupedVectorQuantizer
from hf_vq.quantization.registry import build_quantizer, quantizer_class
from hf_vq.quantization.residual import ResidualVectorQuantizer
from hf_vq.quantization.simvq import LinearCodebookTransform
from hf_vq.quantization.vector_quantizer import QuantizerBase, VectorQuantizer, VectorQuantizerOutput

# What the checkpoint's copy of this module imports from the quantizer files copied beside it.
_REMOTE_IMPORTS = {
    "affine": "LearnedAffine, RunningStatisticsAffine",
    "codebook": "Codebook",
    "config": "QUANTIZER_TYPES, QuantizerConfig, check_option_names",
    "ema": "EMACodebookStatistics",
    "fsq": "FiniteScalarQuantizer",
    "grouped": "GroupedVectorQuantizer",
    "registry": "build_quantizer, quantizer_class",
    "residual": "ResidualVectorQuantizer",
    "simvq": "LinearCodebookTransform",
    "vector_quantizer": "QuantizerBase, VectorQuantizer, VectorQuantizerOutput",
}


def remote_code_source() -> str:
    """Source of this module's copy in a saved checkpoint: the same names, imported from sibling files.

    Built here rather than written as a literal: transformers scans source text for lines that start with a
    relative import, and would look for the quantizer files beside this file when saving.
    """
    # Every registered quantizer's file is imported by name too: transformers copies a checkpoint's files into its
    # module cache by following `from .x import` lines, and the registry imports a type's file only when it is built.
    registered = {}
    for name in QUANTIZER_TYPES:
        cls = quantizer_class(name)
        registered[cls.__module__.rpartition(".")[2]] = cls.__name__
    imports = "\n".join(
        f"from .{module} import {names}" for module, names in {**registered, **_REMOTE_IMPORTS}.items()
    )
    return (
        '"""The quantizer of hf_vq (Huh et al., ICML 2023), copied with this checkpoint for trust_remote_code."""\n\n'
        f"{imports}\n\n"
        "# This module is already the checkpoint's copy: the quantizer files are its siblings.\n"
        "remote_code_source = None\n\n"
        f"__all__ = {__all__!r}\n"
    )


__all__ = [
    "QUANTIZER_TYPES",
    "Codebook",
    "EMACodebookStatistics",
    "FiniteScalarQuantizer",
    "GroupedVectorQuantizer",
    "LearnedAffine",
    "LinearCodebookTransform",
    "QuantizerBase",
    "QuantizerConfig",
    "ResidualVectorQuantizer",
    "RunningStatisticsAffine",
    "VectorQuantizer",
    "VectorQuantizerOutput",
    "build_quantizer",
    "check_option_names",
    "quantizer_class",
]
