"""The autoregressive prior as a `TokenPrior`: transformers' own `LlamaForCausalLM` (sized by the config's `model:`
section, its vocabulary and sequence length from the tokenizer, its classes from the data), trained with next-token
cross-entropy on the codes of `[class token] + raster-order grid` with label dropout to the null class, sampled by
`AutoregressivePipeline` through `generate()`.

The sequence layout and the prior's config fields are the pipeline's (`hf_vq/pipelines/autoregressive/`): what is
trained here is what the pipeline samples.

Example:
    >>> from hf_vq.training.priors import get_prior_spec
    >>> spec = get_prior_spec("autoregressive")
    >>> spec.pipeline_class
    'hf_vq.pipelines.autoregressive:AutoregressivePipeline'
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from ...pipelines.autoregressive.pipeline_autoregressive import (
    AutoregressivePipeline,
    autoregressive_prior_fields,
    check_tokenizer,
)
from . import TokenPrior
from .maskgit import drop_labels

# A small Llama for a tokenizer's grid; the config's model: section overrides any of these.
DEFAULT_MODEL_CONFIG = {
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "intermediate_size": 688,
    "tie_word_embeddings": False,
}


class AutoregressivePrior(TokenPrior):
    name = "autoregressive"
    config_class = "transformers:LlamaConfig"
    model_class = "transformers:LlamaForCausalLM"
    pipeline_class = "hf_vq.pipelines.autoregressive:AutoregressivePipeline"
    card_template = "prior.md.j2"

    def check_tokenizer(self, tokenizer: nn.Module) -> None:
        autoregressive_prior_fields(tokenizer.config, num_classes=0)  # refuses grouped / residual tokenizers

    def build_model(
        self,
        tokenizer: nn.Module,
        tokenizer_reference: str,
        model_config: dict[str, Any],
        id2label: dict[int, str],
        tokenizer_revision: str | None = None,
    ) -> nn.Module:
        return build_autoregressive_prior(model_config, tokenizer, tokenizer_reference, id2label, tokenizer_revision)

    def training_loss(self, model_config: Any, label_dropout: float | None) -> NextTokenLoss:
        return NextTokenLoss(model_config, label_dropout)

    def build_pipeline(self, tokenizer: nn.Module, prior: nn.Module) -> AutoregressivePipeline:
        return AutoregressivePipeline(vqgan=tokenizer, transformer=prior)

    def sampling_arguments(self, config: Any) -> dict[str, Any]:
        return {"top_k": config.top_k, "top_p": config.top_p}

    def check_model_tokenizer(self, model: nn.Module, tokenizer: nn.Module) -> None:
        check_tokenizer(model.config, tokenizer)  # transformers' Llama has no check of its own


def build_autoregressive_prior(
    model_config: dict[str, Any],
    tokenizer: nn.Module,
    tokenizer_name_or_path: str,
    id2label: dict[int, str],
    tokenizer_revision: str | None = None,
) -> LlamaForCausalLM:
    """A new prior: Llama sized by `model_config`, laid out for `tokenizer`'s codes and `len(id2label)` classes (the
    data's; a `num_classes` in `model_config` only says whether the prior is class-conditional)."""
    fields = autoregressive_prior_fields(tokenizer.config, len(id2label), tokenizer_name_or_path, tokenizer_revision)
    sizes = {key: value for key, value in model_config.items() if key != "num_classes"}
    config = LlamaConfig(**{**DEFAULT_MODEL_CONFIG, **sizes, **fields})
    if id2label:
        config.id2label = {int(index): name for index, name in id2label.items()}
    return LlamaForCausalLM(config)


def prior_sequences(image_tokens: torch.Tensor, class_labels: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """`[class token] + raster-order codes` per grid: `(batch, 1 + height * width)`. Class ids (the null class
    included) become tokens after the codebook."""
    codes = image_tokens.reshape(image_tokens.shape[0], -1).long()
    return torch.cat([(class_labels.long() + codebook_size)[:, None].to(codes.device), codes], dim=1)


class NextTokenLoss:
    """The step function of the loop for the autoregressive prior: replace `label_dropout` of the class labels by the
    null class (None for an unconditional prior, whose sequences all start with the null token), and return the
    prior's next-token cross-entropy on the codes (the class position is never a target)."""

    def __init__(self, config: Any, label_dropout: float | None) -> None:
        self.codebook_size = config.codebook_size
        self.null_class_id = config.num_classes
        self.label_dropout = label_dropout

    def __call__(self, model: nn.Module, batch: dict, generator: torch.Generator | None = None):
        tokens = batch["image_tokens"]
        if self.label_dropout is None:
            labels = torch.full((tokens.shape[0],), self.null_class_id, dtype=torch.long, device=tokens.device)
        else:
            labels = drop_labels(batch["labels"], self.null_class_id, self.label_dropout, generator)
        sequences = prior_sequences(tokens, labels, self.codebook_size)
        targets = sequences.clone()
        targets[:, 0] = -100  # transformers shifts: position t's logits predict token t + 1; the class is given
        output = model(input_ids=sequences, labels=targets)
        predicted = output.logits[:, :-1, : self.codebook_size].argmax(dim=-1)
        accuracy = (predicted == sequences[:, 1:]).float().mean()
        return output.loss, {"next_token_accuracy": accuracy.detach()}


__all__ = [
    "AutoregressivePrior",
    "DEFAULT_MODEL_CONFIG",
    "NextTokenLoss",
    "build_autoregressive_prior",
    "prior_sequences",
]
