"""Pushing a saved model folder to the Hub: one commit with weights, config, processor, remote code,
metrics, samples and a generated model card; `hf-vq push` and the training scripts' `--push_to_hub`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterator

from huggingface_hub import HfApi, constants, get_token, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, OfflineModeIsEnabled

from ..flags import add_flags, flag
from .errors import HubPushError, HubUnreachableError, InvalidRepoIdError, MissingTokenError, OfflineModeError
from .model_card import list_classifier_in_card, render_model_card
from .model_folder import CONFIG_NAME, TOKENIZER_REFERENCE_KEYS, ModelFolder, load_model_folder, looks_like_repo_id


def _network_errors() -> tuple[type[BaseException], ...]:
    """Connection and time-out errors of whichever HTTP library this huggingface_hub uses (httpx2, httpx, requests)."""
    errors: list[type[BaseException]] = []
    for module_name in ("httpx2", "httpx"):
        try:
            module = __import__(module_name)
            errors += [module.ConnectError, module.TimeoutException, module.RemoteProtocolError]
        except (ImportError, AttributeError):
            continue
    try:
        import requests

        errors += [requests.ConnectionError, requests.Timeout]
    except ImportError:
        pass
    return tuple(errors) + (ConnectionError,)


NETWORK_ERRORS = _network_errors()


def push_to_hub(
    model_dir: str | os.PathLike,
    hub_model_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    *,
    license: str = "apache-2.0",  # noqa: A002 - the Hub's field name
    tokenizer_hub_id: str | None = None,
    update_tokenizer_card: bool = True,
) -> str:
    """Push the model saved in `model_dir` to `hub_model_id` in one commit and return the commit URL.

    The folder is checked first (config, safetensors weights, remote code named in `auto_map`), and the
    card is rendered and checked before any request, so a broken push fails before it starts. For a
    classifier whose tokenizer is on the Hub, the tokenizer's card is then updated to list it.

    Example:
        >>> push_to_hub("outputs/vqgan", "me/vqgan-fashion-mnist")
        'https://huggingface.co/me/vqgan-fashion-mnist/commit/3f0c...'
    """
    check_repo_id(hub_model_id)
    if tokenizer_hub_id is not None:
        check_repo_id(tokenizer_hub_id, flag="--tokenizer_hub_id")
    folder = load_model_folder(model_dir)
    api = HfApi()
    card = render_model_card(folder, hub_model_id, license=license, tokenizer_hub_id=tokenizer_hub_id, endpoint=api.endpoint)
    with hub_errors(api.endpoint):
        token = check_token(api, hub_model_id, token)
        api.create_repo(hub_model_id, token=token, private=private, exist_ok=True)
        if revision and revision != constants.DEFAULT_REVISION:
            api.create_branch(hub_model_id, branch=revision, token=token, exist_ok=True)
        with staged_folder(folder, card.content, tokenizer_hub_id) as staging:
            commit = api.upload_folder(
                repo_id=hub_model_id,
                folder_path=staging,
                revision=revision,
                token=token,
                commit_message=commit_message or f"Upload {folder.kind} with hf_vq",
            )
    tokenizer_repo = card.data.base_model
    if folder.kind == "classifier" and tokenizer_repo and update_tokenizer_card:
        list_classifier_on_tokenizer_card(api, tokenizer_repo, hub_model_id, token)
    return commit.commit_url


def check_repo_id(hub_model_id: str, flag: str = "--hub_model_id") -> None:
    """Raises InvalidRepoIdError unless `hub_model_id` is `namespace/name` as the Hub accepts it."""
    if not isinstance(hub_model_id, str) or "/" not in hub_model_id or not looks_like_repo_id(hub_model_id):
        raise InvalidRepoIdError(
            f"Invalid {flag} {hub_model_id!r}: use 'namespace/name' (your user or organisation name, a slash, "
            "a repo name), with letters, digits, '-', '_' and '.', no '--' or '..', at most 96 characters per part."
        )


def check_token(api: HfApi, hub_model_id: str, token: str | None) -> str:
    """The token to push with, checked against the Hub: it must exist, be valid, and may write to the namespace."""
    token = token or get_token()
    if not token:
        raise MissingTokenError(
            "No Hugging Face token found. Run `hf auth login`, or set the HF_TOKEN environment variable to a token "
            "with write access (https://huggingface.co/settings/tokens)."
        )
    try:
        identity = api.whoami(token=token)
    except HfHubHTTPError as error:
        if error.response is not None and error.response.status_code == 401:
            raise MissingTokenError(
                f"The Hub at {api.endpoint} rejected the token (401). Run `hf auth login --force` or set HF_TOKEN to "
                "a valid token with write access."
            ) from error
        raise
    namespace = hub_model_id.split("/")[0]
    allowed = {identity.get("name")} | {org.get("name") for org in identity.get("orgs") or []}
    if namespace not in allowed:
        raise MissingTokenError(
            f"The token belongs to {identity.get('name')!r}, who cannot write to {namespace!r} (namespaces available: "
            f"{', '.join(sorted(n for n in allowed if n))}). Pick one of those in --hub_model_id."
        )
    return token


@contextmanager
def hub_errors(endpoint: str) -> Iterator[None]:
    """Turns offline mode and network failures into messages that say what to do."""
    if constants.is_offline_mode():
        raise OfflineModeError(
            "Cannot push: offline mode is on (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set). Unset it in the "
            "environment before starting, e.g. `HF_HUB_OFFLINE=0 hf-vq push ...`."
        )
    try:
        yield
    except OfflineModeIsEnabled as error:
        raise OfflineModeError(f"Cannot push: offline mode is on ({error}).") from error
    except NETWORK_ERRORS as error:
        raise HubUnreachableError(
            f"Cannot reach the Hub at {endpoint} ({type(error).__name__}: {error}). Check the network connection, "
            "proxy settings and HF_ENDPOINT; the model folder is unchanged, so the push can simply be run again."
        ) from error


@contextmanager
def staged_folder(folder: ModelFolder, card_text: str, tokenizer_hub_id: str | None) -> Iterator[Path]:
    """A temporary copy of the files to share, plus the card, so the user's folder is left untouched.

    Files are hard-linked where possible (no copy of large weights). When the tokenizer is given by its
    Hub id, the uploaded config points to it instead of a local path that would not exist elsewhere.
    """
    with tempfile.TemporaryDirectory(prefix="hf_vq_push_") as tmp:
        staging = Path(tmp)
        for file in folder.files_to_share():
            _link_or_copy(file, staging / file.name)
        (staging / "README.md").write_text(card_text, encoding="utf-8")
        if tokenizer_hub_id and folder.tokenizer_reference != tokenizer_hub_id:
            _point_config_to_tokenizer(staging / CONFIG_NAME, folder.config, tokenizer_hub_id)
        yield staging


def list_classifier_on_tokenizer_card(api: HfApi, tokenizer_repo: str, classifier_repo: str, token: str | None) -> bool:
    """Add `classifier_repo` to the tokenizer card's list of classifiers; False (with a warning) if not allowed."""
    try:
        with hub_errors(api.endpoint):
            card_path = hf_hub_download(tokenizer_repo, "README.md", token=token, endpoint=api.endpoint)
            current = Path(card_path).read_text(encoding="utf-8")
            updated = list_classifier_in_card(current, classifier_repo, endpoint=api.endpoint)
            if updated != current:
                api.upload_file(
                    path_or_fileobj=updated.encode("utf-8"), path_in_repo="README.md", repo_id=tokenizer_repo,
                    token=token, commit_message=f"List classifier {classifier_repo} on the card",
                )
        return True
    except (HfHubHTTPError, EntryNotFoundError, HubPushError) as error:
        # Someone else's tokenizer (403), a card-less repo (404), a network hiccup: the classifier push succeeded.
        print(f"warning: could not list {classifier_repo} on the card of {tokenizer_repo}: {error}")
        return False


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _point_config_to_tokenizer(config_path: Path, config: dict, tokenizer_hub_id: str) -> None:
    updated = dict(config)
    for key in TOKENIZER_REFERENCE_KEYS:
        updated[key] = tokenizer_hub_id
    config_path.unlink()  # a hard link: writing in place would change the user's file too
    config_path.write_text(json.dumps(updated, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------- command line


def add_push_subcommand(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """`hf-vq push --model_dir DIR --hub_model_id ORG/NAME [--private] [--hub_revision R] [--commit_message M]`."""
    parser = subparsers.add_parser("push", help="push a trained model folder to the Hugging Face Hub, with a model card")
    parser.add_argument("--model_dir", required=True, help="folder written by save_pretrained (and the training run)")
    parser.add_argument("--hub_model_id", required=True, help="repo to push to, as namespace/name")
    _add_common_hub_flags(parser)
    parser.set_defaults(handler=run_push)
    return parser


def run_push(args: argparse.Namespace) -> str:
    try:
        url = push_to_hub(
            args.model_dir, args.hub_model_id, private=args.private, revision=args.hub_revision,
            commit_message=args.commit_message, license=args.license, tokenizer_hub_id=args.tokenizer_hub_id,
        )
    except HubPushError as error:
        raise SystemExit(f"hf-vq push: {error}") from error
    print(f"pushed {args.model_dir} to {args.hub_model_id}: {url}")
    return url


@dataclass
class HubPushOptions:
    """The options of a push, shared by `hf-vq push` and the training commands' `--push_to_hub`."""

    TITLE: ClassVar[str] = "sharing on the Hub"

    private: bool = flag(False, "create the repo as private")
    hub_revision: str | None = flag(None, "branch to push to (created if missing); default: main")
    commit_message: str | None = flag(None, "message of the commit")
    license: str = flag("apache-2.0", "Hub license id for the card")
    tokenizer_hub_id: str | None = flag(
        None, "classifiers: Hub repo of the tokenizer they read, when the config names a local folder")


@dataclass
class HubArguments(HubPushOptions):
    """The training commands' flags: `--push_to_hub`, `--hub_model_id`, `--hub_token` and the options of a push."""

    push_to_hub: bool = flag(False, "push the final model to the Hub after training")
    hub_model_id: str | None = flag(None, "repo to push to, as namespace/name")
    hub_token: str | None = flag(None, "token to push with (default: HF_TOKEN or `hf auth login`)")


def add_hub_arguments(parser: argparse.ArgumentParser) -> None:
    """The training scripts' flags (`HubArguments`) on `parser`, with their defaults."""
    add_flags(parser, [HubArguments])


def check_push_arguments(args: argparse.Namespace) -> None:
    """Fail before training, not after it, when `--push_to_hub` could not succeed: a bad repo id, offline mode, no
    token, or a token the Hub rejects or that may not write to the namespace (asked with `whoami`, which also shows
    that the endpoint answers)."""
    if not getattr(args, "push_to_hub", False):
        return
    if not args.hub_model_id:
        raise InvalidRepoIdError("--push_to_hub needs --hub_model_id namespace/name.")
    check_repo_id(args.hub_model_id)
    if constants.is_offline_mode():
        raise OfflineModeError("--push_to_hub was given but offline mode is on (HF_HUB_OFFLINE): unset it or drop --push_to_hub.")
    if not (getattr(args, "hub_token", None) or get_token()):
        raise MissingTokenError("--push_to_hub needs a Hugging Face token: run `hf auth login`, set HF_TOKEN or pass --hub_token before training.")
    api = HfApi()
    with hub_errors(api.endpoint):
        check_token(api, args.hub_model_id, getattr(args, "hub_token", None))


def push_trained_model(args: argparse.Namespace, model_dir: str | os.PathLike) -> str | None:
    """Called by a training loop on the main process after the final `save_pretrained`; returns the commit URL."""
    if not getattr(args, "push_to_hub", False):
        return None
    return push_to_hub(
        model_dir, args.hub_model_id, private=args.private, revision=args.hub_revision,
        commit_message=args.commit_message, license=args.license, tokenizer_hub_id=args.tokenizer_hub_id,
        token=getattr(args, "hub_token", None),
    )


def _add_common_hub_flags(parser) -> None:
    add_flags(parser, [HubPushOptions])
