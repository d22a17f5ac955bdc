"""Run a benchmark: check every input, train one model per (training set, seed), score it on every test set.

``BENCH/`` holds::

    benchmark.json                 the protocol (training options, label space) and the datasets by name
    data/NAME/                     a training set regrouped into the label space (only when needed)
    runs/NAME/seed-S/              the run directory of each model (``ferdata train``'s layout)
    cells/TRAIN__TEST/seed-S/      ``ferdata evaluate``'s output for each cell (metrics, confusion, predictions)
    confusion/TRAIN__TEST.csv      the confusion matrix of each cell, summed over seeds
    results.csv summary.csv groups.csv report.html

Every run and cell directory is written atomically, and one that exists is kept: a benchmark that
was killed, started again with the same protocol and output, trains and scores only what is
missing. A different protocol in an existing output is refused (``--overwrite`` starts afresh).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferdata.benchmark.config import BenchmarkConfig, DatasetSpec
from ferdata.benchmark.space import model_classes, prepare_training_set, test_label_map, test_split, training_needs_copy
from ferdata.benchmark.tables import RESULT_COLUMNS, Cell, result_rows, write_csv
from ferdata.errors import OutputExists, UsageError

logger = logging.getLogger(__name__)

STATE_FILE = "benchmark.json"
FORMAT = "ferdata-benchmark/1"


@dataclass
class TestPlan:
    """A test set, checked: the split scored, its label mapping, whether it carries crawl queries."""

    spec: DatasetSpec
    split: str
    mapping: dict[str, str | None]
    has_query: bool


@dataclass
class Plan:
    """Every input checked before TensorFlow loads."""

    train: list[tuple[DatasetSpec, bool]]
    test: list[TestPlan]
    classes: list[str]
    notes: list[str] = field(default_factory=list)


def check_inputs(config: BenchmarkConfig) -> Plan:
    """Open every dataset and check its splits and classes against the label space (no TensorFlow).

    Raises:
        UsageError: naming the dataset, split or classes at fault (one line).
    """
    from ferdata.benchmark.groups import QUERY_COLUMN
    from ferdata.dataset import check_dataset_dir, label_names, open_dataset

    opened = {}
    for spec in (*config.train, *config.test):
        if spec.name not in opened:
            check_dataset_dir(spec.path)
            opened[spec.name] = open_dataset(spec.path)
    train = [(spec, training_needs_copy(opened[spec.name], spec, config.classes)) for spec in config.train]
    tests = []
    for spec in config.test:
        dd = opened[spec.name]
        split = test_split(dd, spec)
        mapping = test_label_map(label_names(dd[split]), config.classes, dataset=spec.name)
        tests.append(TestPlan(spec, split, mapping, QUERY_COLUMN in dd[split].column_names))
    plan = Plan(train, tests, model_classes(config.classes))
    for t in tests:
        dropped = [k for k, v in t.mapping.items() if v is None]
        if dropped:
            plan.notes.append(f"test set {t.spec.name!r}: classes {', '.join(dropped)} are outside the "
                              f"--classes {config.classes} label space; their rows are dropped and counted")
    return plan


def open_output(out: Path, config: BenchmarkConfig, *, overwrite: bool) -> bool:
    """Create ``out`` or check that it continues the same protocol; True when resuming.

    Raises:
        OutputExists: for an output of another protocol, or a directory that is not a benchmark.
    """
    state_path = out / STATE_FILE
    if out.exists() and overwrite:
        shutil.rmtree(out)
    if out.exists() and any(out.iterdir()):
        if not state_path.is_file():
            raise OutputExists(f"output {out} exists and is not a benchmark (no {STATE_FILE}); pass --overwrite "
                               "to replace it, or choose another --out")
        state = json.loads(state_path.read_text(encoding="utf-8"))
        if state.get("protocol") != config.protocol():
            changed = sorted(k for k, v in config.protocol().items() if state.get("protocol", {}).get(k) != v)
            raise OutputExists(f"{out} holds a benchmark with other options ({', '.join(changed)}); run it again "
                               "with the same options to resume, or pass --overwrite to start afresh")
        clash = {k: v for k, v in config.datasets().items() if state.get("datasets", {}).get(k, v) != v}
        if clash:
            raise OutputExists(f"{out}: dataset names {sorted(clash)} named other directories before "
                               f"({', '.join(state['datasets'][k] for k in sorted(clash))}); use new names or --overwrite")
        before = state.get("splits", {})
        moved = sorted(k for k, v in config.splits().items() if before.get(k, v) != v)
        if moved:
            was = ", ".join(f"{k}={before[k] or 'default'}" for k in moved)
            raise OutputExists(f"{out}: the splits of {', '.join(moved)} differ from the benchmark's ({was}); "
                               "keep them to resume, or pass --overwrite")
        resumed = True
        datasets = {**state.get("datasets", {}), **config.datasets()}
        splits = {**state.get("splits", {}), **config.splits()}
    else:
        resumed = False
        datasets, splits = config.datasets(), config.splits()
    out.mkdir(parents=True, exist_ok=True)
    from ferdata import __version__

    state = {"format": FORMAT, "protocol": config.protocol(), "datasets": datasets, "splits": splits,
             "ferdata": __version__}
    tmp = out / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2), encoding="utf-8")
    tmp.replace(state_path)
    return resumed


def cell_dir(out: Path, train: str, test: str, seed: int) -> Path:
    """Where the cell (``train`` model with ``seed``, scored on ``test``) is written."""
    return out / "cells" / f"{train}__{test}" / f"seed-{seed}"


def run_dir(out: Path, train: str, seed: int) -> Path:
    """Where the model of ``train`` with ``seed`` is trained."""
    return out / "runs" / train / f"seed-{seed}"


def _read_cell(path: Path, train: str, test: str, seed: int) -> Cell | None:
    metrics = path / "metrics.json"
    if not (metrics.is_file() and (path / "predictions.csv").is_file()):
        return None
    return Cell(train, test, seed, path, json.loads(metrics.read_text(encoding="utf-8")))


class _AbsentClassFilter(logging.Filter):
    """Hide ``evaluate``'s "class X has no example" warnings: results.csv leaves that recall empty."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "has no example" not in record.getMessage()


@contextlib.contextmanager
def _absent_classes_quiet() -> Iterator[None]:
    log = logging.getLogger("ferdata.train.run")
    quiet = _AbsentClassFilter()
    log.addFilter(quiet)
    try:
        yield
    finally:
        log.removeFilter(quiet)


class _Clock:
    """Times of the trainings and evaluations done by this invocation, and the ETA they imply."""

    def __init__(self, runs: int, cells: int) -> None:
        self.runs_left, self.cells_left = runs, cells
        self.train_s: list[float] = []
        self.eval_s: list[float] = []

    def eta(self) -> str:
        mean_train = sum(self.train_s) / len(self.train_s) if self.train_s else None
        mean_eval = sum(self.eval_s) / len(self.eval_s) if self.eval_s else 0.0
        if (self.runs_left and mean_train is None) or (self.cells_left and not self.eval_s):
            return "ETA after the first cell" if self.cells_left else "ETA 0s"
        seconds = self.runs_left * (mean_train or 0.0) + self.cells_left * mean_eval
        return f"ETA {_duration(seconds)}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def cell_line(index: int, total: int, cell: Cell, *, seconds: float | None, eta: str) -> str:
    """The line printed for a finished cell: its result, what was left out, time and ETA."""
    m = cell.metrics
    left = [f"{m[k]} {what}" for k, what in (("dropped_rows", "dropped"), ("excluded_seen", "seen"))
            if m.get(k)]
    when = "kept from an earlier run" if seconds is None else f"{seconds:.1f}s"
    counts = f" ({', '.join(left)})" if left else ""
    return (f"[{index}/{total}] {cell.train} seed {cell.seed} -> {cell.test}: accuracy {m['accuracy']:.3f}, "
            f"macro F1 {m['macro_f1']:.3f}, n {m['num_examples']}{counts}; {when}; {eta}")


@dataclass
class Runner:
    """One invocation of a benchmark (see :func:`ferdata.benchmark.run_benchmark`)."""

    config: BenchmarkConfig
    out: Path
    plan: Plan
    echo: Callable[[str], None]
    on_cell: Callable[[Cell], None] | None = None
    cells: list[Cell] = field(default_factory=list)
    resumed: int = 0
    train_notes: dict[str, list[str]] = field(default_factory=dict)

    def training_dir(self, spec: DatasetSpec, needs_copy: bool) -> Path:
        """The directory the models of ``spec`` train on (``BENCH/data/NAME`` when regrouped)."""
        if not needs_copy:
            return Path(spec.path)
        target = self.out / "data" / spec.name
        if not (target / "dataset_dict.json").is_file():
            from ferdata.dataset import open_dataset

            info = prepare_training_set(open_dataset(spec.path), spec, self.config.classes, target)
            if info["dropped"]:
                self.echo(f"note: training set {spec.name!r}: {info['dropped']} rows of classes outside the "
                          f"--classes {self.config.classes} label space left out (ledger of {target})")
        return target

    def train(self, spec: DatasetSpec, data: Path, seed: int, clock: _Clock) -> Path:
        """Train (or keep) the model of ``spec`` with ``seed``."""
        from ferdata.train.run import train_run

        run = run_dir(self.out, spec.name, seed)
        if not (run / "run.json").is_file():
            start = time.perf_counter()
            notes: list[str] = []
            train_run(data, run, self.config.train_config(seed), overwrite=True, notes=notes)
            clock.train_s.append(time.perf_counter() - start)
            self.train_notes[f"{spec.name}/seed-{seed}"] = notes
        clock.runs_left -= 1
        return run

    def score(self, run: Path, spec: DatasetSpec, seed: int, test: TestPlan, clock: _Clock) -> tuple[Cell, float | None]:
        """Score (or keep) the cell of ``run`` on ``test``."""
        from ferdata.train.run import evaluate_run

        path = cell_dir(self.out, spec.name, test.spec.name, seed)
        cell = _read_cell(path, spec.name, test.spec.name, seed)
        seconds = None
        if cell is None:
            start = time.perf_counter()
            evaluate_run(run, test.spec.path, split=test.split, out=path, label_map=test.mapping, overwrite=True)
            seconds = time.perf_counter() - start
            clock.eval_s.append(seconds)
            cell = _read_cell(path, spec.name, test.spec.name, seed)
            if cell is None:
                raise UsageError(f"evaluate wrote no metrics.json/predictions.csv into {path}")
        else:
            self.resumed += 1
        clock.cells_left -= 1
        return cell, seconds

    def run(self) -> list[Cell]:
        """Every cell, in order (training set, seed, test set); ``results.csv`` rewritten after each."""
        seeds, tests = self.config.seeds, self.plan.test
        total = len(self.plan.train) * len(seeds) * len(tests)
        clock = _Clock(len(self.plan.train) * len(seeds), total)
        with _absent_classes_quiet():
            self._run_all(clock, total)
        return self.cells

    def _run_all(self, clock: _Clock, total: int) -> None:
        seeds, tests = self.config.seeds, self.plan.test
        for spec, needs_copy in self.plan.train:
            data = self.training_dir(spec, needs_copy)
            for seed in seeds:
                run = self.train(spec, data, seed, clock)
                for test in tests:
                    cell, seconds = self.score(run, spec, seed, test, clock)
                    self.cells.append(cell)
                    self.echo(cell_line(len(self.cells), total, cell, seconds=seconds, eta=clock.eta()))
                    write_csv(self.out / "results.csv", result_rows(self.cells, self.plan.classes), RESULT_COLUMNS)
                    if self.on_cell is not None:
                        self.on_cell(cell)

    def state(self) -> dict[str, Any]:
        """Facts for the report: cells run now and kept, training notes."""
        return {"cells": len(self.cells), "resumed": self.resumed, "train_notes": self.train_notes}
