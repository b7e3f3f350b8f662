"""`QuantizerConfig`: every option of every quantizer of this package, its validation and its documentation, once.

The quantizer classes validate their arguments through it, `VQGANConfig` stores its `ARCHITECTURE_FIELDS` (and
builds its quantizer from it), and the comparison study describes its methods with its field names. A quantizer
is built from one with `registry.build_quantizer`.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .search import DISTANCES, check_search_backend

# The one registration of a quantizer method: its `quantizer_type` -> the file of this package that defines its class
# (decorated with `@register_quantizer(name)`). The registry imports that file when the type is first built, the
# saved checkpoints carry it, and every list of types (this config's check, VQGANConfig's) is read from here.
QUANTIZER_MODULES = {"vector": "vector_quantizer", "grouped": "grouped", "residual": "residual", "fsq": "fsq"}
QUANTIZER_TYPES = tuple(QUANTIZER_MODULES)
GRADIENT_ESTIMATORS = ("ste", "rotation")
ALTERNATING_MODES = ("mean", "sgd")
AFFINE_MODES = (None, "learned", "running", "linear")
CODEBOOK_UPDATES = ("gradient", "ema")
# Options that change how a quantizer runs, never what it computes: the input layout and the nearest-code search.
# A model config does not store them.
RUNTIME_FIELDS = ("channel_dim", "max_block_elements", "search_backend")
# Keyword arguments of the quantizer classes whose config field has another name: FiniteScalarQuantizer(levels=...)
# is QuantizerConfig(fsq_levels=...) (the field names the quantizer type it belongs to).
ARGUMENT_ALIASES = {"levels": "fsq_levels"}
_FLOAT_FIELDS = (
    "beta",
    "sync_nu",
    "affine_lr",
    "affine_momentum",
    "alternating_step_size",
    "alternating_lr",
    "ema_decay",
)


@dataclass
class QuantizerConfig:
    """Every option of the quantizers of `hf_vq.quantization`, checked when the config is built.

    Args:
        quantizer_type: "vector" (one codebook), "grouped" (product quantization over `num_groups` channel slices),
            "residual" (`num_quantizers` stages quantizing successive residuals) or "fsq" (finite scalar
            quantization, no codebook: set `fsq_levels`; `embed_dim` and `codebook_size` follow from them).
        embed_dim: size of each vector (channels of the input on `channel_dim`).
        codebook_size: number of codes K (per group or per residual stage).
        num_groups: channel groups of a grouped quantizer; must divide `embed_dim`.
        num_quantizers: stages of a residual quantizer.
        fsq_levels: values per channel of the "fsq" quantizer, e.g. [8, 5, 5, 5] (1000 codes).
        beta: convex weight in [0, 1] of the codebook part of the loss; the commitment part gets `1 - beta`. The
            classic VQ-VAE commitment weight `b` corresponds to `beta = 1 / (1 + b)` (b = 0.25: beta = 0.8).
        sync_nu: strength nu of the synchronized update (0: plain straight-through).
        affine: None, "learned" or "running" (per-dimension affine re-parameterised codes, Huh et al.) or "linear"
            (SimVQ: the raw codes frozen, the codebook C @ W^T with one learned `embed_dim` x `embed_dim` matrix W).
        affine_lr: learning-rate multiplier of the learned affine scale and shift.
        affine_groups: groups of consecutive codes with their own scale and shift; must divide `codebook_size`.
        affine_momentum: momentum in (0, 1] of the running statistics of the encoder output ("running" affine).
        alternating: False, "mean" (or True: move the selected codes `alternating_step_size` of the way to their
            cluster means before the lookup) or "sgd" (the authors' form: one SGD step of the codebook parameters on
            the codebook loss, learning rate `alternating_lr`).
        alternating_step_size: fraction of the way the "mean" step moves a code, in (0, 1] (1 = a full k-means step).
        alternating_lr: learning rate of the "sgd" step (vqtorch's example uses 50 on the mean squared error).
        gradient_estimator: "ste" (straight-through) or "rotation" (the rotation trick of Fifty et al. 2024).
        codebook_update: "gradient" (the optimizer trains the codes) or "ema" (moving averages of the cluster means,
            VQ-VAE-2 / SoundStream; combine with `replace_freq` for dead-code restarts).
        ema_decay: decay in [0, 1) of the EMA statistics.
        kmeans_init: initialise the codebook with k-means++ on the first training batch.
        kmeans_iterations: Lloyd iterations of the k-means initialisation.
        kmeans_max_samples: vectors per process used by the k-means initialisation.
        replace_freq: reset a code unused for this many training steps to an encoder vector (0: never).
        distance: "euclidean" or "cosine" (vectors and codes l2-normalised).
        channel_dim: axis of the input holding the `embed_dim` channels (1 for (B, C, H, W)).
        max_block_elements: most distances the nearest-code search holds at once (None: a per-device default, see
            search.default_max_block_elements).
        search_backend: nearest-code search, "auto" (the fused Triton kernel on CUDA, FAISS on the CPU where it is
            faster, else blocked PyTorch), or "blocked", "faiss", "triton" to force one (see search.py).

    Example:
        >>> from hf_vq.quantization import QuantizerConfig, build_quantizer
        >>> config = QuantizerConfig(embed_dim=8, codebook_size=32, affine="learned", sync_nu=0.2)
        >>> type(build_quantizer(config)).__name__
        'VectorQuantizer'
        >>> QuantizerConfig(quantizer_type="fsq", fsq_levels=[8, 5, 5, 5]).codebook_size
        1000
        >>> QuantizerConfig.from_dict({"embed_dim": 8, "codebok_size": 32})
        Traceback (most recent call last):
        ...
        ValueError: unknown quantizer option 'codebok_size': did you mean 'codebook_size'? ...
    """

    quantizer_type: str = "vector"
    embed_dim: int | None = None
    codebook_size: int | None = None
    num_groups: int = 1
    num_quantizers: int = 1
    fsq_levels: list[int] | None = None
    beta: float = 0.95
    sync_nu: float = 0.0
    affine: str | None = None
    affine_lr: float = 1.0
    affine_groups: int = 1
    affine_momentum: float = 0.1
    alternating: bool | str = False
    alternating_step_size: float = 0.5
    alternating_lr: float = 50.0
    gradient_estimator: str = "ste"
    codebook_update: str = "gradient"
    ema_decay: float = 0.99
    kmeans_init: bool = False
    kmeans_iterations: int = 10
    kmeans_max_samples: int = 16384
    replace_freq: int = 0
    distance: str = "euclidean"
    channel_dim: int = 1
    max_block_elements: int | None = None
    search_backend: str = field(default="auto")

    def __post_init__(self) -> None:
        for name in _FLOAT_FIELDS:  # 1 and 1.0 are one setting; JSON and YAML give either
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(self, name, float(value))
        if self.fsq_levels is not None:
            self.fsq_levels = list(self.fsq_levels)
        if self.quantizer_type == "fsq" and self.fsq_levels is not None:
            # FSQ's sizes follow from its levels; given ones must agree (checked below).
            if self.embed_dim is None:
                self.embed_dim = len(self.fsq_levels)
            if self.codebook_size is None:
                self.codebook_size = math.prod(self.fsq_levels)
        self.validate()

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def architecture_fields(cls) -> tuple[str, ...]:
        """The options that define a trained quantizer (what a model config stores): all but `RUNTIME_FIELDS`."""
        return tuple(name for name in cls.field_names() if name not in RUNTIME_FIELDS)

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> "QuantizerConfig":
        """A config from a mapping of options (field names, or the quantizer classes' own argument names such as
        FSQ's `levels`); an unknown name raises a `ValueError` naming the nearest valid one."""
        options = cls.canonical_names(options)
        check_option_names(options, cls.field_names())
        return cls(**options)

    @staticmethod
    def canonical_names(options: Mapping[str, Any]) -> dict[str, Any]:
        """`options` with the quantizer classes' argument names (`ARGUMENT_ALIASES`) renamed to config fields."""
        return {ARGUMENT_ALIASES.get(name, name): value for name, value in options.items()}

    def to_dict(self, runtime: bool = True) -> dict[str, Any]:
        """The options as a dict (without `RUNTIME_FIELDS` when `runtime=False`)."""
        options = asdict(self)
        return options if runtime else {name: options[name] for name in self.architecture_fields()}

    @property
    def tokens_per_position(self) -> int:
        """Ids per vector: 1, `num_groups` (grouped) or `num_quantizers` (residual)."""
        return {"grouped": self.num_groups, "residual": self.num_quantizers}.get(self.quantizer_type, 1)

    def validate(self) -> None:
        """Raise a `ValueError` naming the option to change for any invalid value or combination."""
        _check_choice("quantizer_type", self.quantizer_type, QUANTIZER_TYPES)
        if self.quantizer_type == "fsq":
            self._validate_fsq()
        elif self.fsq_levels is not None:
            raise ValueError(f"fsq_levels only applies to quantizer_type='fsq' (got {self.quantizer_type!r})")
        self._validate_sizes()
        self._validate_loss_and_gradient()
        self._validate_codebook()
        self._validate_successor_methods()
        self._validate_structure()
        check_search_backend(self.search_backend)

    def _validate_fsq(self) -> None:
        levels = self.fsq_levels
        if not levels or any(not isinstance(level, int) or level < 2 for level in levels):
            raise ValueError(
                f"quantizer_type='fsq' needs fsq_levels (levels), a non-empty list of integers >= 2 (values per "
                f"channel), got {levels}"
            )
        if self.embed_dim != len(levels) or self.codebook_size != math.prod(levels):
            raise ValueError(
                f"quantizer_type='fsq' with fsq_levels={levels} quantizes {len(levels)} channels into "
                f"{math.prod(levels)} codes: set embed_dim={len(levels)} and codebook_size={math.prod(levels)} "
                f"(got {self.embed_dim} and {self.codebook_size})"
            )

    def _validate_sizes(self) -> None:
        for name in ("embed_dim", "codebook_size"):
            if getattr(self, name) is None:
                raise ValueError(f"{name} is required for quantizer_type={self.quantizer_type!r}")
        for name in ("embed_dim", "codebook_size", "num_groups", "num_quantizers", "affine_groups"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.kmeans_max_samples < 1:
            raise ValueError(f"kmeans_max_samples must be a positive integer, got {self.kmeans_max_samples}")
        if self.kmeans_iterations < 0:
            raise ValueError(f"kmeans_iterations must be >= 0, got {self.kmeans_iterations}")
        if self.replace_freq < 0:
            raise ValueError(f"replace_freq must be >= 0 (0 disables dead-code replacement), got {self.replace_freq}")

    def _validate_loss_and_gradient(self) -> None:
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(
                f"beta must lie in [0, 1], got {self.beta}: it weights the codebook part of the loss against the "
                "commitment part. For a classic VQ-VAE commitment weight b use beta = 1 / (1 + b)."
            )
        if self.sync_nu < 0:
            raise ValueError(f"sync_nu must be >= 0 (0 is plain straight-through), got {self.sync_nu}")
        _check_choice("gradient_estimator", self.gradient_estimator, GRADIENT_ESTIMATORS)

    def _validate_codebook(self) -> None:
        _check_choice("distance", self.distance, DISTANCES)
        if self.affine not in AFFINE_MODES:
            raise ValueError(f"unknown affine mode {self.affine!r}; use one of {AFFINE_MODES}")
        if self.affine_lr <= 0:
            raise ValueError(f"affine_lr must be > 0, got {self.affine_lr}")
        if not 0.0 < self.affine_momentum <= 1.0:
            raise ValueError(f"affine_momentum must lie in (0, 1], got {self.affine_momentum}")
        if self.codebook_size % self.affine_groups != 0:
            raise ValueError(
                f"affine_groups={self.affine_groups} must divide codebook_size={self.codebook_size}: "
                "each group of consecutive codes shares one scale and shift"
            )
        if not 0.0 < self.alternating_step_size <= 1.0:
            raise ValueError(f"alternating_step_size must lie in (0, 1], got {self.alternating_step_size}")
        alternating_mode(self.alternating)

    def _validate_successor_methods(self) -> None:
        """SimVQ, EMA and the SGD alternating step: the combinations that would do nothing or fight each other."""
        if self.alternating_lr <= 0:
            raise ValueError(f"alternating_lr must be > 0, got {self.alternating_lr}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(
                f"ema_decay must lie in [0, 1), got {self.ema_decay}: it is the weight of the old statistics"
            )
        if self.affine == "linear" and self.affine_groups != 1:
            raise ValueError(
                "affine='linear' (SimVQ) has one matrix for the whole codebook; affine_groups must be 1: set "
                f"affine_groups=1 (got {self.affine_groups})"
            )
        _check_choice("codebook_update", self.codebook_update, CODEBOOK_UPDATES)
        fights_ema = self.affine is not None or alternating_mode(self.alternating) or self.sync_nu > 0
        if self.codebook_update == "ema" and fights_ema:
            raise ValueError(
                "codebook_update='ema' moves the codes to their cluster means itself and gives them no gradient; set "
                f"affine=None, alternating=False and sync_nu=0 (got {self.affine!r}, {self.alternating!r}, "
                f"{self.sync_nu})"
            )

    def _validate_structure(self) -> None:
        """The options that only apply to one quantizer type."""
        if self.quantizer_type == "grouped" and self.embed_dim % self.num_groups != 0:
            raise ValueError(
                f"num_groups={self.num_groups} must be a positive divisor of embed_dim={self.embed_dim} for "
                "quantizer_type='grouped'"
            )
        if self.quantizer_type == "residual" and self.distance != "euclidean":
            raise ValueError(
                "quantizer_type='residual' subtracts codes from its input, which unit-norm cosine codes cannot "
                "represent; use distance='euclidean' (or quantizer_type='grouped' for cosine codes)"
            )
        if self.quantizer_type != "grouped" and self.num_groups != 1:
            raise ValueError(
                f"num_groups={self.num_groups} only applies to quantizer_type='grouped' (got {self.quantizer_type!r})"
            )
        if self.quantizer_type != "residual" and self.num_quantizers != 1:
            raise ValueError(
                f"num_quantizers={self.num_quantizers} only applies to quantizer_type='residual' "
                f"(got {self.quantizer_type!r})"
            )


def alternating_mode(alternating: bool | str | None) -> str | None:
    """None (off), "mean" (today's step towards the cluster means; `True`) or "sgd" (the authors' inner SGD step)."""
    if alternating is True:
        return "mean"
    if alternating is False or alternating is None:
        return None
    if alternating not in ALTERNATING_MODES:
        raise ValueError(f"unknown alternating mode {alternating!r}; use False, True (= 'mean'), 'mean' or 'sgd'")
    return alternating


def check_option_names(options: Mapping[str, Any], valid: tuple[str, ...], owner: str = "quantizer option") -> None:
    """Raise a `ValueError` for the first name in `options` not in `valid`, naming the nearest valid name."""
    for name in options:
        if name not in valid:
            raise ValueError(f"unknown {owner} {name!r}: {_nearest_hint(name, valid)}valid names are {sorted(valid)}")


def _nearest_hint(name: str, valid: tuple[str, ...]) -> str:
    nearest = difflib.get_close_matches(name, valid, n=1)
    return f"did you mean {nearest[0]!r}? " if nearest else ""


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; use one of {choices}")
