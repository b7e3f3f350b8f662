"""`hf-vq`: the command-line entry point. Each subcommand lives with the code it runs and is listed in
`commands.py`; this file parses the line with the parser built there, and turns the project's own errors
(`hf_vq.errors.HfVqUserError`: a bad flag or config, unusable data, missing weights or tokenizer, a push the Hub
refuses) into one line, `hf-vq <command>: error: <message>`, without a traceback. `--debug` (anywhere on the line) or
`HF_VQ_DEBUG=1` shows the traceback."""

from __future__ import annotations

import os
import sys

from .commands import build_parser, subcommand_parsers, unrecognized_flags_message
from .errors import run_reporting_user_errors
from .logs import quiet_third_party_logs

# The subcommand table and the parser built from it live in commands.py, where the commands' own flag checks find
# them too; this file is the entry point: one-line errors, --debug.
__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse's message, plus the command that has a flag given to the wrong one
        subcommand_parsers(parser)[args.command].error(unrecognized_flags_message(args.command, unknown))
    debug = vars(args).pop("debug", False)
    if debug:  # what a command reads deeper down (tracebacks, third-party logs) through debug_requested()
        os.environ["HF_VQ_DEBUG"] = "1"
    with quiet_third_party_logs(debug):  # other libraries' INFO lines (HTTP requests, faiss' loader) unless --debug
        return run_reporting_user_errors(f"hf-vq {args.command}", lambda: args.handler(args), debug=debug)


if __name__ == "__main__":
    sys.exit(main())
