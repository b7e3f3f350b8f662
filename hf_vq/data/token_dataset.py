"""Token datasets: image datasets tokenized once by a VQ tokenizer, in the one token format of the project.

A token dataset is a `datasets.DatasetDict` (one `Dataset` per split, named as the source's splits) with

- `image_tokens`: each image's token grid, `Array2D((h, w))` (or `Array3D((h, w, ids per position))` for
  grouped / residual quantizers) of the smallest integer type that holds the codebook (`token_dtype`): `uint8` up
  to 256 codes, `uint16` up to 65,536, `int32` beyond. Arrow stores all three natively, and `datasets`' torch
  format hands them out as int64 tensors (ready for `nn.Embedding`); `uint32` is avoided because torch has only a
  shell dtype for it;
- `labels` (when the source has class labels): a `ClassLabel`, so the class names travel with the data;

plus a `TokenDatasetInfo` naming the tokenizer (name or path, revision, Hub commit, codebook size, grid, a
fingerprint of its weights). The info lives in `token_dataset.json` beside the data: `save_to_disk` /
`load_from_disk` keep any file in the folder, and on the Hub it is uploaded next to the parquet files. It is not
kept in `DatasetInfo.description` or feature metadata, because `push_to_hub` writes only the features and split
sizes into the card (`DatasetInfo._INCLUDED_INFO_IN_YAML`), so a description does not survive `load_dataset`.

`hf-vq encode` writes token datasets; `hf-vq train-classifier` / `train-prior --token_dataset` read them, and the
commands' private token cache uses the same columns and types.

Example:

```python
>>> from hf_vq.data.token_dataset import token_dtype, token_features
>>> token_dtype(256), token_dtype(16_384), token_dtype(262_144)
('uint8', 'uint16', 'int32')
>>> features = token_features((8, 8), 512, label_names=["cat", "dog"])
>>> features["image_tokens"].dtype, features["labels"].names
('uint16', ['cat', 'dog'])

```
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch

from ..errors import HfVqUserError

TOKEN_DATASET_FILE = "token_dataset.json"
TOKEN_FORMAT_VERSION = 1
TOKENS_COLUMN = "image_tokens"
LABELS_COLUMN = "labels"
# The smallest integer type holding ids 0..codebook_size-1, by upper bound of codebook_size.
_TOKEN_DTYPES = ((2**8, "uint8"), (2**16, "uint16"), (2**31, "int32"))


class TokenDatasetError(HfVqUserError, ValueError):
    """A token dataset cannot be read or used as asked (missing, not a token dataset, no such split)."""


class TokenizerMismatchError(HfVqUserError, ValueError):
    """Tokens made by one tokenizer meet another one (other weights, vocabulary or grid)."""


def token_dtype(codebook_size: int) -> str:
    """The Arrow / numpy type of the token ids of a codebook of `codebook_size` codes."""
    for bound, dtype in _TOKEN_DTYPES:
        if codebook_size <= bound:
            return dtype
    raise ValueError(f"codebook_size {codebook_size} does not fit in int32 token ids")


def token_features(
    token_shape: tuple[int, ...], codebook_size: int, label_names: list[str] | None = None
) -> datasets.Features:
    """The columns of a token dataset: `image_tokens` of `token_shape` ((h, w) or (h, w, q)), and `labels` as a
    `ClassLabel` of `label_names` when given."""
    array = datasets.Array2D if len(token_shape) == 2 else datasets.Array3D
    columns: dict[str, Any] = {TOKENS_COLUMN: array(tuple(token_shape), token_dtype(codebook_size))}
    if label_names is not None:
        columns[LABELS_COLUMN] = datasets.ClassLabel(names=list(label_names))
    return datasets.Features(columns)


def module_fingerprint(module: torch.nn.Module) -> str:
    """A hash of a module's weights and buffers (names, shapes, dtypes, values): which tokenizer made the tokens."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


@dataclass
class TokenDatasetInfo:
    """What a token dataset records about the tokenizer that made it (and about its source, for the card)."""

    tokenizer_name_or_path: str
    codebook_size: int
    token_grid: list[int]  # (h, w), or (h, w, ids per position)
    weights_sha256: str
    tokenizer_revision: str | None = None
    tokenizer_commit_hash: str | None = None  # the Hub commit the tokenizer was loaded at, when from the Hub
    image_size: int | None = None
    token_dtype: str | None = None
    source: dict[str, Any] = field(default_factory=dict)  # dataset, config, image and label columns, splits
    format_version: int = TOKEN_FORMAT_VERSION

    @classmethod
    def from_tokenizer(
        cls, tokenizer: torch.nn.Module, name_or_path: str, revision: str | None = None, **source: Any
    ) -> TokenDatasetInfo:
        """The record of a loaded tokenizer (a local folder is recorded as an absolute path)."""
        config = tokenizer.config
        grid = list(config.token_grid_size) + ([config.tokens_per_position] if config.tokens_per_position > 1 else [])
        path = Path(name_or_path)
        return cls(
            tokenizer_name_or_path=str(path.resolve()) if path.is_dir() else name_or_path,
            codebook_size=int(config.codebook_size),
            token_grid=grid,
            weights_sha256=module_fingerprint(tokenizer),
            tokenizer_revision=revision,
            tokenizer_commit_hash=getattr(config, "_commit_hash", None),
            image_size=int(config.image_size),
            token_dtype=token_dtype(config.codebook_size),
            source=dict(source),
        )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TokenDatasetInfo:
        known = {item.name for item in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        revision = f"@{self.tokenizer_revision}" if self.tokenizer_revision else ""
        grid = "x".join(str(side) for side in self.token_grid)
        return f"{self.tokenizer_name_or_path}{revision} ({self.codebook_size} codes, grid {grid})"

    def same_tokenizer(self, other: TokenDatasetInfo) -> bool:
        """The same weights (hence the same codes, vocabulary and grid), wherever the tokenizer was loaded from."""
        return self.weights_sha256 == other.weights_sha256 and self.token_grid == other.token_grid

    def check_tokenizer(
        self, tokenizer: TokenDatasetInfo, dataset: str, flag: str = "--tokenizer_name_or_path"
    ) -> None:
        """Refuse tokens made by another tokenizer than `tokenizer` (the one a command was given)."""
        if not self.same_tokenizer(tokenizer):
            raise TokenizerMismatchError(
                f"{dataset} holds the tokens of the tokenizer {self.describe()}, but {flag} "
                f"{tokenizer.describe()} is another tokenizer (other weights): pass the tokenizer the tokens were "
                f"made with, or encode the images again with `hf-vq encode --tokenizer_name_or_path "
                f"{tokenizer.tokenizer_name_or_path}`"
            )


def write_info(folder: str | os.PathLike, info: TokenDatasetInfo) -> Path:
    path = Path(folder) / TOKEN_DATASET_FILE
    path.write_text(json.dumps(info.to_dict(), indent=2) + "\n")
    return path


def read_info(folder: str | os.PathLike) -> TokenDatasetInfo | None:
    """The info of the token dataset saved in `folder`, or None when there is none."""
    path = Path(folder) / TOKEN_DATASET_FILE
    if not path.is_file():
        return None
    return TokenDatasetInfo.from_dict(json.loads(path.read_text()))


def save_token_dataset(dataset: datasets.DatasetDict, info: TokenDatasetInfo, folder: str | os.PathLike) -> Path:
    """`dataset.save_to_disk(folder)` with `token_dataset.json` beside it, written to `<folder>.tmp` first and
    renamed into place, so that a reader never sees a half-written dataset."""
    folder = Path(folder)
    staging = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    dataset.save_to_disk(str(staging))
    write_info(staging, info)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(staging, folder)
    return folder


def load_token_dataset(
    path_or_hub_id: str, revision: str | None = None, token: str | None = None
) -> tuple[datasets.DatasetDict, TokenDatasetInfo]:
    """A token dataset from a folder (`hf-vq encode --output_dir`) or a Hub dataset repo (`--push_to_hub`)."""
    if Path(path_or_hub_id).is_dir():
        info = read_info(path_or_hub_id)
        if info is None:
            raise TokenDatasetError(
                f"{path_or_hub_id!r} holds no {TOKEN_DATASET_FILE}: it is not a token dataset; make one with "
                "`hf-vq encode --output_dir ...`"
            )
        return datasets.load_from_disk(path_or_hub_id), info
    return _load_hub_token_dataset(path_or_hub_id, revision, token)


def _load_hub_token_dataset(
    repo_id: str, revision: str | None, token: str | None
) -> tuple[datasets.DatasetDict, TokenDatasetInfo]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, OfflineModeIsEnabled
    from huggingface_hub.utils import HFValidationError

    try:
        info_file = hf_hub_download(repo_id, TOKEN_DATASET_FILE, repo_type="dataset", revision=revision, token=token)
    except EntryNotFoundError as error:
        raise TokenDatasetError(
            f"the Hub dataset {repo_id!r} holds no {TOKEN_DATASET_FILE}: it is not a token dataset made by "
            "`hf-vq encode --push_to_hub`"
        ) from error
    except (HfHubHTTPError, OfflineModeIsEnabled, HFValidationError, OSError) as error:
        raise TokenDatasetError(
            f"--token_dataset {repo_id!r} is neither a local folder nor a dataset on the Hub that can be read "
            f"({' '.join(str(error).split())[:300]})"
        ) from error
    info = TokenDatasetInfo.from_dict(json.loads(Path(info_file).read_text()))
    dataset = datasets.load_dataset(repo_id, revision=revision, token=token)
    return dataset, info


def push_token_dataset(
    folder: str | os.PathLike, repo_id: str, token: str | None = None, private: bool = False
) -> str:
    """Push the token dataset saved in `folder` as the Hub dataset `repo_id`: the parquet shards and card that
    `DatasetDict.push_to_hub` writes, then, in one more commit, `token_dataset.json` and the card completed with
    what the tokens are (`huggingface_hub.DatasetCard`). Returns the URL of that commit."""
    from huggingface_hub import CommitOperationAdd, DatasetCard, HfApi

    info = read_info(folder)
    dataset = datasets.load_from_disk(str(folder))
    dataset.push_to_hub(repo_id, token=token, private=private, commit_message="Upload the token dataset")
    card = DatasetCard.load(repo_id, repo_type="dataset", token=token)  # keeps the features / configs it wrote
    card.data.tags = sorted(set(getattr(card.data, "tags", None) or []) | {"hf-vq", "image-tokens", "vq-tokens"})
    card.text = dataset_card_text(repo_id, info, dataset)
    operations = [
        CommitOperationAdd("README.md", str(card).encode()),
        CommitOperationAdd(TOKEN_DATASET_FILE, (Path(folder) / TOKEN_DATASET_FILE).read_bytes()),
    ]
    commit = HfApi(token=token).create_commit(
        repo_id, operations, repo_type="dataset", commit_message="Add the tokenizer record and the dataset card"
    )
    return commit.commit_url


def dataset_card_text(repo_id: str, info: TokenDatasetInfo, dataset: datasets.DatasetDict) -> str:
    """The body of a token dataset's card: what the rows are, which tokenizer made them, how to use them."""
    rows = ", ".join(f"{name}: {len(split):,}" for name, split in dataset.items())
    grid = " x ".join(str(side) for side in info.token_grid)
    source = info.source.get("dataset_name") or "a local image folder"
    commit = f" (commit `{info.tokenizer_commit_hash}`)" if info.tokenizer_commit_hash else ""
    labels = dataset[next(iter(dataset))].features.get(LABELS_COLUMN)
    label_text = f"`{LABELS_COLUMN}` (class names: {', '.join(labels.names)}), " if labels is not None else ""
    return f"""
# {repo_id.split("/")[-1]}

The images of {source} as token grids of a VQ image tokenizer, made with `hf-vq encode` (hf_vq).

- tokenizer: `{info.tokenizer_name_or_path}`{commit}, {info.codebook_size} codes, grid {grid}, images of
  {info.image_size} px; weights sha256 `{info.weights_sha256[:16]}...`
- columns: `{TOKENS_COLUMN}` ({info.token_dtype} ids), {label_text}one row per image
- splits: {rows}

`{TOKEN_DATASET_FILE}` records the tokenizer; `hf-vq train-prior` and `hf-vq train-classifier` read the dataset with
`--token_dataset {repo_id}` and refuse it with another tokenizer.

```python
from datasets import load_dataset

tokens = load_dataset("{repo_id}", split="train").with_format("torch")
tokens[0]["{TOKENS_COLUMN}"].shape  # ({", ".join(str(side) for side in info.token_grid)})
```
"""


__all__ = [
    "LABELS_COLUMN",
    "TOKENS_COLUMN",
    "TOKEN_DATASET_FILE",
    "TokenDatasetError",
    "TokenDatasetInfo",
    "TokenizerMismatchError",
    "load_token_dataset",
    "module_fingerprint",
    "push_token_dataset",
    "read_info",
    "save_token_dataset",
    "token_dtype",
    "token_features",
    "write_info",
]
