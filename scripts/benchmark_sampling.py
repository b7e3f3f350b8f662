#!/usr/bin/env python
"""Sampling speed of `MaskGITPipeline` at demo scale: images per second and seconds per batch, on the CPU.

The tokenizer is the `make demo` one (configs/vqgan_fashion_mnist_cpu.yaml: 32x32 grayscale -> 8x8 = 64 tokens, 512
codes); the priors are MaskGIT transformers of the given widths (4 layers, 4 heads, MLP 4x, 10 classes). Weights are
random: sampling costs the same for trained ones. Each configuration samples `--num_images` images in
`--num_inference_steps` steps, with and without classifier-free guidance (which doubles the prior's batch); the
parts (prior forwards, scheduler steps, tokenizer decode) are timed separately. Configurations alternate in rounds so
that load from other processes hits all alike; the table reports medians over rounds. With one thread, the process's
CPU time ("cpu s") is what the sampling costs one free core: on a shared machine the wall time also counts the time
other processes hold the core.

    python scripts/benchmark_sampling.py --threads 1
    python scripts/benchmark_sampling.py --threads 1 --hidden_sizes 128 256 --output results/benchmark_sampling.json

Prints a Markdown table; writes JSON with --output.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from hf_vq import MaskGITConfig, MaskGITModel, MaskGITPipeline, MaskGITScheduler, VQGANConfig, VQGANModel


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer_config", default="configs/vqgan_fashion_mnist_cpu.yaml")
    parser.add_argument("--hidden_sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--num_hidden_layers", type=int, default=4)
    parser.add_argument("--num_images", type=int, default=64)
    parser.add_argument("--num_inference_steps", type=int, default=12)
    parser.add_argument("--guidance_scales", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the target is one CPU core)")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    return parser.parse_args(argv)


class Stopwatch:
    """Accumulates the wall time of calls to a callable it wraps."""

    def __init__(self, function):
        self.function, self.seconds = function, 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.function(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def build_pipeline(tokenizer: VQGANModel, hidden_size: int, num_hidden_layers: int) -> MaskGITPipeline:
    config = MaskGITConfig.from_tokenizer_config(
        tokenizer.config,
        num_classes=10,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=4,
        intermediate_size=4 * hidden_size,
    )
    prior = MaskGITModel(config).eval()
    pipe = MaskGITPipeline(
        vqgan=tokenizer, transformer=prior, scheduler=MaskGITScheduler(mask_token_id=config.mask_token_id)
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def time_sampling(pipe: MaskGITPipeline, args: argparse.Namespace, guidance_scale: float) -> dict[str, float]:
    """One timed call of the pipeline, with its parts."""
    prior, step, decode = (
        Stopwatch(pipe.transformer.forward),
        Stopwatch(pipe.scheduler.step),
        Stopwatch(pipe.vqgan.decode),
    )
    pipe.transformer.forward, pipe.scheduler.step, pipe.vqgan.decode = prior, step, decode
    labels = [index % 10 for index in range(args.num_images)]
    start, start_cpu = time.perf_counter(), time.process_time()
    try:
        pipe(
            class_labels=labels,
            num_inference_steps=args.num_inference_steps,
            guidance_scale=guidance_scale,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        )
    finally:
        del pipe.transformer.forward, pipe.scheduler.step, pipe.vqgan.decode  # back to the class methods
    return {
        "total_s": time.perf_counter() - start,
        "total_cpu_s": time.process_time() - start_cpu,
        "prior_s": prior.seconds,
        "scheduler_s": step.seconds,
        "decode_s": decode.seconds,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tokenizer = VQGANModel(VQGANConfig.from_yaml(args.tokenizer_config)).eval()
    pipes = {hidden: build_pipeline(tokenizer, hidden, args.num_hidden_layers) for hidden in args.hidden_sizes}
    cases = [(hidden, scale) for hidden in args.hidden_sizes for scale in args.guidance_scales]
    for hidden, scale in cases:  # warm-up: first calls allocate
        pipes[hidden](class_labels=[0], num_inference_steps=2, guidance_scale=scale, output_type="np")
    runs: dict[tuple[int, float], list[dict[str, float]]] = {case: [] for case in cases}
    for _ in range(args.rounds):
        for hidden, scale in cases:
            runs[(hidden, scale)].append(time_sampling(pipes[hidden], args, scale))

    results = []
    for (hidden, scale), timings in runs.items():
        prior_parameters = sum(p.numel() for p in pipes[hidden].transformer.parameters())
        median = {key: statistics.median(t[key] for t in timings) for key in timings[0]}
        results.append(
            {
                "hidden_size": hidden,
                "prior_parameters": prior_parameters,
                "guidance_scale": scale,
                "num_images": args.num_images,
                "num_inference_steps": args.num_inference_steps,
                "images_per_s": args.num_images / median["total_s"],
                **median,
            }
        )
    print(
        f"threads={args.threads}, {args.num_images} images, {args.num_inference_steps} steps, "
        f"{args.rounds} rounds (median), torch {torch.__version__}, {platform.processor() or platform.machine()}\n"
    )
    print(
        "| prior width (params) | guidance | total s (wall) | total s (cpu) | prior s | scheduler s | decode s | "
        "images/s (wall) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['hidden_size']} ({r['prior_parameters'] / 1e6:.2f}M) | {r['guidance_scale']:g} | "
            f"{r['total_s']:.2f} | {r['total_cpu_s']:.2f} | "
            f"{r['prior_s']:.2f} | {r['scheduler_s']:.2f} | {r['decode_s']:.2f} | {r['images_per_s']:.1f} |"
        )
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps({"args": vars(args), "results": results}, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
