"""The learning-rate schedule of every training loop: diffusers' `get_scheduler`, the names of `--lr_scheduler`."""

from __future__ import annotations

import argparse

import torch


def build_lr_scheduler(args: argparse.Namespace, optimizer: torch.optim.Optimizer, max_train_steps: int,
                       num_processes: int) -> torch.optim.lr_scheduler.LRScheduler:
    """`--lr_scheduler` with `--lr_warmup_steps`, `--lr_num_cycles` and `--lr_power`, as diffusers' example scripts.

    Accelerate steps a prepared scheduler once per process per optimizer step, hence the scaling by processes.

    Example:
        >>> import argparse, torch
        >>> optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> args = argparse.Namespace(lr_scheduler="linear", lr_warmup_steps=0, lr_num_cycles=1, lr_power=1.0)
        >>> scheduler = build_lr_scheduler(args, optimizer, max_train_steps=4, num_processes=1)
        >>> scheduler.get_last_lr()
        [1.0]
    """
    from diffusers.optimization import get_scheduler

    return get_scheduler(
        args.lr_scheduler, optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * num_processes,
        num_training_steps=max_train_steps * num_processes,
        num_cycles=args.lr_num_cycles, power=args.lr_power,
    )
