"""The final model folder, written so that it never mixes two runs: the new model (weights, config, processor,
training_config.json...) is written completely into `<output_dir>/.hf_vq_final.tmp`, flushed to disk, and only
then swapped in by renames: the previous model's files (and its metrics.json, samples.png, card: they describe the
previous model) move aside to `<output_dir>/.hf_vq_final.old` with the file that makes a folder loadable
(`config.json`, or `model_index.json` for a pipeline) first, the new files move in with that file last, then the
old ones are deleted.

So a kill at any moment leaves the previous model (nothing was moved yet), the new one (everything was moved), or,
during the few renames in between, a folder without `config.json` that refuses to load rather than load a mix;
the next save or training run on the folder finishes that swap (`recover_interrupted_final_save`). A failed
write (a full disk...) removes the temporary folder and raises `FinalSaveError` with one line: the previous
model and the checkpoints are untouched. Checkpoints, logs, the run lock and hidden entries are never moved.

Test hook: `HF_VQ_TEST_PAUSE_IN_FINAL_SAVE=<point>` (`staged`, `swapping` or `swapped`) pauses the main process
at that point, dropping a `paused` file into the temporary folder, so that a test can kill it there.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Callable

import torch

from .checkpointing import (
    CHECKPOINT_PATTERN,
    fsync_file,
    fsync_directory,
    describe,
    last_good_checkpoint,
)
from .errors import FinalSaveError
from .kill_points import pause_for_a_kill
from .run_lock import LOCK_FILE

logger = logging.getLogger(__name__)

STAGING_FOLDER = ".hf_vq_final.tmp"
OLD_FOLDER = ".hf_vq_final.old"
# Written last into the staging folder: the new model is complete and may be swapped in.
COMPLETE_MARKER = ".complete"
# Written once the previous model is moved aside: from then on the model entries of the folder are the new ones.
MOVING_IN_MARKER = ".moving_in"
# The files that make a folder loadable (transformers' from_pretrained, diffusers' DiffusionPipeline): they leave
# first and arrive last, so that no moment has one of them beside the other run's files.
LOADABLE_MARKERS = ("config.json", "model_index.json")
# What a model folder holds (weights, configs, processor, remote code, card, metrics, sample grids); other files
# a user put there (notes.txt, data) stay.
ARTIFACT_SUFFIXES = (".json", ".safetensors", ".bin", ".py", ".png", ".md")
# The grids of the evaluations during training (`samples-<step>.png`) belong to the run, not to the final model.
PROGRESS_GRID_PATTERN = re.compile(r"samples-\d+\.png")
PAUSE_IN_FINAL_SAVE_ENV = "HF_VQ_TEST_PAUSE_IN_FINAL_SAVE"
PAUSE_POINTS = ("staged", "swapping", "swapped")


def write_folder_atomically(target: str | Path, write: Callable[[Path], None]) -> Path:
    """Replace the model in `target` by what `write(folder)` writes into an empty folder (see the module docstring).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> target = Path(tempfile.mkdtemp())
        >>> _ = write_folder_atomically(target, lambda folder: (folder / "config.json").write_text("{}"))
        >>> sorted(path.name for path in target.iterdir())
        ['config.json']
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    recover_interrupted_final_save(target)
    staging = target / STAGING_FOLDER
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        write(staging)
        _sync_tree(staging)
        (staging / COMPLETE_MARKER).touch()
        fsync_directory(staging)
    except Exception as error:  # OSError (no space left), safetensors' or torch's errors around it
        shutil.rmtree(staging, ignore_errors=True)
        raise FinalSaveError(
            f"could not write the final model to {target} ({type(error).__name__}: {error}). The folder still holds "
            f"what it held before, and the checkpoints are intact "
            f"(the newest: {describe(last_good_checkpoint(target))}"
            "); free disk space (or fix the cause), then run again with --resume_from_checkpoint latest"
        ) from error
    _pause_if_asked(staging, "staged")
    _swap_in(target, staging)
    return target


def save_folder_atomically(accelerator, target: str | Path, write: Callable[[Path], None]) -> None:
    """`write_folder_atomically` on the main process; every process raises `FinalSaveError` if it failed (so
    that none goes on to the final evaluation alone)."""
    error: FinalSaveError | None = None
    if accelerator.is_main_process:
        try:
            write_folder_atomically(target, write)
        except FinalSaveError as failed:
            error = failed
    failed = torch.tensor([0.0 if error is None else 1.0], device=accelerator.device)
    if accelerator.num_processes > 1:
        failed = accelerator.reduce(failed, reduction="sum")
    if error is not None:
        raise error
    if float(failed) > 0:
        raise FinalSaveError(f"could not write the final model to {target} (see the main process' message)")


def recover_interrupted_final_save(target: str | Path) -> None:
    """Finish a swap a kill interrupted: a complete staging folder is moved in (the kill came after the new model
    was fully written), an incomplete one is deleted, and the previous model comes back if the swap had not begun
    moving the new one in."""
    target = Path(target)
    staging, old = target / STAGING_FOLDER, target / OLD_FOLDER
    if (staging / COMPLETE_MARKER).is_file():
        logger.warning("finishing the final save a kill interrupted in %s", target)
        _swap_in(target, staging)
        return
    shutil.rmtree(staging, ignore_errors=True)
    if old.is_dir():  # the new model was swapped in completely (no staging left): the old one can go
        shutil.rmtree(old)


def _swap_in(target: Path, staging: Path) -> None:
    """Move the previous model aside, then the new one in (the `MOVING_IN` marker separates the two phases, so that
    a recovery after a kill knows whether the model entries of `target` are still the previous one's)."""
    old = target / OLD_FOLDER
    if not (staging / MOVING_IN_MARKER).is_file():
        old.mkdir(exist_ok=True)
        arriving = _staged_entries(staging)
        leaving = set(_artifact_entries(target)) | {name for name in arriving if (target / name).exists()}
        for name in _markers_first(leaving):
            _move(target / name, old / name)
        fsync_directory(target)
        (staging / MOVING_IN_MARKER).touch()
        fsync_directory(staging)
        _pause_if_asked(staging, "swapping")
    for name in reversed(_markers_first(_staged_entries(staging))):  # the loadable marker last
        _move(staging / name, target / name)
    fsync_directory(target)
    _pause_if_asked(staging, "swapped")
    shutil.rmtree(staging)
    shutil.rmtree(old, ignore_errors=True)
    fsync_directory(target)


def _staged_entries(staging: Path) -> list[str]:
    return [
        entry.name for entry in staging.iterdir() if entry.name not in (COMPLETE_MARKER, MOVING_IN_MARKER, "paused")
    ]


def _artifact_entries(target: Path) -> list[str]:
    """The previous model's entries of `target`: model files, and the sub-folders its `model_index.json` names (a
    pipeline's components); never checkpoints, their leftovers, logs, the lock, or hidden entries."""
    names = [entry.name for entry in target.iterdir() if entry.is_file() and entry.suffix in ARTIFACT_SUFFIXES]
    names = [name for name in names if not (name == LOCK_FILE or PROGRESS_GRID_PATTERN.fullmatch(name))]
    return names + [name for name in _pipeline_components(target) if (target / name).is_dir()]


def _pipeline_components(folder: Path) -> list[str]:
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError):
        return []
    return [
        name
        for name, value in index.items()
        if not name.startswith("_")
        and isinstance(value, list)
        and not name.startswith(".")
        and not CHECKPOINT_PATTERN.fullmatch(name)
        and "/" not in name
    ]


def _markers_first(names: list[str]) -> list[str]:
    return sorted(names, key=lambda name: (name not in LOADABLE_MARKERS, name))


def _move(source: Path, destination: Path) -> None:
    """A rename that replaces `destination`, folder or file (a folder cannot be renamed over a non-empty one)."""
    if destination.is_dir():
        shutil.rmtree(destination)
    os.replace(source, destination)


def _sync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            fsync_file(path)


def _pause_if_asked(staging: Path, point: str) -> None:
    if os.environ.get(PAUSE_IN_FINAL_SAVE_ENV) == point:
        pause_for_a_kill(staging / "paused")
