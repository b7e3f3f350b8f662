"""Keeping other libraries' INFO logs out of hf_vq's output: every `hf-vq` command and training script runs inside
`quiet_third_party_logs` (hf_vq/cli.py, `training.args.run_script`).

A training run configures the root logger at INFO, so a push after training (and `hf-vq push` where anything did
the same) printed a line per HTTP request (httpx, urllib3), faiss' loader messages and huggingface_hub's progress
notes between hf_vq's own lines. `quiet_third_party_logs` raises those loggers to WARNING for the duration of a
push: warnings and errors still show, and `--debug` / `HF_VQ_DEBUG=1` keeps everything.

A training run's own lines (and Accelerate's) stay at INFO; only the loggers of `NOISY_LOGGERS` are raised.

Example:
    >>> import logging
    >>> with quiet_third_party_logs():
    ...     logging.getLogger("httpx").isEnabledFor(logging.INFO)
    False
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

from .errors import debug_requested

# Loggers of the libraries a push (or a run) goes through that log at INFO on every request or import.
NOISY_LOGGERS = (
    "httpx",
    "httpx2",
    "httpcore",
    "httpcore2",
    "urllib3",
    "requests",
    "faiss",
    "faiss.loader",
    "huggingface_hub",
    "filelock",
)


@contextmanager
def quiet_third_party_logs(debug: bool = False, loggers: tuple[str, ...] = NOISY_LOGGERS) -> Iterator[None]:
    """Within the block, `loggers` show warnings and errors only, unless `debug_requested(debug)`; their levels
    are restored afterwards."""
    if debug_requested(debug):
        yield
        return
    previous = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logger = logging.getLogger(name)
        logger.setLevel(max(logging.WARNING, logger.level))
    try:
        yield
    finally:
        for name, level in previous.items():
            logging.getLogger(name).setLevel(level)


__all__ = ["NOISY_LOGGERS", "quiet_third_party_logs"]
