"""Keeping the paths of the machine a model was trained on out of what is uploaded.

Training runs record their flags and data sources (`training_config.json`, `metrics.json`, a classifier's
`tokenizer_name_or_path`) as the local paths they were given. On the Hub those paths mean nothing, and they tell
the world the trainer's directory layout, so the staged copy of every JSON file is rewritten: a path that names a
model of the pushed set becomes its Hub id, any other path (absolute, relative, `~`, Windows-style, at any depth of
the JSON) its last component. A final scan of the
staged files refuses an upload that would still carry one of the local folders.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path, PureWindowsPath
from typing import Any

from .errors import HubPushError

TEXT_SUFFIXES = (".json", ".md", ".yaml", ".yml", ".txt", ".jinja")
# Fields whose value is always a path (`train_data_dir`, `logging_dir`, `cache_dir`, `config_file`...).
PATH_ONLY_KEY = re.compile(r"(^|_)(dir|dirs|path|paths|file|files)$")
# Fields that name a model or data set by Hub id or by local folder: a path only when it exists here.
REFERENCE_KEY = re.compile(r"(name_or_path|^tokenizer|^model|^dataset|dataset_name|token_dataset|checkpoint)$")
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)


def without_local_paths(value: Any, hub_ids: dict[Path, str] | None = None, key: str | None = None) -> Any:
    """`value` (JSON-like, nested dicts and lists included) with each string that is a local path replaced: by the
    Hub id `hub_ids` gives for the folder it names, else by the path's last component (`/data/fashion-mnist`,
    `data/fashion-mnist`, `~/fashion-mnist`, `C:\\data\\fashion-mnist` -> `fashion-mnist`). `key` is the field
    the value is under: see `is_local_path`."""
    if isinstance(value, dict):
        return {name: without_local_paths(item, hub_ids, str(name)) for name, item in value.items()}
    if isinstance(value, list):
        return [without_local_paths(item, hub_ids, key) for item in value]
    if not isinstance(value, str) or not is_local_path(value, key):
        return value
    if _is_windows_path(value):
        return PureWindowsPath(value).name
    resolved = Path(value).expanduser().resolve()
    for folder, hub_id in (hub_ids or {}).items():
        if resolved == folder.resolve():
            return hub_id
    return resolved.name or value.strip("/\\")


def is_local_path(value: str, key: str | None = None) -> bool:
    """Whether `value` names a file or folder of this machine rather than a Hub id or a plain setting.

    Always: absolute, `~`, `./` or `../` paths, Windows paths (`C:\\x`, `\\\\server\\x`, any backslash), and
    paths of more than two parts (`out/tok/final`: a Hub id has one slash). Under a field that only holds paths
    (`*_dir`, `*_path`, `*_file`: `"train_data_dir": "data"`): any value. Otherwise `namespace/name` or a bare name
    is a Hub id or a setting, unless it exists here relative to the working folder (`"tokenizer": "out/tok"`).
    """
    if not value or _URL.match(value):
        return False
    if value.startswith(("~", "./", "../", ".\\", "..\\")) or value in (".", "..") or _is_windows_path(value):
        return True
    if os.path.isabs(value):
        return len(Path(value).parts) > 1
    if key and PATH_ONLY_KEY.search(key) and not key.endswith("name_or_path"):
        return True
    if value.count("/") > 1:
        return True
    return ("/" in value or (key is not None and REFERENCE_KEY.search(key) is not None)) and os.path.exists(value)


def hub_ids_for(local: str | os.PathLike | None, hub_id: str | None) -> dict[Path, str]:
    """The `hub_ids` mapping for one local folder pushed as `hub_id` (empty when either is missing)."""
    if not local or not hub_id or not Path(local).expanduser().exists():
        return {}
    return {Path(local).expanduser().resolve(): hub_id}


def rewrite_json_without_local_paths(
    file: Path, hub_ids: dict[Path, str], extra: dict[str, Any] | None = None
) -> None:
    """Rewrite a staged JSON file (a hard link to the user's file: unlinked first, never written through)."""
    content = json.loads(file.read_text(encoding="utf-8"))
    cleaned = (
        without_local_paths(content, hub_ids) | (extra or {})
        if isinstance(content, dict)
        else without_local_paths(content, hub_ids)
    )
    if cleaned == content:
        return
    file.unlink()
    file.write_text(json.dumps(cleaned, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def check_no_local_paths(staging: Path, local_folders: list[Path]) -> None:
    """Refuse to upload a staged text file that still names one of `local_folders` (or the home or temp folder)."""
    roots = {str(path.resolve()) for path in local_folders} | {str(Path.home()), tempfile.gettempdir(), os.getcwd()}
    roots = sorted((root for root in roots if len(Path(root).parts) > 1), key=len, reverse=True)
    found = []
    for file in sorted(staging.rglob("*")):
        if file.is_file() and file.suffix in TEXT_SUFFIXES:
            text = file.read_text(encoding="utf-8", errors="replace")
            found += [f"{file.relative_to(staging)} contains {root}" for root in roots if root in text]
    if found:
        raise HubPushError(
            "Refusing to upload local paths of this machine:\n"
            + "\n".join(f"  - {item}" for item in found)
            + "\nRemove them from the model folder's JSON files (or report this as an hf_vq bug)."
        )


def _is_windows_path(value: str) -> bool:
    return bool(_WINDOWS_DRIVE.match(value)) or "\\" in value


__all__ = [
    "check_no_local_paths",
    "hub_ids_for",
    "is_local_path",
    "rewrite_json_without_local_paths",
    "without_local_paths",
]
