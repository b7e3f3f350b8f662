"""The MaskGIT prior as a `TokenPrior`: `MaskGITModel` trained to fill in masked tokens, sampled by
`MaskGITPipeline` with MaskGIT's scheduler.

Its training loss masks a share of each token grid drawn from the cosine schedule (`mask_tokens`), replaces
`label_dropout` of the class labels by the null class (the unconditional half of classifier-free guidance), and
takes the prior's cross-entropy on the masked positions.

Example:
    >>> from hf_vq.training.priors import get_prior_spec
    >>> spec = get_prior_spec("maskgit")
    >>> spec.pipeline_class
    'hf_vq.pipelines.maskgit:MaskGITPipeline'
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import TokenPrior


class MaskGITPrior(TokenPrior):
    name = "maskgit"
    config_class = "hf_vq.models.maskgit.configuration_maskgit:MaskGITConfig"
    model_class = "hf_vq.models.maskgit:MaskGITModel"
    pipeline_class = "hf_vq.pipelines.maskgit:MaskGITPipeline"
    card_template = "prior.md.j2"

    def check_tokenizer(self, tokenizer: nn.Module) -> None:
        from ...models.maskgit.configuration_maskgit import check_single_codebook

        check_single_codebook(tokenizer.config)

    def build_model(
        self,
        tokenizer: nn.Module,
        tokenizer_reference: str,
        model_config: dict[str, Any],
        id2label: dict[int, str],
        tokenizer_revision: str | None = None,
    ) -> nn.Module:
        from ...models.maskgit import MaskGITModel

        config = dict(model_config)
        config["num_classes"] = len(id2label)
        if tokenizer_revision:
            config["tokenizer_revision"] = tokenizer_revision
        if id2label:
            config["id2label"] = {int(key): value for key, value in id2label.items()}
        return MaskGITModel.from_tokenizer(tokenizer_reference, tokenizer=tokenizer, **config)

    def training_loss(self, model_config: Any, label_dropout: float | None) -> MaskedTokenLoss:
        return MaskedTokenLoss(model_config, label_dropout)

    def build_pipeline(self, tokenizer: nn.Module, prior: nn.Module):
        from ...pipelines.maskgit import MaskGITPipeline
        from ...schedulers import MaskGITScheduler

        scheduler = MaskGITScheduler(mask_token_id=prior.config.mask_token_id)
        return MaskGITPipeline(vqgan=tokenizer, transformer=prior, scheduler=scheduler)

    def sampling_arguments(self, config: Any) -> dict[str, Any]:
        return {"num_inference_steps": config.num_inference_steps}


class MaskedTokenLoss:
    """The step function of the loop: mask a share of each token grid drawn from the cosine schedule (`mask_tokens`),
    replace `label_dropout` of the class labels by the null class (None for an unconditional prior), and return
    the prior's cross-entropy on the masked positions with the accuracy there (`masked_accuracy`)."""

    def __init__(self, config: Any, label_dropout: float | None) -> None:
        self.mask_token_id = config.mask_token_id
        self.null_class_id = config.null_class_id
        self.label_dropout = label_dropout

    def __call__(self, model: nn.Module, batch: dict, generator: torch.Generator | None = None):
        from ...schedulers.scheduling_maskgit import mask_tokens

        tokens = batch["image_tokens"].long()
        inputs, targets = mask_tokens(tokens, self.mask_token_id, generator=generator)
        class_labels = None
        if self.label_dropout is not None:
            class_labels = drop_labels(batch["labels"], self.null_class_id, self.label_dropout, generator)
        output = model(inputs, class_labels=class_labels, labels=targets)
        grid_shape = output.logits.shape[:-1]
        masked = (targets != -100).reshape(grid_shape)
        correct = (output.logits.argmax(-1) == targets.reshape(grid_shape)) & masked
        return output.loss, {"masked_accuracy": (correct.sum() / masked.sum().clamp(min=1)).detach()}


def drop_labels(
    labels: torch.Tensor, null_class_id: int, probability: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """`labels` with each entry replaced by `null_class_id` with the given probability."""
    if probability <= 0:
        return labels
    draws = torch.rand(labels.shape, generator=generator, device=generator.device if generator else labels.device)
    return torch.where(draws.to(labels.device) < probability, torch.full_like(labels, null_class_id), labels)


__all__ = ["MaskGITPrior", "MaskedTokenLoss", "drop_labels"]
