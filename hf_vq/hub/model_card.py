"""Model cards for pushed models, rendered from the Jinja templates in `model_cards/`.

The YAML metadata (library, tags, datasets, license, pipeline tag, base model, model-index) is built
with huggingface_hub's `ModelCardData` / `EvalResult`, so the Hub reads it as it reads any card; the
Markdown body comes from `model_cards/<kind>.md.j2`. Only what the run wrote down is shown: a metric
absent from `metrics.json` appears nowhere, neither in the table nor in the model-index.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .errors import InvalidCardMetadataError
from .model_folder import ModelFolder, looks_like_repo_id



def _find_template_dir() -> Path:
    """`model_cards/` beside the package in a source checkout (editable install), else the copy that a
    regular install puts under `<prefix>/share/hf_vq/model_cards` (setup.cfg's data_files)."""
    candidates = [Path(__file__).resolve().parents[2] / "model_cards", Path(sys.prefix) / "share" / "hf_vq" / "model_cards"]
    return next((path for path in candidates if path.is_dir()), candidates[0])


TEMPLATE_DIR = _find_template_dir()
HUB_URL = "https://huggingface.co"
CLASSIFIERS_START = "<!-- hf_vq:classifiers:start -->"
CLASSIFIERS_END = "<!-- hf_vq:classifiers:end -->"
NO_CLASSIFIERS_YET = "None published yet."


@dataclass(frozen=True)
class MetricSpec:
    key: str  # name in metrics.json and metric `type` in the model-index
    label: str
    description: str
    percent: bool = False


METRICS = (
    MetricSpec("psnr", "PSNR (dB)", "reconstruction peak signal-to-noise ratio, higher is better"),
    MetricSpec("ssim", "SSIM", "reconstruction structural similarity, higher is better"),
    MetricSpec("rfid", "rFID", "Frechet Inception distance of reconstructions, lower is better"),
    MetricSpec("codebook_usage", "Codebook usage", "share of codes used on the evaluation set", percent=True),
    MetricSpec("perplexity", "Codebook perplexity", "exp(entropy) of code usage; the codebook size at most"),
    MetricSpec("accuracy", "Accuracy", "top-1 classification accuracy", percent=True),
    MetricSpec("top5_accuracy", "Top-5 accuracy", "top-5 classification accuracy", percent=True),
)
# Quantizer options as named by hf_vq.quantization.VectorQuantizer; configs may prefix them with "quantizer_".
QUANTIZER_METHODS = (
    ("affine", lambda v: v not in (None, False, "none", ""), "Affine re-parameterised codes (mode: {v})"),
    ("sync_nu", lambda v: bool(v) and v > 0, "Synchronized update (nu = {v})"),
    ("alternating", bool, "Alternating optimisation of the codebook"),
    ("beta", lambda v: v is not None, "Commitment loss with beta = {v}"),
    ("kmeans_init", bool, "k-means++ codebook initialisation"),
    ("replace_freq", lambda v: bool(v) and v > 0, "Dead-code replacement every {v} steps"),
    ("num_groups", lambda v: bool(v) and v > 1, "Grouped quantization ({v} groups)"),
    ("num_quantizers", lambda v: bool(v) and v > 1, "Residual quantization ({v} levels)"),
    ("distance", lambda v: v is not None, "Distance: {v}"),
)
ARCHITECTURE_KEYS = ("codebook_size", "embed_dim", "quantizer_type", "image_size", "num_channels", "block_out_channels",
                     "latent_channels", "grid_size", "patch_size",
                     "hidden_size", "num_hidden_layers", "num_attention_heads", "num_labels")
COMPUTE_KEYS = (("hardware", "Hardware"), ("num_processes", "Processes"), ("mixed_precision", "Mixed precision"),
                ("train_steps", "Training steps"), ("max_train_steps", "Training steps"),
                ("train_batch_size", "Batch size per process"), ("train_seconds", "Training time (s)"),
                ("train_hours", "Training time (h)"))
SECRET_KEY = re.compile(r"(^|_)(token|password|secret|api_key)$", re.I)
PIPELINE_TAGS = {"tokenizer": "image-feature-extraction", "classifier": "image-classification", "model": None}
KIND_TAGS = {
    "tokenizer": ["hf_vq", "image-tokenizer", "vqgan", "vector-quantization"],
    "classifier": ["hf_vq", "image-classification", "image-tokens"],
    "model": ["hf_vq"],
}
# The Hub's license identifiers most likely here; anything else must be "other" with a name and a link.
KNOWN_LICENSES = {
    "apache-2.0", "mit", "bsd-2-clause", "bsd-3-clause", "cc0-1.0", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0",
    "cc-by-nc-sa-4.0", "cc-by-nd-4.0", "gpl-3.0", "lgpl-3.0", "agpl-3.0", "mpl-2.0", "openrail", "creativeml-openrail-m",
    "bigscience-openrail-m", "llama3", "gemma", "unlicense", "other",
}
KNOWN_PIPELINE_TAGS = {
    "image-classification", "image-feature-extraction", "image-to-image", "unconditional-image-generation",
    "text-to-image", "image-segmentation", "object-detection", "zero-shot-image-classification", "feature-extraction",
    "mask-generation", "depth-estimation", "image-to-text",
}


def render_model_card(
    folder: ModelFolder,
    hub_model_id: str,
    *,
    license: str = "apache-2.0",  # noqa: A002 - the Hub's field name
    tokenizer_hub_id: str | None = None,
    endpoint: str = HUB_URL,
    template_dir: str | Path | None = None,
) -> ModelCard:
    """The card of `folder` as it will be pushed to `hub_model_id`, metadata checked.

    Example:
        >>> card = render_model_card(load_model_folder("outputs/vqgan"), "me/vqgan-fashion-mnist")
        >>> card.data.pipeline_tag, [r.metric_type for r in card.data.eval_results]
        ('image-feature-extraction', ['psnr', 'ssim', 'codebook_usage', 'perplexity'])
    """
    context = card_context(folder, hub_model_id, tokenizer_hub_id=tokenizer_hub_id, endpoint=endpoint)
    card_data = build_card_data(folder, hub_model_id, context, license=license)
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir or TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,  # a misspelt variable is a bug, not an empty string
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    text = environment.get_template(f"{folder.kind}.md.j2").render(card_data=card_data.to_yaml(), **context)
    try:
        card = ModelCard(text)
    except (ValueError, yaml.YAMLError) as error:
        raise InvalidCardMetadataError(f"The rendered model card does not parse back: {error}") from error
    validate_card_metadata(card)
    return card


def card_context(folder: ModelFolder, hub_model_id: str, *, tokenizer_hub_id: str | None, endpoint: str) -> dict[str, Any]:
    """Everything the templates show, computed here so that templates stay plain layout."""
    tokenizer = tokenizer_hub_id or folder.tokenizer_reference
    return {
        "repo_id": hub_model_id,
        "model_name": hub_model_id.split("/")[-1],
        "endpoint": endpoint.rstrip("/"),
        "kind": folder.kind,
        "model_type": folder.config.get("model_type"),
        "metrics": measured_metrics(folder.metrics),
        "dataset": _evaluation_dataset(folder),
        "split": folder.metrics.get("split"),
        "architecture": [(key, folder.config[key]) for key in ARCHITECTURE_KEYS if folder.config.get(key) is not None],
        "labels": _labels(folder.config) if folder.kind == "classifier" else [],
        "quantizer_methods": quantizer_methods(folder.config, folder.training_config),
        "compute": _compute(folder),
        "training_config_yaml": _training_config_yaml(folder.training_config),
        "has_samples": folder.has_samples,
        "has_processor": folder.processor_config is not None,
        "trust_remote_code": folder.uses_remote_code,
        "needs_hf_vq_import": not folder.uses_remote_code and not _is_builtin_model_type(folder.config.get("model_type")),
        "image_mode": "L" if folder.config.get("num_channels") == 1 else "RGB",
        "image_size": _image_size(folder),
        "num_channels": folder.config.get("num_channels", 3),
        "tokenizer_repo": tokenizer if tokenizer and looks_like_repo_id(tokenizer) else None,
        "tokenizer_local_path": tokenizer if tokenizer and not looks_like_repo_id(tokenizer) else None,
        "classifiers_start": CLASSIFIERS_START,
        "classifiers_end": CLASSIFIERS_END,
        "no_classifiers_yet": NO_CLASSIFIERS_YET,
    }


def build_card_data(folder: ModelFolder, hub_model_id: str, context: dict[str, Any], *, license: str) -> ModelCardData:  # noqa: A002
    pipeline_tag = PIPELINE_TAGS[folder.kind]
    dataset = context["dataset"]
    tags = list(KIND_TAGS[folder.kind]) + (["custom_code"] if folder.uses_remote_code else [])
    eval_results = None
    if dataset and context["metrics"]:
        # The model-index needs a task and a dataset; without a recorded dataset the metrics stay in the text only.
        eval_results = [
            EvalResult(
                task_type=pipeline_tag or "other", dataset_type=dataset, dataset_name=dataset, dataset_split=context["split"],
                metric_type=metric["key"], metric_name=metric["label"], metric_value=metric["value"],
            )
            for metric in context["metrics"]
        ]
    return ModelCardData(
        library_name="transformers",
        license=license,
        pipeline_tag=pipeline_tag,
        tags=tags,
        datasets=[dataset] if dataset and looks_like_repo_id(dataset) else None,
        base_model=context["tokenizer_repo"] if folder.kind == "classifier" else None,
        model_name=hub_model_id,
        eval_results=eval_results,
        metrics=[metric["key"] for metric in context["metrics"]] or None,
    )


def measured_metrics(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The known metrics that the run measured, in display order, each with its value formatted."""
    rows = []
    for spec in METRICS:
        value = metrics.get(spec.key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        shown = f"{value:.2%}" if spec.percent and 0 <= value <= 1 else f"{value:.4g}"
        rows.append({"key": spec.key, "label": spec.label, "value": round(float(value), 6), "shown": shown,
                     "description": spec.description})
    return rows


def quantizer_methods(*configs: dict[str, Any]) -> list[str]:
    """Human-readable list of the quantizer options that are switched on in any of `configs`."""
    found = []
    for name, enabled, text in QUANTIZER_METHODS:
        value = _lookup(name, configs)
        if value is not _MISSING and enabled(value):
            found.append(text.format(v=value))
    return found


def validate_card_metadata(card: ModelCard) -> None:
    """Checks the Hub would read the card's metadata as intended; raises InvalidCardMetadataError listing all problems."""
    data = card.data.to_dict()
    problems = []
    license_id = data.get("license")
    if license_id not in KNOWN_LICENSES:
        problems.append(f"license {license_id!r} is not a Hub license id (e.g. 'apache-2.0', 'mit', or 'other').")
    if license_id == "other" and not (data.get("license_name") and data.get("license_link")):
        problems.append("license 'other' needs license_name and license_link.")
    if data.get("pipeline_tag") is not None and data["pipeline_tag"] not in KNOWN_PIPELINE_TAGS:
        problems.append(f"pipeline_tag {data['pipeline_tag']!r} is not a Hub task.")
    if not isinstance(data.get("library_name"), str) or not data["library_name"]:
        problems.append("library_name must be set.")
    if not all(isinstance(tag, str) and tag for tag in data.get("tags") or []):
        problems.append("tags must be non-empty strings.")
    for key in ("datasets", "base_model"):
        values = data.get(key) or []
        for value in [values] if isinstance(values, str) else values:
            if not looks_like_repo_id(str(value)):
                problems.append(f"{key} entry {value!r} is not a Hub repo id ('namespace/name').")
    for result in card.data.eval_results or []:
        if isinstance(result.metric_value, bool) or not isinstance(result.metric_value, (int, float)) \
                or not math.isfinite(result.metric_value):
            problems.append(f"metric {result.metric_type!r} has a non-numeric value {result.metric_value!r}.")
    if problems:
        raise InvalidCardMetadataError("Invalid model card metadata:\n" + "\n".join(f"  - {p}" for p in problems))


def list_classifier_in_card(card_text: str, classifier_repo: str, endpoint: str = HUB_URL) -> str:
    """`card_text` with `classifier_repo` added to its list of classifiers (added once, kept sorted)."""
    link = f"- [{classifier_repo}]({endpoint.rstrip('/')}/{classifier_repo})"
    pattern = re.compile(re.escape(CLASSIFIERS_START) + r"\n(.*?)" + re.escape(CLASSIFIERS_END), re.S)
    match = pattern.search(card_text)
    if match is None:  # a card not made by hf_vq: append the section
        section = f"\n## Classifiers trained on this tokenizer\n\n{CLASSIFIERS_START}\n{link}\n{CLASSIFIERS_END}\n"
        return card_text.rstrip("\n") + "\n" + section
    entries = [line for line in match.group(1).splitlines() if line.startswith("- [")]
    if not any(line.startswith(f"- [{classifier_repo}]") for line in entries):
        entries.append(link)
    body = "\n".join(sorted(entries)) + "\n"
    return card_text[: match.start()] + f"{CLASSIFIERS_START}\n{body}{CLASSIFIERS_END}" + card_text[match.end():]


def listed_classifiers(card_text: str) -> list[str]:
    """The repo ids in a tokenizer card's list of classifiers."""
    pattern = re.compile(re.escape(CLASSIFIERS_START) + r"\n(.*?)" + re.escape(CLASSIFIERS_END), re.S)
    match = pattern.search(card_text)
    return re.findall(r"^- \[([^\]]+)\]", match.group(1), flags=re.M) if match else []


_MISSING = object()


def _lookup(name: str, configs: tuple[dict[str, Any], ...]) -> Any:
    for config in configs:
        for scope in (config, config.get("quantizer") or {}, config.get("quantizer_config") or {}):
            if isinstance(scope, dict):
                for key in (name, f"quantizer_{name}"):
                    if key in scope:
                        return scope[key]
    return _MISSING


def _evaluation_dataset(folder: ModelFolder) -> str | None:
    value = folder.metrics.get("dataset") or folder.training_config.get("dataset_name")
    return str(value) if value else None


def _labels(config: dict[str, Any]) -> list[str]:
    id2label = config.get("id2label") or {}
    return [id2label[key] for key in sorted(id2label, key=lambda k: int(k))]


def _compute(folder: ModelFolder) -> list[tuple[str, Any]]:
    rows, seen = [], set()
    for key, label in COMPUTE_KEYS:
        value = folder.metrics.get(key, folder.training_config.get(key))
        if value is not None and label not in seen:
            rows.append((label, value))
            seen.add(label)
    return rows


def _training_config_yaml(training_config: dict[str, Any]) -> str | None:
    safe = {key: value for key, value in training_config.items() if not SECRET_KEY.search(key)}
    return yaml.safe_dump(safe, sort_keys=True).strip() if safe else None


def _image_size(folder: ModelFolder) -> int:
    size = (folder.processor_config or {}).get("size") or folder.config.get("image_size") or 32
    if isinstance(size, dict):
        size = size.get("height") or size.get("shortest_edge") or 32
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def _is_builtin_model_type(model_type: str | None) -> bool:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return model_type in CONFIG_MAPPING_NAMES
