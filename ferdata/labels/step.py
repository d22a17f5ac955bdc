"""The ``classes`` step: apply a class grouping of paper 003 (8, 7, 6 or 3 classes).

Rows whose class belongs to no group of the chosen grouping (e.g. contempt and disgust under 6)
go to the rejects ledger with reason ``class_not_in_grouping``; the ``label`` column gets the
grouping's names (e.g. ``negative, neutral, positive``) and the original name is kept in
``label_original`` when the grouping merges classes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ferdata.columns import REJECT_DETAILS, REJECT_REASON
from ferdata.dataset import label_names
from ferdata.errors import UsageError
from ferdata.labels.maps import GROUPINGS, LabelMaps
from ferdata.rows import map_rows
from ferdata.steps import StepContext, StepOutput, register_step

if TYPE_CHECKING:
    import datasets


@dataclass
class ClassesConfig:
    """Options of the ``classes`` step."""

    #: the grouping: 8 (with contempt), 7 (canonical), 6 (no contempt, no disgust), 3 (valence)
    classes: int = 7

    def __post_init__(self) -> None:
        if self.classes not in GROUPINGS:
            raise UsageError(f"--classes {self.classes} is not allowed; allowed: {', '.join(map(str, GROUPINGS))}")


def apply_grouping(dd: datasets.DatasetDict, classes: int, *, step: str = "classes",
                   num_proc: int = 1) -> tuple[datasets.DatasetDict, list[dict[str, str]]]:
    """Regroup the labels of ``dd`` into the grouping ``classes``.

    Returns:
        The regrouped dataset and the ledger rows of rows that fit no group.

    Example:
        >>> dd3, rejects = apply_grouping(dd, 3)   # doctest: +SKIP
        >>> dd3["train"].features["label"].names  # doctest: +SKIP
        ['negative', 'neutral', 'positive']
    """
    import datasets

    grouping = LabelMaps.load().grouping(classes)
    old_names = label_names(dd)
    new_names = list(grouping)
    old_to_new = {}
    for i, name in enumerate(old_names):
        for j, (_, members) in enumerate(grouping.items()):
            if name in members:
                old_to_new[i] = j
    merges = any(len(m) > 1 for m in grouping.values())

    def regroup(labels: list[int]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"label": [], REJECT_REASON: [], REJECT_DETAILS: []}
        if merges:
            out["label_original"] = [old_names[label] for label in labels]
        for label in labels:
            new = old_to_new.get(label)
            out["label"].append(new if new is not None else -1)
            out[REJECT_REASON].append("" if new is not None else "class_not_in_grouping")
            out[REJECT_DETAILS].append("" if new is not None else json.dumps({"class": old_names[label],
                                                                              "classes": classes}))
        return out

    columns = {"label": datasets.ClassLabel(names=new_names)}
    if merges:
        columns["label_original"] = datasets.Value("string")
    return map_rows(dd, regroup, step=step, columns=columns, input_columns=["label"], batch_size=1000,
                    num_proc=num_proc, desc="classes")


@register_step("classes", ClassesConfig)
def classes_step(data: datasets.DatasetDict, config: ClassesConfig, ctx: StepContext) -> StepOutput:
    """Regroup labels into 8, 7, 6 or 3 classes (paper 003)."""
    dd, rejects = apply_grouping(data, config.classes, num_proc=ctx.num_proc)
    return StepOutput(dd, rejects, info={"label_names": label_names(dd)})
