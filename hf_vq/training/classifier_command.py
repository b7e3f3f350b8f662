"""`hf-vq train-classifier` and `scripts/train_classifier.py`: a ViT that classifies a tokenizer's token grids.

    hf-vq train-classifier --config configs/token_vit_fashion_mnist.yaml --tokenizer_name_or_path outputs/vqgan
    hf-vq train-classifier --config configs/token_vit_fashion_mnist.yaml --tokenizer_name_or_path outputs/vqgan \\
        --model_type pixel_vit --output_dir outputs/pixel_vit        # the reference: same size, same loop, pixels
    accelerate launch scripts/train_classifier.py --config ... --mixed_precision bf16

The dataset is tokenized once (cached by `datasets.map`, see `classifier_data`), the ViT is trained with the
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
from pathlib import Path
from typing import Any

from .args import (
    REPORT_TO,
    ConfigError,
    add_data_arguments,
    add_optimization_arguments,
    add_reliability_arguments,
    check_config_keys,
    check_reliability_args,
    load_config_file,
    suppress_defaults,
)

MODEL_TYPES = ("token_vit", "pixel_vit")
# Defaults that differ from the tokenizer loop's: a ViT wants Adam's usual betas, weight decay and a cosine decay;
# the whole held-out split is evaluated (accuracy on 512 images would be too noisy to compare).
CLASSIFIER_DEFAULTS = dict(
    output_dir="outputs/token_vit", train_batch_size=128, eval_batch_size=256, learning_rate=1e-3,
    adam_beta1=0.9, adam_beta2=0.999, adam_weight_decay=0.05, lr_scheduler="cosine", max_eval_samples=None,
    center_crop=True, tracker_project_name="hf_vq_classifier",
)


# ------------------------------------------------------------------------------------------------ arguments


def add_classifier_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Every flag of `hf-vq train-classifier`: the tokenizer loop's data and optimization flags, plus its own."""
    from ..hub import add_hub_arguments

    parser.add_argument("--config", default=None, help="YAML file with model:, data: and training: sections")
    group = parser.add_argument_group("classifier")
    group.add_argument("--tokenizer_name_or_path", default=None, help="trained tokenizer (folder or Hub id) to read tokens of")
    group.add_argument("--model_type", choices=MODEL_TYPES, default="token_vit",
                       help="pixel_vit: the reference, a transformers ViT of the same size on patches of the "
                            "tokenizer's downsampling factor (same sequence length), trained by the same loop")
    group.add_argument("--init_from_codebook", action=argparse.BooleanOptionalAction, default=True,
                       help="embed tokens in the tokenizer's code space, starting from its effective codebook")
    group.add_argument("--label_column", default="label")
    group.add_argument("--tokenize_batch_size", type=int, default=256, help="images per tokenizer forward when caching")
    add_data_arguments(parser.add_argument_group("data"))
    add_optimization_arguments(parser.add_argument_group("optimization"))
    _add_run_arguments(parser.add_argument_group("checkpoints, evaluation, logging"))
    add_hub_arguments(parser)
    return parser


def _add_run_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--checkpointing_steps", type=int, default=500)
    group.add_argument("--checkpoints_total_limit", type=int, default=None)
    group.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint folder")
    group.add_argument("--eval_steps", type=int, default=0, help="evaluate every N steps (0: only at the end)")
    group.add_argument("--report_to", choices=REPORT_TO, default="jsonl")
    group.add_argument("--tracker_project_name", default="hf_vq_classifier")
    group.add_argument("--logging_steps", type=int, default=50)
    group.add_argument("--progress_bar", action=argparse.BooleanOptionalAction, default=True)
    group.add_argument("--output_dir", default="outputs/token_vit")
    add_reliability_arguments(group)


def build_classifier_parser(prog: str = "train_classifier") -> argparse.ArgumentParser:
    """The full parser with its defaults (`parse_args([])` gives every default)."""
    parser = add_classifier_arguments(_bare_parser(prog))
    # Not in add_classifier_arguments: parsers with suppressed defaults would still apply these.
    parser.set_defaults(**CLASSIFIER_DEFAULTS)
    return parser


def _bare_parser(prog: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description="Train a ViT classifier on a tokenizer's token grids.")


def resolve_classifier_args(given: dict[str, Any]) -> argparse.Namespace:
    """Built-in defaults, then the YAML file `given["config"]`, then the `given` flags; checked (`ConfigError`)."""
    parser = build_classifier_parser()
    args = parser.parse_args([])
    args.model_config = {}
    if given.get("config"):
        sections = load_config_file(given["config"])
        check_config_keys(parser, sections, given["config"])
        vars(args).update({**sections["data"], **sections["training"], "model_config": sections["model"]})
    vars(args).update(given)
    check_classifier_args(args)
    return args


def parse_classifier_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags -> checked namespace; a flag given always beats the YAML file, even at its default."""
    parser = suppress_defaults(add_classifier_arguments(_bare_parser("train_classifier")))
    given = vars(parser.parse_args(argv))
    try:
        return resolve_classifier_args(given)
    except ConfigError as error:
        parser.error(str(error))


def check_classifier_args(args: argparse.Namespace, command: str = "train-classifier") -> None:
    """Reject what cannot work, naming the flag to change (also the checks of `train-prior`, which reads the same
    token cache)."""
    if not args.tokenizer_name_or_path:
        raise ConfigError("no tokenizer: pass --tokenizer_name_or_path (a trained tokenizer's folder or Hub id)")
    if bool(args.dataset_name) == bool(args.train_data_dir):
        raise ConfigError("pass exactly one of --dataset_name (Hub id, parquet, 'fashion_mnist') and --train_data_dir")
    if args.streaming or args.random_flip or not args.center_crop:
        raise ConfigError("the images are tokenized once and cached: --streaming, --random_flip and --no-center_crop "
                          f"(random crops) are not supported by {command}")
    for name in ("train_batch_size", "eval_batch_size", "gradient_accumulation_steps", "num_train_epochs",
                 "logging_steps", "tokenize_batch_size", "max_train_steps", "checkpoints_total_limit", "resolution"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name} must be >= 1, got {value}")
    for name in ("checkpointing_steps", "eval_steps", "lr_warmup_steps"):
        if getattr(args, name) < 0:
            raise ConfigError(f"--{name} must be >= 0, got {getattr(args, name)}")
    if args.learning_rate <= 0:
        raise ConfigError(f"--learning_rate must be > 0, got {args.learning_rate}")
    resume = args.resume_from_checkpoint
    if resume and resume != "latest" and not Path(resume).is_dir():
        raise ConfigError(f"--resume_from_checkpoint {resume!r} is neither 'latest' nor a checkpoint folder")
    check_reliability_args(args)


def as_namespace(args_or_config: argparse.Namespace | dict[str, Any] | str | os.PathLike) -> argparse.Namespace:
    """A checked namespace from a namespace (used as is), a dict of flags, or the path of a YAML config."""
    if isinstance(args_or_config, argparse.Namespace):
        return args_or_config
    if isinstance(args_or_config, (str, os.PathLike)):
        return resolve_classifier_args({"config": os.fspath(args_or_config)})
    return resolve_classifier_args(dict(args_or_config))


# ------------------------------------------------------------------------------------------------ training


def train_classifier(args_or_config: argparse.Namespace | dict[str, Any] | str | os.PathLike) -> dict[str, Any]:
    """Tokenize (cached), train, evaluate and save a classifier; returns
    `{"output_dir", "metrics", "metrics_path", "global_step", "is_main_process"}` (absolute paths).

    `args_or_config`: a namespace from `parse_classifier_args`, a dict of flags (`{"config": ..., "tokenizer_name_or_path":
    ..., "max_train_steps": 300}`), or a YAML config path that names the tokenizer and the data itself.
    """
    from .classifier_loop import run_classifier_training  # torch and accelerate are imported only to train

    return run_classifier_training(as_namespace(args_or_config))


def report(result: dict[str, Any]) -> dict[str, Any]:
    if result.get("is_main_process", True):
        metrics = result["metrics"]
        print(f"model and processor: {result['output_dir']}")
        print(f"metrics:             {result['metrics_path']}")
        print(f"{metrics['model_type']} top-1 accuracy on {metrics['split']}: {metrics['accuracy']:.4f} "
              f"({metrics['eval_examples']} images, {metrics['global_step']} steps, {metrics['train_seconds']:.0f} s)")
    return result


# ------------------------------------------------------------------------------------------------ entry points


def add_train_classifier_subcommand(subparsers: argparse._SubParsersAction) -> None:
    """Register `train-classifier` with the `hf-vq` command (hf_vq/cli.py)."""
    parser = subparsers.add_parser(
        "train-classifier", help="train a ViT on a tokenizer's token grids (or the pixel-ViT reference)",
        description="Train a ViT classifier on the token grids of a trained tokenizer, with Accelerate. A YAML "
                    "--config sets defaults; flags override it.",
    )
    suppress_defaults(add_classifier_arguments(parser))
    parser.set_defaults(handler=lambda args: _run_subcommand(args, parser))


def _run_subcommand(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    given = {key: value for key, value in vars(args).items() if key not in ("handler", "command")}
    try:
        resolved = resolve_classifier_args(given)
    except ConfigError as error:
        parser.error(str(error))
    return report(train_classifier(resolved))


def main(argv: list[str] | None = None) -> int:
    report(train_classifier(parse_classifier_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
