"""`hf-vq train-classifier` on the shared training machinery (`loop.py`: Accelerator setup, `checkpoint-<step>`
folders, exact resume, logging, progress bar, timing): this module only says what a step computes (the
classification loss) and how the model is evaluated (top-1 / top-5 accuracy).

One loop trains both models of the comparison: the token ViT (`TokenViTForImageClassification` on cached token
grids) and the pixel-ViT reference (transformers' `ViTForImageClassification` with the same width, depth, heads
and MLP, on patches of the tokenizer's downsampling factor, hence the same sequence length).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader

from ..errors import HfVqUserError
from ..models.token_vit import TokenViTForImageClassification
from ..models.vqgan import VQGANImageProcessor
from .checkpointing import TrainingState
from .classifier_data import ClassifierData, build_classifier_data
from .divergence import ensure_finite_weights
from .final_save import save_final_folder
from .run_lock import release_run_lock
from .loop import (
    METRICS_FILE,
    SECRET_FLAGS,
    build_accelerator,
    final_evaluation,
    publish_final_metrics,
    resume_if_asked,
    start_trackers,
    train_single_model,
)
from .optimization import build_lr_scheduler
from .run_summary import run_summary

logger = logging.getLogger(__name__)

TRAINING_CONFIG_FILE = "training_config.json"


class MissingTokenizerError(HfVqUserError, OSError):
    """The tokenizer named by --tokenizer_name_or_path cannot be loaded."""


SHARED_VIT_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "hidden_dropout_prob", "attention_probs_dropout_prob", "layer_norm_eps", "initializer_range")


def run_classifier_training(args: argparse.Namespace) -> dict[str, Any]:
    """See `train_classifier.train_classifier`."""
    from ..hub import check_push_arguments, check_tokenizer_for_push

    check_push_arguments(args)  # before hours of training, not after
    check_tokenizer_for_push(args, reads_tokenizer=args.model_type == "token_vit")
    accelerator = build_accelerator(args)
    set_seed(args.seed)
    tokenizer, processor = load_tokenizer(args.tokenizer_name_or_path, accelerator.device, revision=args.revision)
    with accelerator.main_process_first():
        data = build_classifier_data(args, tokenizer, processor, encode=args.model_type == "token_vit",
                                     device=accelerator.device)
    accelerator.print(f"encoded data: {len(data.train)} train / {len(data.eval) if data.eval else 0} eval rows, "
                      f"cached in {data.cache_files}")
    model = build_model(args, tokenizer, processor, data.id2label)
    model.train()
    optimizer, scheduler, train_loader, max_steps = build_optimization(args, model, data, accelerator)
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    eval_loader = accelerator.prepare(DataLoader(data.eval, batch_size=args.eval_batch_size)) if data.eval else None
    state = TrainingState()
    accelerator.register_for_checkpointing(state)
    resume_if_asked(args, accelerator, state)
    start_trackers(args, accelerator)
    accelerator.print(run_summary(
        examples=len(data.train), batch_size_per_process=args.train_batch_size, num_processes=accelerator.num_processes,
        gradient_accumulation_steps=args.gradient_accumulation_steps, max_train_steps=max_steps,
        mixed_precision=accelerator.mixed_precision, start_step=state.global_step, models={args.model_type: model},
    ))
    periodic_evaluation = (lambda step: evaluate(accelerator, model, eval_loader)) if eval_loader is not None else None
    train_single_model(args, accelerator, model, optimizer, scheduler, train_loader, state, max_steps,
                       classification_loss, evaluate=periodic_evaluation)
    return finish(args, accelerator, model, processor, data, state, eval_loader)


def load_tokenizer(tokenizer_name_or_path: str, device: torch.device,
                   revision: str | None = None) -> tuple[nn.Module, VQGANImageProcessor]:
    """The frozen tokenizer and its image processor (the processor the classifier folder will carry)."""
    from transformers import AutoModel

    try:
        tokenizer = AutoModel.from_pretrained(tokenizer_name_or_path, revision=revision)
        processor = VQGANImageProcessor.from_pretrained(tokenizer_name_or_path, revision=revision)
    except OSError as error:  # transformers' "not a local folder nor a model on the Hub", offline, no such revision
        raise MissingTokenizerError(
            f"cannot load the tokenizer --tokenizer_name_or_path {tokenizer_name_or_path!r}"
            f"{f' (revision {revision!r})' if revision else ''}: {' '.join(str(error).split())}"
        ) from error
    return tokenizer.eval().requires_grad_(False).to(device), processor


def build_model(args, tokenizer: nn.Module, processor, id2label: dict[int, str]) -> nn.Module:
    labels = {"num_labels": len(id2label), "id2label": id2label, "label2id": {name: i for i, name in id2label.items()}}
    if args.model_type == "pixel_vit":
        return build_pixel_vit(args.model_config, tokenizer, processor, labels)
    init = args.init_from_codebook and tokenizer.config.tokens_per_position == 1
    if args.init_from_codebook and not init:
        logger.warning("--init_from_codebook needs one id per position (a 'vector' tokenizer): embedding from scratch")
    reference = _tokenizer_reference(args.tokenizer_name_or_path)
    # The revision the tokenizer was loaded at is the one the classifier reads (a push keeps it pinned).
    pinned = {"tokenizer_revision": args.revision} if getattr(args, "revision", None) else {}
    return TokenViTForImageClassification.from_tokenizer(
        reference, tokenizer=tokenizer, init_from_codebook=init, **{**args.model_config, **labels, **pinned}
    )


def build_pixel_vit(model_config: dict[str, Any], tokenizer: nn.Module, processor, labels: dict[str, Any]) -> nn.Module:
    """transformers' ViT of the token ViT's size; patch = the tokenizer's downsampling factor (same sequence length)."""
    from transformers import ViTConfig, ViTForImageClassification

    from ..models.token_vit import TokenViTConfig

    defaults = TokenViTConfig()  # the token ViT's defaults, so that both models have the same size when unset
    shared = {name: model_config.get(name, getattr(defaults, name)) for name in SHARED_VIT_FIELDS}
    config = ViTConfig(
        image_size=processor.size["height"], patch_size=tokenizer.config.downsampling_factor,
        num_channels=tokenizer.config.num_channels, hidden_act="gelu", qkv_bias=True, **shared, **labels,
    )
    return ViTForImageClassification(config)


def _tokenizer_reference(name_or_path: str) -> str:
    """A local folder is recorded as an absolute path (the classifier folder may be opened from elsewhere)."""
    path = Path(name_or_path)
    return str(path.resolve()) if path.is_dir() else name_or_path


def build_optimization(args, model: nn.Module, data: ClassifierData, accelerator: Accelerator):
    # A generator of its own: the shuffle depends on the seed alone (and on the epoch through set_epoch).
    generator = torch.Generator().manual_seed(args.seed)
    train_loader = DataLoader(data.train, batch_size=args.train_batch_size, shuffle=True, generator=generator,
                              num_workers=args.dataloader_num_workers, drop_last=len(data.train) > args.train_batch_size)
    max_steps = args.max_train_steps or args.num_train_epochs * max(
        1, len(train_loader) // (args.gradient_accumulation_steps * accelerator.num_processes))
    optimizer = torch.optim.AdamW(
        _decay_groups(model, args.adam_weight_decay), lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
    )
    scheduler = build_lr_scheduler(args, optimizer, max_steps, accelerator.num_processes)
    return optimizer, scheduler, train_loader, max_steps


def _decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only: norms, biases, the class token and positions are not decayed (as in ViT)."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 and "position" not in name and "cls_token" not in name else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def classification_loss(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The step function of `train_single_model`: cross-entropy (computed by the model) and batch accuracy."""
    output = model(**batch)
    return output.loss, {"accuracy": _accuracy(output.logits, batch["labels"])}


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(-1) == labels).float().mean().detach()


@torch.no_grad()
def evaluate(accelerator: Accelerator, model, eval_loader) -> dict[str, float]:
    """Top-1 / top-5 accuracy and mean loss over the whole held-out split (each process on its share; the
    predictions are gathered without the padding Accelerate adds to even out the shares)."""
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
    return {"accuracy": correct / count, "top5_accuracy": correct_top5 / count, "eval_loss": loss_sum / count,
            "eval_examples": count}


def finish(args, accelerator: Accelerator, model, processor, data: ClassifierData, state: TrainingState,
           eval_loader) -> dict[str, Any]:
    """Save the model with the tokenizer's processor and training_config.json first, then evaluate it on the
    held-out split, write metrics.json and push if asked (a failed evaluation leaves the saved model in place)."""
    output_dir = Path(args.output_dir).resolve()
    save_final_model(args, accelerator, model, processor, state, output_dir)
    training = summary(args, accelerator, model, state, data)
    metrics = final_evaluation(accelerator, lambda: evaluate(accelerator, model, eval_loader) if eval_loader else {},
                               output_dir, training)
    metrics = metrics | training
    metrics = publish_final_metrics(args, accelerator, output_dir, metrics, state.global_step)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    release_run_lock(args.output_dir)  # the next run on this folder may start (run_lock.py)
    return {"output_dir": str(output_dir), "metrics": metrics, "metrics_path": str(output_dir / METRICS_FILE),
            "global_step": state.global_step, "is_main_process": accelerator.is_main_process}


def save_final_model(args, accelerator: Accelerator, model, processor, state: TrainingState, output_dir: Path) -> None:
    """The classifier and the tokenizer's processor (`save_pretrained` layout) and training_config.json; refused
    (`TrainingDivergedError`) if a weight is not finite."""
    unwrapped = accelerator.unwrap_model(model)
    ensure_finite_weights([unwrapped], state.global_step, args.output_dir)

    def write(folder: Path) -> None:
        if isinstance(unwrapped, TokenViTForImageClassification):
            unwrapped.save_pretrained(folder, image_processor=processor)
        else:
            from ..models.token_vit import save_image_processor

            unwrapped.save_pretrained(folder)
            save_image_processor(processor, folder)
        _write_json(folder / TRAINING_CONFIG_FILE, _plain_args(args))

    save_final_folder(accelerator, output_dir, write)  # atomically (final_save.py)


def summary(args, accelerator: Accelerator, model, state: TrainingState, data: ClassifierData):
    split = args.eval_split or ("test" if data.eval is not None else None)
    return {
        "model_type": args.model_type, "tokenizer": args.tokenizer_name_or_path,
        "dataset": args.dataset_name or args.train_data_dir, "split": split,
        "num_parameters": sum(p.numel() for p in accelerator.unwrap_model(model).parameters()),
        "global_step": state.global_step, "train_steps": state.global_step, "epochs_completed": state.epoch,
        "images_seen": state.images_seen, "skipped_images": data.skipped_images,
        "train_batch_size": args.train_batch_size, "train_seconds": round(state.train_seconds, 2),
        "num_processes": accelerator.num_processes, "mixed_precision": accelerator.mixed_precision,
    }


def _plain_args(args: argparse.Namespace) -> dict[str, Any]:
    return {key: value for key, value in vars(args).items() if key not in (*SECRET_FLAGS, "handler", "command")}


def _write_json(path: Path, content: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2, sort_keys=True, default=str) + "\n")
