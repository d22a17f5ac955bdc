"""The benchmark's tables: ``results.csv`` (one row per cell and seed), ``summary.csv`` (one per cell),
``groups.csv`` (one per cell and demographic term), and the seed-summed confusion matrices.

Uncertainty: ``*_std`` is the standard deviation over seeds (training noise); the 95 % interval
``accuracy_ci_low..accuracy_ci_high`` is a percentile bootstrap over the test rows (test-set
noise): each replicate draws the scored rows with replacement, the same draw for every seed, and
takes the seed-mean accuracy. With one seed it is the usual bootstrap interval of an accuracy.

Example:
    >>> bootstrap_interval([(np.arange(4), np.array([1, 1, 0, 1]))], replicates=200)   # doctest: +SKIP
    (0.25, 1.0)
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

RESULT_COLUMNS = ("train", "test", "seed", "accuracy", "macro_f1", "top2_accuracy", "n_test", "rows_in_split",
                  "dropped_rows", "dropped_classes", "excluded_seen", "validation_rows_scored", "test_split")
GROUP_COLUMNS = ("train", "test", "dimension", "term", "n", "seeds", "accuracy", "accuracy_std", "accuracy_ci_low",
                 "accuracy_ci_high")


@dataclass
class Cell:
    """One scored (train set, seed, test set): its evaluate output directory and metrics."""

    train: str
    test: str
    seed: int
    path: Path
    metrics: dict[str, Any]

    def predictions(self) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
        """(split positions, correct 0/1, true names, predicted names) of the scored rows."""
        with (self.path / "predictions.csv").open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        pos = np.asarray([int(r["row"]) for r in rows], dtype=np.int64)
        true = [r["true"] for r in rows]
        pred = [r["predicted"] for r in rows]
        correct = np.asarray([t == p for t, p in zip(true, pred, strict=True)], dtype=np.float64)
        return pos, correct, true, pred


def bootstrap_interval(per_seed: Sequence[tuple[np.ndarray, np.ndarray]], *, replicates: int = 1000, seed: int = 0,
                       level: float = 0.95) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of the seed-mean accuracy over the scored rows (see the module doc).

    Args:
        per_seed: for each seed, (row positions, correct 0/1) of its scored rows.
        replicates: bootstrap draws.
        seed: seed of the draws (the same data gives the same interval).
        level: the interval's coverage.

    Returns:
        (low, high), or (None, None) when no row was scored.
    """
    parts = [(np.asarray(r, dtype=np.int64), np.asarray(c, dtype=np.float64)) for r, c in per_seed if len(r)]
    if not parts:
        return None, None
    union = np.unique(np.concatenate([r for r, _ in parts]))
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(len(union), np.full(len(union), 1.0 / len(union)), size=replicates)
    accs = []
    for rows, correct in parts:
        w = weights[:, np.searchsorted(union, rows)]
        total = w.sum(axis=1)
        accs.append(np.where(total > 0, (w * correct).sum(axis=1) / np.maximum(total, 1), np.nan))
    mean = np.nanmean(np.vstack(accs), axis=0)
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(mean, [tail, 100 - tail])
    return round(float(low), 4), round(float(high), 4)


def _std(values: Sequence[float]) -> float | str:
    return round(float(np.std(values, ddof=1)), 4) if len(values) > 1 else ""


def result_rows(cells: Iterable[Cell], classes: Sequence[str]) -> list[dict[str, Any]]:
    """One ``results.csv`` row per cell and seed; ``recall_<class>`` is empty for a class without a test row."""
    rows = []
    for cell in cells:
        m = cell.metrics
        row: dict[str, Any] = {"train": cell.train, "test": cell.test, "seed": cell.seed, "accuracy": m["accuracy"],
                               "macro_f1": m["macro_f1"], "top2_accuracy": m.get("top2_accuracy"),
                               "n_test": m["num_examples"], "rows_in_split": m.get("rows_in_split"),
                               "dropped_rows": m.get("dropped_rows", 0),
                               "dropped_classes": " ".join(f"{k}:{v}" for k, v in m.get("dropped_by_class", {}).items()),
                               "excluded_seen": m.get("excluded_seen", 0),
                               "validation_rows_scored": m.get("validation_rows_scored", 0), "test_split": m.get("split")}
        for name in classes:
            pc = m["per_class"].get(name, {})
            row[f"recall_{name}"] = pc.get("recall") if pc.get("support") else ""
        rows.append(row)
    return rows


def _by_cell(cells: Iterable[Cell]) -> dict[tuple[str, str], list[Cell]]:
    out: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        out.setdefault((cell.train, cell.test), []).append(cell)
    return out


def summary_rows(cells: Iterable[Cell], classes: Sequence[str], *, replicates: int = 1000) -> list[dict[str, Any]]:
    """One ``summary.csv`` row per (train, test): mean and std over seeds, bootstrap 95 % interval of accuracy."""
    rows = []
    for (train, test), group in _by_cell(cells).items():
        acc = [c.metrics["accuracy"] for c in group]
        f1 = [c.metrics["macro_f1"] for c in group]
        low, high = bootstrap_interval([c.predictions()[:2] for c in group], replicates=replicates)
        row: dict[str, Any] = {
            "train": train, "test": test, "seeds": len(group),
            "n_test": int(round(float(np.mean([c.metrics["num_examples"] for c in group])))),
            "accuracy": round(float(np.mean(acc)), 4), "accuracy_std": _std(acc),
            "accuracy_ci_low": low, "accuracy_ci_high": high,
            "macro_f1": round(float(np.mean(f1)), 4), "macro_f1_std": _std(f1),
            "dropped_rows": max(c.metrics.get("dropped_rows", 0) for c in group),
            "excluded_seen": max(c.metrics.get("excluded_seen", 0) for c in group),
        }
        for name in classes:
            recalls = [c.metrics["per_class"][name]["recall"] for c in group
                       if c.metrics["per_class"].get(name, {}).get("support")]
            row[f"recall_{name}"] = round(float(np.mean(recalls)), 4) if recalls else ""
        rows.append(row)
    return rows


def group_rows(cells: Iterable[Cell], terms: dict[str, dict[str, list[str]]], *, replicates: int = 1000
               ) -> list[dict[str, Any]]:
    """One ``groups.csv`` row per (train, test, dimension, term) of the test sets in ``terms``.

    Args:
        cells: the scored cells.
        terms: ``{test set: {dimension: [term of each row of its test split]}}`` (:func:`parse_queries`).
        replicates: bootstrap draws of each interval.
    """
    rows = []
    for (train, test), group in _by_cell(cells).items():
        if test not in terms:
            continue
        preds = [c.predictions()[:2] for c in group]
        for dim, per_row in terms[test].items():
            column = np.asarray(per_row, dtype=object)
            for term in dict.fromkeys(per_row):
                in_group = [(pos[column[pos] == term], ok[column[pos] == term]) for pos, ok in preds]
                accs = [float(ok.mean()) for _, ok in in_group if len(ok)]
                n = len(np.unique(np.concatenate([pos for pos, _ in in_group]))) if in_group else 0
                if not n:
                    continue
                low, high = bootstrap_interval(in_group, replicates=replicates)
                rows.append({"train": train, "test": test, "dimension": dim, "term": term, "n": n, "seeds": len(accs),
                             "accuracy": round(float(np.mean(accs)), 4), "accuracy_std": _std(accs),
                             "accuracy_ci_low": low, "accuracy_ci_high": high})
    return rows


def summed_confusion(cells: Iterable[Cell]) -> dict[tuple[str, str], np.ndarray]:
    """The confusion matrix of each (train, test), summed over its seeds (rows true, columns predicted)."""
    out: dict[tuple[str, str], np.ndarray] = {}
    for key, group in _by_cell(cells).items():
        out[key] = np.sum([np.asarray(c.metrics["confusion_matrix"], dtype=np.int64) for c in group], axis=0)
    return out


def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """Write ``rows`` as CSV (columns: ``columns``, else the first row's keys), atomically."""
    cols = list(columns) if columns is not None else (list(rows[0]) if rows else [])
    for row in rows:
        cols += [k for k in row if k not in cols]
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=cols)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in cols})
    tmp.replace(path)
    return path
