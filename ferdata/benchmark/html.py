"""``BENCH/report.html``: the benchmark in one self-contained page, in the style of ``ferdata report``.

The train x test matrix as a heat map (seed-mean accuracy, its spread over seeds and its bootstrap
95 % interval; each cell links to its confusion matrix further down), macro F1, per-class recall,
accuracy per demographic group, and the confusion matrix of every cell (summed over seeds). The
page reuses the report's stylesheet and table macros (``ferdata/report/templates``), needs no
network, and names files relative to ``BENCH/`` only.

Example:
    >>> write_benchmark_report(Path("bench"), config=cfg, plan=plan, cells=cells, summary=rows, groups=[],
    ...                        confusion=cms, notes=[])                        # doctest: +SKIP
    PosixPath('bench/report.html')
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ferdata.benchmark.config import BenchmarkConfig
    from ferdata.benchmark.protocol import Plan
    from ferdata.benchmark.tables import Cell

REPORT_FILE = "report.html"


def _environment() -> Any:
    import jinja2

    from ferdata.report import _environment as report_environment

    env = report_environment()
    env.loader = jinja2.ChoiceLoader([jinja2.PackageLoader("ferdata.benchmark", "templates"), env.loader])
    return env


def cell_id(train: str, test: str) -> str:
    """The page anchor of a cell's confusion matrix."""
    return f"cm-{train}__{test}"


def _matrix(plan: Plan, summary: list[dict[str, Any]]) -> dict[str, Any]:
    by_key = {(r["train"], r["test"]): r for r in summary}
    trains = list(dict.fromkeys(spec.name for spec, _ in plan.train))
    tests = [t.spec.name for t in plan.test]
    rows = []
    for train in trains:
        cells = []
        for test in tests:
            r = by_key.get((train, test))
            cells.append(None if r is None else {**r, "id": cell_id(train, test), "in_domain": train == test})
        rows.append({"train": train, "cells": cells})
    return {"tests": tests, "rows": rows}


def _confusions(confusion: dict[tuple[str, str], np.ndarray], names: list[str], cells: list[Cell]
                ) -> list[dict[str, Any]]:
    out = []
    for (train, test), cm in confusion.items():
        sums = cm.sum(axis=1, keepdims=True)
        shares = np.divide(cm, sums, out=np.zeros(cm.shape, dtype=np.float64), where=sums > 0)
        rows = [{"name": name, "values": [{"n": int(n), "share": float(s)} for n, s in zip(cm[i], shares[i], strict=True)]}
                for i, name in enumerate(names)]
        seeds = sorted(c.seed for c in cells if c.train == train and c.test == test)
        out.append({"id": cell_id(train, test), "train": train, "test": test, "cm": {"names": names, "rows": rows},
                    "csv": f"confusion/{train}__{test}.csv",
                    "seeds": [{"seed": s, "png": f"cells/{train}__{test}/seed-{s}/confusion.png"} for s in seeds]})
    return out


def _datasets(config: BenchmarkConfig, plan: Plan) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for spec, copied in plan.train:
        rows[spec.name] = {"name": spec.name, "dir": Path(spec.path).name, "train": spec.train_split,
                           "regrouped": copied, "test": "", "dropped": "", "query": False}
    for t in plan.test:
        row = rows.setdefault(t.spec.name, {"name": t.spec.name, "dir": Path(t.spec.path).name, "train": "",
                                            "regrouped": False})
        row.update(test=t.split, dropped=", ".join(k for k, v in t.mapping.items() if v is None),
                   query=t.has_query)
    return list(rows.values())


def write_benchmark_report(out: Path, *, config: BenchmarkConfig, plan: Plan, cells: list[Cell],
                           summary: list[dict[str, Any]], groups: list[dict[str, Any]],
                           confusion: dict[tuple[str, str], np.ndarray], notes: list[str]) -> Path:
    """Write ``out/report.html`` (atomically) and return its path."""
    from ferdata import __version__

    protocol = {**config.protocol(), "seeds": ", ".join(map(str, config.seeds)), "bootstrap": config.bootstrap,
                "queries": config.queries}
    html = _environment().get_template("benchmark.html.j2").render(
        title=out.name, version=__version__, protocol=protocol, datasets=_datasets(config, plan),
        matrix=_matrix(plan, summary), summary=summary, classes=plan.classes, groups=groups,
        confusions=_confusions(confusion, plan.classes, cells), notes=notes)
    path = out / REPORT_FILE
    tmp = out / f".{REPORT_FILE}.tmp"
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)
    return path
