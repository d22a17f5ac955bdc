"""Stratified, seeded, group-aware splitting.

``ferdata split IN --out DIR --ratios 0.8,0.1,0.1`` makes ``train``, ``validation`` and ``test``
(two ratios: ``train`` and ``validation``; ``--names`` to choose others, e.g. ``--ratios 1
--names test`` puts everything in a test split as BTFER does).

* Stratified: each class is divided in the given ratios (largest-remainder rounding).
* Group-aware: rows sharing a value of the ``group`` column (a duplicate cluster from ``dedupe``,
  a person, a video), an ``id`` (identical pixels, oversampled repeats) or a ``root_id`` (crops of
  one photo) always land in the same split (:func:`row_groups`). Groups are assigned greedily,
  largest first, to the split whose per-class quota is furthest from full.
* Existing splits are kept: target splits already present are left alone and the missing ones are
  carved out of ``train`` (or the only split), with the ratios renormalised. ``--resplit`` pools
  every row and splits anew.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ferdata.columns import GROUP, SIMILAR_GROUP
from ferdata.errors import UsageError
from ferdata.steps import StepContext, StepOutput, register_step

if TYPE_CHECKING:
    import datasets

DEFAULT_NAMES = {1: ["train"], 2: ["train", "validation"], 3: ["train", "validation", "test"]}
DEFAULT_MAX_GROUP_SHARE = 0.05
MIN_GUARDED_GROUP = 10


def check_group_sizes(groups: Sequence[str] | None, *, max_share: float, column: str) -> None:
    """Refuse a grouping whose largest group would force more than ``max_share`` of the rows into one split.

    Raises:
        UsageError: naming the group, its size and share, and the option that allows it.

    Example:
        >>> check_group_sizes(["a"] * 30 + [str(i) for i in range(70)], max_share=0.05, column="group")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ferdata.errors.UsageError: group 'a' (column group) holds 30 of 100 rows (30.0 %), more than max_group_share 0.05: ...
    """
    if not groups:
        return
    values, counts = np.unique(np.asarray(groups, dtype=object).astype(str), return_counts=True)
    k = int(np.argmax(counts))
    n, size = len(groups), int(counts[k])
    if size > MIN_GUARDED_GROUP and size > max_share * n:
        raise UsageError(f"group {str(values[k])!r} (column {column}) holds {size} of {n} rows ({100 * size / n:.1f} %), "
                         f"more than max_group_share {max_share}: it would force that share into one split. Check "
                         f"the groups (ferdata dedupe's report), split by another --group-column, or pass "
                         f"--max-group-share {min(1.0, round(size / n + 0.005, 2))}")


@dataclass
class SplitConfig:
    """Options of the ``split`` step."""

    ratios: list[float] | str = "0.8,0.1,0.1"
    names: list[str] | str | None = None
    resplit: bool = False
    group_column: str = GROUP
    #: largest share of the rows one group may hold (groups of MIN_GUARDED_GROUP rows or fewer always
    #: pass); a bigger group would force that share into one split, so the step refuses, naming it
    max_group_share: float = DEFAULT_MAX_GROUP_SHARE

    def __post_init__(self) -> None:
        share = self.max_group_share
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < float(share) <= 1:
            raise UsageError(f"max_group_share must be a number in (0, 1], got {share!r}")
        self.max_group_share = float(share)
        if isinstance(self.ratios, str):
            try:
                self.ratios = [float(r) for r in self.ratios.split(",") if r.strip()]
            except ValueError as e:
                raise UsageError(f"--ratios {self.ratios!r} must be comma-separated numbers, e.g. 0.8,0.1,0.1") from e
        elif isinstance(self.ratios, (int, float)):
            self.ratios = [float(self.ratios)]
        if not self.ratios or any(r <= 0 for r in self.ratios) or abs(sum(self.ratios) - 1) > 1e-6:
            raise UsageError(f"--ratios {','.join(map(str, self.ratios))} must be positive and sum to 1")
        if isinstance(self.names, str):
            self.names = [n.strip() for n in self.names.split(",") if n.strip()]
        if self.names is None:
            if len(self.ratios) not in DEFAULT_NAMES:
                raise UsageError(f"{len(self.ratios)} ratios need --names (one split name per ratio)")
            self.names = DEFAULT_NAMES[len(self.ratios)]
        if len(self.names) != len(self.ratios) or len(set(self.names)) != len(self.names):
            raise UsageError(f"--names {','.join(self.names)} must give one distinct name per ratio "
                             f"({len(self.ratios)} ratios)")


def _quotas(n: int, ratios: Sequence[float]) -> list[int]:
    """Split ``n`` items in ``ratios`` with largest-remainder rounding."""
    raw = np.asarray(ratios) * n
    quotas = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - quotas), kind="stable")[: n - quotas.sum()]:
        quotas[i] += 1
    return quotas.tolist()


def assign(labels: Sequence[int], ratios: Sequence[float], *, groups: Sequence[Any] | None = None,
           seed: int = 0) -> np.ndarray:
    """Assign each row to a split index, stratified by label and keeping groups together.

    Args:
        labels: class of each row.
        ratios: share of each split (sums to 1).
        groups: group value of each row (None = the row is its own group).
        seed: random seed.

    Returns:
        The split index of every row.

    Example:
        >>> np.bincount(assign([0] * 8 + [1] * 8, [0.75, 0.25])).tolist()
        [12, 4]
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    out = np.full(len(labels), -1, dtype=np.int64)
    members: dict[Any, list[int]] = defaultdict(list)
    for i in range(len(labels)):
        g = groups[i] if groups is not None else None
        members[("row", i) if g is None or g == "" else ("group", g)].append(i)
    if all(len(m) == 1 for m in members.values()):  # exact stratification
        for label in np.unique(labels):
            rows = rng.permutation(np.flatnonzero(labels == label))
            start = 0
            for s, q in enumerate(_quotas(len(rows), ratios)):
                out[rows[start:start + q]] = s
                start += q
        return out
    classes = np.unique(labels)
    target = np.array([[r * np.sum(labels == c) for c in classes] for r in ratios])
    current = np.zeros_like(target)
    keys = list(members)
    order = rng.permutation(len(keys))
    order = sorted(order, key=lambda k: -len(members[keys[k]]))
    col = {c: j for j, c in enumerate(classes)}
    for k in order:
        rows = members[keys[k]]
        counts = np.zeros(len(classes))
        for i in rows:
            counts[col[labels[i]]] += 1
        deficit = ((target - current) * counts).sum(axis=1) / max(1, len(rows))
        s = int(np.argmax(deficit))
        current[s] += counts
        out[rows] = s
    return out


def row_groups(ds: datasets.Dataset, group_column: str = GROUP) -> list[str] | None:
    """The group of every row: rows that share a ``group`` value, an ``id`` or a ``root_id`` are one group.

    So identical images (same ``id``: oversampled repeats, duplicates) and crops of one photo (same
    ``root_id``) always land in the same split, whether or not a ``group`` column (dedupe's
    duplicate clusters, a person, a video) is present. Returns None when every row is its own group.

    Example:
        >>> import datasets
        >>> row_groups(datasets.Dataset.from_dict({"id": ["a", "b", "a"], "root_id": ["a", "r", "a"]}))
        ['id:a', 'id:b', 'id:a']
    """
    columns = [c for c in (group_column, "id", "root_id") if c in ds.column_names]
    if not columns or not len(ds):
        return None
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def find(key: tuple[str, str]) -> tuple[str, str]:
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    values = [list(ds[c]) for c in columns]
    row_keys = []
    for i in range(len(ds)):
        keys = [(c, str(v[i])) for c, v in zip(columns, values, strict=True) if v[i] not in (None, "")]
        if not keys:
            keys = [("row", str(i))]
        root = find(keys[0])
        for key in keys[1:]:
            other = find(key)
            if other != root:
                parent[other] = root
        row_keys.append(keys[0])
    groups = [find(k) for k in row_keys]
    if len(set(groups)) == len(groups):
        return None
    # name each group by its smallest member key, so the result does not depend on the row order
    name: dict[tuple[str, str], str] = {}
    for g, k in sorted(zip(groups, row_keys, strict=True), key=lambda x: x[1]):
        name.setdefault(g, f"{k[0]}:{k[1]}")
    return [name[g] for g in groups]


def stratified_split(labels: Sequence[int] | np.ndarray, fraction: float, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split positions ``0..n-1`` into (rest, part) with ``fraction`` of every class in ``part``.

    Used to carve a validation split for training and the per-round 80/20 splits of ``refine``.

    A class with one row keeps it in ``rest``; otherwise each class gives
    ``max(1, round(fraction * n_c))`` rows to ``part``.

    Example:
        >>> rest, part = stratified_split([0] * 10 + [1] * 5, 0.2, seed=0)
        >>> len(rest), len(part)
        (12, 3)
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    rest: list[np.ndarray] = []
    part: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = 0 if len(idx) < 2 else min(len(idx) - 1, max(1, int(round(fraction * len(idx)))))
        part.append(idx[:n])
        rest.append(idx[n:])
    return _sorted_cat(rest), _sorted_cat(part)


def _sorted_cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


@register_step("split", SplitConfig)
def split_step(data: datasets.DatasetDict, config: SplitConfig, ctx: StepContext) -> StepOutput:
    """Stratified, seeded, group-aware train/validation/test split."""
    import datasets

    names: list[str] = list(config.names or [])
    ratios: list[float] = list(config.ratios)  # type: ignore[arg-type]
    if config.resplit:
        pool = datasets.concatenate_datasets(list(data.values()))
        kept: dict[str, datasets.Dataset] = {}
    elif all(n in data for n in names):
        return StepOutput(data, info={"kept_existing": list(data), "note": "all target splits exist; pass --resplit"})
    else:
        source = "train" if "train" in data else (next(iter(data)) if len(data) == 1 else None)
        if source is None:
            raise UsageError(f"no 'train' split to carve from among {', '.join(data)}; pass --resplit")
        kept = {k: v for k, v in data.items() if k != source}
        wanted = [(n, r) for n, r in zip(names, ratios, strict=True) if n not in kept]
        total = sum(r for _, r in wanted)
        names, ratios = [n for n, _ in wanted], [r / total for _, r in wanted]
        pool = data[source]
    if config.group_column == SIMILAR_GROUP and config.group_column not in pool.column_names:
        raise UsageError(f"--group similar needs the {SIMILAR_GROUP} column that `ferdata dedupe` writes; "
                         f"{', '.join(pool.column_names)} found: run ferdata dedupe first")
    groups = row_groups(pool, config.group_column)
    check_group_sizes(groups, max_share=config.max_group_share, column=config.group_column)
    where = assign(pool["label"], ratios, groups=groups, seed=ctx.seed)
    result = dict(kept)
    for s, name in enumerate(names):
        result[name] = pool.select(np.flatnonzero(where == s).tolist())
    order = {"train": 0, "validation": 1, "test": 2}
    dd = datasets.DatasetDict({k: result[k] for k in sorted(result, key=lambda k: (order.get(k, 3), k))})
    info = {"ratios": dict(zip(names, ratios, strict=True)), "group_aware": groups is not None,
            "kept_existing": sorted(kept)}
    return StepOutput(dd, info=info)
