"""The quantizer registry: `quantizer_type` name -> class, and `build_quantizer`.

Adding a quantizer method is one file with a `QuantizerBase` subclass that defines `from_config(config)` and
`reset_parameters`, decorated with `@register_quantizer("name")`, plus its one registration: the line
`"name": "file"` in `config.QUANTIZER_MODULES` (and any options it needs as fields of `QuantizerConfig`). The file
is imported when the type is first asked for, so no other list names it.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, TypeVar

from torch import nn

from .config import QUANTIZER_MODULES, QuantizerConfig

QUANTIZERS: dict[str, type[nn.Module]] = {}
_Quantizer = TypeVar("_Quantizer", bound=type)


def register_quantizer(name: str) -> Callable[[_Quantizer], _Quantizer]:
    """Class decorator: make `build_quantizer` build this class for `quantizer_type=name`."""
    if name not in QUANTIZER_MODULES:
        raise ValueError(
            f"quantizer type {name!r} is not in config.QUANTIZER_MODULES {sorted(QUANTIZER_MODULES)}; add "
            f'"{name}": "<its file>" there'
        )

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
        return quantizer_class(config.quantizer_type).from_config(config)
    return quantizer_class(config)(**kwargs)


def quantizer_class(name: str) -> type[nn.Module]:
    """The class registered for `quantizer_type=name`, importing its file (`config.QUANTIZER_MODULES`) if needed."""
    if name not in QUANTIZER_MODULES:
        raise ValueError(f"unknown quantizer_type {name!r}; use one of {sorted(QUANTIZER_MODULES)}")
    if name not in QUANTIZERS:
        # Relative to this file's package: hf_vq.quantization, or a checkpoint's copy of its files.
        importlib.import_module(f"{__package__}.{QUANTIZER_MODULES[name]}")
    if name not in QUANTIZERS:
        raise RuntimeError(
            f"{QUANTIZER_MODULES[name]}.py defines no class decorated with @register_quantizer({name!r})"
        )
    return QUANTIZERS[name]
