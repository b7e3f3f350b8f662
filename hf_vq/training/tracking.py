"""A plain JSON-lines tracker for Accelerate: one `{"step": N, ...}` line per `accelerator.log` call, readable with
nothing but the standard library (tensorboard is optional)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from accelerate.tracking import GeneralTracker


class JSONLTracker(GeneralTracker):
    """Appends every logged dict to `<logging_dir>/<run_name>.jsonl` (appending, so a resumed run continues the file).

    Example:
        >>> import tempfile
        >>> tracker = JSONLTracker("run", tempfile.mkdtemp())
        >>> tracker.log({"loss": 0.5}, step=1)
        >>> tracker.path.read_text()
        '{"step": 1, "loss": 0.5}\\n'
    """

    name = "jsonl"
    requires_logging_directory = True
    main_process_only = True

    def __init__(self, run_name: str, logging_dir: str | os.PathLike):
        super().__init__()
        self.path = Path(logging_dir) / f"{run_name}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def tracker(self) -> Path:
        return self.path

    def store_init_configuration(self, values: dict[str, Any]) -> None:
        config_path = self.path.with_name(self.path.stem + "_config.json")
        config_path.write_text(json.dumps(values, indent=2, sort_keys=True, default=str))

    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        record = {"step": step, **{key: _plain(value) for key, value in values.items()}}
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")


def _plain(value: Any) -> Any:
    """Tensors and numpy scalars to Python numbers; NaN/Inf as strings (JSON has no such numbers)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def log_image_grid(accelerator: Any, path: str | os.PathLike, step: int, tag: str = "samples") -> None:
    """Log a saved image grid (PNG) to every tracker that takes images (tensorboard, wandb); the JSON-lines tracker
    only records its path. Main process only, where the grid was written."""
    path = Path(path)
    if not accelerator.is_main_process or not path.is_file():
        return
    import numpy as np
    import PIL.Image

    with PIL.Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({tag: pixels[None]}, step=step, dataformats="NHWC")
        elif tracker.name == "wandb":
            tracker.log_images({tag: [pixels]}, step=step)
        elif tracker.name == JSONLTracker.name:
            tracker.log({f"{tag}_image": str(path)}, step=step)
