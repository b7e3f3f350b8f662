"""The MaskGIT token prior. Importing this package registers it with AutoConfig and AutoModel (model type "maskgit")
and marks it for `register_for_auto_class`, so that every `save_pretrained` folder carries its code and loads with
`trust_remote_code=True` where hf_vq is not installed."""

from transformers import AutoConfig, AutoModel

from .configuration_maskgit import MaskGITConfig
from .modeling_maskgit import MaskGITModel, MaskGITModelOutput, MaskGITPreTrainedModel


def _register_with_auto_classes() -> None:
    AutoConfig.register(MaskGITConfig.model_type, MaskGITConfig, exist_ok=True)
    AutoModel.register(MaskGITConfig, MaskGITModel, exist_ok=True)
    MaskGITConfig.register_for_auto_class()
    MaskGITModel.register_for_auto_class("AutoModel")


_register_with_auto_classes()

__all__ = ["MaskGITConfig", "MaskGITModel", "MaskGITModelOutput", "MaskGITPreTrainedModel"]
