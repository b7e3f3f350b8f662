"""Checkpoint folders `checkpoint-<step>` under the output directory (diffusers' example scripts' layout), written
so that a kill at any moment never leaves a folder that `--resume_from_checkpoint latest` would pick and fail on.

A save goes to `checkpoint-<step>.tmp` (every process writes its part: Accelerate's `save_state` stores one RNG
file per process), then, once every process has finished, the main process writes a manifest
(`hf_vq_checkpoint.json`: each file with its size and sha256), flushes everything to disk and renames the folder
into place: a `checkpoint-<step>` folder with a manifest that matches its files is complete. Older checkpoints are
pruned (`--checkpoints_total_limit`) only after that. Resuming from `latest` skips, with a warning naming them,
folders without a manifest or whose files do not match its sizes, and leftover `.tmp` folders of interrupted saves.
The checksums are verified when a checkpoint is loaded (`checksum_problem`): they catch what sizes cannot (a
same-size corruption of, say, the RNG state, which Accelerate would only log at INFO and skip: a silently inexact
resume), and `latest` then falls back to the next older checkpoint. Manifests of older hf_vq versions have sizes
only and are checked on those.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import CheckpointError
from .kill_points import pause_for_a_kill

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"checkpoint-(\d+)")
TEMPORARY_PATTERN = re.compile(r"checkpoint-(\d+)\.(tmp|old)")
MANIFEST_FILE = "hf_vq_checkpoint.json"
# Test hook: with this set to a step number, the main process pauses inside that step's save, after Accelerate
# has written the state and before the checkpoint is complete, and drops a `paused` file into the temporary
# folder, so that a test can kill the process at exactly that moment.
PAUSE_IN_SAVE_ENV = "HF_VQ_TEST_PAUSE_IN_SAVE"


@dataclass
class TrainingState:
    """Counters that `accelerator.save_state` stores beside the weights (registered for checkpointing), so that a
    resumed run knows its step, where it was in its epoch, how many images were seen and skipped so far, how
    long it has trained (throughput over the whole run, not since the last resume; wall-clock and CPU seconds of the
    process, the second unaffected by other work on a shared machine), and the divergence guard's
    loss levels (the running average, the loss before the first update, the first step whose loss exploded)."""

    global_step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    images_seen: int = 0
    skipped_images: int = 0
    train_seconds: float = 0.0
    train_cpu_seconds: float = 0.0
    loss_average: float = 0.0
    loss_observations: int = 0
    loss_at_start: float = 0.0
    skipped_steps: int = 0
    initial_loss: float = 0.0
    exploded_at_step: int = 0

    def state_dict(self) -> dict[str, int | float]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, int | float]) -> None:
        for key, value in state.items():
            # Each field keeps its own type (older checkpoints lack the newer fields: they keep their defaults).
            setattr(self, key, type(getattr(self, key))(value))


def checkpoint_step(folder: Path) -> int:
    return int(CHECKPOINT_PATTERN.fullmatch(folder.name).group(1))


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """`checkpoint-<step>` folders of `output_dir` (complete or not), oldest (smallest step) first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.iterdir() if p.is_dir() and CHECKPOINT_PATTERN.fullmatch(p.name)]
    return sorted(found, key=checkpoint_step)


def leftover_folders(output_dir: str | Path) -> list[Path]:
    """`checkpoint-<step>.tmp` / `.old` folders: what interrupted saves left behind."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    return sorted(p for p in output_dir.iterdir() if p.is_dir() and TEMPORARY_PATTERN.fullmatch(p.name))


def checkpoint_problem(folder: str | Path) -> str | None:
    """Why `folder` cannot be resumed from (no manifest, unreadable manifest, a file missing or of the wrong
    size), or None when it is complete. Checksums are verified when a checkpoint is loaded (`checksum_problem`):
    reading every byte of every checkpoint each time the folder is listed would be slow."""
    folder = Path(folder)
    manifest = folder / MANIFEST_FILE
    if not manifest.is_file():
        return f"no {MANIFEST_FILE} (its save was interrupted, or it was written by an older hf_vq)"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"{MANIFEST_FILE} is unreadable ({error})"
    for name, size in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes instead of {size}"
    return None


def checksum_problem(folder: str | Path) -> str | None:
    """The first file of `folder` whose sha256 differs from its manifest's (a same-size corruption), or None
    (also for manifests of older hf_vq versions, which have sizes only)."""
    folder = Path(folder)
    try:
        checksums = json.loads((folder / MANIFEST_FILE).read_text()).get("sha256", {})
    except (OSError, ValueError, AttributeError):
        return None  # no manifest, or an unreadable one: `checkpoint_problem` reports it
    for name, checksum in checksums.items():
        if not (folder / name).is_file() or file_sha256(folder / name) != checksum:
            return f"{name} does not match its sha256 in {MANIFEST_FILE} (the file was changed or corrupted)"
    return None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def complete_checkpoints(output_dir: str | Path, warn: bool = False) -> list[Path]:
    """The complete checkpoints of `output_dir`, newest first; with `warn`, log each folder skipped and why."""
    good = []
    for folder in reversed(list_checkpoints(output_dir)):
        problem = checkpoint_problem(folder)
        if problem is None:
            good.append(folder)
        elif warn:
            logger.warning("skipping incomplete checkpoint %s: %s", folder, problem)
    if warn:
        for folder in leftover_folders(output_dir):
            logger.warning("skipping %s: left by an interrupted save (it is deleted at the next save)", folder)
    return good


def last_good_checkpoint(output_dir: str | Path) -> Path | None:
    found = complete_checkpoints(output_dir)
    return found[0] if found else None


def resolve_resume_checkpoint(resume_from_checkpoint: str | None, output_dir: str | Path) -> Path | None:
    """The folder to resume from (see `resume_candidates`)."""
    candidates = resume_candidates(resume_from_checkpoint, output_dir)
    return candidates[0] if candidates else None


def resume_candidates(resume_from_checkpoint: str | None, output_dir: str | Path) -> list[Path]:
    """Checkpoints to try, best first. `latest`: the complete checkpoints of `output_dir`, newest first (none
    yet: an empty list, so that `--resume_from_checkpoint latest` also starts a fresh run; incomplete ones are
    skipped with a warning). A path: that folder, which must exist and, when it has a manifest, match it."""
    if not resume_from_checkpoint:
        return []
    if resume_from_checkpoint == "latest":
        return complete_checkpoints(output_dir, warn=True)
    path = Path(resume_from_checkpoint)
    if not path.is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint {resume_from_checkpoint!r}: no such checkpoint folder")
    problem = checkpoint_problem(path)
    if problem is not None and (path / MANIFEST_FILE).is_file():
        raise CheckpointError(
            f"cannot resume from {path}: {problem}; pass --resume_from_checkpoint latest to take the "
            "newest complete checkpoint"
        )
    if problem is not None:
        logger.warning("resuming from %s although it has %s", path, problem.removeprefix("no "))
    return [path]


# ------------------------------------------------------------------------------------------------ saving


def temporary_folder(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / f"checkpoint-{step}.tmp"


def prepare_temporary_folder(output_dir: str | Path, step: int) -> Path:
    """Main process, before the save: an empty `checkpoint-<step>.tmp` (removing one an earlier kill left)."""
    folder = temporary_folder(output_dir, step)
    if folder.exists():
        shutil.rmtree(folder)
    return folder


def pause_if_asked(folder: Path, step: int) -> None:
    """The test hook of `PAUSE_IN_SAVE_ENV` (does nothing unless the variable names this step, or is "any")."""
    if os.environ.get(PAUSE_IN_SAVE_ENV) in (str(step), "any"):
        pause_for_a_kill(folder / "paused")


def complete_checkpoint(
    output_dir: str | Path, step: int, num_processes: int, extra: dict[str, Any] | None = None
) -> Path:
    """Main process, after every process has written its part into the temporary folder: write the manifest (with
    `extra`, e.g. the divergence guard's loss levels), flush to disk, rename the folder into place (replacing an
    older `checkpoint-<step>`)."""
    temporary, final = temporary_folder(output_dir, step), Path(output_dir) / f"checkpoint-{step}"
    files = {
        str(path.relative_to(temporary)): path.stat().st_size
        for path in sorted(temporary.rglob("*"))
        if path.is_file()
    }
    for name in files:
        fsync_file(temporary / name)
    checksums = {name: file_sha256(temporary / name) for name in files}
    manifest = {
        "format": 2,
        "step": step,
        "num_processes": num_processes,
        "files": files,
        "sha256": checksums,
        **(extra or {}),
    }
    _write_synced(temporary / MANIFEST_FILE, json.dumps(manifest, indent=1, sort_keys=True))
    replaced = None
    if final.exists():  # e.g. a run restarted in the same output_dir without resuming
        replaced = final.with_name(final.name + ".old")
        if replaced.exists():
            shutil.rmtree(replaced)
        final.rename(replaced)
    temporary.rename(final)
    fsync_directory(final.parent)
    if replaced is not None:
        shutil.rmtree(replaced)
    return final


def discard_temporary_folder(output_dir: str | Path, step: int) -> None:
    shutil.rmtree(temporary_folder(output_dir, step), ignore_errors=True)


def prune_checkpoints(output_dir: str | Path, total_limit: int | None) -> list[Path]:
    """Main process, after a checkpoint is complete: delete the oldest checkpoints beyond `total_limit` (and the
    leftovers of interrupted saves). Returns the deleted folders. The manifest goes first, so that a kill during
    the deletion leaves a folder that is visibly incomplete."""
    removed = leftover_folders(output_dir)
    if total_limit is not None:
        checkpoints = list_checkpoints(output_dir)
        removed += checkpoints[: max(len(checkpoints) - total_limit, 0)]
    for folder in removed:
        (folder / MANIFEST_FILE).unlink(missing_ok=True)
        shutil.rmtree(folder)
    return removed


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_directory(path: Path) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:  # not possible on every platform (Windows); the rename itself is still atomic
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def describe(folder: Any) -> str:
    return str(folder) if folder is not None else "none (no complete checkpoint was written yet)"
