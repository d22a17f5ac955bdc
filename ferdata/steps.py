"""The step registry and the machinery to run one step from one dataset directory to another.

A step is a plain function ``fn(data, config, ctx) -> StepOutput`` registered by name with a
config dataclass::

    @dataclass
    class BalanceConfig:
        strategy: str = "undersample"
        def __post_init__(self): ...   # validate, raise UsageError naming the value

    @register_step("balance", BalanceConfig)
    def balance_step(data, config, ctx): ...

``data`` is the input ``DatasetDict`` (``None`` for *source* steps such as importers and the
crawler, which create a dataset). Per-row work runs as ``Dataset.map(batched=True,
num_proc=ctx.num_proc)`` over a function of a batch; bad rows are marked with
``_reject_reason`` and moved to the ledger by :func:`ferdata.dataset.partition_rejects`, or put
in ``StepOutput.rejects`` directly. The same steps serve the single commands
(``ferdata balance``) and recipes (``ferdata build``).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferdata.errors import RecipeError, UsageError
from ferdata.workers import _warned_tf_fork, safe_num_proc  # noqa: F401  (re-exported: callers import it here)

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

#: Modules whose import registers steps. Each must import nothing heavy at module level.
STEP_MODULES = (
    "ferdata.sources.fer2013",
    "ferdata.sources.folder",
    "ferdata.sources.affectnet",
    "ferdata.sources.hf",
    "ferdata.labels.step",
    "ferdata.faces",
    "ferdata.quality",
    "ferdata.balance",
    "ferdata.split",
    "ferdata.sources.crawl",
    "ferdata.review",
    "ferdata.sr.step",
    "ferdata.dedupe",
)


def limit_rows(data: datasets.DatasetDict, limit: int | None) -> tuple[datasets.DatasetDict, int]:
    """The first ``limit`` rows of every split (a trial), and how many rows that leaves out."""
    import datasets

    if limit is None or all(len(ds) <= limit for ds in data.values()):
        return data, 0
    kept = datasets.DatasetDict({k: ds.select(range(min(limit, len(ds)))) for k, ds in data.items()})
    return kept, total_rows(data) - total_rows(kept)


@dataclass
class StepContext:
    """Run-wide settings every step receives.

    ``limit`` has one meaning everywhere: a trial. A step with an input dataset sees only the first
    ``limit`` rows of each split (cut centrally by :func:`run_step`); a source step reads at most
    ``limit`` items. The step entry records ``limit`` and ``limited_out`` (rows left out; ``None``
    when a source cannot count them) and the manifest gets ``"trial": true``.
    """

    num_proc: int = 1
    seed: int = 0
    limit: int | None = None
    work_dir: Path | None = None
    #: Directory of the dataset being built (recipes), so steps can find files beside it.
    out_dir: Path | None = None
    #: The input's rejects ledger so far (read-only), so a step can tell a row removed by an
    #: earlier step from one that never existed (``review_exclusions``); set by apply_step and build.
    ledger: Sequence[dict[str, Any]] = ()

    def scratch(self) -> Path:
        """A scratch directory that lives as long as the run (for Arrow caches of new datasets)."""
        if self.work_dir is None:
            import atexit
            import shutil
            import tempfile

            self.work_dir = Path(tempfile.mkdtemp(prefix="ferdata-"))
            atexit.register(shutil.rmtree, self.work_dir, True)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        return self.work_dir


@dataclass
class StepOutput:
    """What a step returns: the new dataset, ledger rows, and facts for ``ferdata.json``."""

    data: datasets.DatasetDict
    rejects: list[dict[str, str]] = field(default_factory=list)
    #: Per-step facts recorded in the step's manifest entry (counts, model names, ...).
    info: dict[str, Any] = field(default_factory=dict)
    #: Top-level manifest keys to set (e.g. ``class_weights``).
    manifest: dict[str, Any] = field(default_factory=dict)
    #: Extra files to place inside the output directory before it is renamed into place
    #: (``{name in the output: path of the file written by the step}``), e.g. a report.
    files: dict[str, str] = field(default_factory=dict)


StepFn = Callable[[Any, Any, StepContext], StepOutput]


@dataclass(frozen=True)
class Step:
    """A registered step."""

    name: str
    fn: StepFn
    config_cls: type
    source: bool
    summary: str

    def param_names(self) -> list[str]:
        """Names of the step's parameters."""
        return [f.name for f in dataclasses.fields(self.config_cls)]

    def check_param_names(self, names: Iterable[str]) -> None:
        """Raise ``RecipeError`` for a name that is not one of the step's parameters (listing the valid ones)."""
        valid = self.param_names()
        unknown = sorted(set(names) - set(valid))
        if unknown:
            raise RecipeError(
                f"step {self.name!r} has no parameter {', '.join(map(repr, unknown))}; "
                f"valid parameters: {', '.join(valid) or '(none)'}"
            )

    def make_config(self, params: dict[str, Any] | None = None) -> Any:
        """Build the step's config from ``params``; ``None`` values keep the defaults.

        Raises:
            RecipeError: for an unknown parameter (listing the valid ones).
            UsageError: for a bad value (from the config's own checks).
        """
        params = {k: v for k, v in (params or {}).items() if v is not None}
        self.check_param_names(params)
        try:
            return self.config_cls(**params)
        except TypeError as e:
            raise UsageError(f"step {self.name!r}: {e}") from e


_REGISTRY: dict[str, Step] = {}
_loaded = False


def register_step(name: str, config: type, *, source: bool = False) -> Callable[[StepFn], StepFn]:
    """Register ``fn`` as the step ``name`` with the config dataclass ``config``.

    Example:
        >>> @dataclass
        ... class NoopConfig:
        ...     pass
        >>> @register_step("noop-demo", NoopConfig)
        ... def noop(data, config, ctx):
        ...     return StepOutput(data)
    """
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"config of step {name!r} must be a dataclass, got {config!r}")

    def decorator(fn: StepFn) -> StepFn:
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        _REGISTRY[name] = Step(name, fn, config, source, summary)
        return fn

    return decorator


def load_steps() -> dict[str, Step]:
    """Import the step modules (once) and return the registry."""
    global _loaded
    if not _loaded:
        for module in STEP_MODULES:
            importlib.import_module(module)
        _loaded = True
    return _REGISTRY


def get_step(name: str) -> Step:
    """Return the registered step ``name``.

    Raises:
        RecipeError: for an unknown name, listing the valid ones.
    """
    steps = load_steps()
    if name not in steps:
        raise RecipeError(f"unknown step {name!r}; valid steps: {', '.join(sorted(steps))}")
    return steps[name]


def total_rows(data: datasets.DatasetDict | None) -> int:
    """Rows over all splits (0 for None)."""
    return sum(len(ds) for ds in data.values()) if data is not None else 0


def class_totals(data: datasets.DatasetDict) -> dict[str, int]:
    """Rows per class name over all splits (empty when there is no ClassLabel ``label``)."""
    import datasets

    from ferdata.dataset import column_values

    totals: Counter[str] = Counter()
    for ds in data.values():
        feature = ds.features.get("label")
        if isinstance(feature, datasets.ClassLabel) and len(ds):
            totals.update(feature.names[i] for i in column_values(ds, "label") if i >= 0)
    return dict(sorted(totals.items()))


def run_step(step: Step, data: datasets.DatasetDict | None, config: Any, ctx: StepContext) -> tuple[StepOutput, dict[str, Any]]:
    """Run one step and return its output and its ``ferdata.json`` entry.

    The entry records the step's parameters, ``seed`` and ``limit``; with a limit, a step with an
    input sees the first ``limit`` rows of each split and ``limited_out`` counts the others, so
    ``input_rows == kept + rejected + limited_out`` for every step that neither adds nor splits rows.
    Worker pools are guarded by :func:`safe_num_proc` for the duration of the step.
    """
    from ferdata.dataset import add_ledger_lineage, add_ledger_thumbnails, no_input_caching

    if step.source and data is not None:
        raise RecipeError(f"step {step.name!r} creates a dataset and must come first in a recipe")
    if not step.source and data is None:
        raise RecipeError(f"step {step.name!r} needs an input dataset; a recipe must start with an import step")
    input_rows = total_rows(data)
    limited_out: int | None = 0
    if data is not None:
        data, limited_out = limit_rows(data, ctx.limit)
    requested = ctx.num_proc
    ctx.num_proc = safe_num_proc(requested, what=step.name)
    from ferdata.progress import hf_bars

    start = time.perf_counter()
    try:
        # the step's own Dataset.map is its one bar; a source's generator/split bookkeeping shows none
        with no_input_caching(), hf_bars(not step.source):
            out = step.fn(data, config, ctx)
    finally:
        ctx.num_proc = requested
    seconds = time.perf_counter() - start
    add_ledger_thumbnails(out.rejects, data)  # removed rows keep a small picture in the ledger
    add_ledger_lineage(out.rejects, data)  # ... and the root_id / parent_id of the row removed
    if step.source:
        limited_out = out.info.pop("limited_out", 0 if ctx.limit is None else None)
    entry = {
        "step": step.name,
        "params": dataclasses.asdict(config),
        "seed": ctx.seed,
        "limit": ctx.limit,
        "input_rows": input_rows,
        "kept": total_rows(out.data),
        "rejected": len(out.rejects),
        "limited_out": limited_out,
        "rejected_by_reason": dict(Counter(r["reason"] for r in out.rejects)),
        "seconds": round(seconds, 3),
        "class_counts": class_totals(out.data),
    }
    if out.info:
        entry["info"] = out.info
    if ctx.limit is not None:
        logger.info("%s: --limit %d is a trial: %s rows left out (recorded as limited_out; the output is "
                    "marked trial)", step.name, ctx.limit, "uncounted" if limited_out is None else limited_out)
    return out, entry


def apply_step(
    name: str,
    params: dict[str, Any],
    *,
    inputs: Sequence[str | Path] = (),
    out: str | Path,
    ctx: StepContext | None = None,
    overwrite: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Run one registered step from a dataset directory (or none, for sources) into ``out``.

    The manifest and rejects ledger of the input are carried over and the step appended.

    Returns:
        The output path and the step's manifest entry.

    Example:
        >>> apply_step("balance", {"strategy": "undersample"}, inputs=["fer"], out="fer-bal")  # doctest: +SKIP
    """
    from ferdata.commit import Chain, commit
    from ferdata.dataset import open_dataset, prepare_output

    ctx = ctx or StepContext()
    step = get_step(name)
    config = step.make_config(params)
    out = prepare_output(out, overwrite=overwrite, inputs=inputs)
    if step.source:
        data, chain = None, Chain.start(seed=ctx.seed)
    else:
        data, chain = open_dataset(inputs[0]), Chain.of(inputs[0])
    ctx.ledger = chain.rejects
    result, entry = run_step(step, data, config, ctx)
    chain.add(result, entry, seed=ctx.seed)
    commit(result.data, out, chain, overwrite=overwrite, num_proc=ctx.num_proc, files=result.files)
    return out, entry
