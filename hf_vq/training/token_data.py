"""The token cache of the commands that train on a tokenizer's tokens (`train-classifier`, `train-prior`): an HF
image dataset, tokenized once by a trained tokenizer and cached.

Tokenizing is the expensive part of classifier and prior training (one tokenizer forward per image), and it gives
the same result every epoch: so `datasets.map` runs it once per split and writes an Arrow file whose name is a hash of
everything the result depends on (the source data's fingerprint, the tokenizer's weights, the image transform,
the label column). A second run with the same inputs opens that file instead of tokenizing again. The pixel-ViT
reference goes through the same code with `encoder=None` and caches preprocessed pixels instead of tokens.

The cached token rows are the project's one token format (`hf_vq.data.token_dataset`: `image_tokens` of the smallest
integer type that holds the codebook, `labels` a `ClassLabel`), the format `hf-vq encode` exports; with
`--token_dataset` the commands read such an export instead of images. Rows come out as
`{"image_tokens" (or "pixel_values"): tensor, "labels": int64}`, ready for `model(**batch)`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from torch import nn

from ..data import ImageTransform
from ..data.token_dataset import (
    LABELS_COLUMN,
    TOKENS_COLUMN,
    TokenDatasetError,
    TokenDatasetInfo,
    load_token_dataset,
    module_fingerprint,
    token_dtype,
    token_features,
)
from ..errors import HfVqUserError
from ..models.vqgan import VQGANImageProcessor
from ..models.vqgan.image_size import align_image_size_with_processor, check_tokenizer_resolution
from .args import TokenTrainingConfig
from .data import EVAL_SPLIT_CANDIDATES, hold_out, train_and_eval_datasets

# Bump when the layout of the cached rows changes, so that old cache files are not read as new ones.
# 2: the token dataset format (smallest integer type for the ids, ClassLabel labels).
CACHE_FORMAT_VERSION = "2"
CACHE_SUBDIR = "hf_vq_classifier"


class MissingTokenizerError(HfVqUserError, OSError):
    """The tokenizer named by --tokenizer_name_or_path cannot be loaded."""


class MissingLabelsError(ValueError):
    """The dataset has no column of class labels under the name given."""


@dataclass
class TokenData:
    """Encoded train and evaluation splits (torch-formatted `datasets.Dataset`s) and their labels (`id2label` is
    empty when the rows carry no labels)."""

    train: datasets.Dataset
    eval: datasets.Dataset | None
    input_name: str
    id2label: dict[int, str]
    cache_files: list[str]
    skipped_images: int
    # The evaluation split's name where its rows do not carry it (a token dataset read from disk or the Hub).
    eval_split_name: str | None = None


def build_token_data(
    config: TokenTrainingConfig,
    tokenizer: torch.nn.Module | None,
    processor: Any,
    encode: bool,
    device: torch.device | str = "cpu",
    splits: tuple[str, ...] = ("train", "eval"),
    with_labels: bool = True,
) -> TokenData:
    """Load the train / evaluation splits named by `config` and encode them: token grids when `encode` is True (the
    token ViT, the prior), preprocessed pixels otherwise (the pixel-ViT reference). Only the `splits` named are
    encoded (the others come back as None). The rows carry the class labels of `--label_column` unless
    `with_labels` is False (an unconditional prior). With `--token_dataset` the token grids are read from that
    export instead (checked against `tokenizer`). Call on the main process first, so that only it writes the
    cache (`accelerator.main_process_first()`)."""
    if encode and config.token_dataset:
        return read_token_dataset(config, tokenizer, splits, with_labels)
    side = config.resolution or processor.size["height"]
    if tokenizer is not None:  # tokens of the tokenizer's own size: the grid its config (and so the model) records
        side = check_tokenizer_resolution(tokenizer.config, config.resolution)
    label_column = config.label_column if with_labels else None
    train, evaluation = train_and_eval_datasets(config, image_source(config))
    train, evaluation, id2label = (
        encode_labels(train, evaluation, label_column) if label_column else (train, evaluation, {})
    )
    # Center crop, no flips: tokens are computed once, so every epoch sees the same view of an image.
    transform = ImageTransform(processor, resolution=side, center_crop=True, random_flip=False)
    encoder = ImageEncoder(
        transform,
        tokenizer if encode else None,
        config.image_column,
        label_column,
        device,
        label_names=list(id2label.values()) if label_column else None,
    )
    cache_dir = Path(config.cache_dir or datasets.config.HF_DATASETS_CACHE) / CACHE_SUBDIR
    encoded, cache_files, skipped = [], [], 0
    for name, split in (("train", train), ("eval", evaluation)):
        if split is None or name not in splits:
            encoded.append(None)
            continue
        dataset, cache_file = encode_split(split, encoder, cache_dir, config.tokenize_batch_size, name)
        skipped += len(split) - len(dataset)
        encoded.append(dataset)
        cache_files.append(cache_file)
    return TokenData(encoded[0], encoded[1], encoder.output_column, id2label, cache_files, skipped)


def image_source(config: Any) -> dict[str, Any]:
    """The `build_image_dataset` arguments of a command's data flags (map-style: tokens are cached, not streamed)."""
    return dict(
        dataset_name=config.dataset_name,
        dataset_config_name=config.dataset_config_name,
        train_data_dir=config.train_data_dir,
        image_column=config.image_column,
        streaming=False,
        cache_dir=config.cache_dir,
    )


def read_token_dataset(
    config: TokenTrainingConfig, tokenizer: torch.nn.Module, splits: tuple[str, ...], with_labels: bool
) -> TokenData:
    """The train / evaluation splits of `--token_dataset` (an `hf-vq encode` export), refused when another
    tokenizer than `tokenizer` made it. The evaluation split is `--eval_split`, else the first of test /
    validation the export has, else `--eval_fraction` of the training split, as for images."""
    dataset, info = load_token_dataset(config.token_dataset, revision=config.token_dataset_revision)
    info.check_tokenizer(
        TokenDatasetInfo.from_tokenizer(tokenizer, config.tokenizer_name_or_path, config.revision),
        f"--token_dataset {config.token_dataset!r}",
    )
    train = _token_split(dataset, config.train_split, config.token_dataset, "--train_split")
    if config.eval_split:
        evaluation = _token_split(dataset, config.eval_split, config.token_dataset, "--eval_split")
    else:
        found = [name for name in EVAL_SPLIT_CANDIDATES if name in dataset and name != config.train_split]
        train, evaluation = (train, dataset[found[0]]) if found else hold_out(train, config)
    eval_split_name = config.eval_split or (found[0] if found else config.train_split)
    train = _first(train, config.max_train_samples)
    evaluation = _first(evaluation, config.max_eval_samples) if evaluation is not None else None
    if with_labels and LABELS_COLUMN not in train.column_names:
        raise MissingLabelsError(
            f"--token_dataset {config.token_dataset!r} has no {LABELS_COLUMN!r} column (it was encoded from data "
            f"without labels); its columns are {train.column_names}"
        )
    feature = train.features.get(LABELS_COLUMN)
    id2label = dict(enumerate(feature.names)) if with_labels and feature is not None else {}
    columns = [TOKENS_COLUMN, LABELS_COLUMN] if with_labels else [TOKENS_COLUMN]
    train, evaluation = (
        split.select_columns(columns).with_format("torch") if split is not None and name in splits else None
        for name, split in (("train", train), ("eval", evaluation))
    )
    return TokenData(
        train,
        evaluation,
        TOKENS_COLUMN,
        id2label,
        [config.token_dataset],
        skipped_images=0,
        eval_split_name=eval_split_name if evaluation is not None else None,
    )


def _token_split(dataset: datasets.DatasetDict, name: str, source: str, flag: str) -> datasets.Dataset:
    if name not in dataset:
        raise TokenDatasetError(
            f"--token_dataset {source!r} has no split {name!r} ({flag}); its splits are {', '.join(dataset)}"
        )
    return dataset[name]


def _first(dataset: datasets.Dataset, max_samples: int | None) -> datasets.Dataset:
    return dataset if max_samples is None else dataset.select(range(min(max_samples, len(dataset))))


def load_tokenizer(
    tokenizer_name_or_path: str, device: torch.device, revision: str | None = None
) -> tuple[nn.Module, VQGANImageProcessor]:
    """The frozen tokenizer and its image processor (the processor the classifier folder will carry)."""
    from transformers import AutoModel

    try:
        tokenizer = AutoModel.from_pretrained(tokenizer_name_or_path, revision=revision)
        processor = VQGANImageProcessor.from_pretrained(tokenizer_name_or_path, revision=revision)
    except OSError as error:  # transformers' "not a local folder nor a model on the Hub", offline, no such revision
        raise MissingTokenizerError(
            f"cannot load the tokenizer --tokenizer_name_or_path {tokenizer_name_or_path!r}"
            f"{f' (revision {revision!r})' if revision else ''}: {' '.join(str(error).split())}"
        ) from error
    # A folder saved before issue 28's fix may name another size in its config than its processor makes: the
    # processor's wins, so that the classifier or prior is built for the grid the tokens really have.
    align_image_size_with_processor(tokenizer.config, processor)
    return tokenizer.eval().requires_grad_(False).to(device), processor


def tokenizer_reference(name_or_path: str) -> str:
    """A local folder is recorded as an absolute path (the classifier folder may be opened from elsewhere)."""
    path = Path(name_or_path)
    return str(path.resolve()) if path.is_dir() else name_or_path


class ImageEncoder:
    """A batch of dataset rows -> `{input column: encoded images, "labels": ids}`, unreadable images dropped
    (no "labels" when `label_column` is None).

    With a tokenizer the images become token grids ((h, w) or (h, w, ids per position), in the token format's
    integer type: `hf_vq.data.token_dataset.token_dtype`); without one they stay preprocessed pixels (float32,
    (C, H, W)). `label_names` makes the labels a `ClassLabel`. A class rather than a closure: `datasets.map`
    pickles it.
    """

    def __init__(
        self,
        transform: ImageTransform,
        tokenizer: torch.nn.Module | None,
        image_column: str,
        label_column: str | None,
        device: torch.device | str = "cpu",
        label_names: list[str] | None = None,
    ) -> None:
        self.transform = transform
        self.tokenizer = tokenizer
        self.image_column = image_column
        self.label_column = label_column
        self.label_names = label_names
        self.device = torch.device(device)
        self.calls = 0  # batches encoded by this instance: how tests see that a cache was reused

    @property
    def output_column(self) -> str:
        return "image_tokens" if self.tokenizer is not None else "pixel_values"

    def fingerprint(self) -> str:
        """What the encoded rows depend on, apart from the source data."""
        key = f"{CACHE_FORMAT_VERSION}|{self.transform!r}|{self.label_column}|{self.label_names}"
        digest = hashlib.sha256(key.encode())
        digest.update(_processor_bytes(self.transform))
        if self.tokenizer is not None:
            digest.update(module_fingerprint(self.tokenizer).encode())
        return digest.hexdigest()[:16]

    @torch.inference_mode()
    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        pixels = self.transform.transform_batch(batch[self.image_column])
        kept = [index for index, value in enumerate(pixels) if value is not None]
        labels = {LABELS_COLUMN: [int(batch[self.label_column][index]) for index in kept]} if self.label_column else {}
        if not kept:
            return {self.output_column: [], **labels}
        pixel_values = torch.stack([pixels[index] for index in kept])
        if self.tokenizer is None:
            return {self.output_column: pixel_values.numpy(), **labels}
        tokens = self.tokenizer.encode(pixel_values.to(self.device)).image_tokens
        dtype = token_dtype(self.tokenizer.config.codebook_size)
        return {self.output_column: tokens.cpu().numpy().astype(np.dtype(dtype)), **labels}

    def features(self, sample_shape: tuple[int, ...]) -> datasets.Features:
        label_names = self.label_names if self.label_column else None
        if self.tokenizer is not None:
            features = token_features(sample_shape, self.tokenizer.config.codebook_size, label_names)
            if self.label_column and label_names is None:
                features[LABELS_COLUMN] = datasets.Value("int64")
            return features
        array = datasets.Array2D if len(sample_shape) == 2 else datasets.Array3D
        columns = {self.output_column: array(sample_shape, "float32")}
        if self.label_column:
            columns[LABELS_COLUMN] = (
                datasets.ClassLabel(names=label_names) if label_names is not None else datasets.Value("int64")
            )
        return datasets.Features(columns)


def encode_split(
    dataset: datasets.Dataset, encoder: ImageEncoder, cache_dir: Path, batch_size: int, split_name: str
) -> tuple[datasets.Dataset, str]:
    """`dataset.map(encoder)` into `cache_dir/<split>-<key>.arrow`, or that file as it is when it exists."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(f"{dataset._fingerprint}|{encoder.fingerprint()}".encode()).hexdigest()[:20]
    cache_file = cache_dir / f"{split_name}-{encoder.output_column}-{key}.arrow"
    sample_shape = _encoded_shape(dataset, encoder)
    encoded = dataset.map(
        encoder,
        batched=True,
        batch_size=batch_size,
        remove_columns=dataset.column_names,
        features=encoder.features(sample_shape),
        cache_file_name=str(cache_file),
        load_from_cache_file=True,
        new_fingerprint=key,
        desc=f"encoding {split_name} images ({encoder.output_column})",
    )
    return encoded.with_format("torch"), str(cache_file)


def _encoded_shape(dataset: datasets.Dataset, encoder: ImageEncoder) -> tuple[int, ...]:
    """The shape of one encoded row: from the tokenizer's config (tokens) or the transform (pixels), without
    running the encoder, so that a cached run never touches the tokenizer."""
    side = encoder.transform.resolution
    if encoder.tokenizer is None:
        return (encoder.transform.num_channels, side, side)
    config = encoder.tokenizer.config
    grid = config.token_grid_size
    return grid if config.tokens_per_position == 1 else (*grid, config.tokens_per_position)


def encode_labels(train: datasets.Dataset, evaluation: datasets.Dataset | None, label_column: str):
    """Integer label ids and their names (`id2label`); string labels become a ClassLabel shared by both splits."""
    if label_column not in train.column_names:
        raise MissingLabelsError(
            f"the dataset has no label column {label_column!r}; its columns are {train.column_names}. "
            "Pass the one holding the class labels with --label_column"
        )
    feature = train.features[label_column]
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        train = train.class_encode_column(label_column)
        feature = train.features[label_column]
        if evaluation is not None:
            evaluation = evaluation.cast_column(label_column, feature)
    if isinstance(feature, datasets.ClassLabel):
        return train, evaluation, dict(enumerate(feature.names))
    if isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint")):
        count = max(train.unique(label_column)) + 1
        return train, evaluation, {index: str(index) for index in range(count)}
    raise ValueError(f"label column {label_column!r} holds {feature}; expected class ids, a ClassLabel or strings")


def _processor_bytes(transform: ImageTransform) -> bytes:
    processor = transform.processor
    return repr(processor.to_dict() if processor is not None else None).encode()


__all__ = [
    "ImageEncoder",
    "MissingLabelsError",
    "MissingTokenizerError",
    "TokenData",
    "build_token_data",
    "encode_labels",
    "encode_split",
    "image_source",
    "load_tokenizer",
    "module_fingerprint",
    "read_token_dataset",
    "tokenizer_reference",
]
