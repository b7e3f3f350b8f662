"""Configuration of the ViT classifier that reads a VQ tokenizer's discrete token grids."""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig


@strict
class TokenViTConfig(PreTrainedConfig):
    r"""
    Configuration of a [`TokenViTForImageClassification`]: a pre-norm Vision Transformer whose input is the grid of
    token ids an hf_vq image tokenizer produces, instead of pixels.

    Args:
        codebook_size (`int`, *optional*, defaults to 1024):
            Number of distinct token ids (the tokenizer's codebook size).
        tokens_per_position (`int`, *optional*, defaults to 1):
            Ids per grid position (a grouped or residual tokenizer gives several; their embeddings are summed).
        grid_size (`list[int]`, *optional*, defaults to `[8, 8]`):
            Height and width of the token grid.
        hidden_size (`int`, *optional*, defaults to 192):
            Width of the transformer.
        num_hidden_layers (`int`, *optional*, defaults to 6):
            Number of transformer blocks.
        num_attention_heads (`int`, *optional*, defaults to 3):
            Attention heads per block; must divide `hidden_size`.
        intermediate_size (`int`, *optional*, defaults to 768):
            Width of the MLP of each block.
        hidden_dropout_prob (`float`, *optional*, defaults to 0.0):
            Dropout after attention and MLP.
        attention_probs_dropout_prob (`float`, *optional*, defaults to 0.0):
            Dropout of the attention weights.
        layer_norm_eps (`float`, *optional*, defaults to 1e-6):
            Epsilon of the layer norms.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the truncated-normal initialisation.
        token_embedding_dim (`int`, *optional*):
            When set, token ids are embedded in this many dimensions and projected to `hidden_size`; set it to the
            tokenizer's `embed_dim` to initialise the embedding from the tokenizer's effective codebook.
        tokenizer_name_or_path (`str`, *optional*):
            Hub id or path of the tokenizer ([`VQGANModel`]) the classifier was trained on. Given `pixel_values`
            instead of tokens, the classifier tokenizes them with it.
        tokenizer_revision (`str`, *optional*):
            The tokenizer's revision (a commit id, pinned by `hf-vq push-set` / `hf-vq push --tokenizer_hub_id`), so
            that later pushes to the tokenizer's repo do not change what this classifier reads.

    Example:

    ```python
    >>> from hf_vq import TokenViTConfig, TokenViTForImageClassification
    >>> config = TokenViTConfig(codebook_size=64, grid_size=[7, 7], hidden_size=32, num_hidden_layers=2,
    ...                         num_attention_heads=2, intermediate_size=64, num_labels=10)
    >>> model = TokenViTForImageClassification(config)

    ```
    """

    model_type = "token_vit"
    # transformers' name for the number of input ids (read and written by `resize_token_embeddings`).
    attribute_map = {"vocab_size": "codebook_size"}

    codebook_size: int = 1024
    tokens_per_position: int = 1
    grid_size: list[int] | tuple[int, ...] = (8, 8)
    hidden_size: int = 192
    num_hidden_layers: int = 6
    num_attention_heads: int = 3
    intermediate_size: int = 768
    hidden_dropout_prob: float | int = 0.0
    attention_probs_dropout_prob: float | int = 0.0
    layer_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    token_embedding_dim: int | None = None
    tokenizer_name_or_path: str | None = None
    tokenizer_revision: str | None = None

    def __post_init__(self, **kwargs):
        # A list survives the JSON round trip unchanged, so a saved config equals the loaded one.
        self.grid_size = list(self.grid_size)
        super().__post_init__(**kwargs)

    @property
    def num_positions(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    @classmethod
    def from_tokenizer_config(
        cls, tokenizer_config: Any, tokenizer_name_or_path: str | None = None, **kwargs: Any
    ) -> "TokenViTConfig":
        """A config that fits a tokenizer's `VQGANConfig`: its codebook size, ids per position and token grid
        (its `token_grid_size`: `image_size // downsampling_factor` on each side); `kwargs` set the transformer's own
        fields.

        Example:

        ```python
        >>> from hf_vq import TokenViTConfig, VQGANConfig
        >>> tokenizer_config = VQGANConfig(num_channels=1, image_size=16, block_out_channels=[16, 32],
        ...                                norm_num_groups=8, latent_channels=8, embed_dim=4, codebook_size=32)
        >>> config = TokenViTConfig.from_tokenizer_config(tokenizer_config, "my/tokenizer", hidden_size=32,
        ...                                               num_hidden_layers=1, num_attention_heads=2,
        ...                                               intermediate_size=64)
        >>> config.codebook_size, config.grid_size, config.tokenizer_name_or_path
        (32, [8, 8], 'my/tokenizer')

        ```
        """
        fitted = {
            "codebook_size": tokenizer_config.codebook_size,
            "tokens_per_position": tokenizer_config.tokens_per_position,
            "grid_size": list(tokenizer_config.token_grid_size),
            "tokenizer_name_or_path": tokenizer_name_or_path,
        }
        config = cls(**{**fitted, **kwargs})
        check_fitted_to_tokenizer(config, fitted)
        return config

    def validate_architecture(self):
        """Cross-field checks, each naming the field to change."""
        super().validate_architecture()
        for name in (
            "codebook_size",
            "tokens_per_position",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if len(self.grid_size) != 2 or min(self.grid_size) < 1:
            raise ValueError(f"grid_size must be [height, width] of positive integers, got {self.grid_size}")
        check_model_size(
            self.num_hidden_layers * (4 * self.hidden_size**2 + 2 * self.hidden_size * self.intermediate_size),
            "num_hidden_layers, hidden_size and intermediate_size",
        )
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} must divide hidden_size={self.hidden_size}"
            )
        if self.token_embedding_dim is not None and self.token_embedding_dim < 1:
            raise ValueError(f"token_embedding_dim must be a positive integer or None, got {self.token_embedding_dim}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {getattr(self, name)}")


def check_fitted_to_tokenizer(config: Any, fitted: dict[str, Any]) -> None:
    """The tokenizer fixes the `fitted` fields: a `model:` section that set them otherwise would build a model that
    refuses the tokens it is trained on, at the first batch."""
    conflicts = [
        f"{name}={getattr(config, name)} (the tokenizer's: {value})"
        for name, value in fitted.items()
        if name != "tokenizer_name_or_path" and getattr(config, name) != value
    ]
    if conflicts:
        raise ValueError(
            f"{', '.join(conflicts)}: these come from the tokenizer; leave them out of the model's settings"
        )


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


__all__ = ["TokenViTConfig"]
