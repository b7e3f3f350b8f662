"""`hf-vq train-prior` on the shared training machinery (`loop.py`: Accelerator setup, checkpoints, exact resume,
logging): this module says what a step computes (MaskGIT's masked-token loss with label dropout), keeps the EMA,
and turns the trained prior into a `MaskGITPipeline` folder with its samples and generation metrics.

The tokens come from the classifier's cache (`classifier_data.build_classifier_data`), so a prior trained on the
data a token classifier read does not tokenize again.
"""

from __future__ import annotations

import argparse
import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader

from ..models.maskgit import MaskGITModel, mask_tokens
from ..models.maskgit.configuration_maskgit import check_single_codebook
from .checkpointing import TrainingState, resolve_resume_checkpoint
from .classifier_data import ClassifierData, MissingLabelsError, build_classifier_data, module_fingerprint
from .classifier_loop import _tokenizer_reference, build_optimization, load_tokenizer
from .divergence import DivergenceGuard, ensure_finite_weights
from .final_save import save_final_folder
from .run_lock import release_run_lock
from .loop import (
    TrainingLoop,
    build_accelerator,
    final_evaluation,
    publish_final_metrics,
    resume_if_asked,
    single_model_step,
    start_trackers,
)
from .run_summary import run_summary
from .trainer import _build_ema, training_config

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
SAMPLES_FILE = "samples.png"
TRAINING_CONFIG_FILE = "training_config.json"
# Written into every checkpoint: which tokenizer the prior in it was trained on (checked before a resume).
TOKENIZER_RECORD_FILE = "prior_tokenizer.json"
TRANSFORMER_SUBFOLDER = "transformer"


def run_prior_training(args: argparse.Namespace) -> dict[str, Any]:
    """See `prior_command.train_prior`."""
    from ..hub import check_push_arguments, check_tokenizer_for_push

    check_push_arguments(args)  # before hours of training, not after
    check_tokenizer_for_push(args)
    accelerator = build_accelerator(args)
    set_seed(args.seed)  # identical initial weights on every process
    tokenizer, processor = load_tokenizer(args.tokenizer_name_or_path, accelerator.device, revision=args.revision)
    check_single_codebook(tokenizer.config)  # before tokenizing the dataset, not after
    record = tokenizer_record(tokenizer, args.tokenizer_name_or_path)
    check_resume_tokenizer(args, record)
    pretrained = load_pretrained_prior(args.pretrained_model_name_or_path, tokenizer) if args.pretrained_model_name_or_path else None
    conditional = is_conditional(args, pretrained)
    with accelerator.main_process_first():
        data = build_prior_data(args, tokenizer, processor, conditional, accelerator.device)
    accelerator.print(f"encoded data: {len(data.train)} train / {len(data.eval) if data.eval else 0} eval rows, "
                      f"cached in {data.cache_files}")
    model = pretrained if pretrained is not None else build_prior(args, tokenizer, data.id2label if conditional else {})
    check_classes(model, data.id2label, conditional)
    model.train()
    optimizer, scheduler, train_loader, max_steps = build_optimization(args, model, data, accelerator)
    ema = _build_ema(args, model)
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    eval_loader = DataLoader(data.eval, batch_size=args.eval_batch_size) if data.eval is not None else None
    state = TrainingState()
    accelerator.register_for_checkpointing(state)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
    accelerator.register_save_state_pre_hook(lambda models, weights, folder: _write_record(accelerator, folder, record))
    # Each process draws its own masks and label drops from the global RNG; a checkpoint keeps its state, so a
    # resumed run (load_state restores it) draws what the uninterrupted run would have.
    torch.manual_seed(args.seed * 1000 + accelerator.process_index)
    resume_if_asked(args, accelerator, state)
    start_trackers(args, accelerator)
    accelerator.print(run_summary(
        examples=len(data.train), batch_size_per_process=args.train_batch_size, num_processes=accelerator.num_processes,
        gradient_accumulation_steps=args.gradient_accumulation_steps, max_train_steps=max_steps,
        models={"prior": model}, mixed_precision=accelerator.mixed_precision, start_step=state.global_step))
    unwrapped = accelerator.unwrap_model(model)
    loss_function = MaskedTokenLoss(unwrapped.config, args.label_dropout if conditional else None)
    guard = DivergenceGuard.from_args(args, accelerator, state)
    train_batch = with_ema(single_model_step(args, accelerator, model, optimizer, scheduler, loss_function, guard),
                           accelerator, model, ema)
    validation = (lambda step: validation_loss(accelerator, model, ema, eval_loader, args.seed)) if eval_loader else None
    TrainingLoop(args, accelerator, state, train_loader, max_steps, train_batch, evaluate=validation, scheduler=scheduler).run()
    return finish(args, accelerator, model, ema, tokenizer, processor, data, state, conditional)


# ------------------------------------------------------------------------------------------------ the tokenizer


def tokenizer_record(tokenizer: nn.Module, name_or_path: str) -> dict[str, Any]:
    """What identifies the tokenizer a prior is trained on: its reference, vocabulary, grid and a hash of its weights."""
    config = tokenizer.config
    side = config.image_size // config.downsampling_factor
    return {"tokenizer_name_or_path": _tokenizer_reference(name_or_path), "codebook_size": config.codebook_size,
            "grid": [side, side], "weights_sha256": module_fingerprint(tokenizer)}


def _write_record(accelerator: Accelerator, folder: str, record: dict[str, Any]) -> None:
    if accelerator.is_main_process:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / TOKENIZER_RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")


def check_resume_tokenizer(args: argparse.Namespace, record: dict[str, Any]) -> None:
    """A checkpoint resumes only with the tokenizer its prior was trained on (same weights, not only the same
    shapes: other codes would mean other tokens)."""
    checkpoint = resolve_resume_checkpoint(args.resume_from_checkpoint, args.output_dir)
    if checkpoint is None or not (checkpoint / TOKENIZER_RECORD_FILE).is_file():
        return
    saved = json.loads((checkpoint / TOKENIZER_RECORD_FILE).read_text())
    if saved.get("weights_sha256") != record["weights_sha256"]:
        raise ValueError(
            f"{checkpoint} holds a prior trained on the tokenizer {saved.get('tokenizer_name_or_path')} "
            f"({saved.get('codebook_size')} codes, grid {saved.get('grid')}), but --tokenizer_name_or_path "
            f"{args.tokenizer_name_or_path} is another tokenizer ({record['codebook_size']} codes, grid {record['grid']}, "
            "other weights): resume with the tokenizer it was trained on, or train into a new --output_dir"
        )


def load_pretrained_prior(name_or_path: str, tokenizer: nn.Module) -> MaskGITModel:
    """A saved prior (a MaskGITModel folder, or a pipeline folder holding one in transformer/), checked against the
    tokenizer given."""
    folder = Path(name_or_path)
    subfolder = TRANSFORMER_SUBFOLDER if (folder / "model_index.json").is_file() else ""
    model = MaskGITModel.from_pretrained(name_or_path, subfolder=subfolder)
    model.check_tokenizer(tokenizer)
    return model


# ------------------------------------------------------------------------------------------------ data and model


def is_conditional(args: argparse.Namespace, pretrained: MaskGITModel | None) -> bool:
    if pretrained is not None:
        return pretrained.config.num_classes > 0
    return args.model_config.get("num_classes") != 0


def build_prior_data(args: argparse.Namespace, tokenizer: nn.Module, processor: Any, conditional: bool,
                     device: torch.device) -> ClassifierData:
    """The cached token grids (and class labels, for a class-conditional prior) of the train and held-out splits."""
    if not conditional:
        args = argparse.Namespace(**{**vars(args), "label_column": None})
    try:
        return build_classifier_data(args, tokenizer, processor, encode=True, device=device)
    except MissingLabelsError as error:
        raise MissingLabelsError(
            f"{error}. A class-conditional prior needs class labels; for an unconditional prior set num_classes: 0 in "
            "the config's model: section"
        ) from error


def build_prior(args: argparse.Namespace, tokenizer: nn.Module, id2label: dict[int, str]) -> MaskGITModel:
    """A new prior: its size from the config's model: section, its vocabulary and grid from the tokenizer, its
    classes from the dataset."""
    config = dict(args.model_config)
    config["num_classes"] = len(id2label)
    if args.revision:
        config["tokenizer_revision"] = args.revision
    if id2label:
        config["id2label"] = {int(key): value for key, value in id2label.items()}
    return MaskGITModel.from_tokenizer(_tokenizer_reference(args.tokenizer_name_or_path), tokenizer=tokenizer, **config)


def check_classes(model: MaskGITModel, id2label: dict[int, str], conditional: bool) -> None:
    if conditional and len(id2label) > model.config.num_classes:
        raise ValueError(
            f"the dataset has {len(id2label)} classes but the prior was built for num_classes={model.config.num_classes}: "
            "start from a prior trained on these classes, or drop --pretrained_model_name_or_path"
        )


# ------------------------------------------------------------------------------------------------ one step


class MaskedTokenLoss:
    """The step function of the loop: mask a share of each token grid drawn from the cosine schedule (`mask_tokens`),
    replace `label_dropout` of the class labels by the null class (the unconditional half of classifier-free
    guidance; None for an unconditional prior), and return the prior's cross-entropy on the masked positions."""

    def __init__(self, config: Any, label_dropout: float | None) -> None:
        self.mask_token_id = config.mask_token_id
        self.null_class_id = config.null_class_id
        self.label_dropout = label_dropout

    def __call__(self, model: nn.Module, batch: dict, generator: torch.Generator | None = None):
        tokens = batch["image_tokens"].long()
        inputs, targets = mask_tokens(tokens, self.mask_token_id, generator=generator)
        class_labels = None
        if self.label_dropout is not None:
            class_labels = drop_labels(batch["labels"], self.null_class_id, self.label_dropout, generator)
        output = model(inputs, class_labels=class_labels, labels=targets)
        masked = targets != -100
        correct = (output.logits.argmax(-1) == targets.reshape(output.logits.shape[:-1])) & masked.reshape(output.logits.shape[:-1])
        return output.loss, {"masked_accuracy": (correct.sum() / masked.sum().clamp(min=1)).detach()}


def drop_labels(labels: torch.Tensor, null_class_id: int, probability: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """`labels` with each entry replaced by `null_class_id` with the given probability."""
    if probability <= 0:
        return labels
    draws = torch.rand(labels.shape, generator=generator, device=generator.device if generator else labels.device)
    return torch.where(draws.to(labels.device) < probability, torch.full_like(labels, null_class_id), labels)


def with_ema(train_batch, accelerator: Accelerator, model: nn.Module, ema):
    """`train_batch`, then an EMA update after each optimizer step."""
    if ema is None:
        return train_batch

    def step(batch: dict) -> dict:
        logs = train_batch(batch)
        if accelerator.sync_gradients:
            ema.step(accelerator.unwrap_model(model).parameters())
        return logs

    return step


@contextmanager
def ema_applied(accelerator: Accelerator, model: nn.Module, ema) -> Iterator[nn.Module]:
    """The unwrapped model, holding its EMA weights inside the block (when EMA is on), its own weights after it."""
    unwrapped = accelerator.unwrap_model(model)
    if ema is None:
        yield unwrapped
        return
    ema.store(unwrapped.parameters())
    ema.copy_to(unwrapped.parameters())
    try:
        yield unwrapped
    finally:
        ema.restore(unwrapped.parameters())


@torch.no_grad()
def validation_loss(accelerator: Accelerator, model: nn.Module, ema, eval_loader: DataLoader, seed: int) -> dict[str, float]:
    """Masked-token loss and accuracy on the held-out tokens, with masks and label drops from a fixed seed (comparable
    between evaluations) and the EMA weights when kept. Run on every process alike (they all hold the whole split)."""
    with ema_applied(accelerator, model, ema) as unwrapped:
        was_training = unwrapped.training
        unwrapped.eval()
        loss_function = MaskedTokenLoss(unwrapped.config, None if unwrapped.config.num_classes == 0 else 0.0)
        generator = torch.Generator().manual_seed(seed)
        total = accuracy = count = 0.0
        for batch in eval_loader:
            batch = {key: value.to(accelerator.device) for key, value in batch.items()}
            loss, logs = loss_function(unwrapped, batch, generator=generator)
            size = len(batch["image_tokens"])
            total += float(loss) * size
            accuracy += float(logs["masked_accuracy"]) * size
            count += size
        unwrapped.train(was_training)
    return {"val_loss": total / max(count, 1), "val_masked_accuracy": accuracy / max(count, 1)}


# ------------------------------------------------------------------------------------------------ the end


def finish(args, accelerator: Accelerator, model, ema, tokenizer, processor, data: ClassifierData, state: TrainingState,
           conditional: bool) -> dict[str, Any]:
    """Save the pipeline (EMA weights when kept) and training_config.json first, then sample and evaluate it
    (samples.png, metrics.json) and push if asked; a failed evaluation leaves the saved pipeline in place."""
    from .prior_evaluation import build_pipeline, evaluate_pipeline, save_class_samples

    output_dir = Path(args.output_dir).resolve()
    eval_loader = DataLoader(data.eval, batch_size=args.eval_batch_size) if data.eval is not None else None
    grid_path = output_dir / SAMPLES_FILE
    with ema_applied(accelerator, model, ema) as prior:
        prior.eval()
        ensure_finite_weights([prior], state.global_step, args.output_dir)
        pipeline = build_pipeline(tokenizer, prior)

        def write(folder: Path) -> None:
            pipeline.save_pretrained(folder)
            _write_json(folder / TRAINING_CONFIG_FILE, training_config(args))

        save_final_folder(accelerator, output_dir, write)  # atomically (final_save.py)
        training = summary(args, accelerator, prior, state, data, conditional)

        def evaluate() -> dict[str, Any]:
            metrics = validation_loss(accelerator, model, None, eval_loader, args.seed) if eval_loader is not None else {}
            if accelerator.is_main_process:  # generation is not split over processes: the others wait
                save_class_samples(args, pipeline, data.id2label if conditional else {}, grid_path)
                metrics |= evaluate_pipeline(args, pipeline, data, processor, conditional)
            return metrics

        metrics = final_evaluation(accelerator, evaluate, output_dir, training) | training
    metrics = publish_final_metrics(args, accelerator, output_dir, metrics, state.global_step)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    release_run_lock(args.output_dir)  # the next run on this folder may start (run_lock.py)
    return {"output_dir": str(output_dir), "metrics": metrics, "metrics_path": str(output_dir / METRICS_FILE),
            "sample_grid": str(grid_path) if grid_path.is_file() else None, "global_step": state.global_step,
            "is_main_process": accelerator.is_main_process}


def summary(args, accelerator: Accelerator, model: nn.Module, state: TrainingState, data: ClassifierData,
            conditional: bool) -> dict[str, Any]:
    return {
        "tokenizer": args.tokenizer_name_or_path, "dataset": args.dataset_name or args.train_data_dir,
        "num_classes": len(data.id2label) if conditional else 0,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "global_step": state.global_step, "train_steps": state.global_step, "epochs_completed": state.epoch,
        "images_seen": state.images_seen, "skipped_images": data.skipped_images,
        "train_batch_size": args.train_batch_size, "train_seconds": round(state.train_seconds, 2),
        "num_processes": accelerator.num_processes, "mixed_precision": accelerator.mixed_precision,
        "ema": bool(args.use_ema), "label_dropout": args.label_dropout if conditional else None,
        "num_inference_steps": args.num_inference_steps, "guidance_scale": args.guidance_scale,
        "temperature": args.temperature,
    }


def _write_json(path: Path, content: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2, sort_keys=True, default=str) + "\n")


__all__ = ["MaskedTokenLoss", "drop_labels", "run_prior_training"]
