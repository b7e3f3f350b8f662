"""The table of `hf-vq` subcommands and the parser built from it.

Kept apart from `cli.py` (the entry point) so that a command's own flag checks can name the other commands that take
a flag given to the wrong one (`commands_with_flag`) without importing the entry point above them: each subcommand
lives with the code it runs and is imported by name, only when a parser is built.
"""

from __future__ import annotations

import argparse
import importlib

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
    ("hf_vq.training.encode_command", "add_encode_subcommand"),
    ("hf_vq.conversion.command", "add_convert_subcommand"),
    ("hf_vq.evaluation.reconstruct_command", "add_reconstruct_subcommand"),
]

DEBUG_HELP = "show the full traceback of an error (also: HF_VQ_DEBUG=1)"


def build_parser() -> argparse.ArgumentParser:
    """`hf-vq`'s parser: every subcommand of `SUBCOMMANDS`, each with `--debug`."""
    parser = OneLineErrorParser(prog="hf-vq", description="Train, evaluate and share VQ image tokenizers.")
    # SUPPRESS: the flag is in the namespace only when given, so it never reaches a subcommand's own flags.
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name, function_name in SUBCOMMANDS:
        getattr(importlib.import_module(module_name), function_name)(subparsers)
    for subparser in subparsers.choices.values():
        subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


def subcommand_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Each subcommand's parser by name."""
    return next(action.choices for action in parser._actions if isinstance(action, argparse._SubParsersAction))


def commands_with_flag(flag: str) -> list[str]:
    """The `hf-vq` subcommands that take `flag` ("name" or "--name")."""
    option = flag if flag.startswith("-") else f"--{flag}"
    # argparse has no public listing of a parser's options; `_option_string_actions` is what it parses with.
    return [
        name
        for name, subparser in subcommand_parsers(build_parser()).items()
        if option in subparser._option_string_actions
    ]


def unrecognized_flags_message(command: str, unknown: list[str]) -> str:
    """argparse's "unrecognized arguments", plus the commands that do take each flag of another command."""
    message = f"unrecognized arguments: {' '.join(unknown)}"
    for option in dict.fromkeys(item.split("=")[0] for item in unknown if item.startswith("--")):
        owners = [name for name in commands_with_flag(option) if name != command]
        if owners:
            message += f"; {option} is a flag of {', '.join(owners)}, not of {command}"
    return message
