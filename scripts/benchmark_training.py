#!/usr/bin/env python
"""Training throughput of our VQGAN tokenizer against diffusers' `VQModel` of the same size, in the same loop.

Both models get the same encoder/decoder (ours exported with `VQGANModel.to_diffusers()`, a plain weight copy, so
the parameter counts match up to the quantizer's affine scale and shift), the same batches, the same loss
(L1 reconstruction + quantizer loss), the same AdamW step. Ours runs with every option of its config on (for the
Fashion-MNIST config: affine codes, synchronized update, alternating step, k-means init, dead-code replacement);
diffusers' quantizer is the plain VQ-VAE one. The two alternate in rounds, so that load from other processes on a
shared machine hits both alike, and the reported ratio is the median of the per-round ratios.

    python scripts/benchmark_training.py --config configs/vqgan_fashion_mnist.yaml --batch_size 16 --steps 5
    python scripts/benchmark_training.py --output results/benchmark_training.json

On a GPU, `--variants` runs the comparison under several settings, each with fresh models (same seed), e.g. the
256 px ImageNet tokenizer in bf16 autocast, with and without `torch.compile` and channels_last memory format:

    python scripts/benchmark_training.py --config configs/vqgan_imagenet256.yaml --device cuda --batch_size 32 \
        --steps 10 --rounds 3 --variants bf16,bf16+compile,bf16+channels_last,bf16+compile+channels_last

A variant is "fp32" or "bf16", plus "+compile" and/or "+channels_last". `--dry_run` runs every requested variant
on the tiny config for one step (a smoke test of the script, not a measurement).

Prints a Markdown table; writes JSON with --output.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from hf_vq.models.vqgan import VQGANConfig, VQGANModel


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/vqgan_fashion_mnist.yaml", help="YAML file with a model: section")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per model per round")
    parser.add_argument("--warmup_steps", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--variants", default="fp32", help="comma-separated: fp32|bf16[+compile][+channels_last]")
    parser.add_argument("--dry_run", action="store_true", help="tiny config, one step per round, one round")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.config, args.batch_size, args.steps, args.warmup_steps, args.rounds = (
            "configs/vqgan_tiny.yaml",
            2,
            1,
            1,
            1,
        )
    args.variants = [parse_variant(text) for text in args.variants.split(",")]
    return args


def parse_variant(text: str) -> dict:
    """ "bf16+compile+channels_last" -> {"name": ..., "bf16": True, "compile": True, "channels_last": True}."""
    parts = text.strip().split("+")
    unknown = [p for p in parts[1:] if p not in ("compile", "channels_last")]
    if parts[0] not in ("fp32", "bf16") or unknown:
        raise SystemExit(
            f"bad variant {text!r}: use fp32 or bf16, optionally followed by +compile and/or +channels_last"
        )
    return {
        "name": text.strip(),
        "bf16": parts[0] == "bf16",
        "compile": "compile" in parts,
        "channels_last": "channels_last" in parts,
    }


def build_models(config_path: str) -> tuple[torch.nn.Module, torch.nn.Module, VQGANConfig]:
    model_section = yaml.safe_load(Path(config_path).read_text())["model"]
    config = VQGANConfig(**model_section)
    ours = VQGANModel(config).train()
    theirs = ours.to_diffusers().train()  # same weights, diffusers' modules and plain VQ-VAE quantizer
    return ours, theirs, config


def our_loss(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    output = model(images)
    return F.l1_loss(output.reconstruction, images) + output.quantizer_loss


def diffusers_loss(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    output = model(images)
    return F.l1_loss(output.sample, images) + output.commit_loss.mean()


class Trainer:
    """A model, its loss and its AdamW optimizer: `run(batches)` trains on them and returns the seconds taken.

    `variant` (see `parse_variant`): bf16 autocast around the forward and loss (the quantizer keeps float32
    inside, by design), `torch.compile` of the model, channels_last memory format of model and images."""

    def __init__(self, model: torch.nn.Module, loss_fn, variant: dict | None = None):
        variant = variant or {"bf16": False, "compile": False, "channels_last": False}
        self.variant = variant
        if variant["channels_last"]:
            model = model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.5, 0.9))
        self.model = torch.compile(model) if variant["compile"] else model
        self.loss_fn = loss_fn

    def _autocast(self, device: torch.device):
        if not self.variant["bf16"]:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)

    def run(self, batches: list[torch.Tensor]) -> tuple[float, float]:
        """Train on `batches`; returns (wall-clock seconds, CPU seconds of this process)."""
        device = batches[0].device
        _synchronize(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        for images in batches:
            if self.variant["channels_last"]:
                images = images.contiguous(memory_format=torch.channels_last)
            with self._autocast(device):
                loss = self.loss_fn(self.model, images)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        _synchronize(device)
        return time.perf_counter() - start, time.process_time() - start_cpu


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def benchmark(args: argparse.Namespace, variant: dict | None = None) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    ours, theirs, config = build_models(args.config)
    ours, theirs = ours.to(device), theirs.to(device)
    shape = (args.batch_size, config.num_channels, config.image_size, config.image_size)
    batches = [(torch.rand(shape) * 2 - 1).to(device) for _ in range(args.steps)]
    trainers = {
        "hf_vq VQGANModel": Trainer(ours, our_loss, variant),
        "diffusers VQModel": Trainer(theirs, diffusers_loss, variant),
    }
    for trainer in trainers.values():
        trainer.run(batches[: args.warmup_steps])  # first steps: k-means init, allocator warm-up
    seconds = {name: [] for name in trainers}
    cpu_seconds = {name: [] for name in trainers}
    for round_index in range(args.rounds):
        # Alternate which model goes first, so neither always runs right after the other's memory traffic.
        order = list(trainers) if round_index % 2 == 0 else list(reversed(trainers))
        for name in order:
            wall, cpu = trainers[name].run(batches)
            seconds[name].append(wall)
            cpu_seconds[name].append(cpu)
    images = args.steps * args.batch_size
    ours, theirs = "hf_vq VQGANModel", "diffusers VQModel"
    ratios = [theirs_s / ours_s for ours_s, theirs_s in zip(seconds[ours], seconds[theirs])]
    cpu_ratios = [theirs_s / ours_s for ours_s, theirs_s in zip(cpu_seconds[ours], cpu_seconds[theirs])]
    return {
        "variant": (variant or {"name": "fp32"})["name"],
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "config": args.config,
        "batch_size": args.batch_size,
        "image_shape": list(shape[1:]),
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "models": {
            name: {
                "parameters": count_parameters(trainer.model),
                "images_per_second": images / statistics.median(seconds[name]),
                "images_per_cpu_second": images / statistics.median(cpu_seconds[name]),
                "round_seconds": seconds[name],
                "round_cpu_seconds": cpu_seconds[name],
            }
            for name, trainer in trainers.items()
        },
        # > 1: ours trains faster. Median of per-round ratios (robust to load bursts on a shared machine).
        "speed_ratio_ours_over_diffusers": statistics.median(ratios),
        # The same from the process' CPU time: on a machine shared with other jobs, waiting for a core inflates
        # wall-clock time but not CPU time (with --threads 1 it is the compute alone).
        "cpu_time_ratio_ours_over_diffusers": statistics.median(cpu_ratios),
    }


def format_table(result: dict) -> str:
    rows = ["| model | parameters | training images/s | images per CPU second |", "|---|---|---|---|"]
    for name, entry in result["models"].items():
        rows.append(
            f"| {name} | {entry['parameters']:,} | {entry['images_per_second']:.1f} | "
            f"{entry['images_per_cpu_second']:.1f} |"
        )
    rows.append(
        f"\nspeed ratio (ours / diffusers, median of {result['rounds']} rounds): "
        f"{result['speed_ratio_ours_over_diffusers']:.3f} wall-clock, "
        f"{result['cpu_time_ratio_ours_over_diffusers']:.3f} CPU time"
    )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = []
    for variant in args.variants:
        try:
            result = benchmark(args, variant)
        except Exception as error:  # noqa: BLE001 - one failing variant (e.g. compile) must not lose the others
            result = {"variant": variant["name"], "error": f"{type(error).__name__}: {error}"[:500]}
            print(f"variant {variant['name']} failed: {result['error']}", flush=True)
        else:
            print(f"\nvariant {variant['name']}:\n{format_table(result)}", flush=True)
        results.append(result)
        if args.output:  # after every variant: a later one that runs out of time loses only itself
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            Path(args.output).write_text(json.dumps(results[0] if len(results) == 1 else results, indent=2))
    if args.output:
        print(f"results written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
