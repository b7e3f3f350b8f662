"""Images in, pixel values out: lazy decoding that survives corrupt files, and the DataLoader side of it.

A long run must not die on the one truncated JPEG in a million. So images are decoded here, not by
`datasets` (build_image_dataset casts the column to `datasets.Image(decode=False)`): a file PIL cannot read
becomes `None`, `collate_images` drops it from the batch and reports how many it dropped in
`batch["num_skipped"]`, and the training loop adds that up with a `SkippedImageCounter`. The count travels
inside the batch because transforms and collate functions run in DataLoader worker processes, where a counter
would be invisible to the training loop.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch

from ..models.vqgan.image_processing_vqgan import convert_image_mode

logger = logging.getLogger(__name__)

# Warn about the first few unreadable files by name, then stay quiet: the counter carries the total.
_MAX_WARNINGS_PER_PROCESS = 10
_warnings_given = 0


def decode_image(value: Any) -> PIL.Image.Image | None:
    """An image as `datasets` stores it -> a loaded PIL image, or `None` when it cannot be read.

    Accepts what an image column holds: `{"bytes": ..., "path": ...}` (`datasets.Image(decode=False)`),
    raw encoded bytes, a file path, a PIL image, or a uint8 array / nested list (H, W) or (H, W, C).
    Anything else is a `TypeError` (a wrong column, not a bad file), raised rather than skipped.

    Example:

    ```python
    >>> from hf_vq.data import decode_image
    >>> decode_image({"bytes": b"not an image", "path": None}) is None
    True
    >>> decode_image([[0, 255], [255, 0]]).size
    (2, 2)

    ```
    """
    if isinstance(value, PIL.Image.Image):
        return value
    if isinstance(value, (np.ndarray, list)):
        return PIL.Image.fromarray(_as_uint8_array(value))
    source = _file_source(value)
    try:
        return _open_fully(source)
    except Exception as error:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError...
        _warn_unreadable(describe_image_source(value), error)
        return None


def describe_image_source(value: Any) -> str:
    """How messages name an image: its path when it has one (also for bytes read from a file), else its size."""
    if isinstance(value, dict) and value.get("path"):
        return str(value["path"])
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, dict) and value.get("bytes") is not None:
        return f"<{len(value['bytes'])} bytes>"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    return f"<{type(value).__name__}>"


def _file_source(value: Any) -> bytes | str:
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return value["bytes"]
        if value.get("path") is not None:
            return value["path"]
        raise TypeError(f"image value {value!r} has neither bytes nor path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    raise TypeError(
        f"cannot read an image from a {type(value).__name__}; an image column holds encoded bytes, file paths, PIL "
        f"images or uint8 arrays (check --image_column)"
    )


def _open_fully(source: bytes | str) -> PIL.Image.Image:
    # PIL decodes lazily: load() now, inside the caller's try, so that a truncated file fails here.
    with io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb") as handle:
        image = PIL.Image.open(handle)
        image.load()
    try:
        return PIL.ImageOps.exif_transpose(image)
    except Exception:  # a malformed EXIF block should not cost us a readable image
        return image


def _as_uint8_array(value: Any) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype == np.bool_:  # a mask: True is white, as PIL reads a boolean array (mode "1"), not 1 of 255
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16:  # 16-bit pixels: scaled to 8 bits with their full range, not clipped
        return np.round(array.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    if array.dtype != np.uint8:
        # `datasets` hands Array2D columns over as nested lists of Python ints: int64 once in numpy.
        in_range = array.dtype.kind in "uib" and (array.size == 0 or (array.min() >= 0 and array.max() <= 255))
        if not in_range:
            raise TypeError(
                f"image arrays must hold integers in 0..255 (uint8) or 0..65535 (uint16), got dtype "
                f"{array.dtype} with values {array.min()}..{array.max()}"
            )
        array = array.astype(np.uint8)
    return array


def _warn_unreadable(where: str, error: Exception) -> None:
    global _warnings_given
    _warnings_given += 1
    if _warnings_given <= _MAX_WARNINGS_PER_PROCESS:
        quiet = " (further unreadable images are only counted)" if _warnings_given == _MAX_WARNINGS_PER_PROCESS else ""
        logger.warning("Skipping unreadable image %s: %s: %s%s", where, type(error).__name__, error, quiet)


def _randomness_key(value: Any) -> bytes:
    """What identifies an image, so that its random crop and flip depend on the image, not on call order."""
    if isinstance(value, PIL.Image.Image):
        return value.tobytes()
    if isinstance(value, (np.ndarray, list)):
        return np.ascontiguousarray(_as_uint8_array(value)).tobytes()
    source = _file_source(value)
    return source.encode() if isinstance(source, str) else source


class ImageTransform:
    """One image (as an image column holds it) -> float tensor (C, H, W) in [-1, 1], or `None` if unreadable.

    With `resolution`, the shorter side is resized to `resolution` and a square is cropped: centred
    (`center_crop=True`) or at a random place; `random_flip` mirrors half of the images. With a
    `VQGANImageProcessor` as `processor`, the processor does channel conversion and rescaling (so data and model
    agree by construction), and also resizing when `resolution` is None; without one, PIL and numpy do it.

    The random choices are drawn from a hash of the image's bytes (or path), `seed` and the epoch
    (`set_epoch`), not from a running RNG: the same image gets the same crop and flip in the same epoch whatever
    the number of DataLoader workers and however many batches a resumed run skips, so a resume is exact. The
    epoch reaches worker processes when they are started, i.e. each epoch unless `persistent_workers=True`.

    Example:

    ```python
    >>> import numpy as np
    >>> from hf_vq.data import ImageTransform
    >>> transform = ImageTransform(resolution=32, num_channels=1, random_flip=True)
    >>> pixel_values = transform(np.full((28, 28), 255, dtype=np.uint8))
    >>> pixel_values.shape, float(pixel_values.max())
    (torch.Size([1, 32, 32]), 1.0)
    >>> transform({"bytes": b"truncated", "path": None}) is None
    True

    ```
    """

    def __init__(
        self,
        processor: Any | None = None,
        resolution: int | None = None,
        center_crop: bool = True,
        random_flip: bool = False,
        num_channels: int | None = None,
        seed: int = 0,
    ) -> None:
        processor_channels = getattr(processor, "num_channels", None)
        if num_channels is None:
            num_channels = processor_channels or 3
        if num_channels not in (1, 3):
            raise ValueError(f"num_channels must be 1 (grayscale) or 3 (RGB), got {num_channels}")
        if processor_channels is not None and processor_channels != num_channels:
            raise ValueError(
                f"num_channels={num_channels} disagrees with the processor's num_channels={processor_channels}"
            )
        if resolution is not None and resolution <= 0:
            raise ValueError(f"resolution must be a positive number of pixels, got {resolution}")
        self.processor = processor
        self.resolution = resolution
        self.center_crop = center_crop
        self.random_flip = random_flip
        self.num_channels = num_channels
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw new crops and flips for `epoch` (call before creating the epoch's DataLoader iterator)."""
        self.epoch = epoch

    @property
    def is_random(self) -> bool:
        return self.random_flip or (self.resolution is not None and not self.center_crop)

    def __call__(self, value: Any) -> torch.Tensor | None:
        image = self._prepare(value)
        return None if image is None else self._to_tensor(image)

    def transform_batch(self, values: Sequence[Any]) -> list[torch.Tensor | None]:
        """`[self(value) for value in values]`, the same tensors, with one processor call for the whole batch:
        called image by image, the processor's fixed cost is most of the time a small image takes."""
        images = [self._prepare(value) for value in values]
        kept = [image for image in images if image is not None]
        if self.processor is None or not kept:
            tensors = iter([self._to_tensor(image) for image in kept])
        else:
            arrays = self.processor(kept, return_tensors=None, **self._processor_geometry())["pixel_values"]
            tensors = iter([torch.from_numpy(array) for array in arrays])
        return [None if image is None else next(tensors) for image in images]

    def _prepare(self, value: Any) -> PIL.Image.Image | None:
        """Decoded, converted to the channels, resized, cropped and flipped: all but the processor's pixel maths."""
        random_bytes = self._random_bytes(value) if self.is_random else b"\0" * 16
        image = decode_image(value)
        if image is None:
            return None
        try:
            # 16-bit, float, transparent, CMYK... images keep their real range (see convert_image_mode).
            image = convert_image_mode(image, "L" if self.num_channels == 1 else "RGB")
        except Exception as error:  # a mode PIL cannot convert: one skipped image, named, not a dead run
            _warn_unreadable(describe_image_source(value), error)
            return None
        if self.resolution is not None:
            image = self._resize_and_crop(image, random_bytes)
        if self.random_flip and random_bytes[0] & 1:
            image = PIL.ImageOps.mirror(image)
        return image

    def _random_bytes(self, value: Any) -> bytes:
        digest = hashlib.blake2b(_randomness_key(value), digest_size=16)
        digest.update(f"{self.seed}:{self.epoch}".encode())
        return digest.digest()

    def _resize_and_crop(self, image: PIL.Image.Image, random_bytes: bytes) -> PIL.Image.Image:
        size = self.resolution
        width, height = image.size
        scale = size / min(width, height)
        new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
        if new_size != image.size:
            resample = getattr(self.processor, "resample", None) or PIL.Image.Resampling.BICUBIC
            image = image.resize(new_size, resample=resample)
        free_x, free_y = new_size[0] - size, new_size[1] - size
        if self.center_crop:
            left, top = free_x // 2, free_y // 2
        else:
            left = int.from_bytes(random_bytes[1:5], "little") % (free_x + 1)
            top = int.from_bytes(random_bytes[5:9], "little") % (free_y + 1)
        return image.crop((left, top, left + size, top + size))

    def _to_tensor(self, image: PIL.Image.Image) -> torch.Tensor:
        if self.processor is not None:
            return self.processor(image, return_tensors="pt", **self._processor_geometry())["pixel_values"][0]
        array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
        array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(array))

    def _processor_geometry(self) -> dict[str, bool]:
        # Our own resize/crop already made the image square; the processor must not resize it again.
        return {"do_resize": False, "do_center_crop": False} if self.resolution is not None else {}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(processor={type(self.processor).__name__ if self.processor else None}, "
            f"resolution={self.resolution}, center_crop={self.center_crop}, random_flip={self.random_flip}, "
            f"num_channels={self.num_channels}, seed={self.seed})"
        )


def collate_images(batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """DataLoader `collate_fn`: stack `pixel_values`, drop the `None`s of unreadable images and count them.

    Returns `{"pixel_values": (B', C, H, W), "num_skipped": LongTensor of shape (1,)}` with B' <= B. When every
    image of a batch was unreadable, `pixel_values` has 0 rows: skip that step. `num_skipped` has one element
    (not a scalar) so that Accelerate, which concatenates and slices batches along dim 0 when it dispatches
    them, keeps its sum over processes right.

    Example:

    ```python
    >>> import torch
    >>> from hf_vq.data import collate_images
    >>> batch = collate_images([{"pixel_values": torch.zeros(1, 4, 4)}, {"pixel_values": None}])
    >>> batch["pixel_values"].shape, batch["num_skipped"].tolist()
    (torch.Size([1, 1, 4, 4]), [1])

    ```
    """
    kept = [example["pixel_values"] for example in batch if example["pixel_values"] is not None]
    shapes = {tuple(pixel_values.shape) for pixel_values in kept}
    if len(shapes) > 1:
        raise ValueError(
            f"images of different shapes {sorted(shapes)} in one batch; give ImageTransform a resolution "
            f"(--resolution) or a processor that resizes"
        )
    pixel_values = torch.stack(kept) if kept else torch.empty(0)
    return {"pixel_values": pixel_values, "num_skipped": torch.tensor([len(batch) - len(kept)], dtype=torch.long)}


class SkippedImageCounter:
    """Adds up the unreadable images that `collate_images` dropped, in the training process.

    `update(batch)` after each batch; `total(accelerator)` is the sum over all processes (call it on every
    rank: it is a collective). It has `state_dict` / `load_state_dict`, so
    `accelerator.register_for_checkpointing(counter)` carries the count across a resume.

    Example:

    ```python
    >>> import torch
    >>> from hf_vq.data import SkippedImageCounter
    >>> counter = SkippedImageCounter()
    >>> counter.update({"pixel_values": torch.zeros(3, 1, 4, 4), "num_skipped": torch.tensor([2])})
    2
    >>> counter.total()
    2

    ```
    """

    def __init__(self) -> None:
        self.count = 0

    def update(self, batch: dict[str, Any]) -> int:
        """Add the batch's `num_skipped`; returns it."""
        skipped = int(torch.as_tensor(batch.get("num_skipped", 0)).sum())
        self.count += skipped
        return skipped

    def total(self, accelerator: Any | None = None) -> int:
        """This process's count, summed over processes when running distributed."""
        if accelerator is not None:
            local = torch.tensor([self.count], dtype=torch.long, device=accelerator.device)
            return int(accelerator.reduce(local, reduction="sum").item())
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # NCCL only reduces CUDA tensors; gloo only CPU ones.
            device = "cuda" if torch.distributed.get_backend() == "nccl" else "cpu"
            local = torch.tensor([self.count], dtype=torch.long, device=device)
            torch.distributed.all_reduce(local)
            return int(local.item())
        return self.count

    def state_dict(self) -> dict[str, int]:
        return {"count": self.count}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.count = int(state["count"])
