"""The end of `hf-vq train-prior`: the trained prior as a `MaskGITPipeline`, its sample grid (one row per class)
and its generation metrics (`hf_vq.evaluation.generation`) against the held-out split.

Real images, their cached tokens and the tokenizer's reconstructions are compared with as many generated images,
balanced over the classes; the judge is the pixel classifier given by `--eval_classifier_name_or_path`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..evaluation import GenerationMetrics, InceptionFeatureExtractor, load_classifier_judge, save_image_grid
from .classifier_data import ClassifierData, build_classifier_data

# Rows of samples.png for an unconditional prior (a class-conditional one has one row per class).
UNCONDITIONAL_GRID_ROWS = 8


def build_pipeline(tokenizer: nn.Module, prior: nn.Module):
    """The generation pipeline of a tokenizer and a prior trained on its tokens, with MaskGIT's scheduler."""
    from ..pipelines.maskgit import MaskGITPipeline
    from ..schedulers import MaskGITScheduler

    scheduler = MaskGITScheduler(mask_token_id=prior.config.mask_token_id)
    pipeline = MaskGITPipeline(vqgan=tokenizer, transformer=prior, scheduler=scheduler)
    pipeline.set_progress_bar_config(disable=True)  # one bar per generated batch would drown the training log
    return pipeline


@torch.no_grad()
def generate(args: argparse.Namespace, pipeline, class_labels: list[int] | None, count: int,
             generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` images (N, C, H, W) in [-1, 1] and their token grids, for `class_labels` (one image each) or
    unconditionally (`class_labels=None`), in batches of `--generation_batch_size`."""
    images, tokens = [], []
    for start in range(0, count, args.generation_batch_size):
        size = min(args.generation_batch_size, count - start)
        labels = class_labels[start : start + size] if class_labels is not None else None
        output = pipeline(
            class_labels=labels, batch_size=None if labels is not None else size,
            num_inference_steps=args.num_inference_steps,
            guidance_scale=args.guidance_scale if labels is not None else 1.0,
            temperature=args.temperature, generator=generator, output_type="pt",
        )
        images.append(_to_model_range(output.images))
        tokens.append(output.image_tokens.cpu())
    return torch.cat(images), torch.cat(tokens)


def _to_model_range(images: torch.Tensor) -> torch.Tensor:
    """diffusers' "pt" output (N, C, H, W) in [0, 1] -> the tokenizer's [-1, 1]."""
    return images.float().cpu() * 2.0 - 1.0


def save_class_samples(args: argparse.Namespace, pipeline, id2label: dict[int, str], path: Path) -> Path | None:
    """samples.png: `--num_sample_images` images per class, one row per class (from a fixed seed)."""
    columns = args.num_sample_images
    if columns == 0:
        return None
    generator = torch.Generator().manual_seed(args.seed)
    if id2label:
        labels = [label for label in sorted(id2label) for _ in range(columns)]
        images, _ = generate(args, pipeline, labels, len(labels), generator)
    else:
        images, _ = generate(args, pipeline, None, columns * UNCONDITIONAL_GRID_ROWS, generator)
    return save_image_grid(images, path, columns=columns)


def evaluate_pipeline(args: argparse.Namespace, pipeline, data: ClassifierData, processor: Any,
                      conditional: bool) -> dict[str, Any]:
    """Generation metrics of `--num_eval_images` samples against as many held-out images (none without a
    held-out split or with `--num_eval_images 0`)."""
    if data.eval is None or args.num_eval_images == 0:
        return {}
    count = min(args.num_eval_images, len(data.eval))
    vqgan = pipeline.vqgan
    config = vqgan.config
    judge = None
    if args.eval_classifier_name_or_path:
        judge = load_classifier_judge(args.eval_classifier_name_or_path, config.image_size, config.num_channels)
        if conditional and judge.num_labels != len(data.id2label):
            raise ValueError(
                f"the evaluation classifier {args.eval_classifier_name_or_path} knows {judge.num_labels} classes, the "
                f"prior's dataset has {len(data.id2label)}: train the classifier on the same dataset"
            )
    inception = InceptionFeatureExtractor(weights_path=args.inception_weights) if args.inception_weights else None
    device = next(vqgan.parameters()).device
    metrics = GenerationMetrics(config.codebook_size, judge, inception).to(device)
    real_pixels = _real_pixels(args, processor, conditional) if judge is not None or inception is not None else None
    disjoint = _add_real(args, metrics, data, real_pixels, vqgan, count, conditional, device)
    num_classes = len(data.id2label) if conditional else 0
    labels = [index % num_classes for index in range(count)] if num_classes else None
    start = time.perf_counter()
    images, tokens = generate(args, pipeline, labels, count, torch.Generator().manual_seed(args.seed + 1))
    seconds = time.perf_counter() - start
    for begin in range(0, count, args.eval_batch_size):
        end = min(begin + args.eval_batch_size, count)
        batch_labels = torch.tensor(labels[begin:end]) if labels is not None else None
        metrics.update_generated(images[begin:end].to(device), batch_labels, tokens[begin:end])
    result = metrics.compute()
    return result | {"eval_images": count, "eval_classifier": args.eval_classifier_name_or_path,
                     "reconstructions_disjoint": disjoint,
                     "sampling_seconds_per_image": round(seconds / count, 5)}


def _real_pixels(args: argparse.Namespace, processor: Any, conditional: bool):
    """The held-out images as the classifier saw them (the pixel cache `train-classifier --model_type pixel_vit` wrote,
    when it read the same data), in the order of the cached tokens."""
    if not conditional:
        args = argparse.Namespace(**{**vars(args), "label_column": None})
    pixels = build_classifier_data(args, None, processor, encode=False, splits=("eval",)).eval
    if pixels is None:
        raise ValueError("the generation metrics compare samples with held-out images, and the data has no held-out split")
    return pixels


@torch.no_grad()
def _add_real(args, metrics: GenerationMetrics, data: ClassifierData, real_pixels, vqgan: nn.Module, count: int,
              conditional: bool, device: torch.device) -> bool:
    """The first `count` held-out images (images, labels, tokens) as the reference set, and the tokenizer's
    reconstructions of the next `count` (of the same ones when the split is too small). Returns whether the
    reconstructed images were disjoint from the reference set."""
    disjoint = len(data.eval) >= 2 * count
    for begin in range(0, count, args.eval_batch_size):
        end = min(begin + args.eval_batch_size, count)
        rows = data.eval[begin:end]
        tokens = rows["image_tokens"].long().to(device)
        labels = rows["labels"] if conditional else None
        images = real_pixels[begin:end]["pixel_values"].to(device) if real_pixels is not None else None
        metrics.update_real(images, labels, tokens)
        if real_pixels is not None:
            others = data.eval[begin + count : end + count]["image_tokens"] if disjoint else tokens
            metrics.update_reconstructions(vqgan.decode(others.long().to(device)).reconstruction)
    return disjoint


def evaluate_saved_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    """Judge a saved prior pipeline again (e.g. at another --guidance_scale or --temperature) without training:
    `--pretrained_model_name_or_path` names the pipeline folder, the data and sampling flags are `train-prior`'s.
    Returns the generation metrics (also written to `<output_dir>/metrics.json`)."""
    from diffusers import DiffusionPipeline

    from .classifier_loop import load_tokenizer
    from .loop import write_metrics
    from .prior_loop import build_prior_data, load_pretrained_prior

    device = torch.device("cpu") if args.cpu or not torch.cuda.is_available() else torch.device("cuda")
    tokenizer, processor = load_tokenizer(args.tokenizer_name_or_path, device, revision=args.revision)
    load_pretrained_prior(args.pretrained_model_name_or_path, tokenizer)  # the same checks as training's
    pipeline = DiffusionPipeline.from_pretrained(args.pretrained_model_name_or_path, trust_remote_code=True).to(device)
    pipeline.set_progress_bar_config(disable=True)
    conditional = pipeline.transformer.config.num_classes > 0
    data = build_prior_data(args, tokenizer, processor, conditional, device)
    metrics = evaluate_pipeline(args, pipeline, data, processor, conditional)
    metrics |= {"pipeline": args.pretrained_model_name_or_path, "num_inference_steps": args.num_inference_steps,
                "guidance_scale": args.guidance_scale, "temperature": args.temperature}
    return write_metrics(Path(args.output_dir) / "metrics.json", metrics)
