"""Configuration of the MaskGIT token prior: a bidirectional transformer over an image tokenizer's token grid."""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig


@strict
class MaskGITConfig(PreTrainedConfig):
    r"""
    Configuration of a [`MaskGITModel`], the MaskGIT prior (Chang et al., CVPR 2022) over the token grids of an hf_vq
    image tokenizer: it predicts the codes of masked grid positions from the visible ones and a class label.

    The vocabulary of its input is the tokenizer's `codebook_size` codes plus one mask id (`mask_token_id ==
    codebook_size`); its output covers the codes only. Class labels are embedded with one extra row, the null label
    (`null_class_id == num_classes`), which classifier-free guidance uses for the unconditional prediction.

    Args:
        codebook_size (`int`, *optional*, defaults to 1024):
            Codes of the tokenizer the prior models (its `codebook_size`).
        grid_height (`int`, *optional*, defaults to 16):
            Rows of the token grid (`image_size // downsampling_factor` of the tokenizer).
        grid_width (`int`, *optional*, defaults to 16):
            Columns of the token grid.
        num_classes (`int`, *optional*, defaults to 0):
            Class labels the prior is conditioned on; 0 makes an unconditional prior (every sample uses the null
            label).
        hidden_size (`int`, *optional*, defaults to 256):
            Width of the transformer.
        num_hidden_layers (`int`, *optional*, defaults to 4):
            Number of transformer blocks.
        num_attention_heads (`int`, *optional*, defaults to 4):
            Attention heads per block; must divide `hidden_size`.
        intermediate_size (`int`, *optional*, defaults to 1024):
            Width of the MLP of each block.
        hidden_dropout_prob (`float`, *optional*, defaults to 0.1):
            Dropout on the embeddings and after attention and MLP.
        attention_probs_dropout_prob (`float`, *optional*, defaults to 0.1):
            Dropout of the attention weights.
        layer_norm_eps (`float`, *optional*, defaults to 1e-6):
            Epsilon of the layer norms.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the truncated-normal initialisation.
        tokenizer_name_or_path (`str`, *optional*):
            Hub id or folder of the tokenizer ([`VQGANModel`]) whose tokens the prior was trained on.
        tokenizer_revision (`str`, *optional*):
            Revision (branch, tag or commit) of `tokenizer_name_or_path` on the Hub.

    Example:

    ```python
    >>> from hf_vq import MaskGITConfig, MaskGITModel
    >>> config = MaskGITConfig(codebook_size=32, grid_height=8, grid_width=8, num_classes=10, hidden_size=32,
    ...                        num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    >>> config.mask_token_id, config.null_class_id, config.num_positions
    (32, 10, 64)
    >>> model = MaskGITModel(config)

    ```
    """

    model_type = "maskgit"

    codebook_size: int = 1024
    grid_height: int = 16
    grid_width: int = 16
    num_classes: int = 0
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    layer_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    tokenizer_name_or_path: str | None = None
    tokenizer_revision: str | None = None

    @property
    def mask_token_id(self) -> int:
        """Input id of a masked position: one past the last code."""
        return self.codebook_size

    @property
    def vocab_size(self) -> int:
        """Input ids: the codes plus the mask id."""
        return self.codebook_size + 1

    @property
    def null_class_id(self) -> int:
        """Label id of "no class" (unconditional samples and label dropout): one past the last class."""
        return self.num_classes

    @property
    def num_positions(self) -> int:
        return self.grid_height * self.grid_width

    @classmethod
    def from_tokenizer_config(
        cls, tokenizer_config: Any, tokenizer_name_or_path: str | None = None, **kwargs: Any
    ) -> "MaskGITConfig":
        """A config that fits a tokenizer's `VQGANConfig`: its codebook size and token grid (its `token_grid_size`:
        `image_size // downsampling_factor` on each side); `kwargs` set the transformer's own fields.

        Example:

        ```python
        >>> from hf_vq import MaskGITConfig, VQGANConfig
        >>> tokenizer_config = VQGANConfig(num_channels=1, image_size=16, block_out_channels=[16, 32],
        ...                                norm_num_groups=8, latent_channels=8, embed_dim=4, codebook_size=32)
        >>> config = MaskGITConfig.from_tokenizer_config(tokenizer_config, "my/tokenizer", num_classes=10)
        >>> config.codebook_size, config.grid_height, config.grid_width, config.tokenizer_name_or_path
        (32, 8, 8, 'my/tokenizer')

        ```
        """
        check_single_codebook(tokenizer_config)
        grid_height, grid_width = tokenizer_config.token_grid_size
        fitted = {
            "codebook_size": tokenizer_config.codebook_size,
            "grid_height": grid_height,
            "grid_width": grid_width,
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
            "grid_height",
            "grid_width",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 for an unconditional prior), got {self.num_classes}")
        check_model_size(
            self.num_hidden_layers * (4 * self.hidden_size**2 + 2 * self.hidden_size * self.intermediate_size),
            "num_hidden_layers, hidden_size and intermediate_size",
        )
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} must divide hidden_size={self.hidden_size}"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {getattr(self, name)}")


def check_single_codebook(tokenizer_config: Any) -> None:
    """Refuse grouped / residual tokenizers: the prior predicts one code per grid position."""
    per_position = getattr(tokenizer_config, "tokens_per_position", 1)
    if per_position != 1:
        raise ValueError(
            f"the tokenizer has quantizer_type={getattr(tokenizer_config, 'quantizer_type', '?')!r} with "
            f"{per_position} ids per grid position; the MaskGIT prior is not supported yet for grouped or residual "
            "tokenizers (it predicts one code per position). Train it on a tokenizer with quantizer_type='vector'."
        )


# Copied from hf_vq.models.token_vit.configuration_token_vit.check_fitted_to_tokenizer
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


__all__ = ["MaskGITConfig"]
