"""Image classification data for the reproduction: Fashion-MNIST, CIFAR-10 and the photo patches as float tensors.

Images come back as float (N, C, H, W) in [-1, 1] and labels as int64 (N,). CIFAR-10 is read from a
local copy only: the python-pickle batches (`cifar-10-batches-py/`, given by `data_dir`) or the Hub
dataset `uoft-cs/cifar10` already in the `datasets` cache. When neither is there the error names both.
The photos (64x64 RGB patches of Debian's wallpaper photographs, scene labels, docs/photos.md) are the image
folder that `scripts/make_photo_dataset.py` writes, `outputs/photos64/photos` unless `data_dir` names another.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from ..data import DataNotFoundError, load_fashion_mnist
from ..errors import ConfigError
from .autoencoder import images_to_tensor

CIFAR10_HUB_ID = "uoft-cs/cifar10"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
# Where `python scripts/make_photo_dataset.py` writes the photo patches (relative to the working directory).
PHOTO_DATA_DIR = Path("outputs/photos64/photos")
PHOTO_SPLITS = ("train", "test")
PHOTO_ORDER_SEED = 0
DATASETS = ("fashion_mnist", "cifar10", "photos")


@dataclass
class ClassificationData:
    """Train and test images (float, [-1, 1], NCHW) with their labels."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor

    @property
    def in_channels(self) -> int:
        return self.train_images.shape[1]

    @property
    def image_size(self) -> int:
        return self.train_images.shape[-1]


def load_dataset(name: str, data_dir: str | None = None) -> ClassificationData:
    """`name` is "fashion_mnist" (28x28x1), "cifar10" (32x32x3, from `data_dir` or the Hub cache) or "photos"
    (64x64x3 patches, from `data_dir` or `PHOTO_DATA_DIR`)."""
    if name == "fashion_mnist":
        train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
        return ClassificationData(
            images_to_tensor(train.images),
            torch.from_numpy(train.labels),
            images_to_tensor(test.images),
            torch.from_numpy(test.labels),
        )
    if name == "cifar10":
        return load_cifar10(data_dir)
    if name == "photos":
        return load_photos(data_dir)
    raise ValueError(f"unknown dataset {name!r}; choose from {DATASETS}")


def load_cifar10(data_dir: str | None = None) -> ClassificationData:
    """CIFAR-10 from the python-pickle batches in `data_dir`, else from the Hub dataset cache."""
    if data_dir is not None:
        return _cifar10_from_pickles(Path(data_dir))
    try:
        return _cifar10_from_hub()
    except Exception as error:  # offline, no datasets package, not cached: all end the same way
        raise DataNotFoundError(
            "CIFAR-10 was not found. Pass --data_dir pointing at the python-pickle batches "
            f"(the 'cifar-10-batches-py' folder with {', '.join(CIFAR10_TRAIN_FILES)} and {CIFAR10_TEST_FILE}, "
            "from https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz), or make the Hub dataset "
            f"{CIFAR10_HUB_ID!r} available to `datasets` (online, or already in its cache). "
            f"(Hub error: {type(error).__name__}: {error})"
        ) from error


def _cifar10_from_pickles(directory: Path) -> ClassificationData:
    expected = (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)
    missing = [name for name in expected if not (directory / name).is_file()]
    if missing:
        raise DataNotFoundError(
            f"CIFAR-10 python batches not found in {directory}: missing {', '.join(missing)}. --data_dir must be the "
            "'cifar-10-batches-py' folder of https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz "
            f"(or leave --data_dir out to use the Hub dataset {CIFAR10_HUB_ID!r} from the datasets cache)."
        )
    train_images, train_labels = zip(*(_read_cifar_batch(directory / name) for name in CIFAR10_TRAIN_FILES))
    test_images, test_labels = _read_cifar_batch(directory / CIFAR10_TEST_FILE)
    return ClassificationData(
        _uint8_nchw_to_tensor(np.concatenate(train_images)),
        torch.from_numpy(np.concatenate(train_labels)),
        _uint8_nchw_to_tensor(test_images),
        torch.from_numpy(test_labels),
    )


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as handle:
        batch = pickle.load(handle, encoding="bytes")
    images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return images, np.asarray(batch[b"labels"], dtype=np.int64)


def _cifar10_from_hub() -> ClassificationData:
    import datasets

    splits = [datasets.load_dataset(CIFAR10_HUB_ID, split=split) for split in ("train", "test")]
    arrays = [
        (
            np.stack([np.asarray(image.convert("RGB"), dtype=np.uint8) for image in split["img"]]).transpose(
                0, 3, 1, 2
            ),
            np.asarray(split["label"], dtype=np.int64),
        )
        for split in splits
    ]
    (train_images, train_labels), (test_images, test_labels) = arrays
    return ClassificationData(
        _uint8_nchw_to_tensor(train_images),
        torch.from_numpy(train_labels),
        _uint8_nchw_to_tensor(test_images),
        torch.from_numpy(test_labels),
    )


def load_photos(data_dir: str | None = None) -> ClassificationData:
    """The photo patches: `data_dir/{train,test}/<scene>/*.png`, labelled by scene in sorted order (as the
    `imagefolder` builder that the tokenizer's training reads them with labels them), in a fixed shuffled order.

    Example:

    ```python
    >>> data = load_photos("outputs/photos64/photos")  # doctest: +SKIP
    >>> data.train_images.shape[1:], data.in_channels, data.image_size  # doctest: +SKIP
    (torch.Size([3, 64, 64]), 3, 64)

    ```
    """
    root = Path(data_dir) if data_dir is not None else PHOTO_DATA_DIR
    missing = [split for split in PHOTO_SPLITS if not any((root / split).glob("*/*.png"))]
    if missing:
        raise DataNotFoundError(
            f"photo patches not found in {root}: no {' or '.join(f'{split}/<scene>/*.png' for split in missing)}. "
            "Build them with `python scripts/make_photo_dataset.py` (docs/photos.md), or pass --data_dir with the "
            "`photos` folder it wrote."
        )
    scenes = sorted({path.name for split in PHOTO_SPLITS for path in (root / split).iterdir() if path.is_dir()})
    (train_images, train_labels), (test_images, test_labels) = (
        _read_photo_split(root / split, scenes) for split in PHOTO_SPLITS
    )
    return ClassificationData(train_images, train_labels, test_images, test_labels)


def _read_photo_split(folder: Path, scenes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    # Sorted, then shuffled with a fixed seed: the same order on every machine, and a first-N cut (the study's
    # --eval_size and --curve_size) samples every photograph instead of the first scene's one or two.
    paths = sorted(folder.glob("*/*.png"))
    paths = [paths[index] for index in np.random.default_rng(PHOTO_ORDER_SEED).permutation(len(paths))]
    images = [np.asarray(PIL.Image.open(path).convert("RGB"), dtype=np.uint8) for path in paths]
    sizes = sorted({image.shape[:2] for image in images})
    if len(sizes) > 1:
        raise ConfigError(
            f"the photo patches in {folder} have several sizes {sizes}; the study needs one: rebuild the folder with "
            "`python scripts/make_photo_dataset.py --patch_size N`"
        )
    pixels = np.stack(images)
    labels = np.asarray([scenes.index(path.parent.name) for path in paths], dtype=np.int64)
    return _uint8_nchw_to_tensor(pixels.transpose(0, 3, 1, 2)), torch.from_numpy(labels)


def _uint8_nchw_to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).float().div(127.5).sub(1.0)
