"""The Ray engine: a step's per-row batch function over Ray Data ``map_batches``.

``ferdata build RECIPE --engine ray`` runs the recipe's steps as the local engine does, on the
driver, except their per-row work (:func:`ferdata.engines.map_batches`: hashing, quality scores,
MTCNN crops, ESPCN upscaling, label regrouping), which this engine sends to the Ray cluster:

1. the split's Arrow table becomes a Ray Dataset of blocks of whole batches (block boundaries fall
   on multiples of the step's ``batch_size``, so every batch holds the rows it holds locally);
2. one ``map_batches`` stage runs :func:`apply_batch`, the adapter: Arrow batch -> the
   dict-of-lists ``Dataset.map`` would pass (decoded through the split's features) -> the step's
   own batch function -> merged with the input columns as ``Dataset.map`` merges them -> Arrow with
   the step's output features. Model-holding functions (``stateful=True``) run in a callable class
   under ``compute=ActorPoolStrategy(...)`` (one model per actor, TensorFlow/OpenCV capped to the
   actor's CPUs), others as tasks; the pool is kept one CPU smaller than the cluster so read and
   write tasks never starve;
3. the result blocks stream back in order (``preserve_order``) into an Arrow file that becomes the
   ``datasets.Dataset`` the step continues with.

Bad rows never kill a job and never vanish: the steps mark a bad row with ``_reject_reason``
themselves; if a batch function still raises, the adapter reruns that batch row by row and marks
the rows that raise (reason ``step_error``, details the exception), so the step moves them to the
ledger like any other reject. ``DataContext.max_errored_blocks`` stays 0: a failure of the engine
itself fails the build loudly, and the checkpoints of the finished steps stay for the rerun.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferdata.errors import StepFailed, UsageError

if TYPE_CHECKING:
    import datasets
    import pyarrow as pa

    from ferdata.steps import Step, StepContext, StepOutput

logger = logging.getLogger(__name__)

#: Column the adapter adds to every output block: the Ray node that ran it (removed on the driver).
NODE_COLUMN = "_engine_node"
#: Largest block the engine cuts from a split (bytes, rounded to whole batches).
MAX_BLOCK_BYTES = 64 * 1024**2
#: ``Dataset.map`` arguments the adapter implements; any other argument runs the map locally.
_SUPPORTED = {"batched", "batch_size", "fn_kwargs", "input_columns", "features", "remove_columns", "num_proc", "desc",
              "cache_file_name", "load_from_cache_file", "writer_batch_size", "keep_in_memory"}


def cap_threads(threads: int) -> None:
    """Limit the math libraries of this (worker) process to ``threads`` threads.

    Sets the OpenMP/BLAS/TensorFlow environment before they start and, if TensorFlow is
    importable, its intra- and inter-op pools (possible only before TensorFlow ran here).
    """
    value = str(max(1, threads))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                "TF_NUM_INTEROP_THREADS"):
        os.environ[var] = value
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import cv2

        cv2.setNumThreads(max(1, threads))
    except ImportError:  # pragma: no cover - cv2 is a dependency
        pass
    try:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(max(1, threads))
        tf.config.threading.set_inter_op_parallelism_threads(max(1, threads))
    except (ImportError, RuntimeError):  # RuntimeError: TensorFlow already initialised in this process
        pass


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _call_rows(fn: Callable[..., Any], batch: dict[str, list[Any]], n: int, input_columns: Sequence[str] | None,
               fn_kwargs: dict[str, Any], out_features: datasets.Features, desc: str) -> dict[str, list[Any]]:
    """The batch function row by row; a row that raises becomes a ``step_error`` reject."""
    from ferdata.dataset import REJECT_DETAILS, REJECT_REASON

    merged: dict[str, list[Any]] = {name: [] for name in out_features}
    for i in range(n):
        row = {k: v[i:i + 1] for k, v in batch.items()}
        try:
            out = fn(*[row[c] for c in input_columns], **fn_kwargs) if input_columns else fn(row, **fn_kwargs)
            rows = len(next(iter(out.values()))) if out else 0
            for name in out_features:
                merged[name].extend(out[name] if name in out else (row[name] if name in row else [None] * rows))
        except Exception as e:  # noqa: BLE001 - any failure of one row goes to the ledger
            for name in out_features:
                merged[name].append(row[name][0] if name in row else None)
            merged[REJECT_REASON][-1] = "step_error"
            merged[REJECT_DETAILS][-1] = json.dumps({"step": desc, "error": f"{type(e).__name__}: {e}"})
    return merged


def apply_batch(table: pa.Table, *, fn: Callable[..., Any], fn_kwargs: dict[str, Any],
                input_columns: Sequence[str] | None, remove_columns: Sequence[str], in_features: datasets.Features,
                out_features: datasets.Features, desc: str) -> pa.Table:
    """The adapter: run a ``Dataset.map(batched=True)`` function on one Arrow batch.

    Decodes the batch as ``Dataset.map`` does (``Features.decode_batch`` of the Python columns),
    calls ``fn`` on the whole batch or on the ``input_columns``, merges its output over the input
    columns not in ``remove_columns``, and encodes the result with ``out_features``; then adds
    :data:`NODE_COLUMN`. A batch that raises is rerun row by row (see the module docstring).
    """
    import datasets
    import pyarrow as pa

    from ferdata.dataset import REJECT_REASON

    n = table.num_rows
    batch = in_features.decode_batch(table.to_pydict())
    try:
        out = fn(*[batch[c] for c in input_columns], **fn_kwargs) if input_columns else fn(batch, **fn_kwargs)
        merged = {c: v for c, v in batch.items() if c not in remove_columns}
        merged.update(out)
    except Exception:
        if REJECT_REASON not in out_features:
            raise
        logger.warning("%s: a batch of %d rows raised; rerunning it row by row", desc, n)
        merged = _call_rows(fn, batch, n, input_columns, fn_kwargs, out_features, desc)
    missing = [c for c in out_features if c not in merged]
    if missing:
        raise ValueError(f"{desc}: the batch function returned no column {missing}; it returned {sorted(merged)}")
    ordered = {c: merged[c] for c in out_features}
    result = datasets.Dataset.from_dict(ordered, features=out_features).data.table
    rows = result.num_rows
    return result.append_column(NODE_COLUMN, pa.array([_node_id()] * rows, pa.string()))


class BatchActor:
    """The adapter as a callable class: one per Ray actor, so a model is built once per actor.

    The model itself is built by the step's batch function the first time it runs (each step keeps
    one model per process), which in an actor means once per actor.
    """

    def __init__(self, threads: int = 1, **adapter: Any) -> None:
        cap_threads(threads)
        self.adapter = adapter

    def __call__(self, table: pa.Table) -> pa.Table:
        return apply_batch(table, **self.adapter)


def _blocks(table: pa.Table, batch_size: int, cpus: int) -> list[pa.Table]:
    """Cut ``table`` into blocks of whole batches: enough blocks to keep every CPU busy, none
    larger than :data:`MAX_BLOCK_BYTES` (a block of one batch at least)."""
    n = table.num_rows
    batches = max(1, math.ceil(n / batch_size))
    per_row = max(1, table.nbytes // max(1, n))
    by_bytes = max(1, MAX_BLOCK_BYTES // (per_row * batch_size))
    by_cpus = max(1, math.ceil(batches / (4 * max(1, cpus))))
    rows = batch_size * min(by_bytes, by_cpus)
    return [table.slice(start, rows) for start in range(0, n, rows)]


class RayEngine:
    """Runs per-row work on a Ray cluster (see the module docstring).

    Args:
        address: ``None`` starts a Ray instance on this machine (listening on 127.0.0.1 only) for
            the build and stops it at :meth:`close`; ``auto`` joins the cluster this machine is part
            of (``ray start``); ``ray://HOST:PORT`` connects through Ray Client. A Ray already
            initialised in this process (``ray.init`` by the caller) is used as it is.
        num_cpus: CPUs of the instance started for ``address=None`` (None = all).
        object_store_memory: bytes of its object store (None = Ray's default, 30% of memory).
        actors: actors of a model-holding step's pool (None = the cluster's CPUs minus one, at least 1).

    Example:
        >>> with RayEngine(num_cpus=2) as engine:                                 # doctest: +SKIP
        ...     build(load_recipe("fer2013-improved", {"source": "fer.csv"}), "out", engine=engine)
    """

    name = "ray"

    def __init__(self, *, address: str | None = None, num_cpus: int | None = None,
                 object_store_memory: int | None = None, actors: int | None = None) -> None:
        if address is not None and address != "auto" and not address.startswith("ray://"):
            raise UsageError(f"--ray-address {address} is not allowed; allowed: auto, ray://HOST:PORT")
        if actors is not None and actors < 1:
            raise UsageError(f"actors must be 1 or more, got {actors}")
        self.address = address
        self.num_cpus = num_cpus
        self.object_store_memory = object_store_memory
        self.actors = actors
        self._started = False
        self._tmp: Path | None = None
        #: rows each Ray node produced, per map (``desc``), for ``ferdata.json`` and tests
        self.node_rows: dict[str, Counter[str]] = {}

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Connect to (or start) Ray and set the Data context; idempotent."""
        if self.address is None and "ray" not in _imported():
            # a Ray started here serves this process only: bind its servers to the loopback address
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        try:
            import ray
        except ImportError as e:
            raise UsageError("--engine ray needs Ray Data: pip install 'ferdata[ray]'") from e
        if not ray.is_initialized():
            if self.address is None:
                # "local": a new instance even when `ray start` left a cluster on this machine
                ray.init(address="local", num_cpus=self.num_cpus, object_store_memory=self.object_store_memory,
                         include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
            else:
                ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING)
            self._started = True
        import ray.data

        from ferdata.progress import progress_bars_disabled

        # ferdata configures only its own logger: Ray Data's per-dataset INFO lines stay in Ray's logs
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        context = ray.data.DataContext.get_current()
        context.max_errored_blocks = 0
        context.execution_options.preserve_order = True
        context.enable_progress_bars = not progress_bars_disabled()
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="ferdata-ray-"))

    def close(self) -> None:
        """Shut down the Ray this engine started (not one it joined) and remove its files."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> RayEngine:
        return self  # Ray starts at the first step that runs (a resumed build may need none)

    def __exit__(self, *exc: object) -> None:
        self.close()

    def cluster_cpus(self) -> int:
        """CPUs of the cluster."""
        import ray

        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    def info(self) -> dict[str, Any]:
        """Engine settings and where the work ran, for ``ferdata.json``."""
        from importlib import metadata

        info: dict[str, Any] = {"name": self.name, "address": self.address or "local instance",
                                "ray": metadata.version("ray")}
        try:
            import ray

            if ray.is_initialized():
                info["nodes"] = len([n for n in ray.nodes() if n.get("Alive")])
                info["cpus"] = self.cluster_cpus()
        except ImportError:  # pragma: no cover
            pass
        info["actors"] = self.actors
        info["rows_per_node"] = {desc: dict(sorted(c.items())) for desc, c in self.node_rows.items()}
        return info

    def run_step(self, step: Step, data: Any, config: Any, ctx: StepContext) -> tuple[StepOutput, dict[str, Any]]:
        """:func:`ferdata.steps.run_step` with this engine running the step's per-row work."""
        from ferdata.engines import active
        from ferdata.steps import run_step

        self.start()
        with active(self):
            return run_step(step, data, config, ctx)

    # ------------------------------------------------------------ per-row work
    def map(self, ds: datasets.Dataset, fn: Callable[..., Any], *, stateful: bool = False,
            **map_kwargs: Any) -> datasets.Dataset:
        """``ds.map(fn, **map_kwargs)`` over Ray Data; see the module docstring.

        Runs locally instead (``Dataset.map``) when the map is not batched, has no output
        ``features``, uses arguments the adapter does not implement (``with_indices``, ...), or the
        split is empty: those are small driver-side maps, and the result is the same.
        """
        import datasets
        import pyarrow as pa

        unsupported = sorted(set(map_kwargs) - _SUPPORTED)
        features = map_kwargs.get("features")
        if unsupported or not map_kwargs.get("batched") or features is None or len(ds) == 0:
            return ds.map(fn, **map_kwargs)
        import ray
        import ray.data

        self.start()
        tmp = self._tmp or Path(tempfile.mkdtemp(prefix="ferdata-ray-"))
        self._tmp = tmp
        batch_size = int(map_kwargs.get("batch_size") or 1000)
        input_columns = map_kwargs.get("input_columns")
        if isinstance(input_columns, str):
            input_columns = [input_columns]
        remove = map_kwargs.get("remove_columns") or []
        remove = [remove] if isinstance(remove, str) else list(remove)
        desc = str(map_kwargs.get("desc") or getattr(fn, "__name__", "map"))
        adapter = {"fn": fn, "fn_kwargs": dict(map_kwargs.get("fn_kwargs") or {}), "input_columns": input_columns,
                   "remove_columns": remove, "in_features": ds.features, "out_features": features, "desc": desc}
        table = ds.with_format("arrow")[:]
        cpus = self.cluster_cpus()
        rds = ray.data.from_arrow(_blocks(table, batch_size, cpus))
        if stateful:
            actors = self.actors or max(1, cpus - 1)
            rds = rds.map_batches(BatchActor, batch_size=batch_size, batch_format="pyarrow", zero_copy_batch=True,
                                  fn_constructor_kwargs={"threads": 1, **adapter}, num_cpus=1,
                                  compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors))
        else:
            rds = rds.map_batches(apply_batch, batch_size=batch_size, batch_format="pyarrow", zero_copy_batch=True,
                                  fn_kwargs=adapter, num_cpus=1)
        path = tmp / f"map-{len(list(tmp.iterdir())):05d}.arrow"
        nodes: Counter[str] = Counter()
        rows = 0
        schema = features.arrow_schema
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            # whole blocks, streamed in order as they finish (preserve_order)
            for block in rds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1):
                if block.num_rows == 0:
                    continue
                nodes.update(block.column(NODE_COLUMN).to_pylist())
                block = block.drop_columns([NODE_COLUMN]).select(schema.names).cast(schema)
                writer.write_table(block)
                rows += block.num_rows
        self.node_rows[desc] = self.node_rows.get(desc, Counter()) + nodes
        if not remove and rows != len(ds):
            raise StepFailed(f"{desc}: the Ray engine returned {rows} rows for {len(ds)}; nothing was written")
        return datasets.Dataset.from_file(str(path), info=datasets.DatasetInfo(features=features))


def _imported() -> set[str]:
    import sys

    return {name.split(".")[0] for name in sys.modules}


__all__ = ["BatchActor", "RayEngine", "apply_batch", "cap_threads"]
