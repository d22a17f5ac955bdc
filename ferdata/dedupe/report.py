"""The groups report of the ``dedupe`` step and the summary lines the CLI prints.

The report has one row per member of every duplicate group and per row of every similar group
(:data:`REPORT_FIELDS`), written as CSV or JSON (:func:`write_groups_report`) and read back
(:func:`read_groups_report`) for :func:`format_groups`; :func:`summary_lines` turns the step's
``info`` counts into the lines ``ferdata dedupe`` prints.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ferdata.dedupe.grouping import DuplicateGroups

#: file name of the groups report written into OUT by ``ferdata dedupe --report-only``
REPORT_NAME = "dedupe_groups.csv"
REPORT_FIELDS = ("group", "group_size", "split", "index", "id", "origin", "label", "hash", "is_constant",
                 "action", "reason", "duplicate_of", "distance", "verify_score", "group_diameter",
                 "similar_group", "similar_group_size", "label_conflict", "new_label")


def report_rows(groups: DuplicateGroups) -> list[dict[str, Any]]:
    """The groups report: every member of a duplicate group, and every row of a similar group.

    Ordered by similar group, then group, the survivor first, then dataset order; one dict per
    row with the keys of :data:`REPORT_FIELDS`.
    """
    comp, survivor = groups.comp, groups.survivor
    reported = np.nonzero(groups.in_group | groups.linked)[0]
    order = sorted(reported.tolist(), key=lambda r: (groups.similar_id[comp[r]], groups.group_id[comp[r]],
                                                      r != survivor[r], r))
    return [_report_row(groups, row) for row in order]


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
    }


def write_groups_report(groups: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write the groups report as CSV (one row per group member) or JSON (a list), by extension."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(list(groups), indent=1), encoding="utf-8")
    else:
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(REPORT_FIELDS))
            writer.writeheader()
            writer.writerows(groups)
    return path


def read_groups_report(path: str | Path) -> list[dict[str, Any]]:
    """Read a groups report written by :func:`write_groups_report` (CSV values stay strings)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return json.loads(path.read_text(encoding="utf-8"))
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
    lines = [f"groups: {info.get('groups', 0)} ({info.get('rows_in_groups', 0)} rows), exact duplicate rows "
             f"{info.get('exact_duplicate_rows', 0)}, label conflicts {info.get('label_conflict_groups', 0)}, "
             f"constant images {info.get('constant_images', 0)}"]
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
