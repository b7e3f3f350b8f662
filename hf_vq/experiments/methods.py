"""The quantizer methods of the comparison study: Huh et al. (each method alone and all four) against its successors,
on the backbones of the paper reproduction.

A method is a function of the architecture's defaults that returns (a) the quantizer options and (b) the defaults
it changes (the code dimension and the codebook size of FSQ and of LlamaGen's low-dimensional codes). Everything
else (backbone, optimiser, batches, seeds, step budget) is shared by all methods of an architecture, so the table
compares the quantizers only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Protocol

import torch
from torch import nn

from ..quantization import QuantizerConfig, build_quantizer

# The methods each ablation variant switches on (Huh et al. 2023, Table 2 columns).
VARIANT_METHODS: dict[str, tuple[str, ...]] = {
    "baseline": (),
    "affine": ("affine",),
    "sync": ("sync",),
    "alternating": ("alternating",),
    "replace": ("replace",),
    "all": ("affine", "sync", "alternating", "replace"),
}


class MethodDefaults(Protocol):
    """What a method reads of an architecture's defaults (`defaults.ArchitectureDefaults`, a frozen dataclass, which
    imports this module: so the type is named here by the fields it must have)."""

    codebook_size: int
    beta: float
    sync_nu: float
    affine_lr: float
    replace_freq: int
    fsq_levels: tuple[int, ...] | None


# FSQ levels per nominal codebook size (Mentzer et al. 2023, Table 1, and 8^3 for 512): prod(levels) codes.
FSQ_LEVELS: dict[int, list[int]] = {
    64: [4, 4, 4],
    512: [8, 8, 8],
    1024: [8, 5, 5, 5],
    4096: [7, 5, 5, 5, 5],
    16384: [8, 8, 8, 6, 5],
}
# LlamaGen (Sun et al. 2024): l2-normalised codes of dimension 8 (cosine distance), the encoder projects to them.
LOW_CODE_DIM = 8
# The synchronized update's nu across vqtorch's range (0.2, the reproduction's value, is the "sync" method).
NU_SWEEP = (0.01, 0.1, 0.5, 1.0, 2.0)


@dataclass(frozen=True)
class Method:
    """One column of the study: quantizer options, and the defaults it changes (None: none)."""

    description: str
    options: Callable[[MethodDefaults], dict]
    adjust: Callable[[MethodDefaults], dict] | None = None


def ablation_options(variant: str, defaults: MethodDefaults) -> dict:
    """Plain straight-through options plus the methods of `variant`, at this architecture's settings."""
    if variant not in VARIANT_METHODS:
        raise ValueError(f"unknown variant {variant!r}; choose from {list(VARIANT_METHODS)}")
    methods = VARIANT_METHODS[variant]
    options: dict = {"beta": defaults.beta}
    if "affine" in methods:
        options.update(affine="learned", affine_lr=defaults.affine_lr)
    if "sync" in methods:
        options["sync_nu"] = defaults.sync_nu
    if "alternating" in methods:
        options["alternating"] = True
    if "replace" in methods:
        options["replace_freq"] = defaults.replace_freq
    return options


def _paper(variant: str, **extra) -> Callable[[MethodDefaults], dict]:
    return lambda d: {**ablation_options(variant, d), **extra}


def _fsq_levels(defaults: MethodDefaults) -> list[int]:
    if defaults.codebook_size not in FSQ_LEVELS:
        raise ValueError(
            f"no FSQ levels for a codebook of {defaults.codebook_size} codes; choose one of {sorted(FSQ_LEVELS)}"
        )
    return FSQ_LEVELS[defaults.codebook_size]


def _fsq_adjust(defaults: MethodDefaults) -> dict:
    levels = _fsq_levels(defaults)
    return {"codebook_size": math.prod(levels), "code_dim": len(levels), "fsq_levels": tuple(levels)}


PAPER_DESCRIPTIONS = {
    "baseline": "plain straight-through (STE), beta loss only",
    "affine": "Huh et al.: learned affine codes alone",
    "sync": "Huh et al.: synchronized update alone (nu = 0.2)",
    "alternating": "Huh et al.: alternating step alone, hf_vq's mean step",
    "replace": "Huh et al.: dead-code replacement alone",
    "all": "Huh et al.: affine + sync + alternating (mean) + replace",
}

METHODS: dict[str, Method] = {
    **{variant: Method(PAPER_DESCRIPTIONS[variant], _paper(variant)) for variant in VARIANT_METHODS},
    "alternating_sgd": Method(
        "Huh et al.: alternating step alone, the authors' SGD form (lr 50)", _paper("baseline", alternating="sgd")
    ),
    "all_sgd": Method(
        "Huh et al.: all four, with the authors' SGD alternating step", _paper("all", alternating="sgd")
    ),
    "simvq": Method("SimVQ: frozen codes through one learned D x D matrix", _paper("baseline", affine="linear")),
    "rotation": Method(
        "rotation trick instead of straight-through", _paper("baseline", gradient_estimator="rotation")
    ),
    "ema": Method(
        "EMA codebook (decay 0.99) with dead-code restarts",
        lambda d: {"beta": d.beta, "codebook_update": "ema", "ema_decay": 0.99, "replace_freq": d.replace_freq},
    ),
    "l2_lowdim": Method(
        f"LlamaGen: l2-normalised {LOW_CODE_DIM}-d codes (cosine distance)",
        _paper("baseline", distance="cosine"),
        lambda d: {"code_dim": LOW_CODE_DIM},
    ),
    "fsq": Method(
        "FSQ (no codebook, levels per codebook size)",
        lambda d: {"quantizer_type": "fsq", "levels": list(d.fsq_levels)},
        _fsq_adjust,
    ),
    "affine_rotation": Method(
        "learned affine codes + rotation trick", _paper("affine", gradient_estimator="rotation")
    ),
    "simvq_replace": Method("SimVQ + dead-code replacement", _paper("replace", affine="linear")),
    "simvq_rotation": Method(
        "SimVQ + rotation trick", _paper("baseline", affine="linear", gradient_estimator="rotation")
    ),
    "rotation_replace": Method(
        "rotation trick + dead-code replacement", _paper("replace", gradient_estimator="rotation")
    ),
    **{
        f"sync_nu{nu:g}": Method(f"Huh et al.: synchronized update alone, nu = {nu:g}", _paper("sync", sync_nu=nu))
        for nu in NU_SWEEP
    },
}


def method_defaults(method: str, defaults: MethodDefaults) -> MethodDefaults:
    """The architecture's defaults with the changes `method` makes (FSQ's sizes, low-dimensional codes)."""
    spec = _method(method)
    return replace(defaults, **spec.adjust(defaults)) if spec.adjust else defaults


def method_options(method: str, defaults: MethodDefaults) -> dict:
    """Quantizer options of `method` at (already adjusted) `defaults`."""
    return _method(method).options(defaults)


def _method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {list(METHODS)}")
    return METHODS[name]


class ProjectedQuantizer(nn.Module):
    """A quantizer on a lower-dimensional code space, between two linear projections (channels on `channel_dim`).

    Used where the backbone's VQ width is also its model width (the ViT), so that low-dimensional codes (LlamaGen)
    and FSQ can be compared without changing the model.
    """

    def __init__(self, model_dim: int, quantizer: nn.Module, channel_dim: int):
        super().__init__()
        self.quantizer = quantizer
        self.channel_dim = channel_dim
        self.project_in = nn.Linear(model_dim, quantizer.embed_dim)
        self.project_out = nn.Linear(quantizer.embed_dim, model_dim)
        self.codebook_size = quantizer.codebook_size

    @property
    def codebook(self) -> torch.Tensor:
        return self.quantizer.codebook

    def forward(self, z: torch.Tensor):
        moved = z.movedim(self.channel_dim, -1)
        out = self.quantizer(self.project_in(moved))
        out.quantized = self.project_out(out.quantized).movedim(-1, self.channel_dim)
        return out


def make_quantizer(
    embed_dim: int, codebook_size: int, channel_dim: int = 1, model_dim: int | None = None, **options
) -> nn.Module:
    """The study's quantizer for `options` (`QuantizerConfig` fields, or FSQ's `levels`), built by `build_quantizer`;
    wrapped in projections when the model's width `model_dim` differs from the code dimension `embed_dim`."""
    projected = model_dim not in (None, embed_dim)
    sizes = {"embed_dim": embed_dim, "codebook_size": codebook_size, "channel_dim": -1 if projected else channel_dim}
    config = QuantizerConfig.from_dict({**options, **sizes})
    quantizer = build_quantizer(config)
    if not projected:
        return quantizer
    return ProjectedQuantizer(model_dim, quantizer, channel_dim)
