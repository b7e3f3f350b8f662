"""The base of every error a user can cause and fix (a bad flag or config, unusable data, a model or weights that
cannot be found, a push the Hub would refuse). The `hf-vq` command prints their message as one line, without a
traceback (`--debug` or `HF_VQ_DEBUG=1` shows it); anything else is a bug and keeps its traceback.

Example:
    >>> from hf_vq.errors import ConfigError, HfVqUserError
    >>> issubclass(ConfigError, HfVqUserError) and issubclass(ConfigError, ValueError)
    True
"""

from __future__ import annotations

from typing import Callable


class HfVqUserError(Exception):
    """Something the user asked for cannot work; the message says what was wrong and what to do."""

    exit_code = 1


class ConfigError(HfVqUserError, ValueError):
    """A bad config file, flag value or combination of flags (exit code 2, as argparse's own usage errors)."""

    exit_code = 2


def debug_requested(argv_flag: bool = False) -> bool:
    """`--debug` was given or HF_VQ_DEBUG is set (to anything but "", "0", "false"): show tracebacks."""
    import os

    return argv_flag or os.environ.get("HF_VQ_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def run_reporting_user_errors(prog: str, run: Callable[[], object], debug: bool = False) -> int:
    """Run a command; a `HfVqUserError` becomes one line `<prog>: error: <message>` on stderr and its exit code
    (`SystemExit`), unless `debug_requested(debug)`, which lets the traceback through. Returns 0 on success."""
    import sys

    try:
        run()
    except HfVqUserError as error:
        if debug_requested(debug):
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        sys.stderr.write(f"{prog}: error: {message}\n")
        raise SystemExit(error.exit_code) from None
    return 0
