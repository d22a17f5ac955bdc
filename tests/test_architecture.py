"""docs/architecture.md's "How to add a step", run as written: a per-image step in under 40 lines."""
# ruff: noqa: E402, I001  (the example keeps its own imports, as a new module would)

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np

from ferdata import steps

# --8<-- [start:example]
from dataclasses import dataclass

from ferdata.errors import UsageError
from ferdata.rows import RowRejected, map_images
from ferdata.steps import StepContext, StepOutput, register_step


@dataclass
class ContrastConfig:
    """Options of the ``contrast`` step."""

    min_std: float = 5.0  # grey levels; flatter images go to the ledger

    def __post_init__(self) -> None:
        if self.min_std < 0:
            raise UsageError(f"--min-std {self.min_std} is not allowed; allowed: a number >= 0")


def contrast_of(pixels: np.ndarray, row: dict, *, config: ContrastConfig) -> dict:
    """One image's new column; a flat image is rejected with a reason and details."""
    std = float(pixels.std())
    if std < config.min_std:
        raise RowRejected("flat", {"contrast": round(std, 2), "min_std": config.min_std})
    return {"contrast": std}


@register_step("contrast", ContrastConfig)
def contrast_step(data, config: ContrastConfig, ctx: StepContext) -> StepOutput:
    """Score every image's contrast; drop the flat ones."""
    import datasets

    dd, rejects = map_images(data, contrast_of, step="contrast", fn_kwargs={"config": config},
                             columns={"contrast": datasets.Value("float32")}, num_proc=ctx.num_proc)
    return StepOutput(dd, rejects)
# --8<-- [end:example]


def test_the_documented_step_is_short_and_works(fer_dir: Path, tmp_path: Path) -> None:
    from ferdata.dataset import open_dataset, read_rejects
    from ferdata.steps import apply_step

    source = inspect.getsource(inspect.getmodule(test_the_documented_step_is_short_and_works))
    example = source.split("# --8<-- [start:example]\n")[1].split("# --8<-- [end:example]")[0]
    assert len(example.strip().splitlines()) <= 40
    try:
        out, entry = apply_step("contrast", {"min_std": 75.0}, inputs=[fer_dir], out=tmp_path / "c")
        dd = open_dataset(out)
        kept = sum(len(ds) for ds in dd.values())
        new = read_rejects(out)[len(read_rejects(fer_dir)):]
        assert kept + len(new) == sum(len(ds) for ds in open_dataset(fer_dir).values())
        assert kept and all(v >= 75.0 for ds in dd.values() for v in ds["contrast"])
        assert new and {r["reason"] for r in new} == {"flat"} and all(r["root_id"] for r in new)
        assert entry["rejected_by_reason"] == {"flat": len(new)}
    finally:
        steps._REGISTRY.pop("contrast", None)  # keep the registry to ferdata's own steps
