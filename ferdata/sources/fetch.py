"""Downloads that never trust the web, and the crawl's fetch cache.

:func:`fetch_url` gets one URL with:

* connect and read timeouts, plus a total deadline per attempt (a server that drips one byte a
  second is cut off);
* a maximum response size: a ``Content-Length`` above it is refused before reading, and the
  body is streamed and abandoned as soon as it passes the limit (gzip bombs included, the limit
  applies to the decoded bytes);
* redirects followed by hand, at most ``max_redirects``, a URL seen twice is a ``redirect_loop``;
  only ``http``/``https``, and with ``loopback_only`` only 127.0.0.1 / localhost / ::1;
* bounded retries with exponential backoff, only for transient failures (connect and read
  timeouts, connection errors, HTTP 429 and 5xx), by ``urllib3.util.Retry`` on the session's
  adapter (:func:`retry_policy`; a ``Retry-After`` header is not obeyed, so a hostile server
  cannot stall the crawl). A body that stalls after the headers is not retried in the same run.

It returns a :class:`Fetched` whose ``reason`` is ``""`` on success or a ledger code:
``http_<status>``, ``timeout``, ``connection_error``, ``too_large``, ``redirect_loop``,
``too_many_redirects``, ``bad_url``, ``fetch_error``. What the bytes are is decided later, by
decoding them (:func:`ferdata.images.decode_image`), never by extension or ``Content-Type``.

:class:`FetchCache` is a directory shared by re-runs: ``blobs/<sha256>.<ext>`` (file names from
the content hash, never from the URL), ``pages/<sha256 of url>.body`` for result pages, and
``index.jsonl``, one JSON record per finished URL. A URL whose outcome is final (fetched, or a
permanent failure such as ``http_404``) is never requested again; transient failures are retried
on the next run.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

logger = logging.getLogger(__name__)

#: Failure reasons worth retrying (now, and on the next run).
TRANSIENT = frozenset({"timeout", "connection_error", "http_429", "http_500", "http_502", "http_503", "http_504"})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
USER_AGENT = "ferdata-crawler/0.1 (research dataset builder; polite, few threads)"
_CHUNK = 64 * 1024
_MAGIC = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG", "png"), (b"GIF8", "gif"), (b"BM", "bmp"), (b"RIFF", "webp"),
          (b"II*\x00", "tif"), (b"MM\x00*", "tif"))


@dataclass(frozen=True)
class FetchPolicy:
    """Limits of one download."""

    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    #: seconds one attempt may take in all (headers and body)
    total_timeout: float = 30.0
    max_bytes: int = 10_000_000
    retries: int = 2
    retry_backoff: float = 1.0
    max_redirects: int = 5
    loopback_only: bool = False


@dataclass
class Fetched:
    """The outcome of a download: ``reason`` is empty on success."""

    url: str
    reason: str = ""
    details: str = ""
    data: bytes | None = None
    final_url: str = ""
    content_type: str = ""
    attempts: int = 0
    #: the cache file holding ``data`` (relative to the cache root), once stored
    file: str = ""
    fetched_at: str = field(default_factory=lambda: now_iso())

    @property
    def ok(self) -> bool:
        return not self.reason


def now_iso() -> str:
    """The current UTC time, ISO 8601, seconds."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def is_loopback(url: str) -> bool:
    """True when the URL's host is 127.0.0.1, localhost or ::1."""
    return (urlsplit(url).hostname or "") in LOOPBACK_HOSTS


def check_url(url: str, *, loopback_only: bool = False) -> str:
    """Return ``""`` for an acceptable URL, else why it is not (used for ``bad_url`` details)."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"}:
        return f"scheme {parts.scheme or '(none)'!r} is not http or https"
    if not parts.hostname:
        return "no host"
    if loopback_only and parts.hostname not in LOOPBACK_HOSTS:
        return f"host {parts.hostname!r} is not a loopback address (loopback engine)"
    return ""


#: HTTP statuses worth retrying (the ``http_*`` codes of :data:`TRANSIENT`).
RETRY_STATUSES = frozenset(int(r.split("_")[1]) for r in TRANSIENT if r.startswith("http_"))


def retry_policy(policy: FetchPolicy) -> Any:
    """The ``urllib3.util.Retry`` of a policy: ``retries`` more tries of a GET that timed out, failed to
    connect or answered 429/5xx, backoff ``retry_backoff * 2**(n-1)`` seconds, no redirects (followed by
    hand), ``Retry-After`` ignored, and the last answer returned instead of raised."""
    from urllib3.util import Retry

    return Retry(total=policy.retries, connect=policy.retries, read=policy.retries, status=policy.retries,
                 other=0, redirect=False, allowed_methods=frozenset({"GET"}), status_forcelist=RETRY_STATUSES,
                 backoff_factor=policy.retry_backoff, respect_retry_after_header=False, raise_on_status=False)


def _use_retries(session: Any, policy: FetchPolicy) -> None:
    """Mount an adapter retrying as ``policy`` says (once per session and retry setting)."""
    key = (policy.retries, policy.retry_backoff)
    if getattr(session, "_ferdata_retries", None) == key:
        return
    from requests.adapters import HTTPAdapter

    adapter = HTTPAdapter(max_retries=retry_policy(policy))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session._ferdata_retries = key


def make_session(*, trust_env: bool = True, policy: FetchPolicy | None = None) -> Any:
    """A ``requests`` session with ferdata's User-Agent and ``policy``'s retries (``trust_env=False``
    ignores proxy variables)."""
    import requests

    session = requests.Session()
    session.trust_env = trust_env
    session.headers.update({"User-Agent": USER_AGENT, "Accept": "image/*,*/*;q=0.5"})
    _use_retries(session, policy or FetchPolicy())
    return session


def fetch_url(url: str, policy: FetchPolicy, session: Any) -> Fetched:
    """Download ``url`` within ``policy``'s limits, retrying transient failures.

    Args:
        url: an http(s) URL.
        policy: timeouts, size limit, retries.
        session: a ``requests.Session`` (see :func:`make_session`).

    Returns:
        A :class:`Fetched`; on failure ``reason`` is a ledger code and ``data`` is None.

    Example:
        >>> got = fetch_url("http://127.0.0.1:8000/a.jpg", FetchPolicy(), make_session())  # doctest: +SKIP
        >>> got.reason or len(got.data)                                                      # doctest: +SKIP
        18233
    """
    _use_retries(session, policy)
    return _fetch(url, policy, session)


def _attempts(response: Any) -> int:
    retries = getattr(getattr(response, "raw", None), "retries", None)
    return len(getattr(retries, "history", ()) or ()) + 1


def _fetch(url: str, policy: FetchPolicy, session: Any) -> Fetched:
    got = _fetch_hops(url, policy, session)
    if got.attempts == 0:  # failed before an answer: the adapter made every try
        got.attempts = policy.retries + 1 if got.reason in TRANSIENT else 1
    return got


def _fetch_hops(url: str, policy: FetchPolicy, session: Any) -> Fetched:
    import requests

    start = time.monotonic()
    seen = [url]
    current = url
    try:
        for _ in range(policy.max_redirects + 1):
            problem = check_url(current, loopback_only=policy.loopback_only)
            if problem:
                return Fetched(url, "bad_url", f"{current}: {problem}")
            with session.get(current, stream=True, allow_redirects=False,
                             timeout=(policy.connect_timeout, policy.read_timeout)) as r:
                if r.is_redirect:
                    target = urljoin(current, r.headers.get("Location", ""))
                    if target in seen:
                        return Fetched(url, "redirect_loop", f"{' -> '.join([*seen, target])}")
                    seen.append(target)
                    current = target
                    continue
                if r.status_code != 200:
                    return Fetched(url, f"http_{r.status_code}", f"HTTP {r.status_code} from {current}",
                                   attempts=_attempts(r))
                length = r.headers.get("Content-Length", "")
                if length.strip().isdigit() and int(length) > policy.max_bytes:
                    return Fetched(url, "too_large", f"Content-Length {int(length)} exceeds {policy.max_bytes} bytes")
                chunks, total = [], 0
                for chunk in r.iter_content(_CHUNK):
                    total += len(chunk)
                    if total > policy.max_bytes:
                        return Fetched(url, "too_large", f"body passed {policy.max_bytes} bytes; download abandoned")
                    if time.monotonic() - start > policy.total_timeout:
                        return Fetched(url, "timeout", f"download took over {policy.total_timeout:g}s")
                    chunks.append(chunk)
                return Fetched(url, data=b"".join(chunks), final_url=current,
                               content_type=r.headers.get("Content-Type", ""), attempts=_attempts(r))
        return Fetched(url, "too_many_redirects", f"more than {policy.max_redirects} redirects: {' -> '.join(seen)}")
    except requests.exceptions.Timeout as e:
        return Fetched(url, "timeout", f"{type(e).__name__} (connect {policy.connect_timeout:g}s, "
                                       f"read {policy.read_timeout:g}s)")
    except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema) as e:
        return Fetched(url, "bad_url", str(e)[:300])
    except requests.exceptions.ConnectionError as e:
        text = str(e)
        reason = "timeout" if "timed out" in text.lower() else "connection_error"
        return Fetched(url, reason, text[:300])
    except requests.exceptions.RequestException as e:
        return Fetched(url, "fetch_error", f"{type(e).__name__}: {str(e)[:300]}")


def sniff_extension(data: bytes) -> str:
    """A file extension from the first bytes (``bin`` when unknown); only used to name cache files."""
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    return "bin"


class FetchCache:
    """The crawl cache directory (see the module docstring); safe to share between threads.

    Example:
        >>> cache = FetchCache("crawl-cache")      # doctest: +SKIP
        >>> cache.lookup("http://x/a.jpg")          # doctest: +SKIP
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        (self.root / "pages").mkdir(parents=True, exist_ok=True)
        self.index_file = self.root / "index.jsonl"
        self._lock = threading.Lock()
        self._index: dict[str, dict[str, Any]] = {}
        if self.index_file.exists():
            with self.index_file.open(encoding="utf-8") as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:  # a line cut by a killed run
                        continue
                    if isinstance(record, dict) and "url" in record:
                        self._index[record["url"]] = record

    def lookup(self, url: str) -> Fetched | None:
        """The cached final outcome of ``url`` (data read from its blob), or None."""
        record = self._index.get(url)
        if record is None:
            return None
        if record.get("reason"):
            return Fetched(url, record["reason"], record.get("details", ""), fetched_at=record.get("fetched_at", ""))
        path = self.root / record.get("file", "")
        if not record.get("file") or not path.is_file():
            return None
        return Fetched(url, data=path.read_bytes(), final_url=record.get("final_url", url), file=record["file"],
                       content_type=record.get("content_type", ""), fetched_at=record.get("fetched_at", ""))

    def store(self, got: Fetched, *, kind: str = "image") -> None:
        """Record a final outcome (transient failures are not recorded, so a re-run retries them)."""
        if got.reason in TRANSIENT:
            return
        record: dict[str, Any] = {"url": got.url, "kind": kind, "fetched_at": got.fetched_at}
        if got.ok and got.data is not None:
            digest = hashlib.sha256(got.data).hexdigest()
            if kind == "page":
                name = f"pages/{hashlib.sha256(got.url.encode()).hexdigest()}.body"
            else:
                name = f"blobs/{digest}.{sniff_extension(got.data)}"
            path = self.root / name
            if not path.exists():
                tmp = path.with_suffix(path.suffix + f".tmp{threading.get_ident()}")
                tmp.write_bytes(got.data)
                tmp.replace(path)
            got.file = name
            record.update(file=name, sha256=digest, final_url=got.final_url, content_type=got.content_type)
        else:
            record.update(reason=got.reason, details=got.details)
        with self._lock:
            self._index[got.url] = record
            with self.index_file.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")

    def __contains__(self, url: str) -> bool:
        return url in self._index
