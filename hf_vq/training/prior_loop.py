"""`hf-vq train-prior` on the shared training machinery (`loop.py`: Accelerator setup, checkpoints, exact resume,
logging; `end_of_run.py`: the final folder, metrics.json, push) for any prior: the config's `prior_type` picks the
spec (`priors/`) that builds the model, says what a step computes and which pipeline the output folder is. This
module keeps the EMA, checks that a resumed or pretrained prior matches the tokenizer, and ends the run with the
pipeline folder, its samples and its generation metrics (`prior_evaluation.py`).

The tokens come from the token cache (`token_data.build_token_data`), shared with the classifier, so a prior
trained on the data a token classifier read does not tokenize again.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader

from .args import PriorTrainingConfig
from .checkpointing import TrainingState, resolve_resume_checkpoint
from .divergence import DivergenceGuard
from .end_of_run import SAMPLES_FILE, build_ema, close_run, ema_weights, finish_run, save_final_folder
from .loop import TrainingLoop, build_accelerator, resume_if_asked, single_model_step, start_trackers
from .optimization import build_single_model_optimization
from .prior_evaluation import build_pipeline, build_prior_data, evaluate_pipeline, save_class_samples
from .priors import TokenPrior, get_prior_spec
from .run_summary import run_summary
from .token_data import TokenData, load_tokenizer, module_fingerprint, tokenizer_reference
from .tracking import log_image_grid

logger = logging.getLogger(__name__)

# Written into every checkpoint: which tokenizer the prior in it was trained on (checked before a resume).
TOKENIZER_RECORD_FILE = "prior_tokenizer.json"


def run_prior_training(config: PriorTrainingConfig) -> dict[str, Any]:
    """See `prior_command.train_prior`."""
    from ..hub import check_push_arguments, check_tokenizer_for_push

    check_push_arguments(config)  # before hours of training, not after
    check_tokenizer_for_push(config)
    spec = get_prior_spec(config.prior_type)
    accelerator = build_accelerator(config)
    set_seed(config.seed)  # identical initial weights on every process
    tokenizer, processor = load_tokenizer(config.tokenizer_name_or_path, accelerator.device, revision=config.revision)
    spec.check_tokenizer(tokenizer)  # before tokenizing the dataset, not after
    record = tokenizer_record(tokenizer, config.tokenizer_name_or_path)
    check_resume_tokenizer(config, record)
    pretrained = None
    if config.pretrained_model_name_or_path:
        pretrained = spec.load_model(config.pretrained_model_name_or_path, tokenizer)
    conditional = is_conditional(config, pretrained)
    with accelerator.main_process_first():
        data = build_prior_data(config, tokenizer, processor, conditional, accelerator.device)
    accelerator.print(
        f"encoded data: {len(data.train)} train / {len(data.eval) if data.eval else 0} eval rows, "
        f"cached in {data.cache_files}"
    )
    model = pretrained
    if model is None:
        model = build_prior(config, spec, tokenizer, data.id2label if conditional else {})
    check_classes(model, data.id2label, conditional)
    model.train()
    optimizer, scheduler, train_loader, max_steps = build_single_model_optimization(
        config, model, data.train, accelerator.num_processes
    )
    ema = build_ema(config, model)
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    eval_loader = DataLoader(data.eval, batch_size=config.eval_batch_size) if data.eval is not None else None
    state = TrainingState()
    accelerator.register_for_checkpointing(state)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
    accelerator.register_save_state_pre_hook(
        lambda models, weights, folder: _write_record(accelerator, folder, record)
    )
    # Each process draws its own masks and label drops from the global RNG; a checkpoint keeps its state, so a
    # resumed run (load_state restores it) draws what the uninterrupted run would have.
    torch.manual_seed(config.seed * 1000 + accelerator.process_index)
    resume_if_asked(config, accelerator, state)
    start_trackers(config, accelerator)
    accelerator.print(
        run_summary(
            examples=len(data.train),
            batch_size_per_process=config.train_batch_size,
            num_processes=accelerator.num_processes,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            max_train_steps=max_steps,
            models={"prior": model},
            mixed_precision=accelerator.mixed_precision,
            start_step=state.global_step,
        )
    )
    unwrapped = accelerator.unwrap_model(model)
    loss_function = spec.training_loss(unwrapped.config, config.label_dropout if conditional else None)
    guard = DivergenceGuard.from_args(config, accelerator, state)
    train_batch = with_ema(
        single_model_step(config, accelerator, model, optimizer, scheduler, loss_function, guard),
        accelerator,
        model,
        ema,
    )

    def validation(step: int) -> dict[str, float]:
        metrics = validation_loss(spec, accelerator, model, ema, eval_loader, config.seed)
        grid = Path(config.output_dir) / f"samples-{step}.png"
        log_class_samples(
            config, spec, accelerator, model, ema, tokenizer, data.id2label if conditional else {}, grid, step
        )
        return metrics

    TrainingLoop(
        config,
        accelerator,
        state,
        train_loader,
        max_steps,
        train_batch,
        evaluate=validation if eval_loader is not None else None,
        scheduler=scheduler,
    ).run()
    return finish(config, spec, accelerator, model, ema, tokenizer, processor, data, state, conditional)


# ------------------------------------------------------------------------------------------------ the tokenizer


def tokenizer_record(tokenizer: nn.Module, name_or_path: str) -> dict[str, Any]:
    """What identifies the tokenizer a prior is trained on: its reference, vocabulary, grid and a hash of its
    weights."""
    config = tokenizer.config
    return {
        "tokenizer_name_or_path": tokenizer_reference(name_or_path),
        "codebook_size": config.codebook_size,
        "grid": list(config.token_grid_size),
        "weights_sha256": module_fingerprint(tokenizer),
    }


def _write_record(accelerator: Accelerator, folder: str, record: dict[str, Any]) -> None:
    if accelerator.is_main_process:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / TOKENIZER_RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")


def check_resume_tokenizer(config: PriorTrainingConfig, record: dict[str, Any]) -> None:
    """A checkpoint resumes only with the tokenizer its prior was trained on (same weights, not only the same
    shapes: other codes would mean other tokens)."""
    checkpoint = resolve_resume_checkpoint(config.resume_from_checkpoint, config.output_dir)
    if checkpoint is None or not (checkpoint / TOKENIZER_RECORD_FILE).is_file():
        return
    saved = json.loads((checkpoint / TOKENIZER_RECORD_FILE).read_text())
    if saved.get("weights_sha256") != record["weights_sha256"]:
        raise ValueError(
            f"{checkpoint} holds a prior trained on the tokenizer {saved.get('tokenizer_name_or_path')} "
            f"({saved.get('codebook_size')} codes, grid {saved.get('grid')}), but --tokenizer_name_or_path "
            f"{config.tokenizer_name_or_path} is another tokenizer ({record['codebook_size']} codes, "
            f"grid {record['grid']}, "
            "other weights): resume with the tokenizer it was trained on, or train into a new --output_dir"
        )


# ------------------------------------------------------------------------------------------------ data and model


def is_conditional(config: PriorTrainingConfig, pretrained: nn.Module | None) -> bool:
    if pretrained is not None:
        return pretrained.config.num_classes > 0
    return config.model_config.get("num_classes") != 0


def build_prior(
    config: PriorTrainingConfig, spec: TokenPrior, tokenizer: nn.Module, id2label: dict[int, str]
) -> nn.Module:
    """A new prior of the spec's kind: its size from the config's model: section, its vocabulary and grid from the
    tokenizer, its classes from the dataset."""
    return spec.build_model(
        tokenizer,
        tokenizer_reference(config.tokenizer_name_or_path),
        config.model_config,
        id2label,
        tokenizer_revision=config.revision,
    )


def check_classes(model: nn.Module, id2label: dict[int, str], conditional: bool) -> None:
    if conditional and len(id2label) > model.config.num_classes:
        raise ValueError(
            f"the dataset has {len(id2label)} classes but the prior was built for "
            f"num_classes={model.config.num_classes}: start from a prior trained on these classes, or drop "
            "--pretrained_model_name_or_path"
        )


# ------------------------------------------------------------------------------------------------ one step


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


@torch.no_grad()
def validation_loss(
    spec: TokenPrior, accelerator: Accelerator, model: nn.Module, ema, eval_loader: DataLoader, seed: int
) -> dict[str, float]:
    """The spec's training loss and its logs (`val_loss`, `val_<log>`) on the held-out tokens, with random draws
    (masks, label drops) from a fixed seed, comparable between evaluations, no label dropout, and the EMA weights
    when kept. Run on every process alike (they all hold the whole split)."""
    with ema_weights(accelerator, model, ema) as unwrapped:
        was_training = unwrapped.training
        unwrapped.eval()
        loss_function = spec.training_loss(unwrapped.config, None if unwrapped.config.num_classes == 0 else 0.0)
        generator = torch.Generator().manual_seed(seed)
        sums: dict[str, float] = {}
        count = 0
        for batch in eval_loader:
            batch = {key: value.to(accelerator.device) for key, value in batch.items()}
            loss, logs = loss_function(unwrapped, batch, generator=generator)
            size = len(batch["image_tokens"])
            for name, value in {"loss": loss, **logs}.items():
                sums[name] = sums.get(name, 0.0) + float(value) * size
            count += size
        unwrapped.train(was_training)
    return {f"val_{name}": total / max(count, 1) for name, total in sums.items()}


def log_class_samples(
    config: PriorTrainingConfig,
    spec: TokenPrior,
    accelerator: Accelerator,
    model: nn.Module,
    ema,
    tokenizer: nn.Module,
    id2label: dict[int, str],
    path: Path,
    step: int,
) -> None:
    """A sample grid of the prior as it is at `step` (EMA weights when kept; one row per class), written to `path`
    and logged to the trackers, as the tokenizer's runs log theirs. Main process only; none with
    `--num_sample_images 0`."""
    if config.num_sample_images == 0 or not accelerator.is_main_process:
        return
    with ema_weights(accelerator, model, ema) as prior:
        was_training = prior.training
        prior.eval()
        save_class_samples(config, spec, build_pipeline(tokenizer, prior, spec), id2label, path)
        prior.train(was_training)
    log_image_grid(accelerator, path, step)


# ------------------------------------------------------------------------------------------------ the end


def finish(
    config: PriorTrainingConfig,
    spec: TokenPrior,
    accelerator: Accelerator,
    model,
    ema,
    tokenizer,
    processor,
    data: TokenData,
    state: TrainingState,
    conditional: bool,
) -> dict[str, Any]:
    """The shared end of run (`end_of_run.py`): save the pipeline (EMA weights when kept) first, then sample and
    evaluate it (samples.png, metrics.json) and push if asked; a failed evaluation leaves the saved pipeline in
    place."""
    eval_loader = DataLoader(data.eval, batch_size=config.eval_batch_size) if data.eval is not None else None
    with ema_weights(accelerator, model, ema) as prior:
        prior.eval()
        pipeline = build_pipeline(tokenizer, prior, spec)
        output_dir = save_final_folder(config, accelerator, prior, state.global_step, pipeline.save_pretrained)
        grid_path = output_dir / SAMPLES_FILE

        def evaluate() -> dict[str, Any]:
            metrics = validation_loss(spec, accelerator, model, None, eval_loader, config.seed) if eval_loader else {}
            if accelerator.is_main_process:  # generation is not split over processes: the others wait
                save_class_samples(config, spec, pipeline, data.id2label if conditional else {}, grid_path)
                log_image_grid(accelerator, grid_path, state.global_step)
                metrics |= evaluate_pipeline(config, spec, pipeline, data, processor, conditional)
            return metrics

        result = finish_run(
            config, accelerator, state, summary(config, accelerator, prior, state, data, conditional), evaluate
        )
    close_run(accelerator, config)
    return result | {"sample_grid": str(grid_path) if grid_path.is_file() else None}


def summary(
    config: PriorTrainingConfig,
    accelerator: Accelerator,
    model: nn.Module,
    state: TrainingState,
    data: TokenData,
    conditional: bool,
) -> dict[str, Any]:
    return {
        "tokenizer": config.tokenizer_name_or_path,
        "dataset": config.dataset_name or config.train_data_dir or config.token_dataset,
        "num_classes": len(data.id2label) if conditional else 0,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "global_step": state.global_step,
        "train_steps": state.global_step,
        "epochs_completed": state.epoch,
        "images_seen": state.images_seen,
        "skipped_images": data.skipped_images,
        "train_batch_size": config.train_batch_size,
        "train_seconds": round(state.train_seconds, 2),
        # CPU seconds of this process's threads: the compute spent, which a loaded machine does not inflate.
        "train_cpu_seconds": round(state.train_cpu_seconds, 2),
        "num_processes": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
        "ema": bool(config.use_ema),
        "label_dropout": config.label_dropout if conditional else None,
        "num_inference_steps": config.num_inference_steps,
        "guidance_scale": config.guidance_scale,
        "temperature": config.temperature,
    }


__all__ = ["run_prior_training"]
