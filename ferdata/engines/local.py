"""The local engine: ``Dataset.map`` in this process (and its ``num_proc`` workers)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets

    from ferdata.steps import Step, StepContext, StepOutput


class LocalEngine:
    """Runs every step as written: ``ds.map(fn, **map_kwargs)``.

    Example:
        >>> LocalEngine().info()
        {'name': 'local'}
    """

    name = "local"

    def map(self, ds: datasets.Dataset, fn: Callable[..., Any], *, stateful: bool = False,
            **map_kwargs: Any) -> datasets.Dataset:
        """``ds.map(fn, **map_kwargs)``; ``stateful`` changes nothing here.

        ``num_proc`` goes through :func:`ferdata.workers.safe_num_proc`: once TensorFlow is loaded in
        this process, ``Dataset.map`` (which forks its workers) runs in this one process instead.
        """
        if (map_kwargs.get("num_proc") or 1) > 1:
            from ferdata.workers import safe_num_proc

            workers = safe_num_proc(map_kwargs["num_proc"], what="Dataset.map")
            map_kwargs["num_proc"] = workers if workers > 1 else None
        return ds.map(fn, **map_kwargs)

    def run_step(self, step: Step, data: Any, config: Any, ctx: StepContext) -> tuple[StepOutput, dict[str, Any]]:
        """:func:`ferdata.steps.run_step` with this engine active."""
        from ferdata.engines import active
        from ferdata.steps import run_step

        with active(self):
            return run_step(step, data, config, ctx)

    def info(self) -> dict[str, Any]:
        """``{"name": "local"}``."""
        return {"name": self.name}

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
