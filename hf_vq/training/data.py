"""Training and evaluation data for the tokenizer loop, built with `hf_vq.data` (datasets, transforms, collate)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import datasets
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from ..data import (
    ImageDatasetError,
    ImageTransform,
    apply_image_transform,
    build_image_dataset,
    collate_images,
    shard_for_process,
)
from .args import TokenizerTrainingConfig, TrainingConfig

# Splits tried, in order, for evaluation when --eval_split is not given.
EVAL_SPLIT_CANDIDATES = ("test", "validation")
STREAMING_SHUFFLE_BUFFER = 1000


@dataclass
class TrainingData:
    """Dataloaders and what the loop needs to know about them. `train_dataloader` is replaced by its
    Accelerate-prepared version for map-style data (streamed data is sharded per process instead)."""

    train_dataloader: Any
    eval_dataloader: DataLoader | None
    train_transform: ImageTransform
    processor: Any
    max_train_steps: int
    streaming: bool
    num_train_examples: int | None


def build_training_data(config: TokenizerTrainingConfig, processor: Any, accelerator: Accelerator) -> TrainingData:
    """Build the train and held-out datasets on every process (the main one first, so only it writes the
    `datasets` cache) and their dataloaders."""
    side = config.resolution or processor.size.height
    source = dict(
        dataset_name=config.dataset_name,
        dataset_config_name=config.dataset_config_name,
        train_data_dir=config.train_data_dir,
        image_column=config.image_column,
        streaming=config.streaming,
        cache_dir=config.cache_dir,
    )
    with accelerator.main_process_first():
        train, evaluation = train_and_eval_datasets(config, source)
    train_transform = ImageTransform(
        processor, resolution=side, center_crop=config.center_crop, random_flip=config.random_flip, seed=config.seed
    )
    eval_transform = ImageTransform(processor, resolution=side, center_crop=True, random_flip=False)
    train = apply_image_transform(train, train_transform, config.image_column)
    train_dataloader = _train_dataloader(config, train, accelerator)
    eval_dataloader = None
    if evaluation is not None:
        evaluation = apply_image_transform(evaluation, eval_transform, config.image_column)
        evaluation = _eval_share(evaluation, accelerator)
        eval_dataloader = DataLoader(
            evaluation,
            batch_size=config.eval_batch_size,
            collate_fn=collate_images,
            num_workers=config.dataloader_num_workers,
        )
    num_examples = None if config.streaming else len(train)
    return TrainingData(
        train_dataloader=train_dataloader,
        eval_dataloader=eval_dataloader,
        train_transform=train_transform,
        processor=processor,
        max_train_steps=_max_train_steps(config, num_examples, accelerator.num_processes),
        streaming=config.streaming,
        num_train_examples=num_examples,
    )


def train_and_eval_datasets(config: TrainingConfig, source: dict[str, Any]):
    train, evaluation, _ = train_and_named_eval_datasets(config, source)
    return train, evaluation


def train_and_named_eval_datasets(config: TrainingConfig, source: dict[str, Any]):
    """The training split and the held-out one (`--eval_split`, else the first of `EVAL_SPLIT_CANDIDATES` the source
    has, else `--eval_fraction` of the training split), and the held-out split's name (None when held out)."""
    train = build_image_dataset(split=config.train_split, max_samples=config.max_train_samples, **source)
    if config.eval_split:
        evaluation = build_image_dataset(split=config.eval_split, max_samples=config.max_eval_samples, **source)
        return train, evaluation, config.eval_split
    for split in EVAL_SPLIT_CANDIDATES:
        if split == config.train_split:
            continue
        try:
            return train, build_image_dataset(split=split, max_samples=config.max_eval_samples, **source), split
        except (ImageDatasetError, ValueError, KeyError, FileNotFoundError):
            continue  # this dataset has no such split: try the next, then hold out part of the training data
    return (*hold_out(train, config), None)


def _eval_share(evaluation, accelerator: Accelerator):
    """Each process evaluates its own share and the metrics sum their states over processes. A held-out set
    smaller than the number of processes is evaluated whole by each (the means are unchanged), since a process
    with nothing to measure could not take part in the metrics' reduction."""
    if isinstance(evaluation, datasets.Dataset) and len(evaluation) < accelerator.num_processes:
        return evaluation
    return shard_for_process(evaluation, accelerator.process_index, accelerator.num_processes)


def hold_out(train, config: TrainingConfig):
    """Split `--eval_fraction` of the training data off (seeded, so every process and every resume agree)."""
    if isinstance(train, datasets.IterableDataset):
        count = config.max_eval_samples or 256
        return train.skip(count), train.take(count)
    if len(train) < 2:
        return train, None  # too small to hold anything out: train, and skip the evaluation
    count = max(1, round(len(train) * config.eval_fraction))
    if config.max_eval_samples:
        count = min(count, config.max_eval_samples)
    parts = train.train_test_split(test_size=count, seed=config.seed, shuffle=True)
    return parts["train"], parts["test"]


def _train_dataloader(config: TokenizerTrainingConfig, train, accelerator: Accelerator):
    if isinstance(train, datasets.IterableDataset):
        # Shuffled within a buffer (re-seeded per epoch by set_epoch) and split per process here; not passed to
        # accelerator.prepare, whose default for iterable data reads everything on rank 0 and dispatches it.
        train = shard_for_process(
            train.shuffle(seed=config.seed, buffer_size=STREAMING_SHUFFLE_BUFFER),
            accelerator.process_index,
            accelerator.num_processes,
        )
        return DataLoader(
            train,
            batch_size=config.train_batch_size,
            collate_fn=collate_images,
            num_workers=config.dataloader_num_workers,
        )
    # A generator of its own: the DataLoader then draws its worker seeds from it, not from the global RNG, so
    # creating the iterator of a resumed epoch does not shift the global random stream.
    generator = torch.Generator().manual_seed(config.seed)
    return DataLoader(
        train,
        batch_size=config.train_batch_size,
        shuffle=True,
        collate_fn=collate_images,
        num_workers=config.dataloader_num_workers,
        generator=generator,
    )


def _max_train_steps(config: TrainingConfig, num_examples: int | None, num_processes: int) -> int:
    if config.max_train_steps:
        return config.max_train_steps
    if num_examples is None:
        raise ImageDatasetError("--streaming datasets have no known length: pass --max_train_steps")
    batches_per_process = math.ceil(num_examples / (config.train_batch_size * num_processes))
    return config.num_train_epochs * math.ceil(batches_per_process / config.gradient_accumulation_steps)
