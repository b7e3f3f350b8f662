"""Sample grids for logs and model cards: originals beside their reconstructions, generated images by class."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import PIL.Image
import torch

GRID_PADDING = 2


def save_sample_grid(
    originals: torch.Tensor | np.ndarray,
    reconstructions: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    nrow: int = 8,
) -> Path:
    """Write a PNG with each original immediately followed by its reconstruction, `nrow` pairs per row.

    Inputs are (N, C, H, W) in [-1, 1] with C = 1 (saved as a grayscale PNG) or 3 (RGB). Tiles are separated by
    2 black pixels, so the PNG is `2 * cols * W + (2 * cols + 1) * 2` wide and `rows * H + (rows + 1) * 2` high,
    with `cols = min(nrow, N)` and `rows = ceil(N / cols)`.

    Example:

    ```python
    >>> import tempfile, torch, PIL.Image
    >>> from hf_vq.evaluation import save_sample_grid
    >>> images = torch.zeros(3, 1, 8, 8)
    >>> path = save_sample_grid(images, images, tempfile.mkdtemp() + "/grid.png", nrow=2)
    >>> PIL.Image.open(path).size
    (42, 22)

    ```
    """
    originals, reconstructions = _as_uint8(originals), _as_uint8(reconstructions)
    if originals.shape != reconstructions.shape:
        raise ValueError(f"originals {originals.shape} and reconstructions {reconstructions.shape} differ in shape")
    if nrow <= 0:
        raise ValueError(f"nrow must be positive, got {nrow}")
    tiles = np.stack([originals, reconstructions], axis=1).reshape(-1, *originals.shape[1:])  # o0, r0, o1, r1...
    grid = _tile(tiles, columns=2 * min(nrow, len(originals)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path, format="PNG")
    return path


def save_image_grid(images: torch.Tensor | np.ndarray, path: str | os.PathLike, columns: int) -> Path:
    """Write a PNG of `images` (N, C, H, W) in [-1, 1], `columns` per row in the given order (e.g. one row per class
    for samples generated class by class), tiles separated by 2 black pixels.

    Example:

    ```python
    >>> import tempfile, torch, PIL.Image
    >>> from hf_vq.evaluation import save_image_grid
    >>> path = save_image_grid(torch.zeros(6, 1, 8, 8), tempfile.mkdtemp() + "/grid.png", columns=3)
    >>> PIL.Image.open(path).size
    (32, 22)

    ```
    """
    if columns <= 0:
        raise ValueError(f"columns must be positive, got {columns}")
    tiles = _as_uint8(images)
    grid = _tile(tiles, columns=min(columns, len(tiles)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path, format="PNG")
    return path


def _as_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> uint8 (N, H, W, C)."""
    array = (
        images.detach().float().cpu().numpy()
        if isinstance(images, torch.Tensor)
        else np.asarray(images, dtype=np.float32)
    )
    if array.ndim != 4 or array.shape[1] not in (1, 3) or array.shape[0] == 0:
        raise ValueError(f"sample images must be a non-empty (N, 1 or 3, H, W) batch, got shape {array.shape}")
    return ((np.clip(array, -1.0, 1.0) + 1.0) * 127.5).round().astype(np.uint8).transpose(0, 2, 3, 1)


def _tile(tiles: np.ndarray, columns: int) -> np.ndarray:
    count, height, width, channels = tiles.shape
    rows = math.ceil(count / columns)
    pad = GRID_PADDING
    grid = np.zeros((rows * height + (rows + 1) * pad, columns * width + (columns + 1) * pad, channels), np.uint8)
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        top, left = pad + row * (height + pad), pad + column * (width + pad)
        grid[top : top + height, left : left + width] = tile
    return grid
