"""Exact and perceptual duplicates: Hamming-radius search at scale, and the ``dedupe`` step.

Two layers:

* :func:`find_duplicates` — a plain function over 64-bit hashes (``np.uint64`` array, ints or
  16-hex-digit strings) that returns every pair within a Hamming radius, exactly as a brute force
  would, without ever building an all-pairs matrix (see :func:`find_duplicate_arrays` for the
  index it uses).
* the registered step ``dedupe`` (``ferdata dedupe IN --out DIR``): hashes every image with
  ``imagehash`` into a column (``phash`` by default, reused when present), groups exact
  duplicates (same decoded pixels: the row ``id``) and near duplicates (candidates within
  ``threshold`` of their survivor's hash, confirmed by the ``xcorr`` verifier: the same
  photograph), survivor-first and without chaining; records ``group`` and ``similar_group``
  columns for ``split``, reports split leakage and label conflicts, and moves every removed row
  to the rejects ledger with ``duplicate_of``, the distance and the verifier score.

Constant images (every pixel the same value) get ``is_constant = True``. Their perceptual hashes
are degenerate (a black and a white frame hash alike), so they are grouped **only** with rows of
the same ``id`` (identical pixels), never by hash.

The parts, one module each:

* :mod:`~ferdata.dedupe.search` — the Hamming-radius search (:func:`find_duplicates`);
* :mod:`~ferdata.dedupe.hashing` — hashing the images of a dataset (:func:`hash_dataset`);
* :mod:`~ferdata.dedupe.verify` — the verifier: is a pair the same photograph (:func:`verify_pairs`);
* :mod:`~ferdata.dedupe.grouping` — survivor-first grouping and the decisions on the groups;
* :mod:`~ferdata.dedupe.config` — the step's options (:class:`DedupeConfig`);
* :mod:`~ferdata.dedupe.report` — the groups report and the CLI summary lines;
* :mod:`~ferdata.dedupe.step` — :func:`dedupe_dataset` and the registered step (imported here, so
  ``import ferdata.dedupe`` registers ``dedupe``).
"""

from __future__ import annotations

from ferdata.columns import (
    DUPLICATE_MARK_COLUMNS as REPORT_COLUMNS,  # columns added by report_only runs
)
from ferdata.columns import GROUP as GROUP_COLUMN
from ferdata.columns import GROUP_SIZE as GROUP_SIZE_COLUMN
from ferdata.columns import IS_CONSTANT as CONSTANT_COLUMN
from ferdata.columns import SIMILAR_GROUP as SIMILAR_COLUMN
from ferdata.dedupe.config import (
    DEFAULT_KEEP,
    DEFAULT_METHOD,
    DEFAULT_MIN_SCORE,
    DEFAULT_SIMILAR_SCORE,
    DEFAULT_THRESHOLD,
    DEFAULT_VERIFY,
    KEEP_POLICIES,
    METHODS,
    ON_CONFLICT,
    STEP,
    DedupeConfig,
    check_method,
)
from ferdata.dedupe.hashing import (
    _gray_png,  # noqa: F401  (private names the tests and benchmarks import)
    hash_dataset,
    image_hash,
    is_constant,
)
from ferdata.dedupe.report import (
    REPORT_FIELDS,
    REPORT_NAME,
    format_groups,
    read_groups_report,
    summary_lines,
    write_groups_report,
)
from ferdata.dedupe.search import (
    HASH_BITS,
    _plan,  # noqa: F401
    as_hash_array,
    brute_force_pairs,
    check_threshold,
    find_duplicate_arrays,
    find_duplicates,
    popcount,
)
from ferdata.dedupe.step import DedupeResult, dedupe_dataset, dedupe_step
from ferdata.dedupe.verify import (
    EXTENDED_ZOOM_PENALTY,
    VERIFIERS,
    VERIFY_MAX_SHIFT,
    VERIFY_SIGMA,
    VERIFY_SIZE,
    VERIFY_ZOOM_FLOOR,
    VERIFY_ZOOMS,
    DetailSpectra,
    VerifyResult,
    _correlate,  # noqa: F401
    _detail_spectra,  # noqa: F401
    _shifts,  # noqa: F401
    verify_array,
    verify_pairs,
)

__all__ = [
    "CONSTANT_COLUMN", "DEFAULT_KEEP", "DEFAULT_METHOD", "DEFAULT_MIN_SCORE", "DEFAULT_SIMILAR_SCORE",
    "DEFAULT_THRESHOLD", "DEFAULT_VERIFY", "EXTENDED_ZOOM_PENALTY", "GROUP_COLUMN", "GROUP_SIZE_COLUMN", "HASH_BITS",
    "KEEP_POLICIES",
    "METHODS", "ON_CONFLICT", "REPORT_COLUMNS", "REPORT_FIELDS", "REPORT_NAME", "SIMILAR_COLUMN", "STEP",
    "VERIFIERS", "VERIFY_MAX_SHIFT", "VERIFY_SIGMA", "VERIFY_SIZE", "VERIFY_ZOOMS", "VERIFY_ZOOM_FLOOR",
    "DedupeConfig", "DedupeResult", "DetailSpectra", "VerifyResult", "as_hash_array", "brute_force_pairs",
    "check_method", "check_threshold", "dedupe_dataset", "dedupe_step", "find_duplicate_arrays",
    "find_duplicates", "format_groups", "hash_dataset", "image_hash", "is_constant", "popcount",
    "read_groups_report", "summary_lines", "verify_array", "verify_pairs", "write_groups_report",
]
