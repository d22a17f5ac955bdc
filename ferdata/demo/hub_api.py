"""The loopback Hub's HTTP side: one request handler that answers the Hub's API for dataset repositories.

It routes each request of the real ``huggingface_hub`` client (and ``datasets`` through it), checks the
bearer token, applies fault injection, and answers in the Hub's shapes (JSON bodies, ``X-Error-Code`` /
``X-Error-Message`` headers, ``ETag`` / ``X-Repo-Commit`` on files, ranges). The repositories
themselves are a :class:`~ferdata.demo.hub_store.Store`; the server that binds 127.0.0.1 and runs
this handler is :class:`ferdata.demo.hub_server.LoopbackHub`, whose docstring lists the endpoints.

Example:
    >>> with LoopbackHub() as hub:                       # doctest: +SKIP
    ...     hub.requests[-1]                             # what the handler served last
"""

from __future__ import annotations

import hashlib
import json
import logging
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from ferdata.demo.hub_store import (
    USER,
    Commit,
    HubError,
    Repo,
    card_data,
    file_entry,
    folder_entry,
    tree_entries,
)

if TYPE_CHECKING:
    from ferdata.demo.hub_server import LoopbackHub

logger = logging.getLogger(__name__)

_REF_KINDS = ("heads", "tags", "pr", "convert")


class HubHandler(BaseHTTPRequestHandler):
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

    def _need_read(self, repo: Repo) -> None:
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

    def _repo_api(self, repo: Repo, raw: list[str], body: bytes) -> None:
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
                    entries = tree_entries(store, commit, "/".join(unquote(s) for s in rest),
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
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        if self.hub.store.create_repo(repo_id, private=private) is None:
            # the Hub's 409 carries the url too (create_repo(exist_ok=True) reads it)
            return self._send(409, {"error": "You already created this dataset repo", "url": url},
                              {"X-Error-Message": "You already created this dataset repo"})
        self._send(200, {"url": url, "name": repo_id, "id": repo_id})

    def _delete_repo(self, payload: dict[str, Any]) -> None:
        self._need_write()
        self.hub.store.delete_repo(f"{payload.get('organization') or USER}/{payload.get('name')}")
        self._send(200, {})

    def _info(self, repo: Repo, rev: str) -> None:
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
            card = card_data(store, commit)
        if card is not None:
            info["cardData"] = card
        self._send(200, info)

    def _refs(self, repo: Repo) -> None:
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

    def _preupload(self, repo: Repo, rev: str, payload: dict[str, Any]) -> None:
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

    def _commit(self, repo: Repo, rev: str, body: bytes) -> None:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "a commit starts with a header line")
        oid, pr = self.hub.store.commit(repo, rev, lines[0]["value"], lines[1:],
                                        create_pr=self.query.get("create_pr") == "1")
        base = f"{self.hub.url}/datasets/{repo.repo_id}"
        self._send(200, {"success": True, "commitOid": oid, "commitUrl": f"{base}/commit/{oid}",
                         "pullRequestUrl": f"{base}/discussions/{pr}" if pr is not None else None,
                         "hookOutput": ""})

    def _paths_info(self, repo: Repo, rev: str, body: bytes) -> None:
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
                    out.append(file_entry(store, path, commit.files[path], commit if expand else None))
                else:
                    members = [(p, o) for p, o in commit.files.items() if p.startswith(path + "/")]
                    if members:
                        out.append(folder_entry(path, members, commit if expand else None))
        self._send(200, out)

    def _commits(self, repo: Repo, rev: str) -> None:
        out = []
        with self.hub.store.lock:
            commit: Commit | None = self.hub.store.resolve(repo, rev)
            while commit is not None:
                out.append({"id": commit.oid, "title": commit.title, "message": commit.message, "date": commit.date,
                            "authors": [{"user": USER}]})
                commit = repo.commits.get(commit.parents[0]) if commit.parents else None
        self._send(200, out)

    def _branch(self, repo: Repo, name: str, payload: dict[str, Any]) -> None:
        if self.command == "DELETE":
            self.hub.store.delete_branch(repo, name)
        else:
            self.hub.store.create_branch(repo, name, starting_point=payload.get("startingPoint"),
                                         empty=bool(payload.get("emptyBranch")))
        self._send(200, {})

    def _tag(self, repo: Repo, rev: str, payload: dict[str, Any]) -> None:
        if self.command == "DELETE":
            self.hub.store.delete_tag(repo, rev)
        else:
            self.hub.store.create_tag(repo, payload.get("tag") or "", rev)
        self._send(200, {})

    def _resolve(self, repo: Repo, rev: str, path: str) -> None:
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
