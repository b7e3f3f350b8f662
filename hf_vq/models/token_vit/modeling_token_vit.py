"""A Vision Transformer that classifies the token grids of an hf_vq image tokenizer.

The blocks are our own (pre-norm attention + MLP, as in ViT) rather than transformers' ViT internals, which
are renamed between releases. Given `pixel_values` instead of tokens, the classifier tokenizes them with
the tokenizer named in its config (loaded once, frozen, kept out of the state dict), so that
`transformers.pipeline("image-classification", model=PATH)` works on PIL images end to end.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.modeling_utils import PreTrainedModel

from .configuration_token_vit import TokenViTConfig


class TokenViTAttention(nn.Module):
    """Multi-head self-attention through `scaled_dot_product_attention`."""

    def __init__(self, config: TokenViTConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.attention_probs_dropout_prob

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, length, width = hidden_states.shape
        qkv = self.qkv(hidden_states).reshape(batch, length, 3, self.num_heads, width // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(query, key, value, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(attended.transpose(1, 2).reshape(batch, length, width))


class TokenViTLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, config: TokenViTConfig):
        super().__init__()
        self.norm_before_attention = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = TokenViTAttention(config)
        self.norm_before_mlp = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = nn.Sequential(
            nn.Linear(config.hidden_size, config.intermediate_size),
            nn.GELU(),
            nn.Linear(config.intermediate_size, config.hidden_size),
        )
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.dropout(self.attention(self.norm_before_attention(hidden_states)))
        return hidden_states + self.dropout(self.mlp(self.norm_before_mlp(hidden_states)))


class TokenViTEmbeddings(nn.Module):
    """Token embedding (optionally in the tokenizer's code space, then projected), class token, positions."""

    def __init__(self, config: TokenViTConfig):
        super().__init__()
        embedding_dim = config.token_embedding_dim or config.hidden_size
        self.token_embedding = nn.Embedding(config.codebook_size, embedding_dim)
        self.projection = nn.Linear(embedding_dim, config.hidden_size) if config.token_embedding_dim else nn.Identity()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.position_embedding = nn.Parameter(torch.zeros(1, config.num_positions + 1, config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """image_tokens: (B, positions, tokens_per_position); embeddings of one position's ids are summed."""
        embedded = self.projection(self.token_embedding(image_tokens).sum(dim=2))
        cls = self.cls_token.expand(embedded.shape[0], -1, -1)
        return self.dropout(torch.cat([cls, embedded], dim=1) + self.position_embedding)


class TokenViTPreTrainedModel(PreTrainedModel):
    config_class = TokenViTConfig
    base_model_prefix = "token_vit"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["TokenViTLayer"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.trunc_normal_(module.weight, std=std)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, TokenViTEmbeddings):
            init.trunc_normal_(module.cls_token, std=std)
            init.trunc_normal_(module.position_embedding, std=std)


class TokenViTForImageClassification(TokenViTPreTrainedModel):
    """ViT classifier over token grids, or over pixels through the tokenizer it was trained on.

    Example:

    ```python
    >>> import torch
    >>> from hf_vq import TokenViTConfig, TokenViTForImageClassification
    >>> config = TokenViTConfig(codebook_size=64, grid_size=[7, 7], hidden_size=32, num_hidden_layers=2,
    ...                         num_attention_heads=2, intermediate_size=64, num_labels=10)
    >>> model = TokenViTForImageClassification(config)
    >>> model(image_tokens=torch.randint(0, 64, (2, 7, 7))).logits.shape
    torch.Size([2, 10])

    ```
    """

    def __init__(self, config: TokenViTConfig):
        super().__init__(config)
        self.embeddings = TokenViTEmbeddings(config)
        self.layers = nn.ModuleList(TokenViTLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        # The tokenizer is a frozen tool, not part of this model's weights: a plain attribute keeps it out of
        # the state dict, the optimizer and save_pretrained.
        self.__dict__["_tokenizer"] = None
        self.post_init()

    @classmethod
    def from_tokenizer(
        cls,
        tokenizer_name_or_path: str | os.PathLike,
        tokenizer: nn.Module | None = None,
        init_from_codebook: bool = False,
        **config_kwargs: Any,
    ) -> "TokenViTForImageClassification":
        """A new (untrained) classifier fitted to a tokenizer: codebook size, token grid and the tokenizer's
        reference come from it. `tokenizer` is the loaded `VQGANModel` when the caller has it already.
        `init_from_codebook=True` embeds tokens in the tokenizer's code space (`token_embedding_dim = embed_dim`)
        and starts the embedding at its effective codebook.

        Example:

        ```python
        >>> from hf_vq import TokenViTForImageClassification
        >>> model = TokenViTForImageClassification.from_tokenizer(
        ...     "outputs/tokenizer", init_from_codebook=True, num_labels=10, hidden_size=64)  # doctest: +SKIP
        ```
        """
        if tokenizer is None:
            from transformers import AutoModel

            tokenizer = AutoModel.from_pretrained(tokenizer_name_or_path)
        if init_from_codebook:
            config_kwargs.setdefault("token_embedding_dim", tokenizer.config.embed_dim)
        config = TokenViTConfig.from_tokenizer_config(tokenizer.config, os.fspath(tokenizer_name_or_path), **config_kwargs)
        model = cls(config)
        model.set_tokenizer(tokenizer)
        if init_from_codebook:
            model.init_token_embedding_from_codebook(tokenizer.quantize.codebook.detach().float().cpu())
        return model

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, image_processor: Any = None, **kwargs: Any) -> None:
        """`PreTrainedModel.save_pretrained`, plus the tokenizer's image processor (`image_processor`), so that
        `AutoImageProcessor` and `pipeline("image-classification")` can load the folder."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if image_processor is not None and kwargs.get("is_main_process", True):
            save_processor_without_remote_code(image_processor, save_directory)

    # --- tokenizer ------------------------------------------------------------------------------------------

    def set_tokenizer(self, tokenizer: nn.Module) -> None:
        """Use `tokenizer` (a loaded VQGANModel) to turn pixel_values into tokens; its codebook must match."""
        codebook_size = getattr(tokenizer.config, "codebook_size", None)
        if codebook_size != self.config.codebook_size:
            raise ValueError(
                f"the tokenizer has a codebook of {codebook_size} codes but this classifier was built for "
                f"codebook_size={self.config.codebook_size}; use the tokenizer it was trained on "
                f"({self.config.tokenizer_name_or_path or 'not recorded'})"
            )
        self.__dict__["_tokenizer"] = tokenizer.eval().requires_grad_(False)

    @property
    def tokenizer(self) -> nn.Module:
        """The frozen tokenizer, loaded from `config.tokenizer_name_or_path` on first use."""
        if self._tokenizer is None:
            if not self.config.tokenizer_name_or_path:
                raise ValueError(
                    "this classifier reads token grids; to classify pixel_values it needs the tokenizer it was trained "
                    "on, but config.tokenizer_name_or_path is not set. Pass image_tokens, or call set_tokenizer()."
                )
            from transformers import AutoModel

            self.set_tokenizer(AutoModel.from_pretrained(self.config.tokenizer_name_or_path))
        return self._tokenizer

    @torch.no_grad()
    def tokenize(self, pixel_values: torch.Tensor) -> torch.Tensor:
        tokenizer = self.tokenizer
        device = pixel_values.device
        if next(tokenizer.parameters()).device != device:
            tokenizer.to(device)
        return tokenizer.encode(pixel_values.to(tokenizer.dtype)).image_tokens  # fp16 images, fp32 tokenizer: fine

    @torch.no_grad()
    def init_token_embedding_from_codebook(self, codebook: torch.Tensor) -> None:
        """Start the token embedding at the tokenizer's effective codebook (codebook_size, embed_dim)."""
        weight = self.embeddings.token_embedding.weight
        if codebook.shape != weight.shape:
            raise ValueError(
                f"codebook of shape {tuple(codebook.shape)} does not fit the token embedding {tuple(weight.shape)}; "
                "set token_embedding_dim to the tokenizer's embed_dim and codebook_size to its codebook_size"
            )
        weight.copy_(codebook)

    # --- forward --------------------------------------------------------------------------------------------

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        image_tokens: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        if (pixel_values is None) == (image_tokens is None):
            raise ValueError("pass exactly one of image_tokens (token ids) or pixel_values (images to tokenize)")
        if image_tokens is None:
            image_tokens = self.tokenize(pixel_values)
        hidden_states = self.embeddings(self._check_tokens(image_tokens))
        all_hidden_states = [hidden_states] if output_hidden_states else None
        for layer in self.layers:
            hidden_states = layer(hidden_states)
            if all_hidden_states is not None:
                all_hidden_states.append(hidden_states)
        logits = self.classifier(self.norm(hidden_states[:, 0]))
        loss = self.loss_function(labels, logits, self.config, **kwargs) if labels is not None else None
        output = ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=tuple(all_hidden_states) if all_hidden_states else None
        )
        return output if return_dict is not False else output.to_tuple()

    def _check_tokens(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """(B, h, w[, t]) or (B, h*w[, t]) ids -> (B, h*w, t), with clear errors for what does not fit."""
        config = self.config
        if image_tokens.is_floating_point() or image_tokens.is_complex():
            raise TypeError(f"image_tokens must be integer token ids, got {image_tokens.dtype}")
        per_position = config.tokens_per_position
        grid_dims = image_tokens.ndim - 1 - (1 if per_position > 1 else 0)
        positions = int(torch.tensor(image_tokens.shape[1 : 1 + grid_dims]).prod()) if grid_dims > 0 else 0
        if grid_dims not in (1, 2) or positions != config.num_positions or (per_position > 1 and image_tokens.shape[-1] != per_position):
            height, width = config.grid_size
            expected = f"(batch, {height}, {width}) or (batch, {height * width})"
            if per_position > 1:
                expected = expected.replace(")", f", {per_position})")
            raise ValueError(
                f"image_tokens of shape {tuple(image_tokens.shape)} do not fit this classifier, which expects "
                f"{expected}: a {height}x{width} grid. Tokenize images of the size the tokenizer was trained on."
            )
        if image_tokens.numel() and (int(image_tokens.min()) < 0 or int(image_tokens.max()) >= config.codebook_size):
            raise ValueError(
                f"token ids must lie in [0, {config.codebook_size - 1}] (codebook_size={config.codebook_size}); got "
                f"values from {int(image_tokens.min())} to {int(image_tokens.max())}. Were they made by another tokenizer?"
            )
        return image_tokens.reshape(image_tokens.shape[0], config.num_positions, per_position).long()


def save_processor_without_remote_code(image_processor: Any, save_directory: str | os.PathLike) -> Path:
    """Write `preprocessor_config.json` without the tokenizer's `auto_map`.

    The tokenizer's processor points at its remote code (image_processing_vqgan.py), which a classifier folder does
    not hold; `pipeline()` then guesses a matching remote video processor and asks on stdin whether to run it. The
    classifier is loaded through hf_vq's registration instead, so the reference is dropped.
    """
    config = image_processor.to_dict()
    for key in ("auto_map", "_auto_class"):
        config.pop(key, None)
    path = Path(save_directory) / "preprocessor_config.json"
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return path


__all__ = ["TokenViTForImageClassification", "TokenViTPreTrainedModel", "save_processor_without_remote_code"]
