"""transformers `JanusVQVAE` -> `VQGANModel`: LlamaGen's VQ-16 tokenizer (the image generator of Janus and Janus-Pro;
16,384 l2-normalised codes of dimension 8).

The architecture is taming-transformers' VQGAN, as hf_vq's: self-attention after every residual block of the
lowest level and in the middle blocks, SiLU, 32 normalisation groups. Its module names are taming's (`down.0.block.1`,
`attn.0.q` as 1x1 convolutions), renamed here to hf_vq's (diffusers') ones.

The quantizer: LlamaGen normalises both the latents and the codes before the nearest-code search and decodes the
normalised code, which is hf_vq's `distance="cosine"`; the converted codebook is stored normalised. transformers'
`JanusVQVAE.get_codebook_entry` (hence `decode`) normalises too, but its `encode` searches the raw codes: the two agree
where the codes have unit norm (LlamaGen initialises them so), and elsewhere the converted model follows LlamaGen.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from hf_vq.models.vqgan.configuration_vqgan import VQGANConfig

from .source import FULL_MODEL_VQ_KEYS, UnsupportedSourceError

logger = logging.getLogger(__name__)

# LlamaGen's group normalisation (fixed, not in its config).
NORM_NUM_GROUPS = 32
# Where a full Janus model keeps its VQ-VAE: `model.vqmodel.<name>` in its weights.
VQ_MODULE_MARKER = "vqmodel."
# taming's module names -> hf_vq's (which are diffusers'); applied in order to every key.
RENAMES = [
    (r"^(encoder|decoder)\.norm_out\.", r"\1.conv_norm_out."),
    (r"^encoder\.down\.(\d+)\.block\.(\d+)\.", r"encoder.down_blocks.\1.resnets.\2."),
    (r"^encoder\.down\.(\d+)\.attn\.(\d+)\.", r"encoder.down_blocks.\1.attentions.\2."),
    (r"^encoder\.down\.(\d+)\.downsample\.", r"encoder.down_blocks.\1.downsamplers.0."),
    (r"^decoder\.up\.(\d+)\.block\.(\d+)\.", r"decoder.up_blocks.\1.resnets.\2."),
    (r"^decoder\.up\.(\d+)\.attn\.(\d+)\.", r"decoder.up_blocks.\1.attentions.\2."),
    (r"^decoder\.up\.(\d+)\.upsample\.", r"decoder.up_blocks.\1.upsamplers.0."),
    (r"^(encoder|decoder)\.mid\.block_1\.", r"\1.mid_block.resnets.0."),
    (r"^(encoder|decoder)\.mid\.block_2\.", r"\1.mid_block.resnets.1."),
    (r"^(encoder|decoder)\.mid\.attn_1\.", r"\1.mid_block.attentions.0."),
    (r"\.nin_shortcut\.", ".conv_shortcut."),
    (r"(attentions\.\d+)\.norm\.", r"\1.group_norm."),
    (r"(attentions\.\d+)\.(q|k|v)\.", r"\1.to_\2."),
    (r"(attentions\.\d+)\.proj_out\.", r"\1.to_out.0."),
]
# Attention projections: 1x1 convolutions in taming, linear layers in hf_vq (the same matrix).
PROJECTION = re.compile(r"attentions\.\d+\.(to_q|to_k|to_v|to_out\.0)\.weight$")


def load_janus_vq(module_or_path: Any, subfolder: str | None = None, **from_pretrained_kwargs: Any) -> Any:
    """The `JanusVQVAE`: the module itself, the one inside a Janus model, or one loaded from a folder or Hub id of a
    JanusVQVAE or of a full Janus model (only the VQ-VAE's weights are read)."""
    from transformers import JanusVQVAE, PreTrainedModel

    if isinstance(module_or_path, JanusVQVAE):
        return module_or_path
    if isinstance(module_or_path, PreTrainedModel):
        inner = getattr(getattr(module_or_path, "model", module_or_path), "vqmodel", None)
        if isinstance(inner, JanusVQVAE):
            return inner
        raise UnsupportedSourceError(_unsupported_module_message(module_or_path))
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(module_or_path, subfolder=subfolder or "", **from_pretrained_kwargs)
    if config.model_type == "janus_vqgan":
        return JanusVQVAE.from_pretrained(module_or_path, subfolder=subfolder or "", **from_pretrained_kwargs)
    if FULL_MODEL_VQ_KEYS.get(config.model_type) != "vq_config":
        raise UnsupportedSourceError(f"{module_or_path} is a {config.model_type!r} model, not a JanusVQVAE")
    vq_model = JanusVQVAE(config.vq_config).eval()
    state = _vq_weights_of_full_model(str(module_or_path), subfolder or "", from_pretrained_kwargs.get("revision"))
    vq_model.load_state_dict(state, strict=True)
    return vq_model


def vqgan_config_from_janus(janus_config: Any, image_size: int | None = None) -> VQGANConfig:
    """The VQGANConfig of a JanusVQVAEConfig's architecture (`image_size` defaults to `num_patches` tokens a side)."""
    multipliers = list(janus_config.channel_multiplier)
    if janus_config.double_latent:
        raise UnsupportedSourceError("double_latent=True: the encoder doubles its output channels, a VQGAN does not")
    if multipliers[0] != 1:
        raise UnsupportedSourceError(
            f"channel_multiplier[0]={multipliers[0]}: LlamaGen's first level starts from base_channels, hf_vq's from "
            "its own width; only a first multiplier of 1 converts"
        )
    if janus_config.in_channels != janus_config.out_channels:
        raise UnsupportedSourceError(
            f"in_channels={janus_config.in_channels} and out_channels={janus_config.out_channels} differ: a "
            "VQGANModel reconstructs the images it encodes"
        )
    factor = 2 ** (len(multipliers) - 1)
    image_size = image_size or janus_config.num_patches * factor
    return VQGANConfig(
        num_channels=janus_config.in_channels,
        image_size=image_size,
        block_out_channels=[janus_config.base_channels * multiplier for multiplier in multipliers],
        layers_per_block=janus_config.num_res_blocks,
        attention_resolutions=[image_size // factor],  # LlamaGen attends on its lowest level only
        mid_block_add_attention=True,
        norm_num_groups=NORM_NUM_GROUPS,
        act_fn="silu",
        dropout=janus_config.dropout,
        latent_channels=janus_config.latent_channels,
        embed_dim=janus_config.embed_dim,
        codebook_size=janus_config.num_embeddings,
        distance="cosine",
    )


def vqgan_state_dict_from_janus(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A JanusVQVAE state dict in VQGANModel's names, the codebook l2-normalised (what LlamaGen searches)."""
    converted = {}
    for key, value in state_dict.items():
        name = key
        for pattern, replacement in RENAMES:
            name = re.sub(pattern, replacement, name)
        converted[name] = value.flatten(1) if PROJECTION.search(name) else value
    codebook = converted["quantize.embedding.weight"].float()
    norms = codebook.norm(dim=-1)
    if not torch.allclose(norms, torch.ones_like(norms), atol=1e-3):
        logger.warning(
            "The JanusVQVAE's codes are not of unit norm (%.3g to %.3g): the converted model searches them "
            "l2-normalised, as LlamaGen and Janus do; transformers' JanusVQVAE.encode searches the raw codes and can "
            "give other ids (its decode normalises, as the converted model does)",
            float(norms.min()),
            float(norms.max()),
        )
    converted["quantize.embedding.weight"] = F.normalize(codebook, dim=-1)
    return converted


def _vq_weights_of_full_model(name_or_path: str, subfolder: str, revision: str | None) -> dict[str, torch.Tensor]:
    """The VQ-VAE's tensors of a full Janus checkpoint, reading only the shards that hold them."""
    from safetensors import safe_open
    from transformers.utils import cached_file

    def fetch(filename: str, required: bool = True) -> str | None:
        return cached_file(
            name_or_path,
            filename,
            subfolder=subfolder,
            revision=revision,
            _raise_exceptions_for_missing_entries=required,
        )

    index = fetch("model.safetensors.index.json", required=False)
    if index:
        weight_map = json.loads(open(index, encoding="utf-8").read())["weight_map"]
        files = sorted({file for key, file in weight_map.items() if _vq_key(key) is not None})
    else:
        files = ["model.safetensors"]
    state = {}
    for filename in files:
        with safe_open(fetch(filename), framework="pt") as handle:
            for key in handle.keys():
                name = _vq_key(key)
                if name is not None:
                    state[name] = handle.get_tensor(key)
    return state


def _vq_key(key: str) -> str | None:
    """`model.vqmodel.encoder.conv_in.weight` -> `encoder.conv_in.weight`; None for the other parts of the model."""
    if key.startswith(VQ_MODULE_MARKER):
        return key[len(VQ_MODULE_MARKER) :]
    head, marker, tail = key.partition("." + VQ_MODULE_MARKER)
    return tail if marker else None


def _unsupported_module_message(module: Any) -> str:
    return (
        f"{type(module).__name__} is neither a JanusVQVAE nor a ChameleonVQVAE (nor a Janus or Chameleon model "
        "holding one), the transformers VQ-VAEs from_transformers converts"
    )


__all__ = ["load_janus_vq", "vqgan_config_from_janus", "vqgan_state_dict_from_janus"]
