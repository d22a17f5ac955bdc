"""The one commit path: how every command writes a dataset directory.

A dataset directory carries its history: ``ferdata.json`` (the steps that made it) and
``rejects.parquet`` (every row removed on the way, with its lineage). A :class:`Chain` is that
history in memory — read from the input directory (or started empty by a source), grown by one
:meth:`Chain.add` per step run through :func:`ferdata.steps.run_step` (which fills each ledger row's
thumbnail, ``root_id`` and ``parent_id``) — and :func:`commit` writes data, manifest and ledger
together, atomically. Single commands (:func:`ferdata.steps.apply_step`), recipes
(:func:`ferdata.pipeline.build`, one commit per checkpoint), ``ferdata upscale`` from a CSV or folder
and ``ferdata refine``'s output dataset all go through it, so they all pass the same invariants
(tests/test_integrity.py).

Example:
    >>> chain = Chain.of("fer2013")                                        # doctest: +SKIP
    >>> result, entry = run_step(get_step("balance"), data, config, ctx)   # doctest: +SKIP
    >>> chain.add(result, entry)                                           # doctest: +SKIP
    >>> commit(result.data, "fer2013-bal", chain)                          # doctest: +SKIP
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets

    from ferdata.steps import StepOutput


@dataclass
class Chain:
    """The manifest and the cumulative rejects ledger of a dataset being made."""

    manifest: dict[str, Any]
    rejects: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def start(cls, *, seed: int | None = None, recipe: dict[str, Any] | None = None) -> Chain:
        """The history of a new dataset (a source step comes first)."""
        from ferdata.dataset import new_manifest

        return cls(new_manifest(seed=seed, recipe=recipe), [])

    @classmethod
    def of(cls, path: str | Path) -> Chain:
        """The history an input directory carries (its manifest and ledger, copied)."""
        from ferdata.dataset import read_manifest, read_rejects

        return cls(read_manifest(path), read_rejects(path))

    @property
    def steps(self) -> list[dict[str, Any]]:
        """The manifest entries of the steps so far."""
        return list(self.manifest.get("steps", []))

    def add(self, result: StepOutput, entry: dict[str, Any], *, seed: int | None = None) -> None:
        """Append one step: its manifest entry, its top-level manifest keys and its ledger rows."""
        self.manifest["steps"] = [*self.steps, entry]
        self.manifest.update(result.manifest)
        if self.manifest.get("seed") is None and seed is not None:
            self.manifest["seed"] = seed
        self.rejects = [*self.rejects, *result.rejects]

    def copy(self) -> Chain:
        """An independent copy (a checkpoint's history must not change with the next step's)."""
        return Chain(copy.deepcopy(self.manifest), list(self.rejects))


def commit(data: datasets.DatasetDict, out: str | Path, chain: Chain, *, overwrite: bool = False,
           num_proc: int | None = None, files: dict[str, str | Path] | None = None) -> Path:
    """Write ``data`` with its history into the dataset directory ``out``, atomically.

    The manifest's ``class_weights`` (simple and conservative, paper 001's formulas, per split) are
    computed here from the rows written, so every dataset directory states the weights of exactly
    its own rows, whichever step came last.

    Args:
        data: the rows to write.
        out: the output directory (written to a temporary sibling and renamed into place).
        chain: the manifest and the full ledger (input's rows plus this command's).
        overwrite: replace an existing ``out``.
        num_proc: processes for ``save_to_disk`` (1 once TensorFlow is loaded).
        files: extra files placed inside ``out`` (``{name: source path}``), e.g. a step's report.

    Returns:
        The output path.
    """
    from ferdata.dataset import save_dataset

    _set_class_weights(chain.manifest, data)
    return save_dataset(data, out, manifest=chain.manifest, rejects=chain.rejects, overwrite=overwrite,
                        num_proc=num_proc, files=files)


def _set_class_weights(manifest: dict[str, Any], data: datasets.DatasetDict) -> None:
    """``manifest["class_weights"]`` from ``data``'s label counts (removed when there is no class label)."""
    import datasets

    if not all(isinstance(ds.features.get("label"), datasets.ClassLabel) for ds in data.values()) or not len(data):
        manifest.pop("class_weights", None)
        return
    from ferdata.balance import all_class_weights

    manifest["class_weights"] = all_class_weights(data)
