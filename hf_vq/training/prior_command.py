"""`hf-vq train-prior` and `scripts/train_prior.py`: a token prior over a trained tokenizer's token grids (the
config's `prior_type` picks which: `maskgit`, the default; see `hf_vq/training/priors/`).

    hf-vq train-prior --config configs/maskgit_fashion_mnist.yaml --tokenizer_name_or_path outputs/vqgan \\
        --eval_classifier_name_or_path outputs/pixel_vit
    accelerate launch scripts/train_prior.py --config configs/maskgit_fashion_mnist.yaml \\
        --tokenizer_name_or_path ... --mixed_precision bf16

The dataset is tokenized once and cached (the token cache of `token_data`, shared with the classifier: a prior
trained on the data a token classifier was trained on reads the same files), the prior learns its spec's training
loss (MaskGIT: fill in masked tokens, a random share of each grid masked, drawn from the cosine schedule;
`--label_dropout` of the class labels replaced by the null class, for classifier-free guidance), with Accelerate,
mixed precision, checkpoints, exact resume, EMA and trackers. `--output_dir` ends as a complete pipeline folder
(MaskGIT: a `MaskGITPipeline` with vqgan, transformer, scheduler) that
`DiffusionPipeline.from_pretrained(output_dir, trust_remote_code=True)` loads, with `samples.png` (one row per
class), `metrics.json` (generation metrics, see `hf_vq.evaluation.generation`) and `training_config.json` on top.

A config file has the other commands' sections: `model:` (fields of the prior's config, `MaskGITConfig`: hidden_size,
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
from typing import Any

from .args import (
    PRIOR_COMMAND,
    PRIOR_DEFAULTS,
    PriorTrainingConfig,
    add_command_subparser,
    parse_args,
    resolve_args,
    run_script,
)

__all__ = [
    "PRIOR_COMMAND",
    "PRIOR_DEFAULTS",
    "PriorTrainingConfig",
    "parse_prior_args",
    "resolve_prior_args",
    "train_prior",
]


def resolve_prior_args(given: dict[str, Any]) -> PriorTrainingConfig:
    """Built-in defaults, then the YAML file `given["config"]`, then the `given` flags; checked (`ConfigError`)."""
    return resolve_args(PRIOR_COMMAND, given)


def parse_prior_args(argv: list[str] | None = None) -> PriorTrainingConfig:
    """Command-line flags -> checked namespace; a flag given always beats the YAML file, even at its default."""
    return parse_args(PRIOR_COMMAND, argv)


def as_config(args_or_config: PriorTrainingConfig | dict[str, Any] | str | os.PathLike) -> PriorTrainingConfig:
    """A checked config from a config (used as is), a dict of flags, or the path of a YAML config."""
    if isinstance(args_or_config, PriorTrainingConfig):
        return args_or_config
    if isinstance(args_or_config, (str, os.PathLike)):
        return resolve_prior_args({"config": os.fspath(args_or_config)})
    return resolve_prior_args(dict(args_or_config))


# ------------------------------------------------------------------------------------------------ training


def train_prior(args_or_config: PriorTrainingConfig | dict[str, Any] | str | os.PathLike) -> dict[str, Any]:
    """Tokenize (cached), train, save the pipeline, sample and evaluate; returns `{"output_dir", "metrics",
    "metrics_path", "sample_grid", "global_step", "is_main_process"}` (absolute paths).

    `args_or_config`: a config from `parse_prior_args`, a dict of flags (`{"config": ..., "tokenizer_name_or_path":
    ..., "max_train_steps": 300}`), or a YAML config path that names the tokenizer and the data itself.
    """
    from .prior_loop import run_prior_training  # torch, accelerate and diffusers are imported only to train

    return run_prior_training(as_config(args_or_config))


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
    lines = (
        [f"{metrics['global_step']} steps, {metrics.get('train_seconds', 0):.0f} s"]
        if "global_step" in metrics
        else []
    )
    if "conditional_accuracy" in metrics:
        # No ratio where the judge gets no real image right (a briefly trained classifier): the metrics leave it out.
        ratio = metrics.get("relative_conditional_accuracy")
        lines.append(
            f"conditional accuracy {metrics['conditional_accuracy']:.2%} (classifier on real test images: "
            f"{metrics['real_accuracy']:.2%}; ratio {'undefined' if ratio is None else f'{ratio:.2f}'})"
        )
    for name in ("classifier_fid", "inception_fid"):
        if name in metrics:
            floor = metrics.get(f"reconstruction_{name}")
            text = f"{name.replace('_', ' ')} {metrics[name]:.3f}"
            if floor is not None:
                text += f" (tokenizer reconstructions: {floor:.3f}; ratio {metrics[f'{name}_ratio']:.2f})"
            lines.append(text)
    if "generated_perplexity" in metrics:
        lines.append(
            f"token perplexity {metrics['generated_perplexity']:.1f} generated / "
            f"{metrics.get('real_perplexity', float('nan')):.1f} real, "
            f"codebook usage {metrics['generated_usage']:.1%} / {metrics.get('real_usage', float('nan')):.1%}"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ entry points


def add_train_prior_subcommand(subparsers: argparse._SubParsersAction) -> None:
    """Register `train-prior` with the `hf-vq` command (hf_vq/cli.py)."""
    add_command_subparser(
        subparsers,
        PRIOR_COMMAND,
        "train a token prior (MaskGIT or autoregressive) on a tokenizer's tokens; saves a generation pipeline",
        lambda args: report(train_prior(args)),
    )


def main(argv: list[str] | None = None) -> int:
    """`scripts/train_prior.py`: the same flags and the same one-line errors as `hf-vq train-prior`."""
    return run_script(PRIOR_COMMAND, lambda args: report(train_prior(args)), argv)


if __name__ == "__main__":
    sys.exit(main())
