"""PyTorch MaskGIT token prior (Chang et al., "MaskGIT: Masked Generative Image Transformer", CVPR 2022).

A bidirectional transformer reads the token grid of an hf_vq image tokenizer in which some positions hold the mask id,
plus a class label, and predicts the codes of every position. Sampling (see `MaskGITScheduler`) starts from a fully
masked grid and fixes the most confident predictions step by step.

The blocks are our own rather than transformers' BERT/ViT internals, which are renamed between releases. They are the
token ViT's, copied (`# Copied from` markers, kept identical by `utils/check_copies.py` and its test) rather than
imported: this file must also run on its own as remote code (`trust_remote_code=True`), where it can import only the
files saved beside it, and a MaskGIT folder carries only its own two files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_maskgit import MaskGITConfig, check_single_codebook

# Cross-entropy ignores this label, as everywhere in transformers.
IGNORE_INDEX = -100


@dataclass
class MaskGITModelOutput(ModelOutput):
    r"""
    Output of [`MaskGITModel.forward`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, returned when `labels` are given):
            Mean cross-entropy over the positions whose label is not -100 (the masked ones).
        logits (`torch.FloatTensor` of shape `(batch_size, grid_height * grid_width, codebook_size)`):
            Scores of every code at every grid position (never of the mask id).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None


# Copied from hf_vq.models.vqgan.modeling_vqgan.eager_attention_forward
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


# Copied from hf_vq.models.token_vit.modeling_token_vit.TokenViTAttention with TokenViT->MaskGIT
class MaskGITAttention(nn.Module):
    """Multi-head self-attention through transformers' attention interface: the kernel `config._attn_implementation`
    names ("sdpa" by default, or "eager"), or the eager one for a call that asks for the attention weights."""

    is_causal = False  # every position sees every other: read by transformers' sdpa kernel

    def __init__(self, config: MaskGITConfig):
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


# Copied from hf_vq.models.token_vit.modeling_token_vit.TokenViTLayer with TokenViT->MaskGIT
class MaskGITLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, config: MaskGITConfig):
        super().__init__()
        self.norm_before_attention = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = MaskGITAttention(config)
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


# Copied from hf_vq.models.token_vit.modeling_token_vit.values_are_cheap_to_read
def values_are_cheap_to_read(tensor: torch.Tensor) -> bool:
    """Whether a forward may read `tensor`'s values to validate them: only in eager mode (under torch.compile or
    torch.export a value read is a data-dependent branch: a graph break, or an export error) and only for a tensor
    in host memory (on an accelerator it is a host-device sync that stalls the stream)."""
    return tensor.device.type == "cpu" and not torch.compiler.is_compiling()


class MaskGITEmbeddings(nn.Module):
    """Class token followed by the grid's token embeddings, plus learned position embeddings.

    The class label is a token prepended to the sequence (as in MaskGIT's class-conditional model) rather than a
    vector added to every position: each position attends to it with its own weight, for the price of one extra
    position of the 64-1024 the grid has.
    """

    def __init__(self, config: MaskGITConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        # One more row than classes: the null label of unconditional samples and classifier-free guidance.
        self.class_embedding = nn.Embedding(config.num_classes + 1, config.hidden_size)
        self.position_embedding = nn.Parameter(torch.zeros(1, config.num_positions + 1, config.hidden_size))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, image_tokens: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:
        """image_tokens (B, L) with mask ids, class_labels (B,) -> (B, 1 + L, hidden_size)."""
        embedded = torch.cat([self.class_embedding(class_labels)[:, None], self.token_embedding(image_tokens)], dim=1)
        return self.dropout(self.norm(embedded + self.position_embedding))


class MaskGITPreTrainedModel(PreTrainedModel):
    config: MaskGITConfig
    config_class = MaskGITConfig
    base_model_prefix = "maskgit"
    main_input_name = "image_tokens"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MaskGITLayer"]
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Initialise every parameter (loading only initialises the tensors a checkpoint lacks)."""
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
        elif isinstance(module, MaskGITEmbeddings):
            init.trunc_normal_(module.position_embedding, std=std)


class MaskGITModel(MaskGITPreTrainedModel):
    r"""
    The MaskGIT prior: masked token grid + class label -> logits over the tokenizer's codes at every position.

    Example:

    ```python
    >>> import torch
    >>> from hf_vq import MaskGITConfig, MaskGITModel
    >>> from hf_vq.schedulers.scheduling_maskgit import mask_tokens
    >>> config = MaskGITConfig(codebook_size=32, grid_height=8, grid_width=8, num_classes=10, hidden_size=32,
    ...                        num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    >>> model = MaskGITModel(config)
    >>> tokens = torch.randint(0, 32, (2, 8, 8))
    >>> inputs, labels = mask_tokens(tokens, config.mask_token_id)
    >>> output = model(inputs, class_labels=torch.tensor([3, 7]), labels=labels)
    >>> output.logits.shape, output.loss.shape
    (torch.Size([2, 64, 32]), torch.Size([]))

    ```
    """

    def __init__(self, config: MaskGITConfig):
        super().__init__(config)
        self.embeddings = MaskGITEmbeddings(config)
        self.layers = nn.ModuleList(MaskGITLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        # Over the codes only: the mask id is an input, never a prediction.
        self.head = nn.Linear(config.hidden_size, config.codebook_size)
        self.post_init()

    @classmethod
    def from_tokenizer(
        cls, tokenizer_name_or_path: str | os.PathLike, tokenizer: nn.Module | None = None, **config_kwargs: Any
    ) -> "MaskGITModel":
        """A new (untrained) prior fitted to a tokenizer: codebook size, token grid and the tokenizer's reference come
        from it; `config_kwargs` set the transformer's size, `num_classes` and `tokenizer_revision`. `tokenizer` is the
        loaded `VQGANModel` when the caller has it already (otherwise it is loaded from `tokenizer_name_or_path`).

        Example:

        ```python
        >>> from hf_vq import MaskGITModel
        >>> prior = MaskGITModel.from_tokenizer("outputs/tokenizer", num_classes=10, hidden_size=128)  # doctest: +SKIP
        ```
        """
        if tokenizer is None:
            from transformers import AutoModel

            revision = config_kwargs.get("tokenizer_revision")
            tokenizer = AutoModel.from_pretrained(
                tokenizer_name_or_path, **({"revision": revision} if revision else {})
            )
        config = MaskGITConfig.from_tokenizer_config(
            tokenizer.config, os.fspath(tokenizer_name_or_path), **config_kwargs
        )
        return cls(config)

    def check_tokenizer(self, tokenizer: Any) -> None:
        """Raise a `ValueError` naming both values when `tokenizer` (a `VQGANModel` or its config) does not make the
        tokens this prior was built for: another codebook size, another token grid, or several ids per position."""
        tokenizer_config = getattr(tokenizer, "config", tokenizer)
        check_single_codebook(tokenizer_config)
        grid = tuple(tokenizer_config.token_grid_size)
        config = self.config
        expected = f"this prior (tokenizer_name_or_path={config.tokenizer_name_or_path!r})"
        if tokenizer_config.codebook_size != config.codebook_size:
            raise ValueError(
                f"the tokenizer has codebook_size={tokenizer_config.codebook_size} but {expected} was trained on "
                f"codebook_size={config.codebook_size} tokens; use the tokenizer the prior was trained on"
            )
        if grid != (config.grid_height, config.grid_width):
            raise ValueError(
                f"the tokenizer makes a {grid[0]}x{grid[1]} token grid (image_size={tokenizer_config.image_size}, "
                f"downsampling factor {tokenizer_config.downsampling_factor}) but {expected} was trained on "
                f"{config.grid_height}x{config.grid_width} grids; use the tokenizer the prior was trained on"
            )

    def forward(
        self,
        image_tokens: torch.LongTensor,
        class_labels: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> MaskGITModelOutput | tuple:
        r"""
        image_tokens (`torch.LongTensor` of shape `(batch_size, grid_height, grid_width)`):
            Code ids (or of shape `(batch_size, num_positions)`), `config.mask_token_id` at the positions to predict.
            Ids (and labels) out of range raise a `ValueError` when the tensors are in host memory and the call is
            eager; on an accelerator or under `torch.compile` / `torch.export` reading them would cost a host-device
            sync or a data-dependent branch, so call `check_inputs` yourself for ids from outside (the pipeline
            checks its class labels itself).
        class_labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Class of each sample in `[0, num_classes]`, `num_classes` being the null label; `None` uses the null label.
        labels (`torch.LongTensor` of the shape of `image_tokens`, *optional*):
            Target codes, -100 where no loss is taken (see `hf_vq.schedulers.scheduling_maskgit.mask_tokens`).
        """
        tokens = self._flatten_tokens(image_tokens)
        class_labels = self._class_labels_or_null(class_labels, tokens.shape[0], tokens.device)
        if labels is not None:
            self._check_labels_shape(labels, image_tokens.shape)
        if all(values_are_cheap_to_read(t) for t in (image_tokens, class_labels, labels) if t is not None):
            self._check_values(image_tokens, class_labels, labels)
        hidden_states = self.embeddings(tokens, class_labels)
        for layer in self.layers:
            hidden_states, _ = layer(hidden_states)
        # The class position predicts nothing.
        logits = self.head(self.norm(hidden_states[:, 1:]))
        loss = self._loss(logits, labels) if labels is not None else None
        output = MaskGITModelOutput(loss=loss, logits=logits)
        return_dict = return_dict if return_dict is not None else getattr(self.config, "return_dict", True)
        return output if return_dict else output.to_tuple()

    def get_input_embeddings(self) -> nn.Embedding:
        """The token embedding: one row per code, then the mask id's."""
        return self.embeddings.token_embedding

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        if value.num_embeddings != self.config.vocab_size:
            raise ValueError(
                f"the token embedding must have codebook_size + 1 = {self.config.vocab_size} rows (the codes, then "
                f"the mask id), got {value.num_embeddings}; build a prior for the new tokenizer with from_tokenizer "
                "instead"
            )
        self.embeddings.token_embedding = value

    def check_inputs(
        self,
        image_tokens: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> None:
        """Raise a clear error unless the arguments of `forward` fit this prior, reading their values too (a
        host-device sync on an accelerator, which `forward` skips there): for ids that come from outside."""
        tokens = self._flatten_tokens(image_tokens)
        class_labels = self._class_labels_or_null(class_labels, tokens.shape[0], tokens.device)
        if labels is not None:
            self._check_labels_shape(labels, image_tokens.shape)
        self._check_values(image_tokens, class_labels, labels)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.reshape(labels.shape[0], -1).to(logits.device)
        # In float32: a bf16 log-softmax over the codebook loses the precision the loss needs.
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)

    def _flatten_tokens(self, image_tokens: Any) -> torch.Tensor:
        """(B, h, w) or (B, h*w) ids -> (B, h*w) long, with clear errors for a type or shape that does not fit.
        Reads shapes only, never values: safe under torch.compile and torch.export."""
        config = self.config
        if not isinstance(image_tokens, torch.Tensor) or image_tokens.is_floating_point() or image_tokens.is_complex():
            raise TypeError(
                f"image_tokens must be an integer torch.Tensor of code ids, got "
                f"{image_tokens.dtype if isinstance(image_tokens, torch.Tensor) else type(image_tokens).__name__}"
            )
        shape = tuple(image_tokens.shape)
        if shape[1:] not in ((config.grid_height, config.grid_width), (config.num_positions,)) or shape[0] == 0:
            raise ValueError(
                f"image_tokens of shape {shape} do not fit this prior, which expects (batch, {config.grid_height}, "
                f"{config.grid_width}) or (batch, {config.num_positions}): the token grid of its tokenizer"
            )
        return image_tokens.reshape(shape[0], config.num_positions).long()

    def _class_labels_or_null(self, class_labels: Any, batch: int, device: torch.device) -> torch.Tensor:
        """The class labels as long, on `device`; the null label for every sample when `None`. Checks shape only."""
        if class_labels is None:
            return torch.full((batch,), self.config.null_class_id, dtype=torch.long, device=device)
        if (
            not isinstance(class_labels, torch.Tensor)
            or class_labels.is_floating_point()
            or class_labels.shape != (batch,)
        ):
            got = tuple(class_labels.shape) if isinstance(class_labels, torch.Tensor) else type(class_labels).__name__
            raise ValueError(
                f"class_labels must be an integer tensor of shape ({batch},) (one label per sample), got {got}"
            )
        return class_labels.to(device=device, dtype=torch.long)

    @staticmethod
    def _check_labels_shape(labels: Any, tokens_shape: torch.Size) -> None:
        if not isinstance(labels, torch.Tensor) or labels.shape != tokens_shape or labels.is_floating_point():
            raise ValueError(
                f"labels must be integer ids of the shape of image_tokens {tuple(tokens_shape)}, got "
                f"{tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__}"
            )

    def _check_values(
        self, image_tokens: torch.Tensor, class_labels: torch.Tensor, labels: torch.Tensor | None
    ) -> None:
        """The value checks of `check_inputs`: ids in range, class labels in range, labels codes or -100."""
        config = self.config
        if int(image_tokens.min()) < 0 or int(image_tokens.max()) > config.mask_token_id:
            raise ValueError(
                f"image_tokens must be code ids in [0, {config.codebook_size - 1}] or the mask id "
                f"{config.mask_token_id}, got values from {int(image_tokens.min())} to {int(image_tokens.max())}. "
                "Were they made by another tokenizer?"
            )
        if int(class_labels.min()) < 0 or int(class_labels.max()) > config.null_class_id:
            what = (
                "an unconditional prior (num_classes=0) takes no class labels"
                if config.num_classes == 0
                else (
                    f"class labels must lie in [0, {config.num_classes - 1}] (or {config.null_class_id}, the null "
                    "label)"
                )
            )
            raise ValueError(f"{what}; got labels from {int(class_labels.min())} to {int(class_labels.max())}")
        valid = labels[labels != IGNORE_INDEX] if labels is not None else None
        if valid is not None and valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= config.codebook_size):
            raise ValueError(
                f"labels must be code ids in [0, {config.codebook_size - 1}] or -100 (no loss), got values from "
                f"{int(valid.min())} to {int(valid.max())}"
            )


__all__ = ["MaskGITModel", "MaskGITModelOutput", "MaskGITPreTrainedModel"]
