"""What each report section shows, gathered from a dataset or run directory.

Every function returns a plain dict (or None when its columns/files are absent), which the Jinja2
template renders. Counts, histograms and groupings come from Arrow columns and the ledger's text
columns; only the rows a section shows are decoded (through :class:`~ferdata.report.images.ImageStore`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np

from ferdata.columns import (
    DUPLICATE_DISTANCE,
    DUPLICATE_OF,
    DUPLICATE_REASON,
    DUPLICATE_REASONS,
    GROUP,
    GROUP_SIZE,
    IS_DUPLICATE,
    LABEL_CONFIDENCE,
    LABEL_DISAGREEMENT,
    LABEL_ORIGINAL,
    PARENT_ID,
    RELABEL_CONFIDENCE,
    RELABELED,
    ROOT_ID,
    SIMILAR_GROUP,
    SURVIVOR_LABEL,
    SURVIVOR_ROOT_ID,
    SURVIVOR_SPLIT,
    SUSPECT_LABEL,
    THUMBNAIL,
    TOP1_CONFIDENCE,
    TOP1_LABEL,
    TOP2_CONFIDENCE,
    TOP2_LABEL,
)
from ferdata.report.charts import PALETTE, histogram, line_chart
from ferdata.report.images import ImageStore, raw_images

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

#: quality check -> (parameter holding its threshold in the quality step, flagged when "below"/"above")
QUALITY_THRESHOLDS = {
    "dark": ("dark_threshold", "below"), "light": ("light_threshold", "above"),
    "blurry": ("blurry_threshold", "below"), "low_information": ("low_information_threshold", "below"),
    "too_small": ("min_side", "below"), "odd_aspect": ("max_aspect", "above"),
}


def column(ds: datasets.Dataset, name: str) -> list[Any]:
    """A column as Python values, read from Arrow (images never decoded)."""
    if name not in ds.column_names:
        return [None] * len(ds)
    if ds._indices is None:
        return ds.data.column(name).to_pylist()
    return ds.select_columns([name]).with_format("arrow")[:][name].to_pylist()


def short(rid: Any) -> str:
    """The short form of an id shown in captions (first 8 characters)."""
    return str(rid or "")[:8]


def _details(text: Any) -> dict[str, Any]:
    if isinstance(text, dict):
        return text
    try:
        value = json.loads(text) if text else {}
    except (TypeError, ValueError):
        return {"text": str(text)}
    return value if isinstance(value, dict) else {"value": value}


class Context:
    """The dataset being reported: splits, label names, row lookup by id, images, the ledger."""

    def __init__(self, dd: datasets.DatasetDict, manifest: dict[str, Any], rejects: list[dict[str, Any]],
                 store: ImageStore, *, seed: int = 0, side: int = 96, review: bool = True) -> None:
        import datasets

        self.dd, self.manifest, self.rejects, self.store = dd, manifest, rejects, store
        self.seed, self.side, self.review = seed, side, review
        first = next(iter(dd.values())) if len(dd) else None
        feature = first.features.get("label") if first is not None else None
        self.names: list[str] = list(feature.names) if isinstance(feature, datasets.ClassLabel) else \
            list(manifest.get("label_names") or [])
        self._cols: dict[tuple[str, str], list[Any]] = {}
        self._index: dict[str, tuple[str, int]] | None = None

    def col(self, split: str, name: str) -> list[Any]:
        key = (split, name)
        if key not in self._cols:
            self._cols[key] = column(self.dd[split], name)
        return self._cols[key]

    def has(self, name: str) -> bool:
        return any(name in ds.column_names for ds in self.dd.values())

    def label_name(self, value: Any) -> str:
        if isinstance(value, str) and not value.lstrip("-").isdigit():
            return value
        try:
            k = int(value)
        except (TypeError, ValueError):
            return "(none)" if value is None else str(value)
        return self.names[k] if 0 <= k < len(self.names) else ("(none)" if k < 0 else str(k))

    def find(self, rid: str) -> tuple[str, int] | None:
        """(split, row) of the first row with ``id`` = rid."""
        if self._index is None:
            self._index = {}
            for split in self.dd:
                for i, x in enumerate(self.col(split, "id")):
                    self._index.setdefault(x, (split, i))
        return self._index.get(rid)

    def tiles(self, split: str, rows: list[int], *, extra: list[list[str]] | None = None,
              cls: list[str] | None = None, side: int | None = None) -> list[dict[str, Any]]:
        """Tiles (src, alt, caption) of rows of a split; decodes only these rows."""
        if not rows:
            return []
        raws = raw_images(self.dd[split], rows)
        ids, labels = self.col(split, "id"), self.col(split, "label")
        sources, origins = self.col(split, "source"), self.col(split, "origin")
        votes = self.col(split, "ferplus_votes") if "ferplus_votes" in self.dd[split].column_names else None
        out = []
        for k, (row, raw) in enumerate(zip(rows, raws, strict=True)):
            rid = ids[row] or ""
            label = self.label_name(labels[row])
            lines = list((extra or [[]] * len(rows))[k])
            if votes is not None and votes[row] is not None and not any(x.startswith("FER+") for x in lines):
                lines.append(_ferplus(votes[row]))
            out.append(self.tile(raw, rid=rid, split=split, label=label, source=sources[row] or "",
                                 origin=origins[row] or "", extra=lines,
                                 cls=(cls or [""] * len(rows))[k], side=side))
        return out

    def tile(self, raw: Any, *, rid: str, split: str, label: str, source: str, origin: str,
             extra: list[str] | None = None, cls: str = "", side: int | None = None, head: str | None = None,
             key: str | None = None) -> dict[str, Any]:
        """A tile of an image value; ``head`` replaces the first caption line (``split · id``), ``key``
        the image cache key (a picture of ``rid`` other than its row's: e.g. from another stage)."""
        side = side or self.side
        src = self.store.src(raw, key=key or (f"{rid}:{split}" if rid else ""), side=side)
        lines = [head if head is not None else f"{split} · {short(rid)}", source] + list(extra or [])
        return {"src": src, "alt": f"{label} face, {split} split, id {short(rid)}, from {source or 'unknown source'}",
                "lines": [x for x in lines if x], "id": rid, "label": label, "origin": origin, "split": split,
                "cls": cls, "side": side, "review": self.review and bool(rid)}


# ---------------------------------------------------------------- dataset sections

def data_card(ctx: Context, path: Path) -> dict[str, Any]:
    """Datasheet order: what, provenance, recipe/seed, versions, labels, class weights, licence."""
    m = ctx.manifest
    sources: Counter[str] = Counter()
    origin_kinds: Counter[str] = Counter()
    engines: Counter[str] = Counter()
    queries: Counter[str] = Counter()
    for split in ctx.dd:
        sources.update(str(s) for s in ctx.col(split, "source"))
        for o in ctx.col(split, "origin"):
            o = str(o or "")
            if o.startswith(("http://", "https://")):
                origin_kinds[f"web: {urlparse(o).netloc}"] += 1
            else:
                base = o.split("#", 1)[0]
                origin_kinds[f"file: {base}" if "#" in o else ("file: " + (Path(base).parts[0] if base else "(none)"))] += 1
        if "engine" in ctx.dd[split].column_names:
            engines.update(str(e) for e in ctx.col(split, "engine"))
        if "query" in ctx.dd[split].column_names:
            queries.update(str(q) for q in ctx.col(split, "query"))
    recipe = m.get("recipe") or {}
    total = sum(len(ds) for ds in ctx.dd.values())
    weights = m.get("class_weights") or {}
    weight_rows = []
    for split, methods in (weights.items() if isinstance(weights, dict) else []):
        for method, w in (methods.items() if isinstance(methods, dict) else []):
            weight_rows.append({"split": split, "method": method,
                                "values": [w.get(n) if isinstance(w, dict) else None for n in ctx.names]})
    return {
        "name": recipe.get("name") or path.name, "description": recipe.get("description") or "",
        "rows": total, "splits": {s: len(ds) for s, ds in ctx.dd.items()}, "created": m.get("created", ""),
        "format": m.get("format", ""), "trial": bool(m.get("trial")),
        "sources": sources.most_common(), "origins": origin_kinds.most_common(12),
        "more_origins": max(0, len(origin_kinds) - 12), "engines": engines.most_common(),
        "queries": queries.most_common(12), "more_queries": max(0, len(queries) - 12),
        "recipe": recipe.get("name") or "single commands", "variables": recipe.get("variables") or {},
        "seed": m.get("seed"), "build_seconds": m.get("build_seconds"),
        "versions": m.get("versions") or {}, "label_names": ctx.names, "class_weights": weight_rows,
        "license": m.get("license") or m.get("licence") or "",
        "columns": list(next(iter(ctx.dd.values())).column_names) if len(ctx.dd) else [],
    }


def funnel(ctx: Context) -> dict[str, Any] | None:
    """Per step: rows in, kept, rejected by reason (from ``ferdata.json``)."""
    steps = [s for s in ctx.manifest.get("steps", []) if isinstance(s, dict)]
    if not steps:
        return None
    top = max([int(s.get("input_rows") or 0) for s in steps] + [int(s.get("kept") or 0) for s in steps] + [1])
    rows = []
    for s in steps:
        kept, rejected = int(s.get("kept") or 0), int(s.get("rejected") or 0)
        reasons = sorted((s.get("rejected_by_reason") or {}).items(), key=lambda kv: -kv[1])
        rows.append({"step": s.get("step", "?"), "input": int(s.get("input_rows") or 0), "kept": kept,
                     "rejected": rejected, "reasons": reasons, "seconds": s.get("seconds"),
                     "kept_pct": 100 * kept / top, "rejected_pct": 100 * rejected / top,
                     "limited_out": s.get("limited_out") or 0})
    return {"rows": rows}


def distribution(ctx: Context) -> dict[str, Any] | None:
    """Rows per class per split, with the imbalance ratio (largest / smallest class)."""
    if not ctx.names or not ctx.has("label"):
        return None
    splits = []
    for split in ctx.dd:
        counts = Counter(ctx.col(split, "label"))
        values = [int(counts.get(i, 0)) for i in range(len(ctx.names))]
        nonzero = [v for v in values if v]
        top = max(values + [1])
        ratio = (max(nonzero) / min(nonzero)) if nonzero else None
        splits.append({"split": split, "total": sum(values), "ratio": ratio,
                       "empty": [n for n, v in zip(ctx.names, values, strict=True) if not v],
                       "classes": [{"name": n, "count": v, "pct": 100 * v / top}
                                   for n, v in zip(ctx.names, values, strict=True)]})
    return {"splits": splits, "names": ctx.names}


def samples(ctx: Context, per_class: int) -> dict[str, Any] | None:
    """A seeded sample of each class in each split."""
    if not ctx.names or per_class <= 0:
        return None
    groups = []
    for s_i, split in enumerate(ctx.dd):
        labels = np.array([(-1 if x is None else x) for x in ctx.col(split, "label")], dtype=np.int64)
        for k, name in enumerate(ctx.names):
            rows = np.nonzero(labels == k)[0]
            if not len(rows):
                continue
            rng = np.random.default_rng([ctx.seed, s_i, k])
            pick = np.sort(rng.choice(rows, size=min(per_class, len(rows)), replace=False)).tolist()
            groups.append({"split": split, "label": name, "total": int(len(rows)), "anchor": f"samples-{split}-{k}",
                           "tiles": ctx.tiles(split, pick)})
    return {"groups": groups, "per_class": per_class} if groups else None


def _split_step_after_dedupe(manifest: dict[str, Any]) -> bool:
    """Whether a ``split`` step ran after the first ``dedupe`` step (split names at dedupe then mean another partition)."""
    names = [str(s.get("step")) for s in manifest.get("steps", []) if isinstance(s, dict)]
    return "dedupe" in names and "split" in names[names.index("dedupe") + 1:]


class _Lineage:
    """Where a row the dedupe step kept is now: a row of the final dataset, or a later ledger row."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._roots: dict[str, tuple[str, int]] | None = None
        self._ledger: dict[tuple[str, str], list[int]] | None = None

    def in_data(self, rid: str, root: str | None) -> tuple[str, int] | None:
        """(split, row) of the row with ``id`` = rid, else of the first row descending from ``root``."""
        found = self.ctx.find(rid) if rid else None
        if found is not None or not root:
            return found
        if self._roots is None:
            self._roots = {}
            for split in self.ctx.dd:
                for i, x in enumerate(self.ctx.col(split, ROOT_ID)):
                    if x:
                        self._roots.setdefault(str(x), (split, i))
        return self._roots.get(root)

    def in_ledger(self, rid: str, root: str | None, *, after: int) -> int | None:
        """Index of the first ledger row after ``after`` that is ``rid``, its child, or descends from ``root``."""
        if self._ledger is None:
            self._ledger = defaultdict(list)
            for k, r in enumerate(self.ctx.rejects):
                for key in ("id", PARENT_ID, ROOT_ID):
                    if r.get(key):
                        self._ledger[(key, str(r[key]))].append(k)
        for key, value in (("id", rid), (PARENT_ID, rid), (ROOT_ID, root)):
            later = [k for k in self._ledger.get((key, str(value)), []) if k > after] if value else []
            if later:
                return later[0]
        return None


def duplicates(ctx: Context, *, max_groups: int = 40, max_members: int = 8) -> dict[str, Any] | None:
    """Duplicate groups as they stand at the end of the chain: the final dataset plus the ledger.

    A group's removed members come from the ledger (their picture, split and label at dedupe time);
    its survivor is the row of the final dataset in the group (or with its id or lineage root), else
    the later ledger row that removed it (its step and reason are named). Splits, leakage and
    conflicts are computed from those: a group is **leakage** when members are in different splits of
    this dataset; it **spanned splits when deduped** when a removed member came from another split
    than its survivor's final split (when a later ``split`` step moved the survivor, the split names
    of dedupe time belong to another partition and say nothing: no claim). Labels conflict when the members carried different
    labels at dedupe, whatever happened to the survivor later. The survivor is shown by its picture at
    dedupe time when the ledger holds it (:func:`ferdata.dedupe.report.add_survivor_evidence`), so
    both sides of a pair are at the same stage; otherwise as it is now, and the caption says so.
    """
    from ferdata.dedupe.report import survivor_thumbnail

    removed: dict[str, list[dict[str, Any]]] = defaultdict(list)
    facts: dict[str, dict[str, Any]] = {}  # per group: the survivor as the dedupe step saw it
    for k, r in enumerate(ctx.rejects):
        if r.get("reason") not in DUPLICATE_REASONS:
            continue
        d = _details(r.get("details"))
        group = str(d.get(GROUP) or d.get(DUPLICATE_OF) or r.get("id"))
        removed[group].append({"kind": "removed", "id": str(r.get("id") or ""), "origin": r.get("origin", ""),
                               "reason": r.get("reason", ""), "details": d, "thumb": r.get(THUMBNAIL),
                               "split": str(d.get("split") or ""), "label": str(d.get("label") or ""), "index": k})
        f = facts.setdefault(group, {"index": k, "size": 0})
        for key, name in ((DUPLICATE_OF, "id"), (SURVIVOR_SPLIT, "split"), (SURVIVOR_LABEL, "label"),
                          (SURVIVOR_ROOT_ID, "root")):
            if d.get(key) and not f.get(name):
                f[name] = str(d[key])
        if f.get("thumb") is None:
            f["thumb"] = survivor_thumbnail(d)
        with contextlib.suppress(TypeError, ValueError):
            f["size"] = max(f["size"], int(d.get(GROUP_SIZE) or 0))
    present: dict[str, list[dict[str, Any]]] = defaultdict(list)  # rows of this dataset in a group
    if ctx.has(GROUP) and ctx.has(GROUP_SIZE):
        for split in ctx.dd:
            names = ctx.dd[split].column_names
            sizes, groups = ctx.col(split, GROUP_SIZE), ctx.col(split, GROUP)
            flagged = ctx.col(split, IS_DUPLICATE) if IS_DUPLICATE in names else None
            dup_of = ctx.col(split, DUPLICATE_OF) if DUPLICATE_OF in names else None
            dist = ctx.col(split, DUPLICATE_DISTANCE) if DUPLICATE_DISTANCE in names else None
            reasons = ctx.col(split, DUPLICATE_REASON) if DUPLICATE_REASON in names else None
            for i, size in enumerate(sizes):
                if size is None or int(size) <= 1:
                    continue
                marked = bool(flagged[i]) if flagged is not None else False
                details = {DUPLICATE_OF: dup_of[i] if dup_of else "", "distance": dist[i] if dist else None} if marked else {}
                present[str(groups[i])].append({"kind": "marked" if marked else "kept", "split": split, "row": i,
                                                "id": ctx.col(split, "id")[i], "reason": reasons[i] if reasons else "",
                                                "details": details, "size": int(size),
                                                "label": ctx.label_name(ctx.col(split, "label")[i])})
    keys = list(removed) + [g for g, ms in present.items() if g not in removed and
                            (len(ms) > 1 or any(m["kind"] == "marked" for m in ms))]
    if not keys:
        return None
    lineage = _Lineage(ctx)
    moved = _split_step_after_dedupe(ctx.manifest)
    built = [_dup_group(ctx, g, removed.get(g, []), present.get(g, []), facts.get(g, {}), lineage, moved=moved)
             for g in keys]
    built.sort(key=lambda b: (not b["leak"], not b["cross_split"], -b["size"], b["group"]))
    shown = []
    for b in built[:max_groups]:
        b["tiles"] = _dup_tiles(ctx, b, max_members)
        shown.append({k: v for k, v in b.items() if k not in ("members", "survivor")})
    return {"groups": shown, "total": len(built), "leaks": sum(b["leak"] for b in built),
            "cross_split": sum(b["cross_split"] and not b["leak"] for b in built),
            "conflicts": sum(b["conflict"] for b in built),
            "survivors_gone": sum(b["state"] in ("removed later", "removed by dedupe") for b in built),
            "survivors_missing": sum(b["state"] == "not found" for b in built),
            "now_only": sum(not b["same_stage"] for b in built),
            "rows_removed": sum(len(ms) for ms in removed.values()),
            "rows_marked": sum(1 for ms in present.values() for m in ms if m["kind"] == "marked")}


def _dup_group(ctx: Context, group: str, removed: list[dict[str, Any]], present: list[dict[str, Any]],
               facts: dict[str, Any], lineage: _Lineage, *, moved: bool) -> dict[str, Any]:
    """One duplicate group at the end of the chain: its survivor's state, splits, leakage and labels."""
    sid, root = facts.get("id") or "", facts.get("root") or facts.get("id")
    kept = [m for m in present if m["kind"] == "kept"]
    survivor: dict[str, Any] | None = next((m for m in kept if m["id"] == sid), kept[0] if kept else None)
    state, fate = ("kept", "") if survivor else ("not found", "")
    gone: dict[str, Any] | None = None
    # on_conflict=drop removes the whole group, the survivor too (an exact copy shares its id: count them)
    dropped = bool(facts.get("size")) and len(removed) >= facts["size"]
    if survivor is None and sid:
        own = next((m for m in removed if m["id"] == sid), None) if dropped else None
        where = None if own else lineage.in_data(sid, root)
        if own is not None:
            state, fate, gone = "removed by dedupe", f"dedupe ({own['reason']})", own
            removed = [m for m in removed if m is not own]
        elif where is not None:
            split, i = where
            survivor = {"kind": "kept", "split": split, "row": i, "id": ctx.col(split, "id")[i], "reason": "",
                        "details": {}, "label": ctx.label_name(ctx.col(split, "label")[i])}
            state = "kept"
        else:
            k = lineage.in_ledger(sid, root, after=max((m["index"] for m in removed), default=-1))
            if k is not None:
                r = ctx.rejects[k]
                state, fate = "removed later", f"{r.get('step')} ({r.get('reason')})"
                d = _details(r.get("details"))
                gone = {"kind": "gone", "id": str(r.get("id") or ""), "origin": r.get("origin", ""),
                        "thumb": r.get(THUMBNAIL), "split": str(d.get("split") or ""),
                        "label": str(d.get("label") or ""), "step": r.get("step"), "reason": r.get("reason")}
    others = [m for m in present if m is not survivor]
    final_splits = sorted({m["split"] for m in present if m.get("split")} |
                          ({survivor["split"]} if survivor else set()))
    survivor_split = facts.get("split") or (survivor["split"] if survivor and not moved else "")
    # the split a removed copy is compared with: the survivor's, when the step's split names still hold
    # for it (a later `split` step that moved the survivor reassigned rows: the old names say nothing)
    if survivor is not None:
        ref = survivor["split"] if survivor["split"] == survivor_split or (not facts.get("split") and not moved) else ""
    else:
        ref = "" if moved else survivor_split
    away = sorted({m["split"] for m in removed if m["split"] and ref and m["split"] != ref})
    labels = {m["label"] for m in removed + others if m.get("label")}
    survivor_label = facts.get("label") or (survivor["label"] if survivor else "")
    if survivor_label:
        labels.add(survivor_label)
    members = len(removed) + len(present) + (0 if survivor in present else 1)
    size = max(facts.get("size") or 0, members, max((m.get("size", 0) for m in present), default=0))
    # both sides at the same stage: the survivor's picture from dedupe time, or pixels unchanged since
    same_stage = facts.get("thumb") is not None or (survivor is not None and survivor["id"] == sid) or \
        (gone is not None and gone["id"] == sid) or not removed
    return {"group": group, "short": short(group), "size": size, "state": state, "fate": fate,
            "final_splits": final_splits, "leak": len(final_splits) > 1, "cross_split": bool(away),
            "survivor_split": survivor_split, "away_splits": away, "cross_ref": ref, "labels": sorted(labels),
            "conflict": len(labels) > 1, "survivor_label": survivor_label,
            "label_now": survivor["label"] if survivor else "", "now_split": survivor["split"] if survivor else "",
            "same_stage": same_stage,
            "removed": len(removed), "survivor_id": sid or (survivor["id"] if survivor else ""),
            "members": others + removed, "survivor": {"row": survivor, "gone": gone, "thumb": facts.get("thumb")}}


def _dup_tiles(ctx: Context, b: dict[str, Any], max_members: int) -> list[dict[str, Any]]:
    """The survivor first (its picture at dedupe time when stored), then the removed or marked members.

    Captions give each row's split and id when dedupe ran; ``now`` marks where the survivor is in this
    dataset, and ``picture: now`` (or ``at STEP``) a survivor pictured later than dedupe.
    """
    s, sid = b["survivor"], b["survivor_id"]
    row, gone, thumb = s["row"], s["gone"], s["thumb"]
    then = f"{b['survivor_split']} · {short(sid)}" if b["survivor_split"] else short(sid)
    label = f"label {b['survivor_label']}" if b["survivor_label"] else ""
    if row is not None:
        relabel = f"label now {row['label']}" if b["survivor_label"] and row["label"] != b["survivor_label"] else ""
        extra = [then, f"now {row['split']} · {short(row['id'])}", label, relabel]
        if thumb is not None:  # both sides as the dedupe step compared them
            value, key = thumb, f"dedupe:{sid}"
        else:
            value, key = raw_images(ctx.dd[row["split"]], [row["row"]])[0], None
            extra.append("picture: now" if row["id"] != sid else "")
        tile = ctx.tile(value, rid=row["id"], split=row["split"], label=row["label"], source="",
                        origin=str(ctx.col(row["split"], "origin")[row["row"]] or ""), extra=extra, cls="survivor",
                        head="SURVIVOR (kept)", key=key)
    elif gone is not None:
        value = thumb if thumb is not None else gone.get("thumb")
        extra = [then, f"by {b['fate']}", label]
        if thumb is None and gone["id"] != sid:
            extra.append(f"picture: at {gone.get('step')}")
        tile = ctx.tile(value, rid=gone["id"], split=b["survivor_split"] or "?", label=b["survivor_label"] or "?",
                        source="", origin=str(gone.get("origin") or ""), extra=extra, cls="survivor gone",
                        head="SURVIVOR, removed later" if b["state"] == "removed later" else "SURVIVOR, removed",
                        key=f"dedupe:{sid}" if thumb is not None else None)
        tile["review"] = False  # not a row of this dataset
        if tile["src"] is None:
            tile["missing"] = "no picture of the survivor kept"
    else:
        tile = {"src": None, "alt": f"survivor {short(sid)} not found", "id": "", "label": "", "origin": "",
                "split": "", "cls": "survivor gone", "side": ctx.side, "review": False,
                "lines": ["SURVIVOR", then, "not in this dataset", "nor in its ledger"],
                "missing": f"survivor {short(sid) or '?'} not found"}
    tile["lines"] = [x for x in tile["lines"] if x]
    tiles = [tile]
    for m in sorted(b["members"], key=lambda m: (m["kind"] == "removed", m["id"]))[:max(0, max_members - 1)]:
        d = m["details"]
        why = str(m.get("reason") or "duplicate").replace("_duplicate", "").replace("_", " ")
        extra = ["removed (" + why + ")" if m["kind"] == "removed" else f"would remove ({why})" if m["kind"] == "marked"
                 else "kept", f"label {m['label']}" if m.get("label") else ""]
        if m["kind"] != "kept" and d.get("distance") not in (None, ""):
            extra.append(f"distance {d.get('distance')}")
        for key, value in sorted(d.items()):
            # a verifier's score of this pair (not the thresholds or the method recorded beside it)
            if value in (None, "") or not key.endswith("_score") or key in ("min_score", "similar_score",
                                                                              "required_score"):
                continue
            extra.append(f"{key} {value:.3g}" if isinstance(value, float) else f"{key} {value}")
        if m["kind"] == "removed":
            tile = ctx.tile(m.get("thumb"), rid=m["id"], split=m["split"] or "?", label=m["label"] or "?",
                            source="", origin=m.get("origin", ""), extra=[x for x in extra if x], cls="removed")
            tile["review"] = False  # not a row of this dataset
            if tile["src"] is None:
                tile["missing"] = "no thumbnail in the ledger"
        else:
            tile = ctx.tiles(m["split"], [m["row"]], extra=[[x for x in extra if x]], cls=["removed"])[0]
        tiles.append(tile)
    return tiles


def similar(ctx: Context, *, max_groups: int = 20, max_members: int = 8) -> dict[str, Any] | None:
    """Kept rows dedupe linked as the same person or session (``similar_group``), not duplicates."""
    if not ctx.has(SIMILAR_GROUP):
        return None
    members: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for split in ctx.dd:
        for i, g in enumerate(ctx.col(split, SIMILAR_GROUP)):
            if g:
                members[str(g)].append((split, i))
    groups = [(g, ms) for g, ms in members.items() if len(ms) > 1]
    if not groups:
        return None
    groups.sort(key=lambda t: (len({s for s, _ in t[1]}) < 2, -len(t[1]), t[0]))
    shown = []
    for g, ms in groups[:max_groups]:
        tiles = []
        for split, i in ms[:max_members]:
            tiles.extend(ctx.tiles(split, [i], extra=[[f"label {ctx.label_name(ctx.col(split, 'label')[i])}"]]))
        splits = sorted({s for s, _ in ms})
        shown.append({"group": g, "short": short(g), "size": len(ms), "splits": splits, "cross_split": len(splits) > 1,
                      "tiles": tiles})
    return {"groups": shown, "total": len(groups), "rows": sum(len(ms) for _, ms in groups),
            "cross_split": sum(1 for _, ms in groups if len({s for s, _ in ms}) > 1)}


def rejects(ctx: Context, *, per_reason: int = 8) -> dict[str, Any] | None:
    """Step x reason counts of the ledger, then examples (their ledger thumbnails)."""
    if not ctx.rejects:
        return None
    counts: Counter[tuple[str, str]] = Counter((str(r.get("step")), str(r.get("reason"))) for r in ctx.rejects)
    steps = list(dict.fromkeys(str(r.get("step")) for r in ctx.rejects))
    reasons = list(dict.fromkeys(str(r.get("reason")) for r in ctx.rejects))
    table = [{"step": s, "cells": [counts.get((s, r), 0) for r in reasons],
              "total": sum(counts.get((s, r), 0) for r in reasons)} for s in steps]
    examples = []
    for (step, reason), n in sorted(counts.items(), key=lambda kv: (steps.index(kv[0][0]), -kv[1])):
        rows = [r for r in ctx.rejects if r.get("step") == step and r.get("reason") == reason][:per_reason]
        tiles = []
        for r in rows:
            d = _details(r.get("details"))
            info = []
            for key, value in list(d.items())[:3]:
                if key in (GROUP, DUPLICATE_OF, "error") and isinstance(value, str):
                    value = value[:24]
                info.append(f"{key}: {round(value, 3) if isinstance(value, float) else value}")
            tile = ctx.tile(r.get("thumbnail"), rid=str(r.get("id") or ""), split=str(d.get("split") or "ledger"),
                            label=str(d.get("label") or reason), source=str(r.get("origin") or "")[:80],
                            origin=str(r.get("origin") or ""), extra=info, cls="removed")
            tile["review"] = False
            if tile["src"] is None:
                tile["missing"] = "no image kept (never decoded, or a ledger from before thumbnails)"
            tiles.append(tile)
        examples.append({"step": step, "reason": reason, "count": n, "anchor": f"rejects-{step}-{reason}",
                         "tiles": tiles})
    return {"reasons": reasons, "table": table, "examples": examples, "total": len(ctx.rejects)}


def _quality_params(manifest: dict[str, Any]) -> dict[str, Any]:
    for entry in reversed(manifest.get("steps", [])):
        if isinstance(entry, dict) and entry.get("step") == "quality":
            return entry.get("params") or {}
    return {}


def quality(ctx: Context, *, worst: int = 8) -> dict[str, Any] | None:
    """A histogram per ``<check>_score`` column with its threshold, flagged count and worst rows."""
    checks = []
    score_cols = sorted({c for ds in ctx.dd.values() for c in ds.column_names if c.endswith("_score")})
    params = _quality_params(ctx.manifest)
    for col in score_cols:
        check = col[: -len("_score")]
        values, where = [], []
        for split in ctx.dd:
            for i, v in enumerate(ctx.col(split, col)):
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                    values.append(float(v))
                    where.append((split, i))
        if not values:
            continue
        param, direction = QUALITY_THRESHOLDS.get(check, (None, "below"))
        threshold = params.get(param) if param else None
        arr = np.array(values)
        svg, bins = histogram(arr, threshold=threshold if isinstance(threshold, int | float) else None,
                              title=f"histogram of {col}")
        flagged = None
        flag_col = f"is_{check}"
        if ctx.has(flag_col):
            flagged = sum(1 for s in ctx.dd for v in ctx.col(s, flag_col) if v)
        elif isinstance(threshold, int | float):
            flagged = int((arr < threshold).sum() if direction == "below" else (arr > threshold).sum())
        dropped = sum(1 for r in ctx.rejects if r.get("reason") == check)
        order = np.argsort(arr if direction == "below" else -arr, kind="stable")[:worst]
        tiles = []
        for j in order.tolist() if arr.max() > arr.min() else []:  # no spread: no "worst" to show
            split, i = where[j]
            tiles.extend(ctx.tiles(split, [i], extra=[[f"score {values[j]:.3g}"]]))
        checks.append({"check": check, "column": col, "svg": svg, "bins": bins, "threshold": threshold,
                       "direction": direction, "flagged": flagged, "dropped": dropped, "n": len(values),
                       "mean": float(arr.mean()), "median": float(np.median(arr)), "tiles": tiles,
                       "anchor": f"quality-{check}"})
    return {"checks": checks} if checks else None


def _ferplus(value: Any) -> str:
    from ferdata.sources.fer2013 import FERPLUS_VOTES  # the vote order of fer2013new.csv

    if value is None:
        return ""
    if isinstance(value, dict):
        items = [(k, v) for k, v in value.items() if v]
    elif isinstance(value, list | tuple) and len(value) in (8, 9, 10):
        items = [(FERPLUS_VOTES[i], v) for i, v in enumerate(value) if v]
    else:
        return f"FER+ {value}"
    items.sort(key=lambda kv: -float(kv[1]))
    return "FER+ " + ", ".join(f"{k} {v:g}" if isinstance(v, int | float) else f"{k} {v}" for k, v in items[:4])


def suspects(ctx: Context, *, per_cell: int = 8, max_rows: int = 200) -> dict[str, Any] | None:
    """Label suspects from refine: flag columns, relabel columns, or the prune ledger."""
    found: list[dict[str, Any]] = []
    mode = ""
    for split in ctx.dd:
        cols = ctx.dd[split].column_names
        ferplus = ctx.col(split, "ferplus_votes") if "ferplus_votes" in cols else None
        if SUSPECT_LABEL in cols and TOP1_LABEL in cols:
            mode = "flag"
            flags, labels = ctx.col(split, SUSPECT_LABEL), ctx.col(split, "label")
            t1, c1 = ctx.col(split, TOP1_LABEL), ctx.col(split, TOP1_CONFIDENCE)
            t2, c2 = ctx.col(split, TOP2_LABEL), ctx.col(split, TOP2_CONFIDENCE)
            lc = ctx.col(split, LABEL_CONFIDENCE)
            for i, f in enumerate(flags):
                if f:
                    found.append({"split": split, "row": i, "given": labels[i], "top1": t1[i], "conf1": c1[i],
                                  "top2": t2[i], "conf2": c2[i], "label_conf": lc[i],
                                  "ferplus": ferplus[i] if ferplus else None})
        elif RELABELED in cols and LABEL_ORIGINAL in cols:
            mode = "relabel"
            flags, given, new = ctx.col(split, RELABELED), ctx.col(split, LABEL_ORIGINAL), ctx.col(split, "label")
            conf = ctx.col(split, RELABEL_CONFIDENCE)
            for i, f in enumerate(flags):
                if f:
                    found.append({"split": split, "row": i, "given": given[i], "top1": new[i], "conf1": conf[i],
                                  "top2": None, "conf2": None, "label_conf": None,
                                  "ferplus": ferplus[i] if ferplus else None})
    ledger = [r for r in ctx.rejects if r.get("reason") == LABEL_DISAGREEMENT]
    for r in ledger:
        mode = mode or "prune"
        d = _details(r.get("details"))
        found.append({"split": "ledger", "row": None, "given": d.get("label"), "top1": d.get("predicted"),
                      "conf1": d.get("confidence"), "top2": None, "conf2": None, "label_conf": d.get(LABEL_CONFIDENCE),
                      "ferplus": None, "ledger": r})
    if not found:  # refine ran and suspected nothing: say so; no refine at all: no section
        return {"mode": mode, "count": 0, "names": ctx.names, "matrix": [], "galleries": [], "table": [],
                "more": 0} if mode else None
    for s in found:
        s["given_name"], s["top1_name"] = ctx.label_name(s["given"]), ctx.label_name(s["top1"])
        s["top2_name"] = ctx.label_name(s["top2"]) if s["top2"] is not None else ""
    found.sort(key=lambda s: -(s["conf1"] or 0.0))
    names = ctx.names or sorted({s["given_name"] for s in found} | {s["top1_name"] for s in found})
    index = {n: k for k, n in enumerate(names)}
    matrix = [[0] * len(names) for _ in names]
    cells: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for s in found:
        g, p = index.get(s["given_name"]), index.get(s["top1_name"])
        if g is None or p is None:
            continue
        matrix[g][p] += 1
        cells[(g, p)].append(s)
    galleries = []
    for (g, p), items in sorted(cells.items()):
        tiles = []
        for s in items[:per_cell]:
            extra = [f"given {s['given_name']}", f"model {s['top1_name']} {s['conf1']:.2f}" if s["conf1"] is not None
                     else f"model {s['top1_name']}"]
            if s["top2_name"]:
                extra.append(f"2nd {s['top2_name']} {s['conf2']:.2f}" if s["conf2"] is not None else f"2nd {s['top2_name']}")
            if s["ferplus"] is not None:
                extra.append(_ferplus(s["ferplus"]))
            if s.get("ledger"):
                r = s["ledger"]
                tile = ctx.tile(r.get("thumbnail"), rid=str(r.get("id") or ""), split="ledger",
                                label=s["given_name"], source=str(r.get("origin") or "")[:60],
                                origin=str(r.get("origin") or ""), extra=extra, cls="suspect")
                if tile["src"] is None:
                    tile["missing"] = "no thumbnail in the ledger"
                tiles.append(tile)
            else:
                tiles.extend(ctx.tiles(s["split"], [s["row"]], extra=[extra], cls=["suspect"]))
            tiles[-1]["suspect"] = True
            tiles[-1]["suggested"] = s["top1_name"]
        galleries.append({"anchor": f"suspects-{g}-{p}", "given": names[g], "predicted": names[p],
                          "count": len(items), "tiles": tiles})
    table = [{"split": s["split"], "id": short(s["ledger"]["id"]) if s.get("ledger") else
              short(ctx.col(s["split"], "id")[s["row"]]), "given": s["given_name"], "top1": s["top1_name"],
              "conf1": s["conf1"], "top2": s["top2_name"], "conf2": s["conf2"], "ferplus": _ferplus(s["ferplus"])}
             for s in found[:max_rows]]
    return {"mode": mode, "count": len(found), "names": names, "matrix": matrix, "galleries": galleries,
            "table": table, "more": max(0, len(found) - max_rows)}


def _step_index(manifest: dict[str, Any], name: str) -> int | None:
    for i, entry in enumerate(manifest.get("steps", [])):
        if isinstance(entry, dict) and entry.get("step") == name:
            return i
    return None


def _fer_csv_pixels(csv_path: Path, lines: set[int]) -> dict[int, Any]:
    """Pixels of the given 1-based line numbers of a fer2013.csv (for SR pairs of an imported CSV)."""
    from PIL import Image

    out: dict[int, Any] = {}
    with csv_path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        for row in reader:
            if reader.line_num in lines and len(row) >= 2:
                try:
                    px = np.array([int(v) for v in row[1].split()], dtype=np.uint8)
                    side = int(round(math.sqrt(len(px))))
                    out[reader.line_num] = Image.fromarray(px.reshape(side, side), mode="L")
                except ValueError:
                    pass
            if len(out) == len(lines):
                break
    return out


def sr_pairs(ctx: Context, *, before: datasets.DatasetDict | None = None, count: int = 8) -> dict[str, Any] | None:
    """Super-resolution pairs: the input (shown pixelated) beside the upscaled output."""
    idx = _step_index(ctx.manifest, "upscale")
    if idx is None or not ctx.has("parent_id"):
        return None
    params = ctx.manifest["steps"][idx].get("params") or {}
    split = next((s for s in ("train", "test", "validation") if s in ctx.dd), next(iter(ctx.dd)))
    n = len(ctx.dd[split])
    rng = np.random.default_rng([ctx.seed, 7])
    rows = np.sort(rng.choice(n, size=min(count, n), replace=False)).tolist() if n else []
    parents = ctx.col(split, "parent_id")
    origins = ctx.col(split, "origin")
    lr: dict[int, Any] = {}
    how = ""
    if before is not None:
        index: dict[str, tuple[str, int]] = {}
        for s, ds in before.items():
            for i, x in enumerate(column(ds, "id")):
                index.setdefault(x, (s, i))
        for r in rows:
            hit = index.get(parents[r])
            if hit:
                lr[r] = raw_images(before[hit[0]], [hit[1]])[0]
        how = "the dataset before the upscale step"
    if not lr:  # an imported fer2013.csv: read the rows' pixels back from the CSV when it is still there
        first = ctx.manifest.get("steps", [{}])[0] if ctx.manifest.get("steps") else {}
        csv_param = (first.get("params") or {}).get("csv") if isinstance(first, dict) else None
        if csv_param and Path(csv_param).is_file():
            wanted = {}
            for r in rows:
                o = str(origins[r] or "")
                if "#L" in o and o.rsplit("#L", 1)[1].isdigit():
                    wanted[r] = int(o.rsplit("#L", 1)[1])
            pixels = _fer_csv_pixels(Path(csv_param), set(wanted.values()))
            lr = {r: pixels[line] for r, line in wanted.items() if line in pixels}
            how = f"the source CSV {Path(csv_param).name}"
    pairs = []
    display = int(params.get("size") or 224)
    out_tiles = ctx.tiles(split, rows, extra=[["output"]] * len(rows), side=display)  # at full size
    for r, out_tile in zip(rows, out_tiles, strict=True):
        if r not in lr:
            continue
        src = ctx.store.src(lr[r], key=f"lr:{parents[r]}", side=64)
        pairs.append({"lr": src, "out": out_tile, "alt": f"input of {short(out_tile['id'])} before upscaling"})
    info = ctx.manifest["steps"][idx].get("info") or {}
    return {"pairs": pairs, "params": params, "info": info, "how": how, "split": split,
            "display": display}


def _crawl_caches(manifest: dict[str, Any]) -> list[Any]:
    """The crawl fetch caches named in ``ferdata.json`` that still exist (read-only use)."""
    from ferdata.sources.fetch import FetchCache

    caches = []
    for entry in manifest.get("steps", []):
        if not isinstance(entry, dict):
            continue
        for where in (entry.get("info") or {}, entry.get("params") or {}):
            root = where.get("cache") if isinstance(where, dict) else None
            if isinstance(root, str) and (Path(root) / "index.jsonl").is_file():
                caches.append(FetchCache(root))
                break
    return caches


def _resolve_origin(origin: str, manifest: dict[str, Any], caches: list[Any] | None = None) -> Path | bytes | None:
    """The source photo of a row: a local file (absolute, or under the importer's ``src``) or the
    crawl cache's copy of a URL; None when it no longer resolves."""
    if not origin:
        return None
    if origin.startswith(("http://", "https://")):
        for cache in caches or []:
            got = cache.lookup(origin)
            if got is not None and getattr(got, "data", None):
                return bytes(got.data)
        return None
    p = Path(origin)
    if p.is_absolute():
        return p if p.is_file() else None
    for entry in manifest.get("steps", [])[:1]:
        for key in ("src", "path", "folder", "root"):
            base = (entry.get("params") or {}).get(key) if isinstance(entry, dict) else None
            if isinstance(base, str) and (Path(base) / origin).is_file():
                return Path(base) / origin
    return p if p.is_file() else None


def faces(ctx: Context, *, count: int = 8) -> dict[str, Any] | None:
    """Face crops with their box and landmarks, over the source photo when it still resolves."""
    if not ctx.has("face_box"):
        return None
    split = next((s for s in ctx.dd if len(ctx.dd[s])), None)
    if split is None:
        return None
    n = len(ctx.dd[split])
    rng = np.random.default_rng([ctx.seed, 11])
    rows = np.sort(rng.choice(n, size=min(count, n), replace=False)).tolist()
    boxes, confs = ctx.col(split, "face_box"), ctx.col(split, "face_confidence")
    kps = ctx.col(split, "face_keypoints") if "face_keypoints" in ctx.dd[split].column_names else [None] * n
    origins = ctx.col(split, "origin")
    crops = ctx.tiles(split, rows, extra=[[f"confidence {confs[r]:.3f}" if isinstance(confs[r], float) else ""]
                                          for r in rows])
    items = []
    caches = _crawl_caches(ctx.manifest)
    for r, crop in zip(rows, crops, strict=True):
        item: dict[str, Any] = {"crop": crop, "box": boxes[r], "keypoints": kps[r] or {}, "source": None}
        found = _resolve_origin(str(origins[r] or ""), ctx.manifest, caches)
        if found is not None and boxes[r]:
            from ferdata.report.images import image_size

            value = found if isinstance(found, bytes) else str(found)
            size = image_size(value)
            if size:
                w, h = size
                scale = min(1.0, 240 / max(w, h))
                src = ctx.store.src(value, key=f"src:{origins[r]}", side=240)
                if src:
                    x, y, bw, bh = (float(v) * scale for v in boxes[r])
                    points = [(k, float(v[0]) * scale, float(v[1]) * scale) for k, v in (kps[r] or {}).items() if v]
                    item["source"] = {"src": src, "w": round(w * scale), "h": round(h * scale), "x": x, "y": y,
                                      "bw": bw, "bh": bh, "points": points,
                                      "alt": f"source photo of {short(crop['id'])} with the detected face box"}
        items.append(item)
    return {"items": items, "split": split, "colour": PALETTE[1], "point_colour": PALETTE[2]}


# ---------------------------------------------------------------- run directories

def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file() or not path.stat().st_size:
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _num(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def learning_curves(history: list[dict[str, str]], title: str) -> list[dict[str, Any]]:
    """Charts (accuracy, loss, ...) of a Keras CSVLogger history, each with its table."""
    if not history:
        return []
    keys = [k for k in history[0] if k not in ("epoch", "model")]
    metrics = [k for k in keys if not k.startswith("val_") and k not in ("learning_rate", "lr")]
    charts = []
    for m in metrics:
        series = {m: [_num(r.get(m)) for r in history], f"val_{m}": [_num(r.get(f"val_{m}")) for r in history]}
        series = {k: [v if v is not None else float("nan") for v in vs] for k, vs in series.items()
                  if any(v is not None for v in vs)}
        svg = line_chart(series, title=f"{title}: {m} per epoch")
        if svg:
            rows = [[i + 1] + [vs[i] for vs in series.values()] for i in range(len(history))]
            charts.append({"metric": m, "svg": svg, "columns": ["epoch", *series], "rows": rows})
    return charts


def confusion_table(path: Path) -> dict[str, Any] | None:
    """A confusion matrix CSV (``true\\predicted`` header) with row-normalised shading."""
    if not path.is_file():
        return None
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        return None
    names = rows[0][1:]
    cells = []
    for r in rows[1:]:
        values = [int(float(v)) for v in r[1:]]
        total = sum(values) or 1
        cells.append({"name": r[0], "values": [{"n": v, "share": v / total} for v in values]})
    return {"names": names, "rows": cells}


def run_sections(path: Path) -> dict[str, Any] | None:
    """A train / evaluate / refine run directory: curves, confusion, per-class P/R/F1, rounds."""
    out: dict[str, Any] = {"kind": [], "path": str(path)}
    run_json = path / "run.json"
    if run_json.is_file():
        try:
            out["run"] = json.loads(run_json.read_text(encoding="utf-8"))
        except ValueError:
            out["run"] = {}
        out["kind"].append("train")
    metrics_file = path / "metrics.json"
    if metrics_file.is_file():
        try:
            metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
        except ValueError:
            metrics = {}
        out["metrics"] = {k: v for k, v in metrics.items() if not isinstance(v, dict | list)}
        out["per_class"] = [{"name": k, **v} for k, v in (metrics.get("per_class") or {}).items() if isinstance(v, dict)]
        out["warnings"] = metrics.get("warnings") or []
        if "evaluate" not in out["kind"] and "train" not in out["kind"]:
            out["kind"].append("evaluate")
    out["curves"] = learning_curves(_read_csv(path / "history.csv"), "training")
    out["confusion"] = confusion_table(path / "confusion.csv")
    rounds = _read_csv(path / "rounds.csv")
    if rounds:
        out["kind"].append("refine")
        out["rounds"] = {"columns": list(rounds[0]), "rows": [list(r.values()) for r in rounds]}
        for name in ("distribution", "comparison"):
            rows = _read_csv(path / f"{name}.csv")
            if rows:
                out[name] = {"columns": list(rows[0]), "rows": [list(r.values()) for r in rows]}
        per_round = []
        for rdir in sorted((path / "rounds").glob("round_*"), key=lambda p: int(p.name.split("_")[-1])
                           if p.name.split("_")[-1].isdigit() else 0):
            per_round.append({"name": rdir.name.replace("_", " "), "confusion": confusion_table(rdir / "confusion.csv"),
                              "curves": learning_curves([r for r in _read_csv(rdir / "learning_curves.csv")
                                                         if r.get("model", "0") == "0"], rdir.name)})
        out["round_dirs"] = per_round
    for sub in sorted(p for p in (path / "eval").glob("*") if p.is_dir()) if (path / "eval").is_dir() else []:
        out.setdefault("evals", []).append({"name": sub.name, "confusion": confusion_table(sub / "confusion.csv")})
    if not out["kind"] and not out["curves"] and not out["confusion"]:
        return None
    return out


def is_run_dir(path: Path) -> bool:
    return any((path / f).is_file() for f in ("run.json", "metrics.json", "rounds.csv", "history.csv", "confusion.csv"))
