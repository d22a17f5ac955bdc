"""Options of the ``dedupe`` step: the allowed values, the defaults and :class:`DedupeConfig`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ferdata.dedupe.search import check_threshold
from ferdata.dedupe.verify import VERIFIERS
from ferdata.errors import UsageError

STEP = "dedupe"
#: Hash methods (``imagehash`` functions, 8x8 = 64 bits each).
METHODS = ("phash", "dhash", "whash", "ahash")
#: Duplicate-handling policies for groups whose members carry different labels.
ON_CONFLICT = ("keep", "drop", "majority")
#: Survivor policies besides a split preference list.
KEEP_POLICIES = ("first", "largest")
#: Default survivor policy: a split preference, evaluation splits first.
DEFAULT_KEEP = "test,validation,train"
DEFAULT_METHOD = "phash"
#: candidate radius (phash bits), verifier and its thresholds: chosen from the pairs labelled by eye
#: at dataset scale (tests/data/fer2013-train-pairs.csv: 335 pairs of fer2013-train, stratified by
#: distance and score) and on fer2013-dev (tests/data/fer2013-dev-pairs.csv); tables in docs/dedupe.md
DEFAULT_THRESHOLD = 18
DEFAULT_VERIFY = "xcorr"
#: smallest verdict score (xcorr - residual) of a near duplicate at a hash distance of RISE_FROM bits or less
DEFAULT_MIN_SCORE = 0.44
#: the threshold rises by this much per hash bit beyond RISE_FROM (0.52 at 18 bits): candidate pairs,
#: and look-alikes among them, grow fast with the distance and with the rows (docs/dedupe.md)
DEFAULT_SCORE_RISE = 0.01
RISE_FROM = 10
DEFAULT_SIMILAR_SCORE = 0.35
#: Reject reason of a row that shows a photograph of an ``against`` dataset.
CONTAMINATION = "contamination"


def check_method(method: str) -> str:
    """Return ``method`` if it is a known hash method.

    Raises:
        UsageError: naming the value and the allowed ones.
    """
    if method not in METHODS:
        raise UsageError(f"method {method!r} is not allowed; allowed: {', '.join(METHODS)}")
    return method


@dataclass
class DedupeConfig:
    """Options of the ``dedupe`` step (names match the CLI options)."""

    #: perceptual hash: phash, dhash, whash or ahash (64 bits each)
    method: str = DEFAULT_METHOD
    #: candidate radius: largest Hamming distance between a near duplicate and its survivor, 0..64
    #: (0: identical hashes only)
    threshold: int = DEFAULT_THRESHOLD
    #: verifier of candidate pairs: xcorr (registered detail correlation) or none (radius only)
    verify: str = DEFAULT_VERIFY
    #: smallest verdict score (xcorr - residual) of a near duplicate (same photograph) at a hash
    #: distance of RISE_FROM bits or less, -1..1
    min_score: float = DEFAULT_MIN_SCORE
    #: added to min_score per hash bit beyond RISE_FROM, 0..0.1
    score_rise: float = DEFAULT_SCORE_RISE
    #: smallest verdict score linking a kept row to a similar group's anchor (a look-alike: the same
    #: person in another photo, or a close stranger; never chained), -1..1; >= min_score turns it off
    similar_score: float = DEFAULT_SIMILAR_SCORE
    #: survivor of a group: "first", "largest", or a split preference such as "test,validation,train"
    keep: str = DEFAULT_KEEP
    #: groups whose members carry different labels: keep (the survivor's label), drop (the whole
    #: group) or majority (the survivor takes the majority label; a tie drops the group; a test or
    #: validation survivor is never relabelled: it keeps its own label)
    on_conflict: str = "keep"
    #: annotate and report the groups, remove nothing
    report_only: bool = False
    #: write the groups report here (.csv or .json)
    report: str | None = None
    #: other dataset directories: rows showing one of their photographs (same pixels, same lineage root,
    #: or a verified near copy at the thresholds above) are removed as ``contamination``; the others are
    #: only read. A path, or a list of paths ("" or [] = none)
    against: list[str] | str | None = None
    #: also find duplicates inside the dataset (false: only the ``against`` check, group columns untouched)
    within: bool = True

    def required_score(self, distance: np.ndarray) -> np.ndarray:
        """The verdict score a candidate pair at each hash ``distance`` needs to be a near duplicate."""
        return self.min_score + self.score_rise * np.maximum(np.asarray(distance, dtype=np.float64) - RISE_FROM, 0)

    def __post_init__(self) -> None:
        check_method(self.method)
        self.threshold = check_threshold(self.threshold)
        if self.verify not in VERIFIERS:
            raise UsageError(f"verify {self.verify!r} is not allowed; allowed: {', '.join(VERIFIERS)}")
        for name in ("min_score", "similar_score"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1.0 <= float(value) <= 1.0:
                raise UsageError(f"{name} must be a number in -1..1 (verifier correlation), got {value!r}")
            setattr(self, name, float(value))
        rise = self.score_rise
        if isinstance(rise, bool) or not isinstance(rise, (int, float)) or not 0.0 <= float(rise) <= 0.1:
            raise UsageError(f"score_rise must be a number in 0..0.1 (per hash bit), got {rise!r}")
        self.score_rise = float(rise)
        if self.on_conflict not in ON_CONFLICT:
            raise UsageError(f"on_conflict {self.on_conflict!r} is not allowed; allowed: {', '.join(ON_CONFLICT)}")
        self.keep = str(self.keep).strip()
        if self.keep not in KEEP_POLICIES:
            names = [s.strip() for s in self.keep.split(",")]
            if not self.keep or any(not s for s in names):
                raise UsageError(f"keep {self.keep!r} is not allowed; allowed: first, largest, or a comma-separated "
                                 "split preference such as test,validation,train")
        if self.report is not None and Path(self.report).suffix.lower() not in (".csv", ".json"):
            raise UsageError(f"report {self.report!r} must end in .csv or .json")
        if not isinstance(self.within, bool):
            raise UsageError(f"within must be true or false, got {self.within!r}")
        self.against = check_against(self.against)

    @property
    def against_paths(self) -> list[str]:
        """The ``against`` dataset directories (a list, possibly empty)."""
        return list(self.against or [])


def check_against(value: Any) -> list[str]:
    """``against`` as a list of dataset directories: a path, a list of paths, or "" / [] / None for none.

    Raises:
        UsageError: for a value of another type, or a path that is not a dataset directory (naming it).
    """
    from ferdata.dataset import check_dataset_dir
    from ferdata.errors import FerdataError

    if value is None or value == "":
        return []
    if isinstance(value, (str, os.PathLike)):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (str, os.PathLike)) and str(v) for v in value):
        raise UsageError(f"against must be a dataset directory or a list of them, got {value!r}")
    paths = [os.fspath(v) for v in value]
    for path in paths:
        try:
            check_dataset_dir(path)
        except FerdataError as e:
            raise UsageError(f"--against {path}: {e}") from e
    return paths
