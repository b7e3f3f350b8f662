"""The end of `hf-vq train-prior`, for any prior: the trained prior as its spec's pipeline, its sample grid (one
row per class) and its generation metrics (`hf_vq.evaluation.generation`) against the held-out split.

Real images, their cached tokens and the tokenizer's reconstructions are compared with as many generated images,
balanced over the classes; the judge is the pixel classifier given by `--eval_classifier_name_or_path`.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..evaluation import GenerationMetrics, InceptionFeatureExtractor, load_classifier_judge, save_image_grid
from ..errors import ConfigError
from .args import PRIOR_COMMAND, PriorTrainingConfig, flag_values, resolve_args
from .end_of_run import METRICS_FILE, SAMPLES_FILE, write_metrics
from .priors import TokenPrior, get_prior_spec, spec_of_model
from .token_data import MissingLabelsError, TokenData, build_token_data, load_tokenizer

# The flags that only change how a saved prior samples: what `sweep_configs` may vary.
SWEEPABLE_FLAGS = ("guidance_scale", "temperature", "top_k", "top_p", "num_inference_steps")
# Rows of samples.png for an unconditional prior (a class-conditional one has one row per class).
UNCONDITIONAL_GRID_ROWS = 8


def build_pipeline(tokenizer: nn.Module, prior: nn.Module, spec: TokenPrior | None = None):
    """The generation pipeline of a tokenizer and a prior trained on its tokens (the spec's pipeline; by default
    the spec whose model `prior` is), without progress bars (one per generated batch would drown a training log)."""
    pipeline = (spec or spec_of_model(prior)).build_pipeline(tokenizer, prior)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def build_prior_data(
    config: PriorTrainingConfig, tokenizer: nn.Module, processor: Any, conditional: bool, device: torch.device
) -> TokenData:
    """The cached token grids (and class labels, for a class-conditional prior) of the train and held-out splits."""
    try:
        return build_token_data(config, tokenizer, processor, encode=True, device=device, with_labels=conditional)
    except MissingLabelsError as error:
        raise MissingLabelsError(
            f"{error}. A class-conditional prior needs class labels; for an unconditional prior set num_classes: 0 in "
            "the config's model: section"
        ) from error


@torch.no_grad()
def generate(
    config: PriorTrainingConfig,
    spec: TokenPrior,
    pipeline,
    class_labels: list[int] | None,
    count: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` images (N, C, H, W) in [-1, 1] and their token grids, for `class_labels` (one image each) or
    unconditionally (`class_labels=None`), in batches of `--generation_batch_size`."""
    images, tokens = [], []
    for start in range(0, count, config.generation_batch_size):
        size = min(config.generation_batch_size, count - start)
        labels = class_labels[start : start + size] if class_labels is not None else None
        output = pipeline(
            class_labels=labels,
            batch_size=None if labels is not None else size,
            **spec.sampling_arguments(config),
            guidance_scale=config.guidance_scale if labels is not None else 1.0,
            temperature=config.temperature,
            generator=generator,
            output_type="pt",
        )
        images.append(_to_model_range(output.images))
        tokens.append(output.image_tokens.cpu())
    return torch.cat(images), torch.cat(tokens)


def _to_model_range(images: torch.Tensor) -> torch.Tensor:
    """diffusers' "pt" output (N, C, H, W) in [0, 1] -> the tokenizer's [-1, 1]."""
    return images.float().cpu() * 2.0 - 1.0


def save_class_samples(
    config: PriorTrainingConfig, spec: TokenPrior, pipeline, id2label: dict[int, str], path: Path
) -> Path | None:
    """samples.png: `--num_sample_images` images per class, one row per class (from a fixed seed)."""
    columns = config.num_sample_images
    if columns == 0:
        return None
    generator = torch.Generator().manual_seed(config.seed)
    if id2label:
        labels = [label for label in sorted(id2label) for _ in range(columns)]
        images, _ = generate(config, spec, pipeline, labels, len(labels), generator)
    else:
        images, _ = generate(config, spec, pipeline, None, columns * UNCONDITIONAL_GRID_ROWS, generator)
    return save_image_grid(images, path, columns=columns)


def evaluate_pipeline(
    config: PriorTrainingConfig, spec: TokenPrior, pipeline, data: TokenData, processor: Any, conditional: bool
) -> dict[str, Any]:
    """Generation metrics of `--num_eval_images` samples against as many held-out images (none without a
    held-out split or with `--num_eval_images 0`)."""
    if data.eval is None or config.num_eval_images == 0:
        return {}
    count = min(config.num_eval_images, len(data.eval))
    vqgan = pipeline.vqgan
    vqgan_config = vqgan.config
    judge = None
    if config.eval_classifier_name_or_path:
        judge = load_classifier_judge(
            config.eval_classifier_name_or_path, vqgan_config.image_size, vqgan_config.num_channels
        )
        if conditional and judge.num_labels != len(data.id2label):
            raise ValueError(
                f"the evaluation classifier {config.eval_classifier_name_or_path} knows {judge.num_labels} classes, "
                "the "
                f"prior's dataset has {len(data.id2label)}: train the classifier on the same dataset"
            )
    inception = InceptionFeatureExtractor(weights_path=config.inception_weights) if config.inception_weights else None
    device = next(vqgan.parameters()).device
    # Within-class diversity groups grids by the data's classes (one group for an unconditional prior).
    num_classes = len(data.id2label) if conditional else 0
    metrics = GenerationMetrics(vqgan_config.codebook_size, judge, inception, num_classes=num_classes or 1).to(device)
    real_pixels = _real_pixels(config, processor, conditional) if judge is not None or inception is not None else None
    disjoint = _add_real(config, metrics, data, real_pixels, vqgan, count, conditional, device)
    labels = [index % num_classes for index in range(count)] if num_classes else None
    start, cpu_start = time.perf_counter(), time.process_time()
    images, tokens = generate(config, spec, pipeline, labels, count, torch.Generator().manual_seed(config.seed + 1))
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    for begin in range(0, count, config.eval_batch_size):
        end = min(begin + config.eval_batch_size, count)
        batch_labels = torch.tensor(labels[begin:end]) if labels is not None else None
        metrics.update_generated(images[begin:end].to(device), batch_labels, tokens[begin:end])
    result = metrics.compute()
    return result | {
        "eval_images": count,
        "eval_classifier": config.eval_classifier_name_or_path,
        "reconstructions_disjoint": disjoint,
        "sampling_seconds_per_image": round(seconds / count, 5),
        # CPU seconds of this process (all its threads): the measure of compute that a loaded machine leaves intact.
        "sampling_cpu_seconds_per_image": round(cpu_seconds / count, 5),
    }


def _real_pixels(config: PriorTrainingConfig, processor: Any, conditional: bool):
    """The held-out images as the classifier saw them (the pixel cache `train-classifier --model_type pixel_vit` wrote,
    when it read the same data), in the order of the cached tokens."""
    pixels = build_token_data(config, None, processor, encode=False, splits=("eval",), with_labels=conditional).eval
    if pixels is None:
        raise ValueError(
            "the generation metrics compare samples with held-out images, and the data has no held-out split"
        )
    return pixels


@torch.no_grad()
def _add_real(
    config,
    metrics: GenerationMetrics,
    data: TokenData,
    real_pixels,
    vqgan: nn.Module,
    count: int,
    conditional: bool,
    device: torch.device,
) -> bool:
    """The first `count` held-out images (images, labels, tokens) as the reference set, and the tokenizer's
    reconstructions of the next `count` (of the same ones when the split is too small). Returns whether the
    reconstructed images were disjoint from the reference set."""
    disjoint = len(data.eval) >= 2 * count
    for begin in range(0, count, config.eval_batch_size):
        end = min(begin + config.eval_batch_size, count)
        rows = data.eval[begin:end]
        tokens = rows["image_tokens"].long().to(device)
        labels = rows["labels"] if conditional else None
        images = real_pixels[begin:end]["pixel_values"].to(device) if real_pixels is not None else None
        metrics.update_real(images, labels, tokens)
        if real_pixels is not None:
            others = data.eval[begin + count : end + count]["image_tokens"] if disjoint else tokens
            metrics.update_reconstructions(vqgan.decode(others.long().to(device)).reconstruction)
    return disjoint


@dataclass
class SavedPrior:
    """A saved prior pipeline ready to be judged: its spec, the pipeline, the cached token data, the processor."""

    spec: TokenPrior
    pipeline: Any
    data: TokenData
    processor: Any
    conditional: bool


def load_saved_prior(config: PriorTrainingConfig) -> SavedPrior:
    """The pipeline folder `--pretrained_model_name_or_path` (checked against `--tokenizer_name_or_path` as training
    checks it) and the data of `train-prior`'s flags, loaded once for any number of evaluations."""
    from diffusers import DiffusionPipeline

    spec = get_prior_spec(config.prior_type)
    device = torch.device("cpu") if config.cpu or not torch.cuda.is_available() else torch.device("cuda")
    tokenizer, processor = load_tokenizer(config.tokenizer_name_or_path, device, revision=config.revision)
    spec.load_model(config.pretrained_model_name_or_path, tokenizer)  # the same checks as training's
    pipeline = DiffusionPipeline.from_pretrained(config.pretrained_model_name_or_path, trust_remote_code=True)
    pipeline = pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    conditional = pipeline.transformer.config.num_classes > 0
    data = build_prior_data(config, tokenizer, processor, conditional, device)
    return SavedPrior(spec, pipeline, data, processor, conditional)


def _judge(config: PriorTrainingConfig, prior: SavedPrior) -> dict[str, Any]:
    metrics = evaluate_pipeline(config, prior.spec, prior.pipeline, prior.data, prior.processor, prior.conditional)
    return metrics | {
        "pipeline": config.pretrained_model_name_or_path,
        "num_inference_steps": config.num_inference_steps,
        "guidance_scale": config.guidance_scale,
        "temperature": config.temperature,
        "top_k": config.top_k,
        "top_p": config.top_p,
    }


def evaluate_saved_pipeline(config: PriorTrainingConfig) -> dict[str, Any]:
    """Judge a saved prior pipeline again (e.g. at another --guidance_scale or --temperature) without training:
    `--pretrained_model_name_or_path` names the pipeline folder, the data and sampling flags are `train-prior`'s.
    Returns the generation metrics (also written to `<output_dir>/metrics.json`, beside the sample grid
    `samples.png` at the same settings: one row per class)."""
    prior = load_saved_prior(config)
    metrics = _judge(config, prior)
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    id2label = prior.data.id2label if prior.conditional else {}
    save_class_samples(config, prior.spec, prior.pipeline, id2label, output_dir / SAMPLES_FILE)
    return write_metrics(output_dir / METRICS_FILE, metrics)


def sweep_configs(given: dict[str, Any], settings: dict[str, list[Any]]) -> list[PriorTrainingConfig]:
    """One checked config per combination of the sampling flags in `settings` (flag name -> values, e.g.
    `{"guidance_scale": [1.0, 2.0], "temperature": [1.0, 4.5]}`, in `itertools.product` order) over the flags
    `given` (as `resolve_prior_args` takes them). Only sampling flags (`SWEEPABLE_FLAGS`) can be swept."""
    unknown = sorted(set(settings) - set(SWEEPABLE_FLAGS))
    if unknown:
        raise ConfigError(f"cannot sweep {', '.join(unknown)}: the sweepable flags are {', '.join(SWEEPABLE_FLAGS)}")
    empty = sorted(name for name, values in settings.items() if not values)
    if empty:
        raise ConfigError(f"no values to sweep for {', '.join(empty)}: give at least one each")
    names = list(settings)
    return [
        resolve_args(PRIOR_COMMAND, given | dict(zip(names, values)))
        for values in itertools.product(*(settings[name] for name in names))
    ]


def sweep_saved_pipeline(configs: list[PriorTrainingConfig], path: str | Path | None = None) -> list[dict[str, Any]]:
    """Judge one saved prior pipeline at each of `configs` (from `sweep_configs`: the same pipeline and data, other
    sampling flags), the pipeline and data loaded once and every setting sampled from its seed. Returns one metrics
    dict per config, also written to `path` as a JSON list when given."""
    if not configs:
        raise ConfigError("nothing to sweep: no settings given")
    first = flag_values(configs[0])
    for config in configs[1:]:
        differing = sorted(name for name, value in flag_values(config).items() if value != first[name])
        if set(differing) - set(SWEEPABLE_FLAGS):
            raise ConfigError(f"the settings of a sweep may differ only in sampling flags, not in {differing}")
    prior = load_saved_prior(configs[0])
    rows = [_judge(config, prior) for config in configs]
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def format_sweep_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of `sweep_saved_pipeline`'s rows: the swept flags, then the ratios of the targets (conditional
    accuracy to the judge's on real images, classifier FID to the tokenizer's floor, within-class diversity to the
    data's) and the sampling cost per image."""
    swept = [name for name in SWEEPABLE_FLAGS if len({str(row.get(name)) for row in rows}) > 1] or ["guidance_scale"]
    columns = {
        "accuracy ratio": "relative_conditional_accuracy",
        "FID ratio": "classifier_fid_ratio",
        "diversity ratio": "diversity_ratio",
        "s / image": "sampling_seconds_per_image",
        "cpu s / image": "sampling_cpu_seconds_per_image",
    }
    lines = ["| " + " | ".join(swept + list(columns)) + " |", "|" + "---|" * (len(swept) + len(columns))]
    for row in rows:
        cells = [str(row.get(name)) for name in swept]
        cells += [_cell(row.get(key), 4 if "image" in label else 2) for label, key in columns.items()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value: Any, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"
