"""Pushing a saved model folder to the Hub: one commit with weights, config, processor, remote code,
metrics, samples and a generated model card; `hf-vq push` and the training scripts' `--push_to_hub`.

A model built on a tokenizer (a token classifier, a prior) is pushed only against a tokenizer on the Hub: its
uploaded config names the tokenizer's repo and pins the revision it was pushed against. To push a tokenizer and its
dependents together, see `hf_vq.hub.model_set` (`hf-vq push-set`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar, Iterator

from huggingface_hub import CommitInfo, HfApi, constants, get_token, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from ..errors import debug_requested
from ..flags import add_flags, flag
from .errors import (
    HubPushError,
    HubUnreachableError,
    InvalidRepoIdError,
    LocalTokenizerError,
    MissingTokenError,
    OfflineModeError,
)
from .identity import check_same_tokenizer
from .local_paths import check_no_local_paths, hub_ids_for, rewrite_json_without_local_paths, without_local_paths
from ..logs import quiet_third_party_logs
from .model_card import dependent_entries, list_dependent_in_card, render_model_card
from .model_folder import (
    CONFIG_NAME,
    TOKENIZER_REFERENCE_KEYS,
    TOKENIZER_REVISION_KEY,
    ModelFolder,
    load_model_folder,
    looks_like_repo_id,
)

# Kinds of model folder that read a tokenizer, and so are pushed against a tokenizer on the Hub.
DEPENDENT_KINDS = ("classifier", "prior")


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
    tokenizer_revision: str | None = None,
    update_tokenizer_card: bool = True,
    debug: bool = False,
) -> str:
    """Push the model saved in `model_dir` to `hub_model_id` in one commit and return the commit URL.

    The folder is checked first (config, safetensors weights, remote code named in `auto_map`), and the
    card is rendered and checked before any request, so a broken push fails before it starts. A classifier or
    prior is pushed against its tokenizer on the Hub (`tokenizer_hub_id`, or the Hub id its config names): the
    uploaded config names that repo and pins `tokenizer_revision` (default: the tokenizer's current commit), and the
    tokenizer's card is then updated to list it. One whose tokenizer is only a local folder is refused before
    anything is uploaded, and so is one whose `tokenizer_hub_id` is not the tokenizer it was trained on (config and
    weights compared, see `hf_vq.hub.identity`). Only the allow-listed files are uploaded
    (`ModelFolder.files_to_share`), and their list is printed. Other libraries' INFO logs are hidden unless `debug`
    (or `HF_VQ_DEBUG=1`).

    Example:
        >>> push_to_hub("outputs/vqgan", "me/vqgan-fashion-mnist")
        'https://huggingface.co/me/vqgan-fashion-mnist/commit/3f0c...'
    """
    with quiet_third_party_logs(debug):
        return _push_to_hub(
            model_dir,
            hub_model_id,
            private=private,
            revision=revision,
            commit_message=commit_message,
            token=token,
            license=license,
            tokenizer_hub_id=tokenizer_hub_id,
            tokenizer_revision=tokenizer_revision,
            update_tokenizer_card=update_tokenizer_card,
        )


def _push_to_hub(
    model_dir: str | os.PathLike,
    hub_model_id: str,
    *,
    private: bool,
    revision: str | None,
    commit_message: str | None,
    token: str | None,
    license: str,  # noqa: A002 - the Hub's field name
    tokenizer_hub_id: str | None,
    tokenizer_revision: str | None,
    update_tokenizer_card: bool,
) -> str:
    check_repo_id(hub_model_id)
    if tokenizer_hub_id is not None:
        check_repo_id(tokenizer_hub_id, flag="--tokenizer_hub_id")
    folder = load_model_folder(model_dir)
    tokenizer_hub_id = tokenizer_hub_id or hub_tokenizer_of(folder)
    refuse_local_tokenizer(folder, tokenizer_hub_id, hub_model_id)
    if tokenizer_revision is None and tokenizer_hub_id == hub_tokenizer_of(folder):
        tokenizer_revision = recorded_tokenizer_revision(folder)  # trained at a Hub revision: keep reading that one
    api = HfApi()
    render_shared_card(folder, hub_model_id, license=license, tokenizer_hub_id=tokenizer_hub_id, endpoint=api.endpoint)
    with hub_errors(api.endpoint):
        token = check_token(api, hub_model_id, token)
        if tokenizer_hub_id and folder.kind in DEPENDENT_KINDS and tokenizer_revision is None:
            tokenizer_revision = current_revision(api, tokenizer_hub_id, token, dependent=hub_model_id)
        if tokenizer_hub_id and folder.kind in DEPENDENT_KINDS:
            check_same_tokenizer(api, folder, tokenizer_hub_id, tokenizer_revision, token)
    commit = upload_model_folder(
        api,
        folder,
        hub_model_id,
        token=token,
        private=private,
        revision=revision,
        commit_message=commit_message,
        license=license,
        tokenizer_hub_id=tokenizer_hub_id,
        tokenizer_revision=tokenizer_revision,
    )
    if folder.kind in DEPENDENT_KINDS and tokenizer_hub_id and update_tokenizer_card:
        list_on_tokenizer_card(api, tokenizer_hub_id, hub_model_id, folder.kind, token, tokenizer_revision)
    return commit.commit_url


def upload_model_folder(
    api: HfApi,
    folder: ModelFolder,
    hub_model_id: str,
    *,
    token: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    license: str = "apache-2.0",  # noqa: A002 - the Hub's field name
    tokenizer_hub_id: str | None = None,
    tokenizer_revision: str | None = None,
    dependents: list[tuple[str, str]] | None = None,
    hub_ids: dict[Path, str] | None = None,
) -> CommitInfo:
    """Create the repo (and branch) if needed and upload the folder's shared files with a fresh card, in one commit.

    The staged copy names the tokenizer by `tokenizer_hub_id` at `tokenizer_revision` and carries no local path:
    `hub_ids` maps local folders (the models pushed together) to their repos, the tokenizer's by default.
    """
    hub_ids = local_hub_ids(folder, tokenizer_hub_id) if hub_ids is None else hub_ids
    with hub_errors(api.endpoint):
        listed = published_dependents(api, hub_model_id, revision, token) if folder.kind == "tokenizer" else []
    card = render_shared_card(
        folder,
        hub_model_id,
        license=license,
        tokenizer_hub_id=tokenizer_hub_id,
        tokenizer_revision=tokenizer_revision,
        dependents=dependents,
        kept_dependents=listed,
        endpoint=api.endpoint,
        hub_ids=hub_ids,
    )
    with hub_errors(api.endpoint):
        api.create_repo(hub_model_id, token=token, private=private, exist_ok=True)
        if revision and revision != constants.DEFAULT_REVISION:
            api.create_branch(hub_model_id, branch=revision, token=token, exist_ok=True)
        with staged_folder(folder, card.content, tokenizer_hub_id, tokenizer_revision, hub_ids) as staging:
            uploaded = sorted(str(path.relative_to(staging)) for path in staging.rglob("*") if path.is_file())
            commit = api.upload_folder(
                repo_id=hub_model_id,
                folder_path=staging,
                revision=revision,
                token=token,
                commit_message=commit_message or f"Upload {folder.kind} with hf_vq",
            )
    report_upload(folder, hub_model_id, uploaded)
    return commit


def report_upload(folder: ModelFolder, hub_model_id: str, uploaded: list[str]) -> None:
    """Print what went up (and what stayed local), so a user sees at once what the Hub now holds."""
    print(f"{hub_model_id}: uploaded {len(uploaded)} files: {', '.join(uploaded)}")
    left_out = [str(path) + ("/" if (folder.path / path).is_dir() else "") for path in folder.files_left_out()]
    if left_out:
        print(f"{hub_model_id}: not uploaded (not part of the model, or hidden, or a link): {', '.join(left_out)}")


def published_dependents(api: HfApi, repo_id: str, revision: str | None, token: str | None) -> list[str]:
    """The entries of the models built on a tokenizer that its card on the Hub lists now (none for a new repo), so
    that pushing new weights keeps them; an entry written in the same push as the tokenizer ("this revision") is
    pinned to the commit it was written in."""
    try:
        info = api.model_info(repo_id, revision=revision, token=token)
        card = hf_hub_download(repo_id, "README.md", revision=info.sha, token=token, endpoint=api.endpoint)
    except (RepositoryNotFoundError, EntryNotFoundError, RevisionNotFoundError):
        return []
    except HfHubHTTPError as error:
        if error.response is not None and error.response.status_code == 404:
            return []
        raise
    return dependent_entries(Path(card).read_text(encoding="utf-8"), current_revision=info.sha)


def render_shared_card(
    folder: ModelFolder,
    hub_model_id: str,
    *,
    tokenizer_hub_id: str | None = None,
    hub_ids: dict[Path, str] | None = None,
    **kwargs,
):
    """The card rendered from what will be uploaded: the folder's records without local paths."""
    hub_ids = local_hub_ids(folder, tokenizer_hub_id) if hub_ids is None else hub_ids
    return render_model_card(
        shareable_view(folder, hub_ids), hub_model_id, tokenizer_hub_id=tokenizer_hub_id, **kwargs
    )


def local_hub_ids(folder: ModelFolder, tokenizer_hub_id: str | None) -> dict[Path, str]:
    """Local folders a pushed model names, and the repos they are on: its tokenizer's, when pushed alone."""
    return hub_ids_for(folder.tokenizer_reference, tokenizer_hub_id)


def shareable_view(folder: ModelFolder, hub_ids: dict[Path, str]) -> ModelFolder:
    """`folder` as uploaded: the models of `hub_ids` named by their Hub ids, other local paths reduced to their last
    component."""
    return replace(
        folder,
        config=without_local_paths(folder.config, hub_ids),
        metrics=without_local_paths(folder.metrics, hub_ids),
        training_config=without_local_paths(folder.training_config, hub_ids),
        components=without_local_paths(folder.components, hub_ids),
    )


def hub_tokenizer_of(folder: ModelFolder) -> str | None:
    """The tokenizer's Hub id when the folder's config already names one (not a local folder)."""
    reference = folder.tokenizer_reference
    return reference if reference and looks_like_repo_id(reference) else None


def recorded_tokenizer_revision(folder: ModelFolder) -> str | None:
    """The tokenizer revision a model's config already pins (it was trained on a Hub tokenizer at that revision)."""
    for config in (folder.config, *folder.components.values()):
        if config.get(TOKENIZER_REVISION_KEY):
            return str(config[TOKENIZER_REVISION_KEY])
    return None


def refuse_local_tokenizer(folder: ModelFolder, tokenizer_hub_id: str | None, hub_model_id: str) -> None:
    """A classifier or prior whose tokenizer is only on this machine would be of no use on the Hub: say what to run."""
    reference = folder.tokenizer_reference
    if folder.kind not in DEPENDENT_KINDS or not reference or tokenizer_hub_id:
        return
    namespace = hub_model_id.split("/")[0]
    flag = "--classifier_dirs" if folder.kind == "classifier" else "--prior_dirs"
    raise LocalTokenizerError(
        f"The {folder.kind} in {str(folder.path)!r} reads the tokenizer at {reference!r}, which is a local folder and "
        f"not on the Hub: pushed alone, it could not be used. Push the tokenizer and the {folder.kind} together:\n"
        f"    hf-vq push-set --tokenizer_dir {reference} {flag} {folder.path} --hub_namespace {namespace}\n"
        f"or, if that tokenizer is already on the Hub, name its repo:\n"
        f"    hf-vq push --model_dir {folder.path} --hub_model_id {hub_model_id} "
        f"--tokenizer_hub_id {namespace}/<tokenizer-repo>"
    )


def check_tokenizer_for_push(args: argparse.Namespace, reads_tokenizer: bool = True) -> None:
    """Before training a model that reads a tokenizer with `--push_to_hub`: refuse now, not after training, when
    that tokenizer is a local folder that the push could not name on the Hub (no `--tokenizer_hub_id`)."""
    reference = args.tokenizer_name_or_path
    if not args.push_to_hub or not reads_tokenizer or not reference or looks_like_repo_id(reference):
        return
    if args.tokenizer_hub_id:
        return
    raise LocalTokenizerError(
        f"--push_to_hub: the tokenizer {reference!r} is a local folder, so the pushed model could not find it. "
        "Push the tokenizer first (`hf-vq push --model_dir ... --hub_model_id ORG/NAME`) and pass --tokenizer_hub_id "
        "ORG/NAME, or train without --push_to_hub and push both afterwards with `hf-vq push-set --tokenizer_dir ...`."
    )


def current_revision(api: HfApi, tokenizer_hub_id: str, token: str | None, dependent: str) -> str:
    """The tokenizer repo's current commit, to pin in a dependent's config; a clear error when it is not there."""
    try:
        return api.model_info(tokenizer_hub_id, token=token).sha
    except RepositoryNotFoundError as error:
        raise LocalTokenizerError(
            f"The tokenizer {tokenizer_hub_id!r} that {dependent} reads is not on the Hub at {api.endpoint} (or this "
            "token cannot read it). Push it first, or push both with `hf-vq push-set --tokenizer_dir <folder> ...`."
        ) from error


def check_repo_id(hub_model_id: str, flag: str = "--hub_model_id") -> None:
    """Raises InvalidRepoIdError unless `hub_model_id` is `namespace/name` as the Hub accepts it."""
    if not isinstance(hub_model_id, str) or "/" not in hub_model_id or not looks_like_repo_id(hub_model_id):
        raise InvalidRepoIdError(
            f"Invalid {flag} {hub_model_id!r}: use 'namespace/name' (your user or organisation name, a slash, "
            "a repo name), with letters, digits, '-', '_' and '.', no '--' or '..', at most 96 characters per part."
        )


def check_token(api: HfApi, hub_model_id: str, token: str | None) -> str:
    """The token to push with, checked against the Hub: it must exist, be valid, and may write to the namespace."""
    given, token = token, token or get_token()
    if not token:
        raise MissingTokenError(
            "No Hugging Face token found. Run `hf auth login`, or set the HF_TOKEN environment variable to a token "
            "with write access (https://huggingface.co/settings/tokens)."
        )
    try:
        identity = api.whoami(token=token)
    except HfHubHTTPError as error:
        if error.response is not None and error.response.status_code == 401:
            fix = (
                "pass a valid token with write access in --hub_token"
                if given
                else "run `hf auth login --force` or set HF_TOKEN to a valid token with write access"
            )
            raise MissingTokenError(
                f"The Hub at {api.endpoint} rejected the token (401) {'given in --hub_token' if given else 'found'}: "
                f"{fix}."
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
def staged_folder(
    folder: ModelFolder,
    card_text: str,
    tokenizer_hub_id: str | None,
    tokenizer_revision: str | None = None,
    hub_ids: dict[Path, str] | None = None,
) -> Iterator[Path]:
    """A temporary copy of the files to share, plus the card, so the user's folder is left untouched.

    Files are hard-linked where possible (no copy of large weights); JSON files are rewritten without local paths,
    the config of a model built on a tokenizer naming its Hub repo and pinned revision. The staged copy is scanned
    for local folders before it is handed out.
    """
    hub_ids = local_hub_ids(folder, tokenizer_hub_id) if hub_ids is None else hub_ids
    with tempfile.TemporaryDirectory(prefix="hf_vq_push_") as tmp:
        staging = Path(tmp)
        for relative in folder.files_to_share():
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(folder.path / relative, staging / relative)
        (staging / "README.md").write_text(card_text, encoding="utf-8")
        for file in staging.rglob("*.json"):
            rewrite_json_without_local_paths(
                file, hub_ids, _tokenizer_fields(folder, file, tokenizer_hub_id, tokenizer_revision)
            )
        check_no_local_paths(staging, [folder.path, *hub_ids])
        yield staging


def _tokenizer_fields(
    folder: ModelFolder, file: Path, tokenizer_hub_id: str | None, tokenizer_revision: str | None
) -> dict[str, str]:
    """For the config that names the tokenizer: its Hub id and pinned revision."""
    if not tokenizer_hub_id or folder.kind not in DEPENDENT_KINDS or file.name != CONFIG_NAME:
        return {}
    config = json.loads(file.read_text(encoding="utf-8"))
    if not any(key in config for key in TOKENIZER_REFERENCE_KEYS):
        return {}
    fields = {key: tokenizer_hub_id for key in TOKENIZER_REFERENCE_KEYS}
    if tokenizer_revision:
        fields[TOKENIZER_REVISION_KEY] = tokenizer_revision
    return fields


def list_on_tokenizer_card(
    api: HfApi,
    tokenizer_repo: str,
    dependent_repo: str,
    kind: str,
    token: str | None,
    tokenizer_revision: str | None = None,
) -> bool:
    """Add `dependent_repo` (trained on `tokenizer_revision`) to the tokenizer card's list of models built on it; False
    (with a warning) if not allowed."""
    try:
        with hub_errors(api.endpoint):
            card_path = hf_hub_download(tokenizer_repo, "README.md", token=token, endpoint=api.endpoint)
            current = Path(card_path).read_text(encoding="utf-8")
            updated = list_dependent_in_card(
                current, dependent_repo, kind, endpoint=api.endpoint, revision=tokenizer_revision
            )
            if updated != current:
                api.upload_file(
                    path_or_fileobj=updated.encode("utf-8"),
                    path_in_repo="README.md",
                    repo_id=tokenizer_repo,
                    token=token,
                    commit_message=f"List {dependent_repo} on the card",
                )
        return True
    except (HfHubHTTPError, EntryNotFoundError, HubPushError) as error:
        # Someone else's tokenizer (403), a card-less repo (404), a network hiccup: the dependent's push succeeded.
        print(f"warning: could not list {dependent_repo} on the card of {tokenizer_repo}: {error}")
        return False


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


# ---------------------------------------------------------------------------------------------- command line


def add_push_subcommand(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """`hf-vq push --model_dir DIR --hub_model_id ORG/NAME [--private] [--hub_revision R] [--commit_message M]`."""
    parser = subparsers.add_parser(
        "push", help="push a trained model folder to the Hugging Face Hub, with a model card"
    )
    parser.add_argument("--model_dir", required=True, help="folder written by save_pretrained (and the training run)")
    parser.add_argument("--hub_model_id", required=True, help="repo to push to, as namespace/name")
    _add_common_hub_flags(parser)
    add_token_flag(parser)
    parser.set_defaults(handler=run_push)
    return parser


def add_token_flag(parser: argparse.ArgumentParser) -> None:
    """`--hub_token`, as the training commands have it (unless `parser` has it already)."""
    if "--hub_token" not in parser._option_string_actions:
        parser.add_argument(
            "--hub_token", default=None, help="token to push with (default: HF_TOKEN or `hf auth login`)"
        )


@contextmanager
def reported_as(prog: str) -> Iterator[None]:
    """A push error becomes `<prog>: error: <message>` on one line (the form of every hf-vq command), with exit code
    1 and no traceback; `--debug` (as HF_VQ_DEBUG) shows the traceback instead."""
    try:
        yield
    except HubPushError as error:
        if debug_requested():
            raise
        raise SystemExit(f"{prog}: error: {' '.join(str(error).split())}") from error


def hub_revision(args: argparse.Namespace) -> str | None:
    """The branch to push to: `--hub_revision` (`--revision` is the revision of a pretrained model being loaded)."""
    return args.hub_revision


def run_push(args: argparse.Namespace) -> str:
    with reported_as("hf-vq push"):
        url = push_to_hub(
            args.model_dir,
            args.hub_model_id,
            private=args.private,
            revision=hub_revision(args),
            commit_message=args.commit_message,
            license=args.license,
            tokenizer_hub_id=args.tokenizer_hub_id,
            token=args.hub_token,
        )
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
        None, "classifiers: Hub repo of the tokenizer they read, when the config names a local folder"
    )


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
    """Fail before training, not after it, when `--push_to_hub` could not succeed (`check_push_target`)."""
    if args.push_to_hub:
        check_push_target(args.hub_model_id, args.hub_token)


def check_push_target(repo_id: str | None, token: str | None, flag: str = "--hub_model_id") -> None:
    """A push to `repo_id` could succeed: a valid repo id, offline mode off, a token the Hub accepts and that may
    write to the namespace (asked with `whoami`, which also shows that the endpoint answers)."""
    if not repo_id:
        raise InvalidRepoIdError(f"--push_to_hub needs {flag} namespace/name.")
    check_repo_id(repo_id, flag)
    if constants.is_offline_mode():
        raise OfflineModeError(
            "--push_to_hub was given but offline mode is on (HF_HUB_OFFLINE): unset it or drop --push_to_hub."
        )
    if not (token or get_token()):
        raise MissingTokenError(
            "--push_to_hub needs a Hugging Face token: run `hf auth login`, set HF_TOKEN or pass --hub_token before "
            "starting."
        )
    api = HfApi()
    with hub_errors(api.endpoint):
        check_token(api, repo_id, token)


def push_trained_model(
    args: HubArguments, model_dir: str | os.PathLike, tokenizer_hub_id: str | None = None
) -> str | None:
    """Called by a training loop on the main process after the final `save_pretrained`, with the command's typed
    config (its `HubArguments` fields; train-tokenizer's lack `--tokenizer_hub_id`, so the caller passes that one);
    returns the commit URL."""
    if not args.push_to_hub:
        return None
    return push_to_hub(
        model_dir,
        args.hub_model_id,
        private=args.private,
        revision=hub_revision(args),
        commit_message=args.commit_message,
        license=args.license,
        tokenizer_hub_id=tokenizer_hub_id,
        token=args.hub_token,
    )


def _add_common_hub_flags(parser) -> None:
    add_flags(parser, [HubPushOptions])
