"""A Vision Transformer that classifies the token grids of an hf_vq image tokenizer.

The blocks are our own (pre-norm attention + MLP, as in ViT) rather than transformers' ViT internals, which
are renamed between releases. Given `pixel_values` instead of tokens, the classifier tokenizes them with
the tokenizer named in its config (Hub id or folder, at a pinned revision; loaded once, frozen, kept out of the
state dict), so that `transformers.pipeline("image-classification", model=PATH)` works on PIL images end to end.
A saved folder carries this code, the tokenizer's code and the image processor's code, so it also loads with
`trust_remote_code=True` where hf_vq is not installed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel

from .configuration_token_vit import TokenViTConfig

# The tokenizer's model comes through a sibling module so that its code travels with the classifier: see the
# docstring of vqgan_token_vit.py for why, and `save_pretrained` below for how.
from .vqgan_token_vit import VQGANModel, copy_remote_code, eager_attention_forward, remote_code_source


class TokenViTAttention(nn.Module):
    """Multi-head self-attention through transformers' attention interface: the kernel `config._attn_implementation`
    names ("sdpa" by default, or "eager"), or the eager one for a call that asks for the attention weights."""

    is_causal = False  # every position sees every other: read by transformers' sdpa kernel

    def __init__(self, config: TokenViTConfig):
        super().__init__()
        self.config = config  # the shared config: `set_attn_implementation` switches the kernel of every layer
        self.num_heads = config.num_attention_heads
        self.scaling = (config.hidden_size // config.num_attention_heads) ** -0.5
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.attention_probs_dropout_prob

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attended states `(batch, length, hidden_size)` and, with `output_attentions=True`, the attention weights
        `(batch, heads, length, length)` (else whatever the kernel returns: `None` for sdpa)."""
        batch, length, width = hidden_states.shape
        qkv = self.qkv(hidden_states).reshape(batch, length, 3, self.num_heads, width // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)
        # Fused kernels never form the weights: a call that wants them runs eager, as transformers' models do.
        implementation = "eager" if output_attentions else self.config._attn_implementation
        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        attended, weights = attention(
            self,
            query,
            key,
            value,
            None,
            scaling=self.scaling,
            dropout=self.dropout if self.training else 0.0,
            is_causal=False,
        )
        return self.proj(attended.reshape(batch, length, width)), weights


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

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.attention(self.norm_before_attention(hidden_states), output_attentions)
        hidden_states = hidden_states + self.dropout(attended)
        return hidden_states + self.dropout(self.mlp(self.norm_before_mlp(hidden_states))), weights


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
    # Its input is a token grid; pixels are a convenience that goes through the tokenizer (see `forward`).
    main_input_name = "image_tokens"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    # Attention goes through transformers' attention interface: "sdpa" (default) and "eager" both work.
    _supports_sdpa = True
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
        config = TokenViTConfig.from_tokenizer_config(
            tokenizer.config, os.fspath(tokenizer_name_or_path), **config_kwargs
        )
        model = cls(config)
        model.set_tokenizer(tokenizer)
        if init_from_codebook:
            model.init_token_embedding_from_codebook(tokenizer.quantize.codebook.detach().float().cpu())
        return model

    def save_pretrained(
        self, save_directory: str | os.PathLike, *args: Any, image_processor: Any = None, **kwargs: Any
    ) -> None:
        """`PreTrainedModel.save_pretrained`, plus what makes the folder self-sufficient: the tokenizer's code (the
        classifier builds its tokenizer from it when given pixels) and the tokenizer's image processor
        (`image_processor`) with its code, so that `AutoImageProcessor` and `pipeline("image-classification")` load
        the folder, with `trust_remote_code=True` where hf_vq is not installed."""
        if self._auto_class is not None:
            # `register_for_auto_class` names one auto class; the classifier is also what `AutoModel` loads (a token
            # ViT has no headless model), so the folder's auto_map names it for both.
            module = type(self).__module__.rsplit(".", 1)[-1]
            auto_map = getattr(self.config, "auto_map", None) or {}
            self.config.auto_map = {**auto_map, "AutoModel": f"{module}.{type(self).__name__}"}
        super().save_pretrained(save_directory, *args, **kwargs)
        if not kwargs.get("is_main_process", True):
            return
        if self._auto_class is not None and remote_code_source is not None:
            copy_remote_code(save_directory)
            (Path(save_directory) / "vqgan_token_vit.py").write_text(remote_code_source(), encoding="utf-8")
        if image_processor is not None:
            save_image_processor(image_processor, save_directory)

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
        """The frozen tokenizer, loaded on first use from `config.tokenizer_name_or_path` at
        `config.tokenizer_revision` (the commit pinned when the classifier was pushed), with the VQGAN code that
        came with this classifier: no second `trust_remote_code` download."""
        if self._tokenizer is None:
            if not self.config.tokenizer_name_or_path:
                raise ValueError(
                    "this classifier reads token grids; to classify pixel_values it needs the tokenizer it was "
                    "trained on, but config.tokenizer_name_or_path is not set. Pass image_tokens, or call "
                    "set_tokenizer()."
                )
            tokenizer = VQGANModel.from_pretrained(
                self.config.tokenizer_name_or_path, revision=self.config.tokenizer_revision
            )
            self.set_tokenizer(tokenizer.to(self.device))
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

    # --- token embeddings -----------------------------------------------------------------------------------

    def get_input_embeddings(self) -> nn.Embedding:
        """The token embedding, one row per code of the tokenizer's codebook."""
        return self.embeddings.token_embedding

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        """Replace the token embedding; `config.codebook_size` follows its number of rows (the ids it accepts)."""
        self.embeddings.token_embedding = value
        self.config.codebook_size = value.num_embeddings

    # --- forward --------------------------------------------------------------------------------------------

    def forward(
        self,
        image_tokens: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        r"""
        Logits `(batch, num_labels)` for token grids `image_tokens` `(batch, height, width[, tokens_per_position])`,
        or for `pixel_values` tokenized with the classifier's tokenizer. `output_hidden_states=True` returns the
        embeddings and each layer's output `(batch, 1 + height * width, hidden_size)`; `output_attentions=True`
        each layer's attention weights `(batch, heads, 1 + height * width, 1 + height * width)` (computed by the
        eager kernel for that call when the model uses sdpa).

        Ids outside the codebook raise a `ValueError` when `image_tokens` are in host memory and the call is
        eager; on an accelerator, or under `torch.compile` / `torch.export`, reading the ids would cost a
        host-device sync or a data-dependent branch, so call `check_image_tokens` yourself where ids come from
        elsewhere than this classifier's tokenizer.
        """
        if (pixel_values is None) == (image_tokens is None):
            raise ValueError("pass exactly one of image_tokens (token ids) or pixel_values (images to tokenize)")
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        if image_tokens is None:
            image_tokens = self.tokenize(pixel_values)  # its own tokenizer's ids: in range by construction
        elif values_are_cheap_to_read(image_tokens):
            self._check_token_values(image_tokens)
        hidden_states = self.embeddings(self._flatten_tokens(image_tokens))
        all_hidden_states = [hidden_states] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        for layer in self.layers:
            hidden_states, weights = layer(hidden_states, output_attentions)
            if all_hidden_states is not None:
                all_hidden_states.append(hidden_states)
            if all_attentions is not None:
                all_attentions.append(weights)
        logits = self.classifier(self.norm(hidden_states[:, 0]))
        loss = self.loss_function(labels, logits, self.config, **kwargs) if labels is not None else None
        output = ImageClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=tuple(all_hidden_states) if all_hidden_states else None,
            attentions=tuple(all_attentions) if all_attentions else None,
        )
        return output if return_dict is not False else output.to_tuple()

    def check_image_tokens(self, image_tokens: torch.Tensor) -> None:
        """Raise a clear error unless `image_tokens` are integer ids of this classifier's grid, each in
        `[0, codebook_size)`. Reads the ids (a host-device sync on an accelerator): for input from outside."""
        self._flatten_tokens(image_tokens)
        self._check_token_values(image_tokens)

    def _check_token_values(self, image_tokens: torch.Tensor) -> None:
        codebook_size = self.config.codebook_size
        if image_tokens.numel() and (int(image_tokens.min()) < 0 or int(image_tokens.max()) >= codebook_size):
            raise ValueError(
                f"token ids must lie in [0, {codebook_size - 1}] (codebook_size={codebook_size}); got "
                f"values from {int(image_tokens.min())} to {int(image_tokens.max())}. Were they made by another "
                "tokenizer?"
            )

    def _flatten_tokens(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """(B, h, w[, t]) or (B, h*w[, t]) ids -> (B, h*w, t), with clear errors for a dtype or shape that does not
        fit. Reads shapes only, never values: safe under torch.compile and torch.export."""
        config = self.config
        if image_tokens.is_floating_point() or image_tokens.is_complex():
            raise TypeError(f"image_tokens must be integer token ids, got {image_tokens.dtype}")
        per_position = config.tokens_per_position
        grid_dims = image_tokens.ndim - 1 - (1 if per_position > 1 else 0)
        positions = math.prod(image_tokens.shape[1 : 1 + grid_dims]) if grid_dims > 0 else 0
        if (
            grid_dims not in (1, 2)
            or positions != config.num_positions
            or (per_position > 1 and image_tokens.shape[-1] != per_position)
        ):
            height, width = config.grid_size
            expected = f"(batch, {height}, {width}) or (batch, {height * width})"
            if per_position > 1:
                expected = expected.replace(")", f", {per_position})")
            raise ValueError(
                f"image_tokens of shape {tuple(image_tokens.shape)} do not fit this classifier, which expects "
                f"{expected}: a {height}x{width} grid. Tokenize images of the size the tokenizer was trained on."
            )
        return image_tokens.reshape(image_tokens.shape[0], config.num_positions, per_position).long()


def values_are_cheap_to_read(tensor: torch.Tensor) -> bool:
    """Whether a forward may read `tensor`'s values to validate them: only in eager mode (under torch.compile or
    torch.export a value read is a data-dependent branch: a graph break, or an export error) and only for a tensor
    in host memory (on an accelerator it is a host-device sync that stalls the stream)."""
    return tensor.device.type == "cpu" and not torch.compiler.is_compiling()


def save_image_processor(image_processor: Any, save_directory: str | os.PathLike) -> Path:
    """Save the tokenizer's image processor into a classifier folder, with its code (`image_processing_vqgan.py`,
    named in `auto_map`), so that `AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)` loads it
    where hf_vq is not installed. Used for the token-ViT and for transformers' own ViT trained on the same images."""
    image_processor.save_pretrained(save_directory)
    return Path(save_directory) / "preprocessor_config.json"


__all__ = [
    "TokenViTForImageClassification",
    "TokenViTPreTrainedModel",
    "save_image_processor",
    "values_are_cheap_to_read",
]
