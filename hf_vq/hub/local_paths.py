"""Keeping the paths of the machine a model was trained on out of what is uploaded.

Training runs record their flags and data sources (`training_config.json`, `metrics.json`, a classifier's
`tokenizer_name_or_path`) as the local paths they were given. On the Hub those paths mean nothing, and they tell
the world the trainer's directory layout, so the staged copy of every JSON file is rewritten: a path that names a
model of the pushed set becomes its Hub id, any other absolute path its last component. A final scan of the
staged files refuses an upload that would still carry one of the local folders.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import HubPushError

TEXT_SUFFIXES = (".json", ".md", ".yaml", ".yml", ".txt", ".jinja")


def without_local_paths(value: Any, hub_ids: dict[Path, str] | None = None) -> Any:
    """`value` (JSON-like) with each string that is an absolute (or `~`) path replaced: by the Hub id `hub_ids` gives
    for the folder it names, else by the path's last component (`/data/fashion-mnist` -> `fashion-mnist`)."""
    if isinstance(value, dict):
        return {key: without_local_paths(item, hub_ids) for key, item in value.items()}
    if isinstance(value, list):
        return [without_local_paths(item, hub_ids) for item in value]
    if not isinstance(value, str) or not _is_local_path(value):
        return value
    resolved = Path(value).expanduser().resolve()
    for folder, hub_id in (hub_ids or {}).items():
        if resolved == folder.resolve():
            return hub_id
    return resolved.name


def hub_ids_for(local: str | os.PathLike | None, hub_id: str | None) -> dict[Path, str]:
    """The `hub_ids` mapping for one local folder pushed as `hub_id` (empty when either is missing)."""
    if not local or not hub_id or not Path(local).expanduser().exists():
        return {}
    return {Path(local).expanduser().resolve(): hub_id}


def rewrite_json_without_local_paths(file: Path, hub_ids: dict[Path, str], extra: dict[str, Any] | None = None) -> None:
    """Rewrite a staged JSON file (a hard link to the user's file: unlinked first, never written through)."""
    content = json.loads(file.read_text(encoding="utf-8"))
    cleaned = without_local_paths(content, hub_ids) | (extra or {}) if isinstance(content, dict) else without_local_paths(content, hub_ids)
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
            "Refusing to upload local paths of this machine:\n" + "\n".join(f"  - {item}" for item in found)
            + "\nRemove them from the model folder's JSON files (or report this as an hf_vq bug)."
        )


def _is_local_path(value: str) -> bool:
    return value.startswith("~") or (os.path.isabs(value) and len(Path(value).parts) > 1)


__all__ = ["check_no_local_paths", "hub_ids_for", "rewrite_json_without_local_paths", "without_local_paths"]
