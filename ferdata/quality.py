"""Image quality checks: the ``quality`` step (``ferdata filter``) and ``drop_flagged``.

Each check is a pure ``calc_*`` function of a uint8 image returning one score; the step stores it
as ``<check>_score`` with the flag ``is_<check>`` (cleanvision's convention). Nothing is removed
unless asked: ``drop`` (``--drop CHECKS``) or the ``drop_flagged`` step moves flagged rows to the
rejects ledger, the reason being the check's name and the details its score.

Checks (scores are computed on the grayscale image; FER images are grayscale by nature, so colour
is never an issue):

============== ========================================== ============================ =========
check          score                                      flagged when                 default
============== ========================================== ============================ =========
dark           99th percentile brightness / 255           score < ``dark_threshold``   0.2
light          5th percentile brightness / 255            score > ``light_threshold``  0.7
blurry         std of the Laplacian / (std of pixels + 1) score < ``blurry_threshold`` 0.2
               at a shorter side of :data:`BLUR_SIDE` px
low_information entropy of the 256-bin histogram (bits)   score < ``low_information_threshold`` 4.5
too_small      shorter side in pixels                     score < ``min_side``         48
odd_aspect     longer side / shorter side                 score > ``max_aspect``       1.5
============== ========================================== ============================ =========

Images larger than :data:`ANALYSIS_MAX_SIDE` are shrunk (area interpolation) before the pixel
checks, which keeps the step fast on 256 x 256 crops and large photos. How the defaults were
chosen, and the share of FER2013 each one flags, is in ``docs/quality.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ferdata.dataset import column_values, make_reject
from ferdata.errors import UsageError
from ferdata.rows import map_images
from ferdata.steps import StepContext, StepOutput, register_step

if TYPE_CHECKING:
    import datasets

#: Longest side at which the pixel checks look at an image.
ANALYSIS_MAX_SIDE = 256
#: Shorter side at which sharpness is measured (larger images are shrunk first), so that one
#: threshold means the same at 48 px and at 256 px: "no detail even at FER2013's resolution".
BLUR_SIDE = 48
CHECKS = ("dark", "light", "blurry", "low_information", "too_small", "odd_aspect")


def to_gray(pixels: np.ndarray) -> np.ndarray:
    """uint8 gray pixels of a gray or RGB image (ITU-R 601 luma)."""
    if pixels.ndim == 2:
        return pixels
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(pixels[:, :, :3]), cv2.COLOR_RGB2GRAY)


def _shrunk(gray: np.ndarray) -> np.ndarray:
    h, w = gray.shape
    if max(h, w) <= ANALYSIS_MAX_SIDE:
        return gray
    import cv2

    s = ANALYSIS_MAX_SIDE / max(h, w)
    return cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def _blur_scale(gray: np.ndarray) -> np.ndarray:
    h, w = gray.shape
    if min(h, w) <= BLUR_SIDE:
        return gray
    import cv2

    s = BLUR_SIDE / min(h, w)
    return cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def _percentile(hist: np.ndarray, q: float) -> float:
    """The ``q`` quantile (0..1) of a 256-bin histogram, as a brightness 0..255."""
    cum = np.cumsum(hist)
    return float(np.searchsorted(cum, q * cum[-1]))


def calc_dark(gray: np.ndarray) -> float:
    """99th percentile brightness in [0, 1]: low when even the brightest pixels are dark.

    Example:
        >>> calc_dark(np.full((48, 48), 20, np.uint8))
        0.0784
    """
    hist = np.bincount(gray.ravel(), minlength=256)
    return round(_percentile(hist, 0.99) / 255, 4)


def calc_light(gray: np.ndarray) -> float:
    """5th percentile brightness in [0, 1]: high when even the darkest pixels are bright.

    Example:
        >>> calc_light(np.full((48, 48), 250, np.uint8))
        0.9804
    """
    hist = np.bincount(gray.ravel(), minlength=256)
    return round(_percentile(hist, 0.05) / 255, 4)


def calc_blurry(gray: np.ndarray) -> float:
    """Sharpness: std of the Laplacian over (std of the pixels + 1); low means blurry.

    Contrast-normalised, so a dim but sharp face is not called blurry.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> calc_blurry(rng.integers(0, 256, (48, 48), dtype=np.uint8)) > 1
        True
    """
    import cv2

    lap = cv2.Laplacian(gray, cv2.CV_32F, ksize=1)
    return round(float(lap.std()) / (float(gray.std()) + 1.0), 4)


def calc_low_information(gray: np.ndarray) -> float:
    """Shannon entropy of the brightness histogram, in bits (0 for a constant image, at most 8).

    Example:
        >>> calc_low_information(np.zeros((48, 48), np.uint8))
        0.0
    """
    hist = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    p = hist[hist > 0] / hist.sum()
    return round(float(-(p * np.log2(p)).sum()) + 0.0, 4)


def calc_too_small(pixels: np.ndarray) -> float:
    """The shorter side in pixels.

    Example:
        >>> calc_too_small(np.zeros((48, 30), np.uint8))
        30.0
    """
    return float(min(pixels.shape[:2]))


def calc_odd_aspect(pixels: np.ndarray) -> float:
    """Longer side over shorter side (1 for a square).

    Example:
        >>> calc_odd_aspect(np.zeros((48, 96), np.uint8))
        2.0
    """
    h, w = pixels.shape[:2]
    return round(max(h, w) / max(1, min(h, w)), 4)


@dataclass
class QualityConfig:
    """Options of the ``quality`` step (``ferdata filter``); defaults chosen for face images."""

    dark_threshold: float = 0.2
    light_threshold: float = 0.7
    blurry_threshold: float = 0.2
    low_information_threshold: float = 4.5
    min_side: int = 48
    max_aspect: float = 1.5
    #: checks whose flagged rows go to the rejects ledger (``all`` for every check)
    drop: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.drop = parse_checks(self.drop, CHECKS, option="--drop")
        for name in ("dark_threshold", "light_threshold"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise UsageError(f"--{name.replace('_', '-')} {value} is not allowed; allowed: a number in [0, 1]")
        if self.blurry_threshold < 0:
            raise UsageError(f"--blurry-threshold {self.blurry_threshold} is not allowed; allowed: a number >= 0")
        if not 0 <= self.low_information_threshold <= 8:
            raise UsageError(f"--low-information-threshold {self.low_information_threshold} is not allowed; "
                             "allowed: 0..8 bits")
        if self.min_side < 1:
            raise UsageError(f"--min-side {self.min_side} is not allowed; allowed: 1 or more pixels")
        if self.max_aspect < 1:
            raise UsageError(f"--max-aspect {self.max_aspect} is not allowed; allowed: a number >= 1")

    def flags(self, scores: dict[str, float]) -> dict[str, bool]:
        """``{check: flagged}`` for one image's scores."""
        return {
            "dark": scores["dark"] < self.dark_threshold,
            "light": scores["light"] > self.light_threshold,
            "blurry": scores["blurry"] < self.blurry_threshold,
            "low_information": scores["low_information"] < self.low_information_threshold,
            "too_small": scores["too_small"] < self.min_side,
            "odd_aspect": scores["odd_aspect"] > self.max_aspect,
        }


def parse_checks(value: str | Sequence[str] | None, allowed: Sequence[str], *, option: str = "checks") -> list[str]:
    """Turn ``"dark,blurry"`` / ``["dark"]`` / ``"all"`` into a list of check names.

    Raises:
        UsageError: for an unknown name, listing the allowed ones.

    Example:
        >>> parse_checks("dark, blurry", CHECKS)
        ['dark', 'blurry']
    """
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [str(v).strip() for v in items if str(v).strip()]
    if "all" in names:
        return list(allowed)
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise UsageError(f"{option} {','.join(unknown)} is not a known check; allowed: {', '.join(allowed)}, all")
    return list(dict.fromkeys(names))


def score_image(pixels: np.ndarray) -> dict[str, float]:
    """All check scores of one image.

    Example:
        >>> sorted(score_image(np.zeros((48, 48), np.uint8)))
        ['blurry', 'dark', 'light', 'low_information', 'odd_aspect', 'too_small']
    """
    gray = _shrunk(to_gray(pixels))
    return {
        "dark": calc_dark(gray),
        "light": calc_light(gray),
        "blurry": calc_blurry(_blur_scale(gray)),
        "low_information": calc_low_information(gray),
        "too_small": calc_too_small(pixels),
        "odd_aspect": calc_odd_aspect(pixels),
    }


def _quality_features() -> dict[str, Any]:
    import datasets

    features: dict[str, Any] = {}
    for check in CHECKS:
        features[f"{check}_score"] = datasets.Value("float32")
        features[f"is_{check}"] = datasets.Value("bool")
    return features


def score_row(pixels: np.ndarray, row: dict[str, Any], *, config: QualityConfig) -> dict[str, Any]:
    """The ``<check>_score`` and ``is_<check>`` columns of one image."""
    scores = score_image(pixels)
    flags = config.flags(scores)
    return {**{f"{c}_score": scores[c] for c in CHECKS}, **{f"is_{c}": flags[c] for c in CHECKS}}


def _counts(dd: datasets.DatasetDict) -> dict[str, int]:
    return {c: int(sum(sum(column_values(ds, f"is_{c}")) for ds in dd.values() if len(ds))) for c in CHECKS}


@register_step("quality", QualityConfig)
def quality_step(data: datasets.DatasetDict, config: QualityConfig, ctx: StepContext) -> StepOutput:
    """Score every image on the quality checks; flag, and drop the checks named in ``drop``."""
    # the checks read only the pixels: the other columns are not read into the rows (7 % faster on FER2013)
    dd, rejects = map_images(data, score_row, step="quality", columns=_quality_features(), batch_size=1000,
                             input_columns=["image"], fn_kwargs={"config": config}, num_proc=ctx.num_proc)
    rows = sum(len(ds) for ds in dd.values())
    flagged = _counts(dd)
    info: dict[str, Any] = {"flagged": flagged, "flagged_share": {c: round(n / rows, 4) if rows else 0.0
                                                                 for c, n in flagged.items()}}
    if config.drop:
        dd, dropped = drop_rows(dd, config.drop, step="quality")
        rejects.extend(dropped)
        info["dropped"] = len(dropped)
    return StepOutput(dd, rejects, info=info)


def flag_columns(ds: datasets.Dataset) -> list[str]:
    """Names of the checks with an ``is_<check>`` column in ``ds``."""
    return [c[3:] for c in ds.column_names if c.startswith("is_")]


def drop_rows(dd: datasets.DatasetDict, checks: Sequence[str], *, step: str = "drop_flagged",
              ) -> tuple[datasets.DatasetDict, list[dict[str, str]]]:
    """Move rows flagged ``is_<check>`` for any of ``checks`` to ledger rows.

    The reason is the first flagged check (in the order given); the details hold the flagged checks
    and their ``<check>_score`` values.

    Raises:
        UsageError: when a check has no ``is_<check>`` column, listing the ones there are.

    Example:
        >>> dd2, rejects = drop_rows(dd, ["dark", "blurry"])   # doctest: +SKIP
    """
    import datasets

    kept: dict[str, datasets.Dataset] = {}
    rejects: list[dict[str, str]] = []
    for split, ds in dd.items():
        available = flag_columns(ds)
        missing = [c for c in checks if c not in available]
        if missing:
            raise UsageError(f"cannot drop {', '.join(missing)}: no is_{missing[0]} column in split {split!r}; "
                             f"flag columns: {', '.join(available) or '(none: run the quality step first)'}")
        cols = [f"is_{c}" for c in checks] + [f"{c}_score" for c in checks if f"{c}_score" in ds.column_names]
        table = ds.select_columns(["id", "origin", *cols]).to_dict() if len(ds) else {}
        bad = []
        for i in range(len(ds)):
            hit = [c for c in checks if table[f"is_{c}"][i]]
            if not hit:
                continue
            bad.append(i)
            details: dict[str, Any] = {"flagged": hit}
            details.update({f"{c}_score": table[f"{c}_score"][i] for c in hit if f"{c}_score" in table})
            rejects.append(make_reject(table["id"][i], table["origin"][i], step, hit[0], details))
        if bad:
            bad_set = set(bad)
            ds = ds.select([i for i in range(len(ds)) if i not in bad_set])
        kept[split] = ds
    return datasets.DatasetDict(kept), rejects


@dataclass
class DropFlaggedConfig:
    """Options of the ``drop_flagged`` step."""

    #: check names (``is_<check>`` columns, e.g. ``dark``, ``blurry``, ``duplicate``), or a comma list
    checks: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        items = self.checks.split(",") if isinstance(self.checks, str) else list(self.checks or [])
        self.checks = [str(c).strip() for c in items if str(c).strip()]
        if not self.checks:
            raise UsageError("drop_flagged needs checks: one or more of " + ", ".join(CHECKS) + " (or other is_* "
                             "columns such as duplicate)")


@register_step("drop_flagged", DropFlaggedConfig)
def drop_flagged_step(data: datasets.DatasetDict, config: DropFlaggedConfig, ctx: StepContext) -> StepOutput:
    """Move rows flagged by the named checks (``is_<check>`` columns) to the rejects ledger."""
    checks: Sequence[str] = config.checks
    if "all" in checks:
        first = next(iter(data.values()))
        checks = flag_columns(first)
    dd, rejects = drop_rows(data, checks, step="drop_flagged")
    return StepOutput(dd, rejects, info={"checks": list(checks)})


__all__: list[str] = ["CHECKS", "QualityConfig", "score_image", "drop_rows"] + [
    f"calc_{c}" for c in CHECKS
]
