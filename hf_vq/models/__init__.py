"""Hugging Face models of hf_vq, one folder each, laid out as transformers lays out its own."""

from typing import Any

from .maskgit import MaskGITConfig, MaskGITModel, MaskGITModelOutput, MaskGITPreTrainedModel
from .token_vit import TokenViTConfig, TokenViTForImageClassification, TokenViTPreTrainedModel
from .vqgan import (
    VQGANConfig,
    VQGANDecoderOutput,
    VQGANEncoderOutput,
    VQGANImageProcessor,
    VQGANModel,
    VQGANModelOutput,
    VQGANPreTrainedModel,
)


def __getattr__(name: str) -> Any:
    if name == "VQGANPipeline":
        from .vqgan.pipeline_vqgan import VQGANPipeline

        return VQGANPipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MaskGITConfig",
    "MaskGITModel",
    "MaskGITModelOutput",
    "MaskGITPreTrainedModel",
    "TokenViTConfig",
    "TokenViTForImageClassification",
    "TokenViTPreTrainedModel",
    "VQGANConfig",
    "VQGANDecoderOutput",
    "VQGANEncoderOutput",
    "VQGANImageProcessor",
    "VQGANModel",
    "VQGANModelOutput",
    "VQGANPipeline",
    "VQGANPreTrainedModel",
]
