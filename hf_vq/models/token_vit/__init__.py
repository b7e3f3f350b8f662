"""ViT classifiers that read an hf_vq tokenizer's token grids. Importing registers them with AutoConfig, AutoModel,
AutoModelForImageClassification and AutoImageProcessor (model type "token_vit"), and marks them for
`register_for_auto_class`, so that every saved folder carries its code (and its tokenizer's) and loads with
`trust_remote_code=True` where hf_vq is not installed."""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification

from ..vqgan import VQGANImageProcessor
from .configuration_token_vit import TokenViTConfig
from .modeling_token_vit import TokenViTForImageClassification, TokenViTPreTrainedModel, save_image_processor

AutoConfig.register(TokenViTConfig.model_type, TokenViTConfig, exist_ok=True)
AutoModelForImageClassification.register(TokenViTConfig, TokenViTForImageClassification, exist_ok=True)
# There is no headless token ViT: AutoModel gives the classifier, as it gives transformers' heads-only models.
AutoModel.register(TokenViTConfig, TokenViTForImageClassification, exist_ok=True)
# A classifier reads images through its tokenizer, so it uses the tokenizer's image processor.
AutoImageProcessor.register(TokenViTConfig, image_processor_classes={"pil": VQGANImageProcessor}, exist_ok=True)
TokenViTConfig.register_for_auto_class()
TokenViTForImageClassification.register_for_auto_class("AutoModelForImageClassification")

__all__ = ["TokenViTConfig", "TokenViTForImageClassification", "TokenViTPreTrainedModel", "save_image_processor"]
