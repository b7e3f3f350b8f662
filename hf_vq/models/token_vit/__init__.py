"""ViT classifiers that read an hf_vq tokenizer's token grids. Importing registers them with
AutoConfig and AutoModelForImageClassification (model type "token_vit")."""

from transformers import AutoConfig, AutoModelForImageClassification

from .configuration_token_vit import TokenViTConfig
from .modeling_token_vit import TokenViTForImageClassification, TokenViTPreTrainedModel

AutoConfig.register(TokenViTConfig.model_type, TokenViTConfig, exist_ok=True)
AutoModelForImageClassification.register(TokenViTConfig, TokenViTForImageClassification, exist_ok=True)

__all__ = ["TokenViTConfig", "TokenViTForImageClassification", "TokenViTPreTrainedModel"]
