"""The summary every training command prints before its first step (as diffusers' example scripts do): what will
be trained on what, for how long, on how many processes and in which precision."""

from __future__ import annotations

import math
from typing import Any

from torch import nn


def run_summary(
    *,
    examples: int | None,
    batch_size_per_process: int,
    num_processes: int,
    gradient_accumulation_steps: int,
    max_train_steps: int,
    models: dict[str, nn.Module | None],
    mixed_precision: str,
    start_step: int = 0,
) -> str:
    """The lines of the summary. `examples` None: a streamed dataset of unknown length.

    Example:
        >>> from torch import nn
        >>> print(run_summary(examples=100, batch_size_per_process=8, num_processes=2, gradient_accumulation_steps=2,
        ...                   max_train_steps=10, models={"model": nn.Linear(2, 2)}, mixed_precision="no"))
        ***** Running training *****
          examples                          = 100
          batch size per process            = 8
          total batch size                  = 32 (8 x 2 processes x 2 accumulation)
          optimizer steps                   = 10
          epochs                            = 4
          parameters (model)                = 6
          processes                         = 2
          mixed precision                   = no
    """
    total = batch_size_per_process * num_processes * gradient_accumulation_steps
    epochs = "unknown (streamed)" if examples is None else math.ceil(max_train_steps * total / max(examples, 1))
    rows: list[tuple[str, Any]] = [
        ("examples", "unknown (streamed)" if examples is None else examples),
        ("batch size per process", batch_size_per_process),
        (
            "total batch size",
            f"{total} ({batch_size_per_process} x {num_processes} processes x "
            f"{gradient_accumulation_steps} accumulation)",
        ),
        ("optimizer steps", max_train_steps if not start_step else f"{max_train_steps} (resuming at {start_step})"),
        ("epochs", epochs),
    ]
    for name, model in models.items():
        if model is not None:
            rows.append((f"parameters ({name})", sum(parameter.numel() for parameter in model.parameters())))
    rows += [("processes", num_processes), ("mixed precision", mixed_precision)]
    return "\n".join(["***** Running training *****"] + [f"  {name:<33} = {value}" for name, value in rows])
