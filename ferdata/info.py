"""What a dataset directory holds: ``ferdata info DIR`` (the first thing to run on an output).

Everything comes from the directory itself, without decoding an image: the splits' Arrow
metadata (rows, columns and their types), the ``label`` column (rows per class), ``ferdata.json``
(recipe, steps with their counts and seconds, seed, versions) and ``rejects.parquet`` (the
reasons rows were removed, most frequent first).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any


def dir_size(path: str | Path) -> int:
    """Bytes of every file under ``path`` (links not followed)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file() and not p.is_symlink())


def human_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KB'``.

    Example:
        >>> human_bytes(3_400_000)
        '3.4 MB'
    """
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def dataset_info(path: str | Path, *, top_reasons: int = 10) -> dict[str, Any]:
    """Describe a dataset directory as a JSON-ready dict.

    Args:
        path: a directory written by a ferdata command.
        top_reasons: how many reject reasons to list (the most frequent first).

    Returns:
        ``{"path", "size_bytes", "rows", "splits": {split: {"rows", "classes": {name: n}}},
        "label_names", "columns": {name: type}, "steps": [...], "rejected", "reject_reasons":
        [{"step", "reason", "rows"}], "recipe", "seed", "created", "versions", "trial", "hub"}``.

    Raises:
        ferdata.errors.FerdataError: when ``path`` is not a dataset directory (from
            :func:`ferdata.dataset.open_dataset`).

    Example:
        >>> dataset_info("fer2013-224")["splits"]["train"]["rows"]    # doctest: +SKIP
        2584
    """
    import datasets

    from ferdata.dataset import open_dataset, read_manifest, read_rejects

    path = Path(path)
    dd = open_dataset(path)
    manifest = read_manifest(path) if (path / "ferdata.json").exists() else {}
    splits: dict[str, Any] = {}
    names: list[str] = []
    columns: dict[str, str] = {}
    for split, ds in dd.items():
        feature = ds.features.get("label")
        classes: dict[str, int] = {}
        if isinstance(feature, datasets.ClassLabel):
            names = list(feature.names)
            counts = Counter(ds.select_columns(["label"])["label"]) if len(ds) else Counter()
            classes = {name: counts.get(i, 0) for i, name in enumerate(feature.names)}
            if counts.get(-1):
                classes["(no label)"] = counts[-1]
        splits[split] = {"rows": len(ds), "classes": classes}
        for name, feat in ds.features.items():
            columns.setdefault(name, _feature_type(feat))
    ledger = read_rejects(path, thumbnails=False)
    reasons = Counter((r.get("step", ""), r.get("reason", "")) for r in ledger)
    steps = [{"step": e.get("step"), "input_rows": e.get("input_rows"), "kept": e.get("kept"),
              "rejected": e.get("rejected"), "rejected_by_reason": e.get("rejected_by_reason") or {},
              "seconds": e.get("seconds")} for e in manifest.get("steps", [])]
    recipe = manifest.get("recipe") or None
    return {
        "path": str(path),
        "size_bytes": dir_size(path),
        "rows": sum(s["rows"] for s in splits.values()),
        "splits": splits,
        "label_names": names,
        "columns": columns,
        "steps": steps,
        "rejected": len(ledger),
        "reject_reasons": [{"step": s, "reason": r, "rows": n}
                           for (s, r), n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:top_reasons]],
        "recipe": {"name": recipe.get("name"), "variables": recipe.get("variables", {})} if recipe else None,
        "seed": manifest.get("seed"),
        "created": manifest.get("created"),
        "trial": bool(manifest.get("trial", False)),
        "demo": bool(manifest.get("demo", False)),
        "versions": manifest.get("versions", {}),
        "hub": (path / "hub" / "README.md").exists(),
    }


def _feature_type(feature: Any) -> str:
    import datasets

    if isinstance(feature, datasets.ClassLabel):
        return f"ClassLabel({len(feature.names)})"
    if isinstance(feature, datasets.Image):
        return "Image"
    if isinstance(feature, datasets.Value):
        return str(feature.dtype)
    if isinstance(feature, (datasets.Sequence, list)):
        inner = feature.feature if isinstance(feature, datasets.Sequence) else feature[0]
        return f"list[{_feature_type(inner)}]"
    if isinstance(feature, dict):
        return "struct"
    return type(feature).__name__


def format_info(info: dict[str, Any]) -> str:
    """The terminal view of :func:`dataset_info`: a class-by-split table, steps, reasons, columns.

    Example:
        >>> print(format_info(dataset_info("fer2013-224")))    # doctest: +SKIP
    """
    lines = []
    recipe = info.get("recipe")
    tags = [t for t in ("demo", "trial") if info.get(t)]
    lines.append(f"{info['path']}: {info['rows']} rows in {len(info['splits'])} split(s), "
                 f"{human_bytes(info['size_bytes'])} on disk" + (f" [{', '.join(tags)}]" if tags else ""))
    if recipe:
        variables = ", ".join(f"{k}={v!r}" for k, v in (recipe.get("variables") or {}).items())
        lines.append(f"recipe: {recipe.get('name')}" + (f" ({variables})" if variables else ""))
    lines.append(f"seed: {info.get('seed')}; created: {info.get('created') or '?'}")
    names = info["label_names"]
    splits = info["splits"]
    if names:
        extra = sorted({c for s in splits.values() for c in s["classes"]} - set(names))
        rows_names = [*names, *extra]
        width = max(len(n) for n in [*rows_names, "class", "total"])
        cols = list(splits)
        widths = [max(len(c), 5) for c in cols]
        lines.append("")
        lines.append(f"{'class':<{width}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(cols, widths, strict=True))
                     + "  total")
        for name in rows_names:
            counts = [splits[c]["classes"].get(name, 0) for c in cols]
            lines.append(f"{name:<{width}}  " + "  ".join(f"{n:>{w}}" for n, w in zip(counts, widths, strict=True))
                         + f"  {sum(counts):>5}")
        totals = [splits[c]["rows"] for c in cols]
        lines.append(f"{'total':<{width}}  " + "  ".join(f"{n:>{w}}" for n, w in zip(totals, widths, strict=True))
                     + f"  {sum(totals):>5}")
    else:
        lines.append("splits: " + ", ".join(f"{s} {v['rows']}" for s, v in splits.items()))
    if info["steps"]:
        from ferdata.progress import summary_table

        lines += ["", summary_table(info["steps"])]
    if info["reject_reasons"]:
        lines += ["", f"rejects ledger: {info['rejected']} rows; top reasons:"]
        lines += [f"  {r['rows']:>6}  {r['step']}: {r['reason']}" for r in info["reject_reasons"]]
    else:
        lines += ["", "rejects ledger: empty"]
    lines += ["", "columns: " + ", ".join(f"{k} ({v})" for k, v in info["columns"].items())]
    if info.get("hub"):
        lines.append(f"hub layout: {info['path']}/hub (ferdata push {info['path']} USER/NAME)")
    versions = info.get("versions") or {}
    if versions:
        lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return "\n".join(lines)
