"""Kill points: where the robustness tests stop a real process with SIGKILL.

A test sets one of the commands' pause variables (`checkpointing.PAUSE_IN_SAVE_ENV`,
`final_save.PAUSE_IN_FINAL_SAVE_ENV`, `encoding.PAUSE_IN_SHARD_ENV`); the code at that point calls
`pause_for_a_kill`, which says where it stopped and waits there for the kill, so the test kills it at exactly that
moment of a save instead of racing it with a timer.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def pause_for_a_kill(marker: Path) -> None:
    """Write this process's PID to `marker` (the test waits for the file) and wait there for the test's SIGKILL."""
    marker.write_text(str(os.getpid()))
    time.sleep(3600)


__all__ = ["pause_for_a_kill"]
