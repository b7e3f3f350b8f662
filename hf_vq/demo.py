"""The main job: train the small VQ autoencoder on Fashion-MNIST with plain straight-through
estimation and with the paper's methods, and print the comparison side by side."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path

import torch

from .data import load_fashion_mnist
from .experiments import ConvVQAutoencoder, images_to_tensor, train_autoencoder, variant_options

DEMO_VARIANTS = ("baseline", "all")


def add_demo_subcommand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="train the demo VQ autoencoder with plain STE and with the paper's methods")
    parser.add_argument("--steps", type=int, default=1500, help="training steps per variant")
    parser.add_argument("--train_batch_size", type=int, default=128)
    parser.add_argument("--codebook_size", type=int, default=512)
    parser.add_argument("--embed_dim", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default="outputs/demo", help="where metrics.json is written")
    parser.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> dict:
    if args.steps < 1:
        raise SystemExit(f"--steps must be >= 1, got {args.steps}")
    train_images = images_to_tensor(load_fashion_mnist("train").images)
    test_images = images_to_tensor(load_fashion_mnist("test").images)
    results = {}
    for variant in DEMO_VARIANTS:
        torch.manual_seed(args.seed)
        options = variant_options(variant, beta=0.95)
        model = ConvVQAutoencoder(1, 64, args.embed_dim, args.codebook_size, **options)
        print(f"training '{variant}' for {args.steps} steps ({options or 'plain straight-through'})", flush=True)
        results[variant] = asdict(train_autoencoder(model, train_images, test_images, args.steps, args.train_batch_size, seed=args.seed))
    print(format_comparison(results, args.codebook_size))
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(results, indent=2))
    print(f"metrics written to {os.path.abspath(output_dir / 'metrics.json')}")
    return results


def format_comparison(results: dict[str, dict], codebook_size: int) -> str:
    header = f"| variant | test MSE | PSNR (dB) | perplexity (of {codebook_size}) | codebook usage | train s |"
    rows = [header, "|" + "---|" * 6]
    for name, r in results.items():
        rows.append(f"| {name} | {r['mse']:.4f} | {r['psnr']:.2f} | {r['perplexity']:.1f} | {r['usage']:.1%} | {r['train_seconds']:.0f} |")
    return "\n".join(rows)
