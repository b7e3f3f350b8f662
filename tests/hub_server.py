"""A small Hugging Face Hub on loopback, for tests: the part of the Hub HTTP API that huggingface_hub 2.4
calls for `whoami`, `create_repo`, `create_branch`, `upload_folder` / `create_commit` (preupload + NDJSON
commit), `model_info`, `list_repo_tree` (hence `snapshot_download` and diffusers' pipeline download), file
download (`hf_hub_download`, hence `from_pretrained` and `ModelCard.load`) and collections (`create_collection`,
`add_collection_item`, `get_collection`; switched off with `collections=False`, to play an endpoint without them).
Dataset repos (`repo_type="dataset"`: `datasets`' `push_to_hub` / `load_dataset`) take the same routes under
`/api/datasets/` and `/datasets/`, plus `paths-info`, and live in `root/datasets/` (`HubServer.dataset_store`).
`datasets` uploads its parquet files from temporary files it deletes before the commit, so they cannot travel
inline: files ending in one of `lfs_suffixes` are asked for as LFS uploads (the basic transfer of the LFS batch
API: one PUT per file, then an `lfsFile` commit operation). The client must not use Xet (HF_HUB_DISABLE_XET=1).

Repos live on disk under `root/` so a test can inspect what was pushed:

    root/models/<org>/<name>/meta.json          {"private": bool, "created_at": ...}
    root/models/<org>/<name>/refs/<branch>      commit id (40 hex)
    root/models/<org>/<name>/commits/<id>.json  {"parent", "message", "files": {path: blob sha256}}
    root/models/<org>/<name>/blobs/<sha256>     file contents
    root/collections/<namespace>/<slug>.json    the collection, as the API returns it

Every file is stored as a "regular" git file: the preupload answer says `uploadMode: regular`, which
makes the client send contents inline in the commit and never try Xet or LFS transfers (which need
storage servers this one does not imitate).

    >>> server = HubServer(root, tokens={"hf_test": "alice"}, orgs={"alice": ["org"]})
    >>> server.start()   # server.url == "http://127.0.0.1:<port>"
    >>> ...
    >>> server.stop()
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

DEFAULT_BRANCH = "main"
COMMIT_ID = re.compile(r"^[0-9a-f]{40}$")
NAME = r"[A-Za-z0-9][\w.-]*"
KIND = r"(?P<kind>models|datasets)"
ROUTES = [
    # (method, pattern, handler name). Revisions and branches are URL-quoted by the client ("refs%2Fpr%2F1").
    # `kind` picks the store: model repos, or dataset repos (`/api/datasets/...`, `/datasets/<repo>/resolve/...`).
    ("GET", r"^/api/whoami-v2$", "whoami"),
    ("GET", r"^/api/agent-harnesses$", "agent_harnesses"),
    ("POST", r"^/api/repos/create$", "create_repo"),
    ("POST", r"^/api/validate-yaml$", "validate_yaml"),
    ("POST", rf"^/api/{KIND}/(?P<repo>{NAME}/{NAME})/preupload/(?P<rev>[^/]+)$", "preupload"),
    ("POST", rf"^/api/{KIND}/(?P<repo>{NAME}/{NAME})/commit/(?P<rev>[^/]+)$", "commit"),
    ("POST", rf"^/api/{KIND}/(?P<repo>{NAME}/{NAME})/branch/(?P<branch>[^/]+)$", "create_branch"),
    ("POST", rf"^/api/{KIND}/(?P<repo>{NAME}/{NAME})/paths-info/(?P<rev>[^/]+)$", "paths_info"),
    ("GET", rf"^/api/{KIND}/(?P<repo>{NAME}/{NAME})(?:/revision/(?P<rev>[^/]+))?$", "model_info"),
    ("GET", rf"^/api/{KIND}/(?P<repo>{NAME}/{NAME})/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?$", "tree"),
    ("HEAD", rf"^/(?:(?P<kind>datasets)/)?(?P<repo>{NAME}/{NAME})/resolve/(?P<rev>[^/]+)/(?P<path>.+)$", "resolve"),
    ("GET", rf"^/(?:(?P<kind>datasets)/)?(?P<repo>{NAME}/{NAME})/resolve/(?P<rev>[^/]+)/(?P<path>.+)$", "resolve"),
    ("POST", rf"^/(?:(?P<kind>datasets)/)?(?P<repo>{NAME}/{NAME})\.git/info/lfs/objects/batch$", "lfs_batch"),
    ("PUT", rf"^/lfs-upload/{KIND}/(?P<repo>{NAME}/{NAME})/(?P<oid>[0-9a-f]{{64}})$", "lfs_upload"),
    ("POST", r"^/api/collections$", "create_collection"),
    ("GET", rf"^/api/collections/(?P<slug>{NAME}/{NAME})$", "get_collection"),
    ("POST", rf"^/api/collections/(?P<slug>{NAME}/{NAME})/items$", "add_collection_item"),
]


class HubError(Exception):
    """An HTTP error answered the way the Hub answers it (status, X-Error-Code, JSON body)."""

    def __init__(self, status: int, message: str, error_code: str | None = None, commit: str | None = None):
        super().__init__(message)
        self.status, self.message, self.error_code, self.commit = status, message, error_code, commit


class RepoStore:
    """Git-like repos on disk: immutable commits that map paths to content-addressed blobs."""

    def __init__(self, root: Path, kind: str = "models"):
        self.root = root
        self.kind = kind  # "models" or "datasets": the folder under root
        self.lock = threading.Lock()  # one writer at a time, like the Hub's per-repo commit lock

    def repo_dir(self, repo_id: str) -> Path:
        return self.root / self.kind / repo_id

    def exists(self, repo_id: str) -> bool:
        return (self.repo_dir(repo_id) / "meta.json").is_file()

    def meta(self, repo_id: str) -> dict:
        return json.loads((self.repo_dir(repo_id) / "meta.json").read_text())

    def create(self, repo_id: str, private: bool) -> None:
        repo = self.repo_dir(repo_id)
        for sub in ("refs", "commits", "blobs"):
            (repo / sub).mkdir(parents=True, exist_ok=True)
        (repo / "meta.json").write_text(json.dumps({"private": private, "created_at": _now()}))
        # The Hub starts every repo with an "initial commit" holding a .gitattributes file.
        gitattributes = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
        self.write_commit(
            repo_id, DEFAULT_BRANCH, None, "initial commit", {".gitattributes": self.put_blob(repo_id, gitattributes)}
        )

    def put_blob(self, repo_id: str, content: bytes) -> str:
        sha256 = hashlib.sha256(content).hexdigest()
        (self.repo_dir(repo_id) / "blobs" / sha256).write_bytes(content)
        return sha256

    def blob(self, repo_id: str, sha256: str) -> bytes:
        return (self.repo_dir(repo_id) / "blobs" / sha256).read_bytes()

    def branch_head(self, repo_id: str, branch: str) -> str | None:
        ref = self.repo_dir(repo_id) / "refs" / branch.replace("/", "%2F")
        return ref.read_text().strip() if ref.is_file() else None

    def set_branch(self, repo_id: str, branch: str, commit_id: str) -> None:
        (self.repo_dir(repo_id) / "refs" / branch.replace("/", "%2F")).write_text(commit_id)

    def resolve(self, repo_id: str, revision: str) -> str:
        """Commit id for a branch name or a commit id; HubError 404 RevisionNotFound otherwise."""
        head = self.branch_head(repo_id, revision)
        if head is not None:
            return head
        if COMMIT_ID.match(revision) and (self.repo_dir(repo_id) / "commits" / f"{revision}.json").is_file():
            return revision
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def commit(self, repo_id: str, commit_id: str) -> dict:
        return json.loads((self.repo_dir(repo_id) / "commits" / f"{commit_id}.json").read_text())

    def commits_on(self, repo_id: str, branch: str = DEFAULT_BRANCH) -> list[dict]:
        """The history of `branch`, newest first (what `list_repo_commits` would show)."""
        history, commit_id = [], self.branch_head(repo_id, branch)
        while commit_id is not None:
            commit = self.commit(repo_id, commit_id)
            history.append({"id": commit_id, **commit})
            commit_id = commit["parent"]
        return history

    def write_commit(self, repo_id: str, branch: str, parent: str | None, message: str, files: dict[str, str]) -> str:
        record = {"parent": parent, "message": message, "files": dict(sorted(files.items())), "date": _now()}
        commit_id = hashlib.sha1(json.dumps(record, sort_keys=True).encode()).hexdigest()
        (self.repo_dir(repo_id) / "commits" / f"{commit_id}.json").write_text(json.dumps(record, indent=1))
        self.set_branch(repo_id, branch, commit_id)
        return commit_id


class HubServer:
    """Starts a threaded HTTP server on 127.0.0.1 (ephemeral port) that serves a `RepoStore`.

    `tokens` maps bearer tokens to user names; `orgs` maps user names to the organisations they may write to.
    `requests` records (method, path) of every request, `unhandled` those that matched no route.
    """

    def __init__(
        self,
        root: str | Path,
        tokens: dict[str, str],
        orgs: dict[str, list[str]] | None = None,
        collections: bool = True,
        lfs_suffixes: tuple[str, ...] = (),
    ):
        self.store = RepoStore(Path(root))
        self.lfs_suffixes = tuple(lfs_suffixes)
        self.dataset_store = RepoStore(Path(root), kind="datasets")
        self.tokens = dict(tokens)
        self.orgs = dict(orgs or {})
        self.collections = collections
        self.requests: list[tuple[str, str]] = []
        self.unhandled: list[tuple[str, str]] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "HubServer":
        handler = type("BoundHubHandler", (HubRequestHandler,), {"hub": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="test-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ auth

    def user_for(self, authorization: str | None) -> str | None:
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        return self.tokens.get(authorization.split(" ", 1)[1].strip())

    def require_user(self, authorization: str | None) -> str:
        user = self.user_for(authorization)
        if user is None:
            message = "Invalid credentials in Authorization header" if authorization else "You must be authenticated"
            raise HubError(401, message)
        return user

    def require_write(self, authorization: str | None, repo_id: str) -> str:
        user = self.require_user(authorization)
        namespace = repo_id.split("/")[0]
        if namespace != user and namespace not in self.orgs.get(user, []):
            raise HubError(403, f'You don\'t have the rights to create a model under the namespace "{namespace}"')
        return user

    def collection_file(self, slug: str) -> Path:
        return self.store.root / "collections" / f"{slug}.json"

    def collection(self, slug: str) -> dict:
        """A stored collection (what `GET /api/collections/<slug>` answers); HubError 404 if there is none."""
        if not self.collections or not self.collection_file(slug).is_file():
            raise HubError(404, f"Collection {slug} not found")
        return json.loads(self.collection_file(slug).read_text())

    def require_read(self, authorization: str | None, repo_id: str, store: RepoStore | None = None) -> None:
        """Missing repos and private repos of others look the same (401 RepoNotFound), as on the Hub."""
        store = store or self.store
        if not store.exists(repo_id):
            raise HubError(404 if authorization else 401, "Repository not found", "RepoNotFound")
        if store.meta(repo_id)["private"]:
            user = self.user_for(authorization)
            namespace = repo_id.split("/")[0]
            if user is None or (namespace != user and namespace not in self.orgs.get(user, [])):
                raise HubError(401, "Repository not found", "RepoNotFound")


class HubRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    hub: HubServer  # set on the subclass made by HubServer.start

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - keep test output quiet
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        self.query = {key: values[-1] for key, values in parse_qs(split.query).items()}
        self.hub.requests.append((method, split.path))
        body = self._read_body()
        try:
            for route_method, pattern, name in ROUTES:
                match = re.match(pattern, split.path)
                if route_method == method and match:
                    params = {key: unquote(value) for key, value in match.groupdict().items() if value is not None}
                    kind = params.pop("kind", "models")
                    self.repo_store = self.hub.dataset_store if kind == "datasets" else self.hub.store
                    getattr(self, f"handle_{name}")(body=body, **params)
                    return
            self.hub.unhandled.append((method, split.path))
            raise HubError(404, f"No route for {method} {split.path} in the test Hub")
        except HubError as error:
            self._send_error(error, head_only=method == "HEAD")

    # ------------------------------------------------------------------ plumbing

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip(), 16)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
                if size == 0:
                    return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None, head_only: bool = False) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def _send_json(self, payload, status: int = 200) -> None:
        self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})

    def _send_error(self, error: HubError, head_only: bool = False) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": error.message}
        if error.error_code:
            headers["X-Error-Code"] = error.error_code
        if error.commit:
            headers["X-Repo-Commit"] = error.commit
        self._send(error.status, json.dumps({"error": error.message}).encode(), headers, head_only=head_only)

    @property
    def authorization(self) -> str | None:
        return self.headers.get("Authorization")

    def _json_body(self, body: bytes) -> dict:
        try:
            return json.loads(body or b"{}")
        except json.JSONDecodeError as error:
            raise HubError(400, f"Invalid JSON body: {error}") from error

    # ------------------------------------------------------------------ routes

    def handle_whoami(self, body: bytes) -> None:
        user = self.hub.require_user(self.authorization)
        orgs = [{"name": org, "type": "org"} for org in self.hub.orgs.get(user, [])]
        self._send_json(
            {
                "type": "user",
                "name": user,
                "fullname": user,
                "orgs": orgs,
                "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}},
            }
        )

    def handle_agent_harnesses(self, body: bytes) -> None:
        """The registry the client reads to tag its user agent; the test Hub knows no agents."""
        self._send_json({"standardEnvVars": [], "harnesses": {}})

    def handle_create_repo(self, body: bytes) -> None:
        payload = self._json_body(body)
        if payload.get("type", "model") not in ("model", "dataset"):
            raise HubError(400, "The test Hub only hosts model and dataset repos")
        store = self.hub.dataset_store if payload.get("type") == "dataset" else self.hub.store
        name, organization = payload.get("name"), payload.get("organization")
        user = self.hub.require_user(self.authorization)
        repo_id = f"{organization or user}/{name}"
        if not re.fullmatch(rf"{NAME}/{NAME}", repo_id) or "--" in repo_id or ".." in repo_id:
            raise HubError(400, f"Invalid repo name: {repo_id}")
        self.hub.require_write(self.authorization, repo_id)
        url = f"{self.hub.url}/{repo_id}"
        with store.lock:
            if store.exists(repo_id):
                self._send_json({"error": "You already created this model repo", "url": url}, status=409)
                return
            store.create(repo_id, private=payload.get("visibility") == "private" or bool(payload.get("private")))
        self._send_json({"url": url, "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]})

    def handle_validate_yaml(self, body: bytes) -> None:
        """The Hub's check of a README's front matter, reduced to what it must be: a YAML mapping."""
        content = self._json_body(body).get("content", "")
        match = re.match(r"^---\s*\n(.*?)\n---\s*\n", content, flags=re.S)
        errors = []
        if match:
            try:
                metadata = yaml.safe_load(match.group(1))
                if metadata is not None and not isinstance(metadata, dict):
                    errors.append({"message": "metadata must be a YAML mapping"})
            except yaml.YAMLError as error:
                errors.append({"message": f"metadata is not valid YAML: {error}"})
        self._send_json({"errors": errors, "warnings": []}, status=400 if errors else 200)

    def handle_preupload(self, body: bytes, repo: str, rev: str) -> None:
        self.hub.require_write(self.authorization, repo)
        self.hub.require_read(self.authorization, repo, self.repo_store)
        head = self.repo_store.resolve(repo, rev)
        remote_files = self.repo_store.commit(repo, head)["files"]
        files = []
        for entry in self._json_body(body).get("files", []):
            existing = remote_files.get(entry["path"])
            # The oid lets the client skip unchanged files; for regular files it is the git blob sha1.
            oid = _git_sha1(self.repo_store.blob(repo, existing)) if existing else None
            mode = "lfs" if entry["path"].endswith(self.hub.lfs_suffixes or ("\0",)) else "regular"
            files.append({"path": entry["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        self._send_json({"files": files, "commitOid": head})

    def handle_commit(self, body: bytes, repo: str, rev: str) -> None:
        self.hub.require_write(self.authorization, repo)
        self.hub.require_read(self.authorization, repo, self.repo_store)
        header, operations = _parse_ndjson_commit(body)
        store = self.repo_store
        with store.lock:
            head = store.resolve(repo, rev)
            if store.branch_head(repo, rev) is None:
                raise HubError(400, f"Cannot commit to {rev}: not a branch")
            parent_commit = header.get("parentCommit")
            if parent_commit and not head.startswith(parent_commit):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(store.commit(repo, head)["files"])
            for key, value in operations:
                self._apply_operation(repo, files, key, value)
            message = header.get("summary") or "Update"
            commit_id = store.write_commit(repo, rev, head, message, files)
        self._send_json(
            {
                "success": True,
                "commitOid": commit_id,
                "commitUrl": f"{self.hub.url}/{repo}/commit/{commit_id}",
                "pullRequestUrl": None,
            }
        )

    def _apply_operation(self, repo: str, files: dict[str, str], key: str, value: dict) -> None:
        if key == "file":
            if value.get("encoding") != "base64":
                raise HubError(400, f"Unsupported file encoding {value.get('encoding')!r}")
            files[value["path"]] = self.repo_store.put_blob(repo, base64.b64decode(value["content"]))
        elif key == "lfsFile":
            if not (self.repo_store.repo_dir(repo) / "blobs" / value["oid"]).is_file():
                raise HubError(422, f"LFS object {value['oid']} of {value['path']} was never uploaded")
            files[value["path"]] = value["oid"]
        elif key == "deletedFile":
            if files.pop(value["path"], None) is None:
                raise HubError(404, f"File not found: {value['path']}", "EntryNotFound")
        elif key == "deletedFolder":
            prefix = value["path"].rstrip("/") + "/"
            for path in [p for p in files if p.startswith(prefix)]:
                del files[path]
        else:
            # xet pointers would need a storage server; preupload never asks for them.
            raise HubError(422, f"The test Hub does not accept {key!r} operations (all uploads are regular)")

    def handle_lfs_batch(self, body: bytes, repo: str) -> None:
        """The LFS batch API, basic transfer: one upload URL on this server per object not stored yet."""
        self.hub.require_write(self.authorization, repo)
        kind = self.repo_store.kind
        objects = []
        for item in self._json_body(body).get("objects", []):
            answer = {"oid": item["oid"], "size": item["size"], "authenticated": True}
            if not (self.repo_store.repo_dir(repo) / "blobs" / item["oid"]).is_file():
                answer["actions"] = {"upload": {"href": f"{self.hub.url}/lfs-upload/{kind}/{repo}/{item['oid']}"}}
            objects.append(answer)
        self._send(
            200,
            json.dumps({"transfer": "basic", "objects": objects}).encode(),
            {"Content-Type": "application/vnd.git-lfs+json"},
        )

    def handle_lfs_upload(self, body: bytes, repo: str, oid: str) -> None:
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, f"LFS upload does not match its oid {oid}")
        self.repo_store.put_blob(repo, body)
        self._send(200, b"")

    def handle_create_branch(self, body: bytes, repo: str, branch: str) -> None:
        self.hub.require_write(self.authorization, repo)
        self.hub.require_read(self.authorization, repo, self.repo_store)
        store = self.repo_store
        with store.lock:
            if store.branch_head(repo, branch) is not None:
                raise HubError(409, f"Branch {branch} already exists")
            start = self._json_body(body).get("startingPoint") or DEFAULT_BRANCH
            store.set_branch(repo, branch, store.resolve(repo, start))
        self._send_json({})

    def handle_model_info(self, body: bytes, repo: str, rev: str = DEFAULT_BRANCH) -> None:
        self.hub.require_read(self.authorization, repo, self.repo_store)
        store = self.repo_store
        commit_id = store.resolve(repo, rev)
        files = store.commit(repo, commit_id)["files"]
        info = {
            "id": repo,
            "_id": hashlib.sha1(repo.encode()).hexdigest()[:24],
            "modelId": repo,
            "author": repo.split("/")[0],
            "sha": commit_id,
            "private": store.meta(repo)["private"],
            "createdAt": store.meta(repo)["created_at"],
            "lastModified": store.commit(repo, commit_id)["date"],
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": [{"rfilename": path} for path in files],
        }
        info.update(self._card_fields(repo, files))
        if "config.json" in files:
            info["config"] = json.loads(store.blob(repo, files["config.json"]))
        self._send_json(info)

    def _card_fields(self, repo: str, files: dict[str, str]) -> dict:
        """What the Hub derives from README.md's front matter: cardData, tags, pipeline_tag, library_name."""
        if "README.md" not in files:
            return {}
        text = self.repo_store.blob(repo, files["README.md"]).decode()
        match = re.match(r"^---\s*\n(.*?)\n---\s*\n", text, flags=re.S)
        metadata = (yaml.safe_load(match.group(1)) if match else None) or {}
        fields = {"cardData": metadata, "tags": list(metadata.get("tags") or [])}
        for key in ("pipeline_tag", "library_name"):
            if key in metadata:
                fields[key] = metadata[key]
        if "model-index" in metadata:
            fields["model-index"] = metadata["model-index"]
        return fields

    # ------------------------------------------------------------------ collections

    def handle_create_collection(self, body: bytes) -> None:
        if not self.hub.collections:
            raise HubError(404, "No route for POST /api/collections in the test Hub")
        payload = self._json_body(body)
        namespace, title = payload.get("namespace"), payload.get("title")
        if not title:
            raise HubError(400, "A collection needs a title")
        user = self.hub.require_user(self.authorization)
        namespace = namespace or user
        if namespace != user and namespace not in self.hub.orgs.get(user, []):
            raise HubError(403, f"You cannot create a collection in {namespace}")
        existing = [
            json.loads(p.read_text()) for p in (self.hub.store.root / "collections" / namespace).glob("*.json")
        ]
        for collection in existing:
            if collection["title"] == title:
                self._send_json({"error": "Collection already exists", "slug": collection["slug"]}, status=409)
                return
        slug = (
            f"{namespace}/{re.sub(r'[^a-z0-9]+', '-', title.lower()).strip('-') or 'collection'}"
            f"-{hashlib.sha1(title.encode()).hexdigest()[:12]}"
        )
        collection = {
            "slug": slug,
            "title": title,
            "description": payload.get("description"),
            "owner": {"name": namespace},
            "items": [],
            "lastUpdated": _now(),
            "position": 0,
            "private": bool(payload.get("private")),
            "theme": "indigo",
            "upvotes": 0,
        }
        self.hub.collection_file(slug).parent.mkdir(parents=True, exist_ok=True)
        self.hub.collection_file(slug).write_text(json.dumps(collection))
        self._send_json(collection)

    def handle_get_collection(self, body: bytes, slug: str) -> None:
        self._send_json(self.hub.collection(slug))

    def handle_add_collection_item(self, body: bytes, slug: str) -> None:
        collection = self.hub.collection(slug)
        user = self.hub.require_user(self.authorization)
        namespace = collection["owner"]["name"]
        if namespace != user and namespace not in self.hub.orgs.get(user, []):
            raise HubError(403, f"You cannot change the collection {slug}")
        item = self._json_body(body).get("item") or {}
        if item.get("type") != "model" or not self.hub.store.exists(item.get("id", "")):
            raise HubError(404, f"Model {item.get('id')!r} not found")
        if any(entry["id"] == item["id"] for entry in collection["items"]):
            raise HubError(409, f"{item['id']} is already in the collection")
        collection["items"].append(
            {
                "_id": hashlib.sha1(item["id"].encode()).hexdigest()[:24],
                "id": item["id"],
                "type": "model",
                "position": len(collection["items"]),
            }
        )
        collection["lastUpdated"] = _now()
        self.hub.collection_file(slug).write_text(json.dumps(collection))
        self._send_json(collection)

    def handle_tree(self, body: bytes, repo: str, rev: str, path: str | None = None) -> None:
        """`list_repo_tree` (hence `snapshot_download`): the files of a commit, one page, recursive or not."""
        self.hub.require_read(self.authorization, repo, self.repo_store)
        store = self.repo_store
        files = store.commit(repo, store.resolve(repo, rev))["files"]
        recursive = self.query.get("recursive", "false").lower() == "true"
        prefix = f"{path.strip('/')}/" if path else ""
        entries, folders = [], set()
        for name, blob_sha in sorted(files.items()):
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix) :]
            if not recursive and "/" in rest:
                folders.add(prefix + rest.split("/", 1)[0])
                continue
            content = store.blob(repo, blob_sha)
            entries.append({"type": "file", "path": name, "size": len(content), "oid": _git_sha1(content)})
        entries += [{"type": "directory", "path": folder, "oid": "0" * 40} for folder in sorted(folders)]
        if prefix and not entries:  # as the Hub: a folder that does not exist is a 404, not an empty listing
            raise HubError(404, f"{path} does not exist on {rev}", "EntryNotFound")
        self._send_json(entries)

    def handle_paths_info(self, body: bytes, repo: str, rev: str) -> None:
        """`get_paths_info` (hence `HfFileSystem.info`): the entries of the paths asked for that exist."""
        self.hub.require_read(self.authorization, repo, self.repo_store)
        store = self.repo_store
        files = store.commit(repo, store.resolve(repo, rev))["files"]
        entries = []
        for path in parse_qs(body.decode()).get("paths", []):
            path = path.strip("/")
            if path in files:
                content = store.blob(repo, files[path])
                entries.append({"type": "file", "path": path, "size": len(content), "oid": _git_sha1(content)})
            elif any(name.startswith(f"{path}/") for name in files):
                entries.append({"type": "directory", "path": path, "oid": "0" * 40})
        self._send_json(entries)

    def handle_resolve(self, body: bytes, repo: str, rev: str, path: str) -> None:
        head_only = self.command == "HEAD"
        self.hub.require_read(self.authorization, repo, self.repo_store)
        store = self.repo_store
        commit_id = store.resolve(repo, rev)
        blob_sha = store.commit(repo, commit_id)["files"].get(path)
        if blob_sha is None:
            raise HubError(404, "Entry not found", "EntryNotFound", commit=commit_id)
        content = store.blob(repo, blob_sha)
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Repo-Commit": commit_id,
            # The Hub's ETag of a regular file is its git blob sha1; the client stores files under it.
            "ETag": f'"{_git_sha1(content)}"',
            "Accept-Ranges": "bytes",
        }
        self._send(200, content, headers, head_only=head_only)


def _parse_ndjson_commit(body: bytes) -> tuple[dict, list[tuple[str, dict]]]:
    header, operations = None, []
    for line in body.splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        if item["key"] == "header":
            header = item["value"]
        else:
            operations.append((item["key"], item["value"]))
    if header is None:
        raise HubError(400, "Commit payload has no header line")
    return header, operations


def _git_sha1(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


__all__ = ["HubError", "HubServer", "RepoStore"]
