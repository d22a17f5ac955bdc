"""The loopback Hub's repositories on disk: blobs, commits, refs, and the tree a commit lists.

:mod:`ferdata.demo.hub_server` serves them over HTTP (through :mod:`ferdata.demo.hub_api`); this
module knows nothing of HTTP. A store is a folder (``root``) with content-addressed ``blobs/`` (named
by their git blob id) and one ``state.json`` of repositories: commits (a full file map each, path ->
blob id) and refs (``refs/heads/main``, ``refs/tags/v1``, ``refs/pr/1`` ... -> commit id). No git. A
new repository gets an initial commit with a ``.gitattributes``, as on the Hub. Every change is
saved at once (written to a temporary file, then renamed), under :attr:`Store.lock`.

Errors are :class:`HubError` with the HTTP status and the Hub's ``X-Error-Code`` the server sends.

Example:
    >>> store = Store(Path("hub"))                                    # doctest: +SKIP
    >>> repo = store.create_repo("me/fer", private=False)            # doctest: +SKIP
    >>> store.resolve(repo, "main").files                             # doctest: +SKIP
    {'.gitattributes': '...'}
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The account every write is made as.
USER = "loopback"
GITATTRIBUTES = (b"# Files stored as large objects on the Hugging Face Hub (the loopback Hub keeps them all as blobs)\n"
                 b"*.parquet filter=lfs diff=lfs merge=lfs -text\n*.arrow filter=lfs diff=lfs merge=lfs -text\n"
                 b"*.png filter=lfs diff=lfs merge=lfs -text\n*.jpg filter=lfs diff=lfs merge=lfs -text\n")


def git_blob_id(data: bytes) -> str:
    """The git object id of a file's content (what the Hub calls a regular file's ``oid``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def now() -> str:
    """The current time as the Hub writes it (``2025-01-31T12:00:00.000Z``)."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class HubError(Exception):
    """An HTTP error answer: status, the Hub's ``X-Error-Code`` and a message."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


@dataclass
class Commit:
    """One commit: its parents and the whole file map it holds."""

    oid: str
    parents: list[str]
    files: dict[str, str]  # path -> git blob id
    title: str
    message: str
    date: str


@dataclass
class Repo:
    """One dataset repository: its commits and refs."""

    repo_id: str
    private: bool
    created: str
    commits: dict[str, Commit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)  # "refs/heads/main" -> commit oid
    prs: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"repo_id": self.repo_id, "private": self.private, "created": self.created, "prs": self.prs,
                "refs": self.refs, "commits": {oid: vars(c) for oid, c in self.commits.items()}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Repo:
        repo = cls(d["repo_id"], d["private"], d["created"], refs=dict(d["refs"]), prs=d["prs"])
        repo.commits = {oid: Commit(**c) for oid, c in d["commits"].items()}
        return repo


class Store:
    """Repositories in ``root``: ``blobs/`` by git blob id, ``state.json`` with commits and refs.

    Callers hold :attr:`lock` around reads that must see one state; the methods that change a
    repository take it themselves and save before returning.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.state_file = root / "state.json"
        self.lock = threading.RLock()
        self.repos: dict[str, Repo] = {}
        self.sizes: dict[str, int] = {}
        self.sha256: dict[str, str] = {}  # sha256 hex -> git blob id (for lfsFile lines)
        if self.state_file.exists():
            state = json.loads(self.state_file.read_text(encoding="utf-8"))
            self.repos = {k: Repo.from_json(v) for k, v in state["repos"].items()}
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
    def repo(self, repo_id: str) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None:
            raise HubError(404, f"Repository not found: datasets/{repo_id}", "RepoNotFound")
        return repo

    def create_repo(self, repo_id: str, *, private: bool) -> Repo | None:
        """A new repository with the Hub's initial commit; None when ``repo_id`` exists."""
        with self.lock:
            if repo_id in self.repos:
                return None
            repo = Repo(repo_id, private, now())
            oid = self.new_commit(repo, [], {".gitattributes": self.put_blob(GITATTRIBUTES)}, "initial commit", "")
            repo.refs["refs/heads/main"] = oid
            self.repos[repo_id] = repo
            self.save()
        return repo

    def delete_repo(self, repo_id: str) -> None:
        with self.lock:
            self.repo(repo_id)
            del self.repos[repo_id]
            self.save()

    def new_commit(self, repo: Repo, parents: list[str], files: dict[str, str], title: str, message: str) -> str:
        self._counter += 1
        seed = json.dumps([repo.repo_id, parents, sorted(files.items()), title, message, now(), self._counter])
        oid = hashlib.sha1(seed.encode()).hexdigest()
        repo.commits[oid] = Commit(oid, parents, dict(files), title, message, now())
        return oid

    @staticmethod
    def ref_name(repo: Repo, rev: str) -> str | None:
        """The full ref a revision names (a branch first, then a tag), or None (a commit id or unknown)."""
        if rev.startswith("refs/"):
            return rev if rev in repo.refs else None
        for kind in ("heads", "tags"):
            if f"refs/{kind}/{rev}" in repo.refs:
                return f"refs/{kind}/{rev}"
        return None

    def resolve(self, repo: Repo, rev: str) -> Commit:
        ref = self.ref_name(repo, rev)
        if ref is not None:
            return repo.commits[repo.refs[ref]]
        if rev in repo.commits:
            return repo.commits[rev]
        raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")

    # -- commits and refs
    def commit(self, repo: Repo, rev: str, header: dict[str, Any], operations: list[dict[str, Any]], *,
               create_pr: bool) -> tuple[str, int | None]:
        """Apply one commit's operations (``file`` with base64 content, ``lfsFile``, ``deletedFile``,
        ``deletedFolder``) on branch ``rev`` as one new commit, all or nothing.

        Returns:
            The new commit id, and the pull request's number when ``create_pr`` (``rev`` unchanged then).

        Raises:
            HubError: 404 for an unknown revision or a missing file to delete, 400 for a tag or a bad
                line, 412 when ``parentCommit`` is not the branch's head, 422 for an LFS object never uploaded.
        """
        with self.lock:
            ref = self.ref_name(repo, rev)
            if ref is None:
                self.resolve(repo, rev)  # 404 RevisionNotFound for an unknown revision
                raise HubError(400, f"cannot commit on {rev!r}: not a branch")
            if ref.startswith("refs/tags/"):
                raise HubError(400, f"cannot commit on tag {rev!r}; commit on a branch")
            head = repo.commits[repo.refs[ref]]
            parent = header.get("parentCommit")
            if parent and parent != head.oid:
                raise HubError(412, f"parentCommit {parent} is not the head of {rev} ({head.oid}): the revision moved")
            files = dict(head.files)
            for line in operations:
                self._apply(files, line.get("key"), line.get("value", {}))
            oid = self.new_commit(repo, [head.oid], files, header.get("summary") or "update",
                                  header.get("description") or "")
            pr = None
            if create_pr:
                repo.prs += 1
                pr = repo.prs
                repo.refs[f"refs/pr/{pr}"] = oid
            else:
                repo.refs[ref] = oid
            self.save()
        return oid, pr

    def _apply(self, files: dict[str, str], key: Any, value: dict[str, Any]) -> None:
        """One commit line on the file map being built."""
        path = str(value.get("path", "")).strip("/")
        if key == "file":
            if value.get("encoding", "base64") != "base64":
                raise HubError(400, f"unsupported encoding {value.get('encoding')!r}")
            files[path] = self.put_blob(base64.b64decode(value["content"]))
        elif key == "lfsFile":
            oid = self.sha256.get(value.get("oid", ""))
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

    def create_branch(self, repo: Repo, name: str, *, starting_point: str | None, empty: bool) -> None:
        ref = f"refs/heads/{name}"
        with self.lock:
            if ref in repo.refs:
                raise HubError(409, f"Reference already exists: {ref}")
            start = self.resolve(repo, starting_point or "main")
            repo.refs[ref] = self.new_commit(repo, [], {}, "empty branch", "") if empty else start.oid
            self.save()

    def delete_branch(self, repo: Repo, name: str) -> None:
        ref = f"refs/heads/{name}"
        with self.lock:
            if ref not in repo.refs:
                raise HubError(404, f"Invalid rev id: {name}", "RevisionNotFound")
            if name == "main":
                raise HubError(403, "cannot delete the main branch")
            del repo.refs[ref]
            self.save()

    def create_tag(self, repo: Repo, tag: str, rev: str) -> None:
        with self.lock:
            if not tag or "/" in tag:
                raise HubError(400, f"invalid tag name {tag!r}")
            ref = f"refs/tags/{tag}"
            if ref in repo.refs:
                raise HubError(409, f"Tag already exists: {tag}")
            repo.refs[ref] = self.resolve(repo, rev).oid
            self.save()

    def delete_tag(self, repo: Repo, tag: str) -> None:
        ref = f"refs/tags/{tag}"
        with self.lock:
            if ref not in repo.refs:
                raise HubError(404, f"Invalid rev id: {tag}", "RevisionNotFound")
            del repo.refs[ref]
            self.save()


# -- what a commit lists, in the Hub's tree format

def tree_oid(entries: list[tuple[str, str]]) -> str:
    """A folder's id: a hash of the (path, blob id) pairs under it."""
    return hashlib.sha1(json.dumps(sorted(entries)).encode()).hexdigest()


def tree_entries(store: Store, commit: Commit, base: str, *, recursive: bool, expand: bool) -> list[dict[str, Any]]:
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
            out[path] = file_entry(store, path, oid, commit if expand else None)
    for folder, members in folders.items():
        if recursive or folder.count("/") == prefix.count("/"):
            out[folder] = folder_entry(folder, members, commit if expand else None)
    return [out[k] for k in sorted(out)]


def file_entry(store: Store, path: str, oid: str, commit: Commit | None) -> dict[str, Any]:
    """A file's tree entry; with ``commit`` (``expand``), its last commit and scan status too."""
    entry: dict[str, Any] = {"type": "file", "oid": oid, "size": store.blob_size(oid), "path": path}
    if commit is not None:
        entry["lastCommit"] = last_commit(commit)
        entry["securityFileStatus"] = {"status": "safe", "avScan": {"virusFound": False},
                                       "pickleImportScan": {"highestSafetyLevel": "innocuous", "imports": []}}
    return entry


def folder_entry(path: str, members: list[tuple[str, str]], commit: Commit | None) -> dict[str, Any]:
    """A folder's tree entry; with ``commit`` (``expand``), its last commit too."""
    entry: dict[str, Any] = {"type": "directory", "oid": tree_oid(members), "size": 0, "path": path}
    if commit is not None:
        entry["lastCommit"] = last_commit(commit)
    return entry


def last_commit(commit: Commit) -> dict[str, str]:
    return {"id": commit.oid, "title": commit.title, "date": commit.date}


def card_data(store: Store, commit: Commit) -> dict[str, Any] | None:
    """The YAML metadata of the commit's ``README.md`` (the Hub's ``cardData``), or None."""
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
