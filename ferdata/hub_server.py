"""A loopback Hugging Face Hub: dataset repositories served on 127.0.0.1, for tests and the demo.

It answers the HTTP endpoints the real ``huggingface_hub`` client (and ``datasets.load_dataset``
through it) calls for *dataset* repositories, with the request and response shapes of the Hub's
API as that client sends and parses them. It is test infrastructure for ferdata's publishing code,
not a mock of ferdata's own calls: anything that speaks to the Hub can be pointed at it.

Endpoints (``{repo}`` is ``namespace/name``; ``{rev}`` a branch, tag, ``refs/pr/N`` or commit id,
URL-quoted as the client sends it)::

    POST   /api/repos/create                            create_repo (409 when it exists)
    DELETE /api/repos/delete                            delete_repo
    GET    /api/whoami-v2                               whoami
    POST   /api/validate-yaml                           the README.md metadata check create_commit runs
    GET    /api/datasets/{repo}[/revision/{rev}]        dataset_info / repo_info (sha, siblings, cardData)
    POST   /api/datasets/{repo}/preupload/{rev}         upload modes: every file "regular" (no LFS, no Xet)
    POST   /api/datasets/{repo}/commit/{rev}            NDJSON commit: file, lfsFile, deletedFile, deletedFolder;
                                                        ?create_pr=1 opens refs/pr/N; parentCommit checked (412)
    GET    /api/datasets/{repo}/tree/{rev}[/{path}]     list_repo_tree / list_repo_files (recursive, expand)
    POST   /api/datasets/{repo}/paths-info/{rev}        get_paths_info
    GET    /api/datasets/{repo}/commits/{rev}           list_repo_commits
    GET    /api/datasets/{repo}/refs[?include_prs=1]    list_repo_refs (branches, tags, pull requests)
    POST   /api/datasets/{repo}/branch/{branch}         create_branch (startingPoint); DELETE deletes it
    POST   /api/datasets/{repo}/tag/{rev}               create_tag; DELETE /tag/{tag} deletes it
    POST   /api/datasets/{repo}/lfs-files/batch ...     not served: uploads are regular (501 names it)
    HEAD   /datasets/{repo}/resolve/{rev}/{path}        file metadata: ETag, X-Repo-Commit, Content-Length
    GET    /datasets/{repo}/resolve/{rev}/{path}        the file (Range requests answered with 206)

Errors carry the Hub's ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``)
and ``X-Error-Message`` headers and a ``{"error": ...}`` body, so the client raises its own typed
errors. Repositories live in a folder (``root``): content-addressed blobs plus one JSON state file of
commits (a file map each) and refs; no git. A new repository gets an initial commit with a
``.gitattributes``, as on the Hub.

Nothing but 127.0.0.1 is ever bound. With ``token=...`` every write (and every read of a private
repository) needs ``Authorization: Bearer <token>``; the server never logs or stores a token.
:meth:`LoopbackHub.fail_next` makes the next matching requests fail (a server error mid-commit).

Example:
    >>> with LoopbackHub() as hub, pointed_at(hub.url):          # doctest: +SKIP
    ...     HfApi().create_repo("me/fer", repo_type="dataset")
"""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
USER = "loopback"
GITATTRIBUTES = (b"# Files stored as large objects on the Hugging Face Hub (the loopback Hub keeps them all as blobs)\n"
                 b"*.parquet filter=lfs diff=lfs merge=lfs -text\n*.arrow filter=lfs diff=lfs merge=lfs -text\n"
                 b"*.png filter=lfs diff=lfs merge=lfs -text\n*.jpg filter=lfs diff=lfs merge=lfs -text\n")
_REF_KINDS = ("heads", "tags", "pr", "convert")


def git_blob_id(data: bytes) -> str:
    """The git object id of a file's content (what the Hub calls a regular file's ``oid``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class HubError(Exception):
    """An HTTP error answer: status, the Hub's ``X-Error-Code`` and a message."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


@dataclass
class _Commit:
    oid: str
    parents: list[str]
    files: dict[str, str]  # path -> git blob id
    title: str
    message: str
    date: str


@dataclass
class _Repo:
    repo_id: str
    private: bool
    created: str
    commits: dict[str, _Commit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)  # "refs/heads/main" -> commit oid
    prs: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"repo_id": self.repo_id, "private": self.private, "created": self.created, "prs": self.prs,
                "refs": self.refs, "commits": {oid: vars(c) for oid, c in self.commits.items()}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> _Repo:
        repo = cls(d["repo_id"], d["private"], d["created"], refs=dict(d["refs"]), prs=d["prs"])
        repo.commits = {oid: _Commit(**c) for oid, c in d["commits"].items()}
        return repo


class _Store:
    """Repositories in ``root``: ``blobs/`` by git blob id, ``state.json`` with commits and refs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.state_file = root / "state.json"
        self.lock = threading.RLock()
        self.repos: dict[str, _Repo] = {}
        self.sizes: dict[str, int] = {}
        self.sha256: dict[str, str] = {}  # sha256 hex -> git blob id (for lfsFile lines)
        if self.state_file.exists():
            state = json.loads(self.state_file.read_text(encoding="utf-8"))
            self.repos = {k: _Repo.from_json(v) for k, v in state["repos"].items()}
            self.sha256 = dict(state.get("sha256", {}))
        self._counter = 0

    def save(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"repos": {k: r.to_json() for k, r in self.repos.items()}, "sha256": self.sha256}),
                       encoding="utf-8")
        os.replace(tmp, self.state_file)

    # -- blobs
    def put_blob(self, data: bytes) -> str:
        oid = git_blob_id(data)
        path = self.blobs / oid
        if not path.exists():
            tmp = path.with_suffix(f".tmp-{threading.get_ident()}")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        self.sizes[oid] = len(data)
        self.sha256[hashlib.sha256(data).hexdigest()] = oid
        return oid

    def blob_path(self, oid: str) -> Path:
        return self.blobs / oid

    def blob_size(self, oid: str) -> int:
        if oid not in self.sizes:
            self.sizes[oid] = self.blob_path(oid).stat().st_size
        return self.sizes[oid]

    # -- repositories and revisions
    def repo(self, repo_id: str) -> _Repo:
        repo = self.repos.get(repo_id)
        if repo is None:
            raise HubError(404, f"Repository not found: datasets/{repo_id}", "RepoNotFound")
        return repo

    def new_commit(self, repo: _Repo, parents: list[str], files: dict[str, str], title: str, message: str) -> str:
        self._counter += 1
        seed = json.dumps([repo.repo_id, parents, sorted(files.items()), title, message, _now(), self._counter])
        oid = hashlib.sha1(seed.encode()).hexdigest()
        repo.commits[oid] = _Commit(oid, parents, dict(files), title, message, _now())
        return oid

    @staticmethod
    def ref_name(repo: _Repo, rev: str) -> str | None:
        """The full ref a revision names (a branch first, then a tag), or None (a commit id or unknown)."""
        if rev.startswith("refs/"):
            return rev if rev in repo.refs else None
        for kind in ("heads", "tags"):
            if f"refs/{kind}/{rev}" in repo.refs:
                return f"refs/{kind}/{rev}"
        return None

    def resolve(self, repo: _Repo, rev: str) -> _Commit:
        ref = self.ref_name(repo, rev)
        if ref is not None:
            return repo.commits[repo.refs[ref]]
        if rev in repo.commits:
            return repo.commits[rev]
        raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")


def _tree_oid(entries: list[tuple[str, str]]) -> str:
    return hashlib.sha1(json.dumps(sorted(entries)).encode()).hexdigest()


def _entries(store: _Store, commit: _Commit, base: str, *, recursive: bool, expand: bool) -> list[dict[str, Any]]:
    """Tree entries under ``base`` ('' = root) in the Hub's tree format (files, then folders, by path)."""
    prefix = f"{base.strip('/')}/" if base.strip("/") else ""
    files = {p: o for p, o in commit.files.items() if p.startswith(prefix)}
    if prefix and not files:
        raise HubError(404, f"Entry not found: {base}", "EntryNotFound")
    out: dict[str, dict[str, Any]] = {}
    folders: dict[str, list[tuple[str, str]]] = {}
    for path, oid in files.items():
        rest = path[len(prefix):].split("/")
        for depth in range(1, len(rest)):
            folder = prefix + "/".join(rest[:depth])
            folders.setdefault(folder, []).append((path, oid))
            if not recursive:
                break
        if recursive or len(rest) == 1:
            out[path] = _file_entry(store, path, oid, commit if expand else None)
    for folder, members in folders.items():
        if recursive or folder.count("/") == prefix.count("/"):
            entry: dict[str, Any] = {"type": "directory", "oid": _tree_oid(members), "size": 0, "path": folder}
            if expand:
                entry["lastCommit"] = _last_commit(commit)
            out[folder] = entry
    return [out[k] for k in sorted(out)]


def _file_entry(store: _Store, path: str, oid: str, commit: _Commit | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": "file", "oid": oid, "size": store.blob_size(oid), "path": path}
    if commit is not None:
        entry["lastCommit"] = _last_commit(commit)
        entry["securityFileStatus"] = {"status": "safe", "avScan": {"virusFound": False},
                                       "pickleImportScan": {"highestSafetyLevel": "innocuous", "imports": []}}
    return entry


def _last_commit(commit: _Commit) -> dict[str, str]:
    return {"id": commit.oid, "title": commit.title, "date": commit.date}


def _card_data(store: _Store, commit: _Commit) -> dict[str, Any] | None:
    oid = commit.files.get("README.md")
    if oid is None:
        return None
    import yaml

    text = store.blob_path(oid).read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return None
    try:
        data = yaml.safe_load(text.split("---", 2)[1])
    except (yaml.YAMLError, IndexError):
        return None
    return data if isinstance(data, dict) else None


class LoopbackHub:
    """A Hub for dataset repositories on ``http://127.0.0.1:PORT``, in a background thread.

    Args:
        root: folder of the repositories (default: a temporary folder removed on :meth:`stop`);
            an existing root's repositories are served again.
        token: when set, writes and reads of private repositories need ``Bearer <token>``;
            otherwise any bearer token may write and anonymous requests may only read.
        port: 0 picks a free port.

    Example:
        >>> with LoopbackHub() as hub:                          # doctest: +SKIP
        ...     HfApi(endpoint=hub.url, token="x").create_repo("me/fer", repo_type="dataset")
    """

    def __init__(self, root: str | Path | None = None, *, token: str | None = None, port: int = 0) -> None:
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="ferdata-hub-")) if root is None else Path(root)
        self.store = _Store(self.root)
        self.token = token
        self.port = port
        #: (method, path) of every request served, query string included; never headers
        self.requests: list[tuple[str, str]] = []
        self._failures: list[tuple[str, int, str]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The endpoint to give the client (``HF_ENDPOINT`` / ``endpoint=``)."""
        if self._server is None:
            raise RuntimeError("the loopback Hub is not running; call start() or use it as a context manager")
        return f"http://{HOST}:{self._server.server_address[1]}"

    def start(self) -> LoopbackHub:
        """Bind 127.0.0.1 and serve in a daemon thread."""
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer((HOST, self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="loopback-hub", daemon=True)
        self._thread.start()
        logger.info("loopback Hub on %s (repositories in %s)", self.url, self.root)
        return self

    def stop(self) -> None:
        """Stop serving; a temporary root is removed."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LoopbackHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_next(self, endpoint: str, *, status: int = 500, times: int = 1,
                  message: str = "Internal Error (loopback fault injection)") -> None:
        """Answer the next ``times`` requests to ``endpoint`` (``commit``, ``preupload``, ``tree``,
        ``resolve``, ``create``, ``tag``, ``branch`` ...) with ``status``, after reading their body and
        before changing anything."""
        with self.store.lock:
            self._failures.extend([(endpoint, status, message)] * times)

    def _take_failure(self, endpoint: str) -> tuple[int, str] | None:
        with self.store.lock:
            for i, (name, status, message) in enumerate(self._failures):
                if name == endpoint:
                    del self._failures[i]
                    return status, message
        return None

    # -- direct access, for assertions
    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """Every file of ``repo_id`` at ``revision``: path -> content."""
        with self.store.lock:
            commit = self.store.resolve(self.store.repo(repo_id), revision)
            return {p: self.store.blob_path(o).read_bytes() for p, o in sorted(commit.files.items())}

    def refs(self, repo_id: str) -> dict[str, str]:
        """Every ref of ``repo_id`` (``refs/heads/main``, ``refs/tags/v1``, ``refs/pr/1`` ...) -> commit id."""
        with self.store.lock:
            return dict(self.store.repo(repo_id).refs)


@contextlib.contextmanager
def pointed_at(url: str, *, cache_dir: str | Path | None = None, offline: bool = False) -> Iterator[None]:
    """Point this process's ``huggingface_hub`` and ``datasets`` at ``url`` (and nowhere else).

    Both libraries read ``HF_ENDPOINT`` (and ``HF_HUB_OFFLINE``, the cache folders) when they are
    imported; this sets the environment and the module constants they read, for the block, and
    turns off the two calls ``datasets`` makes to other hosts (the dataset-viewer's parquet export,
    which it would ask ``datasets-server.<host>``, and the S3 download counter). Restored afterwards.

    Args:
        url: the loopback Hub's endpoint.
        cache_dir: ``HF_HUB_CACHE`` for the block (default: unchanged).
        offline: ``HF_HUB_OFFLINE=1`` for the block (reads from the cache only).
    """
    import datasets.config as dconfig
    from huggingface_hub import constants

    url = url.rstrip("/")
    env = {"HF_ENDPOINT": url, "HF_HUB_OFFLINE": "1" if offline else None, "HF_DATASETS_OFFLINE": None,
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_UPDATE_DOWNLOAD_COUNTS": "0"}
    if cache_dir is not None:
        env["HF_HUB_CACHE"] = str(cache_dir)
    patches: list[tuple[Any, str, Any]] = [
        (constants, "ENDPOINT", url),
        (constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}"),
        (constants, "HF_HUB_OFFLINE", offline),
        (constants, "HF_HUB_DISABLE_TELEMETRY", True),
        (dconfig, "HF_ENDPOINT", url),
        (dconfig, "HUB_DATASETS_URL", url + "/datasets/{repo_id}/resolve/{revision}/{path}"),
        (dconfig, "HF_HUB_OFFLINE", offline),
        (dconfig, "USE_PARQUET_EXPORT", False),
        (dconfig, "HF_UPDATE_DOWNLOAD_COUNTS", False),
    ]
    if hasattr(dconfig, "HF_DATASETS_OFFLINE"):
        patches.append((dconfig, "HF_DATASETS_OFFLINE", offline))
    if cache_dir is not None:
        patches.append((constants, "HF_HUB_CACHE", str(cache_dir)))
    saved_env = {k: os.environ.get(k) for k in env}
    saved = [(mod, name, getattr(mod, name)) for mod, name, _ in patches]
    try:
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for mod, name, value in patches:
            setattr(mod, name, value)
        yield
    finally:
        for mod, name, value in saved:
            setattr(mod, name, value)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class _Handler(BaseHTTPRequestHandler):
    """One request: route, check the token, answer in the Hub's shapes."""

    hub: LoopbackHub
    protocol_version = "HTTP/1.1"
    server_version = "ferdata-loopback-hub"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        logger.debug("loopback Hub: " + format, *args)

    # -- plumbing
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: Any = b"", headers: dict[str, str] | None = None, *,
              head: bool = False) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        content_type = "application/json" if not isinstance(body, bytes) else "application/octet-stream"
        headers = {"Content-Type": content_type, "Content-Length": str(len(data)), **(headers or {})}
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if not head and self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, e: HubError) -> None:
        headers = {"X-Error-Message": e.message.encode("ascii", "replace").decode()}
        if e.code:
            headers["X-Error-Code"] = e.code
        self._send(e.status, {"error": e.message}, headers)

    def _authorized(self) -> bool:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return False
        return self.hub.token is None or auth[7:].strip() == self.hub.token

    def _need_write(self) -> None:
        if not self._authorized():
            raise HubError(401, "Invalid credentials in Authorization header")

    def _need_read(self, repo: _Repo) -> None:
        if repo.private and not self._authorized():
            raise HubError(401, f"Repository not found: datasets/{repo.repo_id}", "RepoNotFound")

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        self.hub.requests.append((self.command, self.path))
        raw = [s for s in url.path.split("/") if s != ""]
        body = self._body() if self.command in ("POST", "PUT", "DELETE") else b""
        try:
            self._route(raw, body)
        except HubError as e:
            self._error(e)
        except Exception as e:  # a bug in the loopback Hub: a 500 the client reports, and a log line
            logger.exception("loopback Hub: %s %s failed", self.command, url.path)
            self._error(HubError(500, f"loopback Hub error: {type(e).__name__}: {e}"))

    def _fail_if_asked(self, endpoint: str) -> None:
        failure = self.hub._take_failure(endpoint)
        if failure is not None:
            raise HubError(failure[0], failure[1])

    @staticmethod
    def _take_rev(segments: list[str]) -> tuple[str, list[str]]:
        """The revision at the head of ``segments`` (``refs/pr/1`` also when sent unquoted) and the rest."""
        first = unquote(segments[0])
        if first == "refs" and len(segments) >= 3 and segments[1] in _REF_KINDS:
            return "/".join(unquote(s) for s in segments[:3]), segments[3:]
        return first, segments[1:]

    def _route(self, raw: list[str], body: bytes) -> None:
        m = self.command
        seg = [unquote(s) for s in raw]
        store = self.hub.store
        if seg[:1] == ["api"]:
            if seg[1:] == ["validate-yaml"] and m == "POST":
                return self._validate_yaml(body)
            if seg[1:] == ["whoami-v2"] and m == "GET":
                self._need_write()
                return self._send(200, {"type": "user", "name": USER, "fullname": "Loopback Hub user",
                                        "orgs": [], "auth": {"type": "access_token",
                                                             "accessToken": {"role": "write", "displayName": "loopback"}}})
            if seg[1:] == ["repos", "create"] and m == "POST":
                return self._create_repo(json.loads(body or b"{}"))
            if seg[1:] == ["repos", "delete"] and m == "DELETE":
                return self._delete_repo(json.loads(body or b"{}"))
            if len(seg) >= 4 and seg[1] in ("models", "spaces"):
                raise HubError(404, "the loopback Hub serves dataset repositories only", "RepoNotFound")
            if len(seg) >= 4 and seg[1] == "datasets":
                repo_id = f"{seg[2]}/{seg[3]}"
                rest_raw = raw[4:]
                with store.lock:
                    repo = store.repo(repo_id)
                self._need_read(repo)
                return self._repo_api(repo, rest_raw, body)
        if len(seg) >= 5 and seg[0] == "datasets" and seg[3] == "resolve" and m in ("GET", "HEAD"):
            with store.lock:
                repo = store.repo(f"{seg[1]}/{seg[2]}")
            self._need_read(repo)
            rev, rest = self._take_rev(raw[4:])
            return self._resolve(repo, rev, "/".join(unquote(s) for s in rest))
        raise HubError(404, f"the loopback Hub has no route for {m} {urlsplit(self.path).path}")

    def _repo_api(self, repo: _Repo, raw: list[str], body: bytes) -> None:
        m = self.command
        store = self.hub.store
        what = unquote(raw[0]) if raw else ""
        if not raw and m == "GET":
            return self._info(repo, "main")
        if what == "revision" and len(raw) >= 2 and m == "GET":
            rev, _ = self._take_rev(raw[1:])
            return self._info(repo, rev)
        if what == "refs" and m == "GET":
            return self._refs(repo)
        if what in ("preupload", "commit", "tree", "paths-info", "commits") and len(raw) >= 2:
            rev, rest = self._take_rev(raw[1:])
            if what == "preupload" and m == "POST":
                self._need_write()
                self._fail_if_asked("preupload")
                return self._preupload(repo, rev, json.loads(body or b"{}"))
            if what == "commit" and m == "POST":
                self._need_write()
                self._fail_if_asked("commit")
                return self._commit(repo, rev, body)
            if what == "tree" and m == "GET":
                self._fail_if_asked("tree")
                with store.lock:
                    commit = store.resolve(repo, rev)
                    entries = _entries(store, commit, "/".join(unquote(s) for s in rest),
                                       recursive=self.query.get("recursive", "").lower() in ("1", "true"),
                                       expand=self.query.get("expand", "").lower() in ("1", "true"))
                return self._send(200, entries)
            if what == "paths-info" and m == "POST":
                return self._paths_info(repo, rev, body)
            if what == "commits" and m == "GET":
                return self._commits(repo, rev)
        if what == "branch" and len(raw) >= 2 and m in ("POST", "DELETE"):
            self._need_write()
            self._fail_if_asked("branch")
            name = unquote(raw[1]) if len(raw) == 2 else "/".join(unquote(s) for s in raw[1:])
            return self._branch(repo, name, json.loads(body or b"{}") if m == "POST" else {})
        if what == "tag" and len(raw) >= 2 and m in ("POST", "DELETE"):
            self._need_write()
            self._fail_if_asked("tag")
            rev, _ = self._take_rev(raw[1:])
            return self._tag(repo, rev, json.loads(body or b"{}") if m == "POST" else {})
        if what in ("lfs-files", "xet-write-token", "xet-read-token"):
            raise HubError(501, "the loopback Hub takes regular uploads only (preupload answers 'regular')")
        raise HubError(404, f"the loopback Hub has no route for {m} {urlsplit(self.path).path}")

    # -- endpoints
    def _validate_yaml(self, body: bytes) -> None:
        import yaml

        content = json.loads(body or b"{}").get("content", "")
        errors = []
        if content.startswith("---"):
            parts = content.split("---", 2)
            if len(parts) < 3:
                errors.append({"message": "metadata block not closed with ---"})
            else:
                try:
                    data = yaml.safe_load(parts[1])
                    if data is not None and not isinstance(data, dict):
                        errors.append({"message": "metadata must be a YAML mapping"})
                except yaml.YAMLError as e:
                    errors.append({"message": f"YAML error: {e}"})
        self._send(400 if errors else 200, {"errors": errors, "warnings": []})

    def _create_repo(self, payload: dict[str, Any]) -> None:
        self._need_write()
        self._fail_if_asked("create")
        if payload.get("type", "model") != "dataset":
            raise HubError(400, "the loopback Hub serves dataset repositories only")
        name, namespace = payload.get("name"), payload.get("organization") or USER
        if not name or "/" in name:
            raise HubError(400, f"invalid repository name {name!r}")
        repo_id = f"{namespace}/{name}"
        url = f"{self.hub.url}/datasets/{repo_id}"
        store = self.hub.store
        with store.lock:
            if repo_id in store.repos:  # the Hub's 409 carries the url too (create_repo(exist_ok=True) reads it)
                return self._send(409, {"error": "You already created this dataset repo", "url": url},
                                  {"X-Error-Message": "You already created this dataset repo"})
            private = payload.get("visibility") == "private" or bool(payload.get("private"))
            repo = _Repo(repo_id, private, _now())
            oid = store.new_commit(repo, [], {".gitattributes": store.put_blob(GITATTRIBUTES)}, "initial commit", "")
            repo.refs["refs/heads/main"] = oid
            store.repos[repo_id] = repo
            store.save()
        self._send(200, {"url": url, "name": repo_id, "id": repo_id})

    def _delete_repo(self, payload: dict[str, Any]) -> None:
        self._need_write()
        repo_id = f"{payload.get('organization') or USER}/{payload.get('name')}"
        store = self.hub.store
        with store.lock:
            store.repo(repo_id)
            del store.repos[repo_id]
            store.save()
        self._send(200, {})

    def _info(self, repo: _Repo, rev: str) -> None:
        store = self.hub.store
        blobs = self.query.get("blobs", "").lower() in ("1", "true")
        with store.lock:
            commit = store.resolve(repo, rev)
            siblings = []
            for path, oid in sorted(commit.files.items()):
                sibling: dict[str, Any] = {"rfilename": path}
                if blobs:
                    sibling.update(size=store.blob_size(oid), blobId=oid)
                siblings.append(sibling)
            info = {"_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id,
                    "author": repo.repo_id.split("/")[0], "sha": commit.oid, "lastModified": commit.date,
                    "createdAt": repo.created, "private": repo.private, "gated": False, "disabled": False,
                    "downloads": 0, "likes": 0, "tags": [], "siblings": siblings}
            card = _card_data(store, commit)
        if card is not None:
            info["cardData"] = card
        self._send(200, info)

    def _refs(self, repo: _Repo) -> None:
        out: dict[str, list[dict[str, str]]] = {"branches": [], "converts": [], "tags": []}
        prs = []
        with self.hub.store.lock:
            for ref, oid in sorted(repo.refs.items()):
                kind, name = ref.split("/", 2)[1:]
                item = {"name": name if kind != "pr" else ref, "ref": ref, "targetCommit": oid}
                {"heads": out["branches"], "tags": out["tags"], "convert": out["converts"], "pr": prs}[kind].append(item)
        if self.query.get("include_prs", "") in ("1", "true", "True"):
            out["pullRequests"] = prs
        self._send(200, out)

    def _preupload(self, repo: _Repo, rev: str, payload: dict[str, Any]) -> None:
        store = self.hub.store
        with store.lock:
            try:
                files = store.resolve(repo, rev).files
            except HubError:
                if self.query.get("create_pr") != "1":
                    raise
                files = {}
        answer = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": files.get(f["path"])}
                  for f in payload.get("files", [])]
        self._send(200, {"files": answer, "commitOid": None})

    def _commit(self, repo: _Repo, rev: str, body: bytes) -> None:
        store = self.hub.store
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "a commit starts with a header line")
        header = lines[0]["value"]
        create_pr = self.query.get("create_pr") == "1"
        with store.lock:
            ref = store.ref_name(repo, rev)
            if ref is None:
                store.resolve(repo, rev)  # 404 RevisionNotFound for an unknown revision
                raise HubError(400, f"cannot commit on {rev!r}: not a branch")
            if ref.startswith("refs/tags/"):
                raise HubError(400, f"cannot commit on tag {rev!r}; commit on a branch")
            head = repo.commits[repo.refs[ref]]
            parent = header.get("parentCommit")
            if parent and parent != head.oid:
                raise HubError(412, f"parentCommit {parent} is not the head of {rev} ({head.oid}): the revision moved")
            files = dict(head.files)
            for line in lines[1:]:
                key, value = line.get("key"), line.get("value", {})
                path = str(value.get("path", "")).strip("/")
                if key == "file":
                    if value.get("encoding", "base64") != "base64":
                        raise HubError(400, f"unsupported encoding {value.get('encoding')!r}")
                    files[path] = store.put_blob(base64.b64decode(value["content"]))
                elif key == "lfsFile":
                    oid = store.sha256.get(value.get("oid", ""))
                    if oid is None:
                        raise HubError(422, f"LFS object {value.get('oid')} for {path} was never uploaded")
                    files[path] = oid
                elif key == "deletedFile":
                    if path not in files:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del files[path]
                elif key == "deletedFolder":
                    gone = [p for p in files if p.startswith(path + "/")]
                    if not gone:
                        raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    for p in gone:
                        del files[p]
                else:
                    raise HubError(400, f"unknown commit line key {key!r}")
            oid = store.new_commit(repo, [head.oid], files, header.get("summary") or "update",
                                   header.get("description") or "")
            pr_url = None
            if create_pr:
                repo.prs += 1
                repo.refs[f"refs/pr/{repo.prs}"] = oid
                pr_url = f"{self.hub.url}/datasets/{repo.repo_id}/discussions/{repo.prs}"
            else:
                repo.refs[ref] = oid
            store.save()
        self._send(200, {"success": True, "commitOid": oid,
                         "commitUrl": f"{self.hub.url}/datasets/{repo.repo_id}/commit/{oid}",
                         "pullRequestUrl": pr_url, "hookOutput": ""})

    def _paths_info(self, repo: _Repo, rev: str, body: bytes) -> None:
        store = self.hub.store
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            payload = json.loads(body or b"{}")
            paths, expand = payload.get("paths", []), bool(payload.get("expand"))
        else:
            form = parse_qs(body.decode(), keep_blank_values=True)
            paths, expand = form.get("paths", []), form.get("expand", ["False"])[-1].lower() in ("1", "true")
        out = []
        with store.lock:
            commit = store.resolve(repo, rev)
            for path in paths:
                path = path.strip("/")
                if path in commit.files:
                    out.append(_file_entry(store, path, commit.files[path], commit if expand else None))
                else:
                    members = [(p, o) for p, o in commit.files.items() if p.startswith(path + "/")]
                    if members:
                        entry: dict[str, Any] = {"type": "directory", "oid": _tree_oid(members), "size": 0,
                                                 "path": path}
                        if expand:
                            entry["lastCommit"] = _last_commit(commit)
                        out.append(entry)
        self._send(200, out)

    def _commits(self, repo: _Repo, rev: str) -> None:
        out = []
        with self.hub.store.lock:
            commit: _Commit | None = self.hub.store.resolve(repo, rev)
            while commit is not None:
                out.append({"id": commit.oid, "title": commit.title, "message": commit.message, "date": commit.date,
                            "authors": [{"user": USER}]})
                commit = repo.commits.get(commit.parents[0]) if commit.parents else None
        self._send(200, out)

    def _branch(self, repo: _Repo, name: str, payload: dict[str, Any]) -> None:
        store = self.hub.store
        ref = f"refs/heads/{name}"
        with store.lock:
            if self.command == "DELETE":
                if ref not in repo.refs:
                    raise HubError(404, f"Invalid rev id: {name}", "RevisionNotFound")
                if name == "main":
                    raise HubError(403, "cannot delete the main branch")
                del repo.refs[ref]
            else:
                if ref in repo.refs:
                    raise HubError(409, f"Reference already exists: {ref}")
                start = store.resolve(repo, payload.get("startingPoint") or "main")
                if payload.get("emptyBranch"):
                    repo.refs[ref] = store.new_commit(repo, [], {}, "empty branch", "")
                else:
                    repo.refs[ref] = start.oid
            store.save()
        self._send(200, {})

    def _tag(self, repo: _Repo, rev: str, payload: dict[str, Any]) -> None:
        store = self.hub.store
        with store.lock:
            if self.command == "DELETE":
                ref = f"refs/tags/{rev}"
                if ref not in repo.refs:
                    raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
                del repo.refs[ref]
            else:
                tag = payload.get("tag") or ""
                if not tag or "/" in tag:
                    raise HubError(400, f"invalid tag name {tag!r}")
                ref = f"refs/tags/{tag}"
                if ref in repo.refs:
                    raise HubError(409, f"Tag already exists: {tag}")
                repo.refs[ref] = store.resolve(repo, rev).oid
            store.save()
        self._send(200, {})

    def _resolve(self, repo: _Repo, rev: str, path: str) -> None:
        store = self.hub.store
        self._fail_if_asked("resolve")
        with store.lock:
            commit = store.resolve(repo, rev)
            oid = commit.files.get(path)
            if oid is None:
                raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
            blob = store.blob_path(oid)
            size = store.blob_size(oid)
        headers = {"ETag": f'"{oid}"', "X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes",
                   "Content-Disposition": f"inline; filename*=UTF-8''{quote(path.rsplit('/', 1)[-1])}",
                   "Content-Type": "application/octet-stream"}
        start, end, status = 0, size - 1, 200
        spec = self.headers.get("Range", "")
        if spec.startswith("bytes="):
            first, _, last = spec[6:].split(",")[0].partition("-")
            if first:
                start, end = int(first), min(int(last), size - 1) if last else size - 1
            elif last:
                start, end = max(0, size - int(last)), size - 1
            if start >= size and size > 0:
                return self._send(416, b"", {"Content-Range": f"bytes */{size}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        if self.command == "HEAD":
            headers["Content-Length"] = str(size if status == 200 else max(0, end - start + 1))
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            return
        with blob.open("rb") as f:
            f.seek(start)
            data = f.read(max(0, end - start + 1))
        self._send(status, data, headers)
