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
import os
import sys
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import ConfigError
from ..flags import flag
from ..hub.push import HubArguments
from .args import (
    ConfigArguments,
    DataArguments,
    EMAArguments,
    LabelArguments,
    OptimizationArguments,
    ReliabilityArguments,
    RunArguments,
    TokenCacheArguments,
    TrainingCommand,
    _check_model_config,
    add_command_subparser,
    check_classifier_args,
    parse_args,
    resolve_args,
    run_script,
)

__all__ = ["PRIOR_COMMAND", "PRIOR_DEFAULTS", "parse_prior_args", "resolve_prior_args", "train_prior"]


@dataclass
class PriorArguments:
    """What only the prior's command does: its starting point, label dropout, and the sampling of its samples and
    of its evaluation."""

    TITLE: ClassVar[str] = "prior training and evaluation"

    pretrained_model_name_or_path: str | None = flag(
        None, "start from a saved prior (a MaskGITModel folder, or a pipeline folder whose transformer/ is one) "
              "instead of the config's model: section; it must have been trained on the same tokenizer")
    label_dropout: float = flag(0.1, "share of class labels replaced by the null class (classifier-free guidance)",
                                check="[0, 1)")
    num_inference_steps: int = flag(12, "decoding steps of the samples and the evaluation", check=">= 1")
    guidance_scale: float = flag(2.0, "classifier-free guidance of the samples and the evaluation (1: none)", check=">= 0")
    temperature: float = flag(1.0, "sampling temperature of the samples and the evaluation", check=">= 0")
    num_sample_images: int = flag(8, "images per class in samples.png (one row per class)", check=">= 0")
    num_eval_images: int = flag(1000, "generated images judged at the end (as many per class), and as many real "
                                      "held-out images; 0: no generation metrics", check=">= 0")
    generation_batch_size: int = flag(250, "images generated per pipeline call", check=">= 1")
    eval_classifier_name_or_path: str | None = flag(
        None, "pixel classifier judging the samples (`hf-vq train-classifier --model_type pixel_vit`, same data and "
              "tokenizer): conditional accuracy and classifier-feature FID")
    inception_weights: str | None = flag(None, "FID Inception weights file: adds Inception FID")


def check_prior_args(args: argparse.Namespace) -> None:
    """Reject what cannot work, naming the flag or config key to change."""
    check_classifier_args(args)  # the tokenizer named and loadable (the same token cache)
    if args.model_config and not args.pretrained_model_name_or_path:
        _check_model_config(PRIOR_COMMAND, args.model_config)
    if args.model_config.get("num_classes") == 0 and args.guidance_scale > 1:
        raise ConfigError(f"--guidance_scale {args.guidance_scale} needs a class-conditional prior, but the config's model: "
                          "section sets num_classes: 0 (unconditional): use --guidance_scale 1")
    if args.inception_weights and not os.path.isfile(args.inception_weights):
        raise ConfigError(f"--inception_weights {args.inception_weights!r} is not a file")


# MaskGIT's AdamW (beta2 0.96, weight decay 0.045) with a cosine decay; the whole held-out split gives the
# validation loss and the real images the samples are compared with.
PRIOR_DEFAULTS = dict(
    output_dir="outputs/maskgit", train_batch_size=64, eval_batch_size=256, learning_rate=1e-3,
    adam_beta1=0.9, adam_beta2=0.96, adam_weight_decay=0.045, lr_scheduler="cosine", max_eval_samples=None,
    tracker_project_name="hf_vq_prior", logging_steps=50,
)

PRIOR_COMMAND = TrainingCommand(
    name="train-prior",
    description="Train a class-conditional MaskGIT prior over the token grids of a trained tokenizer, with Accelerate; "
                "the output folder is a MaskGITPipeline. A YAML --config sets defaults; flags override it.",
    groups=(ConfigArguments, TokenCacheArguments, PriorArguments, DataArguments, LabelArguments, OptimizationArguments,
            EMAArguments, RunArguments, ReliabilityArguments, HubArguments),
    model_config_class="hf_vq.models.maskgit.configuration_maskgit:MaskGITConfig",
    defaults=PRIOR_DEFAULTS,
    check=check_prior_args,
)


def resolve_prior_args(given: dict[str, Any]) -> argparse.Namespace:
    """Built-in defaults, then the YAML file `given["config"]`, then the `given` flags; checked (`ConfigError`)."""
    return resolve_args(PRIOR_COMMAND, given)


def parse_prior_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags -> checked namespace; a flag given always beats the YAML file, even at its default."""
    return parse_args(PRIOR_COMMAND, argv)


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
    lines = [f"{metrics['global_step']} steps, {metrics.get('train_seconds', 0):.0f} s"] if "global_step" in metrics else []
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
    add_command_subparser(subparsers, PRIOR_COMMAND,
                          "train a MaskGIT token prior on a tokenizer's tokens; saves a generation pipeline",
                          lambda args: report(train_prior(args)))


def main(argv: list[str] | None = None) -> int:
    """`scripts/train_prior.py`: the same flags and the same one-line errors as `hf-vq train-prior`."""
    return run_script(PRIOR_COMMAND, lambda args: report(train_prior(args)), argv)


if __name__ == "__main__":
    sys.exit(main())
