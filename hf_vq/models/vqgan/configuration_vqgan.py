"""VQGAN image tokenizer configuration."""


import math
import os
from typing import Any, Literal

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig

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
        quantizer_type (`str`, *optional*, defaults to `"vector"`):
            "vector" (one codebook), "grouped" (product quantization over `num_groups` channel slices), "residual"
            (`num_quantizers` stages quantizing successive residuals) or "fsq" (finite scalar quantization, no codebook:
            set `fsq_levels`, `embed_dim = len(fsq_levels)` and `codebook_size = prod(fsq_levels)`).
        num_groups (`int`, *optional*, defaults to 1):
            Channel groups of a grouped quantizer; must divide `embed_dim`.
        num_quantizers (`int`, *optional*, defaults to 1):
            Stages of a residual quantizer.
        beta (`float`, *optional*, defaults to 0.95):
            Convex weight in [0, 1] of the codebook part of the quantizer loss; the commitment part gets `1 - beta`.
            The classic VQ-VAE commitment weight `b` corresponds to `beta = 1 / (1 + b)` (b = 0.25: beta = 0.8).
        sync_nu (`float`, *optional*, defaults to 0.0):
            Strength of the synchronized update (0: plain straight-through estimator).
        affine (`str`, *optional*):
            Re-parameterisation of the codes: `None`, "learned" or "running" (per-dimension affine, Huh et al.) or
            "linear" (SimVQ: frozen raw codes through one learned `embed_dim` x `embed_dim` matrix).
        affine_lr (`float`, *optional*, defaults to 1.0):
            Learning-rate multiplier of the learned affine scale and shift.
        affine_groups (`int`, *optional*, defaults to 1):
            Groups of consecutive codes with their own affine transform; must divide `codebook_size`.
        affine_momentum (`float`, *optional*, defaults to 0.1):
            Momentum of the running statistics of the encoder output ("running" affine).
        alternating (`bool` or `str`, *optional*, defaults to `False`):
            Alternating optimisation before the lookup: "mean" (or `True`: move the selected codes towards the means
            of their assigned vectors) or "sgd" (the authors' form: one SGD step of the codebook loss).
        alternating_step_size (`float`, *optional*, defaults to 0.5):
            Fraction of the way the "mean" alternating step moves a code, in (0, 1].
        alternating_lr (`float`, *optional*, defaults to 50.0):
            Learning rate of the "sgd" alternating step (on the mean squared error, as vqtorch's example).
        gradient_estimator (`str`, *optional*, defaults to `"ste"`):
            "ste" (straight-through) or "rotation" (the rotation trick of Fifty et al. 2024).
        codebook_update (`str`, *optional*, defaults to `"gradient"`):
            "gradient" (the optimizer trains the codes) or "ema" (moving averages of the cluster means).
        ema_decay (`float`, *optional*, defaults to 0.99):
            Decay of the EMA codebook statistics.
        fsq_levels (`list[int]`, *optional*):
            Values per channel of the "fsq" quantizer, e.g. [8, 5, 5, 5] (1000 codes).
        kmeans_init (`bool`, *optional*, defaults to `False`):
            Initialise the codebook with k-means++ on the first training batch.
        kmeans_iterations (`int`, *optional*, defaults to 10):
            Lloyd iterations of the k-means initialisation.
        kmeans_max_samples (`int`, *optional*, defaults to 16384):
            Encoder vectors per process used by the k-means initialisation.
        replace_freq (`int`, *optional*, defaults to 0):
            Reset a code unused for this many training steps to an encoder vector (0: never).
        distance (`str`, *optional*, defaults to `"euclidean"`):
            "euclidean" or "cosine" (vectors and codes l2-normalised).
        reconstruction_loss_type (`str`, *optional*, defaults to `"l1"`):
            Pixel loss returned by `forward` as `reconstruction_loss`: "l1" (taming-transformers) or "mse".
        quantizer_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the quantizer loss in the total `loss` returned by `forward`.

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
    # Quantizer (every option of hf_vq.quantization)
    embed_dim: int = 8
    codebook_size: int = 16384
    quantizer_type: Literal["vector", "grouped", "residual", "fsq"] = "vector"
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
    reconstruction_loss_type: Literal["l1", "mse"] = "l1"
    quantizer_loss_weight: float | int = 1.0

    def __post_init__(self, **kwargs):
        # Lists, not tuples: the JSON round trip gives lists, and save/load must give an equal config.
        self.block_out_channels = list(self.block_out_channels)
        self.attention_resolutions = list(self.attention_resolutions)
        if self.fsq_levels is not None:
            self.fsq_levels = list(self.fsq_levels)
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
        if self.quantizer_type == "grouped":
            return self.num_groups
        if self.quantizer_type == "residual":
            return self.num_quantizers
        return 1

    def quantizer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the quantizer classes of `hf_vq.quantization`, taken from this config."""
        return {
            "embed_dim": self.embed_dim,
            "codebook_size": self.codebook_size,
            "beta": float(self.beta),
            "sync_nu": float(self.sync_nu),
            "affine": self.affine,
            "affine_lr": float(self.affine_lr),
            "affine_groups": self.affine_groups,
            "affine_momentum": float(self.affine_momentum),
            "alternating": self.alternating,
            "alternating_step_size": float(self.alternating_step_size),
            "alternating_lr": float(self.alternating_lr),
            "gradient_estimator": self.gradient_estimator,
            "codebook_update": self.codebook_update,
            "ema_decay": float(self.ema_decay),
            "kmeans_init": self.kmeans_init,
            "kmeans_iterations": self.kmeans_iterations,
            "kmeans_max_samples": self.kmeans_max_samples,
            "replace_freq": self.replace_freq,
            "distance": self.distance,
        }

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
            raise ValueError(f"block_out_channels must be a non-empty list of positive integers, got {self.block_out_channels}")
        bad_channels = [c for c in self.block_out_channels if c % self.norm_num_groups != 0]
        if bad_channels:
            raise ValueError(
                f"norm_num_groups={self.norm_num_groups} must divide every entry of block_out_channels "
                f"{self.block_out_channels} (not {bad_channels}): group normalisation splits channels into equal groups"
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

    def _validate_successor_methods(self) -> None:
        """SimVQ, EMA, the SGD alternating step and FSQ: the combinations the quantizer itself would reject."""
        if self.alternating_lr <= 0 or not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"alternating_lr must be > 0 and ema_decay in [0, 1), got {self.alternating_lr} and {self.ema_decay}")
        if self.affine == "linear" and self.affine_groups != 1:
            raise ValueError(f"affine='linear' (SimVQ) has one matrix for the whole codebook; set affine_groups=1 (got {self.affine_groups})")
        if self.codebook_update == "ema" and (self.affine is not None or self.alternating or self.sync_nu > 0):
            raise ValueError(
                "codebook_update='ema' moves the codes to their cluster means itself and gives them no gradient; set "
                f"affine=None, alternating=False and sync_nu=0 (got {self.affine!r}, {self.alternating!r}, {self.sync_nu})"
            )
        if self.quantizer_type != "fsq":
            if self.fsq_levels is not None:
                raise ValueError(f"fsq_levels only applies to quantizer_type='fsq' (got {self.quantizer_type!r})")
            return
        levels = self.fsq_levels
        if not levels or any(not isinstance(level, int) or level < 2 for level in levels):
            raise ValueError(f"quantizer_type='fsq' needs fsq_levels, a list of integers >= 2 (values per channel), got {levels}")
        if self.embed_dim != len(levels) or self.codebook_size != math.prod(levels):
            raise ValueError(
                f"quantizer_type='fsq' with fsq_levels={levels} quantizes {len(levels)} channels into {math.prod(levels)} codes: "
                f"set embed_dim={len(levels)} and codebook_size={math.prod(levels)} (got {self.embed_dim} and {self.codebook_size})"
            )

    def _validate_quantizer(self) -> None:
        for name in ("embed_dim", "codebook_size", "num_groups", "num_quantizers", "affine_groups", "kmeans_max_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.kmeans_iterations < 0 or self.replace_freq < 0:
            raise ValueError(
                f"kmeans_iterations and replace_freq must be >= 0, got {self.kmeans_iterations} and {self.replace_freq}"
            )
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(
                f"beta must lie in [0, 1], got {self.beta}: it weights the codebook part of the quantizer loss against "
                "the commitment part. For a classic VQ-VAE commitment weight b use beta = 1 / (1 + b)."
            )
        if self.sync_nu < 0:
            raise ValueError(f"sync_nu must be >= 0 (0 is plain straight-through), got {self.sync_nu}")
        if self.affine_lr <= 0 or not 0.0 < self.affine_momentum <= 1.0:
            raise ValueError(
                f"affine_lr must be > 0 and affine_momentum in (0, 1], got {self.affine_lr} and {self.affine_momentum}"
            )
        if not 0.0 < self.alternating_step_size <= 1.0:
            raise ValueError(f"alternating_step_size must lie in (0, 1], got {self.alternating_step_size}")
        if self.codebook_size % self.affine_groups != 0:
            raise ValueError(
                f"affine_groups={self.affine_groups} must divide codebook_size={self.codebook_size}: "
                "each group of consecutive codes shares one scale and shift"
            )
        self._validate_successor_methods()
        if self.quantizer_type == "grouped" and self.embed_dim % self.num_groups != 0:
            raise ValueError(f"num_groups={self.num_groups} must divide embed_dim={self.embed_dim} for quantizer_type='grouped'")
        if self.quantizer_type == "residual" and self.distance != "euclidean":
            raise ValueError(
                "quantizer_type='residual' subtracts codes from its input, which unit-norm cosine codes cannot "
                "represent; use distance='euclidean' or quantizer_type='grouped'"
            )
        if self.quantizer_type != "grouped" and self.num_groups != 1:
            raise ValueError(f"num_groups={self.num_groups} only applies to quantizer_type='grouped' (got {self.quantizer_type!r})")
        if self.quantizer_type != "residual" and self.num_quantizers != 1:
            raise ValueError(
                f"num_quantizers={self.num_quantizers} only applies to quantizer_type='residual' (got {self.quantizer_type!r})"
            )

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
            raise ValueError(f"{path}: unknown VQGANConfig fields {unknown} in the `model:` section")
        return cls(**fields)


__all__ = ["VQGANConfig"]
