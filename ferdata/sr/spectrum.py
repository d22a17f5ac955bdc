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

Two more regimes (issue 27), each with its own packaged x4 model:

* ``compressed``: JPEG saved at the image's own size leaves 8x8 blocks. :func:`blockiness` is the
  mean absolute difference between neighbouring pixels across the block grid (columns / rows
  7|8, 15|16, ...) over the same mean across the blocks' middles (3|4, 11|12, ...). Medians
  (``bench_sr.py --only detect``): faces-hr-144 resized by area / OpenCV cubic / nearest to 36, 48,
  56, 64, 72 px 0.95-1.02 (the highest at 56 px: a 18/7 ratio leaves a fixed column pattern),
  after JPEG 75 1.05-1.18, after JPEG 85 0.99-1.10; the held-out rows 0.97-0.99, JPEG 75 1.09, JPEG
  50 1.21; fer2013-dev 0.98 (JPEG 75: 1.09).
  A sample whose median is above :data:`BLOCKY_THRESHOLD` (1.04) and that is not aliased (nor
  ``nearest``, below) is ``compressed``: JPEG after an aliased resize goes to the aliased or
  nearest model, which were trained with JPEG in their chains (held out, OpenCV cubic + JPEG 75:
  ``espcn_x4_aliased`` +0.47 dB, ``espcn_x4_compressed`` +0.08; nearest + JPEG 75: ``espcn_x4_nearest``
  +5.79, ``espcn_x4_compressed`` -0.29). JPEG lowers the aliasing score (OpenCV cubic: 1.18, 1.16
  after JPEG 75, 0.95 after JPEG 50), so heavily compressed aliased inputs read ``compressed``. A
  grid that is not at the image origin (an image cropped or resized after compression) is not seen.
* ``nearest``: OpenCV ``INTER_NEAREST`` keeps the top-left high-resolution pixel of each block
  instead of the block's centre, so the whole image moves right and down by ``(1 - 1/f) / 2`` of
  a low-resolution pixel for a factor f (0.375 at x4). Nothing in one image's pixels shows that
  (its spectrum is that of a centred aliased resize: 0.0196 against 0.0198 above), so the test
  uses a prior on faces: a face is mirror-symmetric, and the mean of a sample of face crops has
  its left-right symmetry axis near the centre. :func:`symmetry_offset` measures where that axis
  is (sub-pixel, from the cross-spectrum of the mean image and its mirror) and eight
  interleaved sub-samples give its standard error. An ``aliased`` or blocky sample is ``nearest`` when the
  axis is right of the centre by at least :data:`NEAREST_OFFSET` (0.25 px) plus three standard
  errors (:data:`NEAREST_MARGIN`), measured on at least :data:`AXIS_MIN_IMAGES` images of one size
  no larger than :data:`AXIS_MAX_SIDE`. Measured axes of real faces (``bench_sr.py --only
  detect``): faces-hr-144 held out at 36 px +0.19 +- 0.09 (every centred resize), +0.57 +- 0.08
  after OpenCV nearest; all 3,000 faces at 36 / 48 / 64 px +0.09 / +0.12 / +0.16, after nearest
  +0.46 / +0.45 / +0.60; FER2013 train +0.10, fer2013-dev -0.01. Random 500-face samples spread
  by about +-0.1 (sd) around those: with two standard errors 1 of 70 aliased 500-face samples
  read as nearest; with three none of 180 (area and OpenCV cubic at 36 / 48 / 64 px), while 14 /
  9 / 9 of 30 nearest samples at 36 / 48 / 64 px do (the rest stay ``aliased``).
  A sample of non-faces, of profiles, or of faces cropped off-centre carries no such evidence; a
  wrong ``nearest`` call moves the output 1.5 px (about -7 dB against bicubic), a missed one
  loses nothing against the aliased model (about bicubic's level), hence the wide one-sided margin.
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
REGIMES = ("smooth", "aliased", "compressed", "nearest")
#: median blockiness above which a sample is called JPEG-compressed (clean 0.95-1.02, JPEG 75 1.06-1.18)
BLOCKY_THRESHOLD = 1.04
#: JPEG block side
BLOCK = 8
#: smallest right shift (px) of the mean face's symmetry axis, beyond two standard errors, read as OpenCV nearest
NEAREST_OFFSET = 0.25
#: standard errors the axis must clear NEAREST_OFFSET by (one-sided: a wrong nearest call costs ~7 dB)
NEAREST_MARGIN = 3.0
#: images of one size needed to measure the symmetry axis
AXIS_MIN_IMAGES = 64
#: largest side the symmetry test is made on (a crop's own off-centre grows with the side; the
#: nearest shift stays under half a pixel)
AXIS_MAX_SIDE = 64
#: interleaved sub-samples for the axis's standard error
AXIS_SPLITS = 8


@dataclass
class DegradationEstimate:
    """The regime of a sample of images and the evidence for it.

    Attributes:
        regime: ``smooth`` (area / antialiased downscale, blur), ``aliased`` (plain resize),
            ``compressed`` (8x8 JPEG blocks) or ``nearest`` (aliased, and the faces' symmetry axis
            shifted right as OpenCV nearest does).
        high_band_fraction: median share of power above 0.75 Nyquist.
        high_mid_ratio: median top-band / mid-band power.
        score: median of each image's fraction over the threshold for its side (> 1: aliased).
        threshold: the threshold for the sample's median side.
        images: images measured; skipped: too small or not decodable.
        quartiles: 25th and 75th percentile of ``high_band_fraction``.
        share_above: share of the images above their threshold one by one.
        references: medians of downscaled real faces per method (module docstring).
        blockiness: median 8x8-grid blockiness (:func:`blockiness`; > 1.04: compressed).
        axis_offset: the mean image's symmetry axis right of the centre, px (None: not measured).
        axis_se: its standard error over interleaved sub-samples.
        axis_images: images it was measured on (the most common size).
        why: the rule that decided, in words.
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
    blockiness: float = 1.0
    axis_offset: float | None = None
    axis_se: float | None = None
    axis_images: int = 0
    why: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``ferdata.json`` records)."""
        d = asdict(self)
        d["quartiles"] = list(self.quartiles)
        return d

    def summary(self) -> str:
        """One line for the terminal."""
        axis = (f"symmetry axis {self.axis_offset:+.3f} +- {self.axis_se:.3f} px of {self.axis_images} images"
                if self.axis_offset is not None and self.axis_se is not None else "symmetry axis not measured")
        return (f"regime {self.regime} ({self.why}): blockiness {self.blockiness:.3f} (JPEG above {BLOCKY_THRESHOLD}), "
                f"{axis}; median high-band (>{HIGH_BAND} Nyquist) energy fraction "
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


def blockiness(image: np.ndarray) -> float:
    """Mean absolute step across the 8x8 grid over the mean step across the blocks' middles (1: no grid).

    Steps between columns (and rows) 7|8, 15|16, ... over steps between 3|4, 11|12, ...: a resize by
    a non-integer ratio leaves a fixed column pattern (144 -> 64 repeats every 4 columns), which
    raises both alike, while JPEG raises only the grid. Horizontal and vertical neighbours are
    pooled; 0.0 for an image under 16 pixels a side or without any step.

    Example:
        >>> im = np.kron(np.arange(16).reshape(4, 4) * 10, np.ones((8, 8))).astype(np.uint8)
        >>> blockiness(im) > 10                     # flat blocks: every step is on the grid
        True
    """
    x = _gray(image).astype(np.float64)
    if min(x.shape) < 2 * BLOCK:
        return 0.0
    on = off = 0.0
    n_on = n_off = 0
    for d in (np.abs(np.diff(x, axis=1)), np.abs(np.diff(x, axis=0)).T):
        phase = np.arange(d.shape[1]) % BLOCK
        grid, middle = phase == BLOCK - 1, phase == BLOCK // 2 - 1
        on, n_on = on + d[:, grid].sum(), n_on + d[:, grid].size
        off, n_off = off + d[:, middle].sum(), n_off + d[:, middle].size
    if off <= 0:
        return 0.0 if on <= 0 else float("inf")
    return float((on / n_on) / (off / n_off))


def symmetry_offset(image: np.ndarray, *, search: float = 2.0, step: float = 0.005) -> float:
    """Where the left-right mirror axis of ``image`` lies, in pixels right of the centre.

    The mirrored image is shifted (by the Fourier shift theorem, sub-pixel) until it matches the
    image best; the axis is half that shift. Meant for the mean of many face crops.

    Example:
        >>> x = np.zeros((8, 33)); x[:, 17] = 1.0; x[:, 15] = x[:, 19] = 0.5   # symmetric about column 17
        >>> symmetry_offset(x)                                                 # centre is 16
        1.0
    """
    m = np.asarray(image, np.float64)
    m = m - m.mean()
    cross = (np.fft.fft(m, axis=1) * np.conj(np.fft.fft(m[:, ::-1], axis=1))).sum(axis=0)
    freqs = np.fft.fftfreq(m.shape[1])
    shifts = np.arange(-2 * search, 2 * search + step / 2, step)
    score = np.real(np.exp(2j * np.pi * shifts[:, None] * freqs[None, :]) @ cross)
    return round(float(shifts[int(np.argmax(score))] / 2), 4) + 0.0


def _axis_evidence(images: list[np.ndarray]) -> tuple[float | None, float | None, int]:
    """The symmetry axis of the sample's mean image (most common size), its standard error, images used."""
    from collections import Counter

    if not images:
        return None, None, 0
    shape, count = Counter(im.shape[:2] for im in images).most_common(1)[0]
    if count < AXIS_MIN_IMAGES or max(shape) > AXIS_MAX_SIDE:
        return None, None, count
    stack = np.stack([_gray(im).astype(np.float64) for im in images if im.shape[:2] == shape])
    offset = symmetry_offset(stack.mean(axis=0))
    parts = [symmetry_offset(stack[k::AXIS_SPLITS].mean(axis=0)) for k in range(AXIS_SPLITS)]
    se = float(np.std(parts, ddof=1) / np.sqrt(AXIS_SPLITS))
    return offset, round(se, 4), len(stack)


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
    fractions, ratios, limits, sides, blocks, kept, skipped = [], [], [], [], [], [], 0
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
        blocks.append(blockiness(im))
        kept.append(im)
        side = float(np.sqrt(im.shape[0] * im.shape[1]))
        sides.append(side)
        limits.append(threshold if threshold is not None else threshold_for(side))
    if not fractions:
        raise UsageError(f"no image of at least {MIN_SIDE}x{MIN_SIDE} pixels with any contrast to estimate the "
                         f"degradation from ({skipped} skipped)")
    f, lim = np.asarray(fractions), np.asarray(limits)
    score = float(np.median(f / lim))
    block = float(np.median(blocks))
    blocky, aliased = block > BLOCKY_THRESHOLD, score > 1.0
    offset, se, axis_images = _axis_evidence(kept) if aliased or blocky else (None, None, 0)
    shifted = offset is not None and se is not None and offset - NEAREST_MARGIN * se >= NEAREST_OFFSET
    blocks_text = f"8x8 JPEG blocks (blockiness {block:.3f} > {BLOCKY_THRESHOLD})"
    axis_text = "" if offset is None else f"symmetry axis {offset:+.3f} px (se {se:.3f})"
    if shifted:  # JPEG lowers the aliasing score (OpenCV nearest + JPEG 50: 0.94), not the shift
        regime, why = "nearest", (f"{f'aliasing score {score:.2f} > 1' if aliased else blocks_text} and the faces' "
                                  f"{axis_text} is right of the centre by >= {NEAREST_OFFSET} px + {NEAREST_MARGIN:g} se: "
                                  "OpenCV nearest")
    elif aliased:  # an aliased resize, JPEG or not: the aliased model was trained with JPEG in its chain
        regime = "aliased"
        why = f"aliasing score {score:.2f} > 1" + (f", {blocks_text}" if blocky else "") + (
            f"; {axis_text} not a nearest-neighbour shift" if axis_text else "")
    elif blocky:
        regime, why = "compressed", f"{blocks_text}, aliasing score {score:.2f} <= 1"
    else:
        regime, why = "smooth", f"aliasing score {score:.2f} <= 1, blockiness {block:.3f} <= {BLOCKY_THRESHOLD}"
    return DegradationEstimate(
        regime=regime,
        high_band_fraction=round(float(np.median(f)), 5),
        high_mid_ratio=round(float(np.median(ratios)), 4),
        score=round(score, 4),
        threshold=threshold if threshold is not None else threshold_for(float(np.median(sides))),
        images=len(f),
        skipped=skipped,
        quartiles=(round(float(np.percentile(f, 25)), 5), round(float(np.percentile(f, 75)), 5)),
        share_above=round(float(np.mean(f > lim)), 4),
        blockiness=round(block, 4),
        axis_offset=offset,
        axis_se=se,
        axis_images=axis_images,
        why=why,
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
