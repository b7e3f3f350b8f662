"""The errors a user can hit when sharing a model, each with a message that says what to do."""

from __future__ import annotations

from ..errors import HfVqUserError


class HubPushError(HfVqUserError, RuntimeError):
    """Base class: anything that stops `push_to_hub`. The message is meant to be shown to the user as is."""


class MissingTokenError(HubPushError):
    """No Hugging Face token was given or found, or the Hub rejected it."""


class InvalidRepoIdError(HubPushError, ValueError):
    """`hub_model_id` is not of the form `namespace/name` that the Hub accepts."""


class IncompleteModelFolderError(HubPushError, FileNotFoundError):
    """The model folder lacks a file that `from_pretrained` needs, or holds one that does not parse."""


class OfflineModeError(HubPushError):
    """`HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) is set, so no request may leave the machine."""


class HubUnreachableError(HubPushError, ConnectionError):
    """The Hub endpoint could not be reached (network down, wrong `HF_ENDPOINT`, proxy...)."""


class InvalidCardMetadataError(HubPushError, ValueError):
    """The model card's YAML metadata would be rejected or misread by the Hub."""


class LocalTokenizerError(HubPushError):
    """A classifier or prior names a tokenizer that is not on the Hub: pushed alone it could not be used."""


class TokenizerMismatchError(HubPushError):
    """`--tokenizer_hub_id` names a tokenizer that is not the one the classifier or prior was trained on."""
