"""Fine-tuning a pretrained tokenizer: `hf-vq train-tokenizer --pretrained_model_name_or_path PATH_OR_ID`.

The architecture and weights come from the pretrained `VQGANModel` (a folder or a Hub id, for example one that
`hf-vq convert` wrote); the quantizer's *training* options (`FINE_TUNING_OPTIONS`: affine codes, synchronized
update, alternating step, commitment beta, dead-code replacement...) come from the config's `model:` section, which
may name nothing else unless it agrees with the pretrained model (a contradiction is a `ConfigError` naming the
field).

The run starts where the pretrained model is: step 0 gives its token ids and reconstructions exactly.
- A codebook whose re-parameterisation changes (affine codes added, another `affine_groups` / `affine_lr`, SimVQ,
  EMA updates) keeps its *effective* codes and starts the new re-parameterisation at the identity (affine scale 1 and
  shift 0, SimVQ's matrix I, EMA clusters of size 1 at the codes): `Codebook.start_from`. A codebook whose
  re-parameterisation stays the same keeps its trained state as it is.
- k-means++ never replaces the pretrained codebook unless `--reinitialize_codebook` asks for it (then on the first
  training batch, as from scratch); `kmeans_init: true` in the `model:` section without that flag is an error.

Example:
    >>> from hf_vq.training.tokenizer_command import resolve_tokenizer_args
    >>> from hf_vq.training.fine_tuning import load_model_to_fine_tune
    >>> config = resolve_tokenizer_args({"pretrained_model_name_or_path": "outputs/tokenizer",
    ...                                  "train_data_dir": "images",
    ...                                  "model_config": {"affine": "learned", "sync_nu": 0.2}})  # doctest: +SKIP
    >>> model = load_model_to_fine_tune(config)  # doctest: +SKIP
    >>> model.config.affine, float(model.quantize.embedding.affine.scale.abs().max())  # doctest: +SKIP
    ('learned', 0.0)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, HfVqUserError
from ..models.vqgan import VQGANConfig, VQGANModel
from ..quantization.codebook import Codebook
from ..quantization.vector_quantizer import VectorQuantizer
from .args import TokenizerTrainingConfig, checked_config

__all__ = [
    "CODEBOOK_PARAMETERIZATION",
    "FINE_TUNING_OPTIONS",
    "PretrainedModelError",
    "load_model_to_fine_tune",
    "pretrained_pixel_mapping",
]

# What a fine-tuning config may change: how the quantizer trains and the losses `forward` returns, never a weight's
# shape or which code an encoder vector selects.
FINE_TUNING_OPTIONS = (
    "beta",
    "sync_nu",
    "affine",
    "affine_lr",
    "affine_groups",
    "affine_momentum",
    "alternating",
    "alternating_step_size",
    "alternating_lr",
    "gradient_estimator",
    "codebook_update",
    "ema_decay",
    "kmeans_init",
    "kmeans_iterations",
    "kmeans_max_samples",
    "replace_freq",
    "dropout",
    "reconstruction_loss_type",
    "quantizer_loss_weight",
)
# What a tokenizer folder on the Hub holds that loading it needs (not its sample grids, logs or checkpoints).
PRETRAINED_FILES = ("*.json", "*.safetensors", "*.py")
# The options that change how the codebook's tensors make its effective codes (and so its state's layout).
CODEBOOK_PARAMETERIZATION = ("affine", "affine_groups", "affine_lr", "codebook_update")


# The saved processor's mapping from images to pixel values, which a fine-tuning run keeps: the encoder was trained on
# those values (a converted Chameleon tokenizer's Lanczos resize and x * 0.0078 - 1, not hf_vq's x / 127.5 - 1).
PIXEL_MAPPING_OPTIONS = ("resample", "do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std")


class PretrainedModelError(HfVqUserError, OSError):
    """--pretrained_model_name_or_path names nothing that loads as an hf_vq tokenizer."""


def load_model_to_fine_tune(config: TokenizerTrainingConfig) -> VQGANModel:
    """The pretrained tokenizer of `config.pretrained_model_name_or_path` with the quantizer options of the
    `model:` section, in training mode, giving the pretrained model's ids and reconstructions before its first step.

    Raises `PretrainedModelError` when nothing loads under that name and `ConfigError` for a `model:` section that
    contradicts the pretrained architecture or a codebook that cannot start unchanged."""
    source, folder = load_pretrained_tokenizer(
        config.pretrained_model_name_or_path, config.pretrained_revision, config.cache_dir
    )
    # The model: section is compared with the config as saved: VQGANModel.from_pretrained already took the size of
    # an old folder's processor (issue 28), and the YAML that trained such a folder names the config's stale size.
    saved_config = VQGANConfig.from_pretrained(folder)
    options = fine_tuning_options(saved_config, config.model_config, config.reinitialize_codebook)
    if config.reinitialize_codebook:
        _check_has_codebook(source.config)
        options["kmeans_init"] = True
    target_config = _config_with(source.config, options)
    model = source if target_config.to_dict() == source.config.to_dict() else _rebuilt(source, target_config)
    for module in model.modules():
        if isinstance(module, VectorQuantizer):  # k-means++ runs on the first batch only when asked
            module.kmeans_init = config.reinitialize_codebook
            module.initialized.fill_(not config.reinitialize_codebook)
    return model.train()


def pretrained_pixel_mapping(config: TokenizerTrainingConfig) -> dict[str, Any]:
    """The `PIXEL_MAPPING_OPTIONS` of the processor saved with the pretrained tokenizer (none without one), for the
    run's own processor: the run trains on, and saves, the pixel values the pretrained encoder reads."""
    from ..models.vqgan import VQGANImageProcessor

    folder = _local_folder(config.pretrained_model_name_or_path, config.pretrained_revision, config.cache_dir)
    try:
        processor = VQGANImageProcessor.from_pretrained(str(folder))
    except OSError:  # no preprocessor_config.json: hf_vq's default mapping
        return {}
    return {name: getattr(processor, name) for name in PIXEL_MAPPING_OPTIONS}


def load_pretrained_tokenizer(
    name_or_path: str, revision: str | None = None, cache_dir: str | None = None
) -> tuple[VQGANModel, Path]:
    """The tokenizer of a folder or Hub id and the local folder it loaded from (a Hub id is downloaded, or found in
    the cache offline, once); whatever keeps it from loading (no such folder or Hub repo, offline, not a tokenizer)
    is one `PretrainedModelError` naming the flag."""
    where = f"--pretrained_model_name_or_path {name_or_path!r}{f' (revision {revision!r})' if revision else ''}"
    try:
        folder = _local_folder(name_or_path, revision, cache_dir)
        model_type = VQGANConfig.get_config_dict(str(folder))[0].get("model_type")
        if model_type != VQGANConfig.model_type:
            raise PretrainedModelError(
                f"{where} holds a {model_type or 'model without a model_type'!s} config, not an hf_vq tokenizer "
                f"(model_type {VQGANConfig.model_type!r}): pass a folder saved by `hf-vq train-tokenizer` or "
                "`hf-vq convert`"
            )
        # float32 whatever the saved dtype: the weights the optimizer updates (autocast gives mixed precision).
        return VQGANModel.from_pretrained(folder, dtype=torch.float32), folder
    except (OSError, ValueError) as error:  # not a folder nor a repo on the Hub, offline and not cached, no weights
        if isinstance(error, PretrainedModelError):
            raise
        raise PretrainedModelError(f"cannot load {where}: {' '.join(str(error).split())}") from error


def _local_folder(name_or_path: str, revision: str | None, cache_dir: str | None) -> Path:
    if Path(name_or_path).is_dir():
        return Path(name_or_path)
    from huggingface_hub import snapshot_download

    return Path(
        snapshot_download(name_or_path, revision=revision, cache_dir=cache_dir, allow_patterns=PRETRAINED_FILES)
    )


def fine_tuning_options(
    pretrained: VQGANConfig, model_section: dict[str, Any], reinitialize_codebook: bool = False
) -> dict[str, Any]:
    """The `model:` section's fine-tuning options; a `ConfigError` for any other field that differs from the
    pretrained config (the architecture is the pretrained model's) or for `kmeans_init: true` without
    `--reinitialize_codebook`."""
    contradictions = [
        f"{name}={value!r} (the pretrained model's: {getattr(pretrained, name, None)!r})"
        for name, value in model_section.items()
        if name not in FINE_TUNING_OPTIONS and _differs(value, getattr(pretrained, name, None))
    ]
    if contradictions:
        raise ConfigError(
            f"the model: section contradicts --pretrained_model_name_or_path: {', '.join(contradictions)}; the "
            "architecture comes from the pretrained model: drop these keys (a fine-tuning config sets only the "
            f"training options {', '.join(FINE_TUNING_OPTIONS)}; the image size: --resolution)"
        )
    if model_section.get("kmeans_init") and not reinitialize_codebook:
        raise ConfigError(
            "kmeans_init: true in the model: section would replace the pretrained codebook: pass "
            "--reinitialize_codebook to run k-means++ on the first batch, or drop kmeans_init to keep the codebook"
        )
    return {name: value for name, value in model_section.items() if name in FINE_TUNING_OPTIONS}


def _config_with(pretrained: VQGANConfig, options: dict[str, Any]) -> VQGANConfig:
    """The pretrained config with `options` laid over it; a combination the quantizer refuses is a `ConfigError`."""
    return checked_config(
        lambda: type(pretrained).from_dict({**pretrained.to_dict(), **options}),
        "model: section over the pretrained model's config",
    )


def _differs(value: Any, pretrained: Any) -> bool:
    if isinstance(value, (list, tuple)) and isinstance(pretrained, (list, tuple)):
        return list(value) != list(pretrained)
    return value != pretrained


def _check_has_codebook(config: VQGANConfig) -> None:
    if config.quantizer_type == "fsq":
        raise ConfigError("--reinitialize_codebook: the pretrained model quantizes with FSQ, which has no codebook")


def _rebuilt(source: VQGANModel, config: VQGANConfig) -> VQGANModel:
    """A model of `config` with `source`'s weights; codebooks whose re-parameterisation changed start from the
    source's effective codes at the identity."""
    model = VQGANModel(config)
    keep_codebooks = all(getattr(source.config, name) == getattr(config, name) for name in CODEBOOK_PARAMETERIZATION)
    codebooks = {name: module for name, module in source.named_modules() if isinstance(module, Codebook)}
    state = source.state_dict()
    if not keep_codebooks:
        state = {key: value for key, value in state.items() if not _belongs_to(key, codebooks)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    stray = [key for key in [*missing, *unexpected] if keep_codebooks or not _belongs_to(key, codebooks)]
    if stray:  # a bug, not a user error: the two models have one architecture
        raise RuntimeError(f"fine-tuning: the rebuilt tokenizer and the pretrained one differ in {stray}")
    if not keep_codebooks:
        target_codebooks = dict(model.named_modules())
        for name, codebook in codebooks.items():
            try:
                target_codebooks[name].start_from(codebook.effective().detach())
            except ValueError as error:
                raise ConfigError(f"model: section: {error}") from error
    return model


def _belongs_to(key: str, modules: dict[str, torch.nn.Module]) -> bool:
    return any(key.startswith(f"{name}.") for name in modules)
