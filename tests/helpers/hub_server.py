"""A Hub-compatible HTTP server on loopback, for tests that drive the real `huggingface_hub` client.

Why it exists: the Hugging Face Hub is unreachable from the machines these tests run on, and no installable
package serves the Hub's upload API (repo creation, preupload, NDJSON commits, the Git LFS batch transfer).
So this module implements, with the standard library only, the part of that API that `huggingface_hub` 2.4
calls, with the requests, JSON fields and headers its source reads (hf_api.py, _commit_api.py, lfs.py,
file_download.py, _snapshot_download.py, utils/_http.py). The real client, and diffusers' `push_to_hub` and
`from_pretrained` on top of it, then run against it with `HF_ENDPOINT=<LocalHub.url>` set before
`huggingface_hub` is imported (it reads the variable at import, so clients run in subprocesses):

    with LocalHub(tmp_path / "hub") as hub:        # token "hf_test_token" is user "tester"
        subprocess.run([...], env={**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_test_token"})
        assert hub.repo_private("tester/model")

Xet: with `hf_xet` installed (and HF_HUB_DISABLE_XET unset) the client uploads every file that the preupload
endpoint calls "lfs" through Xet storage. That choice is made client-side (`is_xet_available()` in
`_commit_api._upload_files` and `HfApi.upload_folder`); no reply of the server, the transfer of the LFS batch
reply included, turns it off. LocalHub does not speak Xet, so by default its preupload answers "regular" for
every file: the client then sends contents inline (base64 in the commit) and never contacts Xet. With
`LocalHub(lfs_uploads=True)` preupload answers "lfs" for binary or large files as the Hub does, and clients
that use the LFS "basic" transfer (HF_HUB_DISABLE_XET=1, or file objects, which the client never gives Xet)
upload them by batch, PUT to a signed URL and verify. Downloads never involve Xet: no response carries
`X-Xet-Hash` and no tree entry has a `xetHash`.

By hand: `python tests/helpers/hub_server.py --port 8080 --storage /tmp/hub`, then `HF_ENDPOINT=http://127.0.0.1:8080`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

DEFAULT_TOKENS = {"hf_test_token": "tester"}
# What the Hub stores with Git LFS: files of 10 MB or more, binary files, and these extensions (a subset of the
# .gitattributes it writes in a new repo).
LFS_SUFFIXES = tuple(".safetensors .bin .pt .pth .ckpt .png .jpg .jpeg .npy .npz .h5 .msgpack .onnx .pkl .zip".split())
LFS_MIN_SIZE = 10 * 1024 * 1024
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
REPO_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
XET_UNSUPPORTED = (
    "LocalHub does not implement Xet storage. huggingface_hub uploads 'lfs' files through Xet when hf_xet is "
    "installed: use LocalHub(lfs_uploads=False), set HF_HUB_DISABLE_XET=1, or upload file objects."
)

_REPO = r"(?P<repo_id>[^/]+/[^/]+?)"
_API = rf"/api/(?P<types>models|datasets|spaces)/{_REPO}"
_FILES = rf"/(?:(?P<types>datasets|spaces)/)?{_REPO}"
# (method, path regex, handler name); HEAD is served by the GET route.
ROUTES = [
    ("GET", r"/api/whoami-v2", "_whoami"),
    ("POST", r"/api/repos/create", "_create_repo"),
    ("DELETE", r"/api/repos/delete", "_delete_repo"),
    ("POST", r"/api/validate-yaml", "_validate_yaml"),
    ("GET", _API + r"(?:/revision/(?P<rev>[^/]+))?", "_repo_info"),
    ("GET", _API + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", "_tree"),
    ("GET", _API + r"/refs", "_refs"),
    ("GET", _API + r"/commits/(?P<rev>[^/]+)", "_commits"),
    ("POST", _API + r"/preupload/(?P<rev>[^/]+)", "_preupload"),
    ("POST", _API + r"/commit/(?P<rev>[^/]+)", "_commit"),
    ("POST", _API + r"/branch/(?P<branch>[^/]+)", "_create_branch"),
    ("DELETE", _API + r"/branch/(?P<branch>[^/]+)", "_delete_branch"),
    ("POST", _API + r"/tag/(?P<rev>[^/]+)", "_create_tag"),
    ("GET", _API + r"/xet-(?:read|write)-token/.*", "_xet_token"),
    ("POST", _FILES + r"\.git/info/lfs/objects/batch", "_lfs_batch"),
    ("POST", _FILES + r"\.git/info/lfs/objects/verify", "_lfs_verify"),
    ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", "_lfs_upload"),
    ("GET", _FILES + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "_resolve"),
]


@dataclass
class Request:
    """A request as LocalHub received it (header names in lower case) and the status it was answered with."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    status: int | None = None


class HubError(Exception):
    """An error answered like the Hub: `X-Error-Code` / `X-Error-Message` headers and a JSON `{"error": ...}`."""

    def __init__(
        self,
        status: int,
        code: str | None,
        message: str,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers, self.extra = dict(headers or {}), dict(extra or {})

    def response(self) -> _Response:
        headers = {"X-Error-Message": self.message.encode("ascii", "replace").decode(), **self.headers}
        if self.code is not None:
            headers["X-Error-Code"] = self.code
        return _json({"error": self.message, **self.extra}, self.status, headers)


@dataclass
class _Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _File:
    """A file of a commit: its content is blobs/<sha256>; `oid` is its git blob id (of the pointer if LFS)."""

    sha256: str
    size: int
    lfs: bool
    oid: str

    @property
    def pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n".encode()


@dataclass
class _Commit:
    id: str
    parent: str | None
    title: str
    message: str
    author: str
    date: str
    files: dict[str, _File]


@dataclass
class _Repo:
    type: str
    id: str
    private: bool
    created_at: str
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, _Commit] = field(default_factory=dict)
    lfs_objects: set[str] = field(default_factory=set)  # sha256 of the LFS objects uploaded to this repo

    @property
    def key(self) -> str:
        return f"{self.type}:{self.id}"

    @property
    def owner(self) -> str:
        return self.id.split("/")[0]

    @property
    def object_id(self) -> str:
        return hashlib.sha1(self.key.encode()).hexdigest()[:24]


@dataclass
class _Fault:
    status: int
    times: int | None
    pattern: re.Pattern[str]


class LocalHub:
    """A Hub on loopback for the real `huggingface_hub` client; see the module docstring.

    Test hooks: `requests` (the log), `fail()` (injected errors), `seed_repo()` (a repo without the client),
    `repo_files()`, `lfs_paths()`, `repo_private()` and `repo_commits()` (what the server holds).

    Args:
        storage: directory of the blobs and of state.json (reloaded if present); default: a temporary
            directory, deleted by `stop()`.
        tokens: token -> user name; a token's user owns the namespace of its name. Default: DEFAULT_TOKENS.
        host, port: where to listen; port 0 picks a free port (see `url`).
        lfs_uploads: answer "lfs" in preupload for binary or large files, as the Hub does (see the module
            docstring: a client with hf_xet would then need Xet). Default: "regular" for every file.
        page_size: entries per page of the tree listing (the Hub's 1000; 50 with `expand`, or less).
    """

    def __init__(
        self,
        storage: str | os.PathLike[str] | None = None,
        *,
        tokens: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        lfs_uploads: bool = False,
        page_size: int = 1000,
    ):
        self.tokens = dict(DEFAULT_TOKENS if tokens is None else tokens)
        self.lfs_uploads = lfs_uploads
        self.page_size = page_size
        self._address = (host, port)
        self._tmp = tempfile.TemporaryDirectory(prefix="localhub-") if storage is None else None
        self.storage = Path(self._tmp.name if self._tmp is not None else storage)
        (self.storage / "blobs").mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._repos: dict[str, _Repo] = {}
        self._requests: list[Request] = []
        self._faults: list[_Fault] = []
        self._secret = secrets.token_bytes(16)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., _Response]]] = [
            (method, re.compile(pattern), getattr(self, handler)) for method, pattern, handler in ROUTES
        ]
        if self._state_path.exists():
            self._load_state()

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """The endpoint to put in HF_ENDPOINT, e.g. http://127.0.0.1:40123."""
        if self._server is None:
            raise RuntimeError("LocalHub is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LocalHub:
        """Listen and serve in a daemon thread."""
        self._server = _Server(self._address, _Handler)
        self._server.hub = self
        serve = functools.partial(self._server.serve_forever, poll_interval=0.05)  # stop() waits one interval
        self._thread = threading.Thread(target=serve, name="LocalHub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; a temporary storage directory is deleted."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = None
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ test hooks

    @property
    def requests(self) -> list[Request]:
        """Every request received so far, in order."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def fail(self, status: int = 503, times: int | None = None, path_regex: str = ".*") -> None:
        """Answer `status` to the next `times` requests (None: all) whose path matches `path_regex` (re.search)."""
        with self._lock:
            self._faults.append(_Fault(status, times, re.compile(path_regex)))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def seed_repo(
        self,
        repo_id: str,
        files: str | os.PathLike[str] | Mapping[str, bytes],
        *,
        repo_type: str = "model",
        private: bool = False,
        message: str = "Seed files",
    ) -> str:
        """Commit a folder's files (or path -> bytes) to main, creating the repo (`private`) if needed.

        Files are stored with LFS as the Hub would. Returns the commit id.
        """
        if not isinstance(files, Mapping):
            root = Path(files)
            files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
        with self._lock:
            repo = self._repos.get(f"{repo_type}:{repo_id}") or self._new_repo(repo_type, repo_id, private)
            head = repo.commits[repo.branches["main"]]
            tree = dict(head.files)
            for path, content in files.items():
                tree[path] = self._store(content, lfs=_stored_with_lfs(path, len(content), content[:512]))
            commit = self._add_commit(repo, head, tree, message, "", repo.owner)
            repo.branches["main"] = commit.id
            self._save_state()
            return commit.id

    def repo_files(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> dict[str, bytes]:
        """Path -> content of the repo at `revision` (branch, tag or commit id)."""
        with self._lock:
            commit = self._commit_at(self._stored_repo(repo_type, repo_id), revision)
        return {path: self._blob(file.sha256) for path, file in commit.files.items()}

    def lfs_paths(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> set[str]:
        """The paths stored with Git LFS at `revision`."""
        with self._lock:
            commit = self._commit_at(self._stored_repo(repo_type, repo_id), revision)
            return {path for path, file in commit.files.items() if file.lfs}

    def repo_private(self, repo_id: str, *, repo_type: str = "model") -> bool:
        with self._lock:
            return self._stored_repo(repo_type, repo_id).private

    def repo_commits(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> list[tuple[str, str]]:
        """(commit id, title) of the history of `revision`, newest first."""
        with self._lock:
            repo = self._stored_repo(repo_type, repo_id)
            return [(c.id, c.title) for c in self._history(repo, self._commit_at(repo, revision))]

    # ------------------------------------------------------------------ serving

    def _serve(self, request: Request) -> _Response:
        with self._lock:
            self._requests.append(request)
            try:
                if (status := self._take_fault(request)) is not None:
                    raise HubError(status, None, f"LocalHub.fail: injected HTTP {status}")
                response = self._dispatch(request)
            except HubError as err:
                response = err.response()
            except Exception as err:  # a LocalHub bug or a malformed request: answer, don't drop the connection
                response = HubError(
                    500, None, f"LocalHub failed on {request.method} {request.path}: {err!r}"
                ).response()
            request.status = response.status
            return response

    def _take_fault(self, request: Request) -> int | None:
        for fault in self._faults:
            if fault.times != 0 and fault.pattern.search(request.path):
                if fault.times is not None:
                    fault.times -= 1
                return fault.status
        return None

    def _dispatch(self, request: Request) -> _Response:
        method = "GET" if request.method == "HEAD" else request.method
        for route_method, pattern, handler in self._routes:
            if route_method == method and (match := pattern.fullmatch(request.path)):
                return handler(request, **{k: unquote(v) for k, v in match.groupdict().items() if v is not None})
        raise HubError(404, None, f"LocalHub has no route for {request.method} {request.path}")

    # ------------------------------------------------------------------ users, repos, revisions

    def _user(self, request: Request) -> str | None:
        authorization = request.headers.get("authorization")
        if authorization is None:
            return None
        user = self.tokens.get(authorization.removeprefix("Bearer ").strip())
        if user is None:
            raise HubError(401, None, "Invalid credentials in Authorization header")
        return user

    def _require_user(self, request: Request) -> str:
        if (user := self._user(request)) is None:
            raise HubError(401, None, "You must be authenticated (Authorization: Bearer <token>) to do this")
        return user

    def _repo(self, request: Request, types: str, repo_id: str, *, write: bool = False) -> _Repo:
        """The repo if the request's user may read it (write: may write to it), else the Hub's error."""
        user = self._require_user(request) if write else self._user(request)
        repo = self._repos.get(f"{REPO_TYPES[types]}:{repo_id}")
        if repo is None or (repo.private and user != repo.owner):
            # Like the Hub: 401 without credentials, 404 with; the same error code either way.
            raise HubError(401 if user is None else 404, "RepoNotFound", f"Repository not found: {repo_id}")
        if write and user != repo.owner:
            raise HubError(403, None, f"You don't have the rights to write to {repo_id}")
        return repo

    def _stored_repo(self, repo_type: str, repo_id: str) -> _Repo:
        if (repo := self._repos.get(f"{repo_type}:{repo_id}")) is None:
            raise KeyError(f"LocalHub has no {repo_type} repo {repo_id}")
        return repo

    @staticmethod
    def _commit_at(repo: _Repo, revision: str) -> _Commit:
        commit_id = repo.branches.get(revision) or repo.tags.get(revision)
        commit_id = commit_id or (revision if revision in repo.commits else None)
        if commit_id is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return repo.commits[commit_id]

    @staticmethod
    def _branch_head(repo: _Repo, branch: str) -> _Commit:
        if branch not in repo.branches:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {branch} is not a branch")
        return repo.commits[repo.branches[branch]]

    @staticmethod
    def _history(repo: _Repo, commit: _Commit) -> list[_Commit]:
        history = [commit]
        while history[-1].parent is not None:
            history.append(repo.commits[history[-1].parent])
        return history

    def _repo_url(self, repo: _Repo) -> str:
        return f"{self.url}/{'' if repo.type == 'model' else repo.type + 's/'}{repo.id}"

    # ------------------------------------------------------------------ storage

    @property
    def _state_path(self) -> Path:
        return self.storage / "state.json"

    def _save_state(self) -> None:
        state = [{**asdict(repo), "lfs_objects": sorted(repo.lfs_objects)} for repo in self._repos.values()]
        scratch = self._state_path.with_suffix(".tmp")
        scratch.write_text(json.dumps(state))
        os.replace(scratch, self._state_path)

    def _load_state(self) -> None:
        for raw in json.loads(self._state_path.read_text()):
            commits = {
                commit_id: _Commit(**{**c, "files": {p: _File(**f) for p, f in c["files"].items()}})
                for commit_id, c in raw["commits"].items()
            }
            repo = _Repo(**{**raw, "commits": commits, "lfs_objects": set(raw["lfs_objects"])})
            self._repos[repo.key] = repo

    def _blob_path(self, sha256: str) -> Path:
        return self.storage / "blobs" / sha256

    def _blob(self, sha256: str) -> bytes:
        return self._blob_path(sha256).read_bytes()

    def _write_blob(self, content: bytes) -> str:
        sha256 = hashlib.sha256(content).hexdigest()
        if not (path := self._blob_path(sha256)).exists():
            path.with_suffix(".tmp").write_bytes(content)
            os.replace(path.with_suffix(".tmp"), path)
        return sha256

    def _file(self, sha256: str, lfs: bool) -> _File:
        """The stored blob `sha256` as a file of a commit, in git or in LFS."""
        file = _File(sha256, self._blob_path(sha256).stat().st_size, lfs, oid="")
        file.oid = _git_blob_id(file.pointer if lfs else self._blob(sha256))
        return file

    def _store(self, content: bytes, lfs: bool) -> _File:
        return self._file(self._write_blob(content), lfs)

    def _new_repo(self, repo_type: str, repo_id: str, private: bool) -> _Repo:
        """A repo whose main branch has the Hub's first commit: a .gitattributes sending LFS_SUFFIXES to LFS."""
        repo = _Repo(repo_type, repo_id, private, _now())
        gitattributes = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES)
        files = {".gitattributes": self._store(gitattributes.encode(), lfs=False)}
        repo.branches["main"] = self._add_commit(repo, None, files, "initial commit", "", repo.owner).id
        self._repos[repo.key] = repo
        return repo

    @staticmethod
    def _add_commit(
        repo: _Repo, parent: _Commit | None, files: dict[str, _File], title: str, message: str, author: str
    ) -> _Commit:
        date = _now()
        content = json.dumps(
            [parent and parent.id, title, message, author, date, sorted((p, f.oid) for p, f in files.items())]
        )
        commit_id = hashlib.sha1(content.encode() + secrets.token_bytes(8)).hexdigest()
        commit = _Commit(commit_id, parent and parent.id, title, message, author, date, files)
        repo.commits[commit_id] = commit
        return commit

    # ------------------------------------------------------------------ /api: user and repos

    def _whoami(self, request: Request) -> _Response:
        user = self._require_user(request)
        token = {"displayName": "LocalHub token", "role": "write", "createdAt": "2024-01-01T00:00:00.000Z"}
        return _json(
            {
                "type": "user",
                "id": hashlib.sha1(user.encode()).hexdigest()[:24],
                "name": user,
                "fullname": user,
                "email": f"{user}@localhost",
                "emailVerified": True,
                "canPay": False,
                "isPro": False,
                "periodEnd": None,
                "avatarUrl": "",
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": token},
            }
        )

    def _create_repo(self, request: Request) -> _Response:
        user = self._require_user(request)
        body = _json_body(request)
        repo_type, name = body.get("type") or "model", body.get("name") or ""
        namespace = body.get("organization") or user
        if repo_type not in REPO_TYPES.values():
            raise HubError(400, None, f"LocalHub has no {repo_type} repos")
        if namespace != user:
            raise HubError(403, None, f"You don't have the rights to create a {repo_type} under {namespace}")
        if not REPO_NAME.fullmatch(name):
            raise HubError(400, None, f"Invalid repo name: {name!r}")
        repo_id = f"{namespace}/{name}"
        if (repo := self._repos.get(f"{repo_type}:{repo_id}")) is not None:
            # The client's exist_ok takes the 409 and reads the url from its body.
            raise HubError(409, None, f"You already created this {repo_type} repo", extra={"url": self._repo_url(repo)})
        repo = self._new_repo(repo_type, repo_id, private=body.get("visibility") == "private")
        self._save_state()
        return _json({"url": self._repo_url(repo), "name": repo_id, "id": repo.object_id})

    def _delete_repo(self, request: Request) -> _Response:
        user = self._require_user(request)
        body = _json_body(request)
        types = {v: k for k, v in REPO_TYPES.items()}.get(body.get("type") or "model", "models")
        repo = self._repo(request, types, f"{body.get('organization') or user}/{body.get('name')}", write=True)
        del self._repos[repo.key]
        self._save_state()
        return _json({})

    def _validate_yaml(self, request: Request) -> _Response:
        return _json({"errors": [], "warnings": []})  # create_commit asks before committing a README.md

    def _xet_token(self, request: Request, repo_id: str, types: str) -> _Response:
        raise HubError(501, None, XET_UNSUPPORTED)

    # ------------------------------------------------------------------ /api: reads

    def _repo_info(self, request: Request, repo_id: str, types: str, rev: str = "main") -> _Response:
        repo = self._repo(request, types, repo_id)
        commit = self._commit_at(repo, rev)
        blobs = request.query.get("blobs", ["false"])[0].lower() == "true"
        siblings = []
        for path, file in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=file.size, blobId=file.oid)
                if file.lfs:
                    sibling["lfs"] = {"size": file.size, "sha256": file.sha256, "pointerSize": len(file.pointer)}
            siblings.append(sibling)
        return _json(
            {
                "_id": repo.object_id,
                "id": repo.id,
                "author": repo.owner,
                "sha": commit.id,
                "lastModified": commit.date,
                "createdAt": repo.created_at,
                "private": repo.private,
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
                "usedStorage": sum(file.size for file in commit.files.values()),
            }
        )

    def _tree(self, request: Request, repo_id: str, types: str, rev: str, path: str = "") -> _Response:
        repo = self._repo(request, types, repo_id)
        commit = self._commit_at(repo, rev)
        query = {key: values[0] for key, values in request.query.items()}
        recursive = query.get("recursive", "false").lower() == "true"
        expand = query.get("expand", "false").lower() == "true"
        entries = _tree_entries(commit.files, path.strip("/"), recursive)
        if path and not entries:
            raise HubError(404, "EntryNotFound", f"{path} is not a folder at {rev}")
        page_size = min(self.page_size, 50) if expand else self.page_size
        cursor = int(query.get("cursor", 0))
        items = []
        for entry_path, file in entries[cursor : cursor + page_size]:
            if file is None:
                inside = sorted((p, f.oid) for p, f in commit.files.items() if p.startswith(entry_path + "/"))
                item = {"type": "directory", "oid": _git_blob_id(json.dumps(inside).encode()), "size": 0}
            else:
                item = {"type": "file", "oid": file.oid, "size": file.size}
                if file.lfs:
                    item["lfs"] = {"oid": file.sha256, "size": file.size, "pointerSize": len(file.pointer)}
            item["path"] = entry_path
            if expand:
                last = _last_commit(repo, commit, entry_path)
                item["lastCommit"] = {"id": last.id, "title": last.title, "date": last.date}
            items.append(item)
        headers = {}
        if cursor + page_size < len(entries):  # the client follows the Link header, GitHub-style
            next_query = urlencode({**query, "cursor": cursor + page_size})
            headers["Link"] = f'<{self.url}{request.path}?{next_query}>; rel="next"'
        return _json(items, headers=headers)

    def _refs(self, request: Request, repo_id: str, types: str) -> _Response:
        repo = self._repo(request, types, repo_id)

        def refs(kind: str, targets: dict[str, str]) -> list[dict[str, str]]:
            return [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": c} for n, c in sorted(targets.items())]

        return _json(
            {
                "branches": refs("heads", repo.branches),
                "converts": [],
                "tags": refs("tags", repo.tags),
                "pullRequests": [],
            }
        )

    def _commits(self, request: Request, repo_id: str, types: str, rev: str) -> _Response:
        repo = self._repo(request, types, repo_id)
        history = self._history(repo, self._commit_at(repo, rev))
        return _json(
            [
                {"id": c.id, "title": c.title, "message": c.message, "authors": [{"user": c.author}], "date": c.date}
                for c in history
            ]
        )

    # ------------------------------------------------------------------ /api: writes

    def _preupload(self, request: Request, repo_id: str, types: str, rev: str) -> _Response:
        repo = self._repo(request, types, repo_id, write=True)
        head = self._branch_head(repo, rev)
        files = []
        for item in _json_body(request).get("files", []):
            path, size, sample = item["path"], item["size"], base64.b64decode(item["sample"])
            lfs = self.lfs_uploads and _stored_with_lfs(path, size, sample)
            remote = head.files.get(path)
            # The client skips an unchanged file: it compares this oid with the sha256 (lfs) or git blob id.
            remote_oid = None if remote is None else remote.sha256 if remote.lfs else remote.oid
            files.append(
                {"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": remote_oid}
            )
        return _json({"files": files, "commitOid": head.id})

    def _commit(self, request: Request, repo_id: str, types: str, rev: str) -> _Response:
        user = self._require_user(request)
        repo = self._repo(request, types, repo_id, write=True)
        if "create_pr" in request.query:
            raise HubError(400, None, "LocalHub does not implement pull requests (create_pr)")
        head = self._branch_head(repo, rev)
        lines = [json.loads(line) for line in request.body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, None, "The commit payload must start with a header line")
        header = lines[0]["value"]
        if header.get("parentCommit") not in (None, head.id):
            raise HubError(412, None, f"A commit has happened since {header['parentCommit']}: the head is {head.id}")
        files = dict(head.files)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            path = value.get("path", "")
            if not path or path.startswith("/") or ".." in path.split("/"):
                raise HubError(400, None, f"Invalid path in commit: {path!r}")
            if key == "file":
                files[path] = self._store(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                if value.get("oid") not in repo.lfs_objects:
                    raise HubError(400, None, f"LFS object {value.get('oid')} of {path} was not uploaded to {repo_id}")
                files[path] = self._file(value["oid"], lfs=True)
            elif key == "deletedFile":
                if files.pop(path, None) is None:
                    raise HubError(404, "EntryNotFound", f"A file with this name doesn't exist: {path}")
            elif key == "deletedFolder":
                inside = [p for p in files if p.startswith(path.rstrip("/") + "/")]
                if not inside:
                    raise HubError(404, "EntryNotFound", f"A folder with this name doesn't exist: {path}")
                for p in inside:
                    del files[p]
            else:
                raise HubError(400, None, f"LocalHub does not implement the commit operation {key!r}")
        commit = self._add_commit(repo, head, files, header.get("summary", ""), header.get("description", ""), user)
        repo.branches[rev] = commit.id
        self._save_state()
        return _json(
            {
                "success": True,
                "commitOid": commit.id,
                "commitUrl": f"{self._repo_url(repo)}/commit/{commit.id}",
                "hookOutput": "",
                "pullRequestUrl": None,
            }
        )

    def _create_branch(self, request: Request, repo_id: str, types: str, branch: str) -> _Response:
        repo = self._repo(request, types, repo_id, write=True)
        start = self._commit_at(repo, _json_body(request).get("startingPoint") or "main")
        if branch in repo.branches:
            raise HubError(409, None, f"Reference already exists: refs/heads/{branch}")
        repo.branches[branch] = start.id
        self._save_state()
        return _json({})

    def _delete_branch(self, request: Request, repo_id: str, types: str, branch: str) -> _Response:
        repo = self._repo(request, types, repo_id, write=True)
        self._branch_head(repo, branch)
        if branch == "main":
            raise HubError(403, None, "Cannot delete the default branch")
        del repo.branches[branch]
        self._save_state()
        return _json({})

    def _create_tag(self, request: Request, repo_id: str, types: str, rev: str) -> _Response:
        repo = self._repo(request, types, repo_id, write=True)
        target, tag = self._commit_at(repo, rev), _json_body(request).get("tag", "")
        if not tag or tag in repo.tags:
            raise HubError(409, None, f"Reference already exists: refs/tags/{tag}")
        repo.tags[tag] = target.id
        self._save_state()
        return _json({})

    # ------------------------------------------------------------------ Git LFS (basic transfer)

    def _lfs_batch(self, request: Request, repo_id: str, types: str = "models") -> _Response:
        repo = self._repo(request, types, repo_id, write=True)
        body = _json_body(request)
        if body.get("operation") != "upload":
            raise HubError(400, None, "LocalHub's LFS batch endpoint only takes uploads")
        verify = f"{self._repo_url(repo)}.git/info/lfs/objects/verify"
        objects = []
        for obj in body.get("objects", []):
            entry: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in repo.lfs_objects:  # no "actions": the client skips what is already uploaded
                query = urlencode({"repo": repo.key, "sig": self._signature(repo.key, obj["oid"])})
                upload = {"href": f"{self.url}/lfs-upload/{obj['oid']}?{query}"}
                entry["actions"] = {"upload": upload, "verify": {"href": verify, "header": {}}}
            objects.append(entry)
        reply = {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}
        return _json(reply, content_type="application/vnd.git-lfs+json")

    def _lfs_upload(self, request: Request, oid: str) -> _Response:
        """The signed upload URL of the batch reply; like S3's, the client PUTs to it without credentials."""
        key = request.query.get("repo", [""])[0]
        if not hmac.compare_digest(request.query.get("sig", [""])[0], self._signature(key, oid)):
            raise HubError(403, None, "Bad signature of the LFS upload URL")
        if (repo := self._repos.get(key)) is None:
            raise HubError(404, "RepoNotFound", f"Repository not found: {key}")
        if hashlib.sha256(request.body).hexdigest() != oid:
            raise HubError(400, None, f"The uploaded content does not hash to {oid}")
        self._write_blob(request.body)
        repo.lfs_objects.add(oid)
        self._save_state()
        return _Response(200, headers={"ETag": f'"{oid}"'})

    def _lfs_verify(self, request: Request, repo_id: str, types: str = "models") -> _Response:
        repo = self._repo(request, types, repo_id, write=True)
        body = _json_body(request)
        if body.get("oid") not in repo.lfs_objects or self._blob_path(body["oid"]).stat().st_size != body.get("size"):
            raise HubError(404, None, f"LFS object {body.get('oid')} of size {body.get('size')} is not uploaded")
        return _json({})

    def _signature(self, repo_key: str, oid: str) -> str:
        return hmac.new(self._secret, f"{repo_key}/{oid}".encode(), "sha256").hexdigest()

    # ------------------------------------------------------------------ file downloads

    def _resolve(self, request: Request, repo_id: str, rev: str, path: str, types: str = "models") -> _Response:
        repo = self._repo(request, types, repo_id)
        commit = self._commit_at(repo, rev)
        file = commit.files.get(path)
        if file is None:  # the client caches the absence per commit, from X-Repo-Commit
            raise HubError(404, "EntryNotFound", f"Entry not found: {path}", headers={"X-Repo-Commit": commit.id})
        headers = {
            "X-Repo-Commit": commit.id,
            "ETag": f'"{file.sha256 if file.lfs else file.oid}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if file.lfs:
            headers.update({"X-Linked-Etag": f'"{file.sha256}"', "X-Linked-Size": str(file.size)})
        status, start, end = 200, 0, file.size - 1
        if (byte_range := _parse_range(request.headers.get("range"), file.size)) is not None:
            status, (start, end) = 206, byte_range
            headers["Content-Range"] = f"bytes {start}-{end}/{file.size}"
        headers["Content-Length"] = str(end - start + 1)
        body = b"" if request.method == "HEAD" else self._blob(file.sha256)[start : end + 1]
        return _Response(status, body, headers)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hub: LocalHub


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    server: _Server

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        headers = {name.lower(): value for name, value in self.headers.items()}
        request = Request(self.command, url.path, parse_qs(url.query), headers, self._read_body())
        response = self.server.hub._serve(request)
        self.send_response(response.status)
        for name, value in {"Content-Length": str(len(response.body)), **response.headers}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def _read_body(self) -> bytes:
        """The body, by Content-Length: huggingface_hub sends one with every body, file uploads included."""
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: `LocalHub.requests` is the log."""


def _json(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None, content_type: str = "application/json"
) -> _Response:
    return _Response(status, json.dumps(data).encode(), {"Content-Type": content_type, **(headers or {})})


def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(request.body or b"{}")
    except json.JSONDecodeError as err:
        raise HubError(400, None, f"The body is not JSON: {err}") from None
    if not isinstance(body, dict):
        raise HubError(400, None, "The body is not a JSON object")
    return body


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _stored_with_lfs(path: str, size: int, sample: bytes) -> bool:
    return path.lower().endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE or b"\0" in sample


def _tree_entries(files: Mapping[str, _File], folder: str, recursive: bool) -> list[tuple[str, _File | None]]:
    """(path, file; None for a folder) under `folder`: its children, or with `recursive` everything below."""
    base = f"{folder}/" if folder else ""
    entries: dict[str, _File | None] = {}
    for path, file in files.items():
        if not path.startswith(base):
            continue
        parts = path[len(base) :].split("/")
        folders = [base + "/".join(parts[:i]) for i in range(1, len(parts))]
        entries.update(dict.fromkeys(folders if recursive else folders[:1]))
        if recursive or len(parts) == 1:
            entries[path] = file
    return sorted(entries.items())


def _last_commit(repo: _Repo, commit: _Commit, path: str) -> _Commit:
    """The newest commit, from `commit` back, that changed the file or folder `path`."""

    def state(c: _Commit) -> list[tuple[str, str]]:
        return sorted((p, f.oid) for p, f in c.files.items() if p == path or p.startswith(path + "/"))

    while commit.parent is not None and state(repo.commits[commit.parent]) == state(commit):
        commit = repo.commits[commit.parent]
    return commit


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single `bytes=` range; None to send the whole file (no or unsupported range)."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header or "")
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first:
        start, end = int(first), min(int(last) if last else size - 1, size - 1)
    else:
        start, end = max(size - int(last), 0), size - 1
    if start > end:
        raise HubError(416, None, f"Range {header} not satisfiable", headers={"Content-Range": f"bytes */{size}"})
    return start, end


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve a Hub-compatible endpoint for huggingface_hub on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--storage", help="directory of the repos (kept across runs); default: a temporary one")
    parser.add_argument("--token", action="append", metavar="TOKEN=USER", help=f"default: {DEFAULT_TOKENS}")
    parser.add_argument("--lfs-uploads", action="store_true", help="preupload answers 'lfs' like the Hub")
    args = parser.parse_args()
    tokens = dict(token.split("=", 1) for token in args.token) if args.token else None
    hub = LocalHub(args.storage, tokens=tokens, host=args.host, port=args.port, lfs_uploads=args.lfs_uploads)
    with hub:
        print(f"LocalHub serving {hub.storage}: export HF_ENDPOINT={hub.url}  (tokens: {hub.tokens})", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
