"""Is the tokenizer on the Hub the one a classifier or prior was trained on?

`hf-vq push --tokenizer_hub_id ORG/NAME` names the Hub repo of a tokenizer that the model's config knows only as a
local folder. Pushed against another tokenizer (a later training run, another codebook size), the model would read
codes it has never seen and give confident nonsense. So before anything is uploaded, the tokenizer the model was
trained on (the local folder its config names, or the copy a pipeline carries) is compared with the Hub repo at the
revision that will be pinned: same config (bookkeeping fields aside) and the same tensors, by SHA-256.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
from safetensors import safe_open

from .errors import TokenizerMismatchError
from .local_paths import without_local_paths
from .model_folder import (
    CONFIG_NAME,
    TOKENIZER_REFERENCE_KEYS,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
    ModelFolder,
    looks_like_repo_id,
)

# Config fields that say how or where a model was saved, not what it computes.
BOOKKEEPING_KEYS = frozenset({"transformers_version", "_name_or_path", "_commit_hash", "dtype", "torch_dtype"})


def local_tokenizer_of(folder: ModelFolder) -> Path | None:
    """The tokenizer folder a model was trained on, when it is on this machine: a pipeline's own tokenizer component
    (what the pipeline really runs), else the local folder its config names."""
    for name, config in folder.components.items():
        # the tokenizer has a codebook and names no tokenizer (the prior over its codes has both)
        reads_a_tokenizer = any(config.get(key) for key in TOKENIZER_REFERENCE_KEYS)
        if "codebook_size" in config and not reads_a_tokenizer and (folder.path / name / CONFIG_NAME).is_file():
            return folder.path / name
    reference = folder.tokenizer_reference
    if reference and not looks_like_repo_id(reference) and (Path(reference).expanduser() / CONFIG_NAME).is_file():
        return Path(reference).expanduser()
    return None


def check_same_tokenizer(
    api: HfApi, folder: ModelFolder, tokenizer_hub_id: str, revision: str, token: str | None
) -> None:
    """Raise TokenizerMismatchError unless `tokenizer_hub_id` at `revision` is the tokenizer `folder` was trained on.

    A model whose config already names `tokenizer_hub_id` (trained on it from the Hub) needs no check. A model that
    names another Hub repo, or a local folder no longer on this machine, cannot be checked and is refused.
    """
    reference = folder.tokenizer_reference
    if reference == tokenizer_hub_id:
        return
    local = local_tokenizer_of(folder)
    if local is None:
        trained_on = (
            f"the Hub tokenizer {reference!r}"
            if reference and looks_like_repo_id(reference)
            else (f"the local folder {reference!r}, which is no longer on this machine")
        )
        raise TokenizerMismatchError(
            f"--tokenizer_hub_id {tokenizer_hub_id}: the {folder.kind} in {str(folder.path)!r} was trained on "
            f"{trained_on}, so it cannot be checked against {tokenizer_hub_id}. Push it against the tokenizer it was "
            "trained on (restore that folder, or name that repo)."
        )
    expected = tokenizer_fingerprint(local / CONFIG_NAME, _weight_files(local))
    actual = _hub_fingerprint(api, tokenizer_hub_id, revision, token)
    differences = [part for part in ("config", "weights") if expected[part] != actual[part]]
    if differences:
        raise TokenizerMismatchError(
            f"--tokenizer_hub_id {tokenizer_hub_id} (revision {revision}) is not the tokenizer the {folder.kind} in "
            f"{str(folder.path)!r} was trained on ({local}): the {' and '.join(differences)} differ. Push that "
            f"tokenizer first (`hf-vq push-set --tokenizer_dir {local} ...` pushes both), or name the repo (and "
            "revision) it was pushed to. Nothing was uploaded."
        )


def tokenizer_fingerprint(config_file: Path, weight_files: list[Path]) -> dict[str, str]:
    """SHA-256 of the config (without bookkeeping fields or local paths) and of every tensor, by name."""
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config = {key: value for key, value in config.items() if key not in BOOKKEEPING_KEYS}
    config_digest = hashlib.sha256(json.dumps(_comparable(config), sort_keys=True).encode()).hexdigest()
    weights = hashlib.sha256()
    tensors: dict[str, str] = {}
    for file in weight_files:
        with safe_open(str(file), framework="numpy") as handle:
            for name in handle.keys():
                array = handle.get_tensor(name)
                tensors[name] = hashlib.sha256(f"{array.dtype}{array.shape}".encode() + array.tobytes()).hexdigest()
    for name in sorted(tensors):
        weights.update(f"{name}:{tensors[name]};".encode())
    return {"config": config_digest, "weights": weights.hexdigest()}


def _comparable(config: dict[str, Any]) -> Any:
    # The uploaded copy of a config had its local paths rewritten: compare both sides in that form.
    return without_local_paths(config)


def _weight_files(folder: Path) -> list[Path]:
    index = folder / WEIGHTS_INDEX_NAME
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        return [folder / shard for shard in shards]
    return [folder / WEIGHTS_NAME]


def _hub_fingerprint(api: HfApi, repo_id: str, revision: str, token: str | None) -> dict[str, str]:
    """The fingerprint of the tokenizer repo at `revision` (its config and weights are downloaded to the cache)."""

    def download(filename: str) -> Path:
        return Path(hf_hub_download(repo_id, filename, revision=revision, token=token, endpoint=api.endpoint))

    try:
        config_file = download(CONFIG_NAME)
        try:
            index = download(WEIGHTS_INDEX_NAME)
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            weight_files = [download(shard) for shard in shards]
        except EntryNotFoundError:
            weight_files = [download(WEIGHTS_NAME)]
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as error:
        raise TokenizerMismatchError(
            f"--tokenizer_hub_id {repo_id}: no tokenizer config and weights at revision {revision} on the Hub "
            f"({type(error).__name__}). Push the tokenizer first, or check the repo id."
        ) from error
    return tokenizer_fingerprint(config_file, weight_files)


__all__ = ["check_same_tokenizer", "local_tokenizer_of", "tokenizer_fingerprint"]
