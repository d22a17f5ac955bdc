"""``ferdata report``: one self-contained HTML page of a dataset or run directory.

The page opens offline (no CDN, no server, no request outside the file: thumbnails are data URIs,
or files beside it with ``loading="lazy"`` under ``assets=True``) and shows every verdict the
pipeline made, each section only when its columns or files exist:

data card · pipeline funnel · class distribution per split · sample grid per class x split ·
duplicates (cross-split groups first, survivor marked in text and border) · rejects (step x
reason, examples from the ledger thumbnails) · quality histograms with thresholds · label suspects
(given x predicted matrix linked to galleries) · super-resolution pairs · face crops · and, for a
run directory, learning curves, confusion matrices, per-class P/R/F1 and refinement rounds.

Review in the page: clicking a tile marks it *reject* (a suspect can also be marked *keep*);
"Save review.csv" downloads the decisions as ``id,label,origin,decision`` — the format
``ferdata apply-review`` and the ``review_exclusions`` step read.

Counts and histograms come from the Arrow columns; only the rows shown are decoded. Templates
are Jinja2 with autoescape on: crawled URLs and captions are untrusted text.

Example:
    >>> from ferdata.report import write_report
    >>> result = write_report("fer2013-improved")          # doctest: +SKIP
    >>> result.path, round(result.bytes / 1e6, 1)           # doctest: +SKIP
    (PosixPath('fer2013-improved/report.html'), 2.1)
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferdata.errors import InputNotFound, NotADatasetDir, UsageError

logger = logging.getLogger(__name__)

REPORT_FILE = "report.html"
#: Default size budget (MB): the command warns past it.
DEFAULT_BUDGET_MB = 10.0
DEFAULT_PER_CLASS = 24
SECTION_IDS = ("card", "funnel", "distribution", "samples", "duplicates", "similar", "rejects", "quality", "suspects", "sr",
               "faces", "run")


@dataclass
class ReportResult:
    """What :func:`write_report` wrote."""

    path: Path
    #: bytes of the HTML file plus its assets
    bytes: int
    images: int
    seconds: float
    sections: list[str]
    warnings: list[str] = field(default_factory=list)


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("ferdata.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2", "html.j2"], default=True),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)

    def num(value: Any, digits: int = 3) -> str:
        if value is None or value == "":
            return "–"
        if isinstance(value, bool):
            return str(value)
        if isinstance(value, int):
            return f"{value:,}"
        if isinstance(value, float):
            return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}g}"
        try:
            return num(float(value), digits) if "." in str(value) else num(int(value), digits)
        except (TypeError, ValueError):
            return str(value)

    env.filters["num"] = num
    env.filters["tojson_compact"] = lambda v: json.dumps(v, sort_keys=True, default=str)
    return env


def _check_options(per_class: int, budget_mb: float) -> None:
    if isinstance(per_class, bool) or not isinstance(per_class, int) or not 0 <= per_class <= 1000:
        raise UsageError(f"--per-class must be an integer 0..1000, got {per_class!r}")
    if not isinstance(budget_mb, int | float) or budget_mb <= 0:
        raise UsageError(f"budget_mb must be a positive number of megabytes, got {budget_mb!r}")


def write_report(
    path: str | Path,
    out: str | Path | None = None,
    *,
    per_class: int = DEFAULT_PER_CLASS,
    assets: bool = False,
    seed: int = 0,
    before: str | Path | Any | None = None,
    budget_mb: float = DEFAULT_BUDGET_MB,
    title: str | None = None,
    review: bool = True,
    name: str | None = None,
) -> ReportResult:
    """Write the HTML report of a dataset directory or of a train/evaluate/refine run directory.

    Args:
        path: a dataset directory, or a run directory (``run.json``/``metrics.json``/``rounds.csv``;
            a refine run's ``RUN/dataset`` is reported too).
        out: the HTML file; default ``PATH/report.html``.
        per_class: sample tiles per class and split (0: no sample grid).
        assets: write the thumbnails as files in ``<out stem>_files/`` beside the page (lazy-loaded)
            instead of embedding them; for very large reports.
        seed: seed of the samples (the same seed shows the same rows).
        before: the dataset directory (or ``DatasetDict``) before an ``upscale`` step, for the
            super-resolution pairs (without it, an imported fer2013.csv that still exists is read).
        budget_mb: a warning is returned when the report is larger.
        title: the page title (default: the dataset's name).
        name: the dataset's name as its reader knows it, shown in the title and header (default: the
            directory's name; a build passes its final output's, never its temporary folder's).
        review: make tiles clickable to mark rejects and save a review.csv.

    Returns:
        A :class:`ReportResult` (path, size in bytes, images, seconds, sections, warnings).

    Raises:
        InputNotFound: when ``path`` does not exist.
        NotADatasetDir: when it is neither a dataset nor a run directory.
        UsageError: for a bad option value.

    Example:
        >>> write_report("fer2013", per_class=12).sections   # doctest: +SKIP
        ['card', 'funnel', 'distribution', 'samples', 'duplicates', 'rejects', 'quality']
    """
    from ferdata.report import collect
    from ferdata.report.images import ImageStore

    start = time.perf_counter()
    _check_options(per_class, budget_mb)
    path = Path(path)
    shown, where = name or path.name, name or str(path)
    out, data_dir = _check_paths(path, out)
    run = collect.run_sections(path) if collect.is_run_dir(path) else None
    if data_dir is None and run is None:
        raise NotADatasetDir(f"{path} is neither a dataset directory (no dataset_dict.json) nor a run directory "
                             "(no run.json, metrics.json, rounds.csv, history.csv or confusion.csv)")
    assets_dir = out.parent / f"{out.stem}_files" if assets else None
    tmp_assets = None
    if assets_dir is not None:
        tmp_assets = out.parent / f".{out.stem}_files.tmp"
        shutil.rmtree(tmp_assets, ignore_errors=True)
    store = ImageStore(tmp_assets, assets_href=f"{out.stem}_files") if assets else ImageStore()
    warnings: list[str] = []
    sections: dict[str, Any] = {}
    if data_dir is not None:
        sections = _dataset_sections(data_dir, store, warnings, per_class=per_class, seed=seed, before=before,
                                     review=review)
    if run is not None:
        sections["run"] = run
    html = _environment().get_template("report.html.j2").render(
        title=title or shown, path=where, sections=sections, lazy=assets, review=review and store.count > 0,
        per_class=per_class, version=_version(), warnings=warnings)
    size = _write_page(out, html, assets_dir, tmp_assets)
    if size > budget_mb * 1e6:
        warnings.append(f"report is {size / 1e6:.1f} MB, over the {budget_mb:g} MB budget; lower --per-class or "
                        "use --assets")
    if store.failed:
        warnings.append(f"{store.failed} image(s) could not be decoded and are shown as text")
    return ReportResult(out, size, store.count, round(time.perf_counter() - start, 3), list(sections), warnings)


def _check_paths(path: Path, out: str | Path | None) -> tuple[Path, Path | None]:
    """The report file to write and the dataset directory to read (the run's ``dataset/``, or none)."""
    if not path.exists():
        raise InputNotFound(f"directory not found: {path}")
    if not path.is_dir():
        raise NotADatasetDir(f"{path} is a file; give a dataset or run directory")
    out = Path(out) if out is not None else path / REPORT_FILE
    if out.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"--out {out} must be an .html file")
    if out.exists() and out.is_dir():
        raise UsageError(f"--out {out} is a directory; give the .html file to write")
    data_dir = path if (path / "dataset_dict.json").exists() else (
        path / "dataset" if (path / "dataset" / "dataset_dict.json").exists() else None)
    return out, data_dir


def _dataset_sections(data_dir: Path, store: Any, warnings: list[str], *, per_class: int, seed: int, before: Any,
                      review: bool) -> dict[str, Any]:
    """Every section of a dataset directory; a section that fails is named in ``warnings``, the others render."""
    from ferdata.dataset import open_dataset, read_manifest, read_rejects
    from ferdata.report import collect

    dd = open_dataset(data_dir)
    manifest = read_manifest(data_dir)
    try:
        ledger = read_rejects(data_dir)
    except Exception as e:  # an unreadable ledger must not hide the rest
        warnings.append(f"rejects ledger of {data_dir} not readable: {e}")
        ledger = []
    before_dd = None
    if before is not None:
        before_dd = open_dataset(before) if isinstance(before, str | Path) else before
    ctx = collect.Context(dd, manifest, ledger, store, seed=seed, review=review)
    sections: dict[str, Any] = {"card": collect.data_card(ctx, data_dir)}
    builders = (("funnel", lambda: collect.funnel(ctx)), ("distribution", lambda: collect.distribution(ctx)),
                ("samples", lambda: collect.samples(ctx, per_class)), ("duplicates", lambda: collect.duplicates(ctx)),
                ("similar", lambda: collect.similar(ctx)),
                ("rejects", lambda: collect.rejects(ctx)), ("quality", lambda: collect.quality(ctx)),
                ("suspects", lambda: collect.suspects(ctx)), ("sr", lambda: collect.sr_pairs(ctx, before=before_dd)),
                ("faces", lambda: collect.faces(ctx)))
    for name, build in builders:
        try:
            value = build()
        except Exception as e:  # a section that fails is named, the others still render
            logger.warning("report: section %s failed: %s", name, e, exc_info=logger.isEnabledFor(logging.DEBUG))
            warnings.append(f"section {name} not shown: {type(e).__name__}: {e}")
            value = None
        if value:
            sections[name] = value
    return sections


def _write_page(out: Path, html: str, assets_dir: Path | None, tmp_assets: Path | None) -> int:
    """Write the page (and move its assets folder) into place; its size in bytes, assets included."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp"
    tmp.write_text(html, encoding="utf-8")
    if assets_dir is not None and tmp_assets is not None:
        shutil.rmtree(assets_dir, ignore_errors=True)
        if tmp_assets.exists():
            tmp_assets.rename(assets_dir)
    tmp.replace(out)
    return out.stat().st_size + (sum(f.stat().st_size for f in assets_dir.iterdir()) if assets_dir and
                                 assets_dir.exists() else 0)


def _version() -> str:
    from ferdata import __version__

    return __version__


__all__ = ["write_report", "ReportResult", "REPORT_FILE", "SECTION_IDS", "DEFAULT_PER_CLASS", "DEFAULT_BUDGET_MB"]
