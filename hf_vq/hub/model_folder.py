"""Reading and checking a saved model folder before it is shared (see the contract in `hf_vq.hub`)."""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import IncompleteModelFolderError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PROCESSOR_NAME = "preprocessor_config.json"
METRICS_NAME = "metrics.json"
TRAINING_CONFIG_NAMES = ("training_config.json", "training_config.yaml", "training_config.yml")
SAMPLES_NAME = "samples.png"
# Config fields that name the tokenizer a classifier consumes (a Hub repo id or a local folder).
TOKENIZER_REFERENCE_KEYS = ("tokenizer_name_or_path",)
# Files a model repo needs or documents; anything else in the folder (checkpoints, logs, optimizer
# states) stays local. README.md is not listed: the card is always generated afresh.
SHARED_SUFFIXES = (".json", ".safetensors", ".py", ".yaml", ".yml", ".png", ".txt", ".jinja")
REPO_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


@dataclass
class ModelFolder:
    """What a saved model folder holds, read once and checked.

    Example:
        >>> folder = load_model_folder("outputs/vqgan")
        >>> folder.kind, sorted(folder.metrics)
        ('tokenizer', ['codebook_usage', 'dataset', 'perplexity', 'psnr', 'ssim'])
    """

    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    training_config: dict[str, Any] = field(default_factory=dict)
    processor_config: dict[str, Any] | None = None
    remote_code_files: list[str] = field(default_factory=list)
    has_samples: bool = False

    @property
    def kind(self) -> str:
        """"classifier", "tokenizer" or "model" (anything else): picks the card template."""
        architectures = self.config.get("architectures") or []
        if self.tokenizer_reference or any(name.endswith("ForImageClassification") for name in architectures):
            return "classifier"
        if "codebook_size" in self.config or self.config.get("model_type") == "vqgan":
            return "tokenizer"
        return "model"

    @property
    def tokenizer_reference(self) -> str | None:
        for key in TOKENIZER_REFERENCE_KEYS:
            if self.config.get(key):
                return str(self.config[key])
        return None

    @property
    def uses_remote_code(self) -> bool:
        return bool(self.config.get("auto_map") or (self.processor_config or {}).get("auto_map"))

    def files_to_share(self) -> list[Path]:
        return sorted(
            p for p in self.path.iterdir()
            if p.is_file() and p.suffix in SHARED_SUFFIXES and not p.name.startswith(".") and p.name != "README.md"
        )


def looks_like_repo_id(value: str) -> bool:
    """True for `namespace/name` strings the Hub accepts (and that are not an existing local folder)."""
    return bool(REPO_ID_PATTERN.match(value)) and "--" not in value and ".." not in value and not Path(value).exists()


def load_model_folder(model_dir: str | Path) -> ModelFolder:
    """Read `model_dir` and check that `from_pretrained` can load it once pushed.

    Every problem found is reported at once, so a user fixes the folder in one go.
    """
    path = Path(model_dir)
    if not path.is_dir():
        raise IncompleteModelFolderError(f"Model folder {str(path)!r} does not exist or is not a folder.")
    problems: list[str] = []
    config = _read_json(path / CONFIG_NAME, problems, required=True) or {}
    if config and "model_type" not in config:
        problems.append(f"{CONFIG_NAME} has no 'model_type': save the model with `model.save_pretrained(folder)`.")
    _check_weights(path, problems)
    processor_config = _read_json(path / PROCESSOR_NAME, problems, required=False)
    remote_code_files = _check_remote_code(path, [config, processor_config or {}], problems)
    metrics = _read_metrics(path / METRICS_NAME, problems)
    training_config = _read_training_config(path, problems)
    if problems:
        listing = "\n".join(f"  - {problem}" for problem in problems)
        raise IncompleteModelFolderError(f"Model folder {str(path)!r} cannot be pushed:\n{listing}")
    return ModelFolder(path, config, metrics, training_config, processor_config, remote_code_files, (path / SAMPLES_NAME).is_file())


def _read_json(file: Path, problems: list[str], required: bool) -> dict | None:
    if not file.is_file():
        if required:
            problems.append(f"missing {file.name}: save the model with `model.save_pretrained(folder)`.")
        return None
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        problems.append(f"{file.name} is not valid JSON ({error}).")
        return None
    if not isinstance(value, dict):
        problems.append(f"{file.name} must hold a JSON object, not {type(value).__name__}.")
        return None
    return value


def _check_weights(path: Path, problems: list[str]) -> None:
    if (path / WEIGHTS_INDEX_NAME).is_file():
        index = _read_json(path / WEIGHTS_INDEX_NAME, problems, required=True) or {}
        shards = sorted(set((index.get("weight_map") or {}).values()))
        if not shards:
            problems.append(f"{WEIGHTS_INDEX_NAME} lists no weight files.")
        for shard in shards:
            _check_safetensors(path / shard, problems)
    elif (path / WEIGHTS_NAME).is_file():
        _check_safetensors(path / WEIGHTS_NAME, problems)
    else:
        found = ", ".join(p.name for p in path.glob("*.bin")) or "none"
        problems.append(f"missing {WEIGHTS_NAME} (weights are shared as safetensors only; .bin files found: {found}).")


def _check_safetensors(file: Path, problems: list[str]) -> None:
    """Reads only the header: catches a truncated or half-written weight file without loading tensors."""
    if not file.is_file():
        problems.append(f"missing weight file {file.name}.")
        return
    with file.open("rb") as handle:
        prefix = handle.read(8)
        header_size = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else -1
        header = handle.read(header_size) if 0 < header_size < 100_000_000 else b""
    try:
        tensors = json.loads(header)
        data_size = max((entry["data_offsets"][1] for name, entry in tensors.items() if name != "__metadata__"), default=0)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, IndexError, AttributeError):
        problems.append(f"{file.name} is not a readable safetensors file (truncated or corrupt?).")
        return
    if file.stat().st_size < 8 + header_size + data_size:
        problems.append(f"{file.name} is shorter than its header says (truncated?).")


def _check_remote_code(path: Path, configs: list[dict], problems: list[str]) -> list[str]:
    """`auto_map` entries name the modules `trust_remote_code=True` will download: they must be here."""
    modules = set()
    for config in configs:
        for reference in (config.get("auto_map") or {}).values():
            for item in reference if isinstance(reference, list) else [reference]:
                if item:
                    modules.add(item.split("--")[-1].rsplit(".", 1)[0] + ".py")
    for module in sorted(modules):
        if not (path / module).is_file():
            problems.append(f"missing {module}, named in auto_map: save with `register_for_auto_class()` called first.")
    return sorted(p.name for p in path.glob("*.py")) if modules else []


def _read_metrics(file: Path, problems: list[str]) -> dict[str, Any]:
    metrics = _read_json(file, problems, required=False) or {}
    for key, value in metrics.items():
        if isinstance(value, (dict, list)):
            problems.append(f"{METRICS_NAME} must be flat: '{key}' holds a {type(value).__name__}.")
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{METRICS_NAME}: '{key}' is {value}; write null for a metric that was not measured.")
    return metrics


def _read_training_config(path: Path, problems: list[str]) -> dict[str, Any]:
    for name in TRAINING_CONFIG_NAMES:
        file = path / name
        if not file.is_file():
            continue
        if name.endswith(".json"):
            return _read_json(file, problems, required=True) or {}
        try:
            value = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            problems.append(f"{name} is not valid YAML ({error}).")
            return {}
        if not isinstance(value, dict):
            problems.append(f"{name} must hold a mapping of flag names to values.")
            return {}
        return value
    return {}
