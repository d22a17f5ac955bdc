"""One label space for every cell: paper 003's grouping, class names matched through the label maps.

Every model of a benchmark outputs the classes of the ``--classes`` grouping (7: the canonical
seven; 6: without contempt and disgust; 3: negative, neutral, positive; 8: with contempt).

* A **training set** whose classes are the grouping's trains as it is; otherwise a regrouped copy is
  written to ``BENCH/data/NAME`` (``apply_grouping``: merged classes keep ``label_original``, rows of
  a class outside the grouping go to that copy's rejects ledger) and the model trains on it.
* A **test set** is never copied: each of its classes is matched by name (synonyms of
  ``manifests/labels.yaml``: ``Happiness`` is ``happy``) to its group, and ``evaluate`` maps it.
  **A test class the model cannot output** (``contempt`` at 7, ``disgust`` at 6) **is dropped, and
  its rows are counted** in ``results.csv`` (``dropped_rows``, ``dropped_classes``). A class name
  ferdata does not know is refused in one line before any training: never a positional guess.

Example:
    >>> test_label_map(["angry", "contempt", "Happiness"], 7, dataset="ck")
    {'angry': 'angry', 'contempt': None, 'Happiness': 'happy'}
    >>> test_label_map(["angry", "surprise", "happy"], 3, dataset="ck")
    {'angry': 'negative', 'surprise': 'neutral', 'happy': 'positive'}
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferdata.errors import UsageError
from ferdata.labels.maps import LabelMaps

if TYPE_CHECKING:
    import datasets

    from ferdata.benchmark.config import DatasetSpec

logger = logging.getLogger(__name__)


def model_classes(classes: int) -> list[str]:
    """The output classes of every model of a ``--classes`` benchmark, in output order.

    Example:
        >>> model_classes(3)
        ['negative', 'neutral', 'positive']
    """
    return list(LabelMaps.load().grouping(classes))


def _canonical(name: str, maps: LabelMaps) -> str | None:
    return name if name in maps.all_names else maps.canonical_name(name)


def test_label_map(names: list[str], classes: int, *, dataset: str) -> dict[str, str | None]:
    """``{test class: model class, or None when the model cannot output it}`` (see the module doc).

    Raises:
        UsageError: naming every class that is neither a model class nor a class name ferdata knows.
    """
    maps = LabelMaps.load()
    grouping = maps.grouping(classes)
    mapping: dict[str, str | None] = {}
    unknown = []
    for name in names:
        if name in grouping:
            mapping[name] = name
            continue
        canonical = _canonical(name, maps)
        if canonical is None:
            unknown.append(name)
            continue
        mapping[name] = next((group for group, members in grouping.items() if canonical in members), None)
    if unknown:
        raise UsageError(f"test set {dataset!r}: classes {unknown} are neither classes of the --classes {classes} "
                         f"models ({', '.join(grouping)}) nor class names ferdata knows "
                         f"({', '.join(maps.all_names)} and their synonyms); rename them on import (--label-map)")
    return mapping


def test_split(dd: datasets.DatasetDict, spec: DatasetSpec) -> str:
    """The split ``spec`` is tested on: ``--split NAME=SPLIT``, else ``test``, else the only split.

    Raises:
        UsageError: when it does not exist or the choice is ambiguous.
    """
    splits = list(dd)
    if spec.test_split is not None:
        if spec.test_split not in dd:
            raise UsageError(f"--split {spec.name}={spec.test_split}: no such split in {spec.path}; splits: "
                             f"{', '.join(splits)}")
        return spec.test_split
    if "test" in dd:
        return "test"
    if len(splits) == 1:
        return splits[0]
    raise UsageError(f"test set {spec.name!r} ({spec.path}) has no 'test' split and several others "
                     f"({', '.join(splits)}): choose one with --split {spec.name}=SPLIT")


def training_needs_copy(dd: datasets.DatasetDict, spec: DatasetSpec, classes: int) -> bool:
    """Whether ``spec`` must be regrouped (or its split renamed) into ``BENCH/data/NAME`` before training.

    Raises:
        UsageError: for a missing training split or class names that fit neither the grouping nor the label maps.
    """
    from ferdata.dataset import label_names

    if spec.train_split not in dd:
        raise UsageError(f"training set {spec.name!r} ({spec.path}) has no {spec.train_split!r} split; splits: "
                         f"{', '.join(dd)} (choose one with --train-split {spec.name}=SPLIT)")
    if len(dd[spec.train_split]) == 0:
        raise UsageError(f"training set {spec.name!r}: split {spec.train_split!r} is empty")
    names = label_names(dd)
    target = model_classes(classes)
    if names == target:
        return spec.train_split != "train"
    maps = LabelMaps.load()
    odd = [n for n in names if n not in maps.all_names]
    if odd:
        raise UsageError(f"training set {spec.name!r}: classes {odd} are not ferdata class names, so they cannot be "
                         f"regrouped into the --classes {classes} classes ({', '.join(target)}); import it with "
                         f"--classes {classes}, or with canonical names")
    return True


def prepare_training_set(dd: datasets.DatasetDict, spec: DatasetSpec, classes: int, out: Path
                         ) -> dict[str, Any]:
    """Write the regrouped training set ``out`` (splits ``train`` and, when present, ``validation``).

    Returns:
        ``{"path", "rows", "dropped"}``: the directory, rows kept, and rows of classes outside the grouping.

    Example:
        >>> prepare_training_set(dd, spec, 3, Path("bench/data/fer"))["dropped"]   # doctest: +SKIP
        0
    """
    import datasets

    from ferdata.dataset import label_names, new_manifest, save_dataset
    from ferdata.labels.step import apply_grouping

    parts = {"train": dd[spec.train_split]}
    if "validation" in dd and spec.train_split != "validation":
        parts["validation"] = dd["validation"]
    sub = datasets.DatasetDict(parts)
    rejects: list[dict[str, str]] = []
    if label_names(sub) != model_classes(classes):
        sub, rejects = apply_grouping(sub, classes, step="benchmark_classes")
    manifest = new_manifest()
    manifest["benchmark"] = {"source": str(Path(spec.path).resolve()), "train_split": spec.train_split,
                             "classes": classes}
    save_dataset(sub, out, manifest=manifest, rejects=rejects, overwrite=True)
    return {"path": str(out), "rows": sum(len(ds) for ds in sub.values()), "dropped": len(rejects)}
