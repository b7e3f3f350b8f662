"""The Accelerate machinery that every `hf-vq train-*` command shares.

- `build_accelerator`, `start_trackers`, `resume_if_asked`, `save_checkpoint`: the run's setup, trackers, exact
  resume and `checkpoint-<step>` folders (`checkpointing.py` holds the folder rules);
- `TrainingLoop`: the step loop around any `train_batch(batch) -> logs` function: epochs with a seeded shuffle,
  the rest of an epoch after a resume (`skip_first_batches`), optimizer-step counting under gradient accumulation,
  logging, a progress bar, periodic checkpoints and evaluations, and the training time;
- `single_model_step` / `train_single_model`: the one-model case (one optimizer, one scheduler) from a
  `compute_loss(model, batch) -> (loss, logs)` function: accumulation, backward, clipping, optimizer step.
  The tokenizer (a generator and a discriminator) gives `TrainingLoop` its own `train_batch` instead.

Every function takes the command's typed config (`args.TrainingConfig`: the flags of `OptimizationArguments`,
`RunArguments`, `ReliabilityArguments` and the data's) as it is; the end of a run is `end_of_run.py`'s.

Example: a new command plugs in with its loss and its evaluation (this is how `train-classifier` trains)::

    accelerator = build_accelerator(config)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    state = TrainingState()
    accelerator.register_for_checkpointing(state)
    resume_if_asked(config, accelerator, state)
    start_trackers(config, accelerator)
    accelerator.print(run_summary(...))  # examples, batch sizes, steps, epochs, parameters, processes, precision

    def compute_loss(model, batch):
        output = model(**batch)
        return output.loss, {"accuracy": (output.logits.argmax(-1) == batch["labels"]).float().mean()}

    train_single_model(config, accelerator, model, optimizer, scheduler, loader, state, max_steps, compute_loss,
                       evaluate=lambda step: {"accuracy": my_accuracy(model)})
    # then the end of the run (see `end_of_run.py`); `state.train_seconds` is the training time
"""

from __future__ import annotations

import logging
import math
import time
from time import process_time  # CPU seconds of the process (all its threads): compute, whatever the load
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration
from torch import nn
from tqdm.auto import tqdm

from ..quantization import NonFiniteInputError
from .args import TrainingConfig, flag_values
from .checkpointing import (
    TrainingState,
    complete_checkpoint,
    describe,
    discard_temporary_folder,
    last_good_checkpoint,
    pause_if_asked,
    prepare_temporary_folder,
    prune_checkpoints,
    resume_candidates,
    temporary_folder,
)
from .checkpoint_state import load_training_state, save_training_state
from .divergence import DivergenceGuard, ensure_finite_weights
from .errors import CheckpointError, NoTrainingDataError, TrainingDivergedError
from .interrupts import InterruptHandler, stop_if_interrupted
from .final_save import recover_interrupted_final_save
from .run_lock import hold_run_lock
from .tracking import JSONLTracker

logger = logging.getLogger(__name__)

ComputeLoss = Callable[[nn.Module, dict], "tuple[torch.Tensor, dict[str, torch.Tensor]]"]
TrainBatch = Callable[[dict], "dict[str, torch.Tensor]"]
Evaluate = Callable[[int], "dict[str, float]"]


# ------------------------------------------------------------------------------------------------ setup


def build_accelerator(config: TrainingConfig) -> Accelerator:
    output_dir = Path(config.output_dir)
    logging_dir = output_dir / config.logging_dir  # an absolute --logging_dir stays as it is
    trackers: list[Any] = []
    if config.report_to in ("jsonl", "all"):
        trackers.append(JSONLTracker("train_log", logging_dir))
    if config.report_to in ("tensorboard", "wandb"):
        trackers.append(config.report_to)
    elif config.report_to == "all":
        trackers.append("all")
    accelerator = Accelerator(
        # Without a GPU, cpu=True is what makes Accelerate start gloo under torchrun (else each process runs alone).
        cpu=config.cpu or not has_accelerator_device(),
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
        log_with=trackers or None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(logging_dir)),
        # Same shuffled order for a given (seed, epoch) on every run: what makes resuming exact.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
    )
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    # One run per --output_dir (run_lock.py); its holder first finishes a final save a kill interrupted.
    hold_run_lock(accelerator, output_dir, on_acquired=recover_interrupted_final_save)
    if config.allow_tf32:  # as diffusers' example scripts: faster matmuls and convolutions on Ampere and newer GPUs
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    # Accelerate logs every file of every checkpoint at INFO; its warnings are what matters here.
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    return accelerator


def has_accelerator_device() -> bool:
    if hasattr(torch, "accelerator"):
        return torch.accelerator.is_available()
    return torch.cuda.is_available()


def start_trackers(config: TrainingConfig, accelerator: Accelerator) -> None:
    """Start the trackers with the run's flags (the Hub token left out) and its model: section as `model.<key>`."""
    values = {
        key: value
        for key, value in flag_values(config).items()
        if isinstance(value, (int, float, str, bool)) or value is None
    }
    values.update({f"model.{key}": str(value) for key, value in config.model_config.items()})
    accelerator.init_trackers(config.tracker_project_name, config=values)


def resume_if_asked(config: TrainingConfig, accelerator: Accelerator, state: TrainingState) -> Path | None:
    """Load the checkpoint `--resume_from_checkpoint` names (`latest`: the newest complete one of `--output_dir`,
    skipping incomplete ones with a warning, and older ones if it fails to load). Returns the folder, or None."""
    candidates = resume_candidates(config.resume_from_checkpoint, config.output_dir)
    if not candidates:
        if config.resume_from_checkpoint:
            accelerator.print(f"no complete checkpoint in {config.output_dir} to resume from: starting a new run")
        return None
    for index, checkpoint in enumerate(candidates):
        try:
            load_training_state(accelerator, checkpoint)  # no pickle from the folder runs code (checkpoint_state.py)
        except Exception as error:  # unpicklable RNG file, truncated safetensors despite a matching size...
            if index + 1 == len(candidates):
                raise CheckpointError(f"cannot resume from {checkpoint}: {type(error).__name__}: {error}") from error
            logger.warning(
                "could not load %s (%s: %s): trying the next older checkpoint", checkpoint, type(error).__name__, error
            )
            continue
        accelerator.print(f"resuming from {checkpoint} (step {state.global_step})")
        # Accelerate numbers automatic checkpoints by this counter; keep it past the loaded one (ENVIRONMENT.md).
        accelerator.project_configuration.iteration = state.global_step + 1
        return checkpoint
    return None


def save_checkpoint(config: TrainingConfig, accelerator: Accelerator, step: int) -> Path:
    """Write `checkpoint-<step>` atomically (see `checkpointing`), on every process (Accelerate's `save_state`
    writes each process' RNG state), then prune older ones. Weights that are not finite are never written
    (`TrainingDivergedError`); a failed write (full disk...) removes its temporary folder and raises
    `CheckpointError`, leaving the previous checkpoints as they were."""
    output_dir = Path(config.output_dir)
    ensure_finite_weights(_prepared_models(accelerator), step, output_dir)
    temporary = temporary_folder(output_dir, step)
    if accelerator.is_main_process:
        prepare_temporary_folder(output_dir, step)
    accelerator.wait_for_everyone()
    error = _attempt(lambda: save_training_state(accelerator, temporary))
    if accelerator.is_main_process and error is None:
        pause_if_asked(temporary, step)
    _raise_unless_everyone_succeeded(accelerator, error, output_dir, step)
    if accelerator.is_main_process:
        error = _attempt(lambda: complete_checkpoint(output_dir, step, accelerator.num_processes))
    _raise_unless_everyone_succeeded(accelerator, error, output_dir, step)
    if accelerator.is_main_process:
        for removed in prune_checkpoints(output_dir, config.checkpoints_total_limit):
            logger.info("removed %s (--checkpoints_total_limit %s)", removed, config.checkpoints_total_limit)
    accelerator.wait_for_everyone()
    return output_dir / f"checkpoint-{step}"


def _prepared_models(accelerator: Accelerator) -> list[nn.Module]:
    # Accelerate keeps the prepared models (what save_state writes) in this list; there is no public accessor.
    return list(accelerator._models)


def _attempt(action: Callable[[], Any]) -> Exception | None:
    try:
        action()
    except Exception as error:  # OSError (no space left), torch's RuntimeError from its zip writer, ...
        return error
    return None


def _raise_unless_everyone_succeeded(
    accelerator: Accelerator, error: Exception | None, output_dir: Path, step: int
) -> None:
    failed = torch.tensor([0.0 if error is None else 1.0], device=accelerator.device)
    if accelerator.num_processes > 1:
        failed = accelerator.reduce(failed, reduction="sum")  # every process learns whether any failed
    if float(failed) == 0:
        return
    if accelerator.is_main_process:
        discard_temporary_folder(output_dir, step)
    reason = f"{type(error).__name__}: {error}" if error is not None else "it failed on another process"
    raise CheckpointError(
        f"could not write checkpoint-{step} ({reason}). The previous checkpoints are intact (the newest: "
        f"{describe(last_good_checkpoint(output_dir))}); free disk space (or fix the cause), then run again with "
        "--resume_from_checkpoint latest"
    ) from error


def set_dataset_epoch(dataloader: Any, epoch: int) -> Any:
    """Seed the epoch's shuffle: Accelerate's dataloaders and streamed datasets have `set_epoch`."""
    if hasattr(dataloader, "set_epoch"):
        dataloader.set_epoch(epoch)
    elif hasattr(dataloader.dataset, "set_epoch"):
        dataloader.dataset.set_epoch(epoch)
    return dataloader


# ------------------------------------------------------------------------------------------------ the loop


class TrainingLoop:
    """Trains until `max_steps` optimizer steps by calling `train_batch(batch) -> logs` on each batch.

    `train_batch` runs inside the loop's accounting: it must do its own `accelerator.accumulate(...)`, backward
    and optimizer steps (`single_model_step` builds one for a single model). After each optimizer step (when
    `accelerator.sync_gradients`), the loop counts the step, logs the mean of the logs since the last log line
    (every `config.logging_steps`), saves `checkpoint-<step>` (every `config.checkpointing_steps`) and calls
    `evaluate(step)` (every `config.validation_steps`, not at the last step: the command evaluates the final model).

    Batches are dicts of tensors; the first tensor's length is the number of examples (a `num_skipped` entry,
    as the tokenizer's image collator adds for unreadable images, is counted in `state.skipped_images`). A batch
    that is empty on any process is skipped by all (a process skipping alone would leave the others waiting in
    DDP's all-reduce). `on_epoch_start(epoch)` lets the data follow the epoch (e.g. seeded random flips).
    """

    def __init__(
        self,
        config: TrainingConfig,
        accelerator: Accelerator,
        state: TrainingState,
        train_loader,
        max_steps: int,
        train_batch: TrainBatch,
        *,
        evaluate: Evaluate | None = None,
        scheduler=None,
        on_epoch_start: Callable[[int], None] | None = None,
    ):
        self.config, self.accelerator, self.state = config, accelerator, state
        self.train_loader, self.max_steps, self.train_batch = train_loader, max_steps, train_batch
        self.evaluate, self.scheduler, self.on_epoch_start = evaluate, scheduler, on_epoch_start

    def run(self) -> float:
        """Train to `max_steps`; returns the seconds spent training in this call (evaluations and checkpoints
        excluded), also added to `state.train_seconds`. SIGINT/SIGTERM: see `interrupts.py`."""
        with InterruptHandler() as self.interrupts:
            return self._run()

    def _run(self) -> float:
        state, accelerator = self.state, self.accelerator
        progress = tqdm(
            total=self.max_steps,
            initial=state.global_step,
            desc="steps",
            disable=not (accelerator.is_local_main_process and self.config.progress_bar),
        )
        running, seconds_before = RunningLosses(), state.train_seconds
        while state.global_step < self.max_steps:
            start, cpu_start = time.perf_counter(), process_time()
            for batch in self._epoch_batches():
                running.add(self._train_batch(batch))
                if not accelerator.sync_gradients:
                    continue
                state.global_step += 1
                progress.update(1)
                if state.global_step % self.config.logging_steps == 0 or state.global_step == self.max_steps:
                    self._log(running, progress)
                # Before the checkpoint, which stores them.
                state.train_seconds += time.perf_counter() - start
                state.train_cpu_seconds += process_time() - cpu_start
                self._periodic()
                stop_if_interrupted(self.interrupts, accelerator, state.global_step, self._checkpoint_now)
                start, cpu_start = time.perf_counter(), process_time()
                if state.global_step >= self.max_steps:
                    break
            else:
                self._end_epoch()
            state.train_seconds += time.perf_counter() - start
            state.train_cpu_seconds += process_time() - cpu_start
        progress.close()
        return state.train_seconds - seconds_before

    def _train_batch(self, batch: dict) -> dict[str, torch.Tensor]:
        try:
            return self.train_batch(batch)
        except NonFiniteInputError as error:
            # Weights so large that activations overflow: the model's own input check fires before any loss.
            raise TrainingDivergedError(
                f"training diverged at step {self.state.global_step + 1}: {error}. Nothing from this state was saved; "
                "the last good checkpoint is "
                f"{describe(last_good_checkpoint(self.config.output_dir))}. Resume from it "
                "with a lower --learning_rate or --max_grad_norm"
            ) from error

    def _epoch_batches(self) -> Iterator[dict]:
        """The batches of the current epoch not yet trained on (all of them, or the rest after a resume)."""
        accelerator, state = self.accelerator, self.state
        if self.on_epoch_start is not None:
            self.on_epoch_start(state.epoch)
        loader = set_dataset_epoch(self.train_loader, state.epoch)
        if state.batches_in_epoch > 0:
            loader = set_dataset_epoch(accelerator.skip_first_batches(loader, state.batches_in_epoch), state.epoch)
        for batch in loader:
            state.batches_in_epoch += 1
            counts = torch.tensor([batch_counts(batch)], device=accelerator.device)
            counts = accelerator.gather(counts) if accelerator.num_processes > 1 else counts
            state.skipped_images += int(counts[:, 1].sum())
            if int(counts[:, 0].min()) == 0:
                continue
            state.images_seen += int(counts[:, 0].sum())
            yield batch

    def _end_epoch(self) -> None:
        state = self.state
        if state.images_seen == 0:
            raise NoTrainingDataError(
                f"the training data yielded no readable image in a whole epoch ({state.skipped_images} unreadable "
                "images skipped): check the dataset and --image_column"
            )
        state.epoch += 1
        state.batches_in_epoch = 0

    def _log(self, running: RunningLosses, progress) -> None:
        logs = running.mean() | {"skipped_images": self.state.skipped_images}
        if self.state.skipped_steps:
            logs["skipped_steps"] = self.state.skipped_steps
        if self.scheduler is not None:
            logs["lr"] = self.scheduler.get_last_lr()[0]
        self.accelerator.log(logs, step=self.state.global_step)
        loss = logs.get("loss", float("nan"))  # a string when not finite (RunningLosses.mean)
        progress.set_postfix(loss=f"{loss:.4f}" if isinstance(loss, float) else loss)

    def _checkpoint_now(self) -> Path:
        """`checkpoint-<step>` of the current step: the one `_periodic` just wrote, or a new one."""
        step, config = self.state.global_step, self.config
        if config.checkpointing_steps and step % config.checkpointing_steps == 0:
            return Path(config.output_dir) / f"checkpoint-{step}"
        return save_checkpoint(config, self.accelerator, step)

    def _periodic(self) -> None:
        step, config = self.state.global_step, self.config
        if config.checkpointing_steps and step % config.checkpointing_steps == 0:
            save_checkpoint(config, self.accelerator, step)
        if (
            self.evaluate is not None
            and config.validation_steps
            and step % config.validation_steps == 0
            and step < self.max_steps
        ):
            metrics = self.evaluate(step)
            if metrics:
                self.accelerator.log({f"eval/{key}": value for key, value in metrics.items()}, step=step)


def batch_counts(batch: dict) -> tuple[int, int]:
    """(examples, skipped unreadable examples) of one process' batch."""
    examples = next(value.shape[0] for key, value in batch.items() if key != "num_skipped" and torch.is_tensor(value))
    skipped = int(batch["num_skipped"].sum()) if "num_skipped" in batch else 0
    return examples, skipped


# ------------------------------------------------------------------------------------------------ one model


def clip_and_step(
    config: TrainingConfig, accelerator: Accelerator, model: nn.Module, optimizer, scheduler, apply: bool = True
) -> None:
    """Clip (at the end of an accumulation window, when `--max_grad_norm` > 0), step, and clear the gradients.
    Accelerate's prepared optimizer and scheduler only act at the end of an accumulation window. With
    `apply=False` (a step the divergence guard skips) the gradients are dropped instead of applied; the learning
    rate schedule still advances, so that it keeps following the step count."""
    if apply:
        if accelerator.sync_gradients and config.max_grad_norm > 0:
            accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def single_model_step(
    config: TrainingConfig,
    accelerator: Accelerator,
    model: nn.Module,
    optimizer,
    scheduler,
    compute_loss: ComputeLoss,
    guard: DivergenceGuard | None = None,
) -> TrainBatch:
    """`train_batch` for one model: `compute_loss(model, batch) -> (loss, logs)` under autocast, backward, the
    divergence guard's check (at the end of each accumulation window), clipping and the optimizer step, with
    Accelerate's gradient accumulation. The logs get `loss`."""

    def train_batch(batch: dict) -> dict[str, torch.Tensor]:
        with accelerator.accumulate(model), accelerator.autocast():
            loss, logs = compute_loss(model, batch)
            accelerator.backward(loss)
            apply = guard is None or not accelerator.sync_gradients or guard.check(loss, model.parameters())
            clip_and_step(config, accelerator, model, optimizer, scheduler, apply=apply)
        return {"loss": loss.detach(), **logs}

    return train_batch


def train_single_model(
    config: TrainingConfig,
    accelerator: Accelerator,
    model: nn.Module,
    optimizer,
    scheduler,
    train_loader,
    state: TrainingState,
    max_steps: int,
    compute_loss: ComputeLoss,
    evaluate: Evaluate | None = None,
) -> float:
    """Train one prepared model to `max_steps` optimizer steps (see the module's example); returns the seconds
    spent training in this call (`state.train_seconds` holds the total over resumes)."""
    guard = DivergenceGuard.from_args(config, accelerator, state)
    train_batch = single_model_step(config, accelerator, model, optimizer, scheduler, compute_loss, guard)
    loop = TrainingLoop(
        config, accelerator, state, train_loader, max_steps, train_batch, evaluate=evaluate, scheduler=scheduler
    )
    return loop.run()


class RunningLosses:
    """Means of the logged values over the batches since the last log line."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, logs: dict[str, torch.Tensor]) -> None:
        for key, value in logs.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value)
        self.count += 1

    def mean(self) -> dict[str, float]:
        means = {key: value / max(self.count, 1) for key, value in self.sums.items()}
        self.sums, self.count = {}, 0
        return {key: value for key, value in means.items() if math.isfinite(value)} | {
            key: str(value) for key, value in means.items() if not math.isfinite(value)
        }
