"""`hf-vq train-classifier` and `scripts/train_classifier.py`: a ViT that classifies a tokenizer's token grids.

    hf-vq train-classifier --config configs/token_vit_fashion_mnist.yaml --tokenizer_name_or_path outputs/vqgan
    hf-vq train-classifier --config configs/token_vit_fashion_mnist.yaml --tokenizer_name_or_path outputs/vqgan \\
        --model_type pixel_vit --output_dir outputs/pixel_vit        # the reference: same size, same loop, pixels
    accelerate launch scripts/train_classifier.py --config ... --mixed_precision bf16

The dataset is tokenized once (cached by `datasets.map`, see `token_data`), the ViT is trained with the
tokenizer loop's Accelerate setup, checkpoints, resume and trackers, and top-1 accuracy on the held-out split is
written to `<output_dir>/metrics.json` beside the saved model and the tokenizer's image processor, so that
`pipeline("image-classification", model=output_dir)` classifies images end to end.

A config file has the tokenizer loop's sections: `model:` (fields of `TokenViTConfig`: hidden_size,
num_hidden_layers, ...), `data:` and `training:` (defaults of the flags). Flags override the file.

Example:
    >>> from hf_vq.training.classifier_command import train_classifier
    >>> result = train_classifier({"config": "configs/token_vit_fashion_mnist.yaml",
    ...                            "tokenizer_name_or_path": "outputs/vqgan"})  # doctest: +SKIP
    >>> result["metrics"]["accuracy"], result["output_dir"]  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .args import (
    CLASSIFIER_COMMAND,
    CLASSIFIER_DEFAULTS,
    ClassifierTrainingConfig,
    add_command_subparser,
    parse_args,
    resolve_args,
    run_script,
)

__all__ = ["CLASSIFIER_DEFAULTS", "parse_classifier_args", "resolve_classifier_args", "train_classifier"]


def resolve_classifier_args(given: dict[str, Any]) -> ClassifierTrainingConfig:
    """Built-in defaults, then the YAML file `given["config"]`, then the `given` flags; checked (`ConfigError`)."""
    return resolve_args(CLASSIFIER_COMMAND, given)


def parse_classifier_args(argv: list[str] | None = None) -> ClassifierTrainingConfig:
    """Command-line flags -> checked config; a flag given always beats the YAML file, even at its default."""
    return parse_args(CLASSIFIER_COMMAND, argv)


def as_config(
    args_or_config: ClassifierTrainingConfig | dict[str, Any] | str | os.PathLike,
) -> ClassifierTrainingConfig:
    """A checked config from a config (used as is), a dict of flags, or the path of a YAML config."""
    if isinstance(args_or_config, ClassifierTrainingConfig):
        return args_or_config
    if isinstance(args_or_config, (str, os.PathLike)):
        return resolve_classifier_args({"config": os.fspath(args_or_config)})
    return resolve_classifier_args(dict(args_or_config))


# ------------------------------------------------------------------------------------------------ training


def train_classifier(args_or_config: ClassifierTrainingConfig | dict[str, Any] | str | os.PathLike) -> dict[str, Any]:
    """Tokenize (cached), train, evaluate and save a classifier; returns
    `{"output_dir", "metrics", "metrics_path", "global_step", "is_main_process"}` (absolute paths).

    `args_or_config`: a config from `parse_classifier_args`, a dict of flags (`{"config": ...,
    "tokenizer_name_or_path":
    ..., "max_train_steps": 300}`), or a YAML config path that names the tokenizer and the data itself.
    """
    from .classifier_loop import run_classifier_training  # torch and accelerate are imported only to train

    return run_classifier_training(as_config(args_or_config))


def report(result: dict[str, Any]) -> dict[str, Any]:
    if result.get("is_main_process", True):
        metrics = result["metrics"]
        print(f"model and processor: {result['output_dir']}")
        print(f"metrics:             {result['metrics_path']}")
        print(
            f"{metrics['model_type']} top-1 accuracy on {metrics['split']}: {metrics['accuracy']:.4f} "
            f"({metrics['eval_examples']} images, {metrics['global_step']} steps, {metrics['train_seconds']:.0f} s)"
        )
    return result


# ------------------------------------------------------------------------------------------------ entry points


def add_train_classifier_subcommand(subparsers: argparse._SubParsersAction) -> None:
    """Register `train-classifier` with the `hf-vq` command (hf_vq/cli.py)."""
    add_command_subparser(
        subparsers,
        CLASSIFIER_COMMAND,
        "train a ViT on a tokenizer's token grids (or the pixel-ViT reference)",
        lambda args: report(train_classifier(args)),
    )


def main(argv: list[str] | None = None) -> int:
    """`scripts/train_classifier.py`."""
    return run_script(CLASSIFIER_COMMAND, lambda args: report(train_classifier(args)), argv)


if __name__ == "__main__":
    sys.exit(main())
