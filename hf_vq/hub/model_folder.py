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
PIPELINE_INDEX_NAME = "model_index.json"
WEIGHTS_NAME = "model.safetensors"
DIFFUSERS_WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PROCESSOR_NAME = "preprocessor_config.json"
METRICS_NAME = "metrics.json"
TRAINING_CONFIG_NAMES = ("training_config.json", "training_config.yaml", "training_config.yml")
SAMPLES_NAME = "samples.png"
# Config fields that name the tokenizer a classifier or prior consumes (a Hub repo id or a local folder), and the
# field that pins its revision (a commit id, written at push time).
TOKENIZER_REFERENCE_KEYS = ("tokenizer_name_or_path",)
TOKENIZER_REVISION_KEY = "tokenizer_revision"
# What a push uploads: an explicit allow-list of what the artifact needs (weights, configs, processor, code, metrics,
# sample image). Anything else in the folder (checkpoints, logs, optimizer states, notes, a stray credentials.yaml)
# stays local, as do symbolic links (their target could be any file of the machine) and hidden files or folders at
# any depth (`.ipynb_checkpoints/`, `.cache/`). README.md is not listed: the card is always generated afresh.
SHARED_NAMES = frozenset(
    {
        CONFIG_NAME,
        PIPELINE_INDEX_NAME,
        WEIGHTS_NAME,
        DIFFUSERS_WEIGHTS_NAME,
        WEIGHTS_INDEX_NAME,
        "diffusion_pytorch_model.safetensors.index.json",
        PROCESSOR_NAME,
        METRICS_NAME,
        *TRAINING_CONFIG_NAMES,
        SAMPLES_NAME,
        "generation_config.json",
        "scheduler_config.json",
    }
)
CODE_SUFFIX = ".py"  # remote code: the modules `trust_remote_code=True` imports (and the ones they import)
REPO_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


@dataclass
class ModelFolder:
    """What a saved model folder holds, read once and checked.

    A folder is a transformers model (`config.json` at the top) or a diffusers pipeline (`model_index.json` at the
    top, one subfolder per component, e.g. a class-conditional prior: `vqgan/`, `transformer/`, `scheduler/`).

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
    # Pipelines only: each component's config (config.json or scheduler_config.json), by subfolder name.
    components: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def is_pipeline(self) -> bool:
        return (self.path / PIPELINE_INDEX_NAME).is_file()

    @property
    def kind(self) -> str:
        """ "classifier", "tokenizer", "prior" (a generation pipeline over a tokenizer's codes) or "model" (anything
        else): picks the card template."""
        if self.is_pipeline:
            return (
                "prior"
                if self.tokenizer_reference or any("num_classes" in c for c in self.components.values())
                else "model"
            )
        architectures = self.config.get("architectures") or []
        if self.tokenizer_reference or any(name.endswith("ForImageClassification") for name in architectures):
            return "classifier"
        if "codebook_size" in self.config or self.config.get("model_type") == "vqgan":
            return "tokenizer"
        return "model"

    @property
    def tokenizer_reference(self) -> str | None:
        """The tokenizer this model reads, as recorded in its config (or, for a pipeline, in a component's)."""
        for config in (self.config, *self.components.values()):
            for key in TOKENIZER_REFERENCE_KEYS:
                if config.get(key):
                    return str(config[key])
        if self.is_pipeline and self.metrics.get("tokenizer"):
            return str(self.metrics["tokenizer"])
        return None

    @property
    def uses_remote_code(self) -> bool:
        configs = [self.config, self.processor_config or {}, *self.components.values()]
        return any(config.get("auto_map") for config in configs) or bool(self.remote_code_files)

    def files_to_share(self) -> list[Path]:
        """Paths relative to the folder of the files a push uploads (see `SHARED_NAMES`): the allow-listed files at the
        top and in each pipeline component's subfolder, and the weight shards an index names.

        Raises IncompleteModelFolderError when a file the artifact needs is a symbolic link: uploading its target
        could publish any file of the machine, and leaving it out would publish a model that does not load.
        """
        shared, links = [], []
        for folder in [self.path, *(self.path / name for name in sorted(self.components))]:
            if folder.is_symlink():
                links.append(folder.relative_to(self.path))
                continue
            allowed = SHARED_NAMES | _shard_names(folder)
            for entry in sorted(folder.iterdir()):
                if not _is_shared(entry, allowed):
                    continue
                (links if entry.is_symlink() else shared).append(entry.relative_to(self.path))
        if links:
            raise IncompleteModelFolderError(
                f"Model folder {str(self.path)!r} cannot be pushed: " + ", ".join(map(str, links)) + " is a symbolic "
                "link, and a push never uploads one (its target could be any file of this machine). Replace it by a "
                'copy of what it points to (`cp --remove-destination "$(readlink -f LINK)" LINK`), then push again.'
            )
        return sorted(shared)

    def files_left_out(self) -> list[Path]:
        """Paths relative to the folder of the files and folders (each counted once) that a push leaves here."""
        shared = set(self.files_to_share())
        components = {Path(name) for name in self.components}
        left_out = []
        for folder in [self.path, *(self.path / name for name in sorted(self.components))]:
            for entry in sorted(folder.iterdir()):
                relative = entry.relative_to(self.path)
                if relative not in shared and relative not in components:
                    left_out.append(relative)
        return left_out


def _is_shared(entry: Path, allowed: frozenset[str] | set[str]) -> bool:
    """An allow-listed file name (or code), not hidden; a link is reported by the caller, never followed."""
    if entry.name.startswith(".") or entry.name == "README.md":
        return False
    if not (entry.is_symlink() or entry.is_file()):
        return False  # a folder: only pipeline components' folders are read, by name
    return entry.name in allowed or entry.suffix == CODE_SUFFIX


def _shard_names(folder: Path) -> set[str]:
    """The weight files a sharded checkpoint's index names (`model-00001-of-00002.safetensors`...)."""
    names: set[str] = set()
    for index_name in (WEIGHTS_INDEX_NAME, "diffusion_pytorch_model.safetensors.index.json"):
        index = folder / index_name
        if index.is_file() and not index.is_symlink():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map") or {}
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                continue
            names |= {Path(str(file)).name for file in weight_map.values() if str(file).endswith(".safetensors")}
    return names


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
    components: dict[str, dict[str, Any]] = {}
    processor_config = None
    if (path / PIPELINE_INDEX_NAME).is_file():
        config = _read_json(path / PIPELINE_INDEX_NAME, problems, required=True) or {}
        components = _check_pipeline(path, config, problems)
        remote_code_files = sorted(p.name for p in path.glob("*.py"))
    else:
        config = _read_json(path / CONFIG_NAME, problems, required=True) or {}
        if config and "model_type" not in config:
            problems.append(f"{CONFIG_NAME} has no 'model_type': save the model with `model.save_pretrained(folder)`.")
        _check_weights(path, problems)
        processor_config = _read_json(path / PROCESSOR_NAME, problems, required=False)
        remote_code_files = _check_remote_code(path, [config, processor_config or {}], problems)
        _check_loadable_without_hf_vq(config, processor_config, problems)
    metrics = _read_metrics(path / METRICS_NAME, problems)
    training_config = _read_training_config(path, problems)
    if problems:
        listing = "\n".join(f"  - {problem}" for problem in problems)
        raise IncompleteModelFolderError(f"Model folder {str(path)!r} cannot be pushed:\n{listing}")
    folder = ModelFolder(
        path,
        config,
        metrics,
        training_config,
        processor_config,
        remote_code_files,
        (path / SAMPLES_NAME).is_file(),
        components,
    )
    folder.files_to_share()  # a needed file that is a link is refused now, before any request
    return folder


def is_builtin_model_type(model_type: str | None) -> bool:
    """Whether transformers itself knows `model_type` (so the model loads without remote code)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return model_type in CONFIG_MAPPING_NAMES


def _check_loadable_without_hf_vq(config: dict, processor_config: dict | None, problems: list[str]) -> None:
    """hf_vq is on no package index: what a Hub user loads must be transformers' own or carried as remote code."""
    model_type = config.get("model_type")
    if model_type and not config.get("auto_map") and not is_builtin_model_type(model_type):
        problems.append(
            f"{CONFIG_NAME} has model_type {model_type!r}, which transformers does not know, and no auto_map: Hub "
            "users could not load it. Save the model after `register_for_auto_class()` (hf_vq's models do this) so "
            "that its code travels with it."
        )
    processor_type = (processor_config or {}).get("image_processor_type")
    if processor_config is not None and not processor_config.get("auto_map") and processor_type:
        import transformers

        if not hasattr(transformers, processor_type.removesuffix("Pil")) and not hasattr(transformers, processor_type):
            problems.append(
                f"{PROCESSOR_NAME} names {processor_type}, which transformers does not know, and no auto_map: save "
                "the processor with `processor.save_pretrained(folder)` after `register_for_auto_class()` so that "
                "image_processing_*.py travels with it."
            )


def _check_pipeline(path: Path, index: dict, problems: list[str]) -> dict[str, dict[str, Any]]:
    """Each component named in model_index.json is a subfolder with its config, and weights where it has a model."""
    components = {}
    for name, value in index.items():
        if name.startswith("_") or not (isinstance(value, list) and len(value) == 2 and value[0] is not None):
            continue
        folder = path / name
        if not folder.is_dir():
            problems.append(f"{PIPELINE_INDEX_NAME} names the component {name!r} but there is no {name}/ subfolder.")
            continue
        config_file = next((p for p in (folder / CONFIG_NAME, folder / "scheduler_config.json") if p.is_file()), None)
        if config_file is None:
            problems.append(
                f"{name}/ has no config.json or scheduler_config.json: save the component with save_pretrained."
            )
            continue
        components[name] = _read_json(config_file, problems, required=True) or {}
        if (
            config_file.name == CONFIG_NAME
            and not (folder / WEIGHTS_NAME).is_file()
            and not (folder / DIFFUSERS_WEIGHTS_NAME).is_file()
            and not (folder / WEIGHTS_INDEX_NAME).is_file()
        ):
            problems.append(f"{name}/ has a config but no weights ({WEIGHTS_NAME} or {DIFFUSERS_WEIGHTS_NAME}).")
        for weights in (folder / WEIGHTS_NAME, folder / DIFFUSERS_WEIGHTS_NAME):
            if weights.is_file():
                _check_safetensors(weights, problems)
    if not components:
        problems.append(
            f"{PIPELINE_INDEX_NAME} names no components: save the pipeline with `pipeline.save_pretrained(folder)`."
        )
    return components


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
        data_size = max(
            (entry["data_offsets"][1] for name, entry in tensors.items() if name != "__metadata__"), default=0
        )
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
            problems.append(
                f"missing {module}, named in auto_map: save with `register_for_auto_class()` called first."
            )
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
