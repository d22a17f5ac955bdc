"""Rebalance classes, supplement scarce classes from another dataset, and compute class weights.

Strategies (``ferdata balance --strategy``):

* ``undersample``: every class down to the smallest non-empty class, or to ``--per-class N``.
  Removed rows go to the rejects ledger (reason ``undersampled``).
* ``oversample``: every class up to the largest class, or to ``--per-class N``, by repeating random
  rows (with replacement, seeded). Repeats carry ``augmented=True`` and are never added to a split
  named ``test``.
* ``target``: exactly ``--per-class N`` per class where possible (BTFER's 300 per class): larger
  classes are sampled down, smaller ones keep all their rows and their shortfall is reported.
* ``keep``: every row stays; only ``--supplement`` adds rows (to ``--per-class`` when given) and the
  class weights are stored (paper 004: top up the minority classes, sample nothing away).

``--per-class median`` means, in each balanced split, the median of its non-empty class counts
(taken before supplementing): with ``keep`` and ``--supplement``, classes below the median are
topped up to it and no class is made larger than a typical one.

Which splits: ``--splits`` names them; by default ``train`` when the dataset has one, else every
split (a BTFER-style test-only dataset). ``--supplement DIR`` first adds rows of
``--supplement-classes`` (default or ``all``: every class) from another dataset directory (paper 004 added disgust images to
FER2013), up to the target count when there is one: only from that dataset's ``train`` split, never
a row that shows the same photograph as a row of this dataset (the same ``id`` or ``root_id``, or
re-encoded, shifted, re-cropped or retouched: the check of ``dedupe --against``,
:func:`ferdata.dedupe.against.same_photo_matches`), and each row at most once over all splits. Every
candidate left out as the same photograph is written to the rejects ledger with reason
``contamination`` (the base row it matched in its details), like ``dedupe --against``.

Class weights for every split are stored in ``ferdata.json`` under ``class_weights``:
``simple`` (paper 001: (1/n_i) / min_j(1/n_j), the largest class gets 1.0), ``conservative``
(paper 001: min(max_j n_j / n_i, 3)), and ``inverse`` (paper 003: max_j n_j / (C * n_i)), computed
by :func:`ferdata.train.weights.class_weights`. Absent classes get weight 0.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ferdata.errors import UsageError
from ferdata.steps import StepContext, StepOutput, register_step
from ferdata.train.weights import class_weights

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)
STRATEGIES = ("undersample", "oversample", "target", "keep")
#: ``--per-class`` value: the median of a split's non-empty class counts
MEDIAN = "median"
#: ``--supplement-classes`` value: every class (the default; a recipe variable cannot be set to "" on the command line)
ALL_CLASSES = "all"
#: Class-weight methods stored in ferdata.json (see :mod:`ferdata.train.weights`).
WEIGHT_METHODS = ("simple", "conservative", "inverse")


def all_class_weights(dd: datasets.DatasetDict) -> dict[str, dict[str, dict[str, float]]]:
    """``{split: {method: {class: weight}}}`` for every split with labelled rows, and every method."""
    from ferdata.dataset import class_counts

    counts = {split: class_counts(ds) for split, ds in dd.items()}
    return {split: {m: class_weights(c, m) for m in WEIGHT_METHODS} for split, c in counts.items() if any(c.values())}


@dataclass
class BalanceConfig:
    """Options of the ``balance`` step (``per_class``: a count, or ``"median"`` per split)."""

    strategy: str = "undersample"
    per_class: int | str | None = None
    splits: list[str] | None = None
    supplement: str | None = None
    supplement_classes: list[str] | None = None

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise UsageError(f"--strategy {self.strategy!r} is not allowed; allowed: {', '.join(STRATEGIES)}")
        if isinstance(self.per_class, str) and self.per_class.strip().isdigit():
            self.per_class = int(self.per_class)
        if isinstance(self.per_class, str) and self.per_class != MEDIAN or isinstance(self.per_class, bool):
            raise UsageError(f"--per-class must be a number of rows or {MEDIAN!r}, got {self.per_class!r}")
        if isinstance(self.per_class, int) and self.per_class < 1:
            raise UsageError(f"--per-class must be at least 1, got {self.per_class}")
        if self.strategy == "target" and self.per_class is None:
            raise UsageError("--strategy target needs --per-class N")
        if isinstance(self.splits, str):
            self.splits = [s.strip() for s in self.splits.split(",") if s.strip()]
        if isinstance(self.supplement_classes, str):
            self.supplement_classes = [s.strip() for s in self.supplement_classes.split(",") if s.strip()]
        if self.supplement_classes == [ALL_CLASSES]:
            self.supplement_classes = None
        if self.supplement_classes and not self.supplement:
            raise UsageError("--supplement-classes needs --supplement DIR")


def per_class_target(per_class: int | str | None, counts: dict[str, int]) -> int | None:
    """The per-class count of one split: ``per_class`` itself, or the median of its non-empty classes.

    Example:
        >>> per_class_target("median", {"angry": 40, "disgust": 4, "happy": 70, "sad": 0})
        40
    """
    if per_class != MEDIAN:
        return per_class if isinstance(per_class, int) else None
    nonzero = [n for n in counts.values() if n > 0]
    return max(1, int(np.median(nonzero))) if nonzero else None


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


@dataclass
class Supplemented:
    """What :func:`supplement` did: the new dataset, rows added per class, the candidates left out
    (counts) and their ledger rows (reason ``contamination``)."""

    data: datasets.DatasetDict
    added: dict[str, int]
    left_out: dict[str, Any]
    rejects: list[dict[str, Any]]


def _first_of_pool(ids: Sequence[str], roots: Sequence[str | None]) -> np.ndarray:
    """True for each row that repeats no earlier row of the pool (by ``id`` or ``root_id``)."""
    first = np.zeros(len(ids), dtype=bool)
    seen: set[str] = set()
    for i, (rid, root) in enumerate(zip(ids, roots, strict=True)):
        keys = {rid, root or rid}
        first[i] = not keys & seen
        seen |= keys
    return first


def _contamination_rejects(pool: datasets.Dataset, candidates: np.ndarray, details: Mapping[int, dict],
                           other_names: Sequence[str]) -> list[dict]:
    """Ledger rows (reason ``contamination``) of the candidates that show a photo of the base dataset."""
    from ferdata.columns import PARENT_ID, ROOT_ID
    from ferdata.dataset import _thumbnails, make_reject

    matched = sorted(details)
    rows = [int(candidates[k]) for k in matched]
    if not rows:
        return []
    part = pool.select(rows)
    ids, origins, labels = part["id"], part["origin"], part["label"]
    roots = part[ROOT_ID] if ROOT_ID in part.column_names else [None] * len(rows)
    rejects = []
    for j, (k, thumb) in enumerate(zip(matched, _thumbnails(pool, rows), strict=True)):
        r = make_reject(ids[j], origins[j], "balance", "contamination",
                        {"supplement_split": "train", "class": other_names[labels[j]], **details[k]}, thumbnail=thumb)
        r[ROOT_ID], r[PARENT_ID] = roots[j] or ids[j], ""
        rejects.append(r)
    return rejects


def _append(ds: datasets.Dataset, extra: datasets.Dataset, names: Sequence[str],
            other_names: Sequence[str]) -> datasets.Dataset:
    """``ds`` followed by the rows of ``extra`` (another dataset): labels mapped by class name, columns
    ``ds`` lacks dropped, columns ``extra`` lacks empty."""
    import datasets

    extra = extra.remove_columns([c for c in extra.column_names if c not in ds.column_names])
    extra = extra.map(lambda labels: {"label": [names.index(other_names[x]) for x in labels]},
                      input_columns=["label"], batched=True,
                      features=datasets.Features({**extra.features, "label": ds.features["label"]}))
    for column in ds.column_names:
        if column not in extra.column_names:
            extra = extra.add_column(column, [None] * len(extra), feature=ds.features[column])
    return datasets.concatenate_datasets([ds, extra.select_columns(ds.column_names).cast(ds.features)])


def supplement(dd: datasets.DatasetDict, src: str, *, classes: Sequence[str] | None, splits: Sequence[str],
               per_class: int | Mapping[str, int | None] | None, rng: np.random.Generator,
               num_proc: int = 1) -> Supplemented:
    """Add rows of ``classes`` from the ``train`` split of the dataset directory ``src`` to ``splits``.

    Supplements come only from the other dataset's ``train`` split (its validation and test rows are
    evaluation data and are never used). A candidate that shows a photograph of this dataset (any
    split) is left out and written to the ledger with reason ``contamination``: the same ``id`` or
    ``root_id`` (``already_present``), or a re-encoded, shifted or retouched copy (``same_photo``:
    the ``dedupe --against`` check with the dedupe defaults). A candidate that repeats an earlier
    one of the pool (same ``id`` or ``root_id``) is left out and counted (``repeated``). The
    candidates of each class are shuffled once and the target splits take from that one queue in
    turn, so a row is added at most once: up to ``per_class`` per class and split (one count, or
    one per split), or, without it, every candidate to the first target split.
    Rows are matched by class name, not label id.

    Raises:
        UsageError: when ``src`` has no train split, or for a class this dataset does not have.

    Example:
        >>> done = supplement(dd, "raf-db", classes=["disgust"], splits=["train"], per_class=4000,
        ...                   rng=np.random.default_rng(0))  # doctest: +SKIP
        >>> done.added, done.left_out["same_photo"]  # doctest: +SKIP
        ({'disgust': 717}, 3)
    """
    import datasets

    from ferdata.columns import CORE_COLUMNS, LINEAGE_COLUMNS, ROOT_ID
    from ferdata.dataset import class_counts, label_names, open_dataset
    from ferdata.dedupe.against import same_photo_matches

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
    absent = [name for name in wanted if name not in other_names]
    if absent and classes:
        logger.warning("balance: --supplement %s has no class %s (its classes: %s); nothing added for it", src,
                       ", ".join(absent), ", ".join(other_names))
    source = other["train"]
    pool = source.select_columns([c for c in (*CORE_COLUMNS, *LINEAGE_COLUMNS) if c in source.column_names])
    pool_ids = pool["id"]
    pool_roots = pool[ROOT_ID] if ROOT_ID in pool.column_names else [None] * len(pool)
    pool_labels = np.asarray(pool["label"])
    in_classes = np.isin(pool_labels, [other_names.index(name) for name in wanted if name in other_names])
    first = _first_of_pool(pool_ids, pool_roots)
    # same id or root, or a re-encoded, shifted or retouched copy: the dedupe --against check
    candidates = np.flatnonzero(first & in_classes)
    found = same_photo_matches(pool.select(candidates.tolist()), dd, name="the dataset being balanced",
                               num_proc=num_proc, step="balance")
    fresh = first & in_classes
    fresh[candidates[found.matched]] = False
    by_match = {k: int(found.info[0].get(k, 0)) for k in ("same_pixels", "same_root", "near")}
    left_out = {"already_present": by_match["same_pixels"] + by_match["same_root"], "same_photo": by_match["near"],
                "same_photo_by_match": by_match, "repeated": int((in_classes & ~first).sum())}
    rejects = _contamination_rejects(pool, candidates, found.details, other_names)
    queues = {name: list(rng.permutation(np.flatnonzero(fresh & (pool_labels == other_names.index(name)))))
              for name in wanted if name in other_names}
    added: dict[str, int] = {}
    result = dict(dd)
    for split in splits:
        ds = result[split]
        counts = class_counts(ds)
        target = per_class.get(split) if isinstance(per_class, Mapping) else per_class
        picks: list[int] = []
        for name, queue in queues.items():
            need = len(queue) if target is None else max(0, target - counts[name])
            chosen, queues[name] = queue[:need], queue[need:]
            picks.extend(int(i) for i in chosen)
            added[name] = added.get(name, 0) + len(chosen)
        if not picks:
            continue
        result[split] = _append(ds, pool.select(sorted(picks)), names, other_names)
    return Supplemented(datasets.DatasetDict(result), added, left_out, rejects)


@register_step("balance", BalanceConfig)
def balance_step(data: datasets.DatasetDict, config: BalanceConfig, ctx: StepContext) -> StepOutput:
    """Undersample, oversample, sample to a per-class target or keep every row; supplement; store class weights."""
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
    before = {s: class_counts(data[s]) for s in splits}
    targets = {s: per_class_target(config.per_class, before[s]) for s in splits}
    info: dict[str, Any] = {"splits": splits, "before": before}
    if config.per_class == MEDIAN:
        info["per_class"] = targets
    rejects = []
    if config.supplement:
        done = supplement(data, config.supplement, classes=config.supplement_classes, splits=splits,
                          per_class=targets, rng=rng, num_proc=ctx.num_proc)
        data = done.data
        info["supplemented"] = done.added
        info["supplement_left_out"] = done.left_out
        rejects += done.rejects
    result = dict(data)
    shortfalls = {}
    for split in splits if config.strategy != "keep" else []:
        ds = data[split]
        kept, removed, repeats, shortfall = sample_split(ds, strategy=config.strategy, per_class=targets[split],
                                                         rng=rng, split=split)
        if removed:
            meta = ds.select_columns(["id", "origin", "label"]).select(removed)
            names = ds.features["label"].names
            rejects += [make_reject(r["id"], r["origin"], "balance", "undersampled",
                                    {"split": split, "class": names[r["label"]]}) for r in meta]
        if shortfall:
            shortfalls[split] = shortfall
            logger.warning("balance: split %s is short of the target %s: %s", split, targets[split],
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
