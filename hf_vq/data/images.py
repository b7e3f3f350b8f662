"""Image datasets for the tokenizer, from wherever they live: the Hub, a folder of images, parquet files, IDX files.

`build_image_dataset` returns a `datasets.Dataset` (map-style) or, with `streaming=True`, a
`datasets.IterableDataset`, with the image column left undecoded (`datasets.Image(decode=False)`) so that our
`ImageTransform` decodes it and a corrupt file costs one skipped image instead of the run. With a `transform`,
examples come out as `{"pixel_values": tensor (C, H, W) in [-1, 1] or None}`: map-style datasets through
`with_transform` (applied on access, in the DataLoader workers), iterable ones through `.map` (applied while
streaming). Either feeds `torch.utils.data.DataLoader(dataset, collate_fn=collate_images, ...)`.

Several processes: build the dataset on every rank (under `accelerator.main_process_first()` so that only one
process writes the `datasets` cache). A map-style dataset is sharded by Accelerate's prepared DataLoader; a
streaming one is best split with `shard_for_process` and then *not* passed through `accelerator.prepare`
(whose default for iterable datasets is to read everything on rank 0 and dispatch batches).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import datasets
import pyarrow as pa
from datasets.data_files import EmptyDatasetError
from datasets.distributed import split_dataset_by_node

from ..errors import HfVqUserError
from .fashion_mnist import LABELS as FASHION_MNIST_LABELS
from .fashion_mnist import ImageSplit, has_idx_files, load_fashion_mnist, load_idx_split

AnyDataset = datasets.Dataset | datasets.IterableDataset
FASHION_MNIST_NAMES = frozenset({"fashion_mnist", "fashion-mnist"})
# Shards of a streamed in-memory dataset: divisible by the usual process counts (1, 2, 4, 8...).
_STREAMING_SHARDS = 64


class ImageDatasetError(HfVqUserError, ValueError):
    """The image dataset cannot be used as asked: no source, no such column, nothing in it."""


def build_image_dataset(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_data_dir: str | os.PathLike | None = None,
    image_column: str = "image",
    split: str = "train",
    streaming: bool = False,
    cache_dir: str | os.PathLike | None = None,
    transform: Callable[[Any], Any] | None = None,
    max_samples: int | None = None,
) -> AnyDataset:
    """An image dataset from the Hub, a local folder, parquet files or Fashion-MNIST, ready for a DataLoader.

    Sources, by `dataset_name` or `train_data_dir` (exactly one):
    - "fashion_mnist": the IDX files installed on this machine (else the Hub copy), via `load_fashion_mnist`;
    - a local `.parquet` file, a folder with parquet files, a glob like "data/*.parquet";
    - a folder of IDX files (train-images-idx3-ubyte...), read as a copy of Fashion-MNIST (its label names);
    - a folder of images (the `imagefolder` builder: subfolders become labels, non-image files are ignored);
    - otherwise a Hub dataset id, loaded with `datasets.load_dataset(name, config)` (offline from the HF cache).

    The image column stays undecoded; `transform` (usually an `ImageTransform`) is applied per image and yields
    `{"pixel_values": ...}`. Raises `ImageDatasetError` at build time for a missing column (listing the columns)
    or an empty dataset.

    Example:

    ```python
    >>> from hf_vq.data import ImageTransform, build_image_dataset, collate_images
    >>> dataset = build_image_dataset("fashion_mnist", split="test", max_samples=8,
    ...                               transform=ImageTransform(resolution=32, num_channels=1))
    >>> collate_images([dataset[0], dataset[1]])["pixel_values"].shape
    torch.Size([2, 1, 32, 32])

    ```
    """
    dataset, source = _load_source(dataset_name, dataset_config_name, train_data_dir, split, streaming, cache_dir)
    if max_samples is not None:
        dataset = _first(dataset, max_samples)
    _check_image_column(dataset, image_column, source)
    dataset = _undecoded(dataset, image_column)
    _check_not_empty(dataset, source, split)
    if transform is not None:
        dataset = apply_image_transform(dataset, transform, image_column)
    return dataset


def apply_image_transform(
    dataset: AnyDataset, transform: Callable[[Any], Any], image_column: str = "image"
) -> AnyDataset:
    """Examples become `{"pixel_values": transform(example[image_column])}` (other columns are dropped).

    Map-style: `with_transform`, run lazily on each access (in DataLoader workers; nothing is written to disk).
    Iterable: `.map`, run as examples stream by.
    """
    to_pixel_values = _PixelValuesFromColumn(transform, image_column)
    if isinstance(dataset, datasets.IterableDataset):
        return dataset.map(to_pixel_values.one_example, remove_columns=list(dataset.column_names or []))
    return dataset.with_transform(to_pixel_values.batch, columns=[image_column])


class _PixelValuesFromColumn:
    # A class, not a closure, so that DataLoader workers started with "spawn" can unpickle it.
    def __init__(self, transform: Callable[[Any], Any], image_column: str) -> None:
        self.transform = transform
        self.image_column = image_column

    def batch(self, examples: dict[str, list]) -> dict[str, list]:
        return {"pixel_values": [self.transform(value) for value in examples[self.image_column]]}

    def one_example(self, example: dict[str, Any]) -> dict[str, Any]:
        return {"pixel_values": self.transform(example[self.image_column])}


def shard_for_process(dataset: AnyDataset, rank: int, world_size: int) -> AnyDataset:
    """This process's share of `dataset` (`datasets.distributed.split_dataset_by_node`).

    For streaming datasets read without Accelerate's batch dispatching: whole file shards per process when
    their number divides by `world_size`, else every `world_size`-th example. Map-style datasets are usually
    left to Accelerate's prepared DataLoader instead; sharding them here as well would shard twice.
    """
    if world_size <= 1:
        return dataset
    return split_dataset_by_node(dataset, rank=rank, world_size=world_size)


def _load_source(
    dataset_name: str | None,
    config_name: str | None,
    train_data_dir: str | os.PathLike | None,
    split: str,
    streaming: bool,
    cache_dir: str | os.PathLike | None,
) -> tuple[AnyDataset, str]:
    """The raw dataset and a description of where it came from (for error messages)."""
    if (dataset_name is None) == (train_data_dir is None):
        raise ImageDatasetError(
            "pass exactly one of --dataset_name (a Hub dataset id, 'fashion_mnist', a parquet file) and "
            f"--train_data_dir (a local folder); got dataset_name={dataset_name!r}, train_data_dir={train_data_dir!r}"
        )
    if dataset_name in FASHION_MNIST_NAMES:
        return _from_image_split(load_fashion_mnist(split), streaming), "Fashion-MNIST"
    location = os.fspath(train_data_dir if train_data_dir is not None else dataset_name)
    path = Path(location).expanduser()
    load = _loader(split, streaming, cache_dir)
    if path.is_file():
        if path.suffix != ".parquet":
            raise ImageDatasetError(
                f"{path} is a file but not a .parquet file; pass a folder of images or parquet files"
            )
        return load("parquet", data_files=[str(path)]), f"parquet file {path}"
    if path.is_dir():
        return _from_directory(path, load, split, streaming)
    if train_data_dir is not None:
        raise ImageDatasetError(f"--train_data_dir {location} does not exist")
    if location.endswith(".parquet"):
        return load("parquet", data_files=location), f"parquet files {location}"
    try:
        return load(dataset_name, config_name), f"Hub dataset {dataset_name!r}"
    except (FileNotFoundError, ConnectionError) as error:  # datasets' DatasetNotFoundError, offline, no network
        raise ImageDatasetError(
            f"cannot load the Hub dataset {dataset_name!r} ({' '.join(str(error).split())}): check the id (a local "
            "folder goes in --train_data_dir), the network, and that HF_DATASETS_OFFLINE is unset or the dataset is "
            "in the cache"
        ) from error


def _loader(split: str, streaming: bool, cache_dir: str | os.PathLike | None) -> Callable[..., AnyDataset]:
    def load(path: str, name: str | None = None, **kwargs: Any) -> AnyDataset:
        cache = os.fspath(cache_dir) if cache_dir is not None else None
        return datasets.load_dataset(path, name, split=split, streaming=streaming, cache_dir=cache, **kwargs)

    return load


def _from_directory(
    path: Path, load: Callable[..., AnyDataset], split: str, streaming: bool
) -> tuple[AnyDataset, str]:
    if has_idx_files(path):
        return _from_image_split(load_idx_split(path, split), streaming), f"IDX files in {path}"
    builder = "parquet" if any(path.rglob("*.parquet")) else "imagefolder"
    source = f"{builder} folder {path}"
    try:
        return load(builder, data_dir=str(path)), source
    except EmptyDatasetError as error:
        raise ImageDatasetError(f"{source} is empty: it holds no image files ({error})") from error
    except ValueError as error:  # e.g. 'Instruction "train" corresponds to no data!'
        raise ImageDatasetError(f"{source} gives no {split!r} split with images: {error}") from error


def _from_image_split(image_split: ImageSplit, streaming: bool) -> AnyDataset:
    """uint8 arrays -> a `datasets.Dataset` with Array2D images and ClassLabel labels, built in Arrow directly.

    Encoding 60,000 PNGs (an Image column) would take seconds; this takes a fraction of one and reads the same.
    """
    count, height, width = image_split.images.shape
    flat = pa.array(image_split.images.reshape(-1))
    rows = pa.FixedSizeListArray.from_arrays(pa.FixedSizeListArray.from_arrays(flat, width), height)
    features = datasets.Features(
        {
            "image": datasets.Array2D((height, width), "uint8"),
            "label": datasets.ClassLabel(names=list(FASHION_MNIST_LABELS)),
        }
    )
    table = pa.table({"image": rows, "label": pa.array(image_split.labels)}).cast(features.arrow_schema)
    dataset = datasets.Dataset(datasets.table.InMemoryTable(table), info=datasets.DatasetInfo(features=features))
    if not streaming or len(dataset) == 0:  # an empty one is refused by the caller's emptiness check
        return dataset
    return dataset.to_iterable_dataset(num_shards=min(_STREAMING_SHARDS, len(dataset)))


def _first(dataset: AnyDataset, max_samples: int) -> AnyDataset:
    if max_samples < 0:
        raise ImageDatasetError(f"max_samples must be >= 0, got {max_samples}")
    if isinstance(dataset, datasets.IterableDataset):
        return dataset.take(max_samples)
    return dataset.select(range(min(max_samples, len(dataset))))


_IMAGE_VALUE_TYPES = frozenset({"binary", "large_binary", "string", "large_string"})


def _column_names(dataset: AnyDataset) -> list[str]:
    if dataset.column_names is not None:
        return list(dataset.column_names)
    # Streaming datasets whose features are unknown: the first example names the columns.
    first = next(iter(dataset.take(1)), None)
    return list(first) if first is not None else []


def _check_image_column(dataset: AnyDataset, image_column: str, source: str) -> None:
    columns = _column_names(dataset)
    if columns and image_column not in columns:
        raise ImageDatasetError(
            f"{source} has no column {image_column!r}; its columns are {columns}. Pass the one holding the images "
            f"with --image_column (image_column=...)"
        )
    feature = (dataset.features or {}).get(image_column)
    if feature is None or isinstance(feature, (datasets.Image, datasets.Array2D, datasets.Array3D)):
        return
    if isinstance(feature, datasets.Value) and feature.dtype in _IMAGE_VALUE_TYPES:
        return
    raise ImageDatasetError(
        f"column {image_column!r} of {source} holds {feature}, not images; its columns are {columns}. Pass the one "
        f"holding the images with --image_column"
    )


def _undecoded(dataset: AnyDataset, image_column: str) -> AnyDataset:
    """Leave decoding to `decode_image`, which skips unreadable files instead of raising."""
    feature = (dataset.features or {}).get(image_column)
    if isinstance(feature, datasets.Image) and feature.decode:
        return dataset.cast_column(image_column, datasets.Image(decode=False))
    return dataset


def _check_not_empty(dataset: AnyDataset, source: str, split: str) -> None:
    if isinstance(dataset, datasets.IterableDataset):
        empty = next(iter(dataset.take(1)), None) is None
    else:
        empty = len(dataset) == 0
    if empty:
        raise ImageDatasetError(
            f"{source} has no examples in split {split!r} (after max_samples); nothing to train on"
        )
