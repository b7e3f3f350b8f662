"""diffusers `VQModel` -> `VQGANModel`: the taming-transformers / latent-diffusion VQGAN layout of LDM's VQ-f4 and
VQ-f8, VQ-Diffusion and aMUSEd.

hf_vq's VQGAN names its modules as diffusers does (`VQGANModel.to_diffusers()` is a plain weight copy), so the
weights copy as they are; the work is in the config: which diffusers options a VQGANConfig expresses, and a refusal
naming each one it cannot (spatial normalisation, block types other than the encoder/decoder ones, attention that is
not mirrored between encoder and decoder, an activation other than SiLU).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from hf_vq.models.vqgan.configuration_vqgan import VQGANConfig

from .source import UnsupportedSourceError

# Block type -> whether its residual blocks are followed by self-attention.
DOWN_BLOCK_ATTENTION = {"DownEncoderBlock2D": False, "AttnDownEncoderBlock2D": True}
UP_BLOCK_ATTENTION = {"UpDecoderBlock2D": False, "AttnUpDecoderBlock2D": True}
# diffusers' Encoder and Decoder end with nn.SiLU whatever `act_fn` says; hf_vq's use `act_fn` there too.
SILU_NAMES = ("silu", "swish")


def load_vq_model(vq_model_or_path: Any, **from_pretrained_kwargs: Any) -> Any:
    """The `diffusers.VQModel` itself, or one loaded from a folder or Hub id (`subfolder=`, `revision=`...)."""
    from diffusers import VQModel

    if isinstance(vq_model_or_path, VQModel):
        if from_pretrained_kwargs:
            raise TypeError(f"{sorted(from_pretrained_kwargs)} apply to a path or Hub id, not to a VQModel instance")
        return vq_model_or_path
    if not isinstance(vq_model_or_path, (str, os.PathLike)):
        raise TypeError(f"expected a diffusers VQModel, a folder or a Hub id, got {type(vq_model_or_path).__name__}")
    return VQModel.from_pretrained(vq_model_or_path, **from_pretrained_kwargs)


def vqgan_config_from_diffusers(diffusers_config: Mapping[str, Any], image_size: int | None = None) -> VQGANConfig:
    """The VQGANConfig of the same architecture as a VQModel config, or `UnsupportedSourceError` naming the option
    it cannot represent.

    `image_size` defaults to the source's `sample_size` (rounded up to a multiple of the downsampling factor): it sets
    the image processor's size and places self-attention by resolution.

    Example:
        >>> from diffusers import VQModel
        >>> vqgan_config_from_diffusers(VQModel().config).block_out_channels
        [64]
    """
    _refuse_unsupported_options(diffusers_config)
    channels = list(diffusers_config["block_out_channels"])
    encoder_attention = _level_attention(diffusers_config["down_block_types"], DOWN_BLOCK_ATTENTION, "down", channels)
    decoder_attention = _level_attention(diffusers_config["up_block_types"], UP_BLOCK_ATTENTION, "up", channels)
    if encoder_attention != decoder_attention[::-1]:
        raise UnsupportedSourceError(
            f"attention placement: down_block_types {list(diffusers_config['down_block_types'])} and up_block_types "
            f"{list(diffusers_config['up_block_types'])} put self-attention on different levels of the encoder and "
            "the decoder; a VQGANConfig mirrors them (attention_resolutions), so this VQModel cannot be converted"
        )
    factor = 2 ** (len(channels) - 1)
    image_size = image_size or factor * math.ceil(_square_side(diffusers_config["sample_size"]) / factor)
    latent_channels = diffusers_config["latent_channels"]
    return VQGANConfig(
        num_channels=diffusers_config["in_channels"],
        image_size=image_size,
        block_out_channels=channels,
        layers_per_block=diffusers_config["layers_per_block"],
        attention_resolutions=[image_size // 2**level for level, attends in enumerate(encoder_attention) if attends],
        mid_block_add_attention=bool(diffusers_config.get("mid_block_add_attention", True)),
        norm_num_groups=diffusers_config["norm_num_groups"],
        act_fn=diffusers_config["act_fn"],
        latent_channels=latent_channels,
        embed_dim=diffusers_config.get("vq_embed_dim") or latent_channels,
        codebook_size=diffusers_config["num_vq_embeddings"],
        scaling_factor=float(diffusers_config.get("scaling_factor", 1.0)),
        force_upcast=bool(diffusers_config.get("force_upcast", False)),
        lookup_from_codebook=bool(diffusers_config.get("lookup_from_codebook", False)),
    )


def _refuse_unsupported_options(config: Mapping[str, Any]) -> None:
    norm_type = config.get("norm_type", "group")
    if norm_type != "group":
        raise UnsupportedSourceError(
            f"norm_type={norm_type!r}: this VQModel's decoder uses spatially conditioned normalisation (MoVQ), which "
            "hf_vq's VQGAN does not have; only norm_type='group' converts"
        )
    if config["act_fn"] not in SILU_NAMES:
        raise UnsupportedSourceError(
            f"act_fn={config['act_fn']!r}: diffusers ends the encoder and decoder with SiLU whatever act_fn says, "
            "hf_vq with act_fn itself; only act_fn 'silu' (or 'swish') converts exactly"
        )
    if config["in_channels"] != config["out_channels"]:
        raise UnsupportedSourceError(
            f"in_channels={config['in_channels']} and out_channels={config['out_channels']} differ: a VQGANModel "
            "reconstructs the images it encodes (num_channels)"
        )
    for name in ("down_block_types", "up_block_types"):
        if len(config[name]) != len(config["block_out_channels"]):
            raise UnsupportedSourceError(
                f"{name} has {len(config[name])} entries but block_out_channels {len(config['block_out_channels'])}: "
                "hf_vq builds one level per entry of block_out_channels"
            )


def _level_attention(block_types: Any, known: dict[str, bool], direction: str, channels: list[int]) -> list[bool]:
    unknown = sorted({name for name in block_types if name not in known})
    if unknown:
        raise UnsupportedSourceError(
            f"{direction} block types {unknown}: hf_vq's VQGAN has the autoencoder blocks {sorted(known)} only"
        )
    return [known[name] for name in block_types]


def _square_side(sample_size: Any) -> int:
    if isinstance(sample_size, (list, tuple)):
        if len(set(sample_size)) != 1:
            raise UnsupportedSourceError(
                f"sample_size={list(sample_size)} is not square; pass image_size= to choose the processor's size"
            )
        sample_size = sample_size[0]
    return int(sample_size)


__all__ = ["load_vq_model", "vqgan_config_from_diffusers"]
