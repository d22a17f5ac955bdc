"""Manual review: contact sheets and a ``review.csv`` a person edits, applied by a step.

``ferdata review DIR`` writes, into ``DIR-review`` (or ``--out``):

* ``index.html``: links to one contact sheet per class, with counts and instructions;
* ``<class>.html``: a grid of thumbnails with the row's id, split, source and origin;
* ``thumbs/<id>.jpg``: the thumbnails (longest side ``thumb_size`` pixels);
* ``review.csv``: ``id,label,origin,decision``, one line per row, ``decision`` = ``keep``.

A reviewer changes ``decision`` to ``reject`` for the images to exclude. The step
``review_exclusions`` (``review_csv=...``; ``ferdata apply-review``) then moves the rows whose
``id``, ``parent_id`` or ``root_id`` is one of those ids to the rejects ledger with reason ``review``
(so a review of the crawl output still applies after ``crop`` gave the rows new ids), so the
manual cleaning of paper 001 is repeatable: the same CSV excludes the same images on every build.
Regenerating the sheets with ``--overwrite`` keeps the decisions already made in the existing ``review.csv``.

Example:
    >>> write_review("btfer-crawl")                                   # doctest: +SKIP
    PosixPath('btfer-crawl-review')
"""

from __future__ import annotations

import csv
import html
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferdata.errors import InputNotFound, ManifestError, UsageError
from ferdata.steps import StepContext, StepOutput, register_step

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

REVIEW_CSV = "review.csv"
REVIEW_COLUMNS = ("id", "label", "origin", "decision")
DECISIONS = ("keep", "reject")

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1em; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 8px; }}
figure {{ margin: 0; width: {width}px; font-size: 11px; word-break: break-all; }}
figure img {{ display: block; max-width: {width}px; max-height: {width}px; }}
code {{ font-size: 11px; }}
</style></head><body>
{body}
</body></html>
"""


def default_review_dir(dataset_dir: str | Path) -> Path:
    """``DIR-review`` beside the dataset directory."""
    path = Path(dataset_dir)
    return path.parent / f"{path.name}-review"


def read_review_csv(path: str | Path) -> dict[str, str]:
    """Return ``{id: decision}`` from a review CSV (``decision`` lower-cased; empty means keep).

    Raises:
        InputNotFound: when the file is missing.
        ManifestError: for a missing ``id``/``decision`` column or an unknown decision, naming the line.

    Example:
        >>> read_review_csv("btfer-crawl-review/review.csv")   # doctest: +SKIP
        {'3f2a...': 'keep', '9bc1...': 'reject'}
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFound(f"review CSV not found: {path}")
    decisions: dict[str, str] = {}
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
        if "id" not in header or "decision" not in header:
            raise ManifestError(f"{path} is not a review CSV: the header must name id and decision; "
                                f"found {','.join(header) or '(empty file)'}")
        reader.fieldnames = header
        for row in reader:
            rid = (row.get("id") or "").strip()
            decision = (row.get("decision") or "").strip().lower()
            if not rid:
                continue
            if decision not in (*DECISIONS, ""):
                raise ManifestError(f"{path} line {reader.line_num}: decision {row.get('decision')!r}; "
                                    f"allowed: {', '.join(DECISIONS)} (empty means keep)")
            decisions[rid] = decision or "keep"
    return decisions


def _thumbnail(image: Any, size: int) -> bytes:
    import io

    img = image.convert("RGB") if image.mode != "RGB" else image.copy()
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def _figure(row: dict[str, Any], split: str, width: int) -> str:
    origin = str(row.get("origin", ""))
    esc = html.escape(origin)
    link = f'<a href="{esc}" rel="noreferrer noopener">{esc}</a>' if origin.startswith(("http://", "https://")) else esc
    rid = html.escape(row["id"])
    return (f'<figure><img src="thumbs/{rid}.jpg" width="{width}" alt="{rid[:12]}" loading="lazy">'
            f'<figcaption><code title="{rid}">{rid[:12]}</code> · {html.escape(split)}<br>'
            f'{html.escape(str(row.get("source", "")))}<br>{link}</figcaption></figure>')


def write_review(
    dataset_dir: str | Path,
    out: str | Path | None = None,
    *,
    thumb_size: int = 128,
    overwrite: bool = False,
) -> Path:
    """Write contact sheets (one HTML page per class) and a ``review.csv`` template.

    Args:
        dataset_dir: a dataset directory.
        out: the review directory; default ``DIR-review``.
        thumb_size: longest side of the thumbnails, pixels.
        overwrite: replace an existing review directory, keeping its ``review.csv`` decisions.

    Returns:
        The review directory.

    Raises:
        OutputExists: when ``out`` exists and ``overwrite`` is False.
        UsageError: for a bad ``thumb_size`` or an output inside the dataset directory.

    Example:
        >>> write_review("btfer-crawl", "btfer-review")    # doctest: +SKIP
        PosixPath('btfer-review')
    """
    from ferdata.dataset import atomic_dir, label_names, open_dataset, prepare_output
    from ferdata.progress import progress

    if not isinstance(thumb_size, int) or not 16 <= thumb_size <= 1024:
        raise UsageError(f"thumb_size must be an integer 16..1024 pixels, got {thumb_size!r}")
    dd = open_dataset(dataset_dir)
    out = Path(out) if out is not None else default_review_dir(dataset_dir)
    if Path(out).resolve().is_relative_to(Path(dataset_dir).resolve()):
        raise UsageError(f"--out {out} is inside the dataset directory {dataset_dir}; choose another directory")
    prepare_output(out, overwrite=overwrite, inputs=[dataset_dir])
    previous = read_review_csv(out / REVIEW_CSV) if (out / REVIEW_CSV).is_file() else {}
    names = label_names(dd)
    with atomic_dir(out) as tmp:
        (tmp / "thumbs").mkdir()
        figures: dict[str, list[str]] = {n: [] for n in names}
        lines: list[dict[str, str]] = []
        for split, ds in dd.items():
            for row in progress(ds, desc=f"review thumbnails ({split})", total=len(ds), unit="img"):
                label = names[row["label"]] if row["label"] is not None and row["label"] >= 0 else "(none)"
                thumb = tmp / "thumbs" / f"{row['id']}.jpg"
                if not thumb.exists():
                    thumb.write_bytes(_thumbnail(row["image"], thumb_size))
                figures.setdefault(label, []).append(_figure(row, split, thumb_size))
                lines.append({"id": row["id"], "label": label, "origin": str(row.get("origin", "")),
                              "decision": previous.get(row["id"], "keep")})
        with (tmp / REVIEW_CSV).open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(REVIEW_COLUMNS))
            writer.writeheader()
            writer.writerows(lines)
        items = []
        for label, figs in figures.items():
            (tmp / f"{label}.html").write_text(_PAGE.format(
                title=html.escape(f"{label} ({len(figs)})"), width=thumb_size,
                body=f"<h1>{html.escape(label)}: {len(figs)} images</h1>"
                     f'<p><a href="index.html">all classes</a></p><div class="grid">{"".join(figs)}</div>'),
                encoding="utf-8")
            items.append(f'<li><a href="{html.escape(label)}.html">{html.escape(label)}</a>: {len(figs)}</li>')
        intro = (f"<h1>Review of {html.escape(str(dataset_dir))}</h1><ul>{''.join(items)}</ul>"
                 "<p>To exclude an image, set its <code>decision</code> to <code>reject</code> in "
                 "<code>review.csv</code> (ids are shown under each thumbnail), then run "
                 "<code>ferdata apply-review DIR review.csv --out NEW_DIR</code> or the recipe's "
                 "<code>review_exclusions</code> step.</p>")
        (tmp / "index.html").write_text(_PAGE.format(title="ferdata review", width=thumb_size, body=intro),
                                        encoding="utf-8")
    kept = sum(1 for d in previous.values() if d == "reject")
    if kept:
        logger.info("kept %d reject decisions from the previous review.csv", kept)
    return out


@dataclass
class ReviewExclusionsConfig:
    """Options of ``review_exclusions``."""

    #: the edited review.csv; empty = nothing to exclude (a build before any review)
    review_csv: str = ""
    #: accept rejected ids that match no row (else an error): e.g. a review.csv of another dataset
    allow_missing: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.review_csv, str):
            raise UsageError(f"review_csv must be a path, got {self.review_csv!r}")
        if not isinstance(self.allow_missing, bool):
            raise UsageError(f"allow_missing must be true or false, got {self.allow_missing!r}")


def _lineage_columns(ds: datasets.Dataset) -> list[str]:
    from ferdata.dataset import LINEAGE_COLUMNS

    return ["id", *(c for c in LINEAGE_COLUMNS if c in ds.column_names)]


def _mark(*columns: list[str | None], rejected: frozenset[str], details: str) -> dict[str, list[str]]:
    """Mark the rows whose ``id``, ``parent_id`` or ``root_id`` was rejected by the reviewer."""
    from ferdata.dataset import REJECT_DETAILS, REJECT_REASON

    hits = [any(x in rejected for x in ids if x) for ids in zip(*columns, strict=True)]
    return {REJECT_REASON: ["review" if h else "" for h in hits], REJECT_DETAILS: [details if h else "" for h in hits]}


@register_step("review_exclusions", ReviewExclusionsConfig)
def review_exclusions(data: datasets.DatasetDict, config: ReviewExclusionsConfig, ctx: StepContext) -> StepOutput:
    """Move the rows marked reject in a review.csv to the ledger (reason review), matched by lineage.

    A reviewed id matches a row whose ``id``, ``parent_id`` or ``root_id`` it is, so a review.csv
    written before ``crop`` or ``upscale`` (which give rows new ids) still applies. A rejected id
    that matches no row and is not in the input's ledger (removed by an earlier step) is an error,
    unless ``allow_missing``.

    Raises:
        ManifestError: for rejected ids that match nothing (without ``allow_missing``).
    """
    import json

    import datasets

    from ferdata.dataset import partition_rejects

    if not config.review_csv:
        return StepOutput(data, info={"review_csv": None, "excluded": 0})
    decisions = read_review_csv(config.review_csv)
    rejected = frozenset(i for i, d in decisions.items() if d == "reject")
    present: set[str] = set()
    for ds in data.values():
        for column in _lineage_columns(ds):
            present.update(x for x in ds[column] if x)
    earlier = {x for r in ctx.ledger for x in (r.get("id"), r.get("root_id"), r.get("parent_id")) if x}
    removed_before = (rejected - present) & earlier
    missing = sorted(rejected - present - removed_before)
    if missing and not config.allow_missing and ctx.limit is None:  # a --limit trial sees part of the rows
        raise ManifestError(f"review_exclusions: {len(missing)} rejected id(s) in {config.review_csv} match no row "
                            f"(by id, parent_id or root_id) and no earlier reject, e.g. {missing[0][:16]}; is it the "
                            "review of another dataset? pass --allow-missing (allow_missing: true) to apply it anyway")
    if missing:
        logger.warning("review_exclusions: %d rejected id(s) in %s match no row (%s)", len(missing),
                       config.review_csv, "allow_missing" if config.allow_missing else "a --limit trial")
    details = json.dumps({"review_csv": str(config.review_csv)})
    marked = datasets.DatasetDict({
        split: ds.map(_mark, batched=True, input_columns=_lineage_columns(ds),
                      num_proc=ctx.num_proc if ctx.num_proc > 1 else None,
                      fn_kwargs={"rejected": rejected, "details": details}, desc="review exclusions")
        for split, ds in data.items()
    })
    kept, rejects = partition_rejects(marked, "review_exclusions")
    return StepOutput(kept, rejects, info={"review_csv": str(config.review_csv), "reviewed": len(decisions),
                                           "rejected_in_review": len(rejected), "excluded": len(rejects),
                                           "removed_before": len(removed_before),
                                           "rejected_ids_not_found": len(missing)})


def check_review_dir(path: str | Path) -> Path:
    """Resolve a review CSV given as the file or its review directory.

    Raises:
        InputNotFound: when neither exists.
    """
    path = Path(path)
    if path.is_dir():
        path = path / REVIEW_CSV
    if not path.is_file():
        raise InputNotFound(f"review CSV not found: {path}")
    return path

