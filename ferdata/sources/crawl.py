"""Crawl web images per class (``ferdata crawl``), on icrawler 0.6.10, with provenance.

For each class of a query manifest (:mod:`ferdata.sources.queries`) the crawler asks the engine
for result pages, parses them with icrawler's own parser for that engine (``BingParser``,
``BaiduParser``, ``GoogleParser``, ``FlickrParser``), and downloads the result URLs with
:func:`ferdata.sources.fetch.fetch_url`, which never trusts the web (timeouts, size limit,
redirect limit, bounded retries). What a download is gets decided by decoding it
(:func:`ferdata.images.decode_image`, with a pixel-count limit), never by extension or
``Content-Type``.

The queries of a class are visited round-robin (rank 1 of every query, then rank 2, ...) and
result pages are fetched lazily, so a class stops as soon as it has ``per_class`` good images and
its images are spread evenly over the manifest's demographic cells. Downloads run on a small,
polite thread pool (``threads``, default 4).

Rows: the core schema (label from the manifest class, ``source`` = ``crawl:<engine>``,
``origin`` = the URL) plus ``engine``, ``query``, ``rank`` (1-based position in the query's
results), ``url`` and ``fetched_at`` (UTC, ISO 8601). Failures go to the rejects ledger with the
URL as origin and a reason: ``http_404``, ``http_500`` (any ``http_<status>``), ``timeout``,
``connection_error``, ``too_large``, ``redirect_loop``, ``too_many_redirects``, ``bad_url``,
``not_an_image``, ``corrupt``, ``too_many_pixels``, ``too_small``, ``empty_file``,
``duplicate`` (the same pixels as an image already kept, under another URL).

Engines: ``bing`` (default), ``baidu``, ``google``, ``flickr`` (needs ``FLICKR_API_KEY``),
``urls`` (the manifest lists image URLs per class) and ``loopback`` (Bing's result format served
by a local server, for tests and offline demos: its base URL must be a loopback address). The
base URL of every search engine can be replaced with ``base_url`` or the environment variable
``FERDATA_CRAWL_BASE_URL``; when it is a loopback address, every image URL must be one too.

The fetch cache (``cache``, default ``<out>/../.ferdata-crawl``) keeps result pages, image bytes
(named by content hash) and the outcome of every URL: a re-run skips URLs already fetched and
only retries transient failures.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

from ferdata.errors import StepFailed, UsageError
from ferdata.images import ImageRejected, decode_image, pixel_id
from ferdata.sources.fetch import (
    FetchCache,
    Fetched,
    FetchPolicy,
    check_url,
    fetch_url,
    is_loopback,
    make_session,
)
from ferdata.sources.queries import Query, QueryGrid
from ferdata.steps import StepContext, StepOutput, register_step

logger = logging.getLogger(__name__)

BASE_URL_ENV = "FERDATA_CRAWL_BASE_URL"
CACHE_DIR_NAME = ".ferdata-crawl"
#: Largest result page accepted (bytes).
MAX_PAGE_BYTES = 5_000_000
#: Give up the whole crawl when this many result pages failed before any succeeded (no network, wrong URL).
GIVE_UP_AFTER = 3
_KEEP_FORMATS = (b"\x89PNG", b"\xff\xd8\xff")


@dataclass(frozen=True)
class Engine:
    """How to ask one image search engine for a page of results."""

    name: str
    base_url: str
    #: page URL template: {base}, {query} (URL-encoded), {offset} (0-based), {page} (1-based), {key}
    page_url: str
    parser: str
    loopback_only: bool = False
    key_env: str = ""

    def page(self, base: str, query: str, offset: int, page: int, key: str = "") -> str:
        """The URL of a result page."""
        return self.page_url.format(base=base.rstrip("/"), query=quote_plus(query), offset=offset, page=page, key=key)


_BING_PAGE = "{base}/images/async?q={query}&first={offset}"
ENGINES: dict[str, Engine] = {
    "bing": Engine("bing", "https://www.bing.com", _BING_PAGE, "icrawler.builtin.bing:BingParser"),
    "baidu": Engine("baidu", "http://image.baidu.com",
                    "{base}/search/acjson?tn=resultjson_com&ipn=rj&word={query}&pn={offset}&rn=30",
                    "icrawler.builtin.baidu:BaiduParser"),
    "google": Engine("google", "https://www.google.com", "{base}/search?q={query}&ijn={page}&start={offset}&tbm=isch",
                     "icrawler.builtin.google:GoogleParser"),
    "flickr": Engine("flickr", "https://api.flickr.com",
                     "{base}/services/rest/?method=flickr.photos.search&api_key={key}&format=json&nojsoncallback=1"
                     "&text={query}&per_page=100&page={page}", "icrawler.builtin.flickr:FlickrParser",
                     key_env="FLICKR_API_KEY"),
    "urls": Engine("urls", "", "", ""),
    "loopback": Engine("loopback", "", _BING_PAGE, "icrawler.builtin.bing:BingParser", loopback_only=True),
}


@dataclass
class CrawlConfig:
    """Options of the crawler (names match the ``ferdata crawl`` options)."""

    #: query manifest: a YAML path or a packaged name
    queries: str = "btfer-queries"
    engine: str = "bing"
    #: good images to keep per class (the crawl stops a class when it has them)
    per_class: int = 100
    #: replace the engine's base URL (also FERDATA_CRAWL_BASE_URL); required by the loopback engine
    base_url: str = ""
    #: fetch cache directory; default <out>/../.ferdata-crawl
    cache: str = ""
    threads: int = 4
    # download limits: the defaults are FetchPolicy's
    connect_timeout: float = FetchPolicy.connect_timeout
    read_timeout: float = FetchPolicy.read_timeout
    total_timeout: float = FetchPolicy.total_timeout
    max_bytes: int = FetchPolicy.max_bytes
    max_pixels: int = 40_000_000
    retries: int = FetchPolicy.retries
    retry_backoff: float = FetchPolicy.retry_backoff
    max_redirects: int = FetchPolicy.max_redirects
    #: result pages fetched at most per query
    pages_per_query: int = 3

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise UsageError(f"unknown engine {self.engine!r}; engines: {', '.join(ENGINES)}")
        for name, low, high in (("per_class", 1, None), ("threads", 1, 16), ("max_bytes", 1024, None),
                                ("max_pixels", 64, None), ("retries", 0, 5), ("max_redirects", 0, 20),
                                ("pages_per_query", 1, 50)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low or (high is not None and value > high):
                allowed = f"{low}..{high}" if high is not None else f">= {low}"
                raise UsageError(f"{name} must be an integer {allowed}, got {value!r}")
        for name in ("connect_timeout", "read_timeout", "total_timeout", "retry_backoff"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0 or (value == 0 and name != "retry_backoff"):
                raise UsageError(f"{name} must be a positive number of seconds, got {value!r}")
        if self.base_url and check_url(self.base_url):
            raise UsageError(f"base_url {self.base_url!r} is not an http(s) URL: {check_url(self.base_url)}")
        if self.engine == "loopback":
            base = self.resolved_base_url()
            if not base or not is_loopback(base):
                raise UsageError(f"engine 'loopback' needs a loopback base URL (--base-url or {BASE_URL_ENV}, "
                                 f"e.g. http://127.0.0.1:8000), got {base or '(none)'!r}")

    def resolved_base_url(self) -> str:
        """``base_url``, else ``FERDATA_CRAWL_BASE_URL``, else the engine's own."""
        return self.base_url or os.environ.get(BASE_URL_ENV, "") or ENGINES[self.engine].base_url

    def policy(self) -> FetchPolicy:
        """The download limits."""
        loopback = ENGINES[self.engine].loopback_only or (self.engine != "urls" and is_loopback(self.resolved_base_url()))
        return FetchPolicy(connect_timeout=self.connect_timeout, read_timeout=self.read_timeout,
                           total_timeout=self.total_timeout, max_bytes=self.max_bytes, retries=self.retries,
                           retry_backoff=self.retry_backoff, max_redirects=self.max_redirects, loopback_only=loopback)


@dataclass
class Candidate:
    """A result URL to download."""

    query: Query
    rank: int
    url: str


@dataclass
class Outcome:
    """A downloaded and decoded candidate."""

    candidate: Candidate
    fetched: Fetched
    reason: str = ""
    details: str = ""
    id: str = ""
    keep_bytes: bool = False
    from_cache: bool = False


class _Response:
    """The bits of a ``requests.Response`` icrawler's parsers read."""

    def __init__(self, got: Fetched) -> None:
        self.content = got.data or b""
        self.url = got.final_url or got.url
        self.status_code = 200
        self.text = self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        import json

        return json.loads(self.text)


@dataclass
class _Crawl:
    """State of one crawl run."""

    config: CrawlConfig
    grid: QueryGrid
    cache: FetchCache
    limit: int | None
    engine: Engine = field(init=False)
    base: str = field(init=False)
    policy: FetchPolicy = field(init=False)
    stats: Counter = field(default_factory=Counter)
    page_failures: Counter = field(default_factory=Counter)
    first_page_failure: str = ""
    attempts: int = 0

    def __post_init__(self) -> None:
        self.engine = ENGINES[self.config.engine]
        self.base = self.config.resolved_base_url()
        self.policy = self.config.policy()
        self._local = threading.local()
        self._parser: Any = None
        self.key = os.environ.get(self.engine.key_env, "") if self.engine.key_env else ""
        if self.engine.key_env and not self.key:
            raise UsageError(f"engine {self.engine.name!r} needs an API key in the environment variable "
                             f"{self.engine.key_env}")

    def session(self) -> Any:
        if not hasattr(self._local, "session"):
            self._local.session = make_session(trust_env=not self.policy.loopback_only, policy=self.policy)
        return self._local.session

    def parser(self) -> Any:
        """An instance of the engine's icrawler parser (used only for its ``parse``)."""
        if self._parser is None:
            from icrawler.utils import Signal

            module, name = self.engine.parser.split(":")
            cls = getattr(importlib.import_module(module), name)
            self._parser = cls(1, Signal(), self.session())
            self._parser.logger = logging.getLogger(f"{__name__}.icrawler")
        return self._parser

    # ------------------------------------------------------------ result pages

    def results(self, query: Query) -> Iterator[Candidate]:
        """Result URLs of one query, page by page (lazily), with their 1-based rank."""
        seen: set[str] = set()
        offset, rank = 0, 0
        page_policy = FetchPolicy(**{**self.policy.__dict__, "max_bytes": MAX_PAGE_BYTES, "loopback_only": False})
        for page in range(1, self.config.pages_per_query + 1):
            url = self.engine.page(self.base, query.text, offset, page, self.key)
            got = self.cache.lookup(url)
            if got is None:
                got = fetch_url(url, page_policy, self.session())
                self.cache.store(got, kind="page")
            if not got.ok:
                self.page_failures[got.reason] += 1
                self.first_page_failure = self.first_page_failure or f"{got.reason} ({got.details})"
                logger.warning("result page %s failed: %s %s", url, got.reason, got.details)
                if not self.stats["result_pages"] and sum(self.page_failures.values()) >= GIVE_UP_AFTER:
                    raise StepFailed(f"crawl: no result page could be fetched from {self.engine.name} at "
                                     f"{self.base or '(none)'} ({GIVE_UP_AFTER} tries): {self.first_page_failure}")
                return
            try:
                kwargs = {"apikey": self.key} if self.engine.name == "flickr" else {}
                tasks = list(self.parser().parse(_Response(got), **kwargs) or [])
            except Exception as e:  # a page the engine's parser cannot read
                self.page_failures["unparseable_page"] += 1
                self.first_page_failure = self.first_page_failure or f"unparseable_page ({e})"
                logger.warning("result page %s could not be parsed: %s", url, e)
                return
            self.stats["result_pages"] += 1
            urls = [t["file_url"] for t in tasks if isinstance(t, dict) and t.get("file_url")]
            new = [u for u in dict.fromkeys(urls) if u not in seen]
            if not new:
                return
            for u in new:
                seen.add(u)
                rank += 1
                yield Candidate(query, rank, u)
            offset += len(urls)

    def candidates(self, label: str) -> Iterator[Candidate]:
        """Candidates of a class: manifest URLs (``urls`` engine) or query results round-robin."""
        if self.engine.name == "urls":
            q = Query(label, "", "")
            yield from (Candidate(q, i, u) for i, u in enumerate(self.grid.urls.get(label, ()), start=1))
            return
        active = [self.results(q) for q in self.grid.queries(label)]
        while active:
            still = []
            for it in active:
                item = next(it, None)
                if item is not None:
                    still.append(it)
                    yield item
            active = still

    # ------------------------------------------------------------ downloads

    def download(self, cand: Candidate) -> Outcome:
        """Fetch (or read from the cache) and decode one candidate; never raises for bad content."""
        got = self.cache.lookup(cand.url)
        from_cache = got is not None
        if got is None:
            got = fetch_url(cand.url, self.policy, self.session())
            self.cache.store(got)
        out = Outcome(cand, got, from_cache=from_cache)
        if not got.ok:
            out.reason, out.details = got.reason, got.details
            return out
        data = got.data or b""
        try:
            pixels, note = decode_image(data, max_pixels=self.config.max_pixels)
        except ImageRejected as e:
            out.reason, out.details = e.reason, e.details
            return out
        out.id = pixel_id(pixels)
        out.keep_bytes = not note and data.startswith(_KEEP_FORMATS)
        return out


def _details(cand: Candidate, engine: str, **extra: Any) -> dict[str, Any]:
    return {"engine": engine, "query": cand.query.text, "rank": cand.rank, "label": cand.query.label,
            "url": cand.url, **extra}


def crawl_rows(config: CrawlConfig, grid: QueryGrid, cache: FetchCache, *, label_names: list[str],
               limit: int | None = None) -> tuple[list[dict[str, Any]], list[dict[str, str]], dict[str, Any]]:
    """Run the crawl: return good rows (image bytes not loaded), ledger rows and run facts.

    Args:
        config: crawler options.
        grid: the query manifest.
        cache: the fetch cache.
        label_names: the dataset's class names (the label column's ClassLabel).
        limit: download at most this many URLs in all (trials).

    Raises:
        StepFailed: when not a single result page or URL could be fetched.
    """
    from ferdata.dataset import make_reject
    from ferdata.progress import progress

    run = _Crawl(config, grid, cache, limit)
    source = f"crawl:{config.engine}"
    rows: list[dict[str, Any]] = []
    rejects: list[dict[str, str]] = []
    kept_ids: dict[str, str] = {}
    seen_urls: set[str] = set()
    per_class: dict[str, dict[str, int]] = {}
    budget = limit
    labels = grid.labels() if config.engine == "urls" else list(grid.classes)
    with ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="ferdata-crawl") as pool:
        for label in progress(labels, desc="crawl classes", unit="class"):
            kept = tried = 0
            stream = run.candidates(label)
            while kept < config.per_class and (budget is None or budget > 0):
                want = config.per_class - kept if budget is None else min(config.per_class - kept, budget)
                batch = []
                for cand in stream:
                    if cand.url in seen_urls:
                        run.stats["repeated_urls"] += 1
                        continue
                    seen_urls.add(cand.url)
                    batch.append(cand)
                    if len(batch) >= want:
                        break
                if not batch:
                    break
                tried += len(batch)
                if budget is not None:
                    budget -= len(batch)
                for out in pool.map(run.download, batch):
                    cand = out.candidate
                    run.stats["from_cache" if out.from_cache else "downloaded"] += 1
                    if not out.reason and out.id in kept_ids:
                        out.reason, out.details = "duplicate", f"same pixels as {kept_ids[out.id]}"
                    if out.reason:
                        rejects.append(make_reject(out.id, cand.url, "crawl", out.reason,
                                                   _details(cand, config.engine, message=out.details)))
                        continue
                    kept_ids[out.id] = cand.url
                    kept += 1
                    rows.append({"file": out.fetched.file, "keep_bytes": out.keep_bytes, "label": label_names.index(label),
                                 "id": out.id, "source": source, "origin": cand.url, "engine": config.engine,
                                 "query": cand.query.text, "rank": cand.rank, "url": cand.url,
                                 "fetched_at": out.fetched.fetched_at})
            per_class[label] = {"kept": kept, "tried": tried, "short_by": max(0, config.per_class - kept)}
            if kept < config.per_class:
                logger.warning("crawl: class %s kept %d of %d (results exhausted or --limit reached)", label, kept,
                               config.per_class)
    if not rows and not rejects and (run.page_failures or not run.stats["result_pages"]) and config.engine != "urls":
        raise StepFailed(f"crawl: no result page could be fetched from {config.engine} at {run.base or '(none)'}: "
                         f"{run.first_page_failure or 'no results'}")
    info = {"engine": config.engine, "base_url": run.base, "cache": str(cache.root), "per_class": per_class,
            "stats": dict(run.stats), "page_failures": dict(run.page_failures), "queries": grid.summary()}
    return rows, rejects, info


def _generate(rows: list[dict[str, Any]], cache_root: str) -> Iterator[dict[str, Any]]:
    """Dataset rows: read each image from the cache (re-encoded as PNG when it needs conversion)."""
    from ferdata.dataset import lineage_ids
    from ferdata.images import encode_png

    for row in rows:
        data = (Path(cache_root) / row["file"]).read_bytes()
        if not row["keep_bytes"]:
            data = encode_png(decode_image(data, max_pixels=2**62)[0])
        out = {k: v for k, v in row.items() if k not in {"file", "keep_bytes"}}
        out.update(lineage_ids(out["id"]))  # the row enters the dataset here
        out["image"] = {"bytes": data, "path": None}
        yield out


def crawl_features(label_names: list[str]) -> Any:
    """Core features plus the crawl's provenance columns."""
    import datasets

    from ferdata.dataset import core_features, lineage_features

    features = lineage_features(core_features(label_names))
    for name in ("engine", "query", "url", "fetched_at"):
        features[name] = datasets.Value("string")
    features["rank"] = datasets.Value("int32")
    return features


def default_cache(ctx: StepContext) -> Path:
    """``<out>/../.ferdata-crawl`` when the output is known, else ``~/.cache/ferdata/crawl``."""
    if ctx.out_dir is not None:
        return Path(ctx.out_dir).resolve().parent / CACHE_DIR_NAME
    return Path.home() / ".cache" / "ferdata" / "crawl"


@register_step("crawl", CrawlConfig, source=True)
def crawl_step(data: None, config: CrawlConfig, ctx: StepContext) -> StepOutput:
    """Crawl web images per class from a query manifest, with provenance; failures to the ledger."""
    import datasets

    from ferdata.labels import LabelMaps

    grid = QueryGrid.load(config.queries)
    if config.engine == "urls" and not grid.urls:
        raise UsageError(f"engine 'urls' needs a manifest with a 'urls' section; {grid.path} has none")
    if config.engine != "urls" and not grid.classes:
        raise UsageError(f"engine {config.engine!r} needs a manifest with 'classes' (expression phrases); "
                         f"{grid.path} has only 'urls' (use --engine urls)")
    maps = LabelMaps.load()
    names = list(maps.canonical) + [x for x in maps.extra if x in grid.labels()]
    cache = FetchCache(config.cache or default_cache(ctx))
    rows, rejects, info = crawl_rows(config, grid, cache, label_names=names, limit=ctx.limit)
    features = crawl_features(names)
    if rows:
        ds = datasets.Dataset.from_generator(_generate, gen_kwargs={"rows": rows, "cache_root": str(cache.root)},
                                             features=features, cache_dir=str(ctx.scratch()),
                                             fingerprint=os.urandom(8).hex())
    else:
        ds = datasets.Dataset.from_dict({k: [] for k in features}, features=features)
    return StepOutput(datasets.DatasetDict({"train": ds}), rejects, info=info)

