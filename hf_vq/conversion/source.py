"""Where a tokenizer to convert comes from: a local folder or a Hub id (with `subfolder` and `revision`), and which
kind of tokenizer its `config.json` describes.

Only the config is read here: it decides the converter before any weight is loaded, so that a folder that holds
no supported tokenizer is refused at once, with the kinds that are supported.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_vq.errors import HfVqUserError

CONFIG_NAME = "config.json"
PIPELINE_INDEX_NAME = "model_index.json"

# What each converter reads, as the user knows it: named by every refusal.
SUPPORTED_SOURCES = {
    "diffusers_vq": "a diffusers VQModel (config.json with _class_name 'VQModel')",
    "janus_vq": "a transformers JanusVQVAE (model_type 'janus_vqgan'), or a Janus model folder holding one",
    "chameleon_vq": (
        "a transformers ChameleonVQVAE (model_type 'chameleon_vqgan'), or a Chameleon model folder holding one: "
        "encoder and codebook only, with --initialize_missing_decoder"
    ),
}
# transformers model types whose VQ-VAE is inside a larger model's config, under this key.
FULL_MODEL_VQ_KEYS = {"janus": "vq_config", "chameleon": "vq_config"}


class UnsupportedSourceError(HfVqUserError, ValueError):
    """The source is no tokenizer hf_vq converts, or uses a feature a VQGANModel cannot represent exactly."""


class SourceNotFoundError(HfVqUserError, FileNotFoundError):
    """The source folder or Hub repository (or its subfolder, revision or config.json) does not exist."""


def supported_kinds_message() -> str:
    return "hf-vq converts " + "; ".join(SUPPORTED_SOURCES.values())


@dataclass
class TokenizerSource:
    """A tokenizer to convert: where it is and what its config says."""

    name_or_path: str
    subfolder: str | None = None
    revision: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    kind: str = ""

    @property
    def is_local(self) -> bool:
        return Path(self.name_or_path).is_dir()

    @property
    def description(self) -> str:
        """The source as a user would name it: `org/name` (subfolder `vqvae`, revision `abc`)."""
        details = [f"subfolder {self.subfolder!r}"] if self.subfolder else []
        details += [f"revision {self.revision!r}"] if self.revision else []
        return self.name_or_path + (f" ({', '.join(details)})" if details else "")

    @property
    def downsampling_factor(self) -> int:
        """Side of the image patch one token covers: 2 ** (levels - 1), as the source's config describes them."""
        if self.kind == "diffusers_vq":
            levels = self.config["block_out_channels"]
        else:
            vq_config = self.config.get(FULL_MODEL_VQ_KEYS.get(self.config.get("model_type"), ""), self.config)
            # JanusVQVAEConfig's and ChameleonVQVAEConfig's default
            levels = vq_config.get("channel_multiplier", (1, 1, 2, 2, 4))
        return 2 ** (len(levels) - 1)

    def from_pretrained_kwargs(self) -> dict[str, Any]:
        return {"subfolder": self.subfolder or "", "revision": self.revision}


def resolve_source(
    name_or_path: str | os.PathLike, subfolder: str | None = None, revision: str | None = None
) -> TokenizerSource:
    """Read the source's config.json and name its kind (a key of `SUPPORTED_SOURCES`), or refuse.

    Example:
        >>> resolve_source("org/amused-256", subfolder="vqvae").kind  # doctest: +SKIP
        'diffusers_vq'
    """
    source = TokenizerSource(str(name_or_path), subfolder or None, revision)
    source.config = _read_config(source)
    source.kind = identify_kind(source.config, source.description)
    return source


def identify_kind(config: dict[str, Any], description: str) -> str:
    """The converter for a config.json: diffusers' `_class_name`, else transformers' `model_type`."""
    if config.get("_class_name") == "VQModel":
        return "diffusers_vq"
    model_type = config.get("model_type")
    holds_vq_config = model_type in FULL_MODEL_VQ_KEYS and config.get(FULL_MODEL_VQ_KEYS[model_type])
    if model_type in ("chameleon_vqgan", "chameleon"):
        return "chameleon_vq"
    if model_type == "janus_vqgan" or holds_vq_config:
        return "janus_vq"
    if model_type == "vqgan":
        raise UnsupportedSourceError(
            f"{description} is an hf_vq tokenizer already: load it with VQGANModel.from_pretrained"
        )
    found = config.get("_class_name") or model_type or (config.get("architectures") or [None])[0]
    raise UnsupportedSourceError(
        f"{description} holds no tokenizer hf-vq can convert (its config.json names "
        f"{found!r}); {supported_kinds_message()}"
    )


def _read_config(source: TokenizerSource) -> dict[str, Any]:
    if source.is_local:
        path = Path(source.name_or_path) / (source.subfolder or "") / CONFIG_NAME
        if not path.is_file():
            raise SourceNotFoundError(_missing_config_message(source, Path(source.name_or_path)))
        return _parse_json(path, source)
    if Path(source.name_or_path).exists() or not _looks_like_repo_id(source.name_or_path):
        raise SourceNotFoundError(
            f"{source.name_or_path!r} is neither a folder nor a Hub model id (org/name); pass the folder of a "
            f"saved model or its Hub id. {supported_kinds_message()}"
        )
    return _parse_json(_download_config(source), source)


def _download_config(source: TokenizerSource) -> str:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return hf_hub_download(source.name_or_path, CONFIG_NAME, subfolder=source.subfolder, revision=source.revision)
    except RepositoryNotFoundError:
        raise SourceNotFoundError(
            f"no model {source.name_or_path!r} on the Hub (or it is private and no token with access was given: "
            "`hf auth login` or HF_TOKEN); check the id"
        ) from None
    except RevisionNotFoundError:
        message = f"the Hub model {source.name_or_path!r} has no revision {source.revision!r}"
        raise SourceNotFoundError(message) from None
    except LocalEntryNotFoundError as error:  # offline or unreachable (a subclass of EntryNotFoundError: first)
        raise SourceNotFoundError(
            f"{source.description} is no folder here, and cannot be fetched from the Hub as a model id: {error}; "
            "check the path, or the connection, HF_ENDPOINT and HF_HUB_OFFLINE"
        ) from None
    except EntryNotFoundError:
        raise SourceNotFoundError(
            f"the Hub model {source.description} has no {CONFIG_NAME}; a diffusers pipeline keeps its VQ model in a "
            "subfolder: pass --subfolder (e.g. vqvae)"
        ) from None


def _missing_config_message(source: TokenizerSource, folder: Path) -> str:
    index = folder / PIPELINE_INDEX_NAME
    if not source.subfolder and index.is_file():
        components = [name for name, entry in _parse_json(index, source).items() if _is_vq_component(entry)]
        if components:
            return (
                f"{folder} is a diffusers pipeline folder: pass the subfolder of its VQ model "
                f"(--subfolder {components[0]})"
            )
    where = folder / (source.subfolder or "")
    return f"{where} has no {CONFIG_NAME}, so it holds no model to convert; {supported_kinds_message()}"


def _is_vq_component(entry: Any) -> bool:
    return isinstance(entry, list) and len(entry) == 2 and entry[1] == "VQModel"


def _parse_json(path: str | Path, source: TokenizerSource) -> dict[str, Any]:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UnsupportedSourceError(f"cannot read {path} of {source.description}: {error}") from None
    if not isinstance(document, dict):
        raise UnsupportedSourceError(f"{path} of {source.description} is not a JSON object")
    return document


def _looks_like_repo_id(value: str) -> bool:
    parts = value.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not value.startswith((".", "~"))


__all__ = [
    "SUPPORTED_SOURCES",
    "SourceNotFoundError",
    "TokenizerSource",
    "UnsupportedSourceError",
    "identify_kind",
    "resolve_source",
    "supported_kinds_message",
]
