"""The rows a run saw and the rows it can be scored on: ``RUN/seen.parquet``, :func:`scored_rows`.

A model scored on rows it was trained on reports a number that says nothing about new faces. So
``train`` writes down every row it used, with its role:

=============  ===============================================================================
``id``         the row's id (sha256 of its pixels)
``root_id``    the id the row had when it entered its dataset (an upscaled or cropped copy keeps it)
``role``       ``train`` (the weights were fitted on it) or ``validation`` (it chose the best epoch)
``split``      the dataset split it came from (a one-split dataset's validation rows: ``train``)
=============  ===============================================================================

and ``evaluate`` leaves out every row whose ``id`` or ``root_id`` equals the ``id`` or
``root_id`` of a training row (so the 224 px copy of a 48 px training image counts as seen),
saying how many. Validation rows are scored, and counted: on a dataset without a validation split
``train`` holds out a stratified 20 % of ``train``, and those rows are the only part of that
dataset the model has not been fitted on -- its held-out part.

Example:
    >>> seen = read_seen("runs/fer")                          # doctest: +SKIP
    >>> check = seen.check(ids, root_ids)                     # doctest: +SKIP
    >>> int(check.trained.sum()), int(check.validation.sum())  # doctest: +SKIP
    (2748, 688)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ferdata.errors import UsageError

SEEN_FILE = "seen.parquet"
ROLES = ("train", "validation")


def _column(ds: Any, name: str) -> list[str]:
    """A string column of a ``Dataset`` (empty strings when the column is absent)."""
    if name not in ds.column_names:
        return [""] * len(ds)
    return ["" if v is None else str(v) for v in ds[name]]


def write_seen(path: str | Path, parts: Sequence[tuple[str, str, Any]]) -> dict[str, Any]:
    """Write ``seen.parquet`` from ``(role, source split, Dataset)`` parts; return the ``run.json`` summary.

    Example:
        >>> write_seen(tmp / "seen.parquet", [("train", "train", train), ("validation", "train", val)])  # doctest: +SKIP
        {'file': 'seen.parquet', 'train': 2748, 'validation': 688, 'validation_split': 'train', 'by': 'id, root_id'}
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols: dict[str, list[str]] = {"id": [], "root_id": [], "role": [], "split": []}
    summary: dict[str, Any] = {"file": Path(path).name}
    has_ids = True
    for role, split, ds in parts:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        has_ids = has_ids and "id" in ds.column_names
        cols["id"] += _column(ds, "id")
        cols["root_id"] += _column(ds, "root_id")
        cols["role"] += [role] * len(ds)
        cols["split"] += [split] * len(ds)
        summary[role] = summary.get(role, 0) + len(ds)
        summary[f"{role}_split"] = split
    summary["by"] = "id, root_id" if has_ids else "unavailable (the dataset has no id column)"
    pq.write_table(pa.table(cols), str(path))
    return summary


@dataclass(frozen=True)
class SeenCheck:
    """Per-row verdicts of :meth:`Seen.check`: boolean arrays over the checked rows."""

    #: the row (or its root) was a training row: left out of scores
    trained: np.ndarray
    #: not trained on, but a validation row of the run (it chose the best epoch): scored and counted
    validation: np.ndarray


@dataclass(frozen=True)
class Seen:
    """The keys (ids and root ids) of a run's training and validation rows."""

    train_keys: frozenset[str]
    validation_keys: frozenset[str]

    def check(self, ids: Sequence[Any], root_ids: Sequence[Any] | None = None) -> SeenCheck:
        """Which rows the run trained on, and which are its validation rows, by ``id`` or ``root_id``.

        Example:
            >>> Seen(frozenset({"a"}), frozenset({"b"})).check(["a", "x", "b"], ["", "a", ""]).trained.tolist()
            [True, True, False]
        """
        roots = root_ids if root_ids is not None else [""] * len(ids)
        trained = np.zeros(len(ids), dtype=bool)
        validation = np.zeros(len(ids), dtype=bool)
        for i, (row_id, root) in enumerate(zip(ids, roots, strict=True)):
            keys = {k for k in (row_id, root) if k}
            if keys & self.train_keys:
                trained[i] = True
            elif keys & self.validation_keys:
                validation[i] = True
        return SeenCheck(trained, validation)


def read_seen(run_dir: str | Path) -> Seen | None:
    """The rows a run saw, or None for a run written before ``train`` recorded them.

    Example:
        >>> read_seen("runs/fer").train_keys                  # doctest: +SKIP
    """
    path = Path(run_dir) / SEEN_FILE
    if not path.is_file():
        return None
    import pyarrow.parquet as pq

    table = pq.read_table(str(path), columns=["id", "root_id", "role"]).to_pydict()
    keys: dict[str, set[str]] = {role: set() for role in ROLES}
    for row_id, root, role in zip(table["id"], table["root_id"], table["role"], strict=True):
        keys[role].update(k for k in (row_id, root) if k)
    return Seen(frozenset(keys["train"]), frozenset(keys["validation"]))


def label_index_for(dataset_names: list[str], model_names: list[str], *,
                    mapping: dict[str, str | None] | None = None, present: set[int] | None = None
                    ) -> dict[int, int] | None:
    """Map dataset label ids onto model output ids by class name.

    Names are compared after the label maps' synonyms (``Happiness`` -> ``happy``) or the user's
    ``mapping`` (``{dataset name: model class name}``; a name mapped to None is dropped: its ids
    are absent from the result). Returns None when the names are identical.

    Raises:
        UsageError: when a dataset class with examples (``present``) has no model class.

    Example:
        >>> label_index_for(["sad", "happy"], ["happy", "sad"])
        {0: 1, 1: 0}
    """
    if list(dataset_names) == list(model_names) and not mapping:
        return None
    from ferdata.labels import LabelMaps

    maps = LabelMaps.load()
    model_index = {n: i for i, n in enumerate(model_names)}
    index: dict[int, int] = {}
    missing = []
    for i, name in enumerate(dataset_names):
        target = name if name in model_index else None
        if mapping and name in mapping:
            target = mapping[name]
            if target is None:
                continue  # dropped by the mapping; the caller counts its rows
        elif target is None:
            target = maps.canonical_name(name)
        if target in model_index:
            index[i] = model_index[target]
        elif present is None or i in present:
            missing.append(name)
    if missing:
        raise UsageError(f"dataset classes {missing} are not classes of the model ({', '.join(model_names)}); "
                         "pass --label-map FILE mapping them to model classes (or to null to leave them out)")
    return index


@dataclass
class ScoredRows:
    """Which rows of a split ``evaluate`` scores, and why the others are left out."""

    #: positions (in the split) of the rows scored
    keep: np.ndarray
    #: dataset label id -> model output id (None: identical names)
    index: dict[int, int] | None
    #: rows_in_split, dropped_rows, dropped_by_class, excluded_seen, validation_rows_scored, seen_check
    counts: dict[str, Any]
    notes: list[str]


def scored_rows(run_dir: str | Path, ds: Any, model_names: list[str], *, split: str,
                label_map: dict[str, str | None] | None = None, include_seen: bool = False) -> ScoredRows:
    """The rows of ``ds`` a run can be scored on: classes it can output, rows it was not trained on.

    Rows of a class the ``label_map`` maps to None are dropped; rows whose ``id`` or ``root_id`` is
    a training row's (:mod:`ferdata.train.seen`) are left out unless ``include_seen``. Each row is
    counted once: a dropped row is not also counted as seen.

    Raises:
        UsageError: for a class the model does not know (and the map does not drop), or when no row is left.

    Example:
        >>> scored_rows("runs/fer", dd["train"], names, split="train").counts["excluded_seen"]   # doctest: +SKIP
        2748
    """
    from ferdata.dataset import label_names

    names = label_names(ds)
    labels = np.asarray(ds["label"], dtype=np.int64)
    index = label_index_for(names, model_names, mapping=label_map, present={int(v) for v in set(labels.tolist())})
    mapped = np.ones(len(labels), dtype=bool) if index is None else np.isin(labels, list(index))
    dropped = {names[c]: int(n) for c, n in zip(*np.unique(labels[~mapped], return_counts=True), strict=True)}
    counts: dict[str, Any] = {"rows_in_split": len(labels), "dropped_rows": int((~mapped).sum()),
                              "dropped_by_class": dropped, "excluded_seen": 0, "validation_rows_scored": 0}
    notes = []
    if dropped:
        notes.append(f"left out {counts['dropped_rows']} rows of classes the model cannot output: "
                     + ", ".join(f"{k} {v}" for k, v in dropped.items()))
    seen = read_seen(run_dir)
    keep = mapped
    if seen is None or "id" not in ds.column_names:
        counts["seen_check"] = "unavailable"
        why = "the run has no seen.parquet (trained before ferdata recorded the rows a run saw)" if seen is None \
            else "the dataset has no id column"
        notes.append(f"rows the model was trained on cannot be left out: {why}")
    else:
        check = seen.check(ds["id"], ds["root_id"] if "root_id" in ds.column_names else None)
        counts["seen_check"] = "id, root_id"
        trained = check.trained & mapped
        counts["validation_rows_scored"] = int((check.validation & mapped & (include_seen | ~trained)).sum())
        if include_seen:
            counts["seen_included"] = int(trained.sum())
        else:
            counts["excluded_seen"] = int(trained.sum())
            keep = mapped & ~trained
        notes += _seen_notes(counts, split, int(keep.sum()))
    if not keep.any():
        raise UsageError(f"nothing to score in split {split!r}: of its {len(labels)} rows, {counts['dropped_rows']} are "
                         f"of classes the model cannot output and {counts['excluded_seen']} were training rows of "
                         f"{run_dir}")
    return ScoredRows(np.flatnonzero(keep), index, counts, notes)


def _seen_notes(counts: dict[str, Any], split: str, scored: int) -> list[str]:
    notes = []
    if counts["excluded_seen"]:
        notes.append(f"left out {counts['excluded_seen']} rows of split {split!r} the model was trained on (same id "
                     f"or root_id as a training row, seen.parquet); scored {scored}")
    if counts.get("seen_included"):
        notes.append(f"--include-seen: {counts['seen_included']} of the scored rows are training rows: the score is "
                     "not a test score")
    validation = counts["validation_rows_scored"]
    if validation and validation == scored:
        notes.append(f"the {scored} scored rows are the run's held-out validation rows (they chose its best epoch)")
    elif validation:
        notes.append(f"{validation} of the {scored} scored rows are the run's validation rows "
                     "(they chose its best epoch)")
    return notes
