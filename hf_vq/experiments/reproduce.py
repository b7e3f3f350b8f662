"""Reproduce the ablation of Huh et al. (2023), Table 2: every quantizer variant on every architecture,
with the same seeds and step budget, written out as JSON, Markdown tables and a plot.

Entry point of `scripts/reproduce_paper.py`; `main(argv)` is also what the tests call.

Example (the --quick smoke run, well under a minute on a CPU):
    python scripts/reproduce_paper.py --task all --quick --output_dir /tmp/vq_quick
"""

from __future__ import annotations

import argparse
import ctypes
import json
import multiprocessing
import os
import shlex
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

import torch

from ..config_files import PHOTO_TOKENIZER_CONFIG
from ..data import DataNotFoundError
from .datasets import DATASETS, ClassificationData, load_dataset
from .defaults import ARCHITECTURES, TASK_ARCHITECTURES, VARIANT_METHODS, ArchitectureDefaults
from .report import markdown_report, plot_curves
from .runner import run_one
from .vqgan_backbone import tokenizer_model_options

# Default step budgets. Fashion-MNIST: sized so that 4 architectures x 6 variants x 3 seeds fit in two
# hours on two idle cores (see docs/results.md for the measured per-step costs behind it).
# CIFAR-10: a GPU configuration (wider models below), where steps are cheap.
DEFAULT_STEPS = {"fashion_mnist": 1000, "cifar10": 20000, "photos": 300}

# CIFAR-10 on a GPU: the original widths (ResNet-18 with 64 channels, ViT-Tiny's 192 dimensions and
# 12 blocks, an AlexNet with 64 first-layer filters) instead of the CPU-sized ones.
DATASET_OVERRIDES: dict[str, dict[str, dict]] = {
    "cifar10": {
        "alexnet": {"model_options": {"width": 64}},
        "resnet18": {"model_options": {"width": 64}},
        "vit": {"embed_dim": 192, "model_options": {"depth": 12, "num_heads": 3}},
        "autoencoder": {"model_options": {"hidden": 128}},
    },
    # The photo patches (64x64 RGB): the vqgan backbone is the photo tokenizer's model (PHOTO_TOKENIZER_CONFIG), not
    # the 32x32 demo's, so that the study measures the quantizers inside the model the photo chain uses.
    "photos": {"vqgan": {"model_options": tokenizer_model_options(PHOTO_TOKENIZER_CONFIG)}},
}

# --quick: a smoke test that every variant trains and the report is written (numbers are meaningless).
# A small codebook and replace_freq=2 make dead-code replacement actually fire within the few steps.
QUICK_STEPS = 6
QUICK_OVERRIDES = {"codebook_size": 64, "replace_freq": 2, "batch_size": 32}
QUICK_MODEL_OPTIONS = {
    "alexnet": {"width": 8},
    "resnet18": {"width": 8},
    "vit": {"depth": 2, "num_heads": 2},
    "autoencoder": {"hidden": 16},
    # A VQGAN of the demo's shape (3 levels: 8x8 codes, mid-block attention) with 1/4 of its channels.
    "vqgan": {"block_out_channels": [8, 16, 16], "norm_num_groups": 8, "latent_channels": 8},
}

# Rough relative cost per step, to start the slowest runs first so parallel workers finish together. The VQGAN
# (comparison study only): 0.31-0.33 CPU s per training step on one thread (batch 32), measured like the others and
# as much as ResNet-18's.
RELATIVE_COST = {"resnet18": 4.0, "vqgan": 4.0, "vit": 2.0, "alexnet": 1.5, "autoencoder": 0.5}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Reproduce the VQ ablation of Huh et al. (ICML 2023) on classifiers and autoencoders."
    )
    parser.add_argument("--task", choices=("classification", "reconstruction", "all"), default="all")
    parser.add_argument("--dataset", choices=DATASETS, default="fashion_mnist")
    parser.add_argument(
        "--data_dir", default=None, help="CIFAR-10: the 'cifar-10-batches-py' folder (else the Hub cache)"
    )
    parser.add_argument(
        "--arch",
        default=None,
        help="comma-separated architectures (default: all of the task's): "
        + ", ".join(a for archs in TASK_ARCHITECTURES.values() for a in archs),
    )
    parser.add_argument("--variants", default=",".join(VARIANT_METHODS), help="comma-separated variants")
    parser.add_argument(
        "--steps", type=int, default=None, help=f"training steps per run (default per dataset: {DEFAULT_STEPS})"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eval_size", type=int, default=None, help="test images for the final metrics (default: all)")
    parser.add_argument("--curve_size", type=int, default=1000, help="test images for each point of the curves")
    parser.add_argument("--curve_points", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1, help="parallel runs (processes of one thread each)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (runs then go one at a time)")
    parser.add_argument("--output_dir", default="results")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run: few steps, one seed, small models")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.seeds, args.eval_size, args.curve_size, args.curve_points = (
            QUICK_STEPS,
            args.seeds[:1],
            256,
            128,
            2,
        )
    args.steps = args.steps if args.steps is not None else DEFAULT_STEPS[args.dataset]
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    return args


def selected_architectures(args: argparse.Namespace) -> list[str]:
    tasks = ("classification", "reconstruction") if args.task == "all" else (args.task,)
    allowed = [arch for task in tasks for arch in TASK_ARCHITECTURES[task]]
    if args.arch is None:
        return allowed
    chosen = [name.strip() for name in args.arch.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in allowed]
    if unknown:
        raise SystemExit(
            f"--arch {','.join(unknown)} is not an architecture of --task {args.task}; choose from {allowed}"
        )
    return chosen


def configure(architecture: str, dataset: str, quick: bool) -> ArchitectureDefaults:
    """The architecture's defaults, adjusted for the dataset and for --quick."""
    defaults = ARCHITECTURES[architecture]
    overrides = dict(DATASET_OVERRIDES.get(dataset, {}).get(architecture, {}))
    if quick:  # the small model at the dataset's settings (the photo tokenizer's 64 px side stays)
        quick_model = {**overrides.get("model_options", {}), **QUICK_MODEL_OPTIONS[architecture]}
        overrides.update(QUICK_OVERRIDES, model_options=quick_model)
        if architecture == "vit":
            overrides["embed_dim"] = 16
    if "model_options" in overrides:
        overrides["model_options"] = {**defaults.model_options, **overrides["model_options"]}
    return replace(defaults, **overrides)


_WORKER_DATA: dict[str, ClassificationData] = {}


def _worker_init(dataset: str, data_dir: str | None) -> None:
    # One thread per run: on a small CPU, parallel single-threaded runs use the cores better than
    # one multi-threaded run, and the results do not depend on the number of workers.
    torch.set_num_threads(1)
    _WORKER_DATA[dataset] = load_dataset(dataset, data_dir)


def _pool_worker_init(dataset: str, data_dir: str | None, runner_pid: int) -> None:
    _end_with_the_runner(runner_pid)
    _worker_init(dataset, data_dir)


def _end_with_the_runner(runner_pid: int) -> None:
    """Ask Linux to kill this pool worker when the runner dies. Without it, a runner stopped with SIGTERM or
    SIGKILL (`timeout`, a scheduler, the end of a session) leaves its workers training for the rest of their job
    and then waiting forever, taking the CPU from the next start; the runner holds nothing they could save."""
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1  # from <linux/prctl.h>
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != runner_pid:  # the runner died before the request was made
        os._exit(1)


def _run_job(job: dict) -> dict:
    data = _WORKER_DATA[job["dataset"]]
    defaults = job["defaults"]
    result = run_one(
        job["architecture"],
        defaults,
        job["variant"],
        job["seed"],
        data,
        job["steps"],
        num_curve_points=job["curve_points"],
        curve_size=job["curve_size"],
        eval_size=job["eval_size"],
        device=job["device"],
    )
    return {**result.to_dict(), "dataset": job["dataset"], "task": defaults.task, "defaults": defaults.to_dict()}


def build_jobs(args: argparse.Namespace) -> list[dict]:
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANT_METHODS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {list(VARIANT_METHODS)}")
    jobs = [
        {
            "architecture": arch,
            "defaults": configure(arch, args.dataset, args.quick),
            "variant": variant,
            "seed": seed,
            "dataset": args.dataset,
            "steps": args.steps,
            "curve_points": args.curve_points,
            "curve_size": args.curve_size,
            "eval_size": args.eval_size,
            "device": args.device,
        }
        for arch in selected_architectures(args)
        for seed in args.seeds
        for variant in variants
    ]
    return sorted(jobs, key=lambda job: -RELATIVE_COST[job["architecture"]])


def run_jobs(jobs: list[dict], args: argparse.Namespace, on_result, job_function=None) -> None:
    """Run every job (through `job_function`, default `_run_job`; a module-level function, so that worker processes
    can import it), in this process (--workers 1 or a GPU) or in a pool of single-threaded processes."""
    job_function = job_function or _run_job
    try:  # load here first, so that missing data ends with its message rather than a broken pool
        _worker_init(args.dataset, args.data_dir)
    except DataNotFoundError as error:
        raise SystemExit(f"error: {error}") from None
    if args.workers <= 1 or args.device != "cpu":
        for job in jobs:
            on_result(job_function(job))
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        args.workers,
        mp_context=context,
        initializer=_pool_worker_init,
        initargs=(args.dataset, args.data_dir, os.getpid()),
    ) as pool:
        for future in as_completed([pool.submit(job_function, job) for job in jobs]):
            on_result(future.result())


def main(argv: list[str] | None = None) -> dict:
    """Run the ablation; returns {"runs": [...], "report": markdown, "plot": path or None}."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    jobs = build_jobs(args)
    print(f"{len(jobs)} runs: {args.steps} steps each, seeds {args.seeds}, {args.workers} worker(s)", flush=True)
    runs, start = [], time.perf_counter()

    def record(run: dict) -> None:
        runs.append(run)
        name = f"{run['dataset']}_{run['architecture']}_{run['variant']}_seed{run['seed']}.json"
        (output_dir / name).write_text(json.dumps(run, indent=2))
        headline = {k: round(v, 4) for k, v in run["metrics"].items()}
        print(
            f"[{len(runs)}/{len(jobs)} {time.perf_counter() - start:.0f}s] "
            f"{run['architecture']}/{run['variant']}/seed{run['seed']}: {headline} "
            f"({run['cpu_seconds']:.0f} CPU s)",
            flush=True,
        )

    run_jobs(jobs, args, record)
    runs.sort(key=lambda run: (run["architecture"], run["seed"]))
    return write_report(runs, args, argv, output_dir)


def write_report(runs: list[dict], args: argparse.Namespace, argv: list[str], output_dir: Path) -> dict:
    command = "python scripts/reproduce_paper.py " + shlex.join(argv)
    codebook_sizes = {run["architecture"]: run["defaults"]["codebook_size"] for run in runs}
    tasks = {run["architecture"]: run["task"] for run in runs}
    report = markdown_report(runs, command, codebook_sizes, tasks)
    (output_dir / f"results_{args.dataset}.md").write_text(report + "\n")
    (output_dir / f"results_{args.dataset}.json").write_text(json.dumps({"command": command, "runs": runs}, indent=2))
    plot = plot_curves(runs, tasks, output_dir / f"results_{args.dataset}.png")
    print(report)
    print(
        f"written: {output_dir / f'results_{args.dataset}.md'}, {output_dir / f'results_{args.dataset}.json'}"
        + (f", {plot}" if plot else "")
    )
    return {"runs": runs, "report": report, "plot": plot}
