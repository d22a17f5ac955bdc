"""``ferdata benchmark``: paper 001's cross-domain protocol as one command.

Train one model per (training set, seed), score each on every test set under one label space,
and report the train x test matrix with its uncertainty, per class and per demographic group.

* :mod:`ferdata.benchmark.config` -- :class:`BenchmarkConfig`, :class:`DatasetSpec`, option parsing;
* :mod:`ferdata.benchmark.space` -- the label space (paper 003's groupings) and the rule for a test
  class the models cannot output (dropped, counted);
* :mod:`ferdata.benchmark.protocol` -- the run: checks, resumable runs and cells, one line per cell;
* :mod:`ferdata.benchmark.tables` -- ``results.csv``, ``summary.csv`` (bootstrap intervals), ``groups.csv``;
* :mod:`ferdata.benchmark.groups` -- demographic terms of crawled rows from their ``query``;
* :mod:`ferdata.benchmark.html` -- ``report.html``.

Each cell is ``ferdata evaluate``'s output for that run and test set (the same function, the same
numbers), so rows a model was trained on are left out and counted there too.

Example:
    >>> from ferdata.benchmark import BenchmarkConfig, DatasetSpec, run_benchmark
    >>> cfg = BenchmarkConfig(train=(DatasetSpec("fer", "fer2013"),),
    ...                       test=(DatasetSpec("fer", "fer2013"), DatasetSpec("btfer", "btfer")),
    ...                       model="shallow-cnn", epochs=30, seeds=(0, 1, 2))           # doctest: +SKIP
    >>> run_benchmark(cfg, "bench").summary                                           # doctest: +SKIP
    PosixPath('bench/summary.csv')
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ferdata.benchmark.config import BenchmarkConfig, DatasetSpec, dataset_specs, parse_named, parse_seeds
from ferdata.benchmark.protocol import Plan, Runner, check_inputs, open_output
from ferdata.benchmark.tables import GROUP_COLUMNS, Cell, group_rows, summary_rows, summed_confusion, write_csv

logger = logging.getLogger(__name__)


@dataclass
class BenchmarkResult:
    """What :func:`run_benchmark` wrote."""

    out: Path
    cells: list[Cell]
    results: Path
    summary: Path
    groups: Path | None
    report: Path
    #: cells kept from an earlier, interrupted run of the same benchmark
    resumed: int
    seconds: float
    notes: list[str] = field(default_factory=list)


def run_benchmark(config: BenchmarkConfig, out: str | Path, *, overwrite: bool = False,
                  echo: Callable[[str], None] | None = None, on_cell: Callable[[Cell], None] | None = None
                  ) -> BenchmarkResult:
    """Run (or resume) a benchmark into ``out``; see the module doc and :mod:`ferdata.benchmark.protocol`.

    Args:
        config: the protocol.
        out: the benchmark directory (resumed when it holds the same protocol).
        overwrite: start afresh in an existing ``out``.
        echo: receives one line per finished cell (and notes); default: logged at INFO.
        on_cell: called with each finished cell (tests use it to interrupt a run).

    Returns:
        A :class:`BenchmarkResult`.

    Raises:
        UsageError: for a dataset, split or class that does not fit, before any training.
        OutputExists: for an ``out`` holding something else.
    """
    start = time.perf_counter()
    out = Path(out)
    say = echo or logger.info
    plan = check_inputs(config)
    for note in plan.notes:
        say(f"note: {note}")
    resumed = open_output(out, config, overwrite=overwrite)
    if resumed:
        say(f"note: resuming the benchmark in {out}: finished runs and cells are kept")
    runner = Runner(config, out, plan, say, on_cell)
    cells = runner.run()
    return _finish(config, out, plan, runner, cells, start, say)


def _finish(config: BenchmarkConfig, out: Path, plan: Plan, runner: Runner, cells: list[Cell],
            start: float, say: Callable[[str], None]) -> BenchmarkResult:
    from ferdata.benchmark.html import write_benchmark_report
    from ferdata.train.metrics import write_confusion_csv

    summary = summary_rows(cells, plan.classes, replicates=config.bootstrap)
    write_csv(out / "summary.csv", summary)
    (out / "confusion").mkdir(exist_ok=True)
    confusion = summed_confusion(cells)
    for (train, test), cm in confusion.items():
        write_confusion_csv(cm, plan.classes, out / "confusion" / f"{train}__{test}.csv")
    notes = list(plan.notes)
    groups, group_notes = _groups(config, plan, cells)
    for note in group_notes:
        say(f"note: {note}")
    notes += group_notes
    groups_path = write_csv(out / "groups.csv", groups, GROUP_COLUMNS) if groups else None
    if not groups:
        (out / "groups.csv").unlink(missing_ok=True)
    report = write_benchmark_report(out, config=config, plan=plan, cells=cells, summary=summary, groups=groups,
                                    confusion=confusion, notes=notes)
    return BenchmarkResult(out, cells, out / "results.csv", out / "summary.csv", groups_path, report,
                           runner.resumed, round(time.perf_counter() - start, 1), notes)


def _groups(config: BenchmarkConfig, plan: Plan, cells: list[Cell]) -> tuple[list[dict[str, object]], list[str]]:
    """``groups.csv`` rows of the test sets with a ``query`` column, and notes on those that gave none."""
    from ferdata.benchmark.groups import QUERY_COLUMN, parse_queries
    from ferdata.dataset import open_dataset
    from ferdata.sources.queries import QueryGrid

    with_query = [t for t in plan.test if t.has_query]
    if not with_query:
        return [], []
    grid = QueryGrid.load(config.queries)
    if not grid.demographics:
        return [], [f"the query manifest {config.queries} has no demographic dimensions: no groups.csv"]
    terms = {}
    notes = []
    for t in with_query:
        parsed = parse_queries(open_dataset(t.spec.path)[t.split][QUERY_COLUMN], grid)
        terms[t.spec.name] = parsed
        if all(term == "(none)" for values in parsed.values() for term in values):
            notes.append(f"test set {t.spec.name!r}: no query names a demographic term of {config.queries} "
                         "(every group is '(none)')")
    return group_rows(cells, terms, replicates=config.bootstrap), notes


__all__ = ["BenchmarkConfig", "BenchmarkResult", "Cell", "DatasetSpec", "dataset_specs", "parse_named", "parse_seeds",
           "run_benchmark"]
