r"""Pushing a tokenizer and the models built on it as one linked set: `hf-vq push-set`.

    hf-vq push-set --tokenizer_dir outputs/vqgan \
        --classifier_dirs outputs/token-vit outputs/pixel-vit --prior_dirs outputs/prior \
        --hub_namespace my-org --collection "Fashion-MNIST tokenizer and its models"

Every folder is checked and every card rendered before the first request. Then the tokenizer is pushed first (its
card lists the models built on it), and each classifier and prior after it, its uploaded config naming the
tokenizer's repo and pinning the commit the tokenizer push made, its card naming the tokenizer as `base_model`.
With `--collection`, the set is also grouped in a Hub collection (skipped with a warning where the Hub endpoint
has no collections). Repo names default to the folder names; `DIR=NAME` or `DIR=NAMESPACE/NAME` picks another.
Instead of `--tokenizer_dir`, `--tokenizer_hub_id` names a tokenizer pushed earlier; its card is then updated.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from .errors import HubPushError, InvalidRepoIdError, LocalTokenizerError
from .model_folder import ModelFolder, load_model_folder, looks_like_repo_id
from .push import (
    _add_common_hub_flags,
    add_token_flag,
    check_repo_id,
    check_token,
    current_revision,
    hub_errors,
    hub_revision,
    list_on_tokenizer_card,
    render_shared_card,
    reported_as,
    upload_model_folder,
)
from .identity import check_same_tokenizer
from ..logs import quiet_third_party_logs

FOLDER_KINDS = {"tokenizer": "--tokenizer_dir", "classifier": "--classifier_dirs", "prior": "--prior_dirs"}


@dataclass
class SetMember:
    """One folder of the set and the repo it goes to."""

    folder: ModelFolder
    repo_id: str

    @property
    def reads_tokenizer(self) -> bool:
        return self.folder.tokenizer_reference is not None


@dataclass
class PushedSet:
    """What `push_model_set` did: commit URLs by repo id, the tokenizer's pinned revision, the collection URL."""

    commits: dict[str, str]
    tokenizer_repo: str
    tokenizer_revision: str
    collection_url: str | None = None


def push_model_set(
    tokenizer_dir: str | None = None,
    classifier_dirs: list[str] = (),
    prior_dirs: list[str] = (),
    *,
    hub_namespace: str | None = None,
    tokenizer_hub_id: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    license: str = "apache-2.0",  # noqa: A002 - the Hub's field name
    token: str | None = None,
    collection_title: str | None = None,
) -> PushedSet:
    """Push a tokenizer (`tokenizer_dir`, or one already on the Hub: `tokenizer_hub_id`) and the classifiers and
    priors trained on it, linked: see the module docstring. Folder arguments are `DIR` or `DIR=[NAMESPACE/]NAME`.

    Example:
        >>> pushed = push_model_set("outputs/vqgan", ["outputs/token-vit"], hub_namespace="me")  # doctest: +SKIP
        >>> pushed.tokenizer_repo, pushed.tokenizer_revision  # doctest: +SKIP
        ('me/vqgan', '9f3c...')
    """
    if tokenizer_dir is None and tokenizer_hub_id is None:
        raise InvalidRepoIdError(
            "push-set needs --tokenizer_dir (a tokenizer folder) or --tokenizer_hub_id (one on the Hub)."
        )
    if tokenizer_hub_id is not None:
        check_repo_id(tokenizer_hub_id, flag="--tokenizer_hub_id")
    tokenizer = _member(tokenizer_dir, "tokenizer", hub_namespace, repo_id=tokenizer_hub_id) if tokenizer_dir else None
    tokenizer_repo = tokenizer.repo_id if tokenizer else tokenizer_hub_id
    dependents = [_member(spec, "classifier", hub_namespace) for spec in classifier_dirs]
    dependents += [_member(spec, "prior", hub_namespace) for spec in prior_dirs]
    if not dependents and tokenizer is None:
        raise InvalidRepoIdError("push-set with --tokenizer_hub_id needs --classifier_dirs or --prior_dirs to push.")
    _check_distinct([member.repo_id for member in ([tokenizer] if tokenizer else []) + dependents])
    for member in dependents:
        _check_reads_this_tokenizer(member, tokenizer, tokenizer_repo)
    linked = [(member.repo_id, member.folder.kind) for member in dependents if member.reads_tokenizer]
    # Any record of one of the set's folders (a metrics.json naming the tokenizer folder...) becomes its repo id.
    hub_ids = {
        member.folder.path.resolve(): member.repo_id for member in ([tokenizer] if tokenizer else []) + dependents
    }

    api = HfApi()
    common = {"license": license, "endpoint": api.endpoint, "hub_ids": hub_ids}
    if tokenizer:  # every card is rendered, and so checked, before the first request
        render_shared_card(tokenizer.folder, tokenizer.repo_id, dependents=linked, **common)
    for member in dependents:
        render_shared_card(
            member.folder,
            member.repo_id,
            tokenizer_hub_id=tokenizer_repo if member.reads_tokenizer else None,
            **common,
        )

    upload = {
        "private": private,
        "revision": revision,
        "commit_message": commit_message,
        "license": license,
        "hub_ids": hub_ids,
    }
    with quiet_third_party_logs():
        return _upload_set(api, tokenizer, tokenizer_repo, dependents, linked, token, upload, collection_title)


def _upload_set(
    api: HfApi,
    tokenizer: SetMember | None,
    tokenizer_repo: str,
    dependents: list[SetMember],
    linked: list[tuple[str, str]],
    token: str | None,
    upload: dict,
    collection_title: str | None,
) -> PushedSet:
    """The requests of `push_model_set`, once every folder and card is checked."""
    commits: dict[str, str] = {}
    with hub_errors(api.endpoint):
        for repo_id in [member.repo_id for member in ([tokenizer] if tokenizer else []) + dependents]:
            token = check_token(api, repo_id, token)
        if tokenizer:
            commit = upload_model_folder(
                api, tokenizer.folder, tokenizer.repo_id, token=token, dependents=linked, **upload
            )
            commits[tokenizer.repo_id], tokenizer_revision = commit.commit_url, commit.oid
        else:
            tokenizer_revision = current_revision(
                api, tokenizer_repo, token, dependent=", ".join(m.repo_id for m in dependents)
            )
            for member in dependents:
                if member.reads_tokenizer:
                    check_same_tokenizer(api, member.folder, tokenizer_repo, tokenizer_revision, token)
        for member in dependents:
            pin = (
                {"tokenizer_hub_id": tokenizer_repo, "tokenizer_revision": tokenizer_revision}
                if member.reads_tokenizer
                else {}
            )
            commits[member.repo_id] = upload_model_folder(
                api, member.folder, member.repo_id, token=token, **pin, **upload
            ).commit_url
    if tokenizer is None:
        for repo_id, kind in linked:
            list_on_tokenizer_card(api, tokenizer_repo, repo_id, kind, token, tokenizer_revision)
    collection_url = None
    if collection_title:
        collection_url = add_to_collection(
            api, collection_title, [tokenizer_repo, *[m.repo_id for m in dependents]], token
        )
    return PushedSet(commits, tokenizer_repo, tokenizer_revision, collection_url)


def add_to_collection(api: HfApi, title: str, repo_ids: list[str], token: str | None) -> str | None:
    """Group `repo_ids` in the collection `title` of the tokenizer's namespace (created if missing); its URL, or None
    with a warning when the Hub endpoint refuses (the models are pushed either way)."""
    namespace = repo_ids[0].split("/")[0]
    try:
        with hub_errors(api.endpoint):
            collection = api.create_collection(title, namespace=namespace, exists_ok=True, token=token)
            for repo_id in repo_ids:
                api.add_collection_item(collection.slug, repo_id, "model", exists_ok=True, token=token)
        return collection.url
    except (HfHubHTTPError, HubPushError) as error:
        print(
            f"warning: the models are pushed, but the collection {title!r} could not be made at {api.endpoint} "
            f"({type(error).__name__}: {str(error).splitlines()[0]}). Group them by hand on the Hub, or run push-set "
            "again with --collection once the endpoint supports collections."
        )
        return None


def _member(spec: str, kind: str, namespace: str | None, repo_id: str | None = None) -> SetMember:
    """`DIR` or `DIR=[NAMESPACE/]NAME` -> the checked folder and its repo id (default `NAMESPACE/<folder name>`)."""
    directory, _, name = spec.partition("=") if "=" in spec else (spec, "", "")
    folder = load_model_folder(directory)
    flag = FOLDER_KINDS[kind]
    if folder.kind != kind and not (kind == "classifier" and folder.kind == "model"):
        raise HubPushError(
            f"{flag} {directory!r} holds a {folder.kind}, not a {kind}: pass it with {_flag_for(folder.kind)}."
        )
    if repo_id is None:
        name = name or Path(directory).resolve().name
        if "/" not in name:
            if not namespace:
                raise InvalidRepoIdError(
                    f"{flag} {spec!r}: pass --hub_namespace (your user or organisation) or DIR=NAMESPACE/NAME."
                )
            name = f"{namespace}/{name}"
        repo_id = name
    check_repo_id(repo_id, flag=flag)
    return SetMember(folder, repo_id)


def _flag_for(kind: str) -> str:
    return FOLDER_KINDS.get(kind, "--classifier_dirs")


def _check_distinct(repo_ids: list[str]) -> None:
    repeated = sorted({repo_id for repo_id in repo_ids if repo_ids.count(repo_id) > 1})
    if repeated:
        raise InvalidRepoIdError(
            f"Two folders would go to the same repo: {', '.join(repeated)}. Name them with DIR=NAME."
        )


def _check_reads_this_tokenizer(member: SetMember, tokenizer: SetMember | None, tokenizer_repo: str) -> None:
    """A dependent of the set must read the set's tokenizer: its local folder, or its Hub repo. (With
    `--tokenizer_hub_id` and no tokenizer folder, a local reference is taken to be that repo's local copy, as with
    `hf-vq push --tokenizer_hub_id`.)"""
    reference = member.folder.tokenizer_reference
    if reference is None or reference == tokenizer_repo:
        return
    if not looks_like_repo_id(reference) and (
        tokenizer is None or Path(reference).expanduser().resolve() == tokenizer.folder.path.resolve()
    ):
        return
    if looks_like_repo_id(reference):
        raise LocalTokenizerError(
            f"{member.folder.path} reads the tokenizer {reference!r} from the Hub, not {tokenizer_repo!r}: push it "
            f"with `hf-vq push --model_dir {member.folder.path} --hub_model_id {member.repo_id}` instead."
        )
    raise LocalTokenizerError(
        f"{member.folder.path} reads the tokenizer in {reference!r}, which is not the tokenizer of this push "
        f"({tokenizer.folder.path if tokenizer else tokenizer_repo}). Push it with its own tokenizer: "
        f"`hf-vq push-set --tokenizer_dir {reference} {_flag_for(member.folder.kind)} {member.folder.path} ...`."
    )


# ---------------------------------------------------------------------------------------------- command line


def add_push_set_subcommand(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """`hf-vq push-set --tokenizer_dir T --classifier_dirs C1 C2 --prior_dirs P --hub_namespace ORG
    [--collection T]`."""
    parser = subparsers.add_parser(
        "push-set",
        help="push a tokenizer and the classifiers and priors trained on it as one linked set",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--tokenizer_dir",
        default=None,
        help="tokenizer folder, pushed first (DIR or DIR=[NAMESPACE/]NAME); or give --tokenizer_hub_id",
    )
    parser.add_argument(
        "--classifier_dirs",
        nargs="+",
        default=[],
        metavar="DIR[=NAME]",
        help="classifier folders trained on the tokenizer (token ViTs, pixel ViTs)",
    )
    parser.add_argument(
        "--prior_dirs",
        nargs="+",
        default=[],
        metavar="DIR[=NAME]",
        help="generation pipeline folders (model_index.json) over the tokenizer's codes",
    )
    parser.add_argument(
        "--hub_namespace", default=None, help="user or organisation to push to; repo names default to folder names"
    )
    parser.add_argument(
        "--collection", default=None, metavar="TITLE", help="also group the set in a Hub collection with this title"
    )
    _add_common_hub_flags(parser)
    add_token_flag(parser)
    parser.set_defaults(handler=run_push_set)
    return parser


def run_push_set(args: argparse.Namespace) -> PushedSet:
    with reported_as("hf-vq push-set"):
        pushed = push_model_set(
            args.tokenizer_dir,
            args.classifier_dirs,
            args.prior_dirs,
            hub_namespace=args.hub_namespace,
            tokenizer_hub_id=args.tokenizer_hub_id,
            private=args.private,
            revision=hub_revision(args),
            commit_message=args.commit_message,
            license=args.license,
            token=args.hub_token,
            collection_title=args.collection,
        )
    print(f"tokenizer {pushed.tokenizer_repo} at revision {pushed.tokenizer_revision}")
    for repo_id, url in pushed.commits.items():
        print(f"pushed {repo_id}: {url}")
    if pushed.collection_url:
        print(f"collection: {pushed.collection_url}")
    return pushed


__all__ = ["PushedSet", "add_push_set_subcommand", "add_to_collection", "push_model_set", "run_push_set"]
