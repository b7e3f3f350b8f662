"""Converters that bring existing VQ tokenizers into hf_vq: diffusers' `VQModel` and transformers' `JanusVQVAE`
become a `VQGANModel` (plus its `VQGANImageProcessor`) that gives the same token ids and reconstructions;
transformers' `ChameleonVQVAE`, which has no decoder, gives the same token ids with a freshly initialised decoder
when asked to (`initialize_missing_decoder`).

`convert_tokenizer(source)` picks the converter from the source's config.json; `VQGANModel.from_diffusers` and
`VQGANModel.from_transformers` take the source module itself. One file per source format (`diffusers_vq.py`,
`janus_vq.py`, `chameleon_vq.py`; `transformers_vq.py` tells the transformers ones apart); `hf-vq convert` is
`command.py`.
"""

from . import chameleon_vq, diffusers_vq, janus_vq, transformers_vq, weights
from .convert import ConvertedTokenizer, convert_tokenizer
from .source import SUPPORTED_SOURCES, SourceNotFoundError, UnsupportedSourceError

__all__ = [
    "SUPPORTED_SOURCES",
    "ConvertedTokenizer",
    "SourceNotFoundError",
    "UnsupportedSourceError",
    "chameleon_vq",
    "convert_tokenizer",
    "diffusers_vq",
    "janus_vq",
    "transformers_vq",
    "weights",
]
