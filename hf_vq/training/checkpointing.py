"""Checkpoint folders `checkpoint-<step>` under the output directory (diffusers' example scripts' layout), their
retention limit, and the small training state that travels with Accelerate's `save_state`."""

from __future__ import annotations

import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

CHECKPOINT_PATTERN = re.compile(r"checkpoint-(\d+)")


@dataclass
class TrainingState:
    """Counters that `accelerator.save_state` stores beside the weights (registered for checkpointing), so that a
    resumed run knows its step, where it was in its epoch, how many images were seen and skipped so far, and how
    long it has trained (throughput over the whole run, not since the last resume)."""

    global_step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    images_seen: int = 0
    skipped_images: int = 0
    train_seconds: float = 0.0

    def state_dict(self) -> dict[str, int | float]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, int | float]) -> None:
        for key, value in state.items():
            # Each field keeps its own type (older checkpoints lack train_seconds: it stays 0).
            setattr(self, key, type(getattr(self, key))(value))


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """`checkpoint-<step>` folders of `output_dir`, oldest (smallest step) first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.iterdir() if p.is_dir() and CHECKPOINT_PATTERN.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(CHECKPOINT_PATTERN.fullmatch(p.name).group(1)))


def resolve_resume_checkpoint(resume_from_checkpoint: str | None, output_dir: str | Path) -> Path | None:
    """The folder to resume from: `latest` picks the newest of `output_dir` (None when there is none yet, so that
    `--resume_from_checkpoint latest` also starts a fresh run), a path must exist."""
    if not resume_from_checkpoint:
        return None
    if resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1] if checkpoints else None
    path = Path(resume_from_checkpoint)
    if not path.is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint {resume_from_checkpoint!r}: no such checkpoint folder")
    return path


def prune_checkpoints(output_dir: str | Path, total_limit: int | None, about_to_save: int = 1) -> list[Path]:
    """Delete the oldest checkpoints so that at most `total_limit` remain after saving `about_to_save` more.
    Call on the main process only, before `save_state`. Returns the deleted folders."""
    if total_limit is None:
        return []
    checkpoints = list_checkpoints(output_dir)
    excess = len(checkpoints) + about_to_save - total_limit
    removed = checkpoints[: max(excess, 0)]
    for folder in removed:
        shutil.rmtree(folder)
    return removed
