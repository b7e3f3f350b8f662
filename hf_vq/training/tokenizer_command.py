"""`hf-vq train-tokenizer` and `scripts/train_tokenizer.py`: one parser, one function.

hf-vq train-tokenizer --config configs/vqgan_fashion_mnist.yaml --max_train_steps 200
torchrun --nproc_per_node 2 scripts/train_tokenizer.py --config configs/vqgan_tiny.yaml --train_data_dir imgs
accelerate launch scripts/train_tokenizer.py --config configs/vqgan_imagenet256.yaml --mixed_precision bf16
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .args import (
    TOKENIZER_COMMAND,
    TokenizerTrainingConfig,
    add_command_subparser,
    parse_args,
    resolve_args,
    run_script,
)

__all__ = ["parse_tokenizer_args", "resolve_tokenizer_args", "train", "train_from_config"]


def resolve_tokenizer_args(given: dict[str, Any]) -> TokenizerTrainingConfig:
    """Built-in defaults, then the YAML file `given["config"]`, then the `given` flags; checked (`ConfigError`)."""
    return resolve_args(TOKENIZER_COMMAND, given)


def parse_tokenizer_args(argv: list[str] | None = None) -> TokenizerTrainingConfig:
    """Command-line flags -> checked config; a flag given always beats the YAML file, even at its default."""
    return parse_args(TOKENIZER_COMMAND, argv)


def add_train_tokenizer_subcommand(subparsers: argparse._SubParsersAction) -> None:
    """Register `train-tokenizer` with the `hf-vq` command (hf_vq/cli.py)."""
    add_command_subparser(
        subparsers,
        TOKENIZER_COMMAND,
        "train a VQGAN image tokenizer with Accelerate",
        lambda args: report(train(args)),
    )


def train_from_config(config: str, **flags: Any) -> dict[str, Any]:
    """Train as `hf-vq train-tokenizer --config CONFIG --flag value ...` would, for callers such as `hf-vq demo`.

    Returns `train_tokenizer`'s dict: `output_dir` (model + processor, `save_pretrained` layout), `metrics`,
    `metrics_path` (metrics.json), `sample_grid` (samples.png), `global_step`, and the trained `model`.

    Example:
        >>> result = train_from_config("configs/vqgan_fashion_mnist_cpu.yaml", max_train_steps=50)  # doctest: +SKIP
        >>> report(result)  # doctest: +SKIP
    """
    return train(resolve_tokenizer_args({"config": config, **flags}))


def train(config: TokenizerTrainingConfig) -> dict[str, Any]:
    """Train a tokenizer (see `tokenizer_loop.train_tokenizer`)."""
    from .tokenizer_loop import train_tokenizer  # torch, accelerate and the model are imported only to train

    return train_tokenizer(config)


def report(result: dict[str, Any]) -> dict[str, Any]:
    metrics = result.get("metrics") or {}
    shown = {key: metrics[key] for key in ("psnr", "ssim", "codebook_usage", "perplexity", "rfid") if key in metrics}
    if result.get("metrics_path") and result.get("is_main_process", True):
        print(f"model and processor: {result['output_dir']}")
        print(f"metrics:             {result['metrics_path']}  {shown}")
        if result.get("sample_grid"):
            print(f"sample grid:         {result['sample_grid']}")
    return result


def main(argv: list[str] | None = None) -> int:
    """`scripts/train_tokenizer.py`."""
    return run_script(TOKENIZER_COMMAND, lambda args: report(train(args)), argv)


if __name__ == "__main__":
    sys.exit(main())
