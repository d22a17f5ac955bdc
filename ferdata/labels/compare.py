"""Agreement of two label columns of one dataset (e.g. FER2013's labels vs FER+'s).

:func:`compare_labels` returns a plain dict (JSON-ready) that the CLI prints and the report can
render: the agreement matrix (rows: column ``a``, columns: column ``b``), per-class agreement in
both directions, overall agreement and Cohen's kappa, and the count of rows where either column
has no label. Classes are matched by **name**, so a ``ClassLabel`` column and a string column (or
two ClassLabels in different orders) compare correctly.

A column may also be ``ferplus_votes`` (the 10 FER+ vote counts): its label is then the FER+
majority (:func:`ferdata.sources.fer2013.ferplus_label`), and rows without one count as missing.

Example:
    >>> from ferdata.labels.compare import compare_labels
    >>> result = compare_labels("fer2013-ferplus", a="label_fer2013", b="label")   # doctest: +SKIP
    >>> round(result["agreement"], 3)                                            # doctest: +SKIP
    0.745
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ferdata.errors import UsageError

if TYPE_CHECKING:
    import datasets

VOTES_COLUMN = "ferplus_votes"


def _names_of(ds: datasets.Dataset, column: str, mode: str) -> list[str | None]:
    """The class name of every row of ``column`` (None where it has none)."""
    import datasets

    feature = ds.features[column]
    values = ds[column]
    list_types = tuple(t for t in (getattr(datasets, n, None) for n in ("Sequence", "List", "LargeList"))
                       if isinstance(t, type))
    if column == VOTES_COLUMN or isinstance(feature, list_types):
        from ferdata.sources.fer2013 import FERPLUS_CLASSES, FERPLUS_VOTES, ferplus_label

        out: list[str | None] = []
        for v in values:
            if v is None or len(v) != len(FERPLUS_VOTES):
                out.append(None)
                continue
            winner, _ = ferplus_label(v, mode)
            out.append(None if winner is None else FERPLUS_CLASSES[winner])
        return out
    if isinstance(feature, datasets.ClassLabel):
        return [feature.names[v] if v is not None and 0 <= v < len(feature.names) else None for v in values]
    if isinstance(feature, datasets.Value) and feature.dtype == "string":
        return [v if v else None for v in values]
    raise UsageError(f"column {column!r} is {feature}; compare needs a ClassLabel, a string column or "
                     f"{VOTES_COLUMN}")


def agreement_table(a: Sequence[str | None], b: Sequence[str | None], *, classes: Sequence[str] | None = None
                    ) -> dict[str, Any]:
    """Agreement of two parallel label lists (None = no label): matrix, per class, kappa.

    Example:
        >>> t = agreement_table(["happy", "sad", "sad", None], ["happy", "happy", "sad", "sad"])
        >>> t["rows"], t["agree"], t["missing"]
        (3, 2, 1)
    """
    from ferdata.train.metrics import confusion_matrix

    if len(a) != len(b):
        raise ValueError(f"the two label lists differ in length: {len(a)} and {len(b)}")
    both = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    present = sorted({x for x, _ in both} | {y for _, y in both})
    names = list(classes) + [n for n in present if n not in classes] if classes else present
    index = {n: i for i, n in enumerate(names)}
    cm = confusion_matrix([index[x] for x, _ in both], [index[y] for _, y in both], len(names))
    n = int(cm.sum())
    agree = int(np.trace(cm))
    row, col = cm.sum(1), cm.sum(0)
    expected = float((row * col).sum()) / (n * n) if n else 0.0
    observed = agree / n if n else 0.0
    kappa = (observed - expected) / (1 - expected) if n and expected < 1 else None
    per_class = []
    for i, name in enumerate(names):
        per_class.append({
            "class": name, "count_a": int(row[i]), "count_b": int(col[i]), "both": int(cm[i, i]),
            # of the rows a calls `name`, the share b calls `name` too (and the other way round)
            "agreement_a": round(float(cm[i, i] / row[i]), 4) if row[i] else None,
            "agreement_b": round(float(cm[i, i] / col[i]), 4) if col[i] else None,
        })
    return {"classes": names, "matrix": cm.tolist(), "rows": n, "agree": agree, "agreement": round(observed, 4),
            "cohen_kappa": None if kappa is None else round(float(kappa), 4), "missing": len(a) - n,
            "per_class": per_class}


def compare_labels(source: str | Path | datasets.DatasetDict | datasets.Dataset, *, a: str, b: str,
                   splits: Sequence[str] | None = None, ferplus_mode: str = "majority") -> dict[str, Any]:
    """Compare two label columns of a dataset directory (all splits together, or ``splits``).

    Args:
        source: a dataset directory, ``DatasetDict`` or ``Dataset``.
        a, b: the columns (ClassLabel, string, or ``ferplus_votes`` for the FER+ label).
        splits: the splits to pool (default: every split).
        ferplus_mode: the FER+ rule used for a ``ferplus_votes`` column.

    Returns:
        ``{"a", "b", "splits", "classes", "matrix" (rows a, columns b), "rows", "agree",
        "agreement", "cohen_kappa", "missing", "per_class": [{"class", "count_a", "count_b",
        "both", "agreement_a", "agreement_b"}]}``.

    Raises:
        UsageError: for an unknown column or split, or a column that holds no labels.
    """
    import datasets

    if isinstance(source, (str, Path)):
        from ferdata.dataset import open_dataset

        source = open_dataset(Path(source))
    dd = source if isinstance(source, (datasets.DatasetDict, dict)) else datasets.DatasetDict({"data": source})
    chosen = list(splits) if splits else list(dd)
    unknown = [s for s in chosen if s not in dd]
    if unknown:
        raise UsageError(f"unknown split {unknown[0]!r}; splits: {', '.join(dd)}")
    xs: list[str | None] = []
    ys: list[str | None] = []
    classes: list[str] = []
    for split in chosen:
        ds = dd[split]
        for column in (a, b):
            if column not in ds.column_names:
                raise UsageError(f"column {column!r} not found in split {split!r}; columns: {', '.join(ds.column_names)}")
        xs += _names_of(ds, a, ferplus_mode)
        ys += _names_of(ds, b, ferplus_mode)
        feature = ds.features["label"] if "label" in ds.column_names else None
        if isinstance(feature, datasets.ClassLabel):
            classes += [n for n in feature.names if n not in classes]
    table = agreement_table(xs, ys, classes=classes or None)
    return {"a": a, "b": b, "splits": chosen, **table}


def format_table(result: dict[str, Any]) -> str:
    """The comparison as plain text: counts, the matrix and the per-class agreement."""
    names = result["classes"]
    width = max([len(n) for n in names] + [8])
    lines = [f"{result['a']} vs {result['b']} ({', '.join(result['splits'])}): {result['rows']} rows with both, "
             f"agreement {result['agreement']:.4f} ({result['agree']} rows), Cohen's kappa "
             f"{result['cohen_kappa'] if result['cohen_kappa'] is not None else 'n/a'}, "
             f"{result['missing']} rows without both labels", "",
             f"rows: {result['a']}, columns: {result['b']}",
             " " * width + " " + " ".join(f"{n[:8]:>8}" for n in names)]
    for name, row in zip(names, result["matrix"], strict=True):
        lines.append(f"{name:<{width}} " + " ".join(f"{v:>8}" for v in row))
    lines += ["", f"{'class':<{width}} {'n(a)':>6} {'n(b)':>6} {'both':>6} {'a->b':>6} {'b->a':>6}"]
    for c in result["per_class"]:
        fa = "-" if c["agreement_a"] is None else f"{c['agreement_a']:.3f}"
        fb = "-" if c["agreement_b"] is None else f"{c['agreement_b']:.3f}"
        lines.append(f"{c['class']:<{width}} {c['count_a']:>6} {c['count_b']:>6} {c['both']:>6} {fa:>6} {fb:>6}")
    return "\n".join(lines)
