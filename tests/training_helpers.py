"""Tiny image folders and tiny training runs for the training tests."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import PIL.Image
import torch

REPO = Path(__file__).parents[1]
# The classes of `write_labelled_imagefolder`: flat colours a classifier or a class-conditional prior can tell apart.
LABELLED_COLOURS = {"dark": (20, 20, 20), "light": (230, 230, 230), "red": (220, 30, 30)}
CLASSES = tuple(LABELLED_COLOURS)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread inside the block: tiny models and many small operations on a shared 2-core machine,
    where a second thread only waits on a descheduled one (tests ran 10-40x slower with two under load)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def write_labelled_imagefolder(root: Path, train_count: int = 8, test_count: int = 3) -> Path:
    """An imagefolder with train/ and test/ splits and one subfolder (label) per class of `CLASSES`: 18x18 RGB
    images of the class colour plus seeded noise."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train_count), ("test", test_count)):
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                noise = rng.integers(-20, 20, (18, 18, 3))
                pixels = np.clip(np.array(LABELLED_COLOURS[name]) + noise, 0, 255).astype(np.uint8)
                PIL.Image.fromarray(pixels).save(folder / f"{index}.png")
    return root


TINY_CONFIG = str(REPO / "configs" / "vqgan_tiny.yaml")


def write_images(folder: Path, count: int, size: int = 20, mode: str = "RGB", corrupt: int = 0, seed: int = 0) -> Path:
    """`count` random PNGs (smooth blobs, so that there is something to reconstruct) plus `corrupt` broken ones."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    grid = np.linspace(0, 1, size)
    for index in range(count):
        centre = rng.random(2)
        blob = np.exp(-((grid[None, :] - centre[0]) ** 2 + (grid[:, None] - centre[1]) ** 2) * 8)
        channels = 3 if mode == "RGB" else 1
        pixels = np.stack([blob * rng.random() for _ in range(channels)], axis=-1)
        array = (np.clip(pixels + 0.05 * rng.random(pixels.shape), 0, 1) * 255).astype(np.uint8)
        PIL.Image.fromarray(array[..., 0] if channels == 1 else array).save(folder / f"image_{index:03d}.png")
    for index in range(corrupt):
        (folder / f"broken_{index:03d}.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated, not an image")
    return folder


def training_args(output_dir: Path, **flags: Any):
    """The config `hf-vq train-tokenizer --config configs/vqgan_tiny.yaml ...flags` would give."""
    from hf_vq.training.tokenizer_command import resolve_tokenizer_args

    return resolve_tokenizer_args(
        {"config": TINY_CONFIG, "output_dir": str(output_dir), "progress_bar": False, **flags}
    )


def reset_accelerate() -> None:
    """Accelerate keeps process-wide singletons; tests that train several times in one process start each run fresh."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def train(output_dir: Path, **flags: Any) -> dict:
    """Train in this process, on one thread: with tiny models on a shared 2-core machine, a second thread makes
    every small op wait for the busy other core (measured: 27 s instead of 2 s for the same run)."""

    from hf_vq.training.tokenizer_loop import train_tokenizer

    reset_accelerate()
    with one_thread():
        return train_tokenizer(training_args(output_dir, **flags))


def train_and_resume_from_step_2(root: Path, **flags: Any) -> tuple[dict, dict]:
    """Two 3-step tokenizer runs with a checkpoint at step 2: one uninterrupted, one resumed from a copy of that
    checkpoint. A resume that is exact ends with the same weights (`assert_same_weights`)."""
    import shutil

    flags = dict(max_train_steps=3, checkpointing_steps=2, discriminator_weight=0.0, eval_steps=0, **flags)
    uninterrupted = train(root / "uninterrupted", **flags)
    shutil.copytree(root / "uninterrupted" / "checkpoint-2", root / "resumed" / "checkpoint-2")
    resumed = train(root / "resumed", resume_from_checkpoint="latest", **flags)
    assert resumed["global_step"] == 3
    return uninterrupted, resumed


def assert_same_weights(first: dict, second: dict) -> None:
    """The two runs' final models have equal tensors, every one of them."""
    first, second = first["model"].state_dict(), second["model"].state_dict()
    for key in first:
        assert torch.equal(first[key], second[key]), f"{key} differs after resuming"


def child_pids(pid: int) -> list[int]:
    """The PIDs of `pid`'s child processes (Linux: /proc/<pid>/task/<pid>/children)."""
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
