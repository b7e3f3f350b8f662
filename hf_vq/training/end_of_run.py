"""The end of every training run, shared by `train-tokenizer`, `train-classifier` and `train-prior`.

In this order, so that a failure late in the run never loses the trained model:
1. `save_final_folder`: the final model folder (EMA weights when kept, see `ema_weights`), written by the command's
   own `write_folder(folder)` (`save_pretrained` of a model and its processor, or of a pipeline), with
   `training_config.json` (the run's flags: what the model card shows). It is the one place a final folder is
   written: it refuses weights that are not finite, and writes atomically (`final_save.py`: the folder holds
   either the earlier run's model or this one's, never a mix);
2. `finish_run`: the final evaluation (`final_evaluation`: a failure writes metrics.json with the training summary
   and the error, and names the saved folder), metrics.json, the numbers to the trackers, and the push to the Hub
   when `--push_to_hub` asks;
3. `close_run`: the trackers ended, the process group and the run lock of `--output_dir` released.

Example (how `train-classifier` ends)::

    output_dir = save_final_folder(config, accelerator, model, state.global_step,
                                   lambda folder: model.save_pretrained(folder, image_processor=processor))
    result = finish_run(config, accelerator, state, summary, evaluate=lambda: {"accuracy": accuracy(model)})
    close_run(accelerator, config)
"""

from __future__ import annotations

import gc
import json
import logging
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from accelerate import Accelerator
from torch import nn

from .args import EMAArguments, TokenTrainingConfig, TrainingConfig, flag_values
from .checkpointing import TrainingState
from .divergence import ensure_finite_weights
from .errors import FinalEvaluationError
from .final_save import save_folder_atomically
from .run_lock import release_run_lock

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
SAMPLES_FILE = "samples.png"
TRAINING_CONFIG_FILE = "training_config.json"


# ------------------------------------------------------------------------------------------------ EMA


def build_ema(config: EMAArguments, model: nn.Module):
    """diffusers' EMAModel (the EMA of diffusers' example training scripts) of `model`'s parameters when
    `--use_ema`, else None: decay warm-up, `store`/`restore` for evaluating with EMA weights, and `state_dict` so
    Accelerate checkpoints it. It averages parameters only: buffers (a quantizer's codebook bookkeeping, running
    statistics) come from the live model."""
    if not config.use_ema:
        return None
    from diffusers.training_utils import EMAModel

    return EMAModel(model.parameters(), decay=config.ema_decay, use_ema_warmup=config.ema_warmup, power=3 / 4)


@contextmanager
def ema_weights(accelerator: Accelerator, model: nn.Module, ema) -> Iterator[nn.Module]:
    """The unwrapped `model`, holding its EMA weights inside the block (when `ema` is not None), its own weights
    again after it."""
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


# ------------------------------------------------------------------------------------------------ the final folder


def save_final_folder(
    config: TrainingConfig, accelerator: Accelerator, model: nn.Module, step: int, write_folder: Callable[[Path], None]
) -> Path:
    """Write the run's final folder, `--output_dir`: the one place every command's final model is written.

    `model` (unwrapped, with the weights to save) is refused (`TrainingDivergedError`) if a weight is not finite;
    then the main process calls `write_folder(staging)` (the model files) and writes training_config.json into a
    staging folder that replaces the earlier model atomically (`final_save.save_folder_atomically`), and every
    process waits for it. Returns the folder (absolute)."""
    output_dir = Path(config.output_dir).resolve()
    ensure_finite_weights([model], step, config.output_dir)

    def write(folder: Path) -> None:
        write_folder(folder)
        write_json(folder / TRAINING_CONFIG_FILE, training_config(config))

    save_folder_atomically(accelerator, output_dir, write)
    return output_dir


def training_config(config: TrainingConfig) -> dict[str, Any]:
    """The flags of the run and the config file's model: section (read by the model card); the Hub token stays out."""
    return flag_values(config)


def write_json(path: Path, content: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2, sort_keys=True, default=str) + "\n")


# ------------------------------------------------------------------------------------------------ metrics and push


def finish_run(
    config: TrainingConfig,
    accelerator: Accelerator,
    state: TrainingState,
    summary: dict[str, Any],
    evaluate: Callable[[], dict[str, Any]],
) -> dict[str, Any]:
    """Evaluate the saved final model (`evaluate()`), write metrics.json (the evaluation's numbers and the
    training `summary`), log them and push the folder when asked. Returns `{"output_dir", "metrics",
    "metrics_path", "global_step", "is_main_process"}` (absolute paths)."""
    output_dir = Path(config.output_dir).resolve()
    metrics = final_evaluation(accelerator, evaluate, output_dir, summary) | summary
    metrics = publish_final_metrics(config, accelerator, output_dir, metrics, state.global_step)
    return {
        "output_dir": str(output_dir),
        "metrics": metrics,
        "metrics_path": str(output_dir / METRICS_FILE),
        "global_step": state.global_step,
        "is_main_process": accelerator.is_main_process,
    }


def final_evaluation(
    accelerator: Accelerator, evaluate: Callable[[], dict[str, Any]], output_dir: Path, summary: dict[str, Any]
) -> dict[str, Any]:
    """`evaluate()` of the final model, which the command has already saved in `output_dir`. If it fails, the
    main process writes metrics.json with `summary` and the error, and `FinalEvaluationError` names the folder
    (the trained model is never lost to a failing evaluation)."""
    try:
        return evaluate()
    except Exception as error:
        if accelerator.is_main_process:
            failure = {"evaluation_error": f"{type(error).__name__}: {error}"}
            write_metrics(output_dir / METRICS_FILE, summary | failure)
        raise FinalEvaluationError(
            f"the final evaluation failed ({type(error).__name__}: {error}); the trained model, its processor and "
            f"the training summary are saved in {output_dir}",
            str(output_dir),
        ) from error


def publish_final_metrics(
    config: TrainingConfig, accelerator: Accelerator, output_dir: Path, metrics: dict[str, Any], step: int
) -> dict[str, Any]:
    """Once the final model is saved and evaluated: the main process writes metrics.json, logs the numbers to the
    trackers and pushes the folder when `--push_to_hub` asks. Returns the metrics as written (on the other
    processes: as given)."""
    if not accelerator.is_main_process:
        return metrics
    metrics = write_metrics(output_dir / METRICS_FILE, metrics)
    accelerator.log(
        {f"final/{key}": value for key, value in metrics.items() if isinstance(value, (int, float))}, step=step
    )
    from ..hub import push_trained_model  # the Hub code is imported only by runs that finish

    # A classifier's or prior's card links the tokenizer it reads; train-tokenizer has no such flag.
    tokenizer_hub_id = config.tokenizer_hub_id if isinstance(config, TokenTrainingConfig) else None
    url = push_trained_model(config, output_dir, tokenizer_hub_id=tokenizer_hub_id)
    if url:
        logger.info("pushed %s to %s", output_dir, url)
    return metrics


def write_metrics(path: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """metrics.json: NaN and infinities become null (the Hub's metrics check wants null for a metric that could
    not be measured). Returns what was written."""
    metrics = {
        key: None if isinstance(value, float) and not math.isfinite(value) else value for key, value in metrics.items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True, default=str) + "\n")
    return metrics


def close_run(accelerator: Accelerator, config: TrainingConfig) -> None:
    """Release the prepared (maybe DDP) models while the process group still exists, wait for every process, then
    let Accelerate end the trackers and destroy the group. (A DDP reducer outliving its gloo group, or one process
    tearing gloo down while another still talks to it, can hang or abort the process at exit.) The caller drops
    its own references to the prepared models first. Last, the next run on `--output_dir` may start (run_lock.py)."""
    accelerator.free_memory()
    gc.collect()
    accelerator.wait_for_everyone()
    accelerator.end_training()
    release_run_lock(config.output_dir)


__all__ = [
    "METRICS_FILE",
    "SAMPLES_FILE",
    "TRAINING_CONFIG_FILE",
    "build_ema",
    "close_run",
    "ema_weights",
    "final_evaluation",
    "finish_run",
    "publish_final_metrics",
    "save_final_folder",
    "training_config",
    "write_json",
    "write_metrics",
]
