"""`hf-vq`: the command-line entry point. Each subcommand lives with the code it runs; this file only
collects them."""

from __future__ import annotations

import argparse
import importlib
import sys

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-vq", description="Train, evaluate and share VQ image tokenizers.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name, function_name in SUBCOMMANDS:
        getattr(importlib.import_module(module_name), function_name)(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.handler(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
