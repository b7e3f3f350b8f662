"""One training run per output directory: `hf_vq_run.lock` in `--output_dir` names the run that holds it (PID, host,
start time). Two runs on one folder would otherwise both exit 0 and overwrite each other's checkpoints, metrics and
weights. A second run is refused with one line naming the holder; a lock whose process is gone (killed with
SIGKILL, the machine rebooted) is taken over with a warning. A lock from another host cannot be checked: it is
refused too, and the message says how to remove it when that run is known to be over.

Only the main process takes the lock (the other processes of a `torchrun` job are the same run); every process
learns the outcome, so that a refused job stops everywhere instead of leaving some processes waiting.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any, Callable

from .errors import RunLockedError

logger = logging.getLogger(__name__)

LOCK_FILE = "hf_vq_run.lock"


def _process_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (Linux), which tells a live holder from a new process that reused its PID."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def this_process() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "start_time": _process_start_time(os.getpid())}


def holder_is_gone(holder: dict[str, Any]) -> bool:
    """True when the lock's holder ran on this host and is no longer running (or its PID now names another
    process), or when the lock is unreadable. A holder on another host is assumed alive: it cannot be checked."""
    if not holder:
        return True
    if holder.get("host") != socket.gethostname():
        return False
    pid = int(holder.get("pid", -1))
    if pid <= 0 or not _is_alive(pid):
        return True
    recorded = holder.get("start_time")
    return recorded is not None and _process_start_time(pid) not in (None, recorded)


def acquire_run_lock(output_dir: str | Path) -> Path:
    """Take `output_dir`'s lock for this process (released at exit), or raise `RunLockedError`. A lock this
    process already holds (several runs in turn in one Python process) is kept."""
    path = Path(output_dir) / LOCK_FILE
    me = this_process()
    for _ in range(2):  # a second try after removing a stale lock (another run may take it first)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _read_holder(path)
            if holder is not None and holder.get("pid") == me["pid"] and holder.get("host") == me["host"]:
                return path
            if holder is not None and not holder_is_gone(holder):
                raise RunLockedError(
                    f"{output_dir} is in use by another training run (PID {holder.get('pid')} on "
                    f"{holder.get('host')}, {path.name}): wait for it to end or use another --output_dir (delete "
                    f"{path} only if that run is over)"
                ) from None
            logger.warning("taking over %s: its run (%s) is no longer running", path, _describe(holder))
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(descriptor, "w") as handle:
            json.dump(me, handle)
        atexit.register(release_run_lock, output_dir)
        return path
    raise RunLockedError(f"{output_dir} was locked by another run starting at the same time ({path})")


def release_run_lock(output_dir: str | Path) -> None:
    """Remove the lock if this process holds it (never another run's)."""
    path = Path(output_dir) / LOCK_FILE
    holder = _read_holder(path)
    if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


def hold_run_lock(accelerator, output_dir: str | Path, on_acquired: Callable[[Path], None] | None = None) -> None:
    """The main process takes the lock and then, as the folder's only writer now, calls `on_acquired(output_dir)`
    (the loop finishes a final save a kill interrupted); every process raises `RunLockedError` if it could not."""
    import torch

    error: RunLockedError | None = None
    if accelerator.is_main_process:
        try:
            acquire_run_lock(output_dir)
            if on_acquired is not None:
                on_acquired(Path(output_dir))
        except RunLockedError as refused:
            error = refused
    refused = torch.tensor([0.0 if error is None else 1.0], device=accelerator.device)
    if accelerator.num_processes > 1:
        refused = accelerator.reduce(refused, reduction="sum")
    if error is not None:
        raise error
    if float(refused) > 0:
        raise RunLockedError(f"{output_dir} is in use by another training run (see the main process' message)")


def _read_holder(path: Path) -> dict[str, Any] | None:
    """The holder recorded in the lock; an unreadable or empty lock (a kill between create and write) reads as
    an empty record from no host, which counts as stale."""
    try:
        content = json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        content = {}
    return content if isinstance(content, dict) else {}


def _describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "unreadable lock"
    return f"PID {holder.get('pid')} on {holder.get('host')}"
