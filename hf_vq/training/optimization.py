"""The learning-rate schedule of every training loop: diffusers' `get_scheduler`, the names of `--lr_scheduler`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .args import OptimizationArguments, TrainingConfig


def build_lr_scheduler(
    config: OptimizationArguments, optimizer: torch.optim.Optimizer, max_train_steps: int, num_processes: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """`--lr_scheduler` with `--lr_warmup_steps`, `--lr_num_cycles` and `--lr_power`, as diffusers' example scripts.

    Accelerate steps a prepared scheduler once per process per optimizer step, hence the scaling by processes.

    Example:
        >>> import torch
        >>> from hf_vq.training.args import OptimizationArguments
        >>> optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> config = OptimizationArguments(lr_scheduler="linear")
        >>> scheduler = build_lr_scheduler(config, optimizer, max_train_steps=4, num_processes=1)
        >>> scheduler.get_last_lr()
        [1.0]
    """
    from diffusers.optimization import get_scheduler

    return get_scheduler(
        config.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=config.lr_warmup_steps * num_processes,
        num_training_steps=max_train_steps * num_processes,
        num_cycles=config.lr_num_cycles,
        power=config.lr_power,
    )


def build_single_model_optimization(
    config: TrainingConfig, model: nn.Module, train_dataset: Dataset, num_processes: int
):
    """AdamW (weight decay on matrices only), the `--lr_scheduler` schedule, a seeded shuffling loader of
    `train_dataset` and the number of optimizer steps: what the classifier and the prior train with. Returns
    `(optimizer, scheduler, train_loader, max_steps)`."""
    # A generator of its own: the shuffle depends on the seed alone (and on the epoch through set_epoch).
    generator = torch.Generator().manual_seed(config.seed)
    train_loader = DataLoader(
        train_dataset,
        batch_size=config.train_batch_size,
        shuffle=True,
        generator=generator,
        num_workers=config.dataloader_num_workers,
        drop_last=len(train_dataset) > config.train_batch_size,
    )
    max_steps = config.max_train_steps or config.num_train_epochs * max(
        1, len(train_loader) // (config.gradient_accumulation_steps * num_processes)
    )
    optimizer = torch.optim.AdamW(
        _decay_groups(model, config.adam_weight_decay),
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_epsilon,
    )
    scheduler = build_lr_scheduler(config, optimizer, max_steps, num_processes)
    return optimizer, scheduler, train_loader, max_steps


def _decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only: norms, biases, the class token and positions are not decayed (as in ViT)."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            decayed = parameter.ndim >= 2 and "position" not in name and "cls_token" not in name
            (decay if decayed else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
