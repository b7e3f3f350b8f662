"""The Accelerate training loop of the VQGAN image tokenizer.

One step (per batch; Accelerate accumulates gradients over `--gradient_accumulation_steps` batches):
1. generator: reconstruction (L1/L2) + LPIPS + quantizer loss + adaptive-weighted hinge generator loss, with the
   discriminator frozen (`requires_grad_(False)`) and called unwrapped (no DDP bookkeeping for a network that
   gets no gradients in this step);
2. discriminator (from `--discriminator_start` on): hinge loss on real and reconstructed images, plus LeCam.
The generator's EMA (diffusers' `EMAModel`) follows each optimizer step; its weights are evaluated and saved.

Example:
    >>> from hf_vq.training import parse_training_args, train_tokenizer
    >>> args = parse_training_args(["--config", "configs/vqgan_tiny.yaml", "--train_data_dir", "my_images",
    ...                             "--max_train_steps", "20", "--output_dir", "outputs/tiny"])  # doctest: +SKIP
    >>> result = train_tokenizer(args)  # doctest: +SKIP
    >>> result["output_dir"], result["metrics"]["psnr"]  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn

from ..errors import ConfigError
from ..models.vqgan import VQGANConfig, VQGANImageProcessor, VQGANModel
from .checkpointing import TrainingState
from .data import TrainingData, build_training_data
from .discriminator import NLayerDiscriminator
from .divergence import DivergenceGuard, ensure_finite_weights
from .final_save import save_final_folder
from .run_lock import release_run_lock
from .evaluate import build_rfid_extractor, evaluate_reconstructions
from .losses import (
    LeCamEMA,
    adaptive_generator_weight,
    hinge_discriminator_loss,
    hinge_generator_loss,
    reconstruction_loss,
)
from .loop import (  # noqa: F401  (build_accelerator ... set_dataset_epoch: re-exported, they used to live here)
    SECRET_FLAGS,
    RunningLosses,
    TrainingLoop,
    build_accelerator,
    clip_and_step,
    final_evaluation,
    publish_final_metrics,
    resume_if_asked,
    save_checkpoint,
    set_dataset_epoch,
    start_trackers,
    write_metrics,
)
from .optimization import build_lr_scheduler
from .run_summary import run_summary
from .tracking import log_image_grid

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
SAMPLES_FILE = "samples.png"
TRAINING_CONFIG_FILE = "training_config.json"


@dataclass
class Networks:
    """What the loop trains and uses; `generator` / `discriminator` are the Accelerate-prepared (maybe DDP) modules."""

    generator: nn.Module
    discriminator: nn.Module | None
    lpips: nn.Module | None
    ema: Any | None
    lecam: LeCamEMA | None
    rfid_extractor: nn.Module | None = None
    guard: DivergenceGuard | None = None


def train_tokenizer(args: argparse.Namespace) -> dict[str, Any]:
    """Train a VQGAN tokenizer as `args` says (see `hf_vq.training.args`); returns
    `{"output_dir", "metrics", "metrics_path", "sample_grid", "global_step", "is_main_process", "model",
    "discriminator"}` (paths absolute; `model` / `discriminator` are the trained modules with their live weights).

    At the end the model (EMA weights when `--use_ema`) and its processor are saved with `save_pretrained` in
    `--output_dir`, beside `metrics.json` and `samples.png`; `--push_to_hub` then uploads that folder.
    """
    from ..hub import check_push_arguments

    check_push_arguments(args)  # a bad repo id, no token or offline mode fail now, not after hours of training
    accelerator = build_accelerator(args)
    set_seed(args.seed)  # identical initial weights on every process
    model, processor = build_model_and_processor(args)
    data = build_training_data(args, processor, accelerator)
    networks, optimizers, schedulers = build_networks_and_optimizers(args, model, accelerator, data)
    state = TrainingState()
    register_checkpoint_state(accelerator, networks, state)
    networks.guard = DivergenceGuard.from_args(args, accelerator, state)
    resume_if_asked(args, accelerator, state)
    start_trackers(args, accelerator)
    accelerator.print(run_summary(
        examples=data.num_train_examples, batch_size_per_process=args.train_batch_size,
        num_processes=accelerator.num_processes, gradient_accumulation_steps=args.gradient_accumulation_steps,
        max_train_steps=data.max_train_steps, mixed_precision=accelerator.mixed_precision, start_step=state.global_step,
        models={"tokenizer": networks.generator, "discriminator": networks.discriminator},
    ))
    run_training_loop(args, accelerator, networks, optimizers, schedulers, data, state)
    return finish(args, accelerator, networks, processor, data, state)


def build_model_and_processor(args: argparse.Namespace) -> tuple[VQGANModel, VQGANImageProcessor]:
    if args.pretrained_model_name_or_path:
        model = VQGANModel.from_pretrained(args.pretrained_model_name_or_path, revision=args.revision)
    else:
        model = VQGANModel(VQGANConfig(**args.model_config))
    config = model.config
    side = args.resolution or config.image_size
    processor = VQGANImageProcessor.from_model_config(
        config, size={"height": side, "width": side}, do_center_crop=args.center_crop,
        crop_size={"height": side, "width": side} if args.center_crop else None,
    )
    if args.gradient_checkpointing:
        # transformers 5 renamed it; the old name still works but warns.
        getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    model.train()
    return model, processor


def build_networks_and_optimizers(args, model: VQGANModel, accelerator: Accelerator, data: TrainingData):
    discriminator = None
    if args.discriminator_weight > 0:
        discriminator = NLayerDiscriminator(
            model.config.num_channels, args.discriminator_channels, args.discriminator_layers, args.discriminator_norm
        )
        side = args.resolution or model.config.image_size
        if side < discriminator.minimum_image_size:
            raise ConfigError(
                f"--discriminator_layers {args.discriminator_layers} needs images of at least "
                f"{discriminator.minimum_image_size} pixels, the training images have {side}: use fewer layers"
            )
    lpips = None
    if args.perceptual_weight > 0:
        from .lpips import load_lpips

        lpips = load_lpips(args.lpips_weights, cache_dir=args.cache_dir).to(accelerator.device)
    scale = args.train_batch_size * args.gradient_accumulation_steps * accelerator.num_processes if args.scale_lr else 1
    optimizer_g = _adam(args, model.parameters(), args.learning_rate * scale)
    optimizer_d = _adam(args, discriminator.parameters(), args.discriminator_learning_rate * scale) if discriminator else None
    ema = _build_ema(args, model)
    schedulers = [_scheduler(args, optimizer, accelerator, data) for optimizer in (optimizer_g, optimizer_d) if optimizer]
    prepared = accelerator.prepare(model, optimizer_g, *schedulers, *([discriminator, optimizer_d] if discriminator else []))
    model, optimizer_g, scheduler_g = prepared[:3]
    optimizers, schedulers = [optimizer_g], [scheduler_g]
    if discriminator is not None:
        scheduler_d, discriminator, optimizer_d = prepared[3:6]
        optimizers.append(optimizer_d)
        schedulers.append(scheduler_d)
    data.train_dataloader = accelerator.prepare(data.train_dataloader)
    lecam = LeCamEMA(args.lecam_decay) if args.lecam_weight > 0 else None
    rfid_extractor = build_rfid_extractor(args.rfid, args.rfid_weights)
    return Networks(model, discriminator, lpips, ema, lecam, rfid_extractor), optimizers, schedulers


def _adam(args, parameters, learning_rate: float) -> torch.optim.Optimizer:
    # Adam with beta1 = 0.5, beta2 = 0.9 (taming-transformers, MaskGIT): GAN training is unstable with beta1 = 0.9.
    return torch.optim.AdamW(
        parameters, lr=learning_rate, betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay, eps=args.adam_epsilon,
    )


def _scheduler(args, optimizer, accelerator: Accelerator, data: TrainingData):
    return build_lr_scheduler(args, optimizer, data.max_train_steps, accelerator.num_processes)


def _build_ema(args, model: VQGANModel):
    """diffusers' EMAModel (the EMA of diffusers' example training scripts): decay warm-up, `store`/`restore` for
    evaluating with EMA weights, and `state_dict` so Accelerate checkpoints it. It averages parameters only, so
    codebook bookkeeping buffers (k-means flag, dead-code counters, running statistics) come from the live model."""
    if not args.use_ema:
        return None
    from diffusers.training_utils import EMAModel

    return EMAModel(model.parameters(), decay=args.ema_decay, use_ema_warmup=args.ema_warmup, power=3 / 4)


def register_checkpoint_state(accelerator: Accelerator, networks: Networks, state: TrainingState) -> None:
    """Objects saved by `save_state` beside models, optimizers, schedulers and RNG states (fixed order: loading
    matches them by position)."""
    accelerator.register_for_checkpointing(state)
    if networks.ema is not None:
        accelerator.register_for_checkpointing(networks.ema)
    if networks.lecam is not None:
        accelerator.register_for_checkpointing(networks.lecam)


def run_training_loop(args, accelerator, networks: Networks, optimizers, schedulers, data: TrainingData, state) -> float:
    """Train until `data.max_train_steps` optimizer steps (the shared `TrainingLoop` around `train_step`); returns
    the seconds spent training in this call (evaluation excluded)."""

    def evaluate(step: int) -> dict:
        grid_path = Path(args.output_dir) / f"samples-{step}.png"
        metrics = run_evaluation(args, accelerator, networks, data, grid_path)
        log_image_grid(accelerator, grid_path, step)
        return metrics

    loop = TrainingLoop(
        args, accelerator, state, data.train_dataloader, data.max_train_steps,
        lambda batch: train_step(args, accelerator, networks, optimizers, schedulers, batch, state),
        evaluate=evaluate, scheduler=schedulers[0], on_epoch_start=data.train_transform.set_epoch,
    )
    return loop.run()


def train_step(args, accelerator: Accelerator, networks: Networks, optimizers, schedulers, batch: dict, state) -> dict:
    """One batch: generator update, then discriminator update (once the GAN has started)."""
    pixel_values = batch["pixel_values"].to(accelerator.device)
    gan_active = networks.discriminator is not None and state.global_step >= args.discriminator_start
    models = [networks.generator] + ([networks.discriminator] if networks.discriminator is not None else [])
    with accelerator.accumulate(*models):
        logs, reconstruction = generator_step(args, accelerator, networks, optimizers[0], schedulers[0], pixel_values, gan_active)
        if gan_active:
            logs |= discriminator_step(args, accelerator, networks, optimizers[1], schedulers[1], pixel_values, reconstruction)
    if accelerator.sync_gradients and networks.ema is not None:
        networks.ema.step(accelerator.unwrap_model(networks.generator).parameters())
    return logs


def generator_step(args, accelerator, networks: Networks, optimizer, scheduler, pixel_values, gan_active: bool):
    generator = networks.generator
    unwrapped = accelerator.unwrap_model(generator)
    with frozen(accelerator, networks.discriminator), accelerator.autocast():
        output = generator(pixel_values)
        reconstruction = output.reconstruction
        kind = args.reconstruction_loss or ("l2" if unwrapped.config.reconstruction_loss_type == "mse" else "l1")
        rec_loss = reconstruction_loss(reconstruction, pixel_values, kind)
        nll_loss = args.reconstruction_weight * rec_loss
        logs = {"reconstruction_loss": rec_loss.detach()}
        if networks.lpips is not None:
            perceptual = networks.lpips(reconstruction.float(), pixel_values.float()).mean()
            nll_loss = nll_loss + args.perceptual_weight * perceptual
            logs["perceptual_loss"] = perceptual.detach()
        quantizer_weight = args.quantizer_loss_weight
        if quantizer_weight is None:
            quantizer_weight = unwrapped.config.quantizer_loss_weight
        loss = nll_loss + quantizer_weight * output.quantizer_loss
        if gan_active:
            gan_loss, gan_logs = adversarial_generator_loss(args, accelerator, networks, unwrapped, reconstruction, nll_loss)
            loss = loss + gan_loss
            logs |= gan_logs
    accelerator.backward(loss)
    # The jump check watches the reconstruction loss: the adversarial part moves by design when the GAN starts.
    apply = networks.guard is None or not accelerator.sync_gradients or networks.guard.check(
        loss, generator.parameters(), what="generator loss", tracked=rec_loss)
    clip_and_step(args, accelerator, generator, optimizer, scheduler, apply=apply)
    logs |= {
        "loss": loss.detach(), "quantizer_loss": output.quantizer_loss.detach(),
        "commitment_loss": output.commitment_loss.detach(), "codebook_loss": output.codebook_loss.detach(),
        "perplexity": output.perplexity.detach(), "usage": output.usage.detach(),
    }
    return logs, reconstruction.detach()


def adversarial_generator_loss(args, accelerator, networks: Networks, unwrapped, reconstruction, nll_loss):
    # The unwrapped discriminator: under DDP, a forward through the wrapper would wait for gradients that a frozen
    # network never produces, and the next discriminator step would fail.
    discriminator = accelerator.unwrap_model(networks.discriminator)
    generator_loss = hinge_generator_loss(discriminator(reconstruction))
    weight = torch.ones((), device=reconstruction.device)
    if args.adaptive_weight and torch.is_grad_enabled():
        weight = adaptive_generator_weight(nll_loss, generator_loss, last_decoder_layer(unwrapped))
        # Every process uses the same weight (their local gradients differ), so the objective is one objective.
        weight = accelerator.reduce(weight, reduction="mean")
    return args.discriminator_weight * weight * generator_loss, {
        "generator_adversarial_loss": generator_loss.detach(), "adaptive_weight": weight.detach()
    }


def last_decoder_layer(model: VQGANModel) -> torch.Tensor:
    """The weight of the decoder's output convolution, where taming's adaptive weight compares gradients."""
    if hasattr(model, "get_last_layer"):
        return model.get_last_layer()
    return model.decoder.conv_out.weight


def discriminator_step(args, accelerator, networks: Networks, optimizer, scheduler, pixel_values, reconstruction) -> dict:
    discriminator = networks.discriminator
    with accelerator.autocast():
        # One forward over real and fake together: one DDP forward per backward, and equal batch statistics.
        logits = discriminator(torch.cat([pixel_values.detach(), reconstruction.detach()]))
        logits_real, logits_fake = logits.float().chunk(2)
        loss = hinge_discriminator_loss(logits_real, logits_fake)
        logs = {"discriminator_loss": loss.detach(), "logits_real": logits_real.detach().mean(),
                "logits_fake": logits_fake.detach().mean()}
        if networks.lecam is not None:
            lecam = networks.lecam.regularization(logits_real, logits_fake)
            loss = loss + args.lecam_weight * lecam
            # Anchors from every process' mean logits, so that they stay identical across processes.
            means = accelerator.reduce(torch.stack([logits_real.detach().mean(), logits_fake.detach().mean()]), "mean")
            networks.lecam.update(means[0], means[1])
            logs["lecam_loss"] = lecam.detach()
    accelerator.backward(args.discriminator_weight * loss)
    apply = networks.guard is None or not accelerator.sync_gradients or networks.guard.check(
        loss, discriminator.parameters(), what="discriminator loss", track_average=False)
    clip_and_step(args, accelerator, discriminator, optimizer, scheduler, apply=apply)
    return logs


@contextmanager
def frozen(accelerator: Accelerator, module: nn.Module | None):
    """No gradients reach `module`'s weights inside the block (the generator step must not train the
    discriminator); gradients still flow through it to its input."""
    if module is None:
        yield
        return
    unwrapped = accelerator.unwrap_model(module)
    unwrapped.requires_grad_(False)
    # Batch norm still normalises with batch statistics here, but its running statistics must not move either.
    batch_norms = [m for m in unwrapped.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in batch_norms]
    for norm in batch_norms:
        norm.momentum = 0.0
    try:
        yield
    finally:
        unwrapped.requires_grad_(True)
        for norm, momentum in zip(batch_norms, momenta):
            norm.momentum = momentum


@contextmanager
def ema_weights(accelerator: Accelerator, networks: Networks):
    """The generator holds its EMA weights inside the block (when EMA is on), its own weights again after it."""
    model = accelerator.unwrap_model(networks.generator)
    if networks.ema is None:
        yield model
        return
    networks.ema.store(model.parameters())
    networks.ema.copy_to(model.parameters())
    try:
        yield model
    finally:
        networks.ema.restore(model.parameters())


def run_evaluation(args, accelerator: Accelerator, networks: Networks, data: TrainingData, grid_path: Path) -> dict:
    """Reconstruction metrics on the held-out split (EMA weights when enabled), each process on its share; the
    main process writes the sample grid. The quantizer runs in eval mode: no codebook updates, no collectives."""
    if data.eval_dataloader is None:
        return {}
    with ema_weights(accelerator, networks) as model:
        was_training = model.training
        model.eval()
        try:
            metrics = evaluate_reconstructions(
                model, data.eval_dataloader, accelerator.device, grid_path, num_sample_images=args.num_sample_images,
                rfid_extractor=networks.rfid_extractor, is_main_process=accelerator.is_main_process,
            )
        finally:
            model.train(was_training)
    accelerator.wait_for_everyone()
    return metrics


def finish(args, accelerator: Accelerator, networks: Networks, processor, data: TrainingData, state) -> dict:
    """Save the final model first (EMA weights when `--use_ema`), with its processor and training_config.json,
    then evaluate it, then write metrics.json and push. A failed evaluation leaves the saved model in place and
    raises `FinalEvaluationError` naming it."""
    output_dir = Path(args.output_dir).resolve()
    grid_path = output_dir / SAMPLES_FILE
    save_final_model(args, accelerator, networks, processor, state, output_dir)
    summary = training_summary(args, accelerator, state)
    metrics = final_evaluation(accelerator, lambda: run_evaluation(args, accelerator, networks, data, grid_path),
                               output_dir, summary)
    result: dict[str, Any] = {"output_dir": str(output_dir), "global_step": state.global_step,
                              "is_main_process": accelerator.is_main_process}
    if accelerator.is_main_process:
        log_image_grid(accelerator, grid_path, state.global_step)
    metrics = publish_final_metrics(args, accelerator, output_dir, metrics | summary, state.global_step)
    result |= {
        "metrics": metrics, "metrics_path": str(output_dir / METRICS_FILE),
        "sample_grid": str(grid_path) if grid_path.exists() else None,
        # The trained networks (live weights, not EMA), for callers that go on using them in this process.
        "model": accelerator.unwrap_model(networks.generator),
        "discriminator": accelerator.unwrap_model(networks.discriminator) if networks.discriminator is not None else None,
    }
    shut_down(accelerator, networks)
    release_run_lock(args.output_dir)  # the next run on this folder may start (run_lock.py)
    return result


def save_final_model(args, accelerator: Accelerator, networks: Networks, processor, state, output_dir: Path) -> None:
    """The model (EMA weights when enabled) and processor in `save_pretrained` layout, and training_config.json;
    refused (`TrainingDivergedError`) if a weight is not finite."""
    with ema_weights(accelerator, networks) as model:
        ensure_finite_weights([model], state.global_step, args.output_dir)

        def write(folder: Path) -> None:
            model.save_pretrained(folder, image_processor=processor)
            (folder / TRAINING_CONFIG_FILE).write_text(json.dumps(training_config(args), indent=2, sort_keys=True))

        save_final_folder(accelerator, output_dir, write)  # atomically (final_save.py)


def shut_down(accelerator: Accelerator, networks: Networks) -> None:
    """Release the DDP wrappers while the process group still exists, wait for every process, then let Accelerate
    end the trackers and destroy the group. (A DDP reducer outliving its gloo group, or one process tearing gloo
    down while another still talks to it, can hang or abort the process at exit.)"""
    networks.generator = networks.discriminator = None
    accelerator.free_memory()
    gc.collect()
    accelerator.wait_for_everyone()
    accelerator.end_training()


def training_config(args) -> dict[str, Any]:
    """The flags of the run (read by the model card); the Hub token stays out."""
    return {key: value for key, value in vars(args).items()
            if key not in (*SECRET_FLAGS, "model_config", "handler", "command")}


def training_summary(args, accelerator: Accelerator, state: TrainingState) -> dict[str, Any]:
    """The run's counters; time and throughput are over the whole run, across resumes."""
    train_seconds = state.train_seconds
    device = accelerator.device
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    return {
        "dataset": args.dataset_name or Path(args.train_data_dir).name,
        "hardware": hardware,
        "mixed_precision": accelerator.mixed_precision,
        "train_steps": state.global_step,
        "global_step": state.global_step,
        "epochs_completed": state.epoch,
        "images_seen": state.images_seen,
        "skipped_images": state.skipped_images,
        "train_seconds": round(train_seconds, 2),
        "skipped_steps": state.skipped_steps,
        "train_images_per_second": round(state.images_seen / train_seconds, 2) if train_seconds > 0 else None,
        "num_processes": accelerator.num_processes,
        "ema": bool(args.use_ema),
    }
