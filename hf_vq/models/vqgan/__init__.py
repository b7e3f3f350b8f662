"""The VQGAN image tokenizer as a Hugging Face model: config, model and image processor.

Importing this package registers the classes with transformers' Auto classes (`AutoConfig`, `AutoModel`,
`AutoImageProcessor`, model type "vqgan") and marks them for `register_for_auto_class`, so that every
`save_pretrained` folder carries its code and loads with `trust_remote_code=True` where hf_vq is not installed.
Its diffusers pipeline, `VQGANPipeline`, lives with the others in `hf_vq/pipelines/vqgan/`.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel

from .configuration_vqgan import VQGANConfig
from .image_processing_vqgan import VQGANImageProcessor
from .modeling_vqgan import (
    VQGANDecoderOutput,
    VQGANEncoderOutput,
    VQGANModel,
    VQGANModelOutput,
    VQGANPreTrainedModel,
)


def _register_with_auto_classes() -> None:
    AutoConfig.register(VQGANConfig.model_type, VQGANConfig, exist_ok=True)
    AutoModel.register(VQGANConfig, VQGANModel, exist_ok=True)
    AutoImageProcessor.register(VQGANConfig, image_processor_classes={"pil": VQGANImageProcessor}, exist_ok=True)
    VQGANConfig.register_for_auto_class()
    VQGANModel.register_for_auto_class("AutoModel")
    VQGANImageProcessor.register_for_auto_class("AutoImageProcessor")


_register_with_auto_classes()


__all__ = [
    "VQGANConfig",
    "VQGANDecoderOutput",
    "VQGANEncoderOutput",
    "VQGANImageProcessor",
    "VQGANModel",
    "VQGANModelOutput",
    "VQGANPreTrainedModel",
]
