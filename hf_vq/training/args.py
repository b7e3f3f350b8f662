"""Command-line flags of tokenizer training (named as in diffusers' example training scripts) and YAML configs.

A config file has three sections: `model:` (fields of `VQGANConfig`), `data:` and `training:` (defaults of the
flags below, by their names). Precedence: built-in defaults < the YAML file < flags given on the command line.

Example:
    >>> args = parse_training_args(["--config", "configs/vqgan_tiny.yaml", "--train_data_dir", "images",
    ...                             "--max_train_steps", "10"])  # doctest: +SKIP
    >>> args.model_config["codebook_size"], args.max_train_steps  # doctest: +SKIP
    (32, 10)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import yaml

from ..hub.push import add_hub_arguments

CONFIG_SECTIONS = ("model", "data", "training")
REPORT_TO = ("jsonl", "tensorboard", "wandb", "all", "none")
MIXED_PRECISION = ("no", "fp16", "bf16")
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine")


class ConfigError(ValueError):
    """A bad config file or an inconsistent combination of flags."""


def add_training_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add every flag of `hf-vq train-tokenizer` to `parser` (shared by the CLI and scripts/train_tokenizer.py)."""
    parser.add_argument("--config", default=None, help="YAML file with model:, data: and training: sections")
    parser.add_argument("--pretrained_model_name_or_path", default=None,
                        help="start from a saved VQGANModel (folder or Hub id) instead of the config's model: section")
    add_data_arguments(parser.add_argument_group("data"))
    add_optimization_arguments(parser.add_argument_group("optimization"))
    _add_loss_arguments(parser.add_argument_group("losses"))
    _add_run_arguments(parser.add_argument_group("checkpoints, evaluation, logging"))
    add_hub_arguments(parser)  # --push_to_hub, --hub_model_id, --hub_token, --private ... (shared with train-classifier)
    return parser


def add_data_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--dataset_name", default=None, help="Hub dataset id, a parquet file/folder, or 'fashion_mnist'")
    group.add_argument("--dataset_config_name", default=None)
    group.add_argument("--train_data_dir", default=None, help="local imagefolder (or Fashion-MNIST IDX) directory")
    group.add_argument("--image_column", default="image")
    group.add_argument("--train_split", default="train")
    group.add_argument("--eval_split", default=None,
                       help="held-out split ('test', 'validation'); default: the first of them the dataset has, "
                            "else --eval_fraction of the training data")
    group.add_argument("--eval_fraction", type=float, default=0.05,
                       help="fraction of the training data held out when the dataset has no evaluation split")
    group.add_argument("--streaming", action=argparse.BooleanOptionalAction, default=False)
    group.add_argument("--cache_dir", default=None)
    group.add_argument("--max_train_samples", type=int, default=None)
    group.add_argument("--max_eval_samples", type=int, default=512)
    group.add_argument("--resolution", type=int, default=None, help="training image side (default: the model's image_size)")
    group.add_argument("--center_crop", action=argparse.BooleanOptionalAction, default=False)
    group.add_argument("--random_flip", action=argparse.BooleanOptionalAction, default=False)
    group.add_argument("--dataloader_num_workers", type=int, default=0)


def add_optimization_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--train_batch_size", type=int, default=16, help="per process")
    group.add_argument("--eval_batch_size", type=int, default=64)
    group.add_argument("--num_train_epochs", type=int, default=1)
    group.add_argument("--max_train_steps", type=int, default=None, help="overrides --num_train_epochs")
    group.add_argument("--gradient_accumulation_steps", type=int, default=1)
    group.add_argument("--learning_rate", type=float, default=1e-4)
    group.add_argument("--discriminator_learning_rate", type=float, default=None, help="default: --learning_rate")
    group.add_argument("--scale_lr", action=argparse.BooleanOptionalAction, default=False,
                       help="multiply learning rates by batch size x accumulation x processes")
    group.add_argument("--lr_scheduler", choices=LR_SCHEDULERS, default="constant")
    group.add_argument("--lr_warmup_steps", type=int, default=0)
    group.add_argument("--adam_beta1", type=float, default=0.5)
    group.add_argument("--adam_beta2", type=float, default=0.9)
    group.add_argument("--adam_weight_decay", type=float, default=0.0)
    group.add_argument("--adam_epsilon", type=float, default=1e-8)
    group.add_argument("--max_grad_norm", type=float, default=1.0, help="0 disables clipping")
    group.add_argument("--mixed_precision", choices=MIXED_PRECISION, default=None,
                       help="default: Accelerate's config / `accelerate launch` setting")
    group.add_argument("--cpu", action=argparse.BooleanOptionalAction, default=False,
                       help="train on the CPU even where a GPU is present")
    group.add_argument("--gradient_checkpointing", action=argparse.BooleanOptionalAction, default=False)


def _add_loss_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--reconstruction_loss", choices=("l1", "l2"), default=None,
                       help="default: the model config's reconstruction_loss_type")
    group.add_argument("--reconstruction_weight", type=float, default=1.0)
    group.add_argument("--quantizer_loss_weight", type=float, default=None, help="default: the model config's")
    group.add_argument("--perceptual_weight", type=float, default=0.0, help="LPIPS weight (0: off)")
    group.add_argument("--lpips_weights", default=None, help="file, folder or Hub id with VGG16 / LPIPS weights")
    group.add_argument("--discriminator_weight", type=float, default=0.0, help="adversarial weight (0: no GAN)")
    group.add_argument("--discriminator_start", type=int, default=0, help="step at which the GAN losses begin")
    group.add_argument("--discriminator_layers", type=int, default=3)
    group.add_argument("--discriminator_channels", type=int, default=64)
    # Group norm by default: a sample's score does not depend on the rest of its batch (real and fake batches are
    # scored together), and no running statistics drift apart between DDP processes. "batch" is taming's choice.
    group.add_argument("--discriminator_norm", choices=("batch", "group", "none"), default="group")
    group.add_argument("--adaptive_weight", action=argparse.BooleanOptionalAction, default=True,
                       help="taming's gradient-norm ratio on the decoder's last layer")
    group.add_argument("--lecam_weight", type=float, default=0.0, help="LeCam regularisation of D (0: off)")
    group.add_argument("--lecam_decay", type=float, default=0.999)
    group.add_argument("--use_ema", action=argparse.BooleanOptionalAction, default=False)
    group.add_argument("--ema_decay", type=float, default=0.999)
    group.add_argument("--ema_warmup", action=argparse.BooleanOptionalAction, default=True,
                       help="ramp the EMA decay up from 0 (diffusers' EMAModel warmup)")


def _add_run_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--output_dir", default="outputs/vqgan")
    group.add_argument("--checkpointing_steps", type=int, default=500)
    group.add_argument("--checkpoints_total_limit", type=int, default=None)
    group.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint folder")
    group.add_argument("--eval_steps", type=int, default=0, help="evaluate every N steps (0: only at the end)")
    group.add_argument("--num_sample_images", type=int, default=8, help="images in each sample grid")
    group.add_argument("--rfid", action=argparse.BooleanOptionalAction, default=False,
                       help="compute rFID (needs feature-extractor weights: --rfid_weights)")
    group.add_argument("--rfid_weights", default=None, help="weights of the rFID feature extractor (Inception)")
    group.add_argument("--report_to", choices=REPORT_TO, default="jsonl")
    group.add_argument("--tracker_project_name", default="hf_vq_tokenizer")
    group.add_argument("--logging_steps", type=int, default=10)
    group.add_argument("--progress_bar", action=argparse.BooleanOptionalAction, default=True)
    add_reliability_arguments(group)


# ------------------------------------------------------------------------------------------------ reliability flags
# The flags of the divergence guard (hf_vq/training/divergence.py), shared by every training command. Kept in this
# one place on purpose: the flag refactor moves them into its dataclasses.
ON_DIVERGENCE = ("stop", "skip_step")


def add_reliability_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--on_divergence", choices=ON_DIVERGENCE, default="stop",
                       help="when the loss or gradients become non-finite or the loss jumps above --divergence_factor "
                            "times its running average: stop with a message naming the step and the last good "
                            "checkpoint, or skip that optimizer step")
    group.add_argument("--divergence_factor", type=float, default=10.0,
                       help="a loss above this multiple of its running average counts as divergence (0: off)")


def check_reliability_args(args: argparse.Namespace) -> None:
    if args.on_divergence not in ON_DIVERGENCE:
        raise ConfigError(f"--on_divergence must be one of {list(ON_DIVERGENCE)}, got {args.on_divergence!r}")
    factor = args.divergence_factor
    if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not (factor == 0 or factor > 1):
        raise ConfigError(f"--divergence_factor must be a number above 1 (or 0 to turn the jump check off), got {factor!r}")


# ------------------------------------------------------------------------------------------------ parsers


def build_training_parser(prog: str = "train_tokenizer") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Train a VQGAN image tokenizer with Accelerate.")
    return add_training_arguments(parser)


def load_config_file(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Read a YAML config into its sections; unknown sections are an error (a typo would silently do nothing)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    content = yaml.safe_load(path.read_text()) or {}
    if not isinstance(content, dict):
        raise ConfigError(f"config file {path} must hold a mapping with sections {CONFIG_SECTIONS}")
    unknown = sorted(set(content) - set(CONFIG_SECTIONS))
    if unknown:
        raise ConfigError(f"config file {path} has unknown sections {unknown}; allowed: {list(CONFIG_SECTIONS)}")
    sections = {name: content.get(name) or {} for name in CONFIG_SECTIONS}
    for name, section in sections.items():
        if not isinstance(section, dict):
            raise ConfigError(f"section {name!r} of {path} must be a mapping, got {type(section).__name__}")
    return sections


def parse_training_args(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Parse flags over the defaults of `--config`, then check them (see `resolve_training_args`)."""
    parser = parser or build_training_parser()
    first_pass, _ = parser.parse_known_args(argv)
    if first_pass.config:
        _apply_config_defaults(parser, load_config_file(first_pass.config), first_pass.config)
    args = parser.parse_args(argv)
    return resolve_training_args(args, parser)


def namespace_from_given(given: dict[str, Any], parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Built-in defaults, then the YAML file named by `given["config"]`, then the `given` flags; checked.

    For parsers that only report the flags actually given (the `hf-vq train-tokenizer` subcommand is built with
    every default suppressed), so that a flag set on the command line always beats the file, even when its value
    equals the built-in default.
    """
    parser = parser or build_training_parser()
    args = parser.parse_args([])
    if given.get("config"):
        sections = load_config_file(given["config"])
        check_config_keys(parser, sections, given["config"])
        vars(args).update({**sections["data"], **sections["training"], "model_config": sections["model"]})
    vars(args).update(given)
    return resolve_training_args(args)


def suppress_defaults(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make `parser` return only the flags given on the command line (see `namespace_from_given`)."""
    for action in parser._actions:
        if action.dest != "help":
            action.default = argparse.SUPPRESS
    return parser


def check_config_keys(parser: argparse.ArgumentParser, sections: dict[str, dict], path: str) -> None:
    known = {action.dest for action in parser._actions}
    unknown = sorted((set(sections["data"]) | set(sections["training"])) - known)
    if unknown:
        raise ConfigError(f"config file {path} sets unknown options {unknown} in data:/training:; see --help for the flags")


def _apply_config_defaults(parser: argparse.ArgumentParser, sections: dict[str, dict], path: str) -> None:
    check_config_keys(parser, sections, path)
    parser.set_defaults(**sections["data"], **sections["training"], model_config=sections["model"])


def resolve_training_args(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Fill derived defaults and reject inconsistent flags with a message that says what to change.

    Works on a namespace from `parse_training_args` or one built by hand from `build_training_parser()` defaults.
    With a `parser`, problems are reported through `parser.error` (exit code 2, usage shown); else `ConfigError`.
    """
    if not hasattr(args, "model_config"):
        args.model_config = {}
    try:
        _check_args(args)
    except ConfigError as error:
        if parser is None:
            raise
        parser.error(str(error))
    if args.discriminator_learning_rate is None:
        args.discriminator_learning_rate = args.learning_rate
    return args


def _check_args(args: argparse.Namespace) -> None:
    if not args.dataset_name and not args.train_data_dir:
        raise ConfigError("no training data: pass --dataset_name (Hub id, parquet, 'fashion_mnist') or --train_data_dir (a folder)")
    if args.dataset_name and args.train_data_dir:
        raise ConfigError("pass only one of --dataset_name and --train_data_dir")
    if args.train_data_dir and not Path(args.train_data_dir).exists():
        raise ConfigError(f"--train_data_dir {args.train_data_dir!r} does not exist")
    if not args.model_config and not args.pretrained_model_name_or_path:
        raise ConfigError("no model: pass --config with a model: section (configs/vqgan_*.yaml) or --pretrained_model_name_or_path")
    positive = ["train_batch_size", "eval_batch_size", "gradient_accumulation_steps", "num_train_epochs", "logging_steps"]
    for name in positive + ["max_train_steps", "checkpoints_total_limit", "resolution"]:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name} must be >= 1, got {value}")
    for name in ("checkpointing_steps", "eval_steps", "lr_warmup_steps", "discriminator_start", "num_sample_images",
                 "dataloader_num_workers"):
        if getattr(args, name) < 0:
            raise ConfigError(f"--{name} must be >= 0, got {getattr(args, name)}")
    for name in ("learning_rate",):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name} must be > 0, got {getattr(args, name)}")
    for name in ("reconstruction_weight", "perceptual_weight", "discriminator_weight", "lecam_weight", "max_grad_norm"):
        if getattr(args, name) < 0:
            raise ConfigError(f"--{name} must be >= 0, got {getattr(args, name)}")
    if not 0.0 < args.eval_fraction < 1.0:
        raise ConfigError(f"--eval_fraction must lie in (0, 1), got {args.eval_fraction}")
    if not 0.0 <= args.ema_decay < 1.0 or not 0.0 <= args.lecam_decay < 1.0:
        raise ConfigError("--ema_decay and --lecam_decay must lie in [0, 1)")
    if args.lecam_weight > 0 and args.discriminator_weight == 0:
        raise ConfigError("--lecam_weight regularises the discriminator, which is off: set --discriminator_weight > 0")
    if args.push_to_hub and not args.hub_model_id:
        raise ConfigError("--push_to_hub needs --hub_model_id (e.g. your-name/vqgan-fashion-mnist)")
    resume = args.resume_from_checkpoint
    if resume and resume != "latest" and not Path(resume).is_dir():
        raise ConfigError(f"--resume_from_checkpoint {resume!r} is neither 'latest' nor a checkpoint folder")
    check_reliability_args(args)
