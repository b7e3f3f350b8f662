"""`VQGANModel.from_transformers`: which transformers VQ-VAE a module, folder or Hub id is (`JanusVQVAE` or
`ChameleonVQVAE`, alone or inside its full model), and its conversion by the matching converter."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from . import chameleon_vq, janus_vq, weights
from .source import UnsupportedSourceError

logger = logging.getLogger(__name__)

# transformers model types of each converter: the VQ-VAE's own and the full model's that holds it.
CHAMELEON_MODEL_TYPES = ("chameleon_vqgan", "chameleon")


def is_chameleon(module_or_path: Any, subfolder: str | None = None, **from_pretrained_kwargs: Any) -> bool:
    """Whether the source is a ChameleonVQVAE or a Chameleon model (read from its config for a folder or Hub id)."""
    from transformers import PreTrainedModel

    if isinstance(module_or_path, PreTrainedModel):
        return module_or_path.config.model_type in CHAMELEON_MODEL_TYPES
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(module_or_path, subfolder=subfolder or "", **from_pretrained_kwargs)
    return config.model_type in CHAMELEON_MODEL_TYPES


def vqgan_from_transformers(
    cls: type,
    module_or_path: Any,
    subfolder: str | None = None,
    *,
    image_size: int | None = None,
    initialize_missing_decoder: bool = False,
    **kwargs: Any,
) -> Any:
    """The body of `VQGANModel.from_transformers` (see there)."""
    if not is_chameleon(module_or_path, subfolder, **kwargs):
        source = janus_vq.load_janus_vq(module_or_path, subfolder=subfolder, **kwargs)
        config = janus_vq.vqgan_config_from_janus(source.config, image_size=image_size)
        state_dict = janus_vq.vqgan_state_dict_from_janus(source.state_dict())
        return weights.load_converted_weights(cls(config), state_dict, type(source).__name__)
    if not initialize_missing_decoder:
        named = isinstance(module_or_path, (str, os.PathLike))
        name = str(module_or_path) if named else type(module_or_path).__name__
        raise UnsupportedSourceError(chameleon_vq.missing_decoder_message(name))
    source = chameleon_vq.load_chameleon_vq(module_or_path, subfolder=subfolder, **kwargs)
    config = chameleon_vq.vqgan_config_from_chameleon(source.config, image_size=image_size)
    state_dict = chameleon_vq.vqgan_state_dict_from_chameleon(source.state_dict())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(chameleon_vq.DECODER_SEED)  # the fresh decoder: the same for every conversion
        model = cls(config)
    logger.warning(
        "Converted the ChameleonVQVAE's encoder, quant_conv and codebook (the same token ids); its decoder is not in "
        "the source and was freshly initialised: reconstructions are meaningless until it is trained (hf-vq "
        "train-tokenizer --pretrained_model_name_or_path <folder>)"
    )
    return weights.load_converted_weights(model, state_dict, type(source).__name__, initialized_prefixes=("decoder.",))


__all__ = ["is_chameleon", "vqgan_from_transformers"]
