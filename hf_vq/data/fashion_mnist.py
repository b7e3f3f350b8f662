"""Fashion-MNIST: the Debian package's IDX files where installed, else the Hub dataset.

`apt-get install dataset-fashion-mnist` puts the IDX files under /usr/share/datasets/fashion-mnist/;
on a machine with Hub access the same data is `zalando-datasets/fashion_mnist`. When neither can be
had the error names both, so the user knows exactly what to install.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import HfVqUserError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
HUB_DATASET_ID = "zalando-datasets/fashion_mnist"
ENV_DIR = "HF_VQ_FASHION_MNIST_DIR"
LABELS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_IDX_PREFIX = {"train": "train", "test": "t10k"}


@dataclass
class ImageSplit:
    """uint8 images (N, 28, 28) and int64 labels (N,)."""

    images: np.ndarray
    labels: np.ndarray


class DataNotFoundError(HfVqUserError, FileNotFoundError):
    """The data could be found neither on disk nor on the Hub."""


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a numpy array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as handle:
        data = handle.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (magic {data[:4].hex()})")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: header says {shape}, found {array.size} values")
    return array.reshape(shape)


def find_idx_dir() -> Path | None:
    """The directory holding the Fashion-MNIST IDX files, from $HF_VQ_FASHION_MNIST_DIR or Debian's place."""
    for candidate in (os.environ.get(ENV_DIR), DEBIAN_DIR):
        if candidate and _idx_file(Path(candidate), "train", "images") is not None:
            return Path(candidate)
    return None


def _idx_file(directory: Path, split: str, kind: str) -> Path | None:
    stem = f"{_IDX_PREFIX[split]}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def load_fashion_mnist(split: str = "train") -> ImageSplit:
    """Fashion-MNIST `split` ("train": 60,000 images, "test": 10,000) as numpy arrays."""
    if split not in _IDX_PREFIX:
        raise ValueError(f"Fashion-MNIST has splits 'train' and 'test', not {split!r}")
    directory = find_idx_dir()
    if directory is not None:
        return load_idx_split(directory, split)
    return _load_from_hub(split)


def has_idx_files(directory: str | os.PathLike) -> bool:
    """Whether `directory` holds MNIST-style IDX files (train-images-idx3-ubyte[.gz] or t10k-...)."""
    return any(_idx_file(Path(directory), split, "images") is not None for split in _IDX_PREFIX)


def load_idx_split(directory: str | os.PathLike, split: str = "train") -> ImageSplit:
    """The `split` ("train" or "test") of MNIST-style IDX files in `directory`, e.g. a copy of Fashion-MNIST."""
    if split not in _IDX_PREFIX:
        raise ValueError(f"IDX datasets have splits 'train' and 'test', not {split!r}")
    images, labels = _idx_file(Path(directory), split, "images"), _idx_file(Path(directory), split, "labels")
    if images is None or labels is None:
        raise DataNotFoundError(
            f"{directory} lacks the {split!r} IDX files {_IDX_PREFIX[split]}-images-idx3-ubyte[.gz] and "
            f"{_IDX_PREFIX[split]}-labels-idx1-ubyte[.gz]"
        )
    return ImageSplit(images=read_idx(images), labels=read_idx(labels).astype(np.int64))


def _load_from_hub(split: str) -> ImageSplit:
    try:
        import datasets

        dataset = datasets.load_dataset(HUB_DATASET_ID, split=split)
    except Exception as error:  # any failure (offline, missing package, no such dataset) ends the same way
        raise DataNotFoundError(
            f"Fashion-MNIST was found neither on disk nor on the Hub. Install the Debian package "
            f"(`apt-get install dataset-fashion-mnist`, files in {DEBIAN_DIR}), point ${ENV_DIR} at a folder "
            f"with the IDX files, or allow access to the Hub dataset {HUB_DATASET_ID!r}. "
            f"(Hub error: {type(error).__name__}: {error})"
        ) from error
    images = np.stack([np.asarray(image.convert("L"), dtype=np.uint8) for image in dataset["image"]])
    return ImageSplit(images=images, labels=np.asarray(dataset["label"], dtype=np.int64))
