"""Hugging Face models of hf_vq, one folder each, laid out as transformers lays out its own."""

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
    "VQGANPreTrainedModel",
]
