"""The quantizer registry: `quantizer_type` name -> class, and `build_quantizer`.

Adding a quantizer method is one file with a `QuantizerBase` subclass that defines `from_config(config)`, decorated
with `@register_quantizer("name")`, plus the name in `config.QUANTIZER_TYPES` (and any options it needs as fields
of `QuantizerConfig`).
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from torch import nn

from .config import QUANTIZER_TYPES, QuantizerConfig

QUANTIZERS: dict[str, type[nn.Module]] = {}
_Quantizer = TypeVar("_Quantizer", bound=type)


def register_quantizer(name: str) -> Callable[[_Quantizer], _Quantizer]:
    """Class decorator: make `build_quantizer` build this class for `quantizer_type=name`."""
    if name not in QUANTIZER_TYPES:
        raise ValueError(f"quantizer type {name!r} is not in config.QUANTIZER_TYPES {QUANTIZER_TYPES}; add it there")

    def register(cls: _Quantizer) -> _Quantizer:
        QUANTIZERS[name] = cls
        return cls

    return register


def build_quantizer(config: QuantizerConfig | str = "vector", **kwargs: Any) -> nn.Module:
    """The quantizer a `QuantizerConfig` describes; or, given a `quantizer_type` name, that class built from its own
    keyword arguments (`build_quantizer("fsq", levels=[8, 5, 5, 5])`).

    Example:
        >>> from hf_vq.quantization import QuantizerConfig, build_quantizer
        >>> config = QuantizerConfig(quantizer_type="residual", embed_dim=4, codebook_size=8, num_quantizers=2)
        >>> build_quantizer(config).num_quantizers
        2
    """
    # Not isinstance(config, QuantizerConfig): a remote-code checkpoint may load its config and its model through two
    # copies of this package's files, whose QuantizerConfig classes differ.
    if not isinstance(config, str):
        if kwargs:
            raise TypeError(f"build_quantizer(config) takes no other arguments; put {sorted(kwargs)} into the config")
        return _registered(config.quantizer_type).from_config(config)
    return _registered(config)(**kwargs)


def _registered(name: str) -> type[nn.Module]:
    if name not in QUANTIZERS:
        raise ValueError(f"unknown quantizer_type {name!r}; use one of {sorted(QUANTIZERS)}")
    return QUANTIZERS[name]
