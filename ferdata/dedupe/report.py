"""The groups report of the ``dedupe`` step and the summary lines the CLI prints.

The report has one row per member of every duplicate group and per row of every similar group
(:data:`REPORT_FIELDS`), written as CSV or JSON (:func:`write_groups_report`) and read back
(:func:`read_groups_report`) for :func:`format_groups`; :func:`summary_lines` turns the step's
``info`` counts into the lines ``ferdata dedupe`` prints.

Given the step's dataset, :func:`report_rows` also takes each member's picture at dedupe time (a
``thumbnail`` column, written to a parquet copy beside the CSV so the CSV stays readable) and its
``root_id``; :func:`add_survivor_evidence` copies the survivor's picture and ``root_id`` into the
ledger rows of the members removed in its favour. The ledger is what every later
dataset directory carries, so a report at the end of a chain (crop, upscale, split, balance after
dedupe) still shows both sides of a pair as the step compared them.
"""

from __future__ import annotations

import base64
import csv
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ferdata.columns import (
    DUPLICATE_OF,
    DUPLICATE_REASONS,
    GROUP_THUMBNAIL,
    ID,
    IMAGE,
    ROOT_ID,
    SURVIVOR_ROOT_ID,
    SURVIVOR_SPLIT,
    SURVIVOR_THUMBNAIL,
)
from ferdata.dataset import column_values

if TYPE_CHECKING:
    import datasets

    from ferdata.dedupe.grouping import DuplicateGroups

#: file name of the groups report written into OUT by ``ferdata dedupe --report-only``
REPORT_NAME = "dedupe_groups.csv"
REPORT_FIELDS = ("group", "group_size", "split", "index", "id", "origin", "label", "hash", "is_constant",
                 "action", "reason", "duplicate_of", "distance", "verify_score", "group_diameter",
                 "similar_group", "similar_group_size", "label_conflict", "new_label", "survivor_split", "root_id")
#: the parquet copy of a CSV groups report: the same rows (as text) plus each member's picture at dedupe time
THUMBNAILS_SUFFIX = ".parquet"


def report_rows(groups: DuplicateGroups, *, data: datasets.DatasetDict | None = None) -> list[dict[str, Any]]:
    """The groups report: every member of a duplicate group, and every row of a similar group.

    Ordered by similar group, then group, the survivor first, then dataset order; one dict per
    row with the keys of :data:`REPORT_FIELDS`.

    Args:
        groups: the step's decisions.
        data: the dataset the step grouped (its splits in the order of ``groups.rows``); with it,
            each row also gets ``root_id`` and ``thumbnail`` (its picture now, at dedupe time: a
            small JPEG, see :func:`ferdata.dataset.ledger_thumbnail`).
    """
    comp, survivor = groups.comp, groups.survivor
    reported = np.nonzero(groups.in_group | groups.linked)[0]
    order = sorted(reported.tolist(), key=lambda r: (groups.similar_id[comp[r]], groups.group_id[comp[r]],
                                                      r != survivor[r], r))
    rows = [_report_row(groups, row) for row in order]
    if data is not None:
        add_report_pictures(rows, data)
    return rows


def add_report_pictures(rows: Sequence[dict[str, Any]], data: datasets.DatasetDict) -> None:
    """Give report rows their ``root_id`` and ``thumbnail`` (read undecoded from their ``split`` and
    ``index`` in ``data``, the dataset the step grouped). Rows are changed in place."""
    by_split: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_split[str(row["split"])].append(row)
    for split, members in by_split.items():
        pictures = _pictures(data[split], [int(m["index"]) for m in members])
        for m, (root, thumb) in zip(members, pictures, strict=True):
            m[ROOT_ID] = root or m[ID]  # a row made before lineage existed is its own root
            m[GROUP_THUMBNAIL] = thumb


def _pictures(ds: datasets.Dataset, index: list[int]) -> list[tuple[str | None, bytes | None]]:
    """(root_id, ledger thumbnail) of rows ``index`` of ``ds``; images are read undecoded from Arrow."""
    import datasets

    from ferdata.dataset import ledger_thumbnail

    if not index:
        return []
    roots = ds.select_columns([ROOT_ID]).select(index)[ROOT_ID] if ROOT_ID in ds.column_names else [None] * len(index)
    images: list[Any] = [None] * len(index)
    if IMAGE in ds.column_names and isinstance(ds.features[IMAGE], datasets.Image):
        images = ds.select_columns([IMAGE]).select(index).cast_column(IMAGE, datasets.Image(decode=False))[IMAGE]
    return [(root, ledger_thumbnail(image) if image else None) for root, image in zip(roots, images, strict=True)]


def add_survivor_evidence(rejects: Sequence[dict[str, Any]], data: datasets.DatasetDict) -> int:
    """Copy each survivor's picture and lineage root into the ledger rows of the duplicates removed in its favour.

    ``rejects`` are the dedupe step's ledger rows (their ``details`` name the survivor as
    ``duplicate_of``); ``data`` is the dataset the step grouped, which holds every survivor unchanged.
    The details get :data:`~ferdata.columns.SURVIVOR_ROOT_ID`, :data:`~ferdata.columns.SURVIVOR_THUMBNAIL`
    (base64 of a small JPEG, :func:`ferdata.dataset.ledger_thumbnail`) and, when missing, the
    survivor's split. The ledger is what every later dataset directory carries, so a report at the end
    of a chain shows both sides of a pair as the step compared them, and finds the survivor again by
    its root after later steps change its pixels. Rows are changed in place; running it twice
    changes nothing more.

    Returns:
        The number of ledger rows that got the survivor's picture.

    Example:
        >>> result = dedupe_dataset(dd)                          # doctest: +SKIP
        >>> add_survivor_evidence(result.rejects, dd)            # doctest: +SKIP
        3
    """
    todo: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for row in rejects:
        if row.get("reason") not in DUPLICATE_REASONS:
            continue
        text = row.get("details")
        details = json.loads(text) if isinstance(text, str) and text else dict(text or {})
        if details.get(DUPLICATE_OF):
            todo.append((row, details))
    wanted = {str(d[DUPLICATE_OF]) for _, d in todo}
    found: dict[str, tuple[str, int]] = {}
    for split, ds in data.items():
        if len(found) == len(wanted):
            break
        if ID not in ds.column_names:
            continue
        for i, x in enumerate(column_values(ds, ID)):
            if x in wanted and x not in found:
                found[x] = (split, i)
    evidence: dict[str, tuple[str, str | None, bytes | None]] = {}
    for split in data:
        ids = [rid for rid, (s, _) in found.items() if s == split]
        for rid, (root, thumb) in zip(ids, _pictures(data[split], [found[rid][1] for rid in ids]), strict=True):
            evidence[rid] = (split, root or rid, thumb)
    n = 0
    for row, details in todo:
        got = evidence.get(str(details[DUPLICATE_OF]))
        if got is None:
            continue
        split, root, thumb = got
        details.setdefault(SURVIVOR_SPLIT, split)
        details[SURVIVOR_ROOT_ID] = root
        if thumb is not None:
            details[SURVIVOR_THUMBNAIL] = base64.b64encode(thumb).decode("ascii")
            n += 1
        row["details"] = json.dumps(details, sort_keys=True, default=str)
    return n


def survivor_thumbnail(details: dict[str, Any]) -> bytes | None:
    """The survivor's picture at dedupe time stored in a ledger row's details (None when absent or bad)."""
    text = details.get(SURVIVOR_THUMBNAIL)
    if not isinstance(text, str) or not text:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        return None


def _report_row(groups: DuplicateGroups, row: int) -> dict[str, Any]:
    """The report row of ``row`` (see :data:`REPORT_FIELDS`)."""
    rows = groups.rows
    s, c = int(groups.survivor[row]), groups.comp[row]
    score = groups.score[row]
    return {
        "group": groups.group_id[c], "group_size": int(groups.size[row]), "split": rows.splits[rows.split_of[row]],
        "index": int(rows.index_in_split[row]), "id": rows.ids[row], "origin": rows.origins[row],
        "label": rows.label_name(rows.labels[row]), "hash": f"{int(rows.hashes[row]):016x}",
        "is_constant": bool(rows.const[row]), "action": groups.action[row], "reason": groups.reason[row],
        "duplicate_of": rows.ids[s] if row != s else "", "distance": int(groups.distance[row]),
        "verify_score": "" if np.isnan(score) else round(float(score), 4),
        "group_diameter": int(groups.diameter[c]), "similar_group": groups.similar_id[c],
        "similar_group_size": int(groups.similar_size[row]), "label_conflict": bool(groups.conflict_rows[row]),
        "new_label": rows.label_name(groups.new_label[row]) if groups.new_label[row] != rows.labels[row] else "",
        "survivor_split": rows.splits[rows.split_of[s]], "root_id": "",
    }


def write_groups_report(groups: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write the groups report as CSV (one row per group member) or JSON (a list), by extension.

    The pictures (``thumbnail``, present when :func:`report_rows` had the data) never go into the
    text: they are written to a parquet copy beside it (``dedupe_groups.parquet`` beside
    ``dedupe_groups.csv``: every column of the report as text, plus ``thumbnail`` as JPEG bytes).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text_rows = [{k: v for k, v in row.items() if k != GROUP_THUMBNAIL} for row in groups]
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(text_rows, indent=1), encoding="utf-8")
    else:
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(REPORT_FIELDS), restval="", extrasaction="ignore")
            writer.writeheader()
            writer.writerows(text_rows)
    if any(row.get(GROUP_THUMBNAIL) for row in groups):
        _write_thumbnails(groups, path.with_suffix(THUMBNAILS_SUFFIX))
    return path


def _write_thumbnails(groups: Sequence[dict[str, Any]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {k: pa.array(["" if row.get(k) is None else str(row.get(k)) for row in groups], type=pa.string())
               for k in REPORT_FIELDS}
    columns[GROUP_THUMBNAIL] = pa.array([row.get(GROUP_THUMBNAIL) for row in groups], type=pa.binary())
    pq.write_table(pa.table(columns), str(path))


def read_groups_report(path: str | Path) -> list[dict[str, Any]]:
    """Read a groups report written by :func:`write_groups_report` (CSV values stay strings).

    A ``.parquet`` path reads the copy with pictures (rows also have ``thumbnail``: JPEG bytes or None).
    """
    path = Path(path)
    if path.suffix.lower() == ".json":
        return json.loads(path.read_text(encoding="utf-8"))
    if path.suffix.lower() == THUMBNAILS_SUFFIX:
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def format_groups(rows: Sequence[dict[str, Any]], *, limit: int = 10) -> list[str]:
    """One line per group (at most ``limit``): each member as ``split#index label action``.

    Example:
        >>> format_groups([{"group": "ab12cd34ef", "split": "test", "index": 3, "label": "happy",
        ...                 "action": "keep", "reason": "", "distance": 0},
        ...                {"group": "ab12cd34ef", "split": "train", "index": 7, "label": "happy",
        ...                 "action": "remove", "reason": "near_duplicate", "distance": 6}])
        ['ab12cd34ef  test#3 happy keep | train#7 happy remove (near_duplicate, d=6)']
    """
    by_group: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_group[str(row["group"])].append(row)
    # rows reported only for their similar group are singletons here: not duplicate groups
    by_group = {g: m for g, m in by_group.items() if len(m) > 1 or m[0].get("action") != "keep"}
    lines = []
    for group, members in list(by_group.items())[:limit]:
        parts = [f"{m['split']}#{m['index']} {m['label']} {m['action']}"
                 + (f" ({m['reason']}, d={m['distance']})" if m.get("reason") else "") for m in members]
        lines.append(f"{group[:10]}  " + " | ".join(parts))
    if len(by_group) > limit:
        lines.append(f"... {len(by_group) - limit} more groups")
    return lines


def summary_lines(info: dict[str, Any], report: Path) -> list[str]:
    """The lines ``ferdata dedupe`` prints from the step's ``info``: groups, verifier, leakage, report.

    Example:
        >>> summary_lines({"groups": 2, "rows_in_groups": 5, "verify": "none"}, Path("g.csv"))[0]
        'groups: 2 (5 rows), exact duplicate rows 0, label conflicts 0, constant images 0'
    """
    lines = []
    for entry in info.get("against", []):
        if entry.get("empty"):
            lines.append(f"against {entry['against']}: no rows; nothing removed as contamination")
            continue
        lines.append(f"against {entry['against']}: {entry.get('contaminated', 0)} rows are its photos "
                     f"(same pixels {entry.get('same_pixels', 0)}, same root {entry.get('same_root', 0)}, "
                     f"verified near copies {entry.get('near', 0)} of {entry.get('candidate_pairs', 0)} candidate "
                     f"pairs), compared with its {entry.get('rows', 0)} rows"
                     + ("" if entry.get("hashes_reused") else " (hashed for this run, not written into it)"))
    if info.get("within") is False:
        if info.get("report_only"):
            would = info.get("would_remove", {})
            lines.append("would remove: " + (", ".join(f"{k} {v}" for k, v in would.items()) or "nothing"))
        return lines
    lines.append(f"groups: {info.get('groups', 0)} ({info.get('rows_in_groups', 0)} rows), exact duplicate rows "
                 f"{info.get('exact_duplicate_rows', 0)}, label conflicts {info.get('label_conflict_groups', 0)}, "
                 f"constant images {info.get('constant_images', 0)}")
    if info.get("verify", "none") != "none":
        lines.append(f"verifier {info['verify']}: {info.get('verified_pairs', 0)} of {info.get('near_hash_pairs', 0)} "
                     f"candidate pairs scored, {info.get('rejected_by_verifier', 0)} rejected (score < "
                     f"{info.get('min_score')} + {info.get('score_rise', 0)}/bit beyond 10 bits); similar groups "
                     f"(look-alikes linked to one anchor; kept) "
                     f"{info.get('similar_groups', 0)} ({info.get('similar_rows', 0)} rows)")
    leakage = info.get("leakage_groups", {})
    if leakage:
        lines.append("split leakage (groups): " + ", ".join(f"{k} {v}" for k, v in leakage.items()))
    similar_leakage = info.get("similar_leakage_groups", {})
    if similar_leakage:
        lines.append("split leakage (similar groups): " + ", ".join(f"{k} {v}" for k, v in similar_leakage.items()))
    if info.get("report_only"):
        would = info.get("would_remove", {})
        lines.append("would remove: " + (", ".join(f"{k} {v}" for k, v in would.items()) or "nothing")
                     + f"; groups report: {report}")
    return lines
