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

Three modules, one concern each: this one (the server's lifetime, :func:`pointed_at` for the clients),
:mod:`ferdata.demo.hub_api` (the HTTP handler: routes, token, fault injection, the Hub's answer
shapes) and :mod:`ferdata.demo.hub_store` (repositories, commits, refs and blobs on disk).

Nothing but 127.0.0.1 is ever bound. With ``token=...`` every write (and every read of a private
repository) needs ``Authorization: Bearer <token>``; the server never logs or stores a token.
:meth:`LoopbackHub.fail_next` makes the next matching requests fail (a server error mid-commit).

Example:
    >>> with LoopbackHub() as hub, pointed_at(hub.url):          # doctest: +SKIP
    ...     HfApi().create_repo("me/fer", repo_type="dataset")
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ferdata.demo.hub_api import HubHandler
from ferdata.demo.hub_store import Store, git_blob_id

__all__ = ["HOST", "LoopbackHub", "git_blob_id", "pointed_at"]

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"


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
        self.store = Store(self.root)
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

        class Handler(HubHandler):
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
