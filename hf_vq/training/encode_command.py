"""`hf-vq encode`: tokenize an image dataset once into a token dataset (`hf_vq.data.token_dataset`) that
`hf-vq train-classifier` / `train-prior --token_dataset` read, or that is shared on the Hub.

    hf-vq encode --tokenizer_name_or_path outputs/vqgan --dataset_name fashion_mnist --output_dir outputs/tokens
    torchrun --nproc_per_node 2 -m hf_vq.training.encode_command --tokenizer_name_or_path ... --output_dir ...
    hf-vq encode ... --push_to_hub --hub_dataset_id your-name/fashion-mnist-tokens

The data flags are the training commands' (`--dataset_name`, `--train_data_dir`, `--image_column`,
`--label_column`, `--train_split`, `--eval_split`, ...); the splits written are the ones they would read. The same
command again resumes an interrupted run (finished shards are not encoded again); see `encoding.py`.

Example:
    >>> from hf_vq.training.encode_command import encode
    >>> result = encode({"tokenizer_name_or_path": "outputs/vqgan", "dataset_name": "fashion_mnist",
    ...                  "output_dir": "outputs/tokens"})  # doctest: +SKIP
    >>> result["images_per_second"]  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .args import ENCODE_COMMAND, EncodeConfig, add_command_subparser, parse_args, resolve_args, run_script

__all__ = ["encode", "parse_encode_args", "resolve_encode_args"]


def resolve_encode_args(given: dict[str, Any]) -> EncodeConfig:
    """Built-in defaults, then the YAML file `given["config"]`, then the `given` flags; checked (`ConfigError`)."""
    return resolve_args(ENCODE_COMMAND, given)


def parse_encode_args(argv: list[str] | None = None) -> EncodeConfig:
    return parse_args(ENCODE_COMMAND, argv)


def encode(args_or_config: EncodeConfig | dict[str, Any] | str | os.PathLike) -> dict[str, Any]:
    """Encode (resuming an interrupted run), save and push if asked; see `encoding.run_encode` for the result."""
    from .encoding import run_encode  # torch, accelerate and datasets are imported only to encode

    if isinstance(args_or_config, EncodeConfig):
        config = args_or_config
    elif isinstance(args_or_config, (str, os.PathLike)):
        config = resolve_encode_args({"config": os.fspath(args_or_config)})
    else:
        config = resolve_encode_args(dict(args_or_config))
    return run_encode(config)


def report(result: dict[str, Any]) -> dict[str, Any]:
    if result.get("is_main_process", True):
        info = result["info"]
        print(f"token dataset: {result['output_dir']}")
        print(f"tokenizer:     {info.describe()}")
        print(f"splits:        {', '.join(f'{name} {rows}' for name, rows in info.source['splits'].items())}")
        if result["images"]:
            print(
                f"encoded {result['images']} images in {result['seconds']:.1f} s: {result['images_per_second']:.0f} "
                f"images/s on {result['num_processes']} process(es)"
                + (f"; {result['skipped_shards']} finished shards kept" if result["skipped_shards"] else "")
            )
        if result.get("unreadable_images"):
            print(f"skipped {result['unreadable_images']} unreadable images (left out of the token dataset)")
    return result


def add_encode_subcommand(subparsers: argparse._SubParsersAction) -> None:
    """Register `encode` with the `hf-vq` command (hf_vq/cli.py)."""
    add_command_subparser(
        subparsers,
        ENCODE_COMMAND,
        "tokenize an image dataset into a token dataset (folder or Hub), on one or several processes",
        lambda args: report(encode(args)),
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m hf_vq.training.encode_command` (what torchrun / accelerate launch start)."""
    return run_script(ENCODE_COMMAND, lambda args: report(encode(args)), argv)


if __name__ == "__main__":
    sys.exit(main())
