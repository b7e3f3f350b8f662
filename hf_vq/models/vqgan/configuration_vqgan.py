"""VQGAN image tokenizer configuration."""

import difflib
import os
from typing import Any, Literal

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig

# Through the sibling module, so that the remote-code copy of this file finds the quantizer's config beside it.
from .quantization_vqgan import QuantizerConfig, check_option_names

# The quantizer options a VQGANConfig stores (all of QuantizerConfig's but the run-time ones: layout and search).
QUANTIZER_FIELDS = QuantizerConfig.architecture_fields()
# Options that only change a per-type shape or method, not passed to VectorQuantizer itself.
_TYPE_FIELDS = ("quantizer_type", "num_groups", "num_quantizers", "fsq_levels")


@strict
class VQGANConfig(PreTrainedConfig):
    r"""
    Configuration of a [`VQGANModel`]: the VQGAN convolutional autoencoder (taming-transformers, diffusers'
    `VQModel`) with the vector quantizer of Huh et al., "Straightening Out the Straight-Through Estimator"
    (ICML 2023) as its bottleneck.

    The configuration checks itself when it is built: a wrong type raises a `StrictDataclassFieldValidationError`
    and an inconsistent architecture (for example a downsampling factor that does not divide `image_size`) a
    `ValueError` that says what to change.

    Args:
        num_channels (`int`, *optional*, defaults to 3):
            Channels of the input and output images (1 for grayscale, 3 for RGB).
        image_size (`int`, *optional*, defaults to 256):
            Side of the square training images. It places self-attention (see `attention_resolutions`), sets the
            default size of the image processor and the token grid of models built on this tokenizer
            (`token_grid_size`); the convolutional model accepts any size the downsampling factor divides. A run at
            `--resolution R` saves R here.
        block_out_channels (`list[int]`, *optional*, defaults to `[128, 128, 256, 256, 512]`):
            Channels of each resolution level of the encoder (the decoder mirrors them). Each level but the last halves
            the resolution, so `n` levels give a downsampling factor of `2 ** (n - 1)`.
        layers_per_block (`int`, *optional*, defaults to 2):
            Residual blocks per encoder level (the decoder uses one more, as in taming-transformers and diffusers).
        attention_resolutions (`list[int]`, *optional*, defaults to `[16]`):
            Feature-map sides (for images of `image_size`) at which every residual block is followed by
            self-attention. Each must be one of the levels' sides `image_size / 2**i`.
        mid_block_add_attention (`bool`, *optional*, defaults to `True`):
            Whether the middle blocks of encoder and decoder have self-attention.
        norm_num_groups (`int`, *optional*, defaults to 32):
            Groups of the group normalisation layers; must divide every entry of `block_out_channels`.
        act_fn (`str`, *optional*, defaults to `"silu"`):
            Activation of the residual blocks: one of "silu", "swish", "gelu", "relu", "mish".
        dropout (`float`, *optional*, defaults to 0.0):
            Dropout inside the residual blocks.
        latent_channels (`int`, *optional*, defaults to 256):
            Channels of the encoder output and the decoder input (taming's `z_channels`).
        embed_dim (`int`, *optional*, defaults to 8):
            Dimension of the code space. `quant_conv` projects `latent_channels` down to it and `post_quant_conv` back.
        codebook_size (`int`, *optional*, defaults to 16384):
            Number of codes (per group or per residual stage).
        quantizer_type, num_groups, num_quantizers, fsq_levels, beta, sync_nu, affine, affine_lr, affine_groups,
        affine_momentum, alternating, alternating_step_size, alternating_lr, gradient_estimator, codebook_update,
        ema_decay, kmeans_init, kmeans_iterations, kmeans_max_samples, replace_freq, distance:
            The quantizer's options, documented and checked once, by [`hf_vq.quantization.QuantizerConfig`] (its
            defaults are these). `config.quantizer_config` gives them as one; they stay top-level fields so that
            every `config.json` written by earlier versions loads unchanged.
        reconstruction_loss_type (`str`, *optional*, defaults to `"l1"`):
            Pixel loss returned by `forward` as `reconstruction_loss`: "l1" (taming-transformers) or "mse" ("l2" is
            the same loss under the training flag's name).
        quantizer_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the quantizer loss in the total `loss` returned by `forward`.
        scaling_factor (`float`, *optional*, defaults to 1.0):
            Written by `to_diffusers()` into the exported `VQModel`, whose latent-diffusion pipelines multiply the
            latents by it; hf_vq's own encode and decode never use it. A converted diffusers model keeps its own.
        force_upcast (`bool`, *optional*, defaults to `False`):
            Written by `to_diffusers()`: tells diffusers pipelines to run the exported `VQModel` in float32.
        lookup_from_codebook (`bool`, *optional*, defaults to `True`):
            Written by `to_diffusers()`: whether the exported `VQModel.decode(..., force_not_quantize=True)` takes code
            ids (aMUSEd) or code vectors (VQ-Diffusion). hf_vq's `decode` takes either, named.

    Example:

    ```python
    >>> from hf_vq import VQGANConfig, VQGANModel

    >>> config = VQGANConfig(block_out_channels=[32, 64], layers_per_block=1, norm_num_groups=8, latent_channels=16,
    ...                      image_size=32, attention_resolutions=[], codebook_size=64, embed_dim=4)
    >>> config.downsampling_factor
    2
    >>> model = VQGANModel(config)

    ```
    """

    model_type = "vqgan"

    # Encoder / decoder
    num_channels: int = 3
    image_size: int = 256
    block_out_channels: list[int] | tuple[int, ...] = (128, 128, 256, 256, 512)
    layers_per_block: int = 2
    attention_resolutions: list[int] | tuple[int, ...] = (16,)
    mid_block_add_attention: bool = True
    norm_num_groups: int = 32
    act_fn: Literal["silu", "swish", "gelu", "relu", "mish"] = "silu"
    dropout: float | int = 0.0
    latent_channels: int = 256
    # Quantizer: the fields of QuantizerConfig.architecture_fields(), with its defaults (a test checks both)
    embed_dim: int = 8
    codebook_size: int = 16384
    quantizer_type: str = "vector"  # one of QuantizerConfig's QUANTIZER_TYPES, checked there
    num_groups: int = 1
    num_quantizers: int = 1
    beta: float | int = 0.95
    sync_nu: float | int = 0.0
    affine: Literal["learned", "running", "linear"] | None = None
    affine_lr: float | int = 1.0
    affine_groups: int = 1
    affine_momentum: float | int = 0.1
    alternating: bool | Literal["mean", "sgd"] = False
    alternating_step_size: float | int = 0.5
    alternating_lr: float | int = 50.0
    gradient_estimator: Literal["ste", "rotation"] = "ste"
    codebook_update: Literal["gradient", "ema"] = "gradient"
    ema_decay: float | int = 0.99
    fsq_levels: list[int] | tuple[int, ...] | None = None
    kmeans_init: bool = False
    kmeans_iterations: int = 10
    kmeans_max_samples: int = 16384
    replace_freq: int = 0
    distance: Literal["euclidean", "cosine"] = "euclidean"
    # Losses returned by forward
    reconstruction_loss_type: Literal["l1", "mse", "l2"] = "l1"
    quantizer_loss_weight: float | int = 1.0
    # What a diffusers VQModel records beyond the architecture, kept for `to_diffusers()`. The defaults are what every
    # export wrote before these fields existed, so older config.json files mean the same.
    scaling_factor: float | int = 1.0
    force_upcast: bool = False
    lookup_from_codebook: bool = True

    def __post_init__(self, **kwargs):
        # Lists, not tuples: the JSON round trip gives lists, and save/load must give an equal config.
        self.block_out_channels = list(self.block_out_channels)
        self.attention_resolutions = list(self.attention_resolutions)
        if self.fsq_levels is not None:
            self.fsq_levels = list(self.fsq_levels)
        _reject_misspelled_quantizer_fields(kwargs)
        super().__post_init__(**kwargs)

    @property
    def downsampling_factor(self) -> int:
        """Side of the image patch that one token covers (4, 8, 16...)."""
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def token_grid_size(self) -> tuple[int, int]:
        """(height, width) of the token grid of an `image_size` image: the one place classifiers, priors, pipelines
        and cards take a tokenizer's grid from (see `hf_vq.models.vqgan.image_size`)."""
        side = self.image_size // self.downsampling_factor
        return (side, side)

    @property
    def level_resolutions(self) -> list[int]:
        """Feature-map side of each level for images of `image_size`."""
        return [self.image_size // 2**level for level in range(len(self.block_out_channels))]

    @property
    def level_has_attention(self) -> list[bool]:
        """Whether the blocks of each level (encoder order, highest resolution first) have self-attention."""
        return [resolution in self.attention_resolutions for resolution in self.level_resolutions]

    @property
    def tokens_per_position(self) -> int:
        """Ids per grid position: 1, `num_groups` (grouped) or `num_quantizers` (residual)."""
        return self.quantizer_config.tokens_per_position

    @property
    def quantizer_config(self) -> QuantizerConfig:
        """The quantizer's options as a (validated) `QuantizerConfig`, over channel axis 1."""
        return QuantizerConfig(**{name: getattr(self, name) for name in QUANTIZER_FIELDS})

    def quantizer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `VectorQuantizer` (and of the grouped and residual ones besides their sizes), taken
        from this config."""
        options = self.quantizer_config.to_dict(runtime=False)
        return {name: value for name, value in options.items() if name not in _TYPE_FIELDS}

    def validate_architecture(self):
        """Part of `@strict`-powered validation: cross-field checks, each naming the fields to change."""
        super().validate_architecture()
        self._validate_backbone()
        self._validate_quantizer()

    def _validate_backbone(self) -> None:
        for name in ("num_channels", "image_size", "layers_per_block", "norm_num_groups", "latent_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if len(self.block_out_channels) == 0 or min(self.block_out_channels) < 1:
            raise ValueError(
                f"block_out_channels must be a non-empty list of positive integers, got {self.block_out_channels}"
            )
        # 3x3 convolutions of two per residual block: layers_per_block blocks per encoder level, one more per
        # decoder one.
        check_model_size(
            sum(18 * channels**2 * (2 * self.layers_per_block + 1) for channels in self.block_out_channels),
            "layers_per_block and block_out_channels",
        )
        bad_channels = [c for c in self.block_out_channels if c % self.norm_num_groups != 0]
        if bad_channels:
            raise ValueError(
                f"norm_num_groups={self.norm_num_groups} must divide every entry of block_out_channels "
                f"{self.block_out_channels} (not {bad_channels}): group normalisation splits channels into equal "
                "groups"
            )
        if self.image_size % self.downsampling_factor != 0:
            raise ValueError(
                f"image_size={self.image_size} is not divisible by the downsampling factor {self.downsampling_factor} "
                f"set by {len(self.block_out_channels)} levels of block_out_channels; change image_size or the levels"
            )
        unknown = [r for r in self.attention_resolutions if r not in self.level_resolutions]
        if unknown:
            raise ValueError(
                f"attention_resolutions {unknown} match no level: with image_size={self.image_size} the levels have "
                f"sides {self.level_resolutions}; pick attention resolutions among those"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")

    def _validate_quantizer(self) -> None:
        self.quantizer_config  # building it runs every check of QuantizerConfig

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, **overrides: Any) -> "VQGANConfig":
        """Build a config from the `model:` section of a YAML file such as `configs/vqgan_cifar10.yaml`.

        Other top-level sections (`data:`, `training:`) are ignored here; `overrides` replace single fields.

        Example:

        ```python
        >>> from hf_vq import VQGANConfig
        >>> config = VQGANConfig.from_yaml("configs/vqgan_tiny.yaml", codebook_size=32)  # doctest: +SKIP
        ```
        """
        # Imported here: PyYAML comes with transformers, but the remote-code copy of this file should not need it
        # just to load a checkpoint.
        import yaml

        with open(path, encoding="utf-8") as handle:
            document = yaml.safe_load(handle) or {}
        if not isinstance(document, dict) or not isinstance(document.get("model"), dict):
            raise ValueError(
                f"{path} has no `model:` mapping at the top level; put the VQGANConfig fields under `model:`"
            )
        fields = {**document["model"], **overrides}
        unknown = sorted(set(fields) - set(cls.__dataclass_fields__))
        if unknown:
            try:
                check_option_names({unknown[0]: None}, tuple(cls.__dataclass_fields__), owner="VQGANConfig field")
            except ValueError as error:
                message = f"{path}: unknown VQGANConfig fields {unknown} in the `model:` section; {error}"
                raise ValueError(message) from None
        return cls(**fields)


def _reject_misspelled_quantizer_fields(extra_fields: dict[str, Any]) -> None:
    """A `config.json` key that is not a field but is close to a quantizer option is a typo (or an option this
    version does not have): loading it would silently train or run another quantizer, so it raises instead, naming
    the nearest option. Other extra keys are kept as attributes, as transformers does."""
    for name in extra_fields:
        if name in QuantizerConfig.field_names() and name not in QUANTIZER_FIELDS:
            raise ValueError(
                f"{name!r} is a run-time option of the quantizer, not stored in a VQGANConfig; set it on the built "
                f"model's quantizer (model.quantize.{name} = ...)"
            )
        if difflib.get_close_matches(name, QUANTIZER_FIELDS, n=1, cutoff=0.85):
            check_option_names({name: None}, QUANTIZER_FIELDS, owner="quantizer field in VQGANConfig")


# Copied from hf_vq.models.token_vit.configuration_token_vit.check_model_size
def check_model_size(num_parameters: int, fields: str) -> None:
    """Refuse, before anything is allocated, a config whose model no machine holds (a `num_hidden_layers` of 10**6
    in a config.json would otherwise grow memory until the process is killed)."""
    limit = 20_000_000_000  # far beyond any model these configs are for
    if num_parameters > limit:
        raise ValueError(
            f"this config makes a model of about {num_parameters:.1e} parameters "
            f"({num_parameters * 4 / 2**30:,.0f} GiB in float32), more than the {limit:.0e} any hf_vq model is built "
            f"for: check {fields}"
        )


__all__ = ["VQGANConfig"]
