"""One run of the paper's ablation: build a model for (architecture, variant, seed), train it for a fixed
number of steps, and evaluate it, recording a test-metric curve for the plot.

Classification reports test accuracy; reconstruction (the demo's VQ autoencoder, or the comparison study's VQGAN
tokenizer, trained on the same images without labels) reports test MSE and PSNR. Both report the perplexity and
usage of the code histogram over the evaluated test images, like `evaluate_autoencoder`.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..quantization.metrics import perplexity_and_usage
from .autoencoder import ConvVQAutoencoder
from .classifiers import CLASSIFIERS, ViTVQ
from .datasets import ClassificationData
from .defaults import ArchitectureDefaults
from .vqgan_backbone import VQGANBackbone, vqgan_config, vqgan_data


@dataclass
class RunResult:
    """Final test metrics of one (architecture, variant, seed) run and its curve over training steps.

    `metric` is accuracy (classification, higher is better) or MSE (reconstruction, lower is better);
    `curve` holds {"step", "metric", "train_perplexity", "train_loss"} at every evaluation point.
    `cpu_seconds` (training, curve and final evaluation) is the process CPU time: with one thread per run
    it is the cost on an idle core, unlike `train_seconds` (wall time) on a shared machine. `ms_per_step` and
    `cpu_ms_per_step` time the training steps alone (wall and CPU); they are kept out of `metrics`, which a
    seed determines exactly.
    """

    architecture: str
    variant: str
    seed: int
    steps: int
    metrics: dict[str, float]
    curve: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    cpu_seconds: float = 0.0
    quantizer_options: dict = field(default_factory=dict)
    ms_per_step: float = 0.0
    cpu_ms_per_step: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def build_model(
    architecture: str, defaults: ArchitectureDefaults, variant: str, data: ClassificationData
) -> nn.Module:
    """The architecture's model with the VQ options of `variant`, sized for `data`'s images."""
    if architecture == "vqgan":  # its config takes the sizes and the quantizer options (vqgan_backbone.py)
        return VQGANBackbone(vqgan_config(defaults, variant, data.in_channels))
    options = defaults.quantizer_options(variant)
    code_dim = defaults.code_dim or defaults.embed_dim
    if architecture == "autoencoder":
        return ConvVQAutoencoder(
            data.in_channels, defaults.model_options.get("hidden", 64), code_dim, defaults.codebook_size, **options
        )
    model_class = CLASSIFIERS[architecture]
    sizes = {
        "in_channels": data.in_channels,
        "num_classes": int(data.train_labels.max()) + 1,
        "codebook_size": defaults.codebook_size,
    }
    if model_class is ViTVQ:
        sizes.update(image_size=data.image_size, dim=defaults.embed_dim, code_dim=defaults.code_dim)
    else:
        sizes["embed_dim"] = code_dim
    return model_class(**sizes, **defaults.model_options, **options)


def backbone_data(architecture: str, defaults: ArchitectureDefaults, data: ClassificationData) -> ClassificationData:
    """The images as `architecture` takes them: the VQGAN tokenizer's at its config's size, the others' as loaded."""
    return vqgan_data(data, defaults) if architecture == "vqgan" else data


def task_loss(task: str, out: dict[str, torch.Tensor], images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The task's loss plus the quantizer's (commitment + codebook) loss."""
    if task == "classification":
        return F.cross_entropy(out["logits"], labels) + out["vq_loss"]
    # A backbone with a pixel loss of its own returns it (the VQGAN tokenizer: its config's L1); the others train
    # on MSE.
    pixel_loss = (
        out["reconstruction_loss"] if "reconstruction_loss" in out else F.mse_loss(out["reconstruction"], images)
    )
    return pixel_loss + out["vq_loss"]


@torch.no_grad()
def evaluate(
    task: str,
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    codebook_size: int,
    batch_size: int = 500,
    device: str = "cpu",
) -> dict[str, float]:
    """Accuracy (or MSE and PSNR) and the perplexity and usage of the code histogram over `images`."""
    was_training = model.training
    model.eval()
    correct, squared_error, counts = 0, 0.0, torch.zeros(codebook_size)
    for start in range(0, len(images), batch_size):
        batch, batch_labels = (
            images[start : start + batch_size].to(device),
            labels[start : start + batch_size].to(device),
        )
        out = model(batch)
        counts += torch.bincount(out["indices"].flatten().cpu(), minlength=codebook_size).float()
        if task == "classification":
            correct += int((out["logits"].argmax(dim=1) == batch_labels).sum())
        else:
            squared_error += float(F.mse_loss(out["reconstruction"], batch, reduction="sum"))
    model.train(was_training)
    perplexity, usage = perplexity_and_usage(counts)
    metrics = {"perplexity": float(perplexity), "usage": float(usage)}
    if task == "classification":
        metrics["accuracy"] = correct / len(images)
    else:
        metrics["mse"] = squared_error / images.numel()
        metrics["psnr"] = 10 * math.log10(4.0 / metrics["mse"])  # images in [-1, 1]: peak-to-peak 2
    return metrics


def headline_metric(task: str) -> str:
    return "accuracy" if task == "classification" else "mse"


def run_one(
    architecture: str,
    defaults: ArchitectureDefaults,
    variant: str,
    seed: int,
    data: ClassificationData,
    steps: int,
    num_curve_points: int = 10,
    curve_size: int = 1000,
    eval_size: int | None = None,
    device: str = "cpu",
) -> RunResult:
    """Train `architecture` with `variant` for `steps` batches from `seed`; evaluate on the test set.

    The curve is measured on the first `curve_size` test images (a fixed subset, to keep it cheap),
    the final metrics on the first `eval_size` (default: all). Same seed -> same initial weights
    (up to the quantizer's extra parameters) and the same batches for every variant.
    """
    data = backbone_data(architecture, defaults, data)  # before the seed and the clocks: a resize is no training cost
    torch.manual_seed(seed)
    model = build_model(architecture, defaults, variant, data).to(device)
    initial_codebook = model.quantizer.codebook.detach().clone()
    optimizer = torch.optim.Adam(model.parameters(), lr=defaults.learning_rate)
    batches = torch.Generator().manual_seed(seed)
    eval_images, eval_labels = data.test_images[:eval_size], data.test_labels[:eval_size]
    curve_images, curve_labels = data.test_images[:curve_size], data.test_labels[:curve_size]
    curve_steps = _curve_steps(steps, num_curve_points)
    curve, recent_perplexities = [], []
    model.train()
    start, start_cpu = time.perf_counter(), time.process_time()
    step_wall = step_cpu = 0.0  # training steps only, without the curve evaluations
    for step in range(1, steps + 1):
        step_start, step_start_cpu = time.perf_counter(), time.process_time()
        picks = torch.randint(len(data.train_images), (defaults.batch_size,), generator=batches)
        images, labels = data.train_images[picks].to(device), data.train_labels[picks].to(device)
        out = model(images)
        loss = task_loss(defaults.task, out, images, labels)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{architecture}/{variant}/seed {seed}: loss became {float(loss)} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step_wall += time.perf_counter() - step_start
        step_cpu += time.process_time() - step_start_cpu
        recent_perplexities.append(float(out["perplexity"]))
        if step in curve_steps:
            point = evaluate(defaults.task, model, curve_images, curve_labels, defaults.codebook_size, device=device)
            curve.append(
                {
                    "step": step,
                    "metric": point[headline_metric(defaults.task)],
                    "train_perplexity": sum(recent_perplexities) / len(recent_perplexities),
                    "train_loss": float(loss.detach()),
                }
            )
            recent_perplexities = []
    train_seconds = time.perf_counter() - start  # wall time, including the curve evaluations
    metrics = evaluate(defaults.task, model, eval_images, eval_labels, defaults.codebook_size, device=device)
    # How far the effective codes moved: a check that the quantizer itself was trained, not just the net.
    metrics["codebook_shift"] = float((model.quantizer.codebook.detach() - initial_codebook).norm(dim=1).mean())
    cpu_seconds = time.process_time() - start_cpu  # core-seconds (one thread per run): what an idle core would need
    return RunResult(
        architecture,
        variant,
        seed,
        steps,
        metrics,
        curve,
        train_seconds,
        cpu_seconds,
        defaults.quantizer_options(variant),
        ms_per_step=1000 * step_wall / steps,
        cpu_ms_per_step=1000 * step_cpu / steps,
    )


def _curve_steps(steps: int, num_points: int) -> set[int]:
    """`num_points` evenly spaced steps ending at the last one."""
    num_points = max(1, min(num_points, steps))
    return {round(steps * (i + 1) / num_points) for i in range(num_points)}
