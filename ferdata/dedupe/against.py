"""Contamination: rows of a dataset that show the same photograph as a row of another dataset.

``ferdata dedupe IN --against OTHER`` (and ``balance --supplement``, against its base) asks, for
every row of IN, whether OTHER holds the same photo, with the within-dataset method and its
thresholds (no second method):

* the same pixels (``id``) or the same lineage root (``root_id``: both rows come from one imported
  image, before a crop or an upscale changed the pixels of one of them): ``same_pixels`` /
  ``same_root``;
* otherwise a perceptual-hash candidate within the radius (:func:`~ferdata.dedupe.search.find_cross_pairs`)
  that the verifier confirms at the same distance-dependent threshold as a near duplicate
  (:meth:`~ferdata.dedupe.config.DedupeConfig.required_score`): ``near``. The verifier compares
  gray 48 x 48 versions of both images (:func:`~ferdata.dedupe.verify.verify_array`), so the two
  datasets may differ in image size, colour mode and class set.

OTHER is only read: its hashes are reused when it has them (``phash`` + ``phash_of`` equal to its
ids), computed otherwise into temporary files (never into OTHER). :func:`find_contamination`
returns which rows of IN match and the ledger details of each match (reason ``contamination``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ferdata.columns import ID, IS_CONSTANT, ORIGIN, ROOT_ID
from ferdata.dataset import column_values
from ferdata.dedupe.config import STEP, DedupeConfig
from ferdata.dedupe.hashing import hash_dataset
from ferdata.dedupe.search import as_hash_array, find_cross_pairs
from ferdata.errors import UsageError

if TYPE_CHECKING:
    import datasets

    from ferdata.dedupe.grouping import _Rows

logger = logging.getLogger(__name__)

#: how a row matched: identical pixels, one imported image (lineage root), or a verified near copy
MATCHES = ("same_pixels", "same_root", "near")


@dataclass
class Contamination:
    """What :func:`find_contamination` found, for the rows of the checked dataset (split order)."""

    #: True for each row that shows a photograph of another dataset
    matched: np.ndarray
    #: ledger details of each matched row (by row): the other dataset, its row, distance and score
    details: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: one entry per other dataset: its rows, hashes reused, pairs verified, rows matched by kind
    info: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _OtherRows:
    """The narrow columns of the other dataset the check reads (every split, in split order)."""

    data: datasets.DatasetDict
    splits: list[str]
    split_of: np.ndarray
    ids: list[str]
    roots: list[str | None]
    origins: list[str]
    hashes: np.ndarray
    const: np.ndarray
    reused: bool
    undecodable: int

    @property
    def n(self) -> int:
        return len(self.ids)


def input_dirs(dd: datasets.DatasetDict) -> set[Path]:
    """The dataset directories ``dd`` was loaded from (from its Arrow files; empty in memory)."""
    out = set()
    for ds in dd.values():
        for f in ds.cache_files:
            path = Path(f["filename"]).resolve()
            out.add(path.parent.parent)  # DIR/<split>/data-*.arrow
    return out


def check_not_input(dd: datasets.DatasetDict, paths: Sequence[str]) -> None:
    """Refuse an ``against`` dataset that is the checked dataset's own directory.

    Raises:
        UsageError: naming the path (every row would be its own contamination).
    """
    dirs = input_dirs(dd)
    for path in paths:
        if Path(path).resolve() in dirs:
            raise UsageError(f"--against {path} is the dataset being deduplicated; give another dataset directory "
                             "(within-dataset duplicates are found without --against)")


def _optional_column(dd: datasets.DatasetDict, splits: Sequence[str], name: str) -> list[Any]:
    """``name`` of every row (split order), or None per row where a split has no such column."""
    out: list[Any] = []
    for s in splits:
        ds = dd[s]
        out.extend(column_values(ds, name) if name in ds.column_names else [None] * len(ds))
    return out


def _other_rows(other: datasets.DatasetDict, config: DedupeConfig, *, num_proc: int, step: str) -> _OtherRows:
    """Hashes of the other dataset: reused when present, else computed into temporary files."""
    from ferdata.dataset import no_input_caching

    with no_input_caching():  # map() results go to a temporary directory, never beside OTHER's files
        hashed, rejects, reused = hash_dataset(other, method=config.method, num_proc=num_proc, step=step)
    splits = list(hashed)
    sizes = [len(hashed[s]) for s in splits]
    n = sum(sizes)
    hashes = _optional_column(hashed, splits, config.method)
    return _OtherRows(data=hashed, splits=splits, split_of=np.repeat(np.arange(len(splits)), sizes),
                      ids=_optional_column(hashed, splits, ID), roots=_optional_column(hashed, splits, ROOT_ID),
                      origins=_optional_column(hashed, splits, ORIGIN),
                      hashes=as_hash_array(hashes) if n else np.empty(0, np.uint64),
                      const=np.array(_optional_column(hashed, splits, IS_CONSTANT), dtype=bool),
                      reused=reused, undecodable=len(rejects))


def _first_rows(keys: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The first of ``rows`` for each distinct ``keys[rows]`` (in row order)."""
    if not len(rows):
        return rows
    _, first = np.unique(keys[rows], return_index=True)
    return rows[np.sort(first)]


def find_contamination(dd: datasets.DatasetDict, rows: _Rows, config: DedupeConfig, *,
                       others: Sequence[tuple[str, datasets.DatasetDict | None]] | None = None, num_proc: int = 1,
                       step: str = STEP) -> Contamination:
    """Which rows of ``dd`` show a photograph of another dataset (``config.against``, in that order).

    Args:
        dd: the checked dataset, hashed (:func:`~ferdata.dedupe.hashing.hash_dataset`).
        rows: its narrow columns (:func:`~ferdata.dedupe.grouping.gather_rows`).
        config: the method, radius, verifier and thresholds (the within-dataset ones) and ``against``.
        others: ``(name, dataset)`` pairs to check against instead of opening ``config.against``
            (``balance --supplement`` passes its base in memory; ``None`` datasets are opened by name).
        num_proc: processes for hashing a dataset that has no hashes yet.

    Returns:
        A :class:`Contamination`: a row matched by several datasets keeps the first match.

    Example:
        >>> found = find_contamination(dd, gather_rows(dd, "phash"), DedupeConfig(against=["fer2013"]))  # doctest: +SKIP
        >>> int(found.matched.sum()), found.info[0]["same_pixels"]  # doctest: +SKIP
        (12, 3)
    """
    from ferdata.dataset import open_dataset

    sources = list(others) if others is not None else [(p, None) for p in config.against_paths]
    result = Contamination(np.zeros(rows.n, dtype=bool))
    roots = _optional_column(dd, rows.splits, ROOT_ID)
    for name, other in sources:
        o = _other_rows(other if other is not None else open_dataset(name), config, num_proc=num_proc, step=step)
        entry: dict[str, Any] = {"against": name, "rows": o.n, "hashes_reused": o.reused, "undecodable": o.undecodable,
                                 "candidate_pairs": 0, "verified_pairs": 0, **dict.fromkeys(MATCHES, 0)}
        result.info.append(entry)
        if o.undecodable:
            logger.warning("dedupe: %d rows of --against %s have no decodable image; they are not compared",
                           o.undecodable, name)
        if not o.n:
            logger.warning("dedupe: --against %s has no rows; nothing is removed as its contamination", name)
            entry["empty"] = True
            continue
        _exact_matches(result, rows, roots, o, name, entry, config)
        _near_matches(result, dd, rows, o, name, entry, config)
        entry["contaminated"] = sum(entry[k] for k in MATCHES)
    return result


def _details(o: _OtherRows, k: int, name: str, match: str, config: DedupeConfig, *, distance: int,
             score: float | None) -> dict[str, Any]:
    """The ledger details of a row that matched row ``k`` of the other dataset ``name``."""
    near = match == "near"
    return {"against": name, "against_id": o.ids[k], "against_origin": o.origins[k],
            "against_split": o.splits[int(o.split_of[k])], "match": match, "distance": distance,
            "verify_score": None if score is None or np.isnan(score) else round(float(score), 4),
            "required_score": round(float(config.required_score(np.array([distance]))[0]), 4) if near else None,
            "method": config.method, "threshold": config.threshold, "verify": config.verify,
            "min_score": config.min_score, "score_rise": config.score_rise}


def _exact_matches(result: Contamination, rows: _Rows, roots: list[Any], o: _OtherRows, name: str,
                   entry: dict[str, Any], config: DedupeConfig) -> None:
    """Rows with the pixels of a row of ``o`` (same ``id``), or from the same imported image (``root_id``)."""
    by_id: dict[str, int] = {}
    by_key: dict[str, int] = {}
    for k, (rid, root) in enumerate(zip(o.ids, o.roots, strict=True)):
        by_id.setdefault(rid, k)
        for key in (rid, root):
            if key:
                by_key.setdefault(key, k)
    for r in np.nonzero(~result.matched)[0]:
        rid, root = rows.ids[r], roots[r]
        if rid in by_id:
            k, match = by_id[rid], "same_pixels"
        elif rid in by_key or (root and root in by_key):
            k, match = by_key.get(rid, by_key.get(root, -1)), "same_root"
        else:
            continue
        result.matched[r] = True
        result.details[int(r)] = _details(o, k, name, match, config, distance=int(popcount_one(rows.hashes[r],
                                                                                               o.hashes[k])),
                                          score=None)
        entry[match] += 1


def popcount_one(a: np.uint64, b: np.uint64) -> int:
    """Hamming distance of two 64-bit hashes."""
    return int(np.bitwise_count(np.uint64(a) ^ np.uint64(b)))


def _near_matches(result: Contamination, dd: datasets.DatasetDict, rows: _Rows, o: _OtherRows, name: str,
                  entry: dict[str, Any], config: DedupeConfig) -> None:
    """Rows the verifier confirms as the same photograph as a hash candidate of ``o`` (one verdict per id)."""
    from ferdata.dedupe.grouping import _ACCEPT_XCORR, _verify_images
    from ferdata.dedupe.verify import DetailSpectra, verify_pairs

    # constant images have degenerate hashes: they match by id only, as inside a dataset
    mine = _first_rows(rows.id_keys, np.nonzero(~result.matched & ~rows.const)[0])
    theirs = _first_rows(np.array(o.ids, dtype=object).astype("S"), np.nonzero(~o.const)[0])
    i, j, d = find_cross_pairs(rows.hashes[mine], o.hashes[theirs], config.threshold)
    entry["candidate_pairs"] = len(i)
    if not len(i):
        return
    d = d.astype(np.int64)
    if config.verify == "none":
        score, ok = np.full(len(i), np.nan), np.ones(len(i), dtype=bool)
    else:
        ui, li = np.unique(i, return_inverse=True)
        uj, lj = np.unique(j, return_inverse=True)
        images = np.concatenate([_verify_images(dd, rows.splits, mine[ui]), _verify_images(o.data, o.splits, theirs[uj])])
        res = verify_pairs(DetailSpectra(images), li, lj + len(ui), accept_at=_ACCEPT_XCORR)
        score = res.score
        ok = score >= config.required_score(d)
        entry["verified_pairs"] = len(i)
    # the best confirmed match of each row: highest score, then smallest distance, then the other's order
    sel = np.nonzero(ok)[0]
    order = sel[np.lexsort((j[sel], d[sel], -np.nan_to_num(score[sel], nan=2.0), i[sel]))]
    first = order[np.r_[True, i[order][1:] != i[order][:-1]]] if len(order) else order
    by_id: dict[bytes, int] = {}
    for e in first:
        by_id[rows.id_keys[mine[i[e]]]] = int(e)
    for r in np.nonzero(~result.matched)[0]:
        e = by_id.get(rows.id_keys[r])
        if e is None:
            continue
        k = int(theirs[j[e]])
        result.matched[r] = True
        result.details[int(r)] = _details(o, k, name, "near", config, distance=int(d[e]), score=float(score[e]))
        entry["near"] += 1


def same_photo_matches(candidates: datasets.Dataset, base: datasets.DatasetDict, config: DedupeConfig | None = None,
                       *, name: str = "base", num_proc: int = 1, step: str = STEP) -> Contamination:
    """Which rows of ``candidates`` show a photograph of ``base`` (the check of ``balance --supplement``).

    The same check as ``dedupe --against`` (:func:`find_contamination`, the dedupe defaults unless
    ``config`` is given), for rows that are not in a dataset yet: a supplement pool against the
    dataset it would be added to. Rows whose image cannot be decoded are not matched.

    Returns:
        A :class:`Contamination` over the rows of ``candidates`` (``details`` keyed by their row
        number) with one ``info`` entry, for ``base``.

    Example:
        >>> found = same_photo_matches(other["train"], dd)  # doctest: +SKIP
        >>> found.details[0]["match"], found.details[0]["against_id"][:8]  # doctest: +SKIP
        ('near', '3f2a9c1d')
    """
    import datasets

    from ferdata.dataset import no_input_caching
    from ferdata.dedupe.grouping import gather_rows

    config = config or DedupeConfig()
    result = Contamination(np.zeros(len(candidates), dtype=bool))
    if not len(candidates):
        result.info.append({"against": name, "rows": sum(len(x) for x in base.values()), "contaminated": 0})
        return result
    position = "_ferdata_row"
    pool = datasets.DatasetDict({"candidates": candidates.add_column(position, np.arange(len(candidates)).tolist())})
    with no_input_caching():
        pool, _, _ = hash_dataset(pool, method=config.method, num_proc=num_proc, step=step)
    rows = gather_rows(pool, config.method)
    found = find_contamination(pool, rows, config, others=[(name, base)], num_proc=num_proc, step=step)
    at = np.asarray(column_values(pool["candidates"], position), dtype=np.int64)
    result.matched[at[found.matched]] = True
    result.details = {int(at[r]): d for r, d in found.details.items()}
    result.info = found.info
    return result
