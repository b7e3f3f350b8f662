"""`hf-vq train-prior` and `scripts/train_prior.py`: a MaskGIT token prior over a trained tokenizer's token grids.

    hf-vq train-prior --config configs/maskgit_fashion_mnist.yaml --tokenizer_name_or_path outputs/vqgan \\
        --eval_classifier_name_or_path outputs/pixel_vit
    accelerate launch scripts/train_prior.py --config configs/maskgit_fashion_mnist.yaml --tokenizer_name_or_path ... \\
        --mixed_precision bf16

The dataset is tokenized once and cached (the classifier's token cache, `classifier_data`: a prior trained on the
data a token classifier was trained on reads the same files), the prior learns to fill in masked tokens (a random
share of each grid masked, drawn from the cosine schedule; `--label_dropout` of the class labels replaced by the
null class, for classifier-free guidance), with Accelerate, mixed precision, checkpoints, exact resume, EMA and
trackers. `--output_dir` ends as a complete `MaskGITPipeline` folder (vqgan, transformer, scheduler) that
`DiffusionPipeline.from_pretrained(output_dir, trust_remote_code=True)` loads, with `samples.png` (one row per
class), `metrics.json` (generation metrics, see `hf_vq.evaluation.generation`) and `training_config.json` on top.

A config file has the other commands' sections: `model:` (fields of `MaskGITConfig`: hidden_size,
num_hidden_layers, ...; its vocabulary and grid come from the tokenizer, its classes from the dataset unless
`num_classes: 0` asks for an unconditional prior), `data:` and `training:` (defaults of the flags). Flags override
the file.

Example:
    >>> from hf_vq.training.prior_command import train_prior
    >>> result = train_prior({"config": "configs/maskgit_fashion_mnist.yaml",
    ...                       "tokenizer_name_or_path": "outputs/vqgan"})  # doctest: +SKIP
    >>> result["metrics"]["conditional_accuracy"], result["output_dir"]  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .args import (
    ConfigError,
    add_data_arguments,
    add_optimization_arguments,
    check_config_keys,
    load_config_file,
    suppress_defaults,
)
from .classifier_command import _add_run_arguments, check_classifier_args

# Defaults that differ from the shared flags': MaskGIT's AdamW (beta2 0.96, weight decay 0.045) with a cosine decay;
# the held-out split gives the validation loss and the real images the samples are compared with.
PRIOR_DEFAULTS = dict(
    output_dir="outputs/maskgit", train_batch_size=64, eval_batch_size=256, learning_rate=1e-3,
    adam_beta1=0.9, adam_beta2=0.96, adam_weight_decay=0.045, lr_scheduler="cosine", max_eval_samples=None,
    center_crop=True, tracker_project_name="hf_vq_prior", logging_steps=50,
)


@dataclass
class PriorArguments:
    """The flags of `hf-vq train-prior` beyond the shared data, optimization, run and Hub groups."""

    tokenizer_name_or_path: str | None = field(default=None, metadata={"help": "trained tokenizer (folder or Hub id) whose tokens the prior models"})
    pretrained_model_name_or_path: str | None = field(default=None, metadata={
        "help": "start from a saved prior (a MaskGITModel folder, or a pipeline folder whose transformer/ is one) "
                "instead of the config's model: section; it must have been trained on the same tokenizer"})
    label_column: str = field(default="label", metadata={"help": "class labels (ignored by an unconditional prior, model.num_classes: 0)"})
    label_dropout: float = field(default=0.1, metadata={"help": "share of class labels replaced by the null class (classifier-free guidance)"})
    tokenize_batch_size: int = field(default=256, metadata={"help": "images per tokenizer forward when caching"})
    use_ema: bool = field(default=False, metadata={"help": "keep an EMA of the weights; it is evaluated and saved"})
    ema_decay: float = field(default=0.999, metadata={"help": "EMA decay"})
    ema_warmup: bool = field(default=True, metadata={"help": "ramp the EMA decay up from 0 (diffusers' EMAModel warmup)"})
    num_inference_steps: int = field(default=12, metadata={"help": "decoding steps of the samples and the evaluation"})
    guidance_scale: float = field(default=2.0, metadata={"help": "classifier-free guidance of the samples and the evaluation (1: none)"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the samples and the evaluation"})
    num_sample_images: int = field(default=8, metadata={"help": "images per class in samples.png (one row per class)"})
    num_eval_images: int = field(default=1000, metadata={
        "help": "generated images judged at the end (as many per class), and as many real held-out images; 0: no "
                "evaluation"})
    generation_batch_size: int = field(default=250, metadata={"help": "images generated per pipeline call"})
    eval_classifier_name_or_path: str | None = field(default=None, metadata={
        "help": "pixel classifier judging the samples (`hf-vq train-classifier --model_type pixel_vit`, same data "
                "and tokenizer): conditional accuracy and classifier-feature FID"})
    inception_weights: str | None = field(default=None, metadata={"help": "FID Inception weights file: adds Inception FID"})


def add_dataclass_arguments(group: argparse._ArgumentGroup, flags: type) -> None:
    """One flag per field of the dataclass `flags` (booleans get --name / --no-name)."""
    types = typing.get_type_hints(flags)
    for item in dataclasses.fields(flags):
        kind = types[item.name]
        options: dict[str, Any] = {"default": item.default, "help": item.metadata.get("help")}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif kind in (int, float):
            options["type"] = kind
        group.add_argument(f"--{item.name}", **options)


# ------------------------------------------------------------------------------------------------ arguments


def add_prior_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Every flag of `hf-vq train-prior`: the shared data, optimization, run and Hub flags, plus `PriorArguments`."""
    from ..hub import add_hub_arguments

    parser.add_argument("--config", default=None, help="YAML file with model:, data: and training: sections")
    add_dataclass_arguments(parser.add_argument_group("prior"), PriorArguments)
    add_data_arguments(parser.add_argument_group("data"))
    add_optimization_arguments(parser.add_argument_group("optimization"))
    _add_run_arguments(parser.add_argument_group("checkpoints, evaluation, logging"))
    add_hub_arguments(parser)
    return parser


def build_prior_parser(prog: str = "train_prior") -> argparse.ArgumentParser:
    """The full parser with its defaults (`parse_args([])` gives every default)."""
    parser = add_prior_arguments(_bare_parser(prog))
    parser.set_defaults(**PRIOR_DEFAULTS)
    return parser


def _bare_parser(prog: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description="Train a MaskGIT token prior on a tokenizer's token grids.")


def resolve_prior_args(given: dict[str, Any]) -> argparse.Namespace:
    """Built-in defaults, then the YAML file `given["config"]`, then the `given` flags; checked (`ConfigError`)."""
    parser = build_prior_parser()
    args = parser.parse_args([])
    args.model_config = {}
    if given.get("config"):
        sections = load_config_file(given["config"])
        check_config_keys(parser, sections, given["config"])
        vars(args).update({**sections["data"], **sections["training"], "model_config": sections["model"]})
    vars(args).update(given)
    check_prior_args(args)
    return args


def parse_prior_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags -> checked namespace; a flag given always beats the YAML file, even at its default."""
    parser = suppress_defaults(add_prior_arguments(_bare_parser("train_prior")))
    given = vars(parser.parse_args(argv))
    try:
        return resolve_prior_args(given)
    except ConfigError as error:
        parser.error(str(error))


def check_prior_args(args: argparse.Namespace) -> None:
    """Reject what cannot work, naming the flag to change."""
    check_classifier_args(args, command="train-prior")
    if not 0.0 <= args.label_dropout < 1.0:
        raise ConfigError(f"--label_dropout must lie in [0, 1), got {args.label_dropout}")
    if not 0.0 <= args.ema_decay < 1.0:
        raise ConfigError(f"--ema_decay must lie in [0, 1), got {args.ema_decay}")
    for name in ("num_inference_steps", "generation_batch_size"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name} must be >= 1, got {getattr(args, name)}")
    for name in ("num_sample_images", "num_eval_images"):
        if getattr(args, name) < 0:
            raise ConfigError(f"--{name} must be >= 0, got {getattr(args, name)}")
    if args.guidance_scale < 0 or args.temperature < 0:
        raise ConfigError(f"--guidance_scale and --temperature must be >= 0, got {args.guidance_scale} and {args.temperature}")
    unconditional = args.model_config.get("num_classes") == 0
    if unconditional and args.guidance_scale > 1:
        raise ConfigError(f"--guidance_scale {args.guidance_scale} needs a class-conditional prior, but the config's model: "
                          "section sets num_classes: 0 (unconditional): use --guidance_scale 1")
    if args.inception_weights and not Path(args.inception_weights).is_file():
        raise ConfigError(f"--inception_weights {args.inception_weights!r} is not a file")


def as_namespace(args_or_config: argparse.Namespace | dict[str, Any] | str | os.PathLike) -> argparse.Namespace:
    """A checked namespace from a namespace (used as is), a dict of flags, or the path of a YAML config."""
    if isinstance(args_or_config, argparse.Namespace):
        return args_or_config
    if isinstance(args_or_config, (str, os.PathLike)):
        return resolve_prior_args({"config": os.fspath(args_or_config)})
    return resolve_prior_args(dict(args_or_config))


# ------------------------------------------------------------------------------------------------ training


def train_prior(args_or_config: argparse.Namespace | dict[str, Any] | str | os.PathLike) -> dict[str, Any]:
    """Tokenize (cached), train, save the pipeline, sample and evaluate; returns `{"output_dir", "metrics",
    "metrics_path", "sample_grid", "global_step", "is_main_process"}` (absolute paths).

    `args_or_config`: a namespace from `parse_prior_args`, a dict of flags (`{"config": ..., "tokenizer_name_or_path":
    ..., "max_train_steps": 300}`), or a YAML config path that names the tokenizer and the data itself.
    """
    from .prior_loop import run_prior_training  # torch, accelerate and diffusers are imported only to train

    return run_prior_training(as_namespace(args_or_config))


def report(result: dict[str, Any]) -> dict[str, Any]:
    if result.get("is_main_process", True):
        metrics = result["metrics"]
        print(f"pipeline:    {result['output_dir']}")
        print(f"samples:     {result['sample_grid']}")
        print(f"metrics:     {result['metrics_path']}")
        print(format_generation_metrics(metrics))
    return result


def format_generation_metrics(metrics: dict[str, Any]) -> str:
    """One line per measured generation metric, with the reference it is to be read against."""
    lines = [f"{metrics.get('global_step')} steps, {metrics.get('train_seconds', 0):.0f} s"]
    if "conditional_accuracy" in metrics:
        lines.append(f"conditional accuracy {metrics['conditional_accuracy']:.2%} (classifier on real test images: "
                     f"{metrics['real_accuracy']:.2%}; ratio {metrics['relative_conditional_accuracy']:.2f})")
    for name in ("classifier_fid", "inception_fid"):
        if name in metrics:
            floor = metrics.get(f"reconstruction_{name}")
            text = f"{name.replace('_', ' ')} {metrics[name]:.3f}"
            if floor is not None:
                text += f" (tokenizer reconstructions: {floor:.3f}; ratio {metrics[f'{name}_ratio']:.2f})"
            lines.append(text)
    if "generated_perplexity" in metrics:
        lines.append(f"token perplexity {metrics['generated_perplexity']:.1f} generated / {metrics.get('real_perplexity', float('nan')):.1f} real, "
                     f"codebook usage {metrics['generated_usage']:.1%} / {metrics.get('real_usage', float('nan')):.1%}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ entry points


def add_train_prior_subcommand(subparsers: argparse._SubParsersAction) -> None:
    """Register `train-prior` with the `hf-vq` command (hf_vq/cli.py)."""
    parser = subparsers.add_parser(
        "train-prior", help="train a MaskGIT token prior on a tokenizer's tokens; saves a generation pipeline",
        description="Train a class-conditional MaskGIT prior over the token grids of a trained tokenizer, with "
                    "Accelerate; the output folder is a MaskGITPipeline. A YAML --config sets defaults; flags override it.",
    )
    suppress_defaults(add_prior_arguments(parser))
    parser.set_defaults(handler=lambda args: _run_subcommand(args, parser))


def _run_subcommand(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    given = {key: value for key, value in vars(args).items() if key not in ("handler", "command")}
    try:
        resolved = resolve_prior_args(given)
    except ConfigError as error:
        parser.error(str(error))
    return report(train_prior(resolved))


def main(argv: list[str] | None = None) -> int:
    report(train_prior(parse_prior_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
