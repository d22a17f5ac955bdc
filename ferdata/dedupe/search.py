"""Bit-hash search: every pair of 64-bit hashes within a Hamming radius, exactly, at scale.

:func:`find_duplicates` is a plain function over 64-bit hashes (``np.uint64`` array, ints or
16-hex-digit strings) that returns every pair within a Hamming radius, exactly as a brute force
would, without ever building an all-pairs matrix (see :func:`find_duplicate_arrays` for the
index it uses).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

from ferdata.errors import UsageError

logger = logging.getLogger(__name__)

HASH_BITS = 64

# candidate pairs materialised at once by the index (bounds memory: ~16 bytes each, a few arrays)
_CANDIDATE_BUDGET = 1 << 22
# largest block (bits) looked up by a direct table rather than binary search
_DIRECT_MAX_BITS = 24


def check_threshold(threshold: Any) -> int:
    """Return ``threshold`` as an int in 0..64.

    Raises:
        UsageError: naming the value and the allowed range.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, np.integer)):
        raise UsageError(f"threshold must be an integer in 0..{HASH_BITS}, got {threshold!r}")
    if not 0 <= int(threshold) <= HASH_BITS:
        raise UsageError(f"threshold {threshold} is out of range; allowed: 0..{HASH_BITS} (Hamming bits)")
    return int(threshold)


def as_hash_array(hashes: np.ndarray | Sequence[int] | Sequence[str]) -> np.ndarray:
    """Return 64-bit hashes as a ``np.uint64`` array.

    Args:
        hashes: a ``np.uint64`` (or ``int64``, reinterpreted) array, a sequence of non-negative
            ints below 2**64, or of hex strings of at most 16 digits (``str(imagehash)``).

    Raises:
        UsageError: naming the first bad value.

    Example:
        >>> as_hash_array(["ff00000000000000", "0000000000000001"]).tolist()
        [18374686479671623680, 1]
    """
    if isinstance(hashes, np.ndarray):
        if hashes.dtype == np.uint64:
            return np.ascontiguousarray(hashes.ravel())
        if hashes.dtype == np.int64:
            return np.ascontiguousarray(hashes.ravel()).view(np.uint64)
        if hashes.dtype.kind in "iu" and (hashes.size == 0 or hashes.min() >= 0):
            return hashes.ravel().astype(np.uint64)
        if hashes.dtype.kind not in "OUS":
            raise UsageError(f"hashes must be 64-bit integers or hex strings, got an array of {hashes.dtype}")
        hashes = hashes.ravel().tolist()
    values = list(hashes)
    if values and isinstance(values[0], (str, bytes)):
        out = np.empty(len(values), dtype=np.uint64)
        for i, v in enumerate(values):
            text = v.decode() if isinstance(v, bytes) else v
            try:
                if not 0 < len(text) <= 16:
                    raise ValueError
                out[i] = int(text, 16)
            except (ValueError, TypeError) as e:
                raise UsageError(f"hash {i} is {v!r}: expected a hex string of 1..16 digits (64 bits)") from e
        return out
    try:
        return np.array(values, dtype=np.uint64)
    except (OverflowError, ValueError, TypeError) as e:
        bad = next((v for v in values if not isinstance(v, (int, np.integer)) or not 0 <= int(v) < 2**64), None)
        raise UsageError(f"hashes must be ints in 0..2**64-1 or hex strings; got {bad!r}") from e


def popcount(x: np.ndarray) -> np.ndarray:
    """Number of set bits of each element of a ``uint64`` array (as ``uint8``)."""
    return np.bitwise_count(x)


def _block_layout(k: int) -> list[np.ndarray]:
    """Bit positions of ``k`` interleaved blocks: block j holds bits j, j+k, j+2k, ...

    Interleaving spreads correlated neighbouring bits (adjacent DCT coefficients of a phash)
    over different blocks, which keeps bucket sizes closer to uniform than contiguous blocks.
    """
    return [np.arange(j, HASH_BITS, k) for j in range(k)]


def _block_keys(h: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """The block of each hash made of ``bits``, packed into an int64 key."""
    key = np.zeros(h.shape, dtype=np.uint64)
    for t, p in enumerate(bits):
        key |= ((h >> np.uint64(p)) & np.uint64(1)) << np.uint64(t)
    return key.astype(np.int64)


def _ball(b: int, s: int) -> int:
    """Number of b-bit masks of weight <= s."""
    return sum(math.comb(b, w) for w in range(max(s, -1) + 1))


@dataclass(frozen=True)
class _Plan:
    """How to search: blocks (bit positions) and the radius searched in each, or brute force."""

    blocks: tuple[tuple[int, ...], ...]
    radii: tuple[int, ...]
    cost: float

    @property
    def brute(self) -> bool:
        return not self.blocks


def _plan(n: int, r: int, *, allow_brute: bool = True) -> _Plan:
    """Pick the cheapest exact plan for ``n`` distinct hashes at radius ``r``.

    With ``k`` blocks and radii ``s_1..s_k`` summing to ``r - k + 1``, any pair within ``r``
    has at least one block within its radius (if every block differed by ``s_i + 1`` or more,
    the total would be ``>= r + 1``): the generalised pigeonhole principle. The cost model
    counts probes (``ball(b, s)`` per query) and the candidates they return
    (``n / 2**b`` each); brute force costs ``n**2 / 2`` cheap popcounts.
    """
    brute_cost = 0.05 * n * n / 2
    best = _Plan((), (), brute_cost if allow_brute else math.inf)
    for k in range(2, min(r + 1, 24) + 1):
        blocks = _block_layout(k)
        budget = r - k + 1
        radii = [budget // k + (1 if j < budget % k else 0) for j in range(k)]
        cost = 0.0
        for bits, s in zip(blocks, radii, strict=True):
            b = len(bits)
            per_query = _ball(b, s) / 2 * (1.0 + n / 2.0**b)
            lookup = 1.0 if b <= _DIRECT_MAX_BITS else 1.0 + math.log2(max(n, 2)) / 4
            cost += n * per_query * lookup
        cost += n * HASH_BITS * 0.02  # key extraction
        if cost < best.cost:
            best = _Plan(tuple(tuple(map(int, b)) for b in blocks), tuple(radii), cost)
    return best


def _masks(b: int, s: int) -> np.ndarray:
    """Every non-zero b-bit mask of weight <= s (int64)."""
    out = [sum(1 << p for p in combo) for w in range(1, s + 1) for combo in combinations(range(b), w)]
    return np.array(out, dtype=np.int64)


def _expand(q: np.ndarray, start: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(query, sorted position) for every position in ``[start, start + count)`` of each query."""
    total = int(count.sum())
    reps = np.repeat(q, count)
    pos = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(count) - count, count) + np.repeat(start, count)
    return reps, pos


def _no_pairs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The empty ``(i, j, distance)`` result."""
    empty = np.empty(0, dtype=np.int64)
    return empty, empty, np.empty(0, dtype=np.uint8)


def _chunks_by_count(count: np.ndarray, budget: int) -> Iterable[slice]:
    """Slices of ``count`` whose sums stay near ``budget`` (at least one element each)."""
    if len(count) == 0:
        return
    cum = np.cumsum(count)
    lo = 0
    base = 0
    while lo < len(count):
        hi = int(np.searchsorted(cum, base + budget, side="right"))
        hi = max(hi, lo + 1)
        yield slice(lo, hi)
        base = int(cum[hi - 1])
        lo = hi


def _unique_pairs_index(h: np.ndarray, r: int, plan: _Plan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of distinct hashes within ``r`` with the block index of ``plan`` (see :func:`_plan`)."""
    n = len(h)
    keys = [_block_keys(h, np.array(bits)) for bits in plan.blocks]
    out_i: list[np.ndarray] = []
    out_j: list[np.ndarray] = []
    out_d: list[np.ndarray] = []

    def accept(t: int, a: np.ndarray, c: np.ndarray) -> None:
        d = popcount(h[a] ^ h[c])
        ok = d <= r
        # canonical block: a pair is reported only by the first block within that block's radius
        for u in range(t):
            if not ok.any():
                break
            ok &= popcount((keys[u][a] ^ keys[u][c]).view(np.uint64)) > plan.radii[u]
        if ok.any():
            a, c, d = a[ok], c[ok], d[ok]
            out_i.append(np.minimum(a, c))
            out_j.append(np.maximum(a, c))
            out_d.append(d)

    for t, (bits, s) in enumerate(zip(plan.blocks, plan.radii, strict=True)):
        key = keys[t]
        b = len(bits)
        order = np.argsort(key, kind="stable")
        sorted_keys = key[order]
        direct = b <= _DIRECT_MAX_BITS and (1 << b) <= max(16 * n, 1 << 16)
        if direct:
            table = np.zeros((1 << b) + 1, dtype=np.int32 if n < 2**31 else np.int64)
            np.cumsum(np.bincount(sorted_keys, minlength=1 << b), out=table[1:])
        # exact block match: pairs inside each bucket, each once (partner later in sorted order)
        end = np.searchsorted(sorted_keys, sorted_keys, side="right")
        positions = np.arange(n, dtype=np.int64)
        count = end - positions - 1
        for sl in _chunks_by_count(count, _CANDIDATE_BUDGET):
            p, q = _expand(positions[sl], positions[sl] + 1, count[sl])
            accept(t, order[p], order[q])
        if s == 0:
            continue
        masks = _masks(b, s)
        top = np.floor(np.log2(masks)).astype(np.int64)
        # a pair whose keys differ by mask m is probed once: from the side where m's top bit is 0
        for bit in range(b):
            group = masks[top == bit]
            if not len(group):
                continue
            queries = np.nonzero(((key >> bit) & 1) == 0)[0]
            step = max(1, _CANDIDATE_BUDGET // len(group))
            for lo in range(0, len(queries), step):
                qs = queries[lo:lo + step]
                target = (key[qs][:, None] ^ group[None, :]).ravel()
                if direct:
                    start = table[target]
                    cnt = table[target + 1] - start
                else:
                    start = np.searchsorted(sorted_keys, target, side="left")
                    cnt = np.searchsorted(sorted_keys, target, side="right") - start
                hit = np.nonzero(cnt)[0]
                qq, start, cnt = qs[hit // len(group)], start[hit].astype(np.int64), cnt[hit].astype(np.int64)
                for sl in _chunks_by_count(cnt, _CANDIDATE_BUDGET):
                    a, pos = _expand(qq[sl], start[sl], cnt[sl])
                    accept(t, a, order[pos])
    if not out_i:
        return _no_pairs()
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_d)


def brute_force_pairs(hashes: np.ndarray | Sequence[int] | Sequence[str], threshold: int,
                      *, chunk: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference search: every pair's distance in row chunks (vectorised popcount), O(n**2) time.

    Memory stays bounded (about ``chunk x n`` distances at a time, in buffers reused from chunk to
    chunk); used by the tests and benchmarks to check :func:`find_duplicate_arrays`, and by it where
    it is the faster choice (small inputs, or radii of 12 and more at any size).

    Returns:
        ``(i, j, distance)`` arrays sorted by ``(i, j)``, ``i < j``.
    """
    h = as_hash_array(hashes)
    i, j, d, _ = _BruteRows(h, check_threshold(threshold), chunk=chunk).pairs(0, len(h))
    return i, j, d


class _BruteRows:
    """The chunked brute force over a range of rows at a time: the pairs ``(i, j)``, ``j > i``, of
    rows ``i`` in the range (buffers of ~4M distances, 36 MB, allocated once and reused)."""

    def __init__(self, h: np.ndarray, r: int, *, chunk: int | None = None) -> None:
        n = len(h)
        self.h, self.r = h, r
        self.chunk = chunk or max(1, (1 << 22) // max(n, 1))
        self.xor = np.empty(self.chunk * n, dtype=np.uint64)
        self.dist = np.empty(self.chunk * n, dtype=np.uint8)
        self.near = np.empty(self.chunk * n, dtype=bool)

    def pairs(self, lo: int, hi: int, wanted: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """``(i, j, distance, count)``: the pairs within the radius with ``lo <= i < hi``, sorted by
        ``(i, j)`` (only those with ``wanted[i]`` and ``wanted[j]`` when given), and how many pairs
        there are in the range in all."""
        h, n = self.h, len(self.h)
        out_i, out_j, out_d = [], [], []
        count = 0
        for a in range(lo, min(hi, n - 1), self.chunk):
            b = min(hi, n - 1, a + self.chunk)
            # rows a..b-1 against the rows after a (the pairs below the diagonal are dropped below)
            width = n - a - 1
            shape = (b - a, width)
            x = self.xor[:shape[0] * width].reshape(shape)
            d = self.dist[:shape[0] * width].reshape(shape)
            ok = self.near[:shape[0] * width].reshape(shape)
            np.bitwise_xor(h[a:b, None], h[None, a + 1:], out=x)
            np.bitwise_count(x, out=d)
            np.less_equal(d, self.r, out=ok)
            ii, jj = np.nonzero(ok)
            keep = jj >= ii  # column c is row a + 1 + c: j > i
            count += int(keep.sum())
            if wanted is not None:
                keep &= wanted[ii + a] & wanted[jj + a + 1]
            ii, jj = ii[keep], jj[keep]
            out_d.append(d[ii, jj])
            out_i.append(ii + a)
            out_j.append(jj + a + 1)
        if not out_i:
            return (*_no_pairs(), 0)
        # row-major nonzero over chunks in row order: already sorted by (i, j)
        return (np.concatenate(out_i).astype(np.int64), np.concatenate(out_j).astype(np.int64),
                np.concatenate(out_d).astype(np.uint8), count)


class ForwardPairs:
    """The pairs of ``hashes`` within ``threshold``, served a range of first rows at a time.

    Where :func:`find_duplicate_arrays` would brute-force the rows themselves (:func:`_search_rows`:
    few identical hashes and a radius where the multi-index does not pay off, 12 and more), each range is
    searched when asked for, so memory holds one range's pairs, never all of them (hundreds of
    millions at radius 18 and 300k rows); otherwise the pairs are searched once and sliced.
    Either way :meth:`take` returns the same pairs.

    Args:
        hashes: see :func:`as_hash_array`.
        threshold: the largest Hamming distance (0..64).
    """

    def __init__(self, hashes: np.ndarray | Sequence[int] | Sequence[str], threshold: int) -> None:
        self.h = as_hash_array(hashes)
        self.r = check_threshold(threshold)
        self.streamed = _search_rows(len(self.h), len(np.unique(self.h)), self.r)
        #: pairs within the threshold with a first row in the ranges taken so far (every pair when searched once)
        self.counted = 0
        if self.streamed:
            self._brute = _BruteRows(self.h, self.r)
        else:
            self.i, self.j, self.d = find_duplicate_arrays(self.h, self.r)
            self.counted = len(self.i)

    def take(self, lo: int, hi: int, wanted: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(i, j, distance)``: the pairs with ``lo <= i < hi``, ``i < j``, sorted by ``(i, j)``; with
        ``wanted`` (bool per row) only those with ``wanted[i]`` and ``wanted[j]``."""
        if self.streamed:
            i, j, d, count = self._brute.pairs(lo, hi, wanted)
            self.counted += count
            return i, j, d
        a, b = np.searchsorted(self.i, [lo, hi])
        i, j, d = self.i[a:b], self.j[a:b], self.d[a:b]
        if wanted is not None:
            keep = wanted[i] & wanted[j]
            i, j, d = i[keep], j[keep], d[keep]
        return i, j, d


def _search_rows(n: int, n_unique: int, r: int) -> bool:
    """True when the search brute-forces the rows themselves: few identical hashes (``n_unique`` of
    ``n`` above 90 %) and a radius where the multi-index does not pay off."""
    return r > 0 and n_unique > 0.9 * n and _plan(n_unique, r).brute


def _unique_pairs(u: np.ndarray, r: int, algorithm: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of distinct hash values (indices into ``u``) within ``r``."""
    n = len(u)
    if r == 0 or n < 2:
        return _no_pairs()
    plan = _plan(n, r, allow_brute=algorithm != "index")
    if algorithm == "brute" or plan.brute:
        return brute_force_pairs(u, r)
    logger.debug("hamming index: %d hashes, radius %d, blocks %s radii %s", n, r,
                 [len(b) for b in plan.blocks], plan.radii)
    return _unique_pairs_index(u, r, plan)


def find_duplicate_arrays(hashes: np.ndarray | Sequence[int] | Sequence[str], threshold: int, *,
                          algorithm: str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Like :func:`find_duplicates`, returning ``(i, j, distance)`` numpy arrays (faster for many pairs).

    The search is exact and never builds an all-pairs matrix:

    1. Identical hashes are collapsed (``np.unique``); their pairs have distance 0.
    2. The distinct hashes are searched with a **multi-index hash** built on the generalised
       pigeonhole principle: the 64 bits are split into ``k`` interleaved blocks, each with a
       radius ``s_i`` such that ``sum(s_i) = r - k + 1``; any pair within ``r`` then agrees to
       within ``s_i`` on at least one block. Each block is a sorted key array (plus a direct
       offset table when it has at most 24 bits); a query enumerates the masks of weight
       ``<= s_i``, looks up the matching buckets and checks the full 64-bit distance with a
       vectorised popcount. A pair is reported only by the first block that finds it, and each
       block probe runs from one side only, so no pair is reported twice and nothing has to
       be de-duplicated afterwards. ``k`` is chosen by a cost model (e.g. 3 blocks of 21-22 bits
       at radius 6-8 for a million hashes); tiny inputs use the chunked brute force.
    3. Candidates are materialised in slices of a few million, so memory is bounded by the
       index (a few arrays of ``n``) plus the pairs found.

    Args:
        hashes: see :func:`as_hash_array`.
        threshold: the largest Hamming distance reported (0..64).
        algorithm: ``"auto"`` (cost model), ``"index"`` or ``"brute"`` (for tests and benchmarks).

    Returns:
        ``(i, j, distance)``: int64, int64 and uint8 arrays sorted by ``(i, j)``, ``i < j``.

    Example:
        >>> i, j, d = find_duplicate_arrays(np.array([0, 1, 3, 0xF0], dtype=np.uint64), 1)
        >>> list(zip(i.tolist(), j.tolist(), d.tolist()))
        [(0, 1, 1), (1, 2, 1)]
    """
    if algorithm not in ("auto", "index", "brute"):
        raise UsageError(f"algorithm {algorithm!r} is not allowed; allowed: auto, index, brute")
    r = check_threshold(threshold)
    h = as_hash_array(hashes)
    uniq, inverse, counts = np.unique(h, return_inverse=True, return_counts=True)
    if algorithm != "index" and _search_rows(len(h), len(uniq), r):
        return brute_force_pairs(h, r)  # already in (i, j) order
    return _item_pairs(len(h), inverse, counts, _unique_pairs(uniq, r, algorithm))


def _item_pairs(n: int, inverse: np.ndarray, counts: np.ndarray,
                unique_pairs: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of items from the pairs of their distinct hash values (``np.unique``'s ``inverse``, ``counts``).

    Every pair inside a multi-member value (distance 0), then every member of one value of a
    pair ``(ui, uj, ud)`` of distinct values with every member of the other (distance ``ud``).
    Returns ``(i, j, distance)`` sorted by ``(i, j)``, ``i < j``.
    """
    ui, uj, ud = unique_pairs
    # members of each distinct value, in item order
    members = np.argsort(inverse, kind="stable")
    first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    parts_i, parts_j, parts_d = [], [], []
    # identical hashes: every pair inside each multi-member value
    if (counts > 1).any():
        pos = np.arange(n, dtype=np.int64)
        cnt = np.repeat(first + counts, counts) - pos - 1
        a, b = _expand(pos, pos + 1, cnt)
        parts_i.append(np.minimum(members[a], members[b]))
        parts_j.append(np.maximum(members[a], members[b]))
        parts_d.append(np.zeros(len(a), dtype=np.uint8))
    if len(ui):
        ca, cb = counts[ui], counts[uj]
        pair_idx, off_a = _expand(np.arange(len(ui)), np.zeros(len(ui), dtype=np.int64), ca)
        a = members[first[ui][pair_idx] + off_a]
        rep, off_b = _expand(np.arange(len(pair_idx)), np.zeros(len(pair_idx), dtype=np.int64), cb[pair_idx])
        a = a[rep]
        b = members[first[uj][pair_idx][rep] + off_b]
        parts_i.append(np.minimum(a, b))
        parts_j.append(np.maximum(a, b))
        parts_d.append(ud[pair_idx][rep])
    if not parts_i:
        return _no_pairs()
    i, j, d = (np.concatenate(x) for x in (parts_i, parts_j, parts_d))
    order = np.lexsort((j, i))
    return i[order].astype(np.int64), j[order].astype(np.int64), d[order].astype(np.uint8)


def find_duplicates(hashes: np.ndarray | Sequence[int] | Sequence[str], threshold: int) -> list[tuple[int, int, int]]:
    """Every pair of 64-bit hashes within Hamming distance ``threshold``.

    Usable without a dataset: tools that already have hashes (``str(imagehash.phash(img))``,
    ints, or a ``np.uint64`` array) get the same pairs a brute force would give, in
    deterministic ``(i, j)`` order, at a million hashes in well under a minute (see
    :func:`find_duplicate_arrays` for the index and ``docs/dedupe.md`` for measured figures).

    Args:
        hashes: 64-bit hashes: ``np.uint64`` array, ints, or hex strings of up to 16 digits.
        threshold: the largest distance reported, 0..64 (0: identical hashes only).

    Returns:
        ``(i, j, distance)`` tuples with ``i < j``, sorted.

    Raises:
        UsageError: for a threshold outside 0..64 or a malformed hash.

    Example:
        >>> find_duplicates(["ffff000000000000", "ffff000000000001", "0f0f0f0f0f0f0f0f"], 2)
        [(0, 1, 1)]
    """
    i, j, d = find_duplicate_arrays(hashes, threshold)
    return list(zip(i.tolist(), j.tolist(), d.tolist(), strict=True))


def find_cross_pairs(a: np.ndarray | Sequence[int] | Sequence[str], b: np.ndarray | Sequence[int] | Sequence[str],
                     threshold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair ``(a[i], b[j])`` of hashes of two sets within Hamming distance ``threshold``, exactly.

    The candidate search of ``dedupe --against``: the same radius as :func:`find_duplicate_arrays`,
    between two datasets instead of inside one. Identical hashes of each side are collapsed first,
    then the distinct values are compared in chunks (``chunk x distinct b`` popcounts at a time,
    memory bounded), so the cost is the product of the two numbers of distinct hashes.

    Args:
        a, b: 64-bit hashes (see :func:`as_hash_array`).
        threshold: the largest distance reported, 0..64.

    Returns:
        ``(i, j, distance)``: indices into ``a`` and ``b`` (int64) and distances (uint8), sorted by ``(i, j)``.

    Example:
        >>> i, j, d = find_cross_pairs(["ff00000000000000", "0000000000000001"], ["0000000000000003"], 1)
        >>> list(zip(i.tolist(), j.tolist(), d.tolist()))
        [(1, 0, 1)]
    """
    r = check_threshold(threshold)
    ha, hb = as_hash_array(a), as_hash_array(b)
    if not len(ha) or not len(hb):
        return _no_pairs()
    ua, inv_a = np.unique(ha, return_inverse=True)
    ub, inv_b = np.unique(hb, return_inverse=True)
    chunk = max(1, (1 << 23) // len(ub))
    parts_i, parts_j, parts_d = [], [], []
    for lo in range(0, len(ua), chunk):
        d = popcount(ua[lo:lo + chunk, None] ^ ub[None, :])
        ii, jj = np.nonzero(d <= r)
        parts_i.append(ii + lo)
        parts_j.append(jj)
        parts_d.append(d[ii, jj])
    ui, uj, ud = (np.concatenate(x) for x in (parts_i, parts_j, parts_d))
    if not len(ui):
        return _no_pairs()
    # the members of each distinct value of a, then of b
    members_a, start_a, count_a = _members(inv_a, len(ua))
    members_b, start_b, count_b = _members(inv_b, len(ub))
    pair, off_a = _expand(np.arange(len(ui)), np.zeros(len(ui), dtype=np.int64), count_a[ui])
    rows_a = members_a[start_a[ui][pair] + off_a]
    rep, off_b = _expand(np.arange(len(pair)), np.zeros(len(pair), dtype=np.int64), count_b[uj][pair])
    i = rows_a[rep]
    j = members_b[start_b[uj[pair]][rep] + off_b]
    d = ud[pair][rep]
    order = np.lexsort((j, i))
    return i[order].astype(np.int64), j[order].astype(np.int64), d[order].astype(np.uint8)


def _members(inverse: np.ndarray, n_values: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Items grouped by value (``np.unique``'s ``inverse``): the items in value order, each value's start and count."""
    members = np.argsort(inverse, kind="stable")
    count = np.bincount(inverse, minlength=n_values).astype(np.int64)
    start = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
    return members, start, count
