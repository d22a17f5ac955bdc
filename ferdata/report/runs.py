"""The report's sections of a run directory (ferdata train / refine): learning curves, confusion matrices."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferdata.report.charts import line_chart

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)


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
