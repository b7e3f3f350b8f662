"""The Accelerate training loop of the VQGAN image tokenizer.

One step (per batch; Accelerate accumulates gradients over `--gradient_accumulation_steps` batches):
1. generator: reconstruction (L1/L2) + LPIPS + quantizer loss + adaptive-weighted hinge generator loss, with the
   discriminator frozen (`requires_grad_(False)`) and called unwrapped (no DDP bookkeeping for a network that
   gets no gradients in this step);
2. discriminator (from `--discriminator_start` on): hinge loss on real and reconstructed images, plus LeCam.
The generator's EMA (diffusers' `EMAModel`) follows each optimizer step; its weights are evaluated and saved.

Example:
    >>> from hf_vq.training.tokenizer_command import parse_tokenizer_args
    >>> from hf_vq.training.tokenizer_loop import train_tokenizer
    >>> config = parse_tokenizer_args(["--config", "configs/vqgan_tiny.yaml", "--train_data_dir", "my_images",
    ...                             "--max_train_steps", "20", "--output_dir", "outputs/tiny"])  # doctest: +SKIP
    >>> result = train_tokenizer(config)  # doctest: +SKIP
    >>> result["output_dir"], result["metrics"]["psnr"]  # doctest: +SKIP
"""

from __future__ import annotations

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
from ..models.vqgan.image_size import set_image_size
from .args import TokenizerTrainingConfig
from .checkpointing import TrainingState
from .data import TrainingData, build_training_data
from .discriminator import NLayerDiscriminator
from .divergence import DivergenceGuard
from .end_of_run import SAMPLES_FILE, build_ema, close_run, ema_weights, finish_run, save_final_folder
from .evaluate import build_rfid_extractor, evaluate_reconstructions
from .fine_tuning import load_model_to_fine_tune, pretrained_pixel_mapping
from .loop import TrainingLoop, build_accelerator, clip_and_step, resume_if_asked, start_trackers
from .losses import (
    LeCamEMA,
    adaptive_generator_weight,
    hinge_discriminator_loss,
    hinge_generator_loss,
    reconstruction_loss,
)
from .optimization import build_lr_scheduler
from .run_summary import run_summary
from .tracking import log_image_grid

logger = logging.getLogger(__name__)


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


def train_tokenizer(config: TokenizerTrainingConfig) -> dict[str, Any]:
    """Train a VQGAN tokenizer as `config` says (see `hf_vq.training.args`); returns
    `{"output_dir", "metrics", "metrics_path", "sample_grid", "global_step", "is_main_process", "model",
    "discriminator"}` (paths absolute; `model` / `discriminator` are the trained modules with their live weights).

    At the end the model (EMA weights when `--use_ema`) and its processor are saved with `save_pretrained` in
    `--output_dir`, beside `metrics.json` and `samples.png`; `--push_to_hub` then uploads that folder.
    """
    from ..hub import check_push_arguments

    check_push_arguments(config)  # a bad repo id, no token or offline mode fail now, not after hours of training
    accelerator = build_accelerator(config)
    set_seed(config.seed)  # identical initial weights on every process
    model, processor = build_model_and_processor(config)
    data = build_training_data(config, processor, accelerator)
    networks, optimizers, schedulers = build_networks_and_optimizers(config, model, accelerator, data)
    state = TrainingState()
    register_checkpoint_state(accelerator, networks, state)
    networks.guard = DivergenceGuard.from_args(config, accelerator, state)
    resume_if_asked(config, accelerator, state)
    start_trackers(config, accelerator)
    accelerator.print(
        run_summary(
            examples=data.num_train_examples,
            batch_size_per_process=config.train_batch_size,
            num_processes=accelerator.num_processes,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            max_train_steps=data.max_train_steps,
            mixed_precision=accelerator.mixed_precision,
            start_step=state.global_step,
            models={"tokenizer": networks.generator, "discriminator": networks.discriminator},
        )
    )
    run_training_loop(config, accelerator, networks, optimizers, schedulers, data, state)
    return finish(config, accelerator, networks, processor, data, state)


def build_model_and_processor(config: TokenizerTrainingConfig) -> tuple[VQGANModel, VQGANImageProcessor]:
    pixel_mapping = {}
    if config.pretrained_model_name_or_path:
        model = load_model_to_fine_tune(config)  # its step 0 gives the pretrained model's ids exactly
        pixel_mapping = pretrained_pixel_mapping(config)  # and reads the pixel values the pretrained one read
    else:
        model = VQGANModel(VQGANConfig(**config.model_config))
    model_config = record_flag_overrides(model.config, config)
    side = model_config.image_size
    processor = VQGANImageProcessor.from_model_config(
        model.config,
        size={"height": side, "width": side},
        do_center_crop=config.center_crop,
        crop_size={"height": side, "width": side} if config.center_crop else None,
        **pixel_mapping,
    )
    if config.gradient_checkpointing:
        # transformers 5 renamed it; the old name still works but warns.
        getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    model.train()
    return model, processor


def record_flag_overrides(model_config: VQGANConfig, config: TokenizerTrainingConfig) -> VQGANConfig:
    """Write into the model config (in place) what the flags change about the model, so that the saved folder says
    how it was trained: the image size (`--resolution`; its consumers take the token grid from it, issue 28) and the
    losses that `forward` returns (`--reconstruction_loss`, `--quantizer_loss_weight`)."""
    if config.resolution:
        try:
            set_image_size(model_config, config.resolution)
        except ValueError as error:
            raise ConfigError(f"--resolution {config.resolution}: {error}") from error
    if config.reconstruction_loss:
        model_config.reconstruction_loss_type = "mse" if config.reconstruction_loss == "l2" else "l1"
    if config.quantizer_loss_weight is not None:
        model_config.quantizer_loss_weight = config.quantizer_loss_weight
    return model_config


def build_networks_and_optimizers(
    config: TokenizerTrainingConfig, model: VQGANModel, accelerator: Accelerator, data: TrainingData
):
    discriminator = None
    if config.discriminator_weight > 0:
        discriminator = NLayerDiscriminator(
            model.config.num_channels,
            config.discriminator_channels,
            config.discriminator_layers,
            config.discriminator_norm,
        )
        side = config.resolution or model.config.image_size
        if side < discriminator.minimum_image_size:
            raise ConfigError(
                f"--discriminator_layers {config.discriminator_layers} needs images of at least "
                f"{discriminator.minimum_image_size} pixels, the training images have {side}: use fewer layers"
            )
    lpips = None
    if config.perceptual_weight > 0:
        from .lpips import load_lpips

        lpips = load_lpips(config.lpips_weights, cache_dir=config.cache_dir).to(accelerator.device)
    scale = 1
    if config.scale_lr:
        scale = config.train_batch_size * config.gradient_accumulation_steps * accelerator.num_processes
    optimizer_g = _adam(config, model.parameters(), config.learning_rate * scale)
    optimizer_d = None
    if discriminator is not None:
        optimizer_d = _adam(config, discriminator.parameters(), config.discriminator_learning_rate * scale)
    ema = build_ema(config, model)
    schedulers = [
        _scheduler(config, optimizer, accelerator, data) for optimizer in (optimizer_g, optimizer_d) if optimizer
    ]
    prepared = accelerator.prepare(
        model, optimizer_g, *schedulers, *([discriminator, optimizer_d] if discriminator else [])
    )
    model, optimizer_g, scheduler_g = prepared[:3]
    optimizers, schedulers = [optimizer_g], [scheduler_g]
    if discriminator is not None:
        scheduler_d, discriminator, optimizer_d = prepared[3:6]
        optimizers.append(optimizer_d)
        schedulers.append(scheduler_d)
    data.train_dataloader = accelerator.prepare(data.train_dataloader)
    lecam = LeCamEMA(config.lecam_decay) if config.lecam_weight > 0 else None
    rfid_extractor = build_rfid_extractor(config.rfid, config.rfid_weights)
    return Networks(model, discriminator, lpips, ema, lecam, rfid_extractor), optimizers, schedulers


def _adam(config: TokenizerTrainingConfig, parameters, learning_rate: float) -> torch.optim.Optimizer:
    # Adam with beta1 = 0.5, beta2 = 0.9 (taming-transformers, MaskGIT): GAN training is unstable with beta1 = 0.9.
    return torch.optim.AdamW(
        parameters,
        lr=learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        weight_decay=config.adam_weight_decay,
        eps=config.adam_epsilon,
    )


def _scheduler(config: TokenizerTrainingConfig, optimizer, accelerator: Accelerator, data: TrainingData):
    return build_lr_scheduler(config, optimizer, data.max_train_steps, accelerator.num_processes)


def register_checkpoint_state(accelerator: Accelerator, networks: Networks, state: TrainingState) -> None:
    """Objects saved by `save_state` beside models, optimizers, schedulers and RNG states (fixed order: loading
    matches them by position)."""
    accelerator.register_for_checkpointing(state)
    if networks.ema is not None:
        accelerator.register_for_checkpointing(networks.ema)
    if networks.lecam is not None:
        accelerator.register_for_checkpointing(networks.lecam)


def run_training_loop(
    config: TokenizerTrainingConfig, accelerator, networks: Networks, optimizers, schedulers, data: TrainingData, state
) -> float:
    """Train until `data.max_train_steps` optimizer steps (the shared `TrainingLoop` around `train_step`); returns
    the seconds spent training in this call (evaluation excluded)."""

    def evaluate(step: int) -> dict:
        grid_path = Path(config.output_dir) / f"samples-{step}.png"
        metrics = run_evaluation(config, accelerator, networks, data, grid_path)
        log_image_grid(accelerator, grid_path, step)
        return metrics

    loop = TrainingLoop(
        config,
        accelerator,
        state,
        data.train_dataloader,
        data.max_train_steps,
        lambda batch: train_step(config, accelerator, networks, optimizers, schedulers, batch, state),
        evaluate=evaluate,
        scheduler=schedulers[0],
        on_epoch_start=data.train_transform.set_epoch,
    )
    return loop.run()


def train_step(
    config: TokenizerTrainingConfig,
    accelerator: Accelerator,
    networks: Networks,
    optimizers,
    schedulers,
    batch: dict,
    state,
) -> dict:
    """One batch: generator update, then discriminator update (once the GAN has started)."""
    pixel_values = batch["pixel_values"].to(accelerator.device)
    gan_active = networks.discriminator is not None and state.global_step >= config.discriminator_start
    models = [networks.generator] + ([networks.discriminator] if networks.discriminator is not None else [])
    with accelerator.accumulate(*models):
        logs, reconstruction = generator_step(
            config, accelerator, networks, optimizers[0], schedulers[0], pixel_values, gan_active
        )
        if gan_active:
            logs |= discriminator_step(
                config, accelerator, networks, optimizers[1], schedulers[1], pixel_values, reconstruction
            )
    if accelerator.sync_gradients and networks.ema is not None:
        networks.ema.step(accelerator.unwrap_model(networks.generator).parameters())
    return logs


def generator_step(
    config: TokenizerTrainingConfig,
    accelerator,
    networks: Networks,
    optimizer,
    scheduler,
    pixel_values,
    gan_active: bool,
):
    generator = networks.generator
    unwrapped = accelerator.unwrap_model(generator)
    with frozen(accelerator, networks.discriminator), accelerator.autocast():
        output = generator(pixel_values)
        reconstruction = output.reconstruction
        kind = config.reconstruction_loss or ("l2" if unwrapped.config.reconstruction_loss_type == "mse" else "l1")
        rec_loss = reconstruction_loss(reconstruction, pixel_values, kind)
        nll_loss = config.reconstruction_weight * rec_loss
        logs = {"reconstruction_loss": rec_loss.detach()}
        if networks.lpips is not None:
            perceptual = networks.lpips(reconstruction.float(), pixel_values.float()).mean()
            nll_loss = nll_loss + config.perceptual_weight * perceptual
            logs["perceptual_loss"] = perceptual.detach()
        quantizer_weight = config.quantizer_loss_weight
        if quantizer_weight is None:
            quantizer_weight = unwrapped.config.quantizer_loss_weight
        loss = nll_loss + quantizer_weight * output.quantizer_loss
        if gan_active:
            gan_loss, gan_logs = adversarial_generator_loss(
                config, accelerator, networks, unwrapped, reconstruction, nll_loss
            )
            loss = loss + gan_loss
            logs |= gan_logs
    accelerator.backward(loss)
    # The jump check watches the reconstruction loss: the adversarial part moves by design when the GAN starts.
    apply = (
        networks.guard is None
        or not accelerator.sync_gradients
        or networks.guard.check(loss, generator.parameters(), what="generator loss", tracked=rec_loss)
    )
    clip_and_step(config, accelerator, generator, optimizer, scheduler, apply=apply)
    logs |= {
        "loss": loss.detach(),
        "quantizer_loss": output.quantizer_loss.detach(),
        "commitment_loss": output.commitment_loss.detach(),
        "codebook_loss": output.codebook_loss.detach(),
        "perplexity": output.perplexity.detach(),
        "usage": output.usage.detach(),
    }
    return logs, reconstruction.detach()


def adversarial_generator_loss(
    config: TokenizerTrainingConfig, accelerator, networks: Networks, unwrapped, reconstruction, nll_loss
):
    # The unwrapped discriminator: under DDP, a forward through the wrapper would wait for gradients that a frozen
    # network never produces, and the next discriminator step would fail.
    discriminator = accelerator.unwrap_model(networks.discriminator)
    generator_loss = hinge_generator_loss(discriminator(reconstruction))
    weight = torch.ones((), device=reconstruction.device)
    if config.adaptive_weight and torch.is_grad_enabled():
        weight = adaptive_generator_weight(nll_loss, generator_loss, last_decoder_layer(unwrapped))
        # Every process uses the same weight (their local gradients differ), so the objective is one objective.
        weight = accelerator.reduce(weight, reduction="mean")
    return config.discriminator_weight * weight * generator_loss, {
        "generator_adversarial_loss": generator_loss.detach(),
        "adaptive_weight": weight.detach(),
    }


def last_decoder_layer(model: VQGANModel) -> torch.Tensor:
    """The weight of the decoder's output convolution, where taming's adaptive weight compares gradients."""
    if hasattr(model, "get_last_layer"):
        return model.get_last_layer()
    return model.decoder.conv_out.weight


def discriminator_step(
    config: TokenizerTrainingConfig,
    accelerator,
    networks: Networks,
    optimizer,
    scheduler,
    pixel_values,
    reconstruction,
) -> dict:
    discriminator = networks.discriminator
    with accelerator.autocast():
        # One forward over real and fake together: one DDP forward per backward, and equal batch statistics.
        logits = discriminator(torch.cat([pixel_values.detach(), reconstruction.detach()]))
        logits_real, logits_fake = logits.float().chunk(2)
        loss = hinge_discriminator_loss(logits_real, logits_fake)
        logs = {
            "discriminator_loss": loss.detach(),
            "logits_real": logits_real.detach().mean(),
            "logits_fake": logits_fake.detach().mean(),
        }
        if networks.lecam is not None:
            lecam = networks.lecam.regularization(logits_real, logits_fake)
            loss = loss + config.lecam_weight * lecam
            # Anchors from every process' mean logits, so that they stay identical across processes.
            means = accelerator.reduce(torch.stack([logits_real.detach().mean(), logits_fake.detach().mean()]), "mean")
            networks.lecam.update(means[0], means[1])
            logs["lecam_loss"] = lecam.detach()
    accelerator.backward(config.discriminator_weight * loss)
    apply = (
        networks.guard is None
        or not accelerator.sync_gradients
        or networks.guard.check(loss, discriminator.parameters(), what="discriminator loss", track_average=False)
    )
    clip_and_step(config, accelerator, discriminator, optimizer, scheduler, apply=apply)
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


def run_evaluation(
    config: TokenizerTrainingConfig, accelerator: Accelerator, networks: Networks, data: TrainingData, grid_path: Path
) -> dict:
    """Reconstruction metrics on the held-out split (EMA weights when enabled), each process on its share; the
    main process writes the sample grid. The quantizer runs in eval mode: no codebook updates, no collectives."""
    if data.eval_dataloader is None:
        return {}
    with ema_weights(accelerator, networks.generator, networks.ema) as model:
        was_training = model.training
        model.eval()
        try:
            metrics = evaluate_reconstructions(
                model,
                data.eval_dataloader,
                accelerator.device,
                grid_path,
                num_sample_images=config.num_sample_images,
                rfid_extractor=networks.rfid_extractor,
                is_main_process=accelerator.is_main_process,
            )
        finally:
            model.train(was_training)
    accelerator.wait_for_everyone()
    return metrics


def finish(
    config: TokenizerTrainingConfig,
    accelerator: Accelerator,
    networks: Networks,
    processor,
    data: TrainingData,
    state: TrainingState,
) -> dict[str, Any]:
    """The shared end of run (`end_of_run.py`): save the model (EMA weights when `--use_ema`) with its processor,
    then evaluate it (metrics, samples.png), write metrics.json and push. A failed evaluation leaves the saved model
    in place and raises `FinalEvaluationError` naming it."""
    with ema_weights(accelerator, networks.generator, networks.ema) as model:
        output_dir = save_final_folder(
            config,
            accelerator,
            model,
            state.global_step,
            lambda folder: model.save_pretrained(folder, image_processor=processor),
        )
    grid_path = output_dir / SAMPLES_FILE

    def evaluate() -> dict[str, Any]:
        metrics = run_evaluation(config, accelerator, networks, data, grid_path)
        if accelerator.is_main_process:
            log_image_grid(accelerator, grid_path, state.global_step)
        return metrics

    result = finish_run(config, accelerator, state, training_summary(config, accelerator, state), evaluate)
    result |= {
        "sample_grid": str(grid_path) if grid_path.exists() else None,
        # The trained networks (live weights, not EMA), for callers that go on using them in this process.
        "model": accelerator.unwrap_model(networks.generator),
        "discriminator": accelerator.unwrap_model(networks.discriminator)
        if networks.discriminator is not None
        else None,
    }
    networks.generator = networks.discriminator = None  # no reference to a DDP wrapper outlives the process group
    close_run(accelerator, config)
    return result


def training_summary(
    config: TokenizerTrainingConfig, accelerator: Accelerator, state: TrainingState
) -> dict[str, Any]:
    """The run's counters; time and throughput are over the whole run, across resumes."""
    train_seconds = state.train_seconds
    device = accelerator.device
    hardware = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    )
    return {
        "dataset": config.dataset_name or Path(config.train_data_dir).name,
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
        "ema": bool(config.use_ema),
    }
