"""`hf-vq encode`: an image dataset through a tokenizer, into a token dataset (`hf_vq.data.token_dataset`).

The splits are cut into shards of `--shard_size` images; process `r` of `n` (torchrun / accelerate launch) encodes
shards `r, r + n, r + 2n, ...` and saves each one when it is done (written to a temporary folder and renamed, so a
kill leaves only whole shards). Once every process is done, the main process concatenates the shards in order and
saves the token dataset. The shards, and the batches inside them, are the same whatever the number of processes,
so 1 and n processes write the same dataset; a resumed run (the same command again) skips the finished shards.

Work folder while encoding: `<output_dir>/.shards/` (`encoding.json`: the tokenizer and source the shards belong
to; `<split>/<index>/`: one saved `Dataset` per finished shard). It is removed once the dataset is saved.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import datasets
import numpy as np
import torch
from accelerate import PartialState
from tqdm.auto import tqdm

from ..data import ImageTransform
from ..data.token_dataset import (
    LABELS_COLUMN,
    TOKEN_DATASET_FILE,
    TOKENS_COLUMN,
    TokenDatasetError,
    TokenDatasetInfo,
    TokenizerMismatchError,
    push_token_dataset,
    read_info,
    save_token_dataset,
    token_features,
)
from ..models.vqgan.image_size import check_tokenizer_resolution
from .args import EncodeConfig
from .data import train_and_named_eval_datasets
from .kill_points import pause_for_a_kill
from .loop import has_accelerator_device
from .token_data import ImageEncoder, encode_labels, image_source, load_tokenizer

WORK_DIR = ".shards"
MANIFEST_FILE = "encoding.json"
HELD_OUT_SPLIT = "validation"  # the name of the part of the training split held out when the source has no test
# Images per tokenizer forward when --batch_size is not given. On the CPU a small batch keeps the feature maps in
# the processor's caches: the demo tokenizer encodes 1.9x as many images per CPU second at 16 as at 256
# (docs/benchmarks.md, "Tokenizing a dataset"). A GPU wants big batches.
CPU_BATCH_SIZE = 16
ACCELERATOR_BATCH_SIZE = 256
# Test hook: stop (as a kill would) after this many shards were saved by this process.
STOP_AFTER_SHARDS_ENV = "HF_VQ_ENCODE_STOP_AFTER_SHARDS"
# Test hook: pause for good while saving this process's N-th shard (written, not yet renamed into place), with a
# `<shard>.tmp.paused` file beside it, so that a test can kill the process at that point with SIGKILL.
PAUSE_IN_SHARD_ENV = "HF_VQ_ENCODE_PAUSE_IN_SHARD"


class OutputDirInUseError(TokenDatasetError):
    """--output_dir holds something else than this command's token dataset (or its unfinished shards)."""


@dataclass(frozen=True)
class Shard:
    split: str
    index: int
    start: int
    stop: int

    def folder(self, work_dir: Path) -> Path:
        return work_dir / self.split / f"{self.index:05d}"


def run_encode(config: EncodeConfig) -> dict[str, Any]:
    """Encode (unless `--output_dir` already holds this token dataset), save, and push if asked; returns
    `{"output_dir", "info", "images", "seconds", "images_per_second", "skipped_shards", "unreadable_images",
    "num_processes",
    "is_main_process"}`."""
    check_push(config)  # before the encoding, not after it
    # Without a GPU, cpu=True is what makes Accelerate start gloo under torchrun (else each process runs alone).
    state = PartialState(cpu=config.cpu or not has_accelerator_device())
    tokenizer, processor = load_tokenizer(config.tokenizer_name_or_path, state.device, revision=config.revision)
    check_tokenizer_resolution(tokenizer.config, config.resolution)
    with state.main_process_first():  # only the main process writes the `datasets` cache
        splits, id2label = source_splits(config)
    info = TokenDatasetInfo.from_tokenizer(
        tokenizer, config.tokenizer_name_or_path, config.revision, **source_record(config, splits, id2label)
    )
    output_dir = Path(config.output_dir)
    with state.main_process_first():  # the main process records the manifest before the others read it
        claim = claim_output_dir(output_dir, info, state.is_main_process)
    images, seconds, skipped, unreadable = 0, 0.0, 0, 0
    if claim == "done":
        state.print(f"{output_dir} already holds this token dataset: nothing to encode")
    else:
        images, seconds, skipped, unreadable = encode_dataset(
            config, state, tokenizer, processor, splits, id2label, info
        )
    if state.is_main_process and config.push_to_hub:
        url = push_token_dataset(output_dir, config.hub_dataset_id, token=config.hub_token, private=config.private)
        state.print(f"pushed to {url}")
    state.wait_for_everyone()
    return _result(config, state, info, images, seconds, skipped) | {"unreadable_images": unreadable}


def encode_dataset(
    config: EncodeConfig,
    state: PartialState,
    tokenizer: torch.nn.Module,
    processor: Any,
    splits: dict[str, datasets.Dataset],
    id2label: dict[int, str],
    info: TokenDatasetInfo,
) -> tuple[int, float, int, int]:
    """This process's unfinished shards encoded and saved, then (main process) the token dataset assembled and saved
    in `--output_dir`. Returns the images encoded by all processes, the seconds it took (encoding and writing, as
    the main process saw it), the number of shards a previous run had finished and (main process; 0 elsewhere) the
    unreadable images left out of the dataset, counted over every shard, resumed ones included."""
    encoder = ImageEncoder(
        ImageTransform(processor, resolution=info.image_size, center_crop=True, random_flip=False),
        tokenizer,
        config.image_column,
        config.label_column if id2label else None,
        state.device,
        label_names=list(id2label.values()) if id2label else None,
    )
    features = token_features(tuple(info.token_grid), info.codebook_size, encoder.label_names)
    output_dir = Path(config.output_dir)
    work_dir = output_dir / WORK_DIR
    shards = plan_shards(splits, config.shard_size)
    mine = shards[state.process_index :: state.num_processes]
    pending = [shard for shard in mine if not shard.folder(work_dir).is_dir()]
    start = time.perf_counter()
    encoded = encode_shards(config, splits, pending, encoder, features, work_dir, state)
    total = sum(_gather(state, encoded))  # also waits for every process to have saved its shards
    skipped = sum(_gather(state, len(mine) - len(pending)))
    unreadable = 0
    if state.is_main_process:
        assembled = assemble(shards, work_dir, splits)
        unreadable = sum(map(len, splits.values())) - sum(map(len, assembled.values()))
        with quiet_datasets_progress():
            save_token_dataset(assembled, info, output_dir)
    return total, time.perf_counter() - start, skipped, unreadable


def check_push(config: EncodeConfig) -> None:
    """Fail before encoding when `--push_to_hub` could not succeed (the training commands' checks)."""
    if config.push_to_hub:
        from ..hub.push import check_push_target

        check_push_target(config.hub_dataset_id, config.hub_token, "--hub_dataset_id")


def source_splits(config: EncodeConfig) -> tuple[dict[str, datasets.Dataset], dict[int, str]]:
    """The training split and the held-out one the training commands would read (`--eval_split`, else the first of
    test / validation the source has, else `--eval_fraction` of the training split, named "validation"), each by
    its name, and the class names (`{}` when the source has no `--label_column`)."""
    train, evaluation, eval_name = train_and_named_eval_datasets(config, image_source(config))
    id2label: dict[int, str] = {}
    if config.label_column in train.column_names:
        train, evaluation, id2label = encode_labels(train, evaluation, config.label_column)
    splits = {config.train_split: train}
    if evaluation is not None:
        splits[eval_name or HELD_OUT_SPLIT] = evaluation
    return splits, id2label


def source_record(config: EncodeConfig, splits: dict[str, datasets.Dataset], id2label: dict[int, str]) -> dict:
    """What the token dataset was made from: part of its info, and what a resumed run must find again."""
    data_dir = str(Path(config.train_data_dir).resolve()) if config.train_data_dir else None
    return {
        "dataset_name": config.dataset_name,
        "dataset_config_name": config.dataset_config_name,
        "train_data_dir": data_dir,
        "image_column": config.image_column,
        "label_column": config.label_column if id2label else None,
        "splits": {name: len(split) for name, split in splits.items()},
        "shard_size": config.shard_size,
    }


def claim_output_dir(output_dir: Path, info: TokenDatasetInfo, is_main_process: bool) -> str:
    """Whether `output_dir` already holds this very token dataset ("done") or is to be encoded into ("encode"),
    after checking that what it holds, if anything, is this run's unfinished shards (the main process then records
    the run's manifest)."""
    finished = read_info(output_dir)
    if finished is not None:
        _check_same_run(finished, info, output_dir)
        return "done"
    work_dir = output_dir / WORK_DIR
    manifest = work_dir / MANIFEST_FILE
    if manifest.is_file():
        _check_same_run(TokenDatasetInfo.from_dict(json.loads(manifest.read_text())), info, output_dir)
    elif output_dir.is_dir() and any(output_dir.iterdir()):
        raise OutputDirInUseError(
            f"--output_dir {str(output_dir)!r} is not empty and holds no token dataset ({TOKEN_DATASET_FILE}): "
            "pass an empty or new folder"
        )
    if is_main_process and not manifest.is_file():
        work_dir.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps(info.to_dict(), indent=2) + "\n")
    return "encode"


def _check_same_run(found: TokenDatasetInfo, info: TokenDatasetInfo, output_dir: Path) -> None:
    if not found.same_tokenizer(info):
        raise TokenizerMismatchError(
            f"--output_dir {str(output_dir)!r} holds the tokens of another tokenizer, {found.describe()}, not of "
            f"--tokenizer_name_or_path {info.describe()}: pass a new --output_dir"
        )
    if found.source != info.source:
        raise OutputDirInUseError(
            f"--output_dir {str(output_dir)!r} holds this tokenizer's tokens of other data ({found.source}, here "
            f"{info.source}): pass a new --output_dir, or the same data flags as the run that wrote it"
        )


def plan_shards(splits: dict[str, datasets.Dataset], shard_size: int) -> list[Shard]:
    """Every split cut into `shard_size` rows (the last shard of a split may be shorter), in split order."""
    shards = []
    for name, split in splits.items():
        for index in range(math.ceil(len(split) / shard_size)):
            shards.append(Shard(name, index, index * shard_size, min((index + 1) * shard_size, len(split))))
    return shards


def encode_shards(
    config: EncodeConfig,
    splits: dict[str, datasets.Dataset],
    shards: list[Shard],
    encoder: ImageEncoder,
    features: datasets.Features,
    work_dir: Path,
    state: PartialState,
) -> int:
    """Encode and save `shards` (this process's unfinished ones); returns the number of images read."""
    stop_after = int(os.environ.get(STOP_AFTER_SHARDS_ENV, "0"))
    pause_in = int(os.environ.get(PAUSE_IN_SHARD_ENV, "0"))
    total = sum(shard.stop - shard.start for shard in shards)
    progress = tqdm(
        total=total,
        unit="img",
        desc=f"encoding (process {state.process_index})" if state.num_processes > 1 else "encoding",
        disable=not config.progress_bar,
        position=state.process_index,
    )
    splits = {name: rows_for_encoding(split, config.image_column) for name, split in splits.items()}
    batch_size = forward_batch_size(config.batch_size, encoder.device)
    for count, shard in enumerate(shards, start=1):
        dataset = encode_shard(splits[shard.split], shard, encoder, features, batch_size, progress)
        save_atomically(dataset, shard.folder(work_dir), pause=count == pause_in)
        if stop_after and count >= stop_after:
            raise SystemExit(f"stopped after {count} shards ({STOP_AFTER_SHARDS_ENV})")
    progress.close()
    return total


def forward_batch_size(batch_size: int | None, device: torch.device) -> int:
    """--batch_size, else the default of the device the tokenizer runs on."""
    if batch_size is not None:
        return batch_size
    return CPU_BATCH_SIZE if device.type == "cpu" else ACCELERATOR_BATCH_SIZE


def rows_for_encoding(split: datasets.Dataset, image_column: str) -> datasets.Dataset:
    """`split`, its rows read as numpy arrays when its images are arrays (Fashion-MNIST's `Array2D`): the same
    pixels as the nested Python lists `datasets` gives by default, read about 10x faster. Image files
    (`datasets.Image`) are read as they are."""
    if isinstance(split.features.get(image_column), (datasets.Array2D, datasets.Array3D)):
        return split.with_format("numpy")
    return split


def encode_shard(
    split: datasets.Dataset,
    shard: Shard,
    encoder: ImageEncoder,
    features: datasets.Features,
    batch_size: int,
    progress: tqdm,
) -> datasets.Dataset:
    """The rows `shard.start:shard.stop` of `split` as token dataset rows (unreadable images left out)."""
    tokens, labels = [], []
    for begin in range(shard.start, shard.stop, batch_size):
        end = min(begin + batch_size, shard.stop)
        rows = encoder(split[begin:end])
        tokens.append(np.asarray(rows[TOKENS_COLUMN], dtype=features[TOKENS_COLUMN].dtype))
        labels.extend(rows.get(LABELS_COLUMN, []))
        progress.update(end - begin)
    shape = (0, *features[TOKENS_COLUMN].shape)
    columns = {TOKENS_COLUMN: np.concatenate([np.reshape(part, (-1, *shape[1:])) for part in tokens])}
    if LABELS_COLUMN in features:
        columns[LABELS_COLUMN] = labels
    return datasets.Dataset.from_dict(columns, features=features)


def save_atomically(dataset: datasets.Dataset, folder: Path, pause: bool = False) -> None:
    """`save_to_disk` into `<folder>.tmp`, then one rename: a shard folder exists only once it is complete.
    `pause` is the test hook of `PAUSE_IN_SHARD_ENV`."""
    staging = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    with quiet_datasets_progress():
        dataset.save_to_disk(str(staging))
    if pause:
        pause_for_a_kill(staging.with_name(staging.name + ".paused"))
    os.replace(staging, folder)


@contextlib.contextmanager
def quiet_datasets_progress() -> Iterator[None]:
    """No `datasets` progress bar per saved shard: the encoding's own bar shows the progress."""
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def assemble(shards: list[Shard], work_dir: Path, splits: dict[str, datasets.Dataset]) -> datasets.DatasetDict:
    """The saved shards, concatenated split by split in shard order."""
    parts: dict[str, list[datasets.Dataset]] = {name: [] for name in splits}
    for shard in shards:
        parts[shard.split].append(datasets.load_from_disk(str(shard.folder(work_dir))))
    return datasets.DatasetDict({name: datasets.concatenate_datasets(items) for name, items in parts.items()})


def _gather(state: PartialState, value: int) -> list[int]:
    if state.num_processes == 1:
        return [value]
    from accelerate.utils import gather_object

    return gather_object([value])


def _result(
    config: EncodeConfig, state: PartialState, info: TokenDatasetInfo, images: int, seconds: float, skipped: int
) -> dict[str, Any]:
    return {
        "output_dir": str(Path(config.output_dir).resolve()),
        "info": info,
        "images": images,
        "seconds": seconds,
        "images_per_second": images / seconds if seconds > 0 else None,
        "skipped_shards": skipped,
        "num_processes": state.num_processes,
        "is_main_process": state.is_main_process,
    }


__all__ = ["OutputDirInUseError", "Shard", "assemble", "plan_shards", "run_encode", "source_splits"]
