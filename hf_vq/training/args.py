"""The flags and YAML configs of the training commands: one dataclass per group of flags, composed per command.

A command (`TrainingCommand`) is its list of flag groups, the typed config class its parsed flags become (a
dataclass inheriting those groups: `TokenizerTrainingConfig`, `ClassifierTrainingConfig`, ...), its own defaults,
the model config class its `model:` section is checked against, and its cross-flag checks; every training command
shares the parser, the config reading and the checks below, and the loops take the typed config as it is. Adding a
command is a few lines:

    @dataclass
    class SegmenterTrainingConfig(TokenTrainingConfig, SegmenterArguments):  # SegmenterArguments: `flag(...)`s
        pass

    SEGMENTER_COMMAND = TrainingCommand(
        "train-segmenter", "Train a segmenter on token grids.", config_class=SegmenterTrainingConfig,
        model_config_class="hf_vq.models.segmenter:SegmenterConfig",
        groups=(ConfigArguments, TokenCacheArguments, SegmenterArguments, DataArguments, LabelArguments,
                OptimizationArguments, RunArguments, ReliabilityArguments, HubArguments),
        defaults=SEGMENTER_DEFAULTS, check=check_tokenizer_flag)

A config file has three sections: `model:` (fields of the model config class), `data:` and `training:` (flags of
the groups whose SECTION they are). Every key is checked (an unknown one is an error naming the nearest valid
name) and every value converted to its flag's type. Precedence: built-in defaults < the YAML file < the flags
given on the command line (a given flag wins even when it equals its default).

Example:
    >>> args = parse_args(TOKENIZER_COMMAND, ["--config", "configs/vqgan_tiny.yaml", "--train_data_dir", "images",
    ...                                       "--max_train_steps", "10"])  # doctest: +SKIP
    >>> args.model_config["codebook_size"], args.max_train_steps  # doctest: +SKIP
    (32, 10)
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal

import yaml

from ..commands import commands_with_flag, unrecognized_flags_message
from ..errors import ConfigError
from ..flags import FlagSpec, OneLineErrorParser, add_flags, check_bound, convert, did_you_mean, flag, flag_specs
from ..hub.push import HubArguments
from .priors import DEFAULT_PRIOR_TYPE, PRIOR_SPECS, get_prior_spec

CONFIG_SECTIONS = ("model", "data", "training")
REPORT_TO = ("jsonl", "tensorboard", "wandb", "all", "none")
MIXED_PRECISION = ("no", "fp16", "bf16")
ON_DIVERGENCE = ("stop", "skip_step")  # hf_vq/training/divergence.py
# diffusers.optimization.SchedulerType, the names its get_scheduler takes (spelled out so that --help does not
# import diffusers; tests/test_flags.py checks them against diffusers). piecewise_constant is left out: it needs
# step rules that no flag gives.
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")
# The package each tracker of --report_to needs (Accelerate silently skips a tracker whose package is missing).
TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}
SECRET_FLAGS = ("hub_token",)  # never written to trackers, training_config.json or anything else a run leaves

__all__ = ["ConfigError"]  # completed at the end of the file


# ------------------------------------------------------------------------------------------------ flag groups


@dataclass
class ConfigArguments:
    SECTION: ClassVar[str | None] = None  # command line only
    TITLE: ClassVar[str] = "config"

    config: str | None = flag(None, "YAML file with model:, data: and training: sections (flags override it)")


@dataclass
class TokenizerModelArguments:
    TITLE: ClassVar[str] = "model"

    pretrained_model_name_or_path: str | None = flag(
        None,
        "fine-tune a saved VQGANModel (folder or Hub id): its architecture and weights, with the quantizer's training "
        "options (affine, sync_nu, alternating, beta, replace_freq...) from the config's model: section "
        "(hf_vq/training/fine_tuning.py)",
    )
    pretrained_revision: str | None = flag(
        None, "revision (branch, tag or commit) of --pretrained_model_name_or_path", aliases=("revision",)
    )
    reinitialize_codebook: bool = flag(
        False,
        "with --pretrained_model_name_or_path: replace the pretrained codebook by k-means++ on the first training "
        "batch (default: keep it; kmeans_iterations and kmeans_max_samples from the model: section)",
    )


@dataclass
class TokenCacheArguments:
    """Commands that train on a tokenizer's token grids, tokenized once and cached (classifier, prior)."""

    TITLE: ClassVar[str] = "tokenizer"

    tokenizer_name_or_path: str | None = flag(None, "trained tokenizer (folder or Hub id) to read tokens of")
    revision: str | None = flag(None, "revision (branch, tag or commit) of --tokenizer_name_or_path")
    tokenize_batch_size: int = flag(256, "images per tokenizer forward when caching the token grids", check=">= 1")
    token_dataset: str | None = flag(
        None,
        "train on this token dataset (an `hf-vq encode` folder or Hub dataset id, made by --tokenizer_name_or_path) "
        "instead of images (--dataset_name / --train_data_dir)",
    )
    token_dataset_revision: str | None = flag(None, "revision (branch, tag or commit) of a Hub --token_dataset")


@dataclass
class ClassifierArguments:
    TITLE: ClassVar[str] = "classifier"

    model_type: Literal["token_vit", "pixel_vit"] = flag(
        "token_vit",
        "pixel_vit: the reference, a transformers ViT of the same size on patches of the tokenizer's "
        "downsampling factor (same sequence length), trained by the same loop",
    )
    init_from_codebook: bool = flag(True, "embed tokens in the tokenizer's code space, starting from its codebook")


@dataclass
class PriorArguments:
    """What only the prior's command does: its starting point, label dropout, and the sampling of its samples and
    of its evaluation."""

    TITLE: ClassVar[str] = "prior training and evaluation"

    prior_type: str = flag(DEFAULT_PRIOR_TYPE, f"kind of prior: {', '.join(PRIOR_SPECS)} (hf_vq/training/priors/)")
    pretrained_model_name_or_path: str | None = flag(
        None,
        "start from a saved prior (a model folder of --prior_type, or a pipeline folder whose transformer/ is "
        "one) instead of the config's model: section; it must have been trained on the same tokenizer",
    )
    label_dropout: float = flag(
        0.1, "share of class labels replaced by the null class (classifier-free guidance)", check="[0, 1)"
    )
    num_inference_steps: int = flag(12, "decoding steps of the samples and the evaluation (MaskGIT)", check=">= 1")
    guidance_scale: float = flag(
        2.0, "classifier-free guidance of the samples and the evaluation (1: none)", check=">= 0"
    )
    temperature: float = flag(1.0, "sampling temperature of the samples and the evaluation", check=">= 0")
    top_k: int | None = flag(None, "sample among the top_k most likely codes (autoregressive prior)", check=">= 1")
    top_p: float | None = flag(
        None,
        "nucleus sampling: the most likely codes up to this probability mass (autoregressive prior)",
        check="(0, 1]",
    )
    num_sample_images: int = flag(8, "images per class in samples.png (one row per class)", check=">= 0")
    num_eval_images: int = flag(
        1000,
        "generated images judged at the end (as many per class), and as many real "
        "held-out images; 0: no generation metrics",
        check=">= 0",
    )
    generation_batch_size: int = flag(250, "images generated per pipeline call", check=">= 1")
    eval_classifier_name_or_path: str | None = flag(
        None,
        "pixel classifier judging the samples (`hf-vq train-classifier --model_type pixel_vit`, same data and "
        "tokenizer): conditional accuracy and classifier-feature FID",
    )
    inception_weights: str | None = flag(None, "FID Inception weights file: adds Inception FID")


@dataclass
class DataArguments:
    SECTION: ClassVar[str] = "data"
    TITLE: ClassVar[str] = "data"

    dataset_name: str | None = flag(None, "Hub dataset id, a parquet file/folder, or 'fashion_mnist'")
    dataset_config_name: str | None = flag(None, "configuration (subset) of --dataset_name")
    train_data_dir: str | None = flag(None, "local imagefolder (or Fashion-MNIST IDX) directory")
    image_column: str = flag("image", "column holding the images")
    train_split: str = flag("train", "split to train on")
    eval_split: str | None = flag(
        None,
        "held-out split ('test', 'validation'); default: the first of them the dataset has, else "
        "--eval_fraction of the training data",
    )
    eval_fraction: float = flag(
        0.05, "fraction of the training data held out when the dataset has no evaluation split", check="(0, 1)"
    )
    cache_dir: str | None = flag(None, "cache folder of datasets (and of downloaded weights)")
    max_train_samples: int | None = flag(None, "use only the first N training examples", check=">= 1")
    max_eval_samples: int | None = flag(512, "evaluate on at most N held-out examples (unset: all)", check=">= 1")
    resolution: int | None = flag(None, "training image side (default: the model's image_size)", check=">= 1")
    dataloader_num_workers: int = flag(0, "data loading worker processes", check=">= 0")


@dataclass
class LabelArguments:
    SECTION: ClassVar[str] = "data"
    TITLE: ClassVar[str] = "data"

    label_column: str = flag("label", "column holding the class labels")


@dataclass
class AugmentationArguments:
    """Images decoded anew each epoch: augmentation and streaming (not for commands that cache encoded images)."""

    SECTION: ClassVar[str] = "data"
    TITLE: ClassVar[str] = "data"

    streaming: bool = flag(False, "stream the dataset instead of downloading it first")
    center_crop: bool = flag(False, "center-crop (else random-crop) to --resolution")
    random_flip: bool = flag(False, "flip images horizontally at random")


@dataclass
class OptimizationArguments:
    TITLE: ClassVar[str] = "optimization"

    seed: int = flag(0, "seed of weights, shuffling and augmentation")
    train_batch_size: int = flag(16, "batch size per process", check=">= 1")
    eval_batch_size: int = flag(64, "evaluation batch size per process", check=">= 1")
    num_train_epochs: int = flag(1, "epochs to train (unless --max_train_steps is set)", check=">= 1")
    max_train_steps: int | None = flag(None, "optimizer steps to train; overrides --num_train_epochs", check=">= 1")
    gradient_accumulation_steps: int = flag(1, "batches per optimizer step", check=">= 1")
    learning_rate: float = flag(1e-4, "peak learning rate", check="> 0")
    lr_scheduler: Literal[LR_SCHEDULERS] = flag("constant", "diffusers' get_scheduler name")
    lr_warmup_steps: int = flag(0, "learning-rate warm-up steps", check=">= 0")
    lr_num_cycles: int = flag(1, "cycles of cosine_with_restarts", check=">= 1")
    lr_power: float = flag(1.0, "power of the polynomial schedule", check="> 0")
    adam_beta1: float = flag(0.5, "AdamW beta1", check="[0, 1)")
    adam_beta2: float = flag(0.9, "AdamW beta2", check="[0, 1)")
    adam_weight_decay: float = flag(0.0, "AdamW weight decay", check=">= 0")
    adam_epsilon: float = flag(1e-8, "AdamW epsilon", check="> 0")
    max_grad_norm: float = flag(1.0, "gradient clipping norm (0: no clipping)", check=">= 0")
    mixed_precision: Literal[MIXED_PRECISION] | None = flag(
        None, "default: Accelerate's config / `accelerate launch` setting"
    )
    allow_tf32: bool = flag(False, "allow TF32 matmuls and convolutions on Ampere and newer GPUs (faster)")
    cpu: bool = flag(False, "train on the CPU even where a GPU is present")


@dataclass
class TokenizerTrainingArguments:
    """What only the tokenizer's loop does (its classifier and prior counterparts would be their own flags)."""

    TITLE: ClassVar[str] = "tokenizer training"

    scale_lr: bool = flag(False, "multiply learning rates by batch size x accumulation x processes")
    gradient_checkpointing: bool = flag(False, "recompute activations in the backward pass (less memory)")
    num_sample_images: int = flag(8, "images in each sample grid", check=">= 0")
    rfid: bool = flag(False, "compute rFID (needs feature-extractor weights: --rfid_weights)")
    rfid_weights: str | None = flag(None, "weights of the rFID feature extractor (Inception)")


@dataclass
class TokenizerLossArguments:
    TITLE: ClassVar[str] = "losses"

    reconstruction_loss: Literal["l1", "l2"] | None = flag(
        None, "default: the model config's reconstruction_loss_type"
    )
    reconstruction_weight: float = flag(1.0, "weight of the reconstruction loss", check=">= 0")
    quantizer_loss_weight: float | None = flag(None, "default: the model config's", check=">= 0")
    perceptual_weight: float = flag(0.0, "LPIPS weight (0: off)", check=">= 0")
    lpips_weights: str | None = flag(None, "file, folder or Hub id with VGG16 / LPIPS weights")
    discriminator_weight: float = flag(0.0, "adversarial weight (0: no GAN)", check=">= 0")
    discriminator_learning_rate: float | None = flag(None, "default: --learning_rate", check="> 0")
    discriminator_start: int = flag(0, "step at which the GAN losses begin", check=">= 0")
    discriminator_layers: int = flag(3, "PatchGAN layers", check=">= 1")
    discriminator_channels: int = flag(64, "channels of the first PatchGAN layer", check=">= 1")
    # Group norm by default: a sample's score does not depend on the rest of its batch (real and fake batches are
    # scored together), and no running statistics drift apart between DDP processes. "batch" is taming's choice.
    discriminator_norm: Literal["batch", "group", "none"] = flag("group", "normalisation of the discriminator")
    adaptive_weight: bool = flag(True, "taming's gradient-norm ratio on the decoder's last layer")
    lecam_weight: float = flag(0.0, "LeCam regularisation of D (0: off)", check=">= 0")
    lecam_decay: float = flag(0.999, "decay of LeCam's logit averages", check="[0, 1)")


@dataclass
class EMAArguments:
    TITLE: ClassVar[str] = "EMA"

    use_ema: bool = flag(False, "keep, evaluate and save an EMA of the weights (diffusers' EMAModel)")
    ema_decay: float = flag(0.999, "EMA decay", check="[0, 1)")
    ema_warmup: bool = flag(True, "ramp the EMA decay up from 0 (diffusers' EMAModel warmup)")


@dataclass
class RunArguments:
    TITLE: ClassVar[str] = "checkpoints, evaluation, logging"

    output_dir: str = flag("outputs/vqgan", "where the model, metrics, checkpoints and logs go")
    checkpointing_steps: int = flag(500, "save a checkpoint every N steps (0: never)", check=">= 0")
    checkpoints_total_limit: int | None = flag(None, "keep at most N checkpoints", check=">= 1")
    resume_from_checkpoint: str | None = flag(None, "'latest' or a checkpoint folder")
    validation_steps: int = flag(
        0, "evaluate every N steps (0: only at the end)", check=">= 0", aliases=("eval_steps",)
    )
    report_to: Literal[REPORT_TO] = flag("jsonl", "tracker (jsonl: <logging_dir>/train_log.jsonl)")
    tracker_project_name: str = flag("hf_vq_tokenizer", "project name given to the trackers")
    logging_dir: str = flag("logs", "tracker folder, relative to --output_dir")
    logging_steps: int = flag(10, "log the training losses every N steps", check=">= 1")
    progress_bar: bool = flag(True, "show a progress bar")


@dataclass
class ReliabilityArguments:
    """The divergence guard (hf_vq/training/divergence.py), shared by every training command."""

    TITLE: ClassVar[str] = "divergence guard"

    on_divergence: Literal[ON_DIVERGENCE] = flag(
        "stop",
        "when the loss or gradients become non-finite or the loss jumps above --divergence_factor times its "
        "running average: stop with a message naming the step and the last good checkpoint, or skip that "
        "optimizer step",
    )
    divergence_factor: float = flag(
        10.0,
        "a loss above this multiple of its running average (and above its level in "
        "the first steps) counts as divergence (0: off)",
        check=">= 0",
    )


def without_flags(name: str, group: type, *flags: str) -> type:
    """The flag group `name`: `group` less `flags` (for a command that must not take them)."""
    hints = typing.get_type_hints(group)
    kept = [(item.name, hints[item.name], item) for item in dataclasses.fields(group) if item.name not in flags]
    reduced = dataclasses.make_dataclass(name, kept)
    reduced.__module__, reduced.TITLE = __name__, group.TITLE
    reduced.SECTION = getattr(group, "SECTION", "training")
    reduced.__doc__ = f"{group.__name__} without {', '.join('--' + flag for flag in flags)}."
    return reduced


# `--tokenizer_hub_id` names the Hub repo of the tokenizer a classifier or prior reads: the tokenizer's own command
# has none to name.
TokenizerHubArguments = without_flags("TokenizerHubArguments", HubArguments, "tokenizer_hub_id")


# ------------------------------------------------------------------------------------------------ typed configs
# A command's parsed flags are one object of its config class: the dataclass that inherits the command's flag
# groups (each a field with its type, default and check), plus the config file's checked `model:` section.


@dataclass
class TrainingConfig(ConfigArguments, DataArguments, OptimizationArguments, RunArguments, ReliabilityArguments):
    """What every training command has: what the shared machinery (`loop.py`, `end_of_run.py`) reads."""

    model_config: dict[str, Any] = field(default_factory=dict)  # the `model:` section, checked against its class


def flag_values(config: TrainingConfig) -> dict[str, Any]:
    """The config's flags and `model_config` by name, the secret ones (`SECRET_FLAGS`) left out."""
    return {
        item.name: getattr(config, item.name) for item in dataclasses.fields(config) if item.name not in SECRET_FLAGS
    }


@dataclass
class TokenizerTrainingConfig(
    TrainingConfig,
    TokenizerModelArguments,
    AugmentationArguments,
    TokenizerTrainingArguments,
    TokenizerLossArguments,
    EMAArguments,
    TokenizerHubArguments,
):
    """The flags of `hf-vq train-tokenizer`.

    Example:
        >>> from hf_vq.training.tokenizer_command import resolve_tokenizer_args
        >>> config = resolve_tokenizer_args({"config": "configs/vqgan_tiny.yaml",
        ...                                  "train_data_dir": "images"})  # doctest: +SKIP
        >>> type(config).__name__, config.learning_rate  # doctest: +SKIP
        ('TokenizerTrainingConfig', 0.001)
    """


@dataclass
class TokenTrainingConfig(TrainingConfig, TokenCacheArguments, LabelArguments, HubArguments):
    """What the commands that train on a tokenizer's cached token grids (classifier, prior) share: what the token
    cache (`token_data.py`) reads."""


@dataclass
class ClassifierTrainingConfig(TokenTrainingConfig, ClassifierArguments):
    """The flags of `hf-vq train-classifier`."""


# ------------------------------------------------------------------------------------------------ commands


@dataclass(frozen=True)
class TrainingCommand:
    """A training command: its flag groups (in --help order), the typed config class its parsed flags become (the
    dataclass inheriting those groups), its own defaults, the model config class that checks the `model:` section
    ("module:Class", imported only when a config is read) and its cross-flag checks."""

    name: str
    description: str
    groups: tuple[type, ...]
    config_class: type[TrainingConfig]
    model_config_class: str | Callable[[dict[str, Any]], str]  # or a function of the flags' values giving one
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)
    check: Callable[[TrainingConfig], None] | None = None
    trains: bool = True  # False: a command that reads data without training (`hf-vq encode`): no run checks

    def __post_init__(self) -> None:
        # The --help groups and the config class are two lists of the same groups: they must not drift apart.
        flags = {item.name for item in dataclasses.fields(self.config_class)} - {"model_config"}
        if flags != set(self.specs()):
            raise TypeError(
                f"{self.name}: {self.config_class.__name__} and the command's groups differ in "
                f"{sorted(flags ^ set(self.specs()))}"
            )

    def specs(self) -> dict[str, FlagSpec]:
        return flag_specs(self.groups)

    def model_config_class_for(self, values: dict[str, Any]) -> str:
        """ "module:Class" of the model config that checks the `model:` section, given the flags' values."""
        if callable(self.model_config_class):
            return self.model_config_class(values)
        return self.model_config_class

    def default_values(self) -> dict[str, Any]:
        return {name: self.defaults.get(name, spec.default) for name, spec in self.specs().items()}


def build_parser(
    command: TrainingCommand, parser: argparse.ArgumentParser | None = None, *, suppress_defaults: bool = True
) -> argparse.ArgumentParser:
    """The command's flags on `parser` (a new one by default). With `suppress_defaults` (the default), parsing
    returns only the flags given, for `resolve_args` to lay over the config file."""
    if parser is None:
        parser = OneLineErrorParser(prog=command.name, description=command.description)
    add_flags(parser, command.groups, command.defaults, suppress_defaults=suppress_defaults)
    return parser


def parse_args(command: TrainingCommand, argv: list[str] | None = None) -> TrainingConfig:
    """Command-line flags over the config file over the defaults, checked (`ConfigError` if not usable). A flag of
    another command is refused naming the command that has it."""
    parser = build_parser(command)
    given, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.error(unrecognized_flags_message(command.name, unknown))
    return resolve_args(command, vars(given))


def resolve_args(command: TrainingCommand, given: dict[str, Any]) -> TrainingConfig:
    """Built-in defaults, then the YAML file named by `given["config"]`, then the `given` flags; checked.

    `given` holds the flags actually given (from a parser built with suppressed defaults, or a dict from Python,
    whose values are converted as a config file's are); `model_config` may replace the `model:` section.
    """
    given = dict(given)
    model_config = given.pop("model_config", None)
    specs = command.specs()
    values, where = command.default_values(), {}  # where: how a message names the place a value came from
    model_section: dict[str, Any] = {}
    if given.get("config"):
        model_section = _read_config_file(specs, given["config"], values, where, command.name)
    for key, value in given.items():
        name = _flag_name(specs, key, f"--{key}", None, command.name)
        values[name], where[name] = convert(value, specs[name].type, f"--{key}"), f"--{name}"
    for name, spec in specs.items():
        check_bound(values[name], spec.check, where.get(name, f"--{name}"))
    # The model: section is checked once every flag is known: a flag may choose the model (train-prior's prior_type).
    if model_config is None:
        model_config = (
            check_model_section(command.model_config_class_for(values), model_section, given["config"])
            if model_section
            else {}
        )
    args = command.config_class(**values, model_config=model_config)
    check_common_args(args) if command.trains else check_data_source(args)
    if command.check is not None:
        command.check(args)
    return args


def _read_config_file(
    specs: dict[str, FlagSpec], path: str, values: dict[str, Any], where: dict[str, str], command_name: str
) -> dict[str, Any]:
    """Lay the data: and training: sections of `path` over `values` (checked and converted); return its model:
    section (checked by `check_model_section`)."""
    sections = load_config_file(path)
    for section in ("data", "training"):
        for key, value in sections[section].items():
            label = f"{section}.{key} in {path}"
            name = _flag_name(specs, key, label, section, command_name)
            values[name], where[name] = convert(value, specs[name].type, label), label
    return sections["model"]


def add_command_subparser(
    subparsers: argparse._SubParsersAction,
    command: TrainingCommand,
    help: str,  # noqa: A002
    run: Callable[[TrainingConfig], Any],
) -> argparse.ArgumentParser:
    """Register `command` with `hf-vq` (hf_vq/cli.py): only the flags given reach `run`'s namespace over the config
    file over the defaults."""
    parser = subparsers.add_parser(command.name, help=help, description=command.description)
    build_parser(command, parser)
    parser.set_defaults(handler=lambda args: run(resolve_args(command, _given(args))))
    return parser


def run_script(command: TrainingCommand, run: Callable[[TrainingConfig], Any], argv: list[str] | None = None) -> int:
    """`scripts/<command>.py`: the same flags and one-line errors as `hf-vq <command>`."""
    from ..errors import run_reporting_user_errors
    from ..logs import quiet_third_party_logs

    with quiet_third_party_logs():  # other libraries' INFO lines unless HF_VQ_DEBUG=1
        return run_reporting_user_errors(command.name, lambda: run(parse_args(command, argv)))


def _given(args: argparse.Namespace) -> dict[str, Any]:
    return {key: value for key, value in vars(args).items() if key not in ("handler", "command")}


def _flag_name(specs: dict[str, FlagSpec], key: str, label: str, section: str | None, command_name: str) -> str:
    """The flag `key` names (itself or an alias), or a `ConfigError` naming the nearest valid one."""
    for name, spec in specs.items():
        if key == name or key in spec.aliases:
            if section is not None and spec.section != section:
                where = f"the {spec.section}: section" if spec.section else "the command line only"
                raise ConfigError(f"{label}: {key!r} belongs in {where}, not in {section}:")
            return name
    valid = [name for name, spec in specs.items() if section is None or spec.section == section]
    what = f"key {key!r} in section {section}:" if section else f"flag {label}"
    owners = [name for name in commands_with_flag(key) if name != command_name]
    elsewhere = f" (--{key} is a flag of {', '.join(owners)}, not of {command_name})" if owners else ""
    raise ConfigError(f"{label}: unknown {what}{did_you_mean(key, valid)}{elsewhere}; see --help for the valid names")


def load_config_file(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Read a YAML config into its sections; unknown sections are an error (a typo would silently do nothing)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {' '.join(str(error).split())}") from None
    if not isinstance(content, dict):
        raise ConfigError(f"config file {path} must hold a mapping with sections {', '.join(CONFIG_SECTIONS)}")
    for name in content:
        if name not in CONFIG_SECTIONS:
            raise ConfigError(
                f"config file {path} has unknown section {name!r}{did_you_mean(str(name), CONFIG_SECTIONS)}; "
                f"allowed: {', '.join(CONFIG_SECTIONS)}"
            )
    sections = {name: content.get(name) or {} for name in CONFIG_SECTIONS}
    for name, section in sections.items():
        if not isinstance(section, dict):
            raise ConfigError(f"section {name!r} of {path} must be a mapping, got {type(section).__name__}")
    return sections


def check_model_section(model_config_class: str, section: dict[str, Any], path: str | None) -> dict[str, Any]:
    """The `model:` section with each key checked against the model config class's own fields (not the generic
    ones of `PreTrainedConfig`) and each value converted to the field's type."""
    config_class = _import(model_config_class)
    own = _own_config_fields(config_class)
    checked = {}
    for key, value in section.items():
        label = f"model.{key} in {path}"
        if key not in own:
            raise ConfigError(
                f"{label}: unknown key {key!r} in section model: ({config_class.__name__} has no such "
                f"field){did_you_mean(str(key), own)}"
            )
        checked[key] = convert(value, own[key], label)
    return checked


def _own_config_fields(config_class: type) -> dict[str, Any]:
    """Field name -> annotation, for the fields the class adds to its base config."""
    base_fields = set()
    for base in config_class.__mro__[1:]:
        base_fields |= set(getattr(base, "__dataclass_fields__", {}))
    return {name: item.type for name, item in config_class.__dataclass_fields__.items() if name not in base_fields}


def _import(dotted: str) -> type:
    module, _, name = dotted.partition(":")
    return getattr(importlib.import_module(module), name)


# ------------------------------------------------------------------------------------------------ checks


def check_common_args(args: TrainingConfig) -> None:
    """Checks that every training command needs: one data source, a resumable checkpoint, a usable tracker."""
    check_data_source(args)
    resume = args.resume_from_checkpoint
    if resume and resume != "latest" and not Path(resume).is_dir():
        raise ConfigError(f"--resume_from_checkpoint {resume!r} is neither 'latest' nor a checkpoint folder")
    if args.push_to_hub and not args.hub_model_id:
        raise ConfigError("--push_to_hub needs --hub_model_id (e.g. your-name/vqgan-fashion-mnist)")
    if 0 < args.divergence_factor <= 1:
        raise ConfigError(
            f"--divergence_factor must be above 1 (or 0 to turn the jump check off), got {args.divergence_factor}"
        )
    check_tracker_installed(args.report_to)


def check_data_source(args: Any) -> None:
    """Exactly one source of images (`--dataset_name` or `--train_data_dir`), or, for the commands that have it, a
    `--token_dataset` instead of both."""
    reads_tokens = isinstance(args, TokenCacheArguments)  # the classifier and the prior; not the tokenizer, encode
    token_dataset = args.token_dataset if reads_tokens else None
    if token_dataset and (args.dataset_name or args.train_data_dir):
        raise ConfigError(
            "--token_dataset replaces the images: pass either it or --dataset_name / --train_data_dir, not both"
        )
    if token_dataset:
        return
    or_tokens = " (or --token_dataset, the tokens `hf-vq encode` made)" if reads_tokens else ""
    if not args.dataset_name and not args.train_data_dir:
        raise ConfigError(
            "no training data: pass --dataset_name (Hub id, parquet, 'fashion_mnist') or --train_data_dir (a folder)"
            + or_tokens
        )
    if args.dataset_name and args.train_data_dir:
        raise ConfigError("pass only one of --dataset_name and --train_data_dir")
    if args.train_data_dir and not Path(args.train_data_dir).exists():
        raise ConfigError(f"--train_data_dir {args.train_data_dir!r} does not exist")


def check_tracker_installed(report_to: str) -> None:
    """Accelerate skips a tracker whose package is missing without a word; a run that logs nothing is worse than
    one that does not start."""
    packages = TRACKER_PACKAGES.get(report_to)
    if packages and not any(importlib.util.find_spec(package) for package in packages):
        raise ConfigError(
            f"--report_to {report_to} needs the {packages[0]} package, which is not installed: "
            f"`pip install {packages[0]}`, or pick another tracker (--report_to jsonl)"
        )


def check_tokenizer_args(args: TrainingConfig) -> None:
    if not args.model_config and not args.pretrained_model_name_or_path:
        raise ConfigError(
            "no model: pass --config with a model: section (configs/vqgan_*.yaml) or --pretrained_model_name_or_path"
        )
    if args.lecam_weight > 0 and args.discriminator_weight == 0:
        raise ConfigError("--lecam_weight regularises the discriminator, which is off: set --discriminator_weight > 0")
    if args.model_config and not args.pretrained_model_name_or_path:
        check_model_config(TOKENIZER_COMMAND.model_config_class, args.model_config)
        _check_resolution(args.resolution, args.model_config)
    if args.pretrained_model_name_or_path:
        check_model_path("pretrained_model_name_or_path", args.pretrained_model_name_or_path)
    if args.reinitialize_codebook and not args.pretrained_model_name_or_path:
        raise ConfigError(
            "--reinitialize_codebook re-initialises a pretrained codebook: pass --pretrained_model_name_or_path (to "
            "train from scratch with k-means++, set kmeans_init: true in the model: section)"
        )
    if args.discriminator_learning_rate is None:
        args.discriminator_learning_rate = args.learning_rate


def check_tokenizer_flag(args: Any) -> None:
    """The commands that read a tokenizer's tokens (classifier, prior, encode): the tokenizer named and plausible."""
    if not args.tokenizer_name_or_path:
        raise ConfigError("no tokenizer: pass --tokenizer_name_or_path (a trained tokenizer's folder or Hub id)")
    check_model_path("tokenizer_name_or_path", args.tokenizer_name_or_path)


def check_classifier_args(args: ClassifierTrainingConfig) -> None:
    check_tokenizer_flag(args)
    if args.token_dataset and args.model_type == "pixel_vit":
        raise ConfigError(
            "--model_type pixel_vit reads pixels, and --token_dataset holds only tokens: pass the images "
            "(--dataset_name / --train_data_dir)"
        )


def check_model_path(flag_name: str, name_or_path: str) -> None:
    """A local folder must hold a saved model (config.json); a path that is plainly local (absolute or starting
    with ".") must exist. Anything else may be a Hub id, checked when it is loaded."""
    path = Path(name_or_path)
    if path.exists() and not (path / "config.json").is_file():
        raise ConfigError(
            f"--{flag_name} {str(path)!r} holds no config.json: pass the folder a tokenizer "
            "was saved in (its --output_dir)"
        )
    if not path.exists() and (path.is_absolute() or name_or_path.startswith(".")):
        raise ConfigError(f"--{flag_name} {str(path)!r} does not exist")


def check_model_config(model_config_class: str, model_config: dict[str, Any]) -> None:
    """Build the model config once, so that an inconsistent architecture is one line before anything starts."""
    config_class = _import(model_config_class)
    checked_config(lambda: config_class(**model_config))


def checked_config(build: Callable[[], Any], what: str = "model: section") -> Any:
    """`build()`'s model config; a config's own refusal (a strict dataclass check, a bad combination) becomes one
    `ConfigError` line saying where the values came from (`what`)."""
    from huggingface_hub.errors import StrictDataclassError

    try:
        return build()
    except (TypeError, ValueError, StrictDataclassError) as error:
        cause = error.__cause__ if isinstance(error, StrictDataclassError) and error.__cause__ else error
        raise ConfigError(f"{what}: {' '.join(str(cause).split())}") from error


def _check_resolution(resolution: int | None, model_config: dict[str, Any]) -> None:
    """The config checks its own image_size; a --resolution the downsampling factor does not divide would only
    fail later, as a shape mismatch between the images and their reconstructions."""
    if resolution is None:
        return
    config = _import(TOKENIZER_COMMAND.model_config_class)(**model_config)
    factor = config.downsampling_factor
    if resolution % factor != 0:
        raise ConfigError(
            f"--resolution {resolution} is not divisible by the tokenizer's downsampling factor {factor} (set by "
            f"{len(config.block_out_channels)} levels of block_out_channels): use a multiple of {factor}, such as "
            f"{max(factor, resolution // factor * factor)}"
        )


# The classifier caches each image's tokens once, so it has no augmentation flags, and its defaults differ: a ViT
# wants Adam's usual betas, weight decay and a cosine decay; the whole held-out split is evaluated (accuracy on 512
# images would be too noisy to compare).
CLASSIFIER_DEFAULTS = dict(
    output_dir="outputs/token_vit",
    train_batch_size=128,
    eval_batch_size=256,
    learning_rate=1e-3,
    adam_beta1=0.9,
    adam_beta2=0.999,
    adam_weight_decay=0.05,
    lr_scheduler="cosine",
    max_eval_samples=None,
    tracker_project_name="hf_vq_classifier",
    logging_steps=50,
)

TOKENIZER_COMMAND = TrainingCommand(
    name="train-tokenizer",
    description="Train a VQGAN image tokenizer with Accelerate. A YAML --config sets defaults; flags override it.",
    groups=(
        ConfigArguments,
        TokenizerModelArguments,
        DataArguments,
        AugmentationArguments,
        OptimizationArguments,
        TokenizerTrainingArguments,
        TokenizerLossArguments,
        EMAArguments,
        RunArguments,
        ReliabilityArguments,
        TokenizerHubArguments,
    ),
    config_class=TokenizerTrainingConfig,
    model_config_class="hf_vq.models.vqgan.configuration_vqgan:VQGANConfig",
    check=check_tokenizer_args,
)

CLASSIFIER_COMMAND = TrainingCommand(
    name="train-classifier",
    description="Train a ViT classifier on the token grids of a trained tokenizer, with Accelerate. A YAML --config "
    "sets defaults; flags override it.",
    groups=(
        ConfigArguments,
        TokenCacheArguments,
        ClassifierArguments,
        DataArguments,
        LabelArguments,
        OptimizationArguments,
        RunArguments,
        ReliabilityArguments,
        HubArguments,
    ),
    config_class=ClassifierTrainingConfig,
    model_config_class="hf_vq.models.token_vit.configuration_token_vit:TokenViTConfig",
    defaults=CLASSIFIER_DEFAULTS,
    check=check_classifier_args,
)


@dataclass
class PriorTrainingConfig(TokenTrainingConfig, PriorArguments, EMAArguments):
    """The flags of `hf-vq train-prior`.

    Example:
        >>> from hf_vq.training.prior_command import resolve_prior_args
        >>> config = resolve_prior_args({"config": "configs/maskgit_fashion_mnist.yaml",
        ...                              "tokenizer_name_or_path": "outputs/vqgan"})  # doctest: +SKIP
        >>> config.prior_type, config.label_dropout  # doctest: +SKIP
        ('maskgit', 0.1)
    """


def check_prior_args(config: PriorTrainingConfig) -> None:
    """Reject what cannot work, naming the flag or config key to change."""
    check_tokenizer_flag(config)  # the tokenizer named and loadable (the same token cache)
    spec = get_prior_spec(config.prior_type)  # an unknown prior_type lists the valid ones
    if config.model_config and not config.pretrained_model_name_or_path:
        check_model_config(spec.config_class, config.model_config)
    if config.prior_type != "autoregressive" and (config.top_k is not None or config.top_p is not None):
        raise ConfigError(
            f"--top_k and --top_p sample the autoregressive prior; --prior_type {config.prior_type} does not take them"
        )
    if config.model_config.get("num_classes") == 0 and config.guidance_scale > 1:
        raise ConfigError(
            f"--guidance_scale {config.guidance_scale} needs a class-conditional prior, but the "
            "config's model: section sets num_classes: 0 (unconditional): use --guidance_scale 1"
        )
    if config.inception_weights and not os.path.isfile(config.inception_weights):
        raise ConfigError(f"--inception_weights {config.inception_weights!r} is not a file")
    if config.token_dataset and (config.eval_classifier_name_or_path or config.inception_weights):
        raise ConfigError(
            "--eval_classifier_name_or_path and --inception_weights judge samples against real images, and "
            "--token_dataset holds only tokens: pass the images (--dataset_name / --train_data_dir) instead, or "
            "drop those flags (the token metrics are measured either way)"
        )


def prior_config_class(values: dict[str, Any]) -> str:
    """The model config class that checks the `model:` section: the chosen prior's."""
    return get_prior_spec(values["prior_type"]).config_class


# MaskGIT's AdamW (beta2 0.96, weight decay 0.045) with a cosine decay; the whole held-out split gives the
# validation loss and the real images the samples are compared with.
PRIOR_DEFAULTS = dict(
    output_dir="outputs/maskgit",
    train_batch_size=64,
    eval_batch_size=256,
    learning_rate=1e-3,
    adam_beta1=0.9,
    adam_beta2=0.96,
    adam_weight_decay=0.045,
    lr_scheduler="cosine",
    max_eval_samples=None,
    tracker_project_name="hf_vq_prior",
    logging_steps=50,
)

PRIOR_COMMAND = TrainingCommand(
    name="train-prior",
    description="Train a class-conditional token prior (--prior_type; default MaskGIT) over the token grids of a "
    "trained tokenizer, with Accelerate; the output folder is its generation pipeline. A YAML --config "
    "sets defaults; flags override it.",
    groups=(
        ConfigArguments,
        TokenCacheArguments,
        PriorArguments,
        DataArguments,
        LabelArguments,
        OptimizationArguments,
        EMAArguments,
        RunArguments,
        ReliabilityArguments,
        HubArguments,
    ),
    config_class=PriorTrainingConfig,
    model_config_class=prior_config_class,
    defaults=PRIOR_DEFAULTS,
    check=check_prior_args,
)


# ------------------------------------------------------------------------------------------------ hf-vq encode


@dataclass
class EncodeArguments:
    """`hf-vq encode`: the tokenizer, where the token dataset goes, and how it is cut into resumable shards."""

    TITLE: ClassVar[str] = "encode"

    tokenizer_name_or_path: str | None = flag(None, "tokenizer (folder or Hub id) whose tokens to write")
    revision: str | None = flag(
        None, "revision (branch, tag or commit) of --tokenizer_name_or_path", aliases=("tokenizer_revision",)
    )
    output_dir: str | None = flag(None, "folder the token dataset is saved to (save_to_disk layout)")
    batch_size: int | None = flag(
        None,
        "images per tokenizer forward (default: 16 on the CPU, where small batches keep the feature maps in the "
        "processor's caches, 256 on a GPU)",
        check=">= 1",
    )
    shard_size: int = flag(
        4096, "images per shard: each is saved when done, and a resumed run does not encode it again", check=">= 1"
    )
    seed: int = flag(
        0, "seed of the part of the training split held out when the source has no evaluation split (as in training)"
    )
    cpu: bool = flag(False, "encode on the CPU even where a GPU is present")
    progress_bar: bool = flag(True, "show a progress bar")
    push_to_hub: bool = flag(False, "push the token dataset to the Hub (a dataset repo, with a dataset card)")
    hub_dataset_id: str | None = flag(None, "dataset repo to push to, as namespace/name")
    hub_token: str | None = flag(None, "token to push with (default: HF_TOKEN or `hf auth login`)")
    private: bool = flag(False, "create the dataset repo as private")


# Tokens are encoded once: no data loader workers (the tokenizer forward is the work).
EncodeDataArguments = without_flags("EncodeDataArguments", DataArguments, "dataloader_num_workers")


@dataclass
class EncodeConfig(ConfigArguments, EncodeDataArguments, LabelArguments, EncodeArguments):
    """The flags of `hf-vq encode`.

    Example:
        >>> from hf_vq.training.encode_command import resolve_encode_args
        >>> config = resolve_encode_args({"tokenizer_name_or_path": "outputs/vqgan", "dataset_name": "fashion_mnist",
        ...                               "output_dir": "outputs/tokens"})  # doctest: +SKIP
        >>> config.batch_size, config.max_eval_samples  # doctest: +SKIP
        (None, None)
    """

    model_config: dict[str, Any] = field(default_factory=dict)  # no model: section; kept for `resolve_args`


def check_encode_args(config: EncodeConfig) -> None:
    check_tokenizer_flag(config)
    if not config.output_dir:
        raise ConfigError("no --output_dir: pass the folder the token dataset is saved to")
    if config.push_to_hub and not config.hub_dataset_id:
        raise ConfigError("--push_to_hub needs --hub_dataset_id (e.g. your-name/fashion-mnist-tokens)")


ENCODE_COMMAND = TrainingCommand(
    name="encode",
    description="Tokenize an image dataset with a trained tokenizer into a token dataset (image_tokens, labels and "
    "the tokenizer's record), on one or several processes (torchrun / accelerate launch), resumable.",
    groups=(ConfigArguments, EncodeArguments, EncodeDataArguments, LabelArguments),
    config_class=EncodeConfig,
    model_config_class="hf_vq.models.vqgan.configuration_vqgan:VQGANConfig",
    defaults=dict(max_eval_samples=None),
    check=check_encode_args,
    trains=False,
)


__all__ += [
    "ENCODE_COMMAND",
    "EncodeConfig",
    "CLASSIFIER_COMMAND",
    "CLASSIFIER_DEFAULTS",
    "PRIOR_COMMAND",
    "PRIOR_DEFAULTS",
    "PriorTrainingConfig",
    "TOKENIZER_COMMAND",
    "ClassifierTrainingConfig",
    "TokenTrainingConfig",
    "TokenizerTrainingConfig",
    "TrainingCommand",
    "TrainingConfig",
    "build_parser",
    "check_model_config",
    "check_model_path",
    "flag",
    "flag_values",
    "load_config_file",
    "parse_args",
    "resolve_args",
]
