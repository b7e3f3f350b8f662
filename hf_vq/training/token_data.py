"""The token cache of the commands that train on a tokenizer's tokens (`train-classifier`, `train-prior`): an HF
image dataset, tokenized once by a trained tokenizer and cached.

Tokenizing is the expensive part of classifier and prior training (one tokenizer forward per image), and it gives
the same result every epoch: so `datasets.map` runs it once per split and writes an Arrow file whose name is a hash of
everything the result depends on (the source data's fingerprint, the tokenizer's weights, the image transform,
the label column). A second run with the same inputs opens that file instead of tokenizing again. The pixel-ViT
reference goes through the same code with `encoder=None` and caches preprocessed pixels instead of tokens.

Rows come out as `{"image_tokens" (or "pixel_values"): tensor, "labels": int64}`, ready for `model(**batch)`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from torch import nn

from ..data import ImageTransform
from ..errors import HfVqUserError
from ..models.vqgan import VQGANImageProcessor
from ..models.vqgan.image_size import align_image_size_with_processor, check_tokenizer_resolution
from .args import TokenTrainingConfig
from .data import train_and_eval_datasets

# Bump when the layout of the cached rows changes, so that old cache files are not read as new ones.
CACHE_FORMAT_VERSION = "1"
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
    `with_labels` is False (an unconditional prior). Call on the main process first, so that only it writes the
    cache (`accelerator.main_process_first()`)."""
    side = config.resolution or processor.size["height"]
    if tokenizer is not None:  # tokens of the tokenizer's own size: the grid its config (and so the model) records
        side = check_tokenizer_resolution(tokenizer.config, config.resolution)
    label_column = config.label_column if with_labels else None
    source = dict(
        dataset_name=config.dataset_name,
        dataset_config_name=config.dataset_config_name,
        train_data_dir=config.train_data_dir,
        image_column=config.image_column,
        streaming=False,
        cache_dir=config.cache_dir,
    )
    train, evaluation = train_and_eval_datasets(config, source)
    train, evaluation, id2label = (
        _encode_labels(train, evaluation, label_column) if label_column else (train, evaluation, {})
    )
    # Center crop, no flips: tokens are computed once, so every epoch sees the same view of an image.
    transform = ImageTransform(processor, resolution=side, center_crop=True, random_flip=False)
    encoder = ImageEncoder(transform, tokenizer if encode else None, config.image_column, label_column, device)
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

    With a tokenizer the images become token grids (int32, (h, w) or (h, w, ids per position)); without one they
    stay preprocessed pixels (float32, (C, H, W)). A class rather than a closure: `datasets.map` pickles it.
    """

    def __init__(
        self,
        transform: ImageTransform,
        tokenizer: torch.nn.Module | None,
        image_column: str,
        label_column: str | None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.transform = transform
        self.tokenizer = tokenizer
        self.image_column = image_column
        self.label_column = label_column
        self.device = torch.device(device)
        self.calls = 0  # batches encoded by this instance: how tests see that a cache was reused

    @property
    def output_column(self) -> str:
        return "image_tokens" if self.tokenizer is not None else "pixel_values"

    def fingerprint(self) -> str:
        """What the encoded rows depend on, apart from the source data."""
        digest = hashlib.sha256(f"{CACHE_FORMAT_VERSION}|{self.transform!r}|{self.label_column}".encode())
        digest.update(_processor_bytes(self.transform))
        if self.tokenizer is not None:
            digest.update(module_fingerprint(self.tokenizer).encode())
        return digest.hexdigest()[:16]

    @torch.no_grad()
    def __call__(self, batch: dict[str, list]) -> dict[str, Any]:
        self.calls += 1
        pixels = [self.transform(value) for value in batch[self.image_column]]
        kept = [index for index, value in enumerate(pixels) if value is not None]
        labels = {"labels": [int(batch[self.label_column][index]) for index in kept]} if self.label_column else {}
        if not kept:
            return {self.output_column: [], **labels}
        pixel_values = torch.stack([pixels[index] for index in kept])
        if self.tokenizer is None:
            return {self.output_column: pixel_values.numpy(), **labels}
        tokens = self.tokenizer.encode(pixel_values.to(self.device)).image_tokens
        return {self.output_column: tokens.to(torch.int32).cpu().numpy(), **labels}

    def features(self, sample_shape: tuple[int, ...]) -> datasets.Features:
        dtype = "int32" if self.tokenizer is not None else "float32"
        array = datasets.Array2D if len(sample_shape) == 2 else datasets.Array3D
        columns = {self.output_column: array(sample_shape, dtype)}
        if self.label_column:
            columns["labels"] = datasets.Value("int64")
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


def _encode_labels(train: datasets.Dataset, evaluation: datasets.Dataset | None, label_column: str):
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


def module_fingerprint(module: torch.nn.Module) -> str:
    """A hash of a module's weights and buffers (names, shapes, dtypes, values): the tokenizer part of the key."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _processor_bytes(transform: ImageTransform) -> bytes:
    processor = transform.processor
    return repr(processor.to_dict() if processor is not None else None).encode()


__all__ = [
    "ImageEncoder",
    "MissingLabelsError",
    "MissingTokenizerError",
    "TokenData",
    "build_token_data",
    "encode_split",
    "load_tokenizer",
    "module_fingerprint",
    "tokenizer_reference",
]
