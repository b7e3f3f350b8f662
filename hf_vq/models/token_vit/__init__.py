"""ViT classifiers that read an hf_vq tokenizer's token grids. Importing registers them with
AutoConfig, AutoModelForImageClassification and AutoImageProcessor (model type "token_vit")."""

from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification

from ..vqgan import VQGANImageProcessor
from .configuration_token_vit import TokenViTConfig
from .modeling_token_vit import TokenViTForImageClassification, TokenViTPreTrainedModel, save_processor_without_remote_code

AutoConfig.register(TokenViTConfig.model_type, TokenViTConfig, exist_ok=True)
AutoModelForImageClassification.register(TokenViTConfig, TokenViTForImageClassification, exist_ok=True)
# A classifier reads images through its tokenizer, so it uses the tokenizer's image processor.
AutoImageProcessor.register(TokenViTConfig, image_processor_classes={"pil": VQGANImageProcessor}, exist_ok=True)

__all__ = ["TokenViTConfig", "TokenViTForImageClassification", "TokenViTPreTrainedModel", "save_processor_without_remote_code"]
