"""One entry point for every converter: `convert_tokenizer(source)` recognises the source's kind from its
config.json and returns the converted `VQGANModel` with the `VQGANImageProcessor` that feeds it the pixels the source
expects."""

from __future__ import annotations

import os
from dataclasses import dataclass

from hf_vq.errors import ConfigError
from hf_vq.models.vqgan import VQGANImageProcessor, VQGANModel

from .source import TokenizerSource, resolve_source

# What each kind of source is, for the card and the command's summary.
SOURCE_NAMES = {"diffusers_vq": "diffusers VQModel", "janus_vq": "transformers JanusVQVAE (LlamaGen VQ-16)"}


@dataclass
class ConvertedTokenizer:
    """A converted tokenizer: the model, its processor, and where it came from."""

    model: VQGANModel
    image_processor: VQGANImageProcessor
    source: TokenizerSource

    @property
    def source_name(self) -> str:
        return SOURCE_NAMES[self.source.kind]

    def conversion_record(self) -> dict[str, object]:
        """What the converted folder records about its source (`training_config.json`, read by the model card)."""
        return {
            "pretrained_model_name_or_path": self.source.name_or_path,
            "subfolder": self.source.subfolder,
            "revision": self.source.revision,
            "converted_from": self.source_name,
        }

    def save_pretrained(self, output_dir: str | os.PathLike) -> None:
        self.model.save_pretrained(output_dir, image_processor=self.image_processor)


def convert_tokenizer(
    source: str | os.PathLike,
    subfolder: str | None = None,
    revision: str | None = None,
    image_size: int | None = None,
) -> ConvertedTokenizer:
    """Convert a tokenizer folder or Hub id into a `VQGANModel` and its `VQGANImageProcessor`.

    The kind comes from the source's config.json: diffusers' `_class_name` "VQModel", transformers' `model_type`
    "janus_vqgan" (or "janus", a full Janus model whose `vq_config` describes the VQ-VAE). Anything else is refused
    with a message naming the kinds that convert (`UnsupportedSourceError`); a folder or Hub id that does not exist
    raises `SourceNotFoundError`. Both are `HfVqUserError`s.

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
        model = VQGANModel.from_transformers(resolved.name_or_path, image_size=image_size, **kwargs)
    # Every supported source takes pixels in [-1, 1] ((x / 255 - 0.5) / 0.5, the processor's default): diffusers'
    # VQModel, and LlamaGen's VQ-16 in Janus, which trains and decodes at mean 0.5, std 0.5.
    processor = VQGANImageProcessor.from_model_config(model.config)
    return ConvertedTokenizer(model=model, image_processor=processor, source=resolved)


__all__ = ["ConvertedTokenizer", "convert_tokenizer"]
