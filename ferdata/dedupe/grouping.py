"""Grouping rows into duplicate groups: survivor-first, verified, without chaining.

:func:`_group_rows` decides the survivor of every row (:class:`_SurvivorFirst` runs its greedy
over the candidate pairs of :class:`~ferdata.dedupe.search.ForwardPairs`, confirmed by
the verifier); :class:`DuplicateGroups` derives from it the group values, the label-conflict
policy, split leakage, similar groups and the ledger rows of the ``dedupe`` step
(:mod:`ferdata.dedupe.step`).
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ferdata.columns import (
    DUPLICATE_OF,
    EXACT_DUPLICATE,
    GROUP,
    GROUP_SIZE,
    ID,
    IMAGE,
    IS_CONSTANT,
    LABEL,
    LABEL_CONFLICT,
    NEAR_DUPLICATE,
    ORIGIN,
    SIMILAR_GROUP,
)
from ferdata.dataset import column_values
from ferdata.dedupe.config import CONTAMINATION
from ferdata.dedupe.hashing import _gray_png
from ferdata.dedupe.search import ForwardPairs, _plan, as_hash_array, popcount
from ferdata.dedupe.verify import (
    RESIDUAL_UNMEASURED,
    VERIFY_SIZE,
    VERIFY_ZOOM_FLOOR,
    DetailSpectra,
    _in_threads,
    verify_array_u8,
    verify_pairs,
)

if TYPE_CHECKING:
    import datasets

    from ferdata.dedupe.against import Contamination
    from ferdata.dedupe.config import DedupeConfig

logger = logging.getLogger(__name__)

# survivors whose candidate pairs are verified in one batch (the decisions stay sequential)
_GREEDY_BLOCK = 512
# unzoomed detail correlation above which a pair is registered without the zoom trials
_ACCEPT_XCORR = 0.85
# rows above which a brute-force candidate search gets a warning (quadratic: minutes and more)
_LARGE_ROWS = 200_000
#: memory the verifier holds at most, beyond one block's work: every paired row's bound parts (3.5 kB,
#: kept) and a cache of images, spectra and zoomed images (~50 kB a row), released after a block when it
#: exceeds the rest of this (and _MIN_CACHE): fer2013-train's 25k rows stay cached (the step as fast as with
#: no limit), 300k rows recompute some spectra instead of holding ~15 GB (docs/performance.md)
_VERIFIER_MEMORY = 3 << 29
#: the cache is allowed at least this much (a smaller one recomputes most spectra in every block)
_MIN_CACHE = 1 << 28
#: images per decoding task of :func:`_verify_images`
_DECODE_CHUNK = 2048


# ---------------------------------------------------------------------------------------------
# the rows and their survivor preference


@dataclass
class _Rows:
    """The narrow columns grouping needs, of every row of the splits concatenated in split order."""

    splits: list[str]
    #: label names (class index -> name)
    names: list[str]
    sizes: list[int]
    #: split index and index within its split of each row
    split_of: np.ndarray
    index_in_split: np.ndarray
    ids: np.ndarray
    #: a compact, sortable copy of the ids
    id_keys: np.ndarray
    origins: list[Any]
    labels: np.ndarray
    hashes: np.ndarray
    const: np.ndarray

    @property
    def n(self) -> int:
        """Number of rows."""
        return len(self.ids)

    def label_name(self, k: int) -> str:
        """Name of class ``k`` (the number itself when there is no name)."""
        return self.names[k] if 0 <= k < len(self.names) else str(k)


def gather_rows(dd: datasets.DatasetDict, method: str) -> _Rows:
    """The columns of every split of ``dd`` that grouping needs (``dd`` hashed with ``method``)."""
    from ferdata.dataset import label_names

    splits = list(dd)
    sizes = [len(dd[s]) for s in splits]
    n = sum(sizes)

    def gather(name: str) -> list[Any]:
        return [x for s in splits for x in column_values(dd[s], name)]

    ids = np.array(gather(ID), dtype=object)
    return _Rows(splits=splits, names=label_names(dd) if len(dd) else [], sizes=sizes,
                 split_of=np.repeat(np.arange(len(splits)), sizes),
                 index_in_split=np.concatenate([np.arange(k) for k in sizes]) if n else np.empty(0, dtype=np.int64),
                 ids=ids, id_keys=ids.astype("S") if n else np.empty(0, dtype="S1"), origins=gather(ORIGIN),
                 labels=np.array(gather(LABEL), dtype=np.int64),
                 hashes=as_hash_array(gather(method)) if n else np.empty(0, np.uint64),
                 const=np.array(gather(IS_CONSTANT), dtype=bool))


def survivor_rank(dd: datasets.DatasetDict, rows: _Rows, keep: str) -> np.ndarray:
    """Survivor preference of every row under the ``keep`` policy: lowest first, then dataset order."""
    n = rows.n
    if keep == "first":
        return np.zeros(n, dtype=np.int64)
    if keep == "largest":
        return -np.concatenate([_image_pixels(dd[s]) for s in rows.splits]) if n else np.empty(0, np.int64)
    pref = [s.strip() for s in keep.split(",")]
    split_rank = np.array([pref.index(s) if s in pref else len(pref) + i for i, s in enumerate(rows.splits)])
    return split_rank[rows.split_of] if n else np.empty(0, np.int64)


def _image_pixels(ds: datasets.Dataset) -> np.ndarray:
    """Width x height of every image (header only)."""
    import io

    from PIL import Image

    sizes = []
    for value in column_values(ds, IMAGE):  # {bytes, path}: undecoded
        data = value.get("bytes") or Path(value["path"]).read_bytes()
        with Image.open(io.BytesIO(data)) as img:
            sizes.append(img.size[0] * img.size[1])
    return np.array(sizes, dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# survivor-first grouping


@dataclass
class _Grouping:
    """What :func:`_group_rows` decides, per row of the concatenated splits."""

    #: the row each row is kept as (itself for a survivor)
    survivor: np.ndarray
    #: verifier score against the survivor (NaN: survivor, exact copy or no verifier)
    score: np.ndarray
    #: True for a pixel-identical copy of another row of its group (always ``exact_duplicate``)
    is_copy: np.ndarray
    #: similar-group component of each row (meaningful on survivors)
    similar: np.ndarray
    #: id index of each row (rows with the same pixels share it)
    id_inv: np.ndarray
    info: dict[str, Any]


def _verify_images(dd: datasets.DatasetDict, splits: list[str], rows: np.ndarray, *, workers: int = 1) -> np.ndarray:
    """Verifier images (:func:`verify_array_u8`) of the given global rows, one uint8 stack in their order
    (decoded on ``workers`` threads: OpenCV's decoder releases the GIL)."""

    from ferdata.images import ImageRejected, to_array

    rows = np.asarray(rows, dtype=np.int64)
    out = np.zeros((len(rows), VERIFY_SIZE, VERIFY_SIZE), dtype=np.uint8)
    offsets = np.concatenate([[0], np.cumsum([len(dd[s]) for s in splits])])
    for k, split in enumerate(splits):
        at = np.nonzero((rows >= offsets[k]) & (rows < offsets[k + 1]))[0]
        if not len(at):
            continue
        local = rows[at] - offsets[k]

        def decode(part: slice, at: np.ndarray = at, local: np.ndarray = local, ds: datasets.Dataset = dd[split]) -> None:
            values = column_values(ds.select(local[part].tolist()), IMAGE)  # {bytes, path}: undecoded, a part at a time
            for n, value in zip(at[part].tolist(), values, strict=True):
                try:
                    gray = _gray_png(value)
                    out[n] = verify_array_u8(to_array(value) if gray is None else gray)
                except ImageRejected:  # only with reused hashes of a row whose image went bad: never confirmed
                    logger.warning("dedupe: row %d has no decodable image; it is not verified as a duplicate", rows[n])

        _in_threads(decode, [slice(lo, lo + _DECODE_CHUNK) for lo in range(0, len(at), _DECODE_CHUNK)], workers)
    return out


def _group_rows(dd: datasets.DatasetDict, splits: list[str], config: DedupeConfig, *, rank: np.ndarray,
                id_keys: np.ndarray, hashes: np.ndarray, const: np.ndarray,
                exclude: np.ndarray | None = None, rows: np.ndarray | None = None, workers: int = 1) -> _Grouping:
    """Survivor-first grouping: no chaining, every member within the radius of its own survivor.

    1. Rows with the same ``id`` (identical pixels) are one unit; its first row in keep order
       represents it, the others are its copies (``exact_duplicate``, always).
    2. Candidate pairs: representatives (not constant) whose hashes are within ``threshold``.
    3. In keep order (``rank``, then dataset order), each representative not yet grouped becomes
       a survivor; each of its candidates not yet grouped joins its group when the verifier
       confirms the pair (score >= ``config.required_score(distance)``; every candidate with
       ``verify="none"``). A
       row is therefore never grouped through a third row: a~b~c with a~c beyond the radius
       (or unverified) leaves c to be a survivor of its own.
    4. Similar groups: a survivor's candidates that scored at least ``similar_score`` but were not
       confirmed link the two groups; bounded like the duplicate groups, each similar group is an
       anchor and the groups linked to it directly (never a chain of look-alikes).

    Rows marked in ``exclude`` (contamination, removed on their own account) take no part: each
    stays a group of its own. With ``config.within`` false every row does.
    """
    n = len(id_keys)
    if exclude is not None and exclude.any() and n:
        keep = np.nonzero(~exclude)[0]
        part = _group_rows(dd, splits, config, rank=rank[keep], id_keys=id_keys[keep], hashes=hashes[keep],
                           const=const[keep], rows=keep, workers=workers) if len(keep) else None
        return _with_excluded(n, keep, part, id_keys)
    order = np.lexsort((np.arange(n), rank)) if n else np.empty(0, np.int64)
    survivor = np.arange(n, dtype=np.int64)
    score = np.full(n, np.nan)
    is_copy = np.zeros(n, dtype=bool)
    info: dict[str, Any] = {"candidate_pairs": 0, "verified_pairs": 0, "rejected_by_verifier": 0}
    if not n:
        return _Grouping(survivor, score, is_copy, np.empty(0, np.int64), np.empty(0, np.int64), info)
    _, id_inv = np.unique(id_keys, return_inverse=True)
    if not config.within:
        return _Grouping(survivor, score, is_copy, np.arange(n, dtype=np.int64), id_inv, info)
    _, first = np.unique(id_inv[order], return_index=True)
    rep_of_id = order[first]
    survivor[:] = rep_of_id[id_inv]
    is_copy = survivor != np.arange(n)
    # candidates: representatives that are not constant, in keep order (local index = turn)
    reps = rep_of_id[np.argsort(np.argsort(order)[rep_of_id], kind="stable")]
    cand = reps[~const[reps]]
    # the dataset's own row numbers of the candidates (the grouping may run on a subset of the rows)
    greedy = _SurvivorFirst(dd, splits, cand, _candidate_pairs(hashes[cand], config.threshold), config,
                            image_rows=None if rows is None else rows[cand], workers=workers)
    greedy.run()
    info.update(candidate_pairs=greedy.pairs.counted, verified_pairs=greedy.verified, rejected_by_verifier=greedy.rejected)
    score[cand] = greedy.score
    survivor[cand] = cand[greedy.owner]
    survivor = survivor[survivor]  # copies follow their representative
    return _Grouping(survivor, score, is_copy, greedy.similar(n, survivor), id_inv, info)


def _with_excluded(n: int, keep: np.ndarray, part: _Grouping | None, id_keys: np.ndarray) -> _Grouping:
    """The grouping of all ``n`` rows from the grouping ``part`` of the rows ``keep``: the others alone."""
    survivor = np.arange(n, dtype=np.int64)
    score = np.full(n, np.nan)
    is_copy = np.zeros(n, dtype=bool)
    similar = np.arange(n, dtype=np.int64)
    info: dict[str, Any] = {"candidate_pairs": 0, "verified_pairs": 0, "rejected_by_verifier": 0}
    if part is not None:
        survivor[keep] = keep[part.survivor]
        score[keep] = part.score
        is_copy[keep] = part.is_copy
        similar[keep] = keep[part.similar]
        info = part.info
    _, id_inv = np.unique(id_keys, return_inverse=True)
    return _Grouping(survivor, score, is_copy, similar, id_inv, info)


def _candidate_pairs(hashes: np.ndarray, threshold: int) -> ForwardPairs:
    """The pairs of the candidates (indices into ``hashes``) within ``threshold``, a range of rows at a time."""
    m = len(hashes)
    if m > _LARGE_ROWS and _plan(m, threshold).brute:
        logger.warning("dedupe: %d rows at radius %d: the exact candidate search is quadratic here (the "
                       "multi-index does not pay off at this radius: ~%.0f CPU-min of search for these rows, 28 for a "
                       "million, and the candidates to verify grow with the square of the rows); for datasets this "
                       "large pass --threshold 8 or less (docs/dedupe.md)", m, threshold, 28 * (m / 1e6) ** 2)
    return ForwardPairs(hashes, threshold)


class _SurvivorFirst:
    """The greedy of :func:`_group_rows` over the candidate rows, one turn each, in keep order.

    A candidate (turn ``u``) is free while ``owner[u] < 0``. When its turn comes, a free
    candidate becomes a survivor (``owner[u] = u``) and claims its free later neighbours in the
    candidate-pair graph that the verifier confirms (:meth:`claim`). Free turns are decided a
    block at a time (:meth:`decide_block`); a block's pairs are searched when it comes
    (:class:`~ferdata.dedupe.search.ForwardPairs`: only pairs of two free rows, each scored once),
    so memory holds one block's pairs, and only the images of rows in a pair are decoded, when
    first needed.

    Args:
        dd, splits: the dataset and its split order (the verifier's images are read from it).
        cand: the row of each candidate, in turn order.
        pairs: the candidate pairs (turns) within the radius (:func:`_candidate_pairs`).
        config: its ``verify``, ``min_score``, ``score_rise`` and ``similar_score`` are used.
        image_rows: the row of ``dd`` holding each candidate's image, when ``cand`` numbers a subset.
        workers: threads for the verifier's bulk work (:func:`~ferdata.dedupe.verify.verify_pairs`).
    """

    def __init__(self, dd: datasets.DatasetDict, splits: list[str], cand: np.ndarray, pairs: ForwardPairs,
                 config: DedupeConfig, *, image_rows: np.ndarray | None = None, workers: int = 1) -> None:
        m = len(cand)
        self.cand, self.pairs, self.config = cand, pairs, config
        self.image_rows = cand if image_rows is None else image_rows  # the rows of dd the candidates' images are in
        #: verifier score of each candidate against its survivor (NaN: survivor, or no verifier)
        self.score = np.full(m, np.nan)
        #: survivor (turn) of each candidate; -1 while it is free
        self.owner = np.full(m, -1, dtype=np.int64)
        #: (survivor, candidate) pairs scored at least similar_score but not taken
        self.links: list[tuple[int, int]] = []
        self.verified = 0
        self.rejected = 0
        self.verify = config.verify != "none"
        # indexed by candidate turn, images decoded when first paired; the cache bounded by _VERIFIER_MEMORY
        self.spectra = DetailSpectra(m, load=lambda turns: _verify_images(dd, splits, self.image_rows[turns],
                                                                          workers=workers))
        # a threshold below what a pair under the zoom floor can score needs the exact correlation of every pair
        self.exact = min(config.min_score, config.similar_score) < VERIFY_ZOOM_FLOOR - RESIDUAL_UNMEASURED
        self.workers = workers

    def score_edges(self, li: np.ndarray, lj: np.ndarray) -> np.ndarray:
        """Verifier scores of the pairs ``(li, lj)`` (turns), in one batch (NaN without a verifier)."""
        if not self.verify or not len(li):
            return np.full(len(li), np.nan)
        # a pair whose unzoomed detail correlation is already this high skips the zoom trials
        result = verify_pairs(self.spectra, li, lj, accept_at=_ACCEPT_XCORR, exact=self.exact, workers=self.workers)
        self.verified += len(li)
        return result.score

    def claim(self, u: int, nb: np.ndarray, sc: np.ndarray, required: np.ndarray) -> None:
        """Survivor ``u`` takes its free candidates ``nb`` (scores ``sc``, needing ``required``) that the verifier confirms."""
        free = self.owner[nb] < 0
        nb, sc, required = nb[free], sc[free], required[free]
        if self.verify:
            ok = sc >= required
            self.rejected += int((~ok).sum())
            self.links.extend((u, int(v)) for v in nb[~ok & (sc >= self.config.similar_score)])
            self.score[nb[ok]] = sc[ok]
        else:
            ok = np.ones(len(nb), dtype=bool)
        self.owner[nb[ok]] = u

    def run(self) -> None:
        """Decide every candidate, a block of free turns at a time (:meth:`decide_block`)."""
        m = len(self.cand)
        turn = 0
        in_block = np.zeros(m, dtype=bool)
        while turn < m:
            start = turn
            block: list[int] = []
            while turn < m and len(block) < _GREEDY_BLOCK:
                if self.owner[turn] < 0:
                    block.append(turn)
                turn += 1
            # the pairs of the block's rows with later free rows (earlier rows are all decided)
            li, lj, d = self.pairs.take(start, turn, self.owner < 0)
            in_block[block] = True
            self.decide_block(block, in_block, li, lj, self.config.required_score(d))
            in_block[block] = False
            if self.spectra.cached_bytes() > max(_MIN_CACHE, _VERIFIER_MEMORY - self.spectra.bound_bytes()):
                self.spectra.forget()

    def decide_block(self, block: list[int], in_block: np.ndarray, li: np.ndarray, lj: np.ndarray,
                     required: np.ndarray) -> None:
        """Decide a block of free turns (marked in ``in_block``) exactly as one turn at a time would.

        ``(li, lj)``: the pairs of the block's turns with later free turns, sorted, and the score
        each needs. A block row can only be taken by an earlier block row, so the pairs inside the
        block are scored first, the block's survivors found, and only then their pairs to later rows
        scored.
        """
        lo, hi = np.searchsorted(li, block), np.searchsorted(li, np.add(block, 1))
        edges = {u: slice(a, b) for u, a, b in zip(block, lo.tolist(), hi.tolist(), strict=True)}
        escore = np.full(len(li), np.nan)
        inside = np.nonzero(in_block[lj])[0]
        escore[inside] = self.score_edges(li[inside], lj[inside])
        survivors: list[int] = []
        for u in block:
            if self.owner[u] >= 0:
                continue
            self.owner[u] = u
            survivors.append(u)
            e = edges[u]
            here = in_block[lj[e]]
            self.claim(u, lj[e][here], escore[e][here], required[e][here])
        if not survivors:
            return
        is_survivor = np.zeros(len(in_block), dtype=bool)
        is_survivor[survivors] = True
        outside = np.nonzero(is_survivor[li] & ~in_block[lj] & (self.owner[lj] < 0))[0]
        escore[outside] = self.score_edges(li[outside], lj[outside])
        for u in survivors:
            e = edges[u]
            later = ~in_block[lj[e]]
            self.claim(u, lj[e][later], escore[e][later], required[e][later])

    def similar(self, n: int, survivor: np.ndarray) -> np.ndarray:
        """Similar-group anchor (a row) of each of the ``n`` rows, from the links and the final ``survivor``.

        Bounded like the duplicate groups, without chaining: in keep order, a survivor not yet in
        a similar group becomes an anchor and takes the survivors linked to it directly (a link
        to a row that another survivor took links that survivor). A look-alike of a look-alike
        is not pulled in: every member is linked to its own anchor.
        """
        sim = np.arange(n, dtype=np.int64)
        if not self.links:
            return sim
        a = np.array([self.cand[u] for u, _ in self.links])
        b = survivor[np.array([self.cand[v] for _, v in self.links])]
        keep = a != b
        a, b = a[keep], b[keep]
        if not len(a):
            return sim
        turn = np.full(n, -1, dtype=np.int64)
        turn[self.cand] = np.arange(len(self.cand))
        src, dst = np.concatenate([a, b]), np.concatenate([b, a])
        order = np.lexsort((turn[dst], turn[src]))
        src, dst = src[order], dst[order]
        assigned = np.zeros(n, dtype=bool)
        starts = np.flatnonzero(np.r_[True, src[1:] != src[:-1]])
        for lo, hi in zip(starts, [*starts[1:], len(src)], strict=True):  # anchors in keep (turn) order
            anchor = int(src[lo])
            if assigned[anchor]:
                continue
            members = dst[lo:hi]
            members = np.unique(members[~assigned[members]])
            if not len(members):
                continue
            assigned[anchor] = True
            assigned[members] = True
            sim[members] = anchor
        return sim[survivor]  # the rows of a duplicate group follow their survivor


# ---------------------------------------------------------------------------------------------
# the groups and the decisions on them


class DuplicateGroups:
    """The duplicate groups of the rows and what the ``dedupe`` step does with each (arrays over rows).

    Built from the rows (:func:`gather_rows`) and their survivor-first :class:`_Grouping`: the
    group of each row (``comp``, ``size``, ``group_id`` per group, ``distance`` to the survivor,
    ``diameter`` per group), the similar groups (``similar_id`` per group, ``similar_size``,
    ``linked``) and, under ``config.on_conflict``, the ``action`` (keep, remove, relabel),
    ``reason`` and ``new_label`` of each row. :meth:`ledger_rows`, :meth:`split_leakage` and
    :meth:`similar_groups` read them; :func:`ferdata.dedupe.report.report_rows` writes the report.
    """

    def __init__(self, rows: _Rows, grouping: _Grouping, config: DedupeConfig,
                 contamination: Contamination | None = None) -> None:
        self.rows, self.grouping, self.config = rows, grouping, config
        self.survivor, self.score = grouping.survivor, grouping.score
        self.contamination = contamination
        self._find_groups()
        self._find_similar()
        self._measure_diameters()
        self._resolve_conflicts()
        if contamination is not None:  # rows of another dataset's photos: removed on their own account
            self.action[contamination.matched] = "remove"
            self.reason[contamination.matched] = CONTAMINATION

    def _find_groups(self) -> None:
        """Group of each row, group sizes, survivors and values, distances, members of each group."""
        rows, survivor, n = self.rows, self.survivor, self.rows.n
        _, self.comp = np.unique(survivor, return_inverse=True) if n else (None, np.empty(0, np.int64))
        self.comp_size = np.bincount(self.comp) if n else np.empty(0, np.int64)
        self.size = self.comp_size[self.comp] if n else np.empty(0, np.int64)
        self.survivor_of_comp = np.empty(self.comp_size.shape, dtype=np.int64)
        self.survivor_of_comp[self.comp] = survivor
        # group value: the smallest id of the group (independent of the keep policy and row order)
        self.group_id = np.empty(len(self.comp_size), dtype=object)
        for row in np.lexsort((rows.id_keys, self.comp)) if n else []:
            if self.group_id[self.comp[row]] is None:
                self.group_id[self.comp[row]] = rows.ids[row]
        self.distance = popcount(rows.hashes ^ rows.hashes[survivor]) if n else np.empty(0, np.uint8)
        self.in_group = self.size > 1
        self.members_of: dict[int, list[int]] = defaultdict(list)
        for row in np.nonzero(self.in_group)[0]:
            self.members_of[int(self.comp[row])].append(int(row))

    def _find_similar(self) -> None:
        """Similar groups: duplicate groups linked by the verifier; value = their smallest group value."""
        n, comp = self.rows.n, self.comp
        sim_comp = self.grouping.similar[self.survivor_of_comp] if n else np.empty(0, np.int64)
        best: dict[int, str] = {}
        for c, g in enumerate(self.group_id):
            k = int(sim_comp[c])
            if k not in best or g < best[k]:
                best[k] = g
        self.similar_id = np.array([best[int(k)] for k in sim_comp], dtype=object)
        self.similar_size = np.bincount(sim_comp[comp])[sim_comp[comp]] if n else np.empty(0, np.int64)
        # rows of a similar group that links two or more duplicate groups
        self.linked = np.bincount(sim_comp)[sim_comp[comp]] > 1 if n else np.zeros(0, dtype=bool)

    def _measure_diameters(self) -> None:
        """Diameter of each group: the largest hash distance between two of its members."""
        hashes, n = self.rows.hashes, self.rows.n
        self.diameter = np.zeros(len(self.comp_size), dtype=np.int64)
        by_comp = np.argsort(self.comp, kind="stable")
        starts = np.concatenate([[0], np.cumsum(self.comp_size)]) if n else np.zeros(1, np.int64)
        for c in np.nonzero(self.comp_size > 1)[0]:
            hs = np.unique(hashes[by_comp[starts[c]:starts[c + 1]]])
            if len(hs) > 1:
                self.diameter[c] = int(popcount(hs[:, None] ^ hs[None, :]).max())

    def _resolve_conflicts(self) -> None:
        """Action, reason and new label of each row: copies are removed, then label conflicts resolved."""
        rows, survivor, n = self.rows, self.survivor, self.rows.n
        self.action = np.where(self.in_group & (np.arange(n) != survivor), "remove", "keep").astype(object)
        self.reason = np.where(self.grouping.is_copy | (rows.id_keys == rows.id_keys[survivor]), EXACT_DUPLICATE,
                               NEAR_DUPLICATE).astype(object)
        self.reason[self.action == "keep"] = ""
        self.new_label = rows.labels.copy()
        self.conflict_rows = np.zeros(n, dtype=bool)
        self.conflict_groups = 0
        self.relabelled = 0
        self.eval_not_relabelled = 0  # evaluation survivors keep their label (issue 12: test rows are never relabelled)
        on_conflict = self.config.on_conflict
        for c, members in self.members_of.items():
            counts = Counter(rows.labels[members].tolist())
            if len(counts) < 2:
                continue
            self.conflict_groups += 1
            self.conflict_rows[members] = True
            top = counts.most_common()
            tie = len(top) > 1 and top[0][1] == top[1][1]
            if on_conflict == "drop" or (on_conflict == "majority" and tie):
                self.action[members] = "remove"
                self.reason[members] = LABEL_CONFLICT
            elif on_conflict == "majority":
                self._relabel_survivor(c, top[0][0])

    def _relabel_survivor(self, c: int, majority: int) -> None:
        """Give group ``c``'s survivor the ``majority`` label, unless it is in an evaluation split."""
        from ferdata.dataset import EVAL_SPLITS

        rows = self.rows
        s_row = int(self.survivor_of_comp[c])
        if rows.labels[s_row] != majority and rows.splits[rows.split_of[s_row]] in EVAL_SPLITS:
            self.eval_not_relabelled += 1
        elif rows.labels[s_row] != majority:
            self.new_label[s_row] = majority
            self.action[s_row] = "relabel"
            self.relabelled += 1

    def removed(self) -> np.ndarray:
        """The rows the step removes (or, with ``report_only``, would remove)."""
        return np.nonzero(self.action == "remove")[0]

    def _split_pairs(self, members: list[int]) -> list[str]:
        """``a/b`` for each pair of splits the rows ``members`` are in."""
        present = sorted(set(self.rows.split_of[members].tolist()))
        return [f"{self.rows.splits[a]}/{self.rows.splits[b]}" for a, b in combinations(present, 2)]

    def split_leakage(self) -> tuple[Counter[str], int]:
        """Duplicate groups per pair of splits they span (before removal), and the rows of those groups."""
        leakage: Counter[str] = Counter()
        leak_rows = 0
        for members in self.members_of.values():
            pairs = self._split_pairs(members)
            if pairs:
                leak_rows += len(members)
                leakage.update(pairs)
        return leakage, leak_rows

    def similar_groups(self) -> tuple[dict[str, list[int]], Counter[str]]:
        """Similar groups (same person or session, other photos; kept) and the pairs of splits they span.

        Returns:
            The rows of each similar group that links two or more duplicate groups, by value, and
            the number of those groups per pair of splits.
        """
        members: dict[str, list[int]] = defaultdict(list)
        for row in np.nonzero(self.linked)[0]:
            members[str(self.similar_id[self.comp[row]])].append(int(row))
        leakage: Counter[str] = Counter()
        for rows in members.values():
            leakage.update(self._split_pairs(rows))
        return members, leakage

    def ledger_rows(self, step: str) -> list[dict[str, str]]:
        """A rejects-ledger row per removed row; the details name its survivor, group, distance and score."""
        from ferdata.dataset import make_reject

        rows, config = self.rows, self.config
        out = []
        for row in self.removed():
            if self.reason[row] == CONTAMINATION:
                out.append(contamination_reject(rows, int(row), self.contamination, step))
                continue
            s, c = int(self.survivor[row]), self.comp[row]
            details = {DUPLICATE_OF: rows.ids[s], "distance": int(self.distance[row]), GROUP: self.group_id[c],
                       GROUP_SIZE: int(self.size[row]), "group_diameter": int(self.diameter[c]),
                       "split": rows.splits[rows.split_of[row]], "survivor_split": rows.splits[rows.split_of[s]],
                       "label": rows.label_name(rows.labels[row]), "survivor_label": rows.label_name(rows.labels[s]),
                       "method": config.method, "threshold": config.threshold, "verify": config.verify,
                       "verify_score": None if np.isnan(self.score[row]) else round(float(self.score[row]), 4),
                       "min_score": config.min_score, "score_rise": config.score_rise,
                       "required_score": round(float(config.required_score(self.distance[row])), 4),
                       SIMILAR_GROUP: self.similar_id[c]}
            if self.reason[row] == LABEL_CONFLICT:
                details["labels"] = sorted({rows.label_name(rows.labels[k]) for k in self.members_of[int(c)]})
            out.append(make_reject(rows.ids[row], rows.origins[row], step, self.reason[row], details))
        return out


def contamination_reject(rows: _Rows, row: int, contamination: Contamination | None, step: str) -> dict[str, Any]:
    """The ledger row of a row removed as ``contamination``: the other dataset's row, distance and score."""
    from ferdata.dataset import make_reject

    if contamination is None:  # the reason is only ever set together with a result
        raise RuntimeError("contamination reason without a contamination result")
    details = {**contamination.details[row], "split": rows.splits[rows.split_of[row]],
               "label": rows.label_name(rows.labels[row])}
    return make_reject(rows.ids[row], rows.origins[row], step, CONTAMINATION, details)
