"""`hf-vq train-classifier` on the shared training machinery (`loop.py`: Accelerator setup, `checkpoint-<step>`
folders, exact resume, logging, progress bar, timing): this module only says what a step computes (the
classification loss) and how the model is evaluated (top-1 / top-5 accuracy).

One loop trains both models of the comparison: the token ViT (`TokenViTForImageClassification` on cached token
grids) and the pixel-ViT reference (transformers' `ViTForImageClassification` with the same width, depth, heads
and MLP, on patches of the tokenizer's downsampling factor, hence the same sequence length).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader

from ..hub.model_card import TOP5_MIN_CLASSES
from ..models.token_vit import TokenViTForImageClassification
from .args import ClassifierTrainingConfig
from .checkpointing import TrainingState
from .end_of_run import close_run, finish_run, save_final_folder
from .loop import build_accelerator, resume_if_asked, start_trackers, train_single_model
from .optimization import build_single_model_optimization
from .run_summary import run_summary
from .token_data import TokenData, build_token_data, load_tokenizer, tokenizer_reference

logger = logging.getLogger(__name__)

SHARED_VIT_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "layer_norm_eps",
    "initializer_range",
)


def run_classifier_training(config: ClassifierTrainingConfig) -> dict[str, Any]:
    """See `train_classifier.train_classifier`."""
    from ..hub import check_push_arguments, check_tokenizer_for_push

    check_push_arguments(config)  # before hours of training, not after
    check_tokenizer_for_push(config, reads_tokenizer=config.model_type == "token_vit")
    accelerator = build_accelerator(config)
    set_seed(config.seed)
    tokenizer, processor = load_tokenizer(config.tokenizer_name_or_path, accelerator.device, revision=config.revision)
    with accelerator.main_process_first():
        data = build_token_data(
            config, tokenizer, processor, encode=config.model_type == "token_vit", device=accelerator.device
        )
    accelerator.print(
        f"encoded data: {len(data.train)} train / {len(data.eval) if data.eval else 0} eval rows, "
        f"cached in {data.cache_files}"
    )
    model = build_model(config, tokenizer, processor, data.id2label)
    model.train()
    optimizer, scheduler, train_loader, max_steps = build_single_model_optimization(
        config, model, data.train, accelerator.num_processes
    )
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    eval_loader = accelerator.prepare(DataLoader(data.eval, batch_size=config.eval_batch_size)) if data.eval else None
    state = TrainingState()
    accelerator.register_for_checkpointing(state)
    resume_if_asked(config, accelerator, state)
    start_trackers(config, accelerator)
    accelerator.print(
        run_summary(
            examples=len(data.train),
            batch_size_per_process=config.train_batch_size,
            num_processes=accelerator.num_processes,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            max_train_steps=max_steps,
            mixed_precision=accelerator.mixed_precision,
            start_step=state.global_step,
            models={config.model_type: model},
        )
    )
    periodic_evaluation = (lambda step: evaluate(accelerator, model, eval_loader)) if eval_loader is not None else None
    train_single_model(
        config,
        accelerator,
        model,
        optimizer,
        scheduler,
        train_loader,
        state,
        max_steps,
        classification_loss,
        evaluate=periodic_evaluation,
    )
    return finish(config, accelerator, model, processor, data, state, eval_loader)


def build_model(
    config: ClassifierTrainingConfig, tokenizer: nn.Module, processor, id2label: dict[int, str]
) -> nn.Module:
    labels = {"num_labels": len(id2label), "id2label": id2label, "label2id": {name: i for i, name in id2label.items()}}
    if config.model_type == "pixel_vit":
        return build_pixel_vit(config.model_config, tokenizer, processor, labels)
    init = config.init_from_codebook and tokenizer.config.tokens_per_position == 1
    if config.init_from_codebook and not init:
        logger.warning("--init_from_codebook needs one id per position (a 'vector' tokenizer): embedding from scratch")
    reference = tokenizer_reference(config.tokenizer_name_or_path)
    # The revision the tokenizer was loaded at is the one the classifier reads (a push keeps it pinned).
    pinned = {"tokenizer_revision": config.revision} if config.revision else {}
    return TokenViTForImageClassification.from_tokenizer(
        reference, tokenizer=tokenizer, init_from_codebook=init, **{**config.model_config, **labels, **pinned}
    )


def build_pixel_vit(
    model_config: dict[str, Any], tokenizer: nn.Module, processor, labels: dict[str, Any]
) -> nn.Module:
    """transformers' ViT of the token ViT's size; patch = the tokenizer's downsampling factor (same sequence
    length)."""
    from transformers import ViTConfig, ViTForImageClassification

    from ..models.token_vit import TokenViTConfig

    defaults = TokenViTConfig()  # the token ViT's defaults, so that both models have the same size when unset
    shared = {name: model_config.get(name, getattr(defaults, name)) for name in SHARED_VIT_FIELDS}
    config = ViTConfig(
        image_size=tokenizer.config.image_size,
        patch_size=tokenizer.config.downsampling_factor,
        num_channels=tokenizer.config.num_channels,
        hidden_act="gelu",
        qkv_bias=True,
        **shared,
        **labels,
    )
    return ViTForImageClassification(config)


def classification_loss(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The step function of `train_single_model`: cross-entropy (computed by the model) and batch accuracy."""
    output = model(**batch)
    return output.loss, {"accuracy": _accuracy(output.logits, batch["labels"])}


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(-1) == labels).float().mean().detach()


@torch.no_grad()
def evaluate(accelerator: Accelerator, model, eval_loader) -> dict[str, float]:
    """Top-1 / top-5 accuracy (top-5 only with 6 classes or more) and mean loss over the whole held-out split (each
    process on its share; the predictions are gathered without the padding Accelerate adds to even out the shares)."""
    was_training = model.training
    model.eval()
    correct = correct_top5 = loss_sum = 0.0
    count = 0
    for batch in eval_loader:
        with accelerator.autocast():
            logits = model(**{key: value for key, value in batch.items() if key != "labels"}).logits.float()
        logits, labels = accelerator.gather_for_metrics((logits, batch["labels"]))
        top5 = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
        correct += float((top5[:, 0] == labels).sum())
        correct_top5 += float((top5 == labels[:, None]).any(-1).sum())
        loss_sum += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
        count += len(labels)
    model.train(was_training)
    metrics = {"accuracy": correct / count, "top5_accuracy": correct_top5 / count}
    if logits.shape[-1] < TOP5_MIN_CLASSES:  # the top 5 hold every class: 1 whatever the model, so not reported
        del metrics["top5_accuracy"]
    return metrics | {"eval_loss": loss_sum / count, "eval_examples": count}


def finish(
    config: ClassifierTrainingConfig,
    accelerator: Accelerator,
    model,
    processor,
    data: TokenData,
    state: TrainingState,
    eval_loader,
) -> dict[str, Any]:
    """The shared end of run (`end_of_run.py`): save the model with the tokenizer's processor, then evaluate it on
    the held-out split, write metrics.json and push if asked (a failed evaluation leaves the saved model in place)."""
    save_final_folder(
        config,
        accelerator,
        accelerator.unwrap_model(model),
        state.global_step,
        lambda folder: write_classifier_folder(accelerator.unwrap_model(model), processor, folder),
    )
    result = finish_run(
        config,
        accelerator,
        state,
        summary(config, accelerator, model, state, data),
        lambda: evaluate(accelerator, model, eval_loader) if eval_loader else {},
    )
    close_run(accelerator, config)
    return result


def write_classifier_folder(model: nn.Module, processor, folder: Path) -> None:
    """The classifier and the tokenizer's processor, `save_pretrained` layout (transformers' ViT has no processor
    argument to `save_pretrained`: the reference gets the processor written beside it)."""
    if isinstance(model, TokenViTForImageClassification):
        model.save_pretrained(folder, image_processor=processor)
    else:
        from ..models.token_vit import save_image_processor

        model.save_pretrained(folder)
        save_image_processor(processor, folder)


def summary(config: ClassifierTrainingConfig, accelerator: Accelerator, model, state: TrainingState, data: TokenData):
    split = config.eval_split or evaluated_split_name(config, data.eval, data.eval_split_name)
    return {
        "model_type": config.model_type,
        "tokenizer": config.tokenizer_name_or_path,
        "dataset": config.dataset_name or config.train_data_dir or config.token_dataset,
        "split": split,
        "num_parameters": sum(p.numel() for p in accelerator.unwrap_model(model).parameters()),
        "global_step": state.global_step,
        "train_steps": state.global_step,
        "epochs_completed": state.epoch,
        "images_seen": state.images_seen,
        "skipped_images": data.skipped_images,
        "train_batch_size": config.train_batch_size,
        "train_seconds": round(state.train_seconds, 2),
        "num_processes": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
    }


def evaluated_split_name(config: ClassifierTrainingConfig, evaluation, known_name: str | None = None) -> str | None:
    """The name of the split evaluated on when `--eval_split` was not given: the dataset's own test or validation
    split, or, when none exists and part of the training data was held out (it keeps the train split's name), say so
    rather than call it "test". `known_name` names it where the rows do not (a token dataset read from disk)."""
    if evaluation is None:
        return None
    name = str(known_name or getattr(evaluation, "split", None) or "test")
    return f"{name} (held-out part)" if name == config.train_split else name
