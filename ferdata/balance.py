"""Rebalance classes, supplement scarce classes from another dataset, and compute class weights.

Strategies (``ferdata balance --strategy``):

* ``undersample``: every class down to the smallest non-empty class, or to ``--per-class N``.
  Removed rows go to the rejects ledger (reason ``undersampled``).
* ``oversample``: every class up to the largest class, or to ``--per-class N``, by repeating random
  rows (with replacement, seeded). Repeats carry ``augmented=True`` and are never added to a split
  named ``test``.
* ``target``: exactly ``--per-class N`` per class where possible (BTFER's 300 per class): larger
  classes are sampled down, smaller ones keep all their rows and their shortfall is reported.

Which splits: ``--splits`` names them; by default ``train`` when the dataset has one, else every
split (a BTFER-style test-only dataset). ``--supplement DIR`` first adds rows of
``--supplement-classes`` from another dataset directory (paper 004 added disgust images to
FER2013), up to the target count when there is one: only from that dataset's ``train`` split, never
a row whose ``id`` or ``root_id`` is already present nor one that shows the same photograph as a row
of this dataset (re-encoded, shifted, re-cropped or retouched: the check of ``dedupe --against``,
:func:`ferdata.dedupe.against.same_photo_rows`), and each row at most once over all splits.

Class weights for every split are stored in ``ferdata.json`` under ``class_weights``:
``simple`` (paper 001: (1/n_i) / min_j(1/n_j), the largest class gets 1.0), ``conservative``
(paper 001: min(max_j n_j / n_i, 3)), and ``inverse`` (paper 003: max_j n_j / (C * n_i)), computed
by :func:`ferdata.train.weights.class_weights`. Absent classes get weight 0.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ferdata.errors import UsageError
from ferdata.steps import StepContext, StepOutput, register_step
from ferdata.train.weights import class_weights

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)
STRATEGIES = ("undersample", "oversample", "target")
#: Class-weight methods stored in ferdata.json (see :mod:`ferdata.train.weights`).
WEIGHT_METHODS = ("simple", "conservative", "inverse")


def all_class_weights(dd: datasets.DatasetDict) -> dict[str, dict[str, dict[str, float]]]:
    """``{split: {method: {class: weight}}}`` for every split with labelled rows, and every method."""
    from ferdata.dataset import class_counts

    counts = {split: class_counts(ds) for split, ds in dd.items()}
    return {split: {m: class_weights(c, m) for m in WEIGHT_METHODS} for split, c in counts.items() if any(c.values())}


@dataclass
class BalanceConfig:
    """Options of the ``balance`` step."""

    strategy: str = "undersample"
    per_class: int | None = None
    splits: list[str] | None = None
    supplement: str | None = None
    supplement_classes: list[str] | None = None

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise UsageError(f"--strategy {self.strategy!r} is not allowed; allowed: {', '.join(STRATEGIES)}")
        if self.per_class is not None and self.per_class < 1:
            raise UsageError(f"--per-class must be at least 1, got {self.per_class}")
        if self.strategy == "target" and self.per_class is None:
            raise UsageError("--strategy target needs --per-class N")
        if isinstance(self.splits, str):
            self.splits = [s.strip() for s in self.splits.split(",") if s.strip()]
        if isinstance(self.supplement_classes, str):
            self.supplement_classes = [s.strip() for s in self.supplement_classes.split(",") if s.strip()]
        if self.supplement_classes and not self.supplement:
            raise UsageError("--supplement-classes needs --supplement DIR")


def _rows_by_class(labels: Sequence[int], num_classes: int) -> list[np.ndarray]:
    arr = np.asarray(labels, dtype=np.int64)
    return [np.flatnonzero(arr == c) for c in range(num_classes)]


def sample_split(ds: datasets.Dataset, *, strategy: str, per_class: int | None, rng: np.random.Generator,
                 split: str) -> tuple[datasets.Dataset, list[int], list[int], dict[str, int]]:
    """Choose rows of one split.

    Returns:
        The balanced split, removed row indices, repeated row indices (oversampling) and the
        shortfall per class (target strategy: how many rows are missing to reach ``per_class``).
    """
    import datasets

    from ferdata.dataset import label_names

    names = label_names(ds)
    groups = _rows_by_class(ds["label"], len(names))
    sizes = [len(g) for g in groups]
    nonzero = [s for s in sizes if s > 0]
    if not nonzero:
        return ds, [], [], {}
    if strategy == "undersample":
        target = per_class or min(nonzero)
    elif strategy == "oversample":
        target = per_class or max(nonzero)
    else:
        target = per_class or 0
    keep: list[int] = []
    removed: list[int] = []
    repeats: list[int] = []
    shortfall: dict[str, int] = {}
    for name, rows in zip(names, groups, strict=True):
        if len(rows) > target and strategy != "oversample":
            chosen = np.sort(rng.choice(rows, size=target, replace=False))
            keep.extend(chosen.tolist())
            removed.extend(sorted(set(rows.tolist()) - set(chosen.tolist())))
            continue
        keep.extend(rows.tolist())
        if len(rows) < target and len(rows) > 0 and strategy == "oversample":
            repeats.extend(np.sort(rng.choice(rows, size=target - len(rows), replace=True)).tolist())
        elif len(rows) < target and strategy == "target":
            shortfall[name] = target - len(rows)
    kept = ds.select(sorted(keep))
    if strategy == "oversample":
        flags = [False] * len(kept)
        if repeats:
            extra = ds.select(repeats)
            kept = datasets.concatenate_datasets([kept, extra])
            flags += [True] * len(repeats)
        if "augmented" in kept.column_names:
            flags = [bool(a) or f for a, f in zip(kept["augmented"], flags, strict=True)]
            kept = kept.remove_columns("augmented")
        kept = kept.add_column("augmented", flags)
    return kept, removed, repeats, shortfall


def supplement(dd: datasets.DatasetDict, src: str, *, classes: Sequence[str] | None, splits: Sequence[str],
               per_class: int | None, rng: np.random.Generator,
               num_proc: int = 1) -> tuple[datasets.DatasetDict, dict[str, int], dict[str, Any]]:
    """Add rows of ``classes`` from the ``train`` split of the dataset directory ``src`` to ``splits``.

    Supplements come only from the other dataset's ``train`` split (its validation and test rows are
    evaluation data and are never used), minus every row whose ``id`` or ``root_id`` is already in
    this dataset (any split) and every row that shows the same photograph as one of this dataset's
    rows (the ``dedupe --against`` check with the dedupe defaults: a re-encoded or shifted copy has
    another id). The candidates of each class are shuffled once and the target splits
    take from that one queue in turn, so a row is added at most once: up to ``per_class`` per class
    and split, or, without ``per_class``, every candidate to the first target split.
    Rows are matched by class name, not label id. Returns the new dataset, rows added per class and
    the counts of the candidates left out (``already_present``, ``same_photo``).

    Raises:
        UsageError: when ``src`` has no train split, or for a class this dataset does not have.
    """
    import datasets

    from ferdata.dataset import CORE_COLUMNS, LINEAGE_COLUMNS, ROOT_ID, class_counts, label_names, open_dataset

    other = open_dataset(src)
    names = label_names(dd)
    other_names = label_names(other)
    wanted = list(classes) if classes else list(names)
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        raise UsageError(f"--supplement-classes {', '.join(unknown)} not in this dataset's classes: {', '.join(names)}")
    if "train" not in other:
        raise UsageError(f"--supplement {src} has no train split (splits: {', '.join(other)}); supplements are drawn "
                         "only from a train split, never from evaluation data")
    source = other["train"]
    pool = source.select_columns([c for c in (*CORE_COLUMNS, *LINEAGE_COLUMNS) if c in source.column_names])
    present: set[str] = set()
    for ds in dd.values():
        for column in ("id", ROOT_ID):
            if column in ds.column_names:
                present.update(x for x in ds[column] if x)
    pool_ids = pool["id"]
    pool_roots = pool[ROOT_ID] if ROOT_ID in pool.column_names else [None] * len(pool)
    pool_labels = np.asarray(pool["label"])
    fresh = np.zeros(len(pool), dtype=bool)
    seen: set[str] = set()
    for i, (rid, root) in enumerate(zip(pool_ids, pool_roots, strict=True)):
        keys = {rid, root or rid}
        if not keys & present and not keys & seen:  # not in this dataset, not a repeat within the pool
            fresh[i] = True
        seen |= keys
    # a re-encoded or shifted copy of one of this dataset's photos has another id: the dedupe --against check
    from ferdata.dedupe.against import same_photo_rows

    in_classes = np.isin(pool_labels, [other_names.index(name) for name in wanted if name in other_names])
    candidates = np.flatnonzero(fresh & in_classes)
    same, check = same_photo_rows(pool.select(candidates.tolist()), dd, name="the dataset being balanced",
                                  num_proc=num_proc, step="balance")
    fresh[candidates[same]] = False
    left_out = {"already_present": int((in_classes & ~fresh).sum() - same.sum()), "same_photo": int(same.sum()),
                "same_photo_by_match": {k: int(check.get(k, 0)) for k in ("same_pixels", "same_root", "near")}}
    queues = {name: list(rng.permutation(np.flatnonzero(fresh & (pool_labels == other_names.index(name)))))
              for name in wanted if name in other_names}
    added: dict[str, int] = {}
    result = dict(dd)
    for split in splits:
        ds = result[split]
        counts = class_counts(ds)
        picks: list[int] = []
        for name, queue in queues.items():
            need = len(queue) if per_class is None else max(0, per_class - counts[name])
            chosen, queues[name] = queue[:need], queue[need:]
            picks.extend(int(i) for i in chosen)
            added[name] = added.get(name, 0) + len(chosen)
        if not picks:
            continue
        extra = pool.select(sorted(picks))
        extra = extra.remove_columns([c for c in extra.column_names if c not in ds.column_names])
        extra = extra.map(lambda labels: {"label": [names.index(other_names[x]) for x in labels]},
                          input_columns=["label"], batched=True,
                          features=datasets.Features({**extra.features, "label": ds.features["label"]}))
        for column in ds.column_names:
            if column not in extra.column_names:
                extra = extra.add_column(column, [None] * len(extra), feature=ds.features[column])
        result[split] = datasets.concatenate_datasets([ds, extra.select_columns(ds.column_names).cast(ds.features)])
    return datasets.DatasetDict(result), added, left_out


@register_step("balance", BalanceConfig)
def balance_step(data: datasets.DatasetDict, config: BalanceConfig, ctx: StepContext) -> StepOutput:
    """Undersample, oversample or sample to a per-class target; store class weights."""
    import datasets

    from ferdata.dataset import class_counts, make_reject

    splits = config.splits or (["train"] if "train" in data else list(data))
    missing = sorted(set(splits) - set(data))
    if missing:
        raise UsageError(f"--splits {', '.join(missing)} not in the dataset; splits: {', '.join(data)}")
    if config.strategy == "oversample" and "test" in (config.splits or []):
        raise UsageError("oversampling never adds repeats to a test split; remove 'test' from --splits")
    if config.strategy == "oversample":
        splits = [s for s in splits if s != "test"]
    rng = np.random.default_rng(ctx.seed)
    info: dict[str, Any] = {"splits": splits, "before": {s: class_counts(data[s]) for s in splits}}
    if config.supplement:
        data, added, left_out = supplement(data, config.supplement, classes=config.supplement_classes,
                                           splits=splits, per_class=config.per_class, rng=rng, num_proc=ctx.num_proc)
        info["supplemented"] = added
        info["supplement_left_out"] = left_out
    rejects = []
    result = dict(data)
    shortfalls = {}
    for split in splits:
        ds = data[split]
        kept, removed, repeats, shortfall = sample_split(ds, strategy=config.strategy, per_class=config.per_class,
                                                         rng=rng, split=split)
        if removed:
            meta = ds.select_columns(["id", "origin", "label"]).select(removed)
            names = ds.features["label"].names
            rejects += [make_reject(r["id"], r["origin"], "balance", "undersampled",
                                    {"split": split, "class": names[r["label"]]}) for r in meta]
        if shortfall:
            shortfalls[split] = shortfall
            logger.warning("balance: split %s is short of the target %s: %s", split, config.per_class,
                           ", ".join(f"{k} -{v}" for k, v in shortfall.items()))
        if repeats:
            info.setdefault("repeated", {})[split] = len(repeats)
        result[split] = kept
    if config.strategy == "oversample":  # keep one schema across splits
        for split, ds in result.items():
            if "augmented" not in ds.column_names:
                result[split] = ds.add_column("augmented", [False] * len(ds))
    dd = datasets.DatasetDict(result)
    info["after"] = {s: class_counts(dd[s]) for s in splits}
    if shortfalls:
        info["shortfall"] = shortfalls
    return StepOutput(dd, rejects, info=info, manifest={"class_weights": all_class_weights(dd)})
