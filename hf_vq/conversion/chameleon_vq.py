"""transformers `ChameleonVQVAE` -> `VQGANModel`: the image tokenizer of Meta's Chameleon (Make-a-Scene's VQGAN;
8,192 codes of dimension 256, 16x downsampling, 512-pixel images).

transformers ships this VQ-VAE *without a decoder*: an encoder, `quant_conv`, the codebook and an unused
`post_quant_conv`. These convert exactly - the encoder is taming-transformers' VQGAN encoder, as LlamaGen's (Janus)
is, and is renamed the same way; the quantizer is the plain euclidean nearest code. A `VQGANModel` always decodes,
so converting needs the explicit opt-in `initialize_missing_decoder=True` (`hf-vq convert
--initialize_missing_decoder`): the decoder is then built mirroring the encoder, as every VQGAN's is, and freshly
initialised (seeded, so a conversion is reproducible). Token ids equal the source's; reconstructions mean nothing
until the decoder is trained, for example with `hf-vq train-tokenizer --pretrained_model_name_or_path <folder>`.

Chameleon's pixels: `ChameleonImageProcessor` resizes the shortest edge (Lanczos), center-crops, and maps 8-bit
values with `x * 0.0078 - 1` (rescale 0.0078, mean 1, std 1; not `x / 127.5 - 1`: white is 0.989).
`chameleon_processor_kwargs` gives the `VQGANImageProcessor` the same steps.

Chameleon's quantizer loss is taming's "legacy" formula, `||sg(q) - z||^2 + b * ||q - sg(z)||^2` with b = 0.25:
hf_vq's `beta * codebook + (1 - beta) * commitment`, scaled by `quantizer_loss_weight`, equals it with
`beta = b / (1 + b)` and `quantizer_loss_weight = 1 + b`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import torch

from hf_vq.models.vqgan.configuration_vqgan import VQGANConfig

from .janus_vq import PROJECTION, RENAMES, _vq_weights_of_full_model
from .source import UnsupportedSourceError

logger = logging.getLogger(__name__)

# Chameleon's group normalisation (fixed, not in its config).
NORM_NUM_GROUPS = 32
# ChameleonVQVAEVectorQuantizer's commitment weight when its config names none (`getattr(config, "beta", 0.25)`).
DEFAULT_COMMITMENT_WEIGHT = 0.25
# ChameleonImageProcessor's pixel mapping: x * 0.0078 - 1 (its rescale_factor, image_mean and image_std).
CHAMELEON_RESCALE_FACTOR = 0.0078
CHAMELEON_MEAN = 1.0
CHAMELEON_STD = 1.0
# The flag that opts in to a decoder the source does not have, named by the refusal.
INITIALIZE_FLAG = "--initialize_missing_decoder"
INITIALIZE_KWARG = "initialize_missing_decoder=True"
# The parts the converted folder takes from the source, and the one it does not (the card and record say so).
CONVERTED_PARTS = ["encoder", "quant_conv", "codebook", "post_quant_conv"]
INITIALIZED_PARTS = ["decoder"]
# Seed of the fresh decoder: the same source converts to the same folder.
DECODER_SEED = 0


def missing_decoder_message(description: str) -> str:
    return (
        f"{description} is a Chameleon VQ-VAE: transformers' ChameleonVQVAE has an encoder and a codebook but no "
        "decoder, so it cannot reconstruct images, and a VQGANModel always decodes. Its encoder, quant_conv and "
        f"codebook convert exactly (the same token ids): pass {INITIALIZE_FLAG} (hf-vq convert) or "
        f"{INITIALIZE_KWARG} (VQGANModel.from_transformers / convert_tokenizer) to convert them with a freshly "
        "initialised decoder, which must then be trained (hf-vq train-tokenizer --pretrained_model_name_or_path "
        "<converted folder>)"
    )


def load_chameleon_vq(module_or_path: Any, subfolder: str | None = None, **from_pretrained_kwargs: Any) -> Any:
    """The `ChameleonVQVAE`: the module itself, the one inside a Chameleon model, or one loaded from a folder or Hub
    id of a ChameleonVQVAE or of a full Chameleon model (only the VQ-VAE's weights are read)."""
    from transformers import AutoConfig, ChameleonVQVAE, PreTrainedModel

    if isinstance(module_or_path, ChameleonVQVAE):
        return module_or_path
    if isinstance(module_or_path, PreTrainedModel):
        inner = getattr(getattr(module_or_path, "model", module_or_path), "vqmodel", None)
        if isinstance(inner, ChameleonVQVAE):
            return inner
        raise UnsupportedSourceError(f"{type(module_or_path).__name__} holds no ChameleonVQVAE")
    config = AutoConfig.from_pretrained(module_or_path, subfolder=subfolder or "", **from_pretrained_kwargs)
    if config.model_type == "chameleon_vqgan":
        return ChameleonVQVAE.from_pretrained(module_or_path, subfolder=subfolder or "", **from_pretrained_kwargs)
    if config.model_type != "chameleon":
        raise UnsupportedSourceError(f"{module_or_path} is a {config.model_type!r} model, not a ChameleonVQVAE")
    vq_model = ChameleonVQVAE(config.vq_config).eval()
    state = _vq_weights_of_full_model(str(module_or_path), subfolder or "", from_pretrained_kwargs.get("revision"))
    # Meta's original checkpoint has a decoder; a Chameleon folder that kept its tensors holds them beside the
    # encoder's. transformers defines no module to check them against, so they are not converted (said, not hidden).
    extra = sorted(set(state) - set(vq_model.state_dict()))
    if extra:
        logger.warning(
            "%s holds %d VQ-VAE tensors that transformers' ChameleonVQVAE does not define (%s...); they are not "
            "converted",
            module_or_path,
            len(extra),
            ", ".join(extra[:3]),
        )
    vq_model.load_state_dict({key: state[key] for key in state if key not in extra}, strict=True)
    return vq_model


def vqgan_config_from_chameleon(chameleon_config: Any, image_size: int | None = None) -> VQGANConfig:
    """The VQGANConfig of a ChameleonVQVAEConfig's encoder and quantizer (the decoder mirrors the encoder).
    `image_size` defaults to the source's `resolution`; attention stays on the levels whose side at `resolution` is
    in `attn_resolutions`."""
    multipliers = list(chameleon_config.channel_multiplier)
    if chameleon_config.double_latent:
        raise UnsupportedSourceError("double_latent=True: the encoder doubles its output channels, a VQGAN does not")
    if multipliers[0] != 1:
        raise UnsupportedSourceError(
            f"channel_multiplier[0]={multipliers[0]}: Chameleon's first level starts from base_channels, hf_vq's "
            "from its own width; only a first multiplier of 1 converts"
        )
    resolution = chameleon_config.resolution
    image_size = image_size or resolution
    # Chameleon attends wherever `attn_type` is "vanilla": after every residual block of the levels at the listed
    # resolutions, and in the middle; any other type has no attention at all.
    attends = chameleon_config.attn_type == "vanilla"
    listed = set(chameleon_config.attn_resolutions or []) if attends else set()
    levels = [level for level in range(len(multipliers)) if resolution // 2**level in listed]
    commitment_weight = float(getattr(chameleon_config, "beta", DEFAULT_COMMITMENT_WEIGHT))
    return VQGANConfig(
        num_channels=chameleon_config.in_channels,
        image_size=image_size,
        block_out_channels=[chameleon_config.base_channels * multiplier for multiplier in multipliers],
        layers_per_block=chameleon_config.num_res_blocks,
        attention_resolutions=[image_size // 2**level for level in levels],
        mid_block_add_attention=attends,
        norm_num_groups=NORM_NUM_GROUPS,
        act_fn="silu",
        dropout=chameleon_config.dropout,
        latent_channels=chameleon_config.latent_channels,
        embed_dim=chameleon_config.embed_dim,
        codebook_size=chameleon_config.num_embeddings,
        distance="euclidean",
        beta=commitment_weight / (1.0 + commitment_weight),
        quantizer_loss_weight=1.0 + commitment_weight,
    )


def vqgan_state_dict_from_chameleon(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ChameleonVQVAE state dict in VQGANModel's names (taming's encoder names, renamed as Janus's are)."""
    converted = {}
    for key, value in state_dict.items():
        name = key
        for pattern, replacement in RENAMES:
            name = re.sub(pattern, replacement, name)
        converted[name] = value.flatten(1) if PROJECTION.search(name) else value
    return converted


def chameleon_processor_kwargs(image_size: int, num_channels: int = 3) -> dict[str, Any]:
    """`VQGANImageProcessor` options giving the pixel values `ChameleonImageProcessor` gives: shortest edge resized
    to `image_size` with Lanczos, center crop to `image_size` square, `x * 0.0078 - 1`."""
    from transformers.image_utils import PILImageResampling

    return {
        "size": {"shortest_edge": image_size},
        "resample": PILImageResampling.LANCZOS,
        "do_center_crop": True,
        "crop_size": {"height": image_size, "width": image_size},
        "rescale_factor": CHAMELEON_RESCALE_FACTOR,
        "image_mean": [CHAMELEON_MEAN] * num_channels,
        "image_std": [CHAMELEON_STD] * num_channels,
    }


__all__ = [
    "CONVERTED_PARTS",
    "INITIALIZED_PARTS",
    "chameleon_processor_kwargs",
    "load_chameleon_vq",
    "missing_decoder_message",
    "vqgan_config_from_chameleon",
    "vqgan_state_dict_from_chameleon",
]
