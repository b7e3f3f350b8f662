"""The main job, `hf-vq demo` (`make demo`), on Fashion-MNIST and the CPU:

1. the quantizer: the small VQ autoencoder trained with plain straight-through estimation and with
   the paper's methods, compared side by side (reconstruction error, perplexity, codebook usage);
2. the tokenizer: a VQGAN trained with Accelerate (configs/vqgan_fashion_mnist_cpu.yaml), evaluated,
   and saved as a `from_pretrained` folder with metrics.json and a sample grid;
3. the classifier: a ViT trained on that tokenizer's token grids, with its test accuracy;
4. the prior: a class-conditional token prior trained on the same token grids (`--prior_type`: MaskGIT by default,
   the prior that won docs/benchmarks.md's comparison at equal compute; `autoregressive` for transformers' Llama),
   saved as a generation pipeline, with a sample grid (one row per class) judged by a pixel ViT that hf_vq trains on
   the same images (conditional accuracy, classifier-feature FID against the tokenizer's reconstructions,
   within-class diversity).
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path

import torch

from .config_files import CONFIG_DIR, TOKENIZER_CONFIG
from .data import load_fashion_mnist
from .experiments import ARCHITECTURES, VARIANT_METHODS, ConvVQAutoencoder, images_to_tensor, train_autoencoder

DEMO_VARIANTS = ("baseline", "all")
CLASSIFIER_CONFIG = CONFIG_DIR / "token_vit_fashion_mnist.yaml"
# Stage 4's prior, by --prior_type: the default is the winner of docs/benchmarks.md's MaskGIT vs autoregressive table.
PRIOR_CONFIGS = {
    "maskgit": CONFIG_DIR / "maskgit_fashion_mnist.yaml",
    "autoregressive": CONFIG_DIR / "autoregressive_fashion_mnist.yaml",
}
DEFAULT_PRIOR_TYPE = "maskgit"
PRIOR_NAMES = {"maskgit": "MaskGIT", "autoregressive": "an autoregressive Llama"}
STAGES = ("quantizer", "tokenizer", "classifier", "prior")
# --quick: a smoke run of every stage (used by the tests), not a useful model.
QUICK = {
    "autoencoder_steps": 5,
    "tokenizer_steps": 4,
    "classifier_steps": 4,
    "classifier_train_samples": 256,
    "eval_samples": 256,
    "prior_steps": 4,
    "judge_steps": 4,
    "prior_eval_images": 20,
}


def add_demo_subcommand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="the main job: quantizer comparison, tokenizer training, token classifier, token prior"
    )
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES, help="which stages to run")
    parser.add_argument("--autoencoder_steps", type=int, default=1000, help="training steps per quantizer variant")
    parser.add_argument(
        "--tokenizer_steps", type=int, default=None, help="default: the tokenizer config's max_train_steps"
    )
    parser.add_argument(
        "--classifier_steps", type=int, default=None, help="default: the classifier config's max_train_steps"
    )
    parser.add_argument(
        "--classifier_train_samples",
        type=int,
        default=10000,
        help="training images tokenized for the classifier and the prior (and the pixel ViT judging it)",
    )
    parser.add_argument(
        "--prior_type",
        default=DEFAULT_PRIOR_TYPE,
        choices=sorted(PRIOR_CONFIGS),
        help="stage 4's prior: configs/maskgit_fashion_mnist.yaml or configs/autoregressive_fashion_mnist.yaml",
    )
    parser.add_argument("--prior_steps", type=int, default=None, help="default: the prior config's max_train_steps")
    parser.add_argument(
        "--judge_steps", type=int, default=500, help="training steps of the pixel ViT judging the prior"
    )
    parser.add_argument(
        "--prior_eval_images", type=int, default=None, help="default: the prior config's num_eval_images"
    )
    parser.add_argument(
        "--eval_samples", type=int, default=None, help="limit the evaluation images (default: configs' values)"
    )
    parser.add_argument("--codebook_size", type=int, default=512, help="codebook of the demo autoencoder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a few steps of every stage (a smoke test)")
    parser.add_argument("--output_dir", default="outputs/demo")
    parser.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> dict:
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    for name in ("autoencoder_steps", "tokenizer_steps", "classifier_steps", "prior_steps", "judge_steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise SystemExit(f"--{name} must be >= 1, got {getattr(args, name)}")
    output_dir = Path(args.output_dir).resolve()
    results: dict = {}
    if "quantizer" in args.stages:
        results["quantizer"] = compare_quantizers(args, output_dir)
    if "tokenizer" in args.stages:
        results["tokenizer"] = train_demo_tokenizer(args, output_dir / "tokenizer")
    tokenizer_dir = output_dir / "tokenizer"
    for stage in ("classifier", "prior"):
        if stage in args.stages and not (tokenizer_dir / "config.json").is_file():
            raise SystemExit(
                f"the {stage} stage needs the demo tokenizer in {tokenizer_dir}: run the tokenizer stage first"
            )
    if "classifier" in args.stages:
        results["classifier"] = train_demo_classifier(args, tokenizer_dir, output_dir / "token_vit")
    if "prior" in args.stages:
        results["prior"] = train_demo_prior(args, tokenizer_dir, output_dir)
    print_summary(results, output_dir)
    return results


# --- 1. quantizer ------------------------------------------------------------------------------------------


def compare_quantizers(args: argparse.Namespace, output_dir: Path) -> dict:
    print("== 1/4 quantizer: plain straight-through vs the paper's methods (VQ autoencoder) ==", flush=True)
    train_images = images_to_tensor(load_fashion_mnist("train").images)
    test_images = images_to_tensor(load_fashion_mnist("test").images[: args.eval_samples])
    results = {}
    for variant in DEMO_VARIANTS:
        torch.manual_seed(args.seed)
        # The paper reproduction's autoencoder settings, so the demo is one cell of that table.
        options = ARCHITECTURES["autoencoder"].quantizer_options(variant)
        model = ConvVQAutoencoder(1, 64, 32, args.codebook_size, **options)
        methods = ", ".join(VARIANT_METHODS[variant]) or "plain straight-through"
        print(f"training '{variant}' for {args.autoencoder_steps} steps ({methods})", flush=True)
        result = train_autoencoder(model, train_images, test_images, args.autoencoder_steps, seed=args.seed)
        results[variant] = asdict(result)
    print(format_comparison(results, args.codebook_size))
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "quantizer_comparison.json").write_text(json.dumps(results, indent=2))
    return results


def format_comparison(results: dict[str, dict], codebook_size: int) -> str:
    header = f"| variant | test MSE | PSNR (dB) | perplexity (of {codebook_size}) | codebook usage | train s |"
    rows = [header, "|" + "---|" * 6]
    for name, r in results.items():
        rows.append(
            f"| {name} | {r['mse']:.4f} | {r['psnr']:.2f} | {r['perplexity']:.1f} | {r['usage']:.1%} | "
            f"{r['train_seconds']:.0f} |"
        )
    return "\n".join(rows)


# --- 2. tokenizer --------------------------------------------------------------------------------------------


def train_demo_tokenizer(args: argparse.Namespace, output_dir: Path) -> dict:
    from .training.tokenizer_command import train_from_config

    print(f"== 2/4 tokenizer: VQGAN on Fashion-MNIST with Accelerate ({TOKENIZER_CONFIG.name}) ==", flush=True)
    flags = {"output_dir": str(output_dir), "seed": args.seed}
    if args.tokenizer_steps is not None:
        flags.update(max_train_steps=args.tokenizer_steps, checkpointing_steps=args.tokenizer_steps, lr_warmup_steps=0)
    if args.eval_samples is not None:
        flags["max_eval_samples"] = args.eval_samples
    result = train_from_config(str(TOKENIZER_CONFIG), **flags)
    return {key: result[key] for key in ("output_dir", "metrics", "metrics_path", "sample_grid") if key in result}


# --- 3. classifier -------------------------------------------------------------------------------------------


def train_demo_classifier(args: argparse.Namespace, tokenizer_dir: Path, output_dir: Path) -> dict:
    from .training.classifier_command import train_classifier

    print("== 3/4 classifier: a ViT on the tokenizer's token grids ==", flush=True)
    flags = {
        "config": str(CLASSIFIER_CONFIG),
        "tokenizer_name_or_path": str(tokenizer_dir),
        "output_dir": str(output_dir),
        "max_train_samples": args.classifier_train_samples,
        "seed": args.seed,
    }
    if args.classifier_steps is not None:
        flags.update(
            max_train_steps=args.classifier_steps, checkpointing_steps=args.classifier_steps, lr_warmup_steps=0
        )
    if args.eval_samples is not None:
        flags["max_eval_samples"] = args.eval_samples
    result = train_classifier(flags)
    return {key: result[key] for key in ("output_dir", "metrics", "metrics_path") if key in result}


# --- 4. prior ------------------------------------------------------------------------------------------------


def train_demo_prior(args: argparse.Namespace, tokenizer_dir: Path, output_dir: Path) -> dict:
    """The pixel ViT that judges the samples (trained once, kept), then the prior on the classifier stage's cached
    tokens (same images, same tokenizer: nothing is tokenized again)."""
    from .training.classifier_command import train_classifier
    from .training.prior_command import train_prior

    print(
        f"== 4/4 prior: {PRIOR_NAMES[args.prior_type]} on the tokenizer's token grids, judged by a pixel ViT ==",
        flush=True,
    )
    judge_dir = output_dir / "pixel_vit"
    data = {"max_train_samples": args.classifier_train_samples, "seed": args.seed}
    if args.eval_samples is not None:
        data["max_eval_samples"] = args.eval_samples
    if not (judge_dir / "config.json").is_file():
        print("training the pixel ViT that judges the samples", flush=True)
        train_classifier(
            {
                "config": str(CLASSIFIER_CONFIG),
                "tokenizer_name_or_path": str(tokenizer_dir),
                "model_type": "pixel_vit",
                "output_dir": str(judge_dir),
                "max_train_steps": args.judge_steps,
                "checkpointing_steps": args.judge_steps,
                "lr_warmup_steps": min(50, args.judge_steps // 10),
                **data,
            }
        )
    flags = {
        "config": str(PRIOR_CONFIGS[args.prior_type]),
        "tokenizer_name_or_path": str(tokenizer_dir),
        "output_dir": str(output_dir / "prior"),
        "eval_classifier_name_or_path": str(judge_dir),
        **data,
    }
    if args.prior_steps is not None:
        flags.update(max_train_steps=args.prior_steps, checkpointing_steps=args.prior_steps, lr_warmup_steps=0)
    if args.prior_eval_images is not None:
        flags["num_eval_images"] = args.prior_eval_images
    result = train_prior(flags)
    return {key: result[key] for key in ("output_dir", "metrics", "metrics_path", "sample_grid") if key in result}


def print_summary(results: dict, output_dir: Path) -> None:
    print("\n== demo results ==")
    if "quantizer" in results:
        print(f"quantizer comparison:  {output_dir / 'quantizer_comparison.json'}")
    if "tokenizer" in results:
        tokenizer, metrics = results["tokenizer"], results["tokenizer"]["metrics"]
        shown = ", ".join(
            f"{key} {metrics[key]:.4g}" for key in ("psnr", "ssim", "codebook_usage", "perplexity") if key in metrics
        )
        print(f"tokenizer (from_pretrained folder): {tokenizer['output_dir']}")
        print(f"  metrics: {tokenizer['metrics_path']}  ({shown})")
        if tokenizer.get("sample_grid"):
            print(f"  originals | reconstructions: {tokenizer['sample_grid']}")
    if "classifier" in results:
        classifier = results["classifier"]
        print(f"token classifier: {classifier['output_dir']}")
        print(f"  test top-1 accuracy: {classifier['metrics']['accuracy']:.2%}  ({classifier['metrics_path']})")
    if "prior" in results:
        from .training.prior_command import format_generation_metrics

        prior = results["prior"]
        print(f"prior (DiffusionPipeline folder): {prior['output_dir']}")
        print(f"  samples, one row per class: {prior['sample_grid']}")
        print(f"  metrics: {prior['metrics_path']}")
        print("  " + format_generation_metrics(prior["metrics"]).replace("\n", "\n  "))
    print(f"everything is under {os.path.relpath(output_dir)}")
