"""What each report section shows, gathered from a dataset or run directory.

The sections live here (dataset sections), in :mod:`ferdata.report.duplicates` (duplicates and
similar groups) and :mod:`ferdata.report.runs` (run directories), over the shared
:class:`~ferdata.report.context.Context`; this module re-exports them all, so the report reads
every section from one place.

Every function returns a plain dict (or None when its columns/files are absent), which the Jinja2
template renders. Counts, histograms and groupings come from Arrow columns and the ledger's text
columns; only the rows a section shows are decoded (through :class:`~ferdata.report.images.ImageStore`).
"""

from __future__ import annotations

import csv
import logging
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np

from ferdata.columns import (
    DUPLICATE_OF,
    GROUP,
    LABEL_CONFIDENCE,
    LABEL_DISAGREEMENT,
    LABEL_ORIGINAL,
    RELABEL_CONFIDENCE,
    RELABELED,
    SUSPECT_LABEL,
    TOP1_CONFIDENCE,
    TOP1_LABEL,
    TOP2_CONFIDENCE,
    TOP2_LABEL,
)
from ferdata.report.charts import PALETTE, histogram
from ferdata.report.context import Context, _details, _ferplus, column, short  # noqa: F401 (collect is the sections' one entry)
from ferdata.report.duplicates import duplicates, similar  # noqa: F401
from ferdata.report.images import raw_images
from ferdata.report.runs import is_run_dir, run_sections  # noqa: F401

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

#: quality check -> (parameter holding its threshold in the quality step, flagged when "below"/"above")
QUALITY_THRESHOLDS = {
    "dark": ("dark_threshold", "below"), "light": ("light_threshold", "above"),
    "blurry": ("blurry_threshold", "below"), "low_information": ("low_information_threshold", "below"),
    "too_small": ("min_side", "below"), "odd_aspect": ("max_aspect", "above"),
}


# ---------------------------------------------------------------- dataset sections

def _class_weights(ctx: Context) -> dict[str, Any]:
    """Class weights of the rows reported (as the card computes them), else the manifest's."""
    import datasets

    from ferdata.balance import all_class_weights

    if len(ctx.dd) and all(isinstance(ds.features.get("label"), datasets.ClassLabel) for ds in ctx.dd.values()):
        return all_class_weights(ctx.dd)
    weights = ctx.manifest.get("class_weights")
    return weights if isinstance(weights, dict) else {}


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
    weights = _class_weights(ctx)
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


def _suspect_rows(ctx: Context) -> tuple[list[dict[str, Any]], str]:
    """Every suspect row (flagged, relabelled, or pruned into the ledger) and the refine mode that made them."""
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
    return found, mode


def _refine_guard(ctx: Context) -> str:
    """The last refine step's guard statement (``ferdata.refine.rules.guard_statement``); "" when it did not trip."""
    for entry in reversed(ctx.manifest.get("steps") or []):
        if isinstance(entry, dict) and entry.get("step") == "refine":
            return str(((entry.get("info") or {}).get("guard") or {}).get("statement") or "")
    return ""


def suspects(ctx: Context, *, per_cell: int = 8, max_rows: int = 200) -> dict[str, Any] | None:
    """Label suspects from refine: flag columns, relabel columns, or the prune ledger (and the guard's refusal)."""
    found, mode = _suspect_rows(ctx)
    guard = _refine_guard(ctx)
    if not found:  # refine ran and suspected nothing: say so; no refine at all: no section
        return {"mode": mode, "count": 0, "names": ctx.names, "matrix": [], "galleries": [], "table": [],
                "more": 0, "guard": guard} if mode else None
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
            "table": table, "more": max(0, len(found) - max_rows), "guard": guard}


def _step_index(manifest: dict[str, Any], name: str) -> int | None:
    for i, entry in enumerate(manifest.get("steps", [])):
        if isinstance(entry, dict) and entry.get("step") == name:
            return i
    return None


def _fer_csv_pixels(csv_path: Path, lines: set[int]) -> dict[int, Any]:
    """Pixels of the given 1-based line numbers of a fer2013.csv (for SR pairs of an imported CSV)."""
    from PIL import Image

    from ferdata.sources.fer2013 import open_csv

    out: dict[int, Any] = {}
    with open_csv(str(csv_path)) as f:
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
