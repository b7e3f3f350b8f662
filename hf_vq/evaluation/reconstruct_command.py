"""`hf-vq reconstruct`: images through a tokenizer, with their reconstructions, a grid and the metrics.

    hf-vq reconstruct --tokenizer_name_or_path outputs/tok --image_dir my_images/ --output_dir outputs/rec
    hf-vq reconstruct --tokenizer_name_or_path org/vqgan --revision v1 --dataset_name fashion_mnist \\
        --output_dir outputs/rec --max_images 64

The images come from `--image_dir` (every image file under it, in path order) or from the data flags of the training
commands (`DataArguments`: `--dataset_name` / `--train_data_dir` with their split and column flags; the held-out
split is used, as the training run's evaluation uses it, so the numbers compare with its metrics.json). Each image
is read as the tokenizer's processor reads it (its channels: an RGB image into a grayscale tokenizer is converted, as
in training; its size, center-cropped); an unreadable file is skipped and counted, as training does.

`--output_dir` receives `reconstructions/` (one PNG per image, named after it), `grid.png` (the first
`--num_grid_images` originals in a row above their reconstructions) and `metrics.json` (PSNR, SSIM, codebook usage
and perplexity of hf_vq's `ReconstructionMetrics`, the counts, and the tokenizer), which is also printed as a table.

Example:
    >>> from hf_vq.evaluation.reconstruct_command import ReconstructConfig, reconstruct
    >>> result = reconstruct(ReconstructConfig(tokenizer_name_or_path="outputs/demo/tokenizer",
    ...                                        image_dir="my_images", output_dir="outputs/rec"))  # doctest: +SKIP
    >>> sorted(result["metrics"])  # doctest: +SKIP
    ['codebook_usage', 'num_images', 'perplexity', 'psnr', 'revision', 'skipped_images', 'source', 'ssim', ...]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator

import PIL.Image
import torch

from ..data import ImageDatasetError, ImageTransform
from ..errors import ConfigError
from ..flags import add_flags, check_bound, flag, flag_specs
from ..training.args import DataArguments, check_tokenizer_flag
from .metrics import ReconstructionMetrics
from .samples import save_image_grid

__all__ = ["NoImagesError", "ReconstructArguments", "ReconstructConfig", "reconstruct"]

RECONSTRUCTIONS_DIR = "reconstructions"
GRID_FILE = "grid.png"
# (key, label, format) of the printed table, in order.
TABLE_ROWS = (
    ("psnr", "PSNR (dB)", "{:.3f}"),
    ("ssim", "SSIM", "{:.4f}"),
    ("codebook_usage", "codebook usage", "{:.2%}"),
    ("perplexity", "perplexity", "{:.2f}"),
    ("num_images", "images", "{:d}"),
    ("skipped_images", "skipped (unreadable)", "{:d}"),
)


class NoImagesError(ImageDatasetError):
    """Nothing to reconstruct: no image files, or none of them readable."""


@dataclass
class ReconstructArguments:
    SECTION: ClassVar[str | None] = None  # command line only
    TITLE: ClassVar[str] = "reconstruct"

    tokenizer_name_or_path: str | None = flag(None, "tokenizer (folder or Hub id) to reconstruct the images with")
    revision: str | None = flag(None, "revision (branch, tag or commit) of --tokenizer_name_or_path")
    image_dir: str | None = flag(
        None, "folder of images (every image file under it); instead, the data flags below name a dataset"
    )
    output_dir: str = flag("outputs/reconstructions", "where reconstructions/, grid.png and metrics.json go")
    max_images: int | None = flag(None, "reconstruct at most the first N images", check=">= 1")
    batch_size: int = flag(32, "images per tokenizer forward", check=">= 1")
    num_grid_images: int = flag(16, "images in grid.png (originals above, reconstructions below)", check=">= 1")
    grid_columns: int = flag(8, "images per row of grid.png", check=">= 1")
    seed: int = flag(0, "seed of the held-out part of a dataset without an evaluation split (the training run's)")
    cpu: bool = flag(False, "run on the CPU even where a GPU is present")


@dataclass
class ReconstructConfig(ReconstructArguments, DataArguments):
    """The flags of `hf-vq reconstruct`: its own and the training commands' data flags."""


def reconstruct(config: ReconstructConfig) -> dict[str, Any]:
    """Reconstruct the images `config` names; returns `{"output_dir", "metrics", "metrics_path", "grid",
    "reconstructions"}` (paths). Raises `NoImagesError` when no image could be read, and the tokenizer loader's
    `MissingTokenizerError` for a tokenizer that does not load."""
    from ..models.vqgan.image_size import check_tokenizer_resolution
    from ..training.token_data import load_tokenizer

    check_reconstruct_args(config)
    images = image_source(config)  # a folder without image files is refused before the tokenizer loads
    device = torch.device("cuda" if torch.cuda.is_available() and not config.cpu else "cpu")
    tokenizer, processor = load_tokenizer(config.tokenizer_name_or_path, device, config.revision)
    # A converted Chameleon tokenizer's decoder was not in its source: its reconstructions are not the source's.
    untrained = {"decoder_initialized": True} if has_initialized_decoder(config) else {}
    side = check_tokenizer_resolution(tokenizer.config, config.resolution)
    transform = ImageTransform(processor, resolution=side, center_crop=True, random_flip=False)
    output_dir = Path(config.output_dir)
    (output_dir / RECONSTRUCTIONS_DIR).mkdir(parents=True, exist_ok=True)
    metrics = ReconstructionMetrics(codebook_size=tokenizer.config.codebook_size).to(device)
    grid: list[tuple[torch.Tensor, torch.Tensor]] = []
    counts = {"num_images": 0, "skipped_images": 0}
    for batch in _batches(images, config.batch_size):
        read = [(name, transform(value)) for name, value in batch]  # None: an unreadable file
        kept = [(name, pixels) for name, pixels in read if pixels is not None]
        counts["skipped_images"] += len(batch) - len(kept)
        if not kept:
            continue
        pixel_values = torch.stack([pixels for _, pixels in kept]).to(device)
        with torch.no_grad():
            output = tokenizer(pixel_values)
        reconstruction = output.reconstruction.float()
        metrics.update(pixel_values, reconstruction, output.image_tokens)
        for (name, _), image in zip(kept, processor.postprocess(reconstruction)):
            path = output_dir / RECONSTRUCTIONS_DIR / name
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path, format="PNG")
        counts["num_images"] += len(kept)
        if sum(len(originals) for originals, _ in grid) < config.num_grid_images:
            grid.append((pixel_values.cpu(), reconstruction.cpu()))
    if counts["num_images"] == 0:
        raise NoImagesError(
            f"no readable image in {describe_source(config)} ({counts['skipped_images']} unreadable files skipped)"
        )
    return _write_results(config, output_dir, metrics.compute() | counts | untrained, grid)


def has_initialized_decoder(config: ReconstructConfig) -> bool:
    """Whether the tokenizer's folder records (`hf-vq convert --initialize_missing_decoder`) that its decoder was
    freshly initialised at conversion, not taken from the source, and never trained since."""
    from transformers.utils import cached_file

    try:
        path = cached_file(
            config.tokenizer_name_or_path,
            "training_config.json",
            revision=config.revision,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
        record = json.loads(Path(path).read_text(encoding="utf-8")) if path else {}
    except (OSError, ValueError):  # no readable record: nothing says the decoder is untrained
        return False
    return isinstance(record, dict) and bool(record.get("decoder_initialized"))


def _write_results(
    config: ReconstructConfig, output_dir: Path, metrics: dict[str, Any], grid: list[tuple[torch.Tensor, torch.Tensor]]
) -> dict[str, Any]:
    metrics |= {
        "tokenizer": config.tokenizer_name_or_path,
        "revision": config.revision,
        "source": describe_source(config),
    }
    from ..training.end_of_run import METRICS_FILE, write_metrics

    metrics_path = output_dir / METRICS_FILE
    # Strict JSON: a perfect reconstruction's infinite PSNR is written as null, as the training commands do.
    write_metrics(metrics_path, metrics)
    originals = torch.cat([original for original, _ in grid])[: config.num_grid_images]
    reconstructions = torch.cat([reconstruction for _, reconstruction in grid])[: config.num_grid_images]
    grid_path = save_above_below_grid(originals, reconstructions, output_dir / GRID_FILE, config.grid_columns)
    return {
        "output_dir": str(output_dir.resolve()),
        "metrics": metrics,
        "metrics_path": str(metrics_path.resolve()),
        "grid": str(grid_path.resolve()),
        "reconstructions": str((output_dir / RECONSTRUCTIONS_DIR).resolve()),
    }


def save_above_below_grid(originals: torch.Tensor, reconstructions: torch.Tensor, path: Path, columns: int) -> Path:
    """`save_image_grid` with each row of up to `columns` originals followed by the row of their reconstructions
    (a last, shorter row padded with black tiles)."""
    columns = min(columns, len(originals))
    rows = []
    for start in range(0, len(originals), columns):
        for images in (originals[start : start + columns], reconstructions[start : start + columns]):
            padding = torch.full((columns - len(images), *images.shape[1:]), -1.0, dtype=images.dtype)
            rows.append(torch.cat([images, padding]))
    return save_image_grid(torch.cat(rows), path, columns=columns)


def check_reconstruct_args(config: ReconstructConfig) -> None:
    """One tokenizer and exactly one image source, each usable as far as can be told before loading anything."""
    check_tokenizer_flag(config)
    sources = [name for name in ("image_dir", "dataset_name", "train_data_dir") if getattr(config, name)]
    if len(sources) != 1:
        given = f"got {', '.join('--' + name for name in sources)}" if sources else "got none"
        raise ConfigError(f"pass exactly one of --image_dir, --dataset_name and --train_data_dir ({given})")
    folder = config.image_dir or config.train_data_dir
    if folder and not Path(folder).is_dir():
        raise ConfigError(f"--{sources[0]} {folder!r} is not a folder")


def image_source(config: ReconstructConfig) -> Iterator[tuple[str, Any]]:
    """(output file name, image as an image column holds it) for each image to reconstruct, `--max_images` at
    most. A folder is listed now (`NoImagesError` if it holds no image file); a dataset is read as it is iterated."""
    items = _image_files(Path(config.image_dir)) if config.image_dir else _dataset_images(config)
    return itertools.islice(items, config.max_images)


def _image_files(folder: Path) -> list[tuple[str, Any]]:
    """Every file under `folder` whose extension PIL reads, in path order, named after its path inside `folder`."""
    extensions = {extension.lower() for extension in PIL.Image.registered_extensions()}
    files = sorted(path for path in folder.rglob("*") if path.is_file() and path.suffix.lower() in extensions)
    if not files:
        raise NoImagesError(
            f"--image_dir {str(folder)!r} holds no image files (none with an extension PIL reads, such as .png or "
            ".jpg)"
        )
    names = [path.relative_to(folder).with_suffix(".png") for path in files]
    taken = {name for name in names if names.count(name) > 1}  # a.jpg and a.png: a.jpg.png and a.png.png
    return [
        (str(path.relative_to(folder)) + ".png" if name in taken else str(name), str(path))
        for name, path in zip(names, files)
    ]


def _dataset_images(config: ReconstructConfig) -> Iterator[tuple[str, Any]]:
    """The held-out split of the training commands' data flags (their evaluation's images), else the training split
    when too small to hold anything out."""
    from ..training.data import train_and_eval_datasets
    from ..training.token_data import image_source as dataset_source  # not this file's image_source

    train, evaluation = train_and_eval_datasets(config, dataset_source(config))
    dataset = evaluation if evaluation is not None else train
    for index, row in enumerate(dataset):
        yield f"{index:05d}.png", row[config.image_column]


def describe_source(config: ReconstructConfig) -> str:
    if config.image_dir:
        return f"--image_dir {config.image_dir}"
    if config.dataset_name:
        return f"--dataset_name {config.dataset_name}"
    return f"--train_data_dir {config.train_data_dir}"


def _batches(items: Iterable[tuple[str, Any]], size: int) -> Iterator[list[tuple[str, Any]]]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def metrics_table(metrics: dict[str, Any]) -> str:
    """The measured metrics as an aligned two-column table."""
    rows = [(label, form.format(metrics[key])) for key, label, form in TABLE_ROWS if _finite(metrics.get(key))]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def add_reconstruct_subcommand(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `reconstruct` with the `hf-vq` command (hf_vq/cli.py)."""
    parser = subparsers.add_parser(
        "reconstruct",
        help="reconstruct images through a tokenizer: PNGs, a grid, PSNR / SSIM / codebook usage",
        description=__doc__.split("\n\n")[0],
    )
    add_flags(parser, (ReconstructArguments, DataArguments))
    parser.set_defaults(handler=lambda args: report(reconstruct(parse_namespace(args))))
    return parser


def parse_namespace(args: argparse.Namespace) -> ReconstructConfig:
    """The parsed flags as a checked `ReconstructConfig` (each flag's bound, as the training commands check them)."""
    specs = flag_specs((ReconstructArguments, DataArguments))
    values = {name: getattr(args, name) for name in specs}
    for name, spec in specs.items():
        check_bound(values[name], spec.check, f"--{name}")
    return ReconstructConfig(**values)


def report(result: dict[str, Any]) -> dict[str, Any]:
    if result["metrics"].get("decoder_initialized"):
        print(
            "note: this tokenizer's decoder was freshly initialised when it was converted (its source has none) and "
            "is untrained: these reconstructions are not the source's; train it with hf-vq train-tokenizer "
            "--pretrained_model_name_or_path"
        )
    print(metrics_table(result["metrics"]))
    print(f"reconstructions: {result['reconstructions']}")
    print(f"grid:            {result['grid']}")
    print(f"metrics:         {result['metrics_path']}")
    return result
