"""`hf-vq`: the command-line entry point. Each subcommand lives with the code it runs; this file only
collects them, and turns the project's own errors (`hf_vq.errors.HfVqUserError`: a bad flag or config, unusable
data, missing weights or tokenizer, a push the Hub refuses) into one line, `hf-vq <command>: error: <message>`,
without a traceback. `--debug` (anywhere on the line) or `HF_VQ_DEBUG=1` shows the traceback."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .errors import run_reporting_user_errors
from .flags import OneLineErrorParser

# (module, function adding the subcommand). Imported lazily so that `hf-vq --help` stays fast and a
# subcommand's heavy imports are paid only when it runs.
SUBCOMMANDS = [
    ("hf_vq.demo", "add_demo_subcommand"),
    ("hf_vq.hub.push", "add_push_subcommand"),
    ("hf_vq.hub.model_set", "add_push_set_subcommand"),
    ("hf_vq.training.tokenizer_command", "add_train_tokenizer_subcommand"),
    ("hf_vq.training.classifier_command", "add_train_classifier_subcommand"),
    ("hf_vq.training.prior_command", "add_train_prior_subcommand"),
]

DEBUG_HELP = "show the full traceback of an error (also: HF_VQ_DEBUG=1)"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="hf-vq", description="Train, evaluate and share VQ image tokenizers.")
    # SUPPRESS: the flag is in the namespace only when given, so it never reaches a subcommand's own flags.
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name, function_name in SUBCOMMANDS:
        getattr(importlib.import_module(module_name), function_name)(subparsers)
    for subparser in subparsers.choices.values():
        subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = vars(args).pop("debug", False)
    if debug:  # what a command reads deeper down (tracebacks, third-party logs) through debug_requested()
        os.environ["HF_VQ_DEBUG"] = "1"
    return run_reporting_user_errors(f"hf-vq {args.command}", lambda: args.handler(args), debug=debug)


if __name__ == "__main__":
    sys.exit(main())
