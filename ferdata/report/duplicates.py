"""The report's duplicates and similar-groups sections, computed at the end of the chain (final dataset + ledger)."""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from ferdata.columns import (
    DUPLICATE_DISTANCE,
    DUPLICATE_OF,
    DUPLICATE_REASON,
    DUPLICATE_REASONS,
    GROUP,
    GROUP_SIZE,
    IS_DUPLICATE,
    PARENT_ID,
    ROOT_ID,
    SIMILAR_GROUP,
    SURVIVOR_LABEL,
    SURVIVOR_ROOT_ID,
    SURVIVOR_SPLIT,
    THUMBNAIL,
)
from ferdata.report.images import raw_images

if TYPE_CHECKING:
    pass

from ferdata.report.context import Context, _details, short

logger = logging.getLogger(__name__)


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
