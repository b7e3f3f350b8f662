"""Ctrl-C and SIGTERM (what `timeout`, Slurm and Kubernetes send) during training: the first signal lets the current
optimizer step finish, then a checkpoint is written and the run stops with one line, "interrupted at step N;
checkpoint-N saved; resume with --resume_from_checkpoint latest", and exit code 130 (SIGINT) or 143 (SIGTERM), as a
shell reports a process killed by them. A second signal stops the process at once (same exit codes, no checkpoint).

Under several processes every process must stop at the same step (a checkpoint is a collective): the request is
reduced over the processes after each optimizer step, so one process receiving the signal stops them all there.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Callable

import torch

from .errors import TrainingInterrupted

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class InterruptHandler:
    """Installs handlers for SIGINT and SIGTERM inside a `with` block (main thread only; elsewhere it does nothing)
    and restores the previous ones after it.

    Example:
        >>> import os, signal
        >>> with InterruptHandler() as interrupts:
        ...     os.kill(os.getpid(), signal.SIGTERM)  # finishes the "step", then:
        ...     interrupts.received
        15
    """

    def __init__(self):
        self.received = 0  # the first signal's number, 0 while none came
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "InterruptHandler":
        if threading.current_thread() is threading.main_thread():
            for number in HANDLED_SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        if self.received:
            # The run is stopping: keep "a second signal stops at once" through the clean-up that follows (the
            # final log lines, closing trackers, interpreter exit). Restoring Python's default here turned a
            # quick second Ctrl-C into a KeyboardInterrupt traceback and a death by SIGINT instead of exit 130.
            self._previous = {}
            return
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous = {}

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if self.received:
            sys.stderr.write(f"\nsecond {signal.Signals(number).name}: stopping now, without a checkpoint\n")
            sys.stderr.flush()
            os._exit(128 + number)  # at once: no clean-up that could block (a collective, a slow save)
        self.received = number
        sys.stderr.write(
            f"\n{signal.Signals(number).name} received: finishing this step and saving a checkpoint "
            "(send it again to stop at once)\n"
        )
        sys.stderr.flush()

    def agreed_signal(self, accelerator) -> int:
        """The signal any process received (0: none), the same on every process (one small collective)."""
        if accelerator is None or accelerator.num_processes == 1:
            return self.received
        flag = torch.tensor([float(self.received)], device=accelerator.device)
        return int(accelerator.reduce(flag, reduction="max").item())


def stop_if_interrupted(
    interrupts: InterruptHandler, accelerator, step: int, save_checkpoint: Callable[[], Path]
) -> None:
    """After optimizer step `step`: if any process got a signal, every process saves `checkpoint-<step>` with
    `save_checkpoint()` (a collective; it may return the one the step already wrote) and raises
    `TrainingInterrupted`."""
    number = interrupts.agreed_signal(accelerator)
    if not number:
        return
    checkpoint = save_checkpoint()
    raise TrainingInterrupted(
        f"interrupted at step {step}; {checkpoint.name} saved; resume with --resume_from_checkpoint latest", number
    )
