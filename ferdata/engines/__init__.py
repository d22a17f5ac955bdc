"""Engines: what runs the per-row work of a step, on this machine or on a Ray cluster.

A step never knows which engine runs it. Its per-row work goes through :func:`map_batches`, which
takes the same arguments as ``datasets.Dataset.map`` (plus ``stateful=True`` for a function that
holds a model) and hands them to the engine of the running build:

* ``local`` (:class:`~ferdata.engines.local.LocalEngine`, the default) calls ``Dataset.map``
  with exactly those arguments: the behaviour of every single command and of ``ferdata build``;
* ``ray`` (:class:`~ferdata.engines.ray.RayEngine`, ``ferdata build --engine ray``) runs the same
  batch function over Ray Data ``map_batches`` through one adapter (Arrow batch <-> the steps'
  dict-of-lists) and returns an ordinary ``datasets.Dataset``.

Everything else a step does (source reads, global decisions such as dedupe, balance and split,
the rejects ledger, the manifest entry) runs on the driver, unchanged; see ``docs/scale.md``.

Example:
    >>> from ferdata.engines import get_engine
    >>> get_engine("local").name
    'local'
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from ferdata.errors import UsageError

if TYPE_CHECKING:
    import datasets

    from ferdata.steps import Step, StepContext, StepOutput

#: Engine names accepted by ``ferdata build --engine``.
ENGINES = ("local", "ray")


class Engine(Protocol):
    """What an engine provides."""

    name: str

    def map(self, ds: datasets.Dataset, fn: Callable[..., Any], *, stateful: bool = False,
            **map_kwargs: Any) -> datasets.Dataset:
        """``ds.map(fn, **map_kwargs)``, run where the engine runs work."""
        ...

    def run_step(self, step: Step, data: Any, config: Any, ctx: StepContext) -> tuple[StepOutput, dict[str, Any]]:
        """Run one registered step (see :func:`ferdata.steps.run_step`) with this engine active."""
        ...

    def info(self) -> dict[str, Any]:
        """The engine and its settings, for ``ferdata.json``."""
        ...

    def close(self) -> None:
        """Release what the engine started."""
        ...

    def __enter__(self) -> Engine:
        ...

    def __exit__(self, *exc: object) -> None:
        ...


_current: contextvars.ContextVar[Engine | None] = contextvars.ContextVar("ferdata_engine", default=None)


def current_engine() -> Engine:
    """The engine of the running step (the local engine outside a build)."""
    engine = _current.get()
    if engine is None:
        from ferdata.engines.local import LocalEngine

        return LocalEngine()
    return engine


@contextlib.contextmanager
def active(engine: Engine) -> Iterator[Engine]:
    """Make ``engine`` the one :func:`map_batches` uses inside the block."""
    token = _current.set(engine)
    try:
        yield engine
    finally:
        _current.reset(token)


def map_batches(ds: datasets.Dataset, fn: Callable[..., Any], *, stateful: bool = False,
                **map_kwargs: Any) -> datasets.Dataset:
    """Run a step's batch function over ``ds`` on the current engine.

    Args:
        ds: the split to transform.
        fn: the batch function (``dict[str, list]`` -> ``dict[str, list]``, or the columns named by
            ``input_columns``), exactly as for ``Dataset.map(batched=True)``.
        stateful: ``fn`` loads a model (MTCNN, ESPCN): the Ray engine runs it in a pool of actors
            so each builds its model once. The local engine ignores it.
        **map_kwargs: ``Dataset.map`` arguments (``batched``, ``batch_size``, ``fn_kwargs``,
            ``input_columns``, ``features``, ``remove_columns``, ``num_proc``, ``desc``, ...).

    Returns:
        The transformed dataset, rows in input order.

    Example:
        >>> mapped = map_batches(raw, score_batch, input_columns=["image"], batched=True,
        ...                      fn_kwargs={"config": config}, features=features)  # doctest: +SKIP
    """
    return current_engine().map(ds, fn, stateful=stateful, **map_kwargs)


def get_engine(name: str, *, address: str | None = None, **settings: Any) -> Engine:
    """Build the engine ``name`` (``local`` or ``ray``).

    Args:
        name: ``local`` or ``ray``.
        address: Ray only: ``auto`` (the cluster this machine belongs to), ``ray://HOST:PORT`` (Ray
            Client) or None (start a Ray instance on this machine for the build).
        **settings: engine options (Ray: ``num_cpus``, ``object_store_memory``, ``actors``).

    Raises:
        UsageError: for an unknown name, an address given to the local engine, or Ray missing.
    """
    if name == "local":
        if address is not None:
            raise UsageError(f"--ray-address {address} needs --engine ray")
        from ferdata.engines.local import LocalEngine

        return LocalEngine()
    if name == "ray":
        from ferdata.engines.ray import RayEngine

        return RayEngine(address=address, **settings)
    raise UsageError(f"--engine {name} is not allowed; allowed: {', '.join(ENGINES)}")


__all__ = ["ENGINES", "Engine", "active", "current_engine", "get_engine", "map_batches"]
