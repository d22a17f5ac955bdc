"""How were these low-resolution images made? A spectral estimate of the degradation regime.

A downscale with antialiasing (OpenCV ``INTER_AREA``, Pillow ``BICUBIC``/``BILINEAR``) low-passes
the image before sampling, so little energy is left near the Nyquist frequency. A downscale
without it (OpenCV ``INTER_CUBIC``/``INTER_LINEAR``/``INTER_NEAREST`` by an integer factor, i.e. a
plain ``cv2.resize``) samples the high-resolution pixels and folds their high frequencies back
into the top band. A super-resolution model trained on one kind of input loses on the other
(issue 17), so :func:`estimate_degradation` measures the statistic below on a sample of a dataset
and names the regime; ``ferdata upscale --model auto`` picks the model from it and
``ferdata sr-inspect DIR`` prints it.

The statistic, per image: the share of spectral power (2-D DFT of the gray image, its mean
removed, no window) at radial frequency above 0.75 of Nyquist (``high_band_fraction``); its
median over the sample decides. A second statistic is reported beside it as evidence: the top
band's power over the band 0.375-0.75 Nyquist (``high_mid_ratio``), less sensitive to how much
fine detail the content has.

The references are measured (``python tests/benchmarks/bench_sr.py --only spectral``): 600
``faces-hr-144`` faces downscaled 144 -> 48 by each method, against 600 ``fer2013-dev`` images.
Medians of ``high_band_fraction``: area 0.0141, Pillow bicubic 0.0129, Pillow bilinear 0.0111,
blur sigma 1 + area 0.0103, OpenCV cubic / linear / nearest 0.0196-0.0198; FER2013-dev 0.0148.
:data:`ALIASED_THRESHOLD` sits halfway between the area and the aliased medians.

The statistic depends on the image side (a smaller image of the same face keeps more real
detail near its Nyquist frequency), so each image is compared with the threshold for its side:
halfway between the area and the lowest aliased median of the same faces downscaled to that side
(:data:`THRESHOLDS`: 36 px 0.0274, 48 px 0.0169, 64 px 0.0086, 72 px 0.0072 -- 144 -> 72, the x2
evaluation: area 0.0066, OpenCV nearest / cubic 0.0078 / 0.0079, OpenCV linear equals area at
exactly /2; log-linear in between, the end values beyond). The separation shrinks with the side
(at 64 px the aliased medians are only 1.2-1.35x the area median, at 72 px 1.2x, at 48 px 1.4x,
at 36 px 1.4-1.6x), and it is a property of the
content as well as of the resize: images with much less fine detail than faces read as smooth.
The decision is on the median of ``fraction / threshold(side)`` (``score``; > 1 is aliased).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ferdata.errors import UsageError

#: median high-band fraction above which a 48x48 sample is called aliased (halfway 0.0141 .. 0.0196)
ALIASED_THRESHOLD = 0.0169
#: image side -> threshold (halfway between the area and the lowest aliased median at that side)
THRESHOLDS = {36: 0.0274, 48: ALIASED_THRESHOLD, 64: 0.0086, 72: 0.0072}
#: radial frequency (fraction of Nyquist) where the top band starts
HIGH_BAND = 0.75
#: where the mid band starts (``high_mid_ratio``)
MID_BAND = 0.375
#: smallest side measured (smaller images are skipped: too few frequencies)
MIN_SIDE = 16
#: reference medians (see the module docstring), printed with every estimate
REFERENCES = {"area": 0.0141, "pil_bicubic": 0.0129, "pil_bilinear": 0.0111, "blur1_area": 0.0103,
              "cv_cubic": 0.0198, "cv_linear": 0.0198, "cv_nearest": 0.0196}
REGIMES = ("smooth", "aliased")


@dataclass
class DegradationEstimate:
    """The regime of a sample of images and the evidence for it.

    Attributes:
        regime: ``smooth`` (area / antialiased downscale, blur) or ``aliased`` (plain resize).
        high_band_fraction: median share of power above 0.75 Nyquist.
        high_mid_ratio: median top-band / mid-band power.
        score: median of each image's fraction over the threshold for its side (> 1: aliased).
        threshold: the threshold for the sample's median side.
        images: images measured; skipped: too small or not decodable.
        quartiles: 25th and 75th percentile of ``high_band_fraction``.
        share_above: share of the images above their threshold one by one.
        references: medians of downscaled real faces per method (module docstring).
    """

    regime: str
    high_band_fraction: float
    high_mid_ratio: float
    score: float
    threshold: float
    images: int
    skipped: int
    quartiles: tuple[float, float]
    share_above: float
    references: dict[str, float] = field(default_factory=lambda: dict(REFERENCES))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``ferdata.json`` records)."""
        d = asdict(self)
        d["quartiles"] = list(self.quartiles)
        return d

    def summary(self) -> str:
        """One line for the terminal."""
        return (f"regime {self.regime}: median high-band (>{HIGH_BAND} Nyquist) energy fraction "
                f"{self.high_band_fraction:.4f} against threshold {self.threshold:.4f} (score {self.score:.2f}; "
                f"faces at 48 px: area 0.0141, antialiased 0.0111-0.0129, aliased 0.0196-0.0198), high/mid ratio "
                f"{self.high_mid_ratio:.3f}, {self.share_above * 100:.0f} % of {self.images} images above")


def _gray(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 3:
        import cv2

        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    if image.ndim == 3 and image.shape[-1] in (1, 4):
        return image[..., 0]
    if image.ndim != 2:
        raise UsageError(f"an image must be (H, W) or (H, W, 3), got shape {image.shape}")
    return image


def band_powers(image: np.ndarray) -> tuple[float, float]:
    """``(high_band_fraction, high_mid_ratio)`` of one gray (or RGB) image, see the module docstring.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> round(band_powers(rng.normal(size=(48, 48)))[0], 1)   # white noise: ~ the band's area share
        0.6
    """
    x = _gray(image).astype(np.float64)
    x = x - x.mean()
    power = np.abs(np.fft.fft2(x)) ** 2
    fy, fx = np.fft.fftfreq(x.shape[0]), np.fft.fftfreq(x.shape[1])
    radius = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2) / 0.5
    total = power.sum()
    if total <= 0:
        return 0.0, 0.0
    high = power[radius > HIGH_BAND].sum()
    mid = power[(radius > MID_BAND) & (radius <= HIGH_BAND)].sum()
    return float(high / total), float(high / mid) if mid > 0 else 0.0


def threshold_for(side: float) -> float:
    """The aliased threshold of ``high_band_fraction`` for images of this side (module docstring).

    Example:
        >>> threshold_for(48)
        0.0169
    """
    sides = sorted(THRESHOLDS)
    if side <= sides[0]:
        return THRESHOLDS[sides[0]]
    if side >= sides[-1]:
        return THRESHOLDS[sides[-1]]
    logs = np.log(sides)
    return round(float(np.exp(np.interp(np.log(side), logs, np.log([THRESHOLDS[k] for k in sides])))), 5)


def estimate_degradation(images: Iterable[np.ndarray], *, threshold: float | None = None) -> DegradationEstimate:
    """Estimate how a sample of low-resolution images was made (``smooth`` or ``aliased``).

    Args:
        images: uint8 gray ``(H, W)`` or RGB ``(H, W, 3)`` images (any sizes; a stack works too).
        threshold: one fixed threshold instead of :func:`threshold_for` each image's side.

    Returns:
        The :class:`DegradationEstimate`.

    Raises:
        UsageError: when no image of at least 16x16 pixels is given, or it is flat.

    Example:
        >>> estimate_degradation(faces_48).regime       # doctest: +SKIP
        'smooth'
    """
    fractions, ratios, limits, sides, skipped = [], [], [], [], 0
    for im in images:
        im = np.asarray(im)
        if im.ndim < 2 or min(im.shape[:2]) < MIN_SIDE:
            skipped += 1
            continue
        frac, ratio = band_powers(im)
        if frac == 0.0 and ratio == 0.0:  # a flat image carries no evidence
            skipped += 1
            continue
        fractions.append(frac)
        ratios.append(ratio)
        side = float(np.sqrt(im.shape[0] * im.shape[1]))
        sides.append(side)
        limits.append(threshold if threshold is not None else threshold_for(side))
    if not fractions:
        raise UsageError(f"no image of at least {MIN_SIDE}x{MIN_SIDE} pixels with any contrast to estimate the "
                         f"degradation from ({skipped} skipped)")
    f, lim = np.asarray(fractions), np.asarray(limits)
    score = float(np.median(f / lim))
    return DegradationEstimate(
        regime="aliased" if score > 1.0 else "smooth",
        high_band_fraction=round(float(np.median(f)), 5),
        high_mid_ratio=round(float(np.median(ratios)), 4),
        score=round(score, 4),
        threshold=threshold if threshold is not None else threshold_for(float(np.median(sides))),
        images=len(f),
        skipped=skipped,
        quartiles=(round(float(np.percentile(f, 25)), 5), round(float(np.percentile(f, 75)), 5)),
        share_above=round(float(np.mean(f > lim)), 4),
    )


def sample_dataset_images(data: Any, *, n: int = 500, seed: int = 0) -> tuple[list[np.ndarray], int]:
    """Decode up to ``n`` images spread evenly over every split of a ``DatasetDict`` (seeded).

    Returns:
        The decoded arrays and the number that could not be decoded.
    """
    import datasets

    from ferdata.images import ImageRejected, to_array

    splits = {k: v for k, v in data.items() if len(v)}
    total = sum(len(v) for v in splits.values())
    rng = np.random.default_rng(seed)
    out, bad = [], 0
    for ds in splits.values():
        k = max(1, round(n * len(ds) / total)) if total else 0
        index = np.sort(rng.choice(len(ds), size=min(k, len(ds)), replace=False))
        raw = ds.cast_column("image", datasets.Image(decode=False)).select(index.tolist())
        for value in raw["image"]:
            try:
                out.append(to_array(value))
            except ImageRejected:
                bad += 1
    return out, bad


def estimate_path(path: str, *, n: int = 500, seed: int = 0) -> DegradationEstimate:
    """:func:`estimate_degradation` on a sample of a dataset directory or a folder of images.

    Raises:
        InputNotFound: when the path does not exist.
        UsageError: when it holds no usable images.
    """
    from pathlib import Path

    from ferdata.errors import InputNotFound

    root = Path(path)
    if not root.exists():
        raise InputNotFound(f"input not found: {root}")
    if root.is_dir() and (root / "dataset_dict.json").exists():
        from ferdata.dataset import open_dataset

        images, bad = sample_dataset_images(open_dataset(root), n=n, seed=seed)
    elif root.is_dir():
        from PIL import Image, UnidentifiedImageError

        from ferdata.sr.data import IMAGE_SUFFIXES

        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UsageError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
        rng = np.random.default_rng(seed)
        pick = sorted(rng.choice(len(files), size=min(n, len(files)), replace=False))
        images, bad = [], 0
        for i in pick:
            try:
                with Image.open(files[i]) as im:
                    images.append(np.asarray(im.convert("L")))
            except (OSError, UnidentifiedImageError):
                bad += 1
    else:
        raise UsageError(f"{root} is not a dataset directory or an image folder")
    est = estimate_degradation(images)
    est.skipped += bad
    return est
