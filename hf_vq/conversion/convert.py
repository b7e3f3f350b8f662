"""One entry point for every converter: `convert_tokenizer(source)` recognises the source's kind from its
config.json and returns the converted `VQGANModel` with the `VQGANImageProcessor` that feeds it the pixels the source
expects."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from hf_vq.errors import ConfigError
from hf_vq.models.vqgan import VQGANImageProcessor, VQGANModel

from . import chameleon_vq
from .source import TokenizerSource, resolve_source

# What each kind of source is, for the card and the command's summary.
SOURCE_NAMES = {
    "diffusers_vq": "diffusers VQModel",
    "janus_vq": "transformers JanusVQVAE (LlamaGen VQ-16)",
    "chameleon_vq": "transformers ChameleonVQVAE",
}


@dataclass
class ConvertedTokenizer:
    """A converted tokenizer: the model, its processor, and where it came from."""

    model: VQGANModel
    image_processor: VQGANImageProcessor
    source: TokenizerSource
    # Parts of the model that the source does not have and that were freshly initialised (Chameleon's decoder).
    initialized_parts: list[str] = field(default_factory=list)

    @property
    def source_name(self) -> str:
        return SOURCE_NAMES[self.source.kind]

    def conversion_record(self) -> dict[str, object]:
        """What the converted folder records about its source (`training_config.json`, read by the model card and
        by `hf-vq reconstruct`): where it came from, and which parts were not in it."""
        record: dict[str, object] = {
            "pretrained_model_name_or_path": self.source.name_or_path,
            "subfolder": self.source.subfolder,
            "revision": self.source.revision,
            "converted_from": self.source_name,
        }
        if self.initialized_parts:
            record["converted_parts"] = list(chameleon_vq.CONVERTED_PARTS)
            record["initialized_parts"] = list(self.initialized_parts)
            record["decoder_initialized"] = "decoder" in self.initialized_parts
        return record

    def save_pretrained(self, output_dir: str | os.PathLike) -> None:
        self.model.save_pretrained(output_dir, image_processor=self.image_processor)


def convert_tokenizer(
    source: str | os.PathLike,
    subfolder: str | None = None,
    revision: str | None = None,
    image_size: int | None = None,
    initialize_missing_decoder: bool = False,
) -> ConvertedTokenizer:
    """Convert a tokenizer folder or Hub id into a `VQGANModel` and its `VQGANImageProcessor`.

    The kind comes from the source's config.json: diffusers' `_class_name` "VQModel", transformers' `model_type`
    "janus_vqgan" (or "janus", a full Janus model whose `vq_config` describes the VQ-VAE) and "chameleon_vqgan" (or
    "chameleon"). Anything else is refused
    with a message naming the kinds that convert (`UnsupportedSourceError`); a folder or Hub id that does not exist
    raises `SourceNotFoundError`. Both are `HfVqUserError`s.

    A `ChameleonVQVAE` (model_type "chameleon_vqgan", or a "chameleon" model holding one) has no decoder: it is
    refused unless `initialize_missing_decoder=True`, which converts its encoder and codebook exactly and initialises
    the decoder (`initialized_parts` says so, and the folder's record and card). The flag changes nothing for sources
    that have a decoder.

    Example:
        >>> converted = convert_tokenizer("CompVis/ldm-celebahq-256", subfolder="vqvae")  # doctest: +SKIP
        >>> converted.save_pretrained("outputs/ldm-celebahq-vqgan")  # doctest: +SKIP
    """
    resolved = resolve_source(source, subfolder=subfolder, revision=revision)
    factor = resolved.downsampling_factor
    if image_size is not None and (image_size < 1 or image_size % factor):
        raise ConfigError(
            f"image_size={image_size} is not a positive multiple of {factor}, the downsampling factor of "
            f"{resolved.description}; pick a multiple of {factor}"
        )
    kwargs = resolved.from_pretrained_kwargs()
    if resolved.kind == "diffusers_vq":
        model = VQGANModel.from_diffusers(resolved.name_or_path, image_size=image_size, **kwargs)
    else:
        model = VQGANModel.from_transformers(
            resolved.name_or_path,
            image_size=image_size,
            initialize_missing_decoder=initialize_missing_decoder,
            **kwargs,
        )
    if resolved.kind == "chameleon_vq":
        # ChameleonImageProcessor's pixels: Lanczos resize of the shortest edge, center crop, x * 0.0078 - 1.
        size = chameleon_vq.chameleon_processor_kwargs(model.config.image_size, model.config.num_channels)
        processor = VQGANImageProcessor.from_model_config(model.config, **size)
        return ConvertedTokenizer(model, processor, resolved, list(chameleon_vq.INITIALIZED_PARTS))
    # diffusers' VQModel and LlamaGen's VQ-16 in Janus take pixels in [-1, 1] ((x / 255 - 0.5) / 0.5, the
    # processor's default): Janus trains and decodes at mean 0.5, std 0.5.
    processor = VQGANImageProcessor.from_model_config(model.config)
    return ConvertedTokenizer(model=model, image_processor=processor, source=resolved)


__all__ = ["ConvertedTokenizer", "convert_tokenizer"]
