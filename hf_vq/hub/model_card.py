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
    candidates = [
        Path(__file__).resolve().parents[2] / "model_cards",
        Path(sys.prefix) / "share" / "hf_vq" / "model_cards",
    ]
    return next((path for path in candidates if path.is_dir()), candidates[0])


TEMPLATE_DIR = _find_template_dir()
HUB_URL = "https://huggingface.co"
DEPENDENTS_START = "<!-- hf_vq:dependents:start -->"
DEPENDENTS_END = "<!-- hf_vq:dependents:end -->"
NO_DEPENDENTS_YET = "None published yet."
THIS_REVISION = "this revision"
# How a model built on a tokenizer is described in the tokenizer card's list, by the kind of its folder.
DEPENDENT_LABELS = {"classifier": "image classifier", "prior": "class-conditional image generation", "model": "model"}
# Local names of datasets that are on the Hub under another id: (Hub id, subset).
KNOWN_HUB_DATASETS = {
    name: ("zalando-datasets/fashion_mnist", "fashion_mnist") for name in ("fashion_mnist", "fashion-mnist")
}


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
    # Generation (a prior over a tokenizer's codes), under the names the prior's training run writes them.
    MetricSpec(
        "conditional_accuracy",
        "Conditional accuracy",
        "share of generated images that a reference classifier assigns to the class they were generated for",
        percent=True,
    ),
    MetricSpec(
        "real_accuracy",
        "Reference classifier accuracy",
        "the reference classifier's accuracy on real images",
        percent=True,
    ),
    MetricSpec(
        "relative_conditional_accuracy",
        "Relative conditional accuracy",
        "conditional accuracy / reference classifier accuracy; 1 is as recognisable as real images",
    ),
    MetricSpec(
        "classifier_fid",
        "Classifier FID",
        "Frechet distance of generated to real images in the reference classifier's features, lower is better",
    ),
    MetricSpec(
        "reconstruction_classifier_fid",
        "Reconstruction classifier FID",
        "the same distance for the tokenizer's reconstructions: the floor a prior over its codes can reach",
    ),
    MetricSpec(
        "classifier_fid_ratio",
        "Classifier FID / floor",
        "classifier FID over its reconstruction floor; 1 is the floor",
    ),
    MetricSpec("inception_fid", "FID", "Frechet Inception distance of generated to real images, lower is better"),
    MetricSpec(
        "reconstruction_inception_fid", "Reconstruction FID", "the same distance for the tokenizer's reconstructions"
    ),
    MetricSpec("generated_perplexity", "Generated-code perplexity", "exp(entropy) of the codes the prior generates"),
    MetricSpec("real_perplexity", "Real-code perplexity", "exp(entropy) of the codes of real images, for comparison"),
    MetricSpec("generated_usage", "Generated-code usage", "share of the codebook the prior generates", percent=True),
    MetricSpec("real_usage", "Real-code usage", "share of the codebook real images use", percent=True),
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
ARCHITECTURE_KEYS = (
    "codebook_size",
    "embed_dim",
    "quantizer_type",
    "image_size",
    "num_channels",
    "block_out_channels",
    "latent_channels",
    "grid_size",
    "grid_height",
    "grid_width",
    "num_classes",
    "patch_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_labels",
)
COMPUTE_KEYS = (
    ("hardware", "Hardware"),
    ("num_processes", "Processes"),
    ("mixed_precision", "Mixed precision"),
    ("train_steps", "Training steps"),
    ("max_train_steps", "Training steps"),
    ("train_batch_size", "Batch size per process"),
    ("train_seconds", "Training time (s)"),
    ("train_hours", "Training time (h)"),
)
SECRET_KEY = re.compile(r"(^|_)(token|password|secret|api_key)$", re.I)
# A class-conditional prior generates images from a class label, not from text and not from nothing: the Hub has no
# task of its own for that, so its card has no pipeline tag (calling it "unconditional-image-generation" would be
# wrong) and its tags say "class-conditional-image-generation". A prior without classes is unconditional.
PIPELINE_TAGS = {
    "tokenizer": "image-feature-extraction",
    "classifier": "image-classification",
    "prior": "unconditional-image-generation",
    "model": None,
}
CLASS_CONDITIONAL_TAGS = ["class-conditional", "class-conditional-image-generation"]
# Top-k accuracy with k at least the number of classes is 1 whatever the model does: not worth reporting.
TOP5_MIN_CLASSES = 6
KIND_TAGS = {
    "tokenizer": ["hf_vq", "image-tokenizer", "vqgan", "vector-quantization"],
    "classifier": ["hf_vq", "image-classification", "image-tokens"],
    "prior": ["hf_vq", "image-generation", "image-tokens", "masked-generative-transformer"],
    "model": ["hf_vq"],
}
# The Hub's license identifiers most likely here; anything else must be "other" with a name and a link.
KNOWN_LICENSES = {
    "apache-2.0",
    "mit",
    "bsd-2-clause",
    "bsd-3-clause",
    "cc0-1.0",
    "cc-by-4.0",
    "cc-by-sa-4.0",
    "cc-by-nc-4.0",
    "cc-by-nc-sa-4.0",
    "cc-by-nd-4.0",
    "gpl-3.0",
    "lgpl-3.0",
    "agpl-3.0",
    "mpl-2.0",
    "openrail",
    "creativeml-openrail-m",
    "bigscience-openrail-m",
    "llama3",
    "gemma",
    "unlicense",
    "other",
}
KNOWN_PIPELINE_TAGS = {
    "image-classification",
    "image-feature-extraction",
    "image-to-image",
    "unconditional-image-generation",
    "text-to-image",
    "image-segmentation",
    "object-detection",
    "zero-shot-image-classification",
    "feature-extraction",
    "mask-generation",
    "depth-estimation",
    "image-to-text",
}


def render_model_card(
    folder: ModelFolder,
    hub_model_id: str,
    *,
    license: str = "apache-2.0",  # noqa: A002 - the Hub's field name
    tokenizer_hub_id: str | None = None,
    tokenizer_revision: str | None = None,
    dependents: list[tuple[str, str]] | None = None,
    endpoint: str = HUB_URL,
    template_dir: str | Path | None = None,
    kept_dependents: list[str] = (),
) -> ModelCard:
    """The card of `folder` as it will be pushed to `hub_model_id`, metadata checked.

    `tokenizer_hub_id` / `tokenizer_revision`: where a classifier or prior finds its tokenizer on the Hub (else its
    config's reference, which must then be a Hub id). `dependents`: (repo id, kind) of models built on a tokenizer
    and pushed with it, listed on its card as trained on this revision; `kept_dependents`: the entries its card on the
    Hub lists already (`dependent_entries`), kept.

    Example:
        >>> card = render_model_card(load_model_folder("outputs/vqgan"), "me/vqgan-fashion-mnist")
        >>> card.data.pipeline_tag, [r.metric_type for r in card.data.eval_results]
        ('image-feature-extraction', ['psnr', 'ssim', 'codebook_usage', 'perplexity'])
    """
    context = card_context(
        folder,
        hub_model_id,
        tokenizer_hub_id=tokenizer_hub_id,
        endpoint=endpoint,
        tokenizer_revision=tokenizer_revision,
    )
    new_entries = [dependent_line(repo, kind, endpoint) for repo, kind in dependents or []]
    context["dependent_lines"] = merge_dependent_entries(list(kept_dependents), new_entries)
    card_data = build_card_data(folder, hub_model_id, context, license=license)
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir or TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,  # a misspelt variable is a bug, not an empty string
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    text = environment.get_template(f"{folder.kind}.md.j2").render(
        card_data=card_data.to_yaml(), base_model_id=card_data.base_model, **context
    )
    try:
        card = ModelCard(text)
    except (ValueError, yaml.YAMLError) as error:
        raise InvalidCardMetadataError(f"The rendered model card does not parse back: {error}") from error
    validate_card_metadata(card)
    return card


def card_context(
    folder: ModelFolder,
    hub_model_id: str,
    *,
    tokenizer_hub_id: str | None,
    endpoint: str,
    tokenizer_revision: str | None = None,
) -> dict[str, Any]:
    """Everything the templates show, computed here so that templates stay plain layout."""
    tokenizer = tokenizer_hub_id or folder.tokenizer_reference
    dataset, subset = _evaluation_dataset(folder)
    image_config = _image_config(folder)
    return {
        "repo_id": hub_model_id,
        "model_name": hub_model_id.split("/")[-1],
        "endpoint": endpoint.rstrip("/"),
        "kind": folder.kind,
        "model_type": folder.config.get("model_type"),
        "metrics": measured_metrics(folder.metrics, num_classes=_num_classes(folder)),
        "dataset": dataset,
        "dataset_on_hub": bool(dataset and looks_like_repo_id(dataset)),
        "subset": subset,
        "split": folder.metrics.get("split") or folder.training_config.get("eval_split"),
        "eval_examples": folder.metrics.get("eval_examples") or folder.metrics.get("eval_images"),
        "architecture": _architecture(folder),
        "labels": _labels(folder),
        "quantizer_methods": quantizer_methods(folder.config, folder.training_config),
        "compute": _compute(folder),
        "training_config_yaml": _training_config_yaml(folder.training_config),
        "has_samples": folder.has_samples,
        "has_processor": folder.processor_config is not None,
        "is_pipeline": folder.is_pipeline,
        "trust_remote_code": folder.uses_remote_code,
        "reads_tokens": folder.kind == "classifier" and "codebook_size" in folder.config,
        "image_mode": "L" if image_config.get("num_channels") == 1 else "RGB",
        "image_kind": "grayscale" if image_config.get("num_channels") == 1 else "RGB",
        "image_size": _image_size(folder, image_config),
        "num_channels": image_config.get("num_channels", 3),
        "tokenizer_repo": tokenizer if tokenizer and looks_like_repo_id(tokenizer) else None,
        "tokenizer_revision": tokenizer_revision or folder.config.get("tokenizer_revision"),
        "dependents_start": DEPENDENTS_START,
        "dependents_end": DEPENDENTS_END,
        "no_dependents_yet": NO_DEPENDENTS_YET,
        "generation_call": _generation_call(folder),
        # `hf-vq convert` records the format a tokenizer was converted from (hf_vq.conversion.command).
        "converted_from": folder.training_config.get("converted_from"),
        # A source without a decoder (Chameleon): the card must not claim the source's reconstructions.
        "decoder_initialized": bool(folder.training_config.get("decoder_initialized")),
        "converted_parts": folder.training_config.get("converted_parts") or [],
    }


def build_card_data(folder: ModelFolder, hub_model_id: str, context: dict[str, Any], *, license: str) -> ModelCardData:  # noqa: A002
    pipeline_tag = PIPELINE_TAGS[folder.kind]
    dataset = context["dataset"]
    tags = list(KIND_TAGS[folder.kind]) + (["custom_code"] if folder.uses_remote_code else [])
    if folder.kind == "prior" and is_class_conditional(folder):
        pipeline_tag, tags = None, tags[:1] + CLASS_CONDITIONAL_TAGS + tags[1:]
    eval_results = None
    if dataset and context["metrics"]:
        # The model-index needs a task and a dataset; without a recorded dataset the metrics stay in the text only.
        eval_results = [
            EvalResult(
                task_type=pipeline_tag or "other",
                dataset_type=dataset,
                dataset_name=dataset,
                dataset_split=context["split"],
                dataset_config=context["subset"],
                metric_type=metric["key"],
                metric_name=metric["label"],
                metric_value=metric["value"],
            )
            for metric in context["metrics"]
        ]
    return ModelCardData(
        library_name="diffusers" if folder.is_pipeline else "transformers",
        license=license,
        pipeline_tag=pipeline_tag,
        tags=tags,
        datasets=[dataset] if context["dataset_on_hub"] else None,
        base_model=base_model(folder, context),
        model_name=hub_model_id,
        eval_results=eval_results,
        metrics=[metric["key"] for metric in context["metrics"]] or None,
    )


def base_model(folder: ModelFolder, context: dict[str, Any]) -> str | None:
    """The Hub model this one is built on: the tokenizer a classifier or prior reads, else the pretrained model the
    run started from (`--pretrained_model_name_or_path`, e.g. a pixel ViT fine-tuned from a Hub ViT)."""
    if folder.kind in ("classifier", "prior") and context["tokenizer_repo"]:
        return context["tokenizer_repo"]
    pretrained = folder.training_config.get("pretrained_model_name_or_path")
    return pretrained if isinstance(pretrained, str) and looks_like_repo_id(pretrained) else None


def is_class_conditional(folder: ModelFolder) -> bool:
    """A prior that takes class labels (`num_classes` > 0 in its transformer's config)."""
    return bool(_prior_config(folder).get("num_classes") or folder.metrics.get("num_classes"))


def measured_metrics(metrics: dict[str, Any], num_classes: int | None = None) -> list[dict[str, Any]]:
    """The known metrics that the run measured, in display order, each with its value formatted (top-5 accuracy only
    with more than 5 classes: with fewer it is 1 whatever the model)."""
    rows = []
    for spec in METRICS:
        if spec.key == "top5_accuracy" and num_classes is not None and num_classes < TOP5_MIN_CLASSES:
            continue
        value = metrics.get(spec.key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        shown = f"{value:.2%}" if spec.percent and 0 <= value <= 1 else f"{value:.4g}"
        rows.append(
            {
                "key": spec.key,
                "label": spec.label,
                "value": round(float(value), 6),
                "shown": shown,
                "description": spec.description,
            }
        )
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
    """Checks the Hub would read the card's metadata as intended; raises InvalidCardMetadataError listing all
    problems."""
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
        if (
            isinstance(result.metric_value, bool)
            or not isinstance(result.metric_value, (int, float))
            or not math.isfinite(result.metric_value)
        ):
            problems.append(f"metric {result.metric_type!r} has a non-numeric value {result.metric_value!r}.")
    if problems:
        raise InvalidCardMetadataError("Invalid model card metadata:\n" + "\n".join(f"  - {p}" for p in problems))


def dependent_line(repo_id: str, kind: str, endpoint: str = HUB_URL, revision: str | None = None) -> str:
    """A tokenizer card's entry for a model built on it: link, kind, and the tokenizer revision it was trained on
    (`revision`; None: the revision this card is pushed with, as in `hf-vq push-set`)."""
    trained_on = f"revision `{revision}`" if revision else THIS_REVISION
    label = DEPENDENT_LABELS.get(kind, kind)
    return f"- [{repo_id}]({endpoint.rstrip('/')}/{repo_id}): {label}, trained on {trained_on}"


def merge_dependent_entries(kept: list[str], new: list[str]) -> list[str]:
    """One entry per repo, sorted; an entry of `new` replaces a kept entry for the same repo."""
    by_repo = {_entry_repo(line): line for line in kept if _entry_repo(line)}
    by_repo |= {_entry_repo(line): line for line in new}
    return [by_repo[repo] for repo in sorted(by_repo)]


def dependent_entries(card_text: str, current_revision: str | None = None) -> list[str]:
    """The entries of a tokenizer card's list of models built on it, as written. With `current_revision` (the commit
    the card was read at), entries written with that push ("trained on this revision") name it, so that they stay
    true once the card moves to new weights."""
    match = _DEPENDENTS_PATTERN.search(card_text)
    entries = [line for line in match.group(1).splitlines() if line.startswith("- [")] if match else []
    if current_revision:
        entries = [line.replace(THIS_REVISION, f"revision `{current_revision}`") for line in entries]
    return entries


def list_dependent_in_card(
    card_text: str, repo_id: str, kind: str = "classifier", endpoint: str = HUB_URL, revision: str | None = None
) -> str:
    """`card_text` (a tokenizer's card) with `repo_id`, a model of `kind` built on the tokenizer at `revision`, added
    to its list of dependents (one entry per repo, the newest; kept sorted)."""
    link = dependent_line(repo_id, kind, endpoint, revision)
    match = _DEPENDENTS_PATTERN.search(card_text)
    if match is None:  # a card not made by hf_vq: append the section
        section = f"\n## Models built on this tokenizer\n\n{DEPENDENTS_START}\n{link}\n{DEPENDENTS_END}\n"
        return card_text.rstrip("\n") + "\n" + section
    entries = dependent_entries(card_text)
    if not any(_entry_repo(line) == repo_id for line in entries) or revision:
        entries = merge_dependent_entries(entries, [link])
    body = "\n".join(sorted(entries)) + "\n"
    return card_text[: match.start()] + f"{DEPENDENTS_START}\n{body}{DEPENDENTS_END}" + card_text[match.end() :]


def _entry_repo(line: str) -> str | None:
    match = re.match(r"^- \[([^\]]+)\]", line)
    return match.group(1) if match else None


def listed_dependents(card_text: str) -> list[str]:
    """The repo ids in a tokenizer card's list of models built on it."""
    match = _DEPENDENTS_PATTERN.search(card_text)
    return re.findall(r"^- \[([^\]]+)\]", match.group(1), flags=re.M) if match else []


_DEPENDENTS_PATTERN = re.compile(re.escape(DEPENDENTS_START) + r"\n(.*?)" + re.escape(DEPENDENTS_END), re.S)
_MISSING = object()


def _lookup(name: str, configs: tuple[dict[str, Any], ...]) -> Any:
    for config in configs:
        for scope in (config, config.get("quantizer") or {}, config.get("quantizer_config") or {}):
            if isinstance(scope, dict):
                for key in (name, f"quantizer_{name}"):
                    if key in scope:
                        return scope[key]
    return _MISSING


def _evaluation_dataset(folder: ModelFolder) -> tuple[str | None, str | None]:
    """(dataset, subset) the run evaluated on: a Hub id where the local name has a known Hub equivalent."""
    value = folder.metrics.get("dataset") or folder.training_config.get("dataset_name")
    subset = folder.metrics.get("subset") or folder.training_config.get("dataset_config_name")
    if not value:
        return None, subset
    value = str(value)
    known = KNOWN_HUB_DATASETS.get(value) or KNOWN_HUB_DATASETS.get(Path(value).name)
    if known and not looks_like_repo_id(value):
        return known[0], subset or known[1]
    return value, subset


def _image_config(folder: ModelFolder) -> dict[str, Any]:
    """What images the model takes or makes (`num_channels`, `image_size`): its config, completed by its image
    processor's (a token classifier's config has no channels: its tokenizer's processor has), or a pipeline's
    tokenizer component."""
    if folder.is_pipeline:
        return next((config for config in folder.components.values() if "image_size" in config), {})
    processor = {key: value for key, value in (folder.processor_config or {}).items() if key == "num_channels"}
    return processor | {key: value for key, value in folder.config.items() if value is not None}


def _prior_config(folder: ModelFolder) -> dict[str, Any]:
    """A pipeline's prior component: the one that names the tokenizer (or the `transformer`)."""
    named = [config for config in folder.components.values() if config.get("tokenizer_name_or_path")]
    return named[0] if named else folder.components.get("transformer", {})


def _architecture(folder: ModelFolder) -> list[tuple[str, Any]]:
    """(setting, value) rows; a pipeline's settings are named by component (`transformer.hidden_size`)."""
    if not folder.is_pipeline:
        config = dict(folder.config)
        if config.get("image_size") is not None:
            # A tokenizer folder saved before issue 28's fix names the YAML's size while its processor (which hf_vq
            # reads it with) resizes to the size trained at: the card states the processor's, as the prose does.
            config["image_size"] = _image_size(folder, config)
        return [(key, config[key]) for key in ARCHITECTURE_KEYS if config.get(key) is not None]
    return [
        (f"{name}.{key}", config[key])
        for name, config in folder.components.items()
        for key in ARCHITECTURE_KEYS
        if config.get(key) is not None
    ]


def _labels(folder: ModelFolder) -> list[str]:
    if folder.kind not in ("classifier", "prior"):
        return []
    config = _prior_config(folder) if folder.is_pipeline else folder.config
    id2label = config.get("id2label") or {}
    if folder.is_pipeline and len(id2label) != config.get("num_classes"):
        return []  # transformers' default two labels of a config without classes
    return [id2label[key] for key in sorted(id2label, key=lambda k: int(k))]


def _num_classes(folder: ModelFolder) -> int | None:
    """How many classes a classifier or prior knows (None when the folder does not say)."""
    config = _prior_config(folder) if folder.is_pipeline else folder.config
    count = config.get("num_classes") or config.get("num_labels") or len(config.get("id2label") or {})
    return int(count) if count else None


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


def _generation_call(folder: ModelFolder) -> str:
    """The line of the prior card's snippet that generates images: two classes (or, unconditional, two samples)."""
    seeded = "generator=torch.Generator().manual_seed(0)"
    if folder.is_pipeline and _prior_config(folder).get("num_classes", 0) > 0:
        return f"images = pipe(class_labels=[0, 1], {seeded}).images  # one image of class 0, one of class 1"
    return f"images = pipe(batch_size=2, {seeded}).images"


def _image_size(folder: ModelFolder, image_config: dict[str, Any]) -> int:
    size = (folder.processor_config or {}).get("size") or image_config.get("image_size") or 32
    if isinstance(size, dict):
        size = size.get("height") or size.get("shortest_edge") or 32
    return int(size[0] if isinstance(size, (list, tuple)) else size)
