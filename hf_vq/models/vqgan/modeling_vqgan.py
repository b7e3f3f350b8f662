"""PyTorch VQGAN image tokenizer: a convolutional autoencoder with the vector quantizer of Huh et al. (ICML 2023).

The encoder and decoder follow taming-transformers' VQGAN and reuse the module names of diffusers' `VQModel`
(`encoder.down_blocks.0.resnets.0.conv1`, `quantize.embedding.weight`, ...), so that `VQGANModel.to_diffusers()` is a
plain weight copy.
"""

import importlib
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.dynamic_module_utils import get_relative_import_files
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput

from .configuration_vqgan import VQGANConfig
from .image_processing_vqgan import VQGANImageProcessor

# The quantizer comes through a sibling module so that it travels with remote-code checkpoints: see the docstring of
# quantization_vqgan.py for why, and `_copy_quantizer_code` below for how.
from .quantization_vqgan import QUANTIZER_TYPES, build_quantizer, quantizer_class, remote_code_source

# Same classes as diffusers' `get_activation`, so that every config exports to diffusers.
ACTIVATIONS = {"silu": nn.SiLU, "swish": nn.SiLU, "gelu": nn.GELU, "relu": nn.ReLU, "mish": nn.Mish}
# taming-transformers and diffusers' Encoder/Decoder use this epsilon in every group norm.
NORM_EPS = 1e-6
# Pixel losses by name: "mse" is the config's name, "l2" the training flag's; both are one loss.
RECONSTRUCTION_LOSSES: dict[str, Callable[..., torch.Tensor]] = {"l1": F.l1_loss, "mse": F.mse_loss, "l2": F.mse_loss}


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Mean L1 ("l1") or squared ("mse", also spelled "l2") distance between images, in float32 (a bf16 mean over
    a batch of images loses most of its precision). `VQGANModel.forward` and the training loops use it.

    Example:
        >>> import torch
        >>> float(reconstruction_loss(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2) * 2, "mse"))
        4.0
    """
    if kind not in RECONSTRUCTION_LOSSES:
        raise ValueError(f"reconstruction loss must be one of {tuple(RECONSTRUCTION_LOSSES)}, got {kind!r}")
    return RECONSTRUCTION_LOSSES[kind](reconstruction.float(), target.float())


@dataclass
class VQGANEncoderOutput(ModelOutput):
    r"""
    Output of [`VQGANModel.encode`].

    Args:
        quantized (`torch.FloatTensor` of shape `(batch_size, embed_dim, height, width)`):
            The effective codes at every position, with the straight-through (and synchronized-update) gradient.
        image_tokens (`torch.LongTensor` of shape `(batch_size, height, width)`):
            Code ids; grouped and residual quantizers add a trailing axis of size `num_groups` / `num_quantizers`.
        latents (`torch.FloatTensor` of shape `(batch_size, embed_dim, height, width)`):
            Encoder output after `quant_conv`, before quantization (what diffusers' `VQModel.encode` returns).
        quantizer_loss (`torch.FloatTensor` of shape `()`):
            `(1 - beta) * commitment_loss + beta * codebook_loss`.
        commitment_loss (`torch.FloatTensor` of shape `()`):
            `||latents - sg(codes)||^2` (mean), pulls the encoder towards its codes.
        codebook_loss (`torch.FloatTensor` of shape `()`):
            `||sg(latents) - codes||^2` (mean), pulls the codes towards the encoder output.
        perplexity (`torch.FloatTensor` of shape `()`):
            exp(entropy) of the code distribution in the batch.
        usage (`torch.FloatTensor` of shape `()`):
            Fraction of the codes used in the batch.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
            The encoder's feature maps `(batch_size, channels, height, width)`: after `conv_in`, after each
            resolution level and after the mid block (`len(block_out_channels) + 2` maps).
    """

    quantized: torch.FloatTensor | None = None
    image_tokens: torch.LongTensor | None = None
    latents: torch.FloatTensor | None = None
    quantizer_loss: torch.FloatTensor | None = None
    commitment_loss: torch.FloatTensor | None = None
    codebook_loss: torch.FloatTensor | None = None
    perplexity: torch.FloatTensor | None = None
    usage: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class VQGANDecoderOutput(ModelOutput):
    r"""
    Output of [`VQGANModel.decode`].

    Args:
        reconstruction (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
            Decoded images in the model's pixel space ([-1, 1] with the default processor).
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
            The decoder's feature maps `(batch_size, channels, height, width)`: after `conv_in`, after the mid block
            and after each resolution level (`len(block_out_channels) + 2` maps).
    """

    reconstruction: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class VQGANModelOutput(ModelOutput):
    r"""
    Output of [`VQGANModel.forward`]: the quantized features first, then every loss part as its own field.

    `last_hidden_state` comes first, as in transformers' own vision models, so that
    `pipeline("image-feature-extraction")` (which returns the first field) gives the per-position features.
    The pixel-space losses a VQGAN is trained with beyond `reconstruction_loss` (perceptual/LPIPS and adversarial)
    need networks of their own and are left to the training loop, which adds them to `loss`.

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, height * width, embed_dim)`):
            The quantized latents as a sequence of positions (row-major over the token grid): `quantized`
            flattened, one `embed_dim` feature vector per image token.
        loss (`torch.FloatTensor` of shape `()`):
            `reconstruction_loss + quantizer_loss_weight * quantizer_loss`.
        reconstruction_loss (`torch.FloatTensor` of shape `()`):
            L1 or MSE (config `reconstruction_loss_type`) between `reconstruction` and the input.
        quantizer_loss (`torch.FloatTensor` of shape `()`):
            `(1 - beta) * commitment_loss + beta * codebook_loss`.
        commitment_loss (`torch.FloatTensor` of shape `()`):
            Encoder-side part of the quantizer loss.
        codebook_loss (`torch.FloatTensor` of shape `()`):
            Codebook-side part of the quantizer loss.
        perplexity (`torch.FloatTensor` of shape `()`):
            exp(entropy) of the code distribution in the batch.
        usage (`torch.FloatTensor` of shape `()`):
            Fraction of the codes used in the batch.
        reconstruction (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
            Decoded images.
        image_tokens (`torch.LongTensor` of shape `(batch_size, height, width)`):
            Code ids (a trailing axis for grouped and residual quantizers).
        quantized (`torch.FloatTensor` of shape `(batch_size, embed_dim, height, width)`):
            Quantized latents fed to the decoder.
        latents (`torch.FloatTensor` of shape `(batch_size, embed_dim, height, width)`):
            Latents before quantization.
        encoder_hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
            The encoder's feature maps, see [`VQGANEncoderOutput`].
        decoder_hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
            The decoder's feature maps, see [`VQGANDecoderOutput`].
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
            Every feature map in the order the model computes them: `encoder_hidden_states` then
            `decoder_hidden_states` (`2 * len(block_out_channels) + 4` maps); the field transformers code reads.
            Last, so that the positions of the other fields in `to_tuple()` stay as they were.
    """

    last_hidden_state: torch.FloatTensor | None = None
    loss: torch.FloatTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    quantizer_loss: torch.FloatTensor | None = None
    commitment_loss: torch.FloatTensor | None = None
    codebook_loss: torch.FloatTensor | None = None
    perplexity: torch.FloatTensor | None = None
    usage: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    image_tokens: torch.LongTensor | None = None
    quantized: torch.FloatTensor | None = None
    latents: torch.FloatTensor | None = None
    encoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    decoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


class VQGANResnetBlock(GradientCheckpointingLayer):
    """Pre-norm residual block: (GroupNorm, activation, 3x3 conv) twice, 1x1 conv shortcut when channels change."""

    def __init__(self, config: VQGANConfig, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(config.norm_num_groups, in_channels, eps=NORM_EPS)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = nn.GroupNorm(config.norm_num_groups, out_channels, eps=NORM_EPS)
        self.dropout = nn.Dropout(config.dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.nonlinearity = ACTIVATIONS[config.act_fn]()
        self.conv_shortcut = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        residual = hidden_states if self.conv_shortcut is None else self.conv_shortcut(hidden_states)
        hidden_states = self.conv1(self.nonlinearity(self.norm1(hidden_states)))
        hidden_states = self.conv2(self.dropout(self.nonlinearity(self.norm2(hidden_states))))
        return residual + hidden_states


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention written out (`attn_implementation="eager"`), as transformers' models define it: query, key, value
    `(batch, heads, length, head_dim)` -> output `(batch, length, heads, head_dim)` and the attention weights."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


class VQGANAttentionBlock(GradientCheckpointingLayer):
    """Single-head self-attention over all positions of a feature map, with group norm and a residual connection
    (taming's AttnBlock; diffusers' `Attention` with the same parameter names). The attention kernel is the one
    `config._attn_implementation` names ("sdpa" or "eager"), looked up in transformers' attention interface."""

    is_causal = False  # every position sees every other: read by transformers' sdpa kernel

    def __init__(self, config: VQGANConfig, channels: int):
        super().__init__()
        self.config = config  # the shared config: `set_attn_implementation` switches the kernel of every block
        self.scaling = channels**-0.5
        self.group_norm = nn.GroupNorm(config.norm_num_groups, channels, eps=NORM_EPS)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        # A list (projection, dropout) so that the projection is named `to_out.0`, as in diffusers.
        self.to_out = nn.ModuleList([nn.Linear(channels, channels), nn.Dropout(0.0)])

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = hidden_states.shape
        tokens = self.group_norm(hidden_states).view(batch, channels, height * width).transpose(1, 2)
        query, key, value = (proj(tokens).unsqueeze(1) for proj in (self.to_q, self.to_k, self.to_v))
        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attended, _ = attention(self, query, key, value, None, scaling=self.scaling, dropout=0.0, is_causal=False)
        attended = self.to_out[1](self.to_out[0](attended.reshape(batch, height * width, channels)))
        return hidden_states + attended.transpose(1, 2).reshape(batch, channels, height, width)


class VQGANDownsample(nn.Module):
    """Stride-2 3x3 conv after padding one pixel right and bottom (taming's asymmetric padding)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(hidden_states, (0, 1, 0, 1)))


class VQGANUpsample(nn.Module):
    """Nearest-neighbour 2x upsampling followed by a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(hidden_states, scale_factor=2.0, mode="nearest"))


class VQGANLevel(nn.Module):
    """One resolution level: residual blocks (each followed by attention where configured), then an optional
    down- or upsampling. Encoder levels are diffusers' (Attn)DownEncoderBlock2D, decoder levels
    (Attn)UpDecoderBlock2D."""

    def __init__(
        self,
        config: VQGANConfig,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        add_attention: bool,
        resample: str | None,
    ):
        super().__init__()
        self.resnets = nn.ModuleList(
            VQGANResnetBlock(config, in_channels if i == 0 else out_channels, out_channels) for i in range(num_layers)
        )
        self.attentions = nn.ModuleList(
            VQGANAttentionBlock(config, out_channels) for _ in range(num_layers if add_attention else 0)
        )
        # Attribute names follow diffusers (`downsamplers.0.conv` / `upsamplers.0.conv`) for the weight-copy export.
        self.downsamplers = nn.ModuleList([VQGANDownsample(out_channels)]) if resample == "down" else None
        self.upsamplers = nn.ModuleList([VQGANUpsample(out_channels)]) if resample == "up" else None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for index, resnet in enumerate(self.resnets):
            hidden_states = resnet(hidden_states)
            if len(self.attentions) > 0:
                hidden_states = self.attentions[index](hidden_states)
        for resampler in self.downsamplers or self.upsamplers or []:
            hidden_states = resampler(hidden_states)
        return hidden_states


class VQGANMidBlock(nn.Module):
    """Residual block, optional self-attention, residual block, at the lowest resolution."""

    def __init__(self, config: VQGANConfig, channels: int):
        super().__init__()
        self.resnets = nn.ModuleList(
            [VQGANResnetBlock(config, channels, channels), VQGANResnetBlock(config, channels, channels)]
        )
        self.attentions = nn.ModuleList(
            [VQGANAttentionBlock(config, channels)] if config.mid_block_add_attention else []
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.resnets[0](hidden_states)
        if len(self.attentions) > 0:
            hidden_states = self.attentions[0](hidden_states)
        return self.resnets[1](hidden_states)


class VQGANEncoder(nn.Module):
    """Images `(B, num_channels, H, W)` -> features `(B, latent_channels, H / f, W / f)`."""

    def __init__(self, config: VQGANConfig):
        super().__init__()
        channels = config.block_out_channels
        self.conv_in = nn.Conv2d(config.num_channels, channels[0], kernel_size=3, padding=1)
        self.down_blocks = nn.ModuleList(
            VQGANLevel(
                config,
                in_channels=channels[max(level - 1, 0)],
                out_channels=channels[level],
                num_layers=config.layers_per_block,
                add_attention=config.level_has_attention[level],
                resample="down" if level < len(channels) - 1 else None,
            )
            for level in range(len(channels))
        )
        self.mid_block = VQGANMidBlock(config, channels[-1])
        self.conv_norm_out = nn.GroupNorm(config.norm_num_groups, channels[-1], eps=NORM_EPS)
        self.conv_act = ACTIVATIONS[config.act_fn]()
        self.conv_out = nn.Conv2d(channels[-1], config.latent_channels, kernel_size=3, padding=1)

    def forward(
        self, pixel_values: torch.Tensor, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """Features, and (when asked) the feature map after `conv_in`, after each level and after the mid block."""
        hidden_states = self.conv_in(pixel_values)
        stages = [hidden_states]
        for down_block in self.down_blocks:
            hidden_states = down_block(hidden_states)
            stages.append(hidden_states)
        hidden_states = self.mid_block(hidden_states)
        stages.append(hidden_states)
        return self.conv_out(self.conv_act(self.conv_norm_out(hidden_states))), tuple(
            stages
        ) if output_hidden_states else None


class VQGANDecoder(nn.Module):
    """Features `(B, latent_channels, h, w)` -> images `(B, num_channels, h * f, w * f)`; levels in reverse order,
    each with one residual block more than the encoder's."""

    def __init__(self, config: VQGANConfig):
        super().__init__()
        channels = list(reversed(config.block_out_channels))
        has_attention = list(reversed(config.level_has_attention))
        self.conv_in = nn.Conv2d(config.latent_channels, channels[0], kernel_size=3, padding=1)
        self.mid_block = VQGANMidBlock(config, channels[0])
        self.up_blocks = nn.ModuleList(
            VQGANLevel(
                config,
                in_channels=channels[max(index - 1, 0)],
                out_channels=channels[index],
                num_layers=config.layers_per_block + 1,
                add_attention=has_attention[index],
                resample="up" if index < len(channels) - 1 else None,
            )
            for index in range(len(channels))
        )
        self.conv_norm_out = nn.GroupNorm(config.norm_num_groups, channels[-1], eps=NORM_EPS)
        self.conv_act = ACTIVATIONS[config.act_fn]()
        self.conv_out = nn.Conv2d(channels[-1], config.num_channels, kernel_size=3, padding=1)

    def forward(
        self, hidden_states: torch.Tensor, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """Images, and (when asked) the feature map after `conv_in`, after the mid block and after each level."""
        hidden_states = self.conv_in(hidden_states)
        stages = [hidden_states]
        hidden_states = self.mid_block(hidden_states)
        stages.append(hidden_states)
        for up_block in self.up_blocks:
            hidden_states = up_block(hidden_states)
            stages.append(hidden_states)
        return self.conv_out(self.conv_act(self.conv_norm_out(hidden_states))), tuple(
            stages
        ) if output_hidden_states else None


def build_vqgan_quantizer(config: VQGANConfig) -> nn.Module:
    """The quantizer a config asks for (`quantizer_type` vector, grouped, residual or fsq), over channel axis 1."""
    return build_quantizer(config.quantizer_config)


class VQGANPreTrainedModel(PreTrainedModel):
    config: VQGANConfig
    config_class = VQGANConfig
    base_model_prefix = "vqgan"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    # The attention blocks go through transformers' attention interface: "sdpa" (default) and "eager" both work.
    _supports_sdpa = True
    _no_split_modules = ["VQGANResnetBlock", "VQGANAttentionBlock", "VQGANMidBlock"]
    # Nearest-code search and codebook updates need float32 (bf16 distances pick wrong codes); the quantizer also
    # upcasts its input under autocast.
    _keep_in_fp32_modules_strict = ["quantize"]

    def post_init(self) -> None:
        """transformers' `post_init`, plus: the `_keep_in_fp32_modules_strict` modules in float32 even when the model
        is built under a half-precision default dtype (`from_config(config, dtype=torch.bfloat16)`), as
        `from_pretrained(..., dtype=...)` keeps them when it loads."""
        super().post_init()
        for name in self._keep_in_fp32_modules_strict:
            self.get_submodule(name).float()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Initialise every parameter and buffer (loading only initialises the tensors a checkpoint lacks)."""
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            # PyTorch's default layer init, which taming-transformers and diffusers' VQModel train from.
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                fan_in = module.weight[0].numel()
                init.uniform_(module.bias, -1.0 / math.sqrt(fan_in), 1.0 / math.sqrt(fan_in))
        elif isinstance(module, nn.GroupNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif hasattr(module, "reset_parameters"):
            # The quantizer's modules (codebook, affine transforms, the quantizer's own buffers) initialise the
            # tensors they own themselves, with nn.init functions, which transformers guards while loading so that
            # the tensors a checkpoint held are kept.
            module.reset_parameters()


class VQGANModel(VQGANPreTrainedModel):
    r"""
    The VQGAN image tokenizer: images -> grid of code ids (`image_tokens`) -> images.

    `encoder` -> `quant_conv` (to the `embed_dim`-dimensional code space) -> `quantize` (the vector quantizer of
    Huh et al., ICML 2023: affine codes, synchronized update, alternating codebook step, beta commitment loss,
    k-means++ init, dead-code replacement; vector, grouped or residual) -> `post_quant_conv` -> `decoder`.

    Example:

    ```python
    >>> import torch
    >>> from hf_vq import VQGANConfig, VQGANModel

    >>> config = VQGANConfig(block_out_channels=[32, 64], layers_per_block=1, norm_num_groups=8, latent_channels=16,
    ...                      image_size=32, attention_resolutions=[16], codebook_size=64, embed_dim=4)
    >>> model = VQGANModel(config).eval()
    >>> pixel_values = torch.rand(2, 3, 32, 32) * 2 - 1
    >>> encoded = model.encode(pixel_values)
    >>> encoded.image_tokens.shape
    torch.Size([2, 16, 16])
    >>> model.decode(image_tokens=encoded.image_tokens).reconstruction.shape
    torch.Size([2, 3, 32, 32])
    >>> output = model(pixel_values)
    >>> sorted(k for k in output.keys() if k.endswith("loss"))
    ['codebook_loss', 'commitment_loss', 'loss', 'quantizer_loss', 'reconstruction_loss']

    ```
    """

    def __init__(self, config: VQGANConfig):
        super().__init__(config)
        self.encoder = VQGANEncoder(config)
        self.quant_conv = nn.Conv2d(config.latent_channels, config.embed_dim, kernel_size=1)
        self.quantize = build_vqgan_quantizer(config)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.latent_channels, kernel_size=1)
        self.decoder = VQGANDecoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        """The first layer over the pixels, the encoder's `conv_in`: a pixel model has no token embedding, and
        transformers' pixel models (ViT, DINOv2) return their patch embedding here, the layer that hooks such as
        `enable_input_require_grads` attach to."""
        return self.encoder.conv_in

    def set_input_embeddings(self, value: nn.Module) -> None:
        """Replace the encoder's `conv_in` (the layer `get_input_embeddings` returns)."""
        self.encoder.conv_in = value

    def _return_dict(self, return_dict: bool | None) -> bool:
        return return_dict if return_dict is not None else getattr(self.config, "return_dict", True)

    def _output_hidden_states(self, output_hidden_states: bool | None) -> bool:
        return output_hidden_states if output_hidden_states is not None else bool(self.config.output_hidden_states)

    def encode(
        self, pixel_values: torch.Tensor, return_dict: bool | None = None, output_hidden_states: bool | None = None
    ) -> VQGANEncoderOutput | tuple:
        """Images `(B, num_channels, H, W)` (in [-1, 1], see `VQGANImageProcessor`) -> codes and `image_tokens`."""
        self._check_pixel_values(pixel_values)
        features, hidden_states = self.encoder(
            pixel_values, output_hidden_states=self._output_hidden_states(output_hidden_states)
        )
        latents = self.quant_conv(features)
        quantizer_output = self.quantize(latents)
        output = VQGANEncoderOutput(
            quantized=quantizer_output.quantized,
            image_tokens=quantizer_output.indices,
            latents=latents,
            quantizer_loss=quantizer_output.loss,
            commitment_loss=quantizer_output.commitment_loss,
            codebook_loss=quantizer_output.codebook_loss,
            perplexity=quantizer_output.perplexity,
            usage=quantizer_output.usage,
            hidden_states=hidden_states,
        )
        return output if self._return_dict(return_dict) else output.to_tuple()

    def decode(
        self,
        image_tokens: torch.Tensor | None = None,
        quantized: torch.Tensor | None = None,
        return_dict: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> VQGANDecoderOutput | tuple:
        """Code ids `(B, h, w)` (or codes `(B, embed_dim, h, w)`) -> images `(B, num_channels, h * f, w * f)`.

        Pass exactly one of `image_tokens` and `quantized`.
        """
        if (image_tokens is None) == (quantized is None):
            raise ValueError("decode needs exactly one of image_tokens=... (code ids) or quantized=... (code vectors)")
        given_name, given = ("image_tokens", image_tokens) if image_tokens is not None else ("quantized", quantized)
        if isinstance(given, torch.Tensor) and given.ndim > 0 and given.shape[0] == 0:
            # Caught here: the decoder's attention fails on it with a reshape error that names neither.
            raise ValueError(
                f"{given_name} is an empty batch (shape {tuple(given.shape)}): pass at least one "
                f"{'token grid' if given_name == 'image_tokens' else 'grid of code vectors'}"
            )
        if image_tokens is not None:
            quantized = self.get_codebook_entry(image_tokens)
        elif (
            not isinstance(quantized, torch.Tensor)
            or quantized.ndim != 4
            or quantized.shape[1] != self.config.embed_dim
        ):
            raise ValueError(
                f"quantized must be a tensor (batch, embed_dim={self.config.embed_dim}, height, width), got "
                f"{tuple(quantized.shape) if isinstance(quantized, torch.Tensor) else type(quantized).__name__}"
            )
        reconstruction, hidden_states = self.decoder(
            self.post_quant_conv(quantized.to(self.post_quant_conv.weight.dtype)),
            output_hidden_states=self._output_hidden_states(output_hidden_states),
        )
        output = VQGANDecoderOutput(reconstruction=reconstruction, hidden_states=hidden_states)
        return output if self._return_dict(return_dict) else output.to_tuple()

    def get_codebook_entry(self, image_tokens: torch.Tensor, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """Code vectors `(B, embed_dim, h, w)` for code ids.

        `image_tokens` is a grid `(B, h, w)` (plus a trailing axis for grouped/residual quantizers), or any tensor with
        that many ids together with `shape = (B, h, w)` or `(B, h, w, embed_dim)` (the taming / diffusers convention).
        """
        if not isinstance(image_tokens, torch.Tensor):
            raise TypeError(f"image_tokens must be an integer torch.Tensor, got {type(image_tokens).__name__}")
        depth = () if self.config.tokens_per_position == 1 else (self.config.tokens_per_position,)
        if shape is not None:
            if len(shape) == 4 and shape[3] != self.config.embed_dim:
                raise ValueError(
                    f"shape {tuple(shape)} ends with {shape[3]} channels but the codes have "
                    f"embed_dim={self.config.embed_dim}"
                )
            image_tokens = image_tokens.reshape(*shape[:3], *depth)
        if image_tokens.ndim != 3 + len(depth):
            raise ValueError(
                f"image_tokens must have shape (batch, height, width{', ' + str(depth[0]) if depth else ''}) for "
                f"quantizer_type={self.config.quantizer_type!r}, got {tuple(image_tokens.shape)}; pass "
                "shape=(batch, height, width) to reshape flat ids"
            )
        return self.quantize.get_codebook_entry(image_tokens)

    def forward(
        self, pixel_values: torch.Tensor, return_dict: bool | None = None, output_hidden_states: bool | None = None
    ) -> VQGANModelOutput | tuple:
        r"""
        Encode, quantize and decode `pixel_values` `(B, num_channels, H, W)`; returns the per-position quantized
        features (`last_hidden_state`), the reconstruction, the code ids and every loss part. Perceptual and
        adversarial losses are left to the training loop. `output_hidden_states=True` adds the encoder's and the
        decoder's feature maps.
        """
        encoded = self.encode(pixel_values, return_dict=True, output_hidden_states=output_hidden_states)
        decoded = self.decode(quantized=encoded.quantized, return_dict=True, output_hidden_states=output_hidden_states)
        reconstruction = decoded.reconstruction
        reconstruction_loss = self._reconstruction_loss(reconstruction, pixel_values)
        output = VQGANModelOutput(
            last_hidden_state=encoded.quantized.flatten(2).transpose(1, 2),
            loss=reconstruction_loss + self.config.quantizer_loss_weight * encoded.quantizer_loss,
            reconstruction_loss=reconstruction_loss,
            quantizer_loss=encoded.quantizer_loss,
            commitment_loss=encoded.commitment_loss,
            codebook_loss=encoded.codebook_loss,
            perplexity=encoded.perplexity,
            usage=encoded.usage,
            reconstruction=reconstruction,
            image_tokens=encoded.image_tokens,
            quantized=encoded.quantized,
            latents=encoded.latents,
            encoder_hidden_states=encoded.hidden_states,
            decoder_hidden_states=decoded.hidden_states,
            hidden_states=None if encoded.hidden_states is None else encoded.hidden_states + decoded.hidden_states,
        )
        return output if self._return_dict(return_dict) else output.to_tuple()

    def _reconstruction_loss(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return reconstruction_loss(reconstruction, target, self.config.reconstruction_loss_type)

    def _check_pixel_values(self, pixel_values: Any) -> None:
        factor, channels = self.config.downsampling_factor, self.config.num_channels
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(
                f"pixel_values must be a torch.Tensor (batch, {channels}, height, width), got "
                f"{type(pixel_values).__name__}; "
                "turn images into pixel values with VQGANImageProcessor(...)(images, return_tensors='pt')"
            )
        if not pixel_values.is_floating_point():
            raise TypeError(
                f"pixel_values must be floating point (values in [-1, 1]), got {pixel_values.dtype}; use "
                "VQGANImageProcessor"
            )
        if pixel_values.ndim != 4 or pixel_values.shape[0] == 0:
            raise ValueError(
                f"pixel_values must be a non-empty batch (batch, {channels}, height, width), got shape "
                f"{tuple(pixel_values.shape)}"
            )
        if pixel_values.shape[1] != channels:
            raise ValueError(
                f"this model takes {channels}-channel images (num_channels={channels}), got {pixel_values.shape[1]} "
                f"channels in pixel_values of shape {tuple(pixel_values.shape)}; convert the images "
                f"({'grayscale' if channels == 1 else 'RGB'}) or use a model built for {pixel_values.shape[1]} "
                "channels"
            )
        height, width = pixel_values.shape[-2:]
        if height % factor or width % factor:
            raise ValueError(
                f"image size {height}x{width} is not divisible by the downsampling factor {factor}; resize, crop or "
                f"pad the images to a multiple of {factor} (VQGANImageProcessor does this)"
            )
        if pixel_values.dtype != self.dtype and not torch.is_autocast_enabled(pixel_values.device.type):
            # Caught here: the convolution's own message ("Input type (Half) and bias type (float) should be the
            # same") names neither the model nor the fix.
            raise TypeError(
                f"pixel_values are {pixel_values.dtype} but the model's weights are {self.dtype}: cast them with "
                f"pixel_values.to(model.dtype), load the model with dtype={pixel_values.dtype}, or run it under "
                f"torch.autocast(device_type={pixel_values.device.type!r})"
            )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *model_args: Any, **kwargs: Any) -> Any:
        """transformers' `from_pretrained`, then the config's `image_size` aligned with the processor saved beside it.

        A folder saved before hf_vq recorded a run's `--resolution` in the config says the YAML's size while its
        processor resizes to the size trained at; the processor's size wins, with a warning naming both (issue 28),
        so `from_tokenizer` and the pipelines build the grid the tokenizer really makes. Where hf_vq is not
        installed (remote code) the config is taken as saved."""
        loaded = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # output_loading_info=True gives a tuple
        if pretrained_model_name_or_path is not None:
            _align_with_saved_processor(model.config, str(pretrained_model_name_or_path), kwargs)
        return loaded

    @classmethod
    def from_diffusers(cls, vq_model_or_path: Any, *, image_size: int | None = None, **kwargs: Any) -> "VQGANModel":
        """A `VQGANModel` with the architecture and weights of a `diffusers.VQModel` (the module itself, or a folder or
        Hub id loaded with `VQModel.from_pretrained(vq_model_or_path, **kwargs)`, e.g. `subfolder="vqvae"`): the same
        token ids and reconstructions on the same pixels, in [-1, 1] as diffusers takes them. `image_size` defaults to
        the source's `sample_size`. What a VQGANConfig cannot represent exactly (spatial normalisation, attention
        that is not mirrored between encoder and decoder, other block types) is refused, naming the option.

        Example:

        ```python
        >>> from diffusers import VQModel
        >>> from hf_vq import VQGANModel
        >>> levels = {"down_block_types": ("DownEncoderBlock2D",) * 2, "up_block_types": ("UpDecoderBlock2D",) * 2}
        >>> model = VQGANModel.from_diffusers(VQModel(block_out_channels=(32, 64), norm_num_groups=8, **levels))
        >>> model.config.downsampling_factor, model.config.codebook_size
        (2, 256)

        ```
        """
        converters = _hf_vq_converters("from_diffusers")
        vq_model = converters.diffusers_vq.load_vq_model(vq_model_or_path, **kwargs)
        config = converters.diffusers_vq.vqgan_config_from_diffusers(vq_model.config, image_size=image_size)
        return converters.weights.load_converted_weights(cls(config), vq_model.state_dict(), type(vq_model).__name__)

    @classmethod
    def from_transformers(
        cls,
        module_or_path: Any,
        subfolder: str | None = None,
        *,
        image_size: int | None = None,
        initialize_missing_decoder: bool = False,
        **kwargs: Any,
    ) -> "VQGANModel":
        """A `VQGANModel` with the architecture and weights of a transformers `JanusVQVAE` (LlamaGen's VQ-16) or
        `ChameleonVQVAE`: the module itself, a Janus or Chameleon model holding one, or a folder or Hub id of either
        (`subfolder`, and `revision=` among `kwargs`); a full checkpoint is read for the VQ-VAE's tensors only.

        JanusVQVAE: its l2-normalised codes become `distance="cosine"`: the same token ids as LlamaGen's lookup and the
        same reconstructions as `JanusVQVAE.decode`, on pixels in [-1, 1]. `image_size` defaults to the source's
        `num_patches` tokens a side.

        ChameleonVQVAE: transformers ships it without a decoder, so it is refused unless
        `initialize_missing_decoder=True`; then the encoder, `quant_conv`, codebook and `post_quant_conv` convert
        exactly (the same ids as `ChameleonVQVAE.encode` on the same pixels: Chameleon's `x * 0.0078 - 1`, see
        `hf_vq.conversion.chameleon_vq`) and the decoder is freshly initialised, to be trained before reconstructions
        mean anything. `image_size` defaults to the source's `resolution`.

        Example:

        ```python
        >>> from transformers import JanusVQVAE, JanusVQVAEConfig
        >>> from hf_vq import VQGANModel
        >>> source = JanusVQVAE(JanusVQVAEConfig(base_channels=32, channel_multiplier=[1, 2], num_res_blocks=1,
        ...                                      latent_channels=16, num_embeddings=64, num_patches=4))
        >>> model = VQGANModel.from_transformers(source)
        >>> model.config.distance, model.config.token_grid_size
        ('cosine', (4, 4))

        ```
        """
        converters = _hf_vq_converters("from_transformers")
        return converters.transformers_vq.vqgan_from_transformers(
            cls,
            module_or_path,
            subfolder,
            image_size=image_size,
            initialize_missing_decoder=initialize_missing_decoder,
            **kwargs,
        )

    def to_diffusers(self) -> "Any":
        """A `diffusers.VQModel` with these weights, whose encode / quantize / decode match this model's.

        The effective codebook (after the affine transform, l2-normalised for cosine distance) becomes the plain
        embedding of diffusers' quantizer, and `lookup_from_codebook=True` (the config's default) lets `decode(ids,
        force_not_quantize=True, shape=...)` take code ids as existing VQ pipelines pass them; a model converted from
        diffusers exports its source's `lookup_from_codebook`, `scaling_factor` and `force_upcast`. For cosine
        distance the ids and codes match (the nearest unit-norm code in euclidean distance is the one of largest
        cosine), but diffusers' own training loss then compares codes with unnormalised latents. Grouped and residual
        quantizers have no diffusers counterpart and raise `NotImplementedError`.
        """
        if self.config.quantizer_type != "vector":
            raise NotImplementedError(
                f"to_diffusers() supports quantizer_type='vector' only: diffusers' VQModel has one codebook, so "
                f"quantizer_type={self.config.quantizer_type!r} cannot be exported"
            )
        from diffusers import VQModel

        vq_model = VQModel(**self._diffusers_config())
        state_dict = {key: value for key, value in self.state_dict().items() if not key.startswith("quantize.")}
        state_dict["quantize.embedding.weight"] = self.quantize.codebook.detach().float()
        vq_model.load_state_dict(state_dict, strict=True)
        vq_model = vq_model.to(device=self.device).eval()
        dtype = self.post_quant_conv.weight.dtype
        # Casting a float32 model to float32 would only make diffusers warn about its float32 modules.
        return vq_model if dtype == torch.float32 else vq_model.to(dtype=dtype)

    def _diffusers_config(self) -> dict[str, Any]:
        levels = self.config.level_has_attention
        return {
            "in_channels": self.config.num_channels,
            "out_channels": self.config.num_channels,
            "down_block_types": tuple("AttnDownEncoderBlock2D" if attn else "DownEncoderBlock2D" for attn in levels),
            "up_block_types": tuple(
                "AttnUpDecoderBlock2D" if attn else "UpDecoderBlock2D" for attn in reversed(levels)
            ),
            "block_out_channels": tuple(self.config.block_out_channels),
            "layers_per_block": self.config.layers_per_block,
            "act_fn": self.config.act_fn,
            "latent_channels": self.config.latent_channels,
            "sample_size": self.config.image_size,
            "num_vq_embeddings": self.config.codebook_size,
            "norm_num_groups": self.config.norm_num_groups,
            "vq_embed_dim": self.config.embed_dim,
            "mid_block_add_attention": self.config.mid_block_add_attention,
            "lookup_from_codebook": self.config.lookup_from_codebook,
            # 1.0 unless converted from a diffusers model that had its own: token models use code vectors as they are.
            "scaling_factor": self.config.scaling_factor,
            "force_upcast": self.config.force_upcast,
        }

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *args: Any,
        image_processor: VQGANImageProcessor | None = None,
        push_to_hub: bool = False,
        variant: str | None = None,
        **kwargs: Any,
    ) -> None:
        """`PreTrainedModel.save_pretrained`, plus what makes the folder self-sufficient: the quantizer's code (for
        `trust_remote_code=True`) and an image processor (`image_processor`, or the one matching the config when the
        folder has none yet)."""
        hub_kwargs = {
            key: kwargs.pop(key)
            for key in ("repo_id", "commit_message", "private", "token", "create_pr")
            if key in kwargs
        }
        save_directory = Path(save_directory)
        # `variant` is named in the signature because diffusers passes it only to save methods that declare it.
        super().save_pretrained(save_directory, *args, variant=variant, **kwargs)
        if kwargs.get("is_main_process", True):
            if self._auto_class is not None:
                _copy_quantizer_code(save_directory)
            if image_processor is not None:
                image_processor.save_pretrained(save_directory)
            elif not (save_directory / "preprocessor_config.json").exists():
                VQGANImageProcessor.from_model_config(self.config).save_pretrained(save_directory)
        if push_to_hub:
            # `push_to_hub` saves into a temporary folder through this method, so the upload has the extra files too.
            repo_id = hub_kwargs.pop("repo_id", None) or save_directory.name
            self.push_to_hub(repo_id, **hub_kwargs)


_PROCESSOR_LOOKUP_KWARGS = ("revision", "subfolder", "cache_dir", "token", "local_files_only")


def _align_with_saved_processor(config: VQGANConfig, name_or_path: str, loading_kwargs: dict) -> None:
    """hf_vq's `align_image_size_with_saved_processor`, looked up by name (this file travels with remote code, which
    must load where hf_vq is not installed; there the config is taken as saved)."""
    try:
        image_size = importlib.import_module("hf_vq.models.vqgan.image_size")
    except ImportError:
        return
    lookup = {name: loading_kwargs[name] for name in _PROCESSOR_LOOKUP_KWARGS if loading_kwargs.get(name) is not None}
    image_size.align_image_size_with_saved_processor(config, name_or_path, check_architecture=False, **lookup)


def _hf_vq_converters(method: str) -> Any:
    """The `hf_vq.conversion` package, which `from_diffusers` / `from_transformers` delegate to.

    Looked up by name, not imported by an import statement: this file travels with remote-code checkpoints and
    pipelines, which must load where hf_vq is not installed (their savers refuse a copy that imports hf_vq); the
    converters are hf_vq's own, and only these two methods need them."""
    try:
        return importlib.import_module("hf_vq.conversion")
    except ImportError as error:
        raise ImportError(f"VQGANModel.{method} needs the hf_vq package installed") from error


def copy_remote_code(save_directory: str | os.PathLike) -> None:
    """Copy everything `trust_remote_code=True` needs to build a `VQGANModel` into `save_directory`: this file, the
    files it imports relatively (config, image processor, quantizer module) and the quantizer's own files.

    A model that embeds the tokenizer (the token-ViT classifier) calls this so that its folder carries the
    tokenizer's code too; `save_pretrained` copies the same files through `register_for_auto_class`.
    """
    save_directory = Path(save_directory)
    if remote_code_source is None:
        return  # This is a checkpoint's copy: transformers copies its sibling files when it saves the importing model.
    for source in [__file__, *get_relative_import_files(__file__)]:
        shutil.copyfile(source, save_directory / Path(source).name)
    _copy_quantizer_code(save_directory)


def _copy_quantizer_code(save_directory: Path) -> None:
    """Copy hf_vq's quantizer files beside the remote-code modeling file and make its quantizer module import them."""
    if remote_code_source is None:
        return  # This is the checkpoint's copy already: transformers copied the sibling quantizer files itself.
    ours = {path.name for path in Path(__file__).parent.glob("*.py")}
    sources: set[str] = set()
    for name in QUANTIZER_TYPES:  # every registered quantizer's file, with the files it imports
        source = __import__(quantizer_class(name).__module__, fromlist=["_"]).__file__
        sources.update([source, *get_relative_import_files(source)])
    for source in sorted(sources):
        if Path(source).name in ours:
            raise RuntimeError(
                f"quantizer file {source} would overwrite the model file of the same name in {save_directory}"
            )
        shutil.copyfile(source, save_directory / Path(source).name)
    (save_directory / "quantization_vqgan.py").write_text(remote_code_source(), encoding="utf-8")


__all__ = [
    "VQGANDecoderOutput",
    "VQGANEncoderOutput",
    "VQGANModel",
    "VQGANModelOutput",
    "VQGANPreTrainedModel",
    "copy_remote_code",
    "eager_attention_forward",
    "reconstruction_loss",
]
