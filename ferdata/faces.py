"""Face detection and framing: the ``crop``, ``align``, ``normalize`` and ``clahe`` steps.

Detection uses MTCNN from the ``mtcnn`` package (1.x), built once per process on first use
(:func:`get_detector`), fed RGB pixels (grayscale images are stacked to three channels), with the
stage thresholds passed as ``detect_faces`` keyword arguments (``threshold_pnet``,
``threshold_rnet``, ``threshold_onet``: :data:`DETECTOR_THRESHOLDS`). Large photos are detected
on a copy whose longest side is at most ``detect_max_side`` (default :data:`DETECT_MAX_SIDE`);
boxes and landmarks are mapped back and the crop is cut from the full-resolution original, so the
time per photo stays flat as photos grow.

Framing (paper 001, BTFER stages 3-4, the default): a square crop centred on the face box whose
side is ``max(w, h) * size / (size - 2 * margin)``, resized to ``size`` x ``size``: the face box's
longer side then spans ``[margin, size - margin]`` output pixels. Where the crop leaves the image
it is padded (``pad="black"``: zeros, the default; ``pad="edge"``: the border pixels repeated)
and the row gets ``crop_padded = True``.

Alignment and normalisation (paper 003): ``align`` rotates about the crop centre so that the line
between the eye centres is horizontal; ``normalize`` crops around the eye midpoint, 1.7 x the
inter-eye distance to each side, 1.3 x above and 3.2 x below (a 3.4 : 4.5 portrait frame, output
``round(size * 3.4 / 4.5)`` x ``size``); ``clahe`` equalises contrast (OpenCV CLAHE on gray, or
on the L channel of Lab for colour images).

Rows without a usable face go to the rejects ledger: ``no_face`` (nothing detected),
``low_confidence`` (best face below ``min_confidence``; the details give the best confidence),
``face_too_small`` (every confident face smaller than ``min_face_size`` source pixels), or the
decoder's reason (``corrupt``, ``not_an_image``, ``too_many_pixels``, ...).

MTCNN needs context around a face: on tight 48 x 48 crops (FER2013) it finds few faces, so skip
``crop`` for such data; the step reports its no-face rate (``info.no_face_rate``) and warns when
most images have no face.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ferdata.errors import UsageError
from ferdata.rows import RowRejected, map_images
from ferdata.steps import StepContext, StepOutput, register_step

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

#: Longest side of the copy MTCNN sees; larger photos are downscaled for detection only. 960 px
#: makes `crop` 5-7x faster than a plain full-resolution MTCNN on 1920 x 1080 photos while faces of
#: >= 40 source px are found (docs/faces.md).
DETECT_MAX_SIDE = 960
#: Smallest face (px, in the detection copy) MTCNN's image pyramid looks for; its own default.
DETECTOR_MIN_FACE = 20
#: MTCNN stage thresholds (P-, R-, O-Net). O-Net is kept below ``min_confidence`` so that a
#: rejected row can report the best confidence seen; ``min_confidence`` is applied afterwards.
DETECTOR_THRESHOLDS = {"threshold_pnet": 0.6, "threshold_rnet": 0.7, "threshold_onet": 0.5}
#: The five MTCNN landmarks, named as ``face_keypoints`` stores them.
KEYPOINTS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
#: Paper 003 normalisation box, in inter-eye distances from the eye midpoint.
NORM_SIDE, NORM_ABOVE, NORM_BELOW = 1.7, 1.3, 3.2
PAD_MODES = ("black", "edge")
FACES_MODES = ("largest", "all")

_DETECTOR: Any = None


@dataclass
class Face:
    """One detection in source-image pixels."""

    box: tuple[float, float, float, float]  # x, y, w, h
    confidence: float
    keypoints: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def size(self) -> float:
        """The longer side of the box."""
        return max(self.box[2], self.box[3])

    def as_columns(self) -> dict[str, Any]:
        """``face_box``, ``face_confidence`` and ``face_keypoints`` as plain ints and floats."""
        return {
            "face_box": [int(round(v)) for v in self.box],
            "face_confidence": float(self.confidence),
            "face_keypoints": {k: [int(round(self.keypoints[k][0])), int(round(self.keypoints[k][1]))]
                               for k in KEYPOINTS},
        }


# ---------------------------------------------------------------- detection

def get_detector() -> Any:
    """The process's MTCNN detector, built on first use (one per worker process).

    The three stage networks (P-, R- and O-Net, the `mtcnn` package's own weights) run as
    ``tf.function`` graphs instead of eager Keras calls: the same boxes and confidences to the
    last bit on the benchmark scenes, 2.4x faster on a 1920x1080 photo (eager Keras pays Python
    overhead per layer and per pyramid level). ``reduce_retracing`` keeps it to at most two
    traces per stage whatever the image sizes.

    Example:
        >>> detector = get_detector()   # doctest: +SKIP
    """
    global _DETECTOR
    if _DETECTOR is None:
        import os

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf
        from mtcnn import MTCNN

        detector = MTCNN()
        for stage in detector.stages:
            if getattr(stage, "_model", None) is not None:  # mtcnn 1.x keeps each stage's Keras model here
                stage._model = tf.function(stage._model, reduce_retracing=True)
        _DETECTOR = detector
    return _DETECTOR


def to_rgb(pixels: np.ndarray) -> np.ndarray:
    """Gray ``(H, W)`` or RGB ``(H, W, 3)`` uint8 pixels as RGB."""
    if pixels.ndim == 2:
        return np.repeat(pixels[:, :, None], 3, axis=2)
    return pixels


def detect_faces(pixels: np.ndarray, *, detect_max_side: int = DETECT_MAX_SIDE) -> list[Face]:
    """Detect faces with MTCNN, on a downscaled copy when the image is large.

    Args:
        pixels: uint8 gray or RGB pixels.
        detect_max_side: longest side of the copy the detector sees (0: never downscale).

    The pyramid always starts at :data:`DETECTOR_MIN_FACE` pixels of the detection copy: in
    mtcnn 1.0 a larger ``min_face_size`` keeps the same number of pyramid levels, so the last ones
    fall below P-Net's 12 px and the detector returns no face at all (measured: a 960x540 photo
    with a 90 px face gives it at 20 and 24, nothing at 30 and above). Small faces are dropped
    afterwards by :func:`choose_faces` (reason ``face_too_small``).

    Returns:
        Faces in source-image coordinates, largest box first.

    Example:
        >>> from skimage import data
        >>> faces = detect_faces(data.astronaut())  # doctest: +SKIP
        >>> [round(f.confidence, 2) for f in faces]  # doctest: +SKIP
        [1.0]
    """
    import cv2

    rgb = to_rgb(pixels)
    h, w = rgb.shape[:2]
    scale = 1.0
    if detect_max_side and max(h, w) > detect_max_side:
        scale = detect_max_side / max(h, w)
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    if min(rgb.shape[:2]) < 12:
        return []
    # numpy output keeps sub-pixel boxes (the JSON output rounds them in the detection copy)
    raw = get_detector().detect_faces(np.ascontiguousarray(rgb), fit_to_image=False, min_face_size=DETECTOR_MIN_FACE,
                                      output_type="numpy", box_format="xyxy", **DETECTOR_THRESHOLDS)
    faces = []
    for r in np.asarray(raw, dtype=np.float64).reshape(-1, 16):
        x1, y1, x2, y2 = (float(v) / scale for v in r[1:5])
        points = r[6:16] / scale
        kps = {k: (float(points[i]), float(points[5 + i])) for i, k in enumerate(KEYPOINTS)}  # 5 xs, then 5 ys
        faces.append(Face((x1, y1, x2 - x1, y2 - y1), float(r[5]), kps))
    faces.sort(key=lambda f: f.box[2] * f.box[3], reverse=True)
    return faces


def choose_faces(faces: list[Face], *, min_confidence: float, min_face_size: int,
                 faces_mode: str = "largest") -> tuple[list[Face], str, dict[str, Any]]:
    """Keep the faces that pass; return them, or ``[]`` with a reject reason and details.

    Example:
        >>> choose_faces([], min_confidence=0.95, min_face_size=20)
        ([], 'no_face', {'best_confidence': None, 'faces_detected': 0})
    """
    best = max((f.confidence for f in faces), default=None)
    details: dict[str, Any] = {"best_confidence": round(best, 4) if best is not None else None,
                               "faces_detected": len(faces)}
    if not faces:
        return [], "no_face", details
    confident = [f for f in faces if f.confidence >= min_confidence]
    if not confident:
        details["min_confidence"] = min_confidence
        return [], "low_confidence", details
    kept = [f for f in confident if f.size >= min_face_size]
    if not kept:
        details.update(largest_face=round(max(f.size for f in confident), 1), min_face_size=min_face_size)
        return [], "face_too_small", details
    return (kept[:1] if faces_mode == "largest" else kept), "", details


# ---------------------------------------------------------------- framing

def eye_angle(face: Face) -> float:
    """Angle (radians) of the line from the left to the right eye; 0 when it is horizontal."""
    (lx, ly), (rx, ry) = face.keypoints["left_eye"], face.keypoints["right_eye"]
    return math.atan2(ry - ly, rx - lx)


def frame_geometry(face: Face, *, size: int, margin: int, align: bool, normalize: bool
                   ) -> tuple[tuple[float, float], float, float, int, int]:
    """Centre, angle, source pixels per output pixel, and output width and height of a frame.

    Example:
        >>> face = Face((100, 100, 50, 60), 0.99, {"left_eye": (115, 120), "right_eye": (135, 120)})
        >>> frame_geometry(face, size=256, margin=20, align=False, normalize=False)
        ((125.0, 130.0), 0.0, 0.2777777777777778, 256, 256)
    """
    angle = eye_angle(face) if (align or normalize) and face.keypoints else 0.0
    if not align:
        angle = 0.0
    if normalize:
        (lx, ly), (rx, ry) = face.keypoints["left_eye"], face.keypoints["right_eye"]
        d = math.hypot(rx - lx, ry - ly)
        if d < 1:
            raise ValueError("eyes coincide")
        shift = (NORM_BELOW - NORM_ABOVE) / 2 * d
        centre = ((lx + rx) / 2 - math.sin(angle) * shift, (ly + ry) / 2 + math.cos(angle) * shift)
        height = size
        width = max(1, round(size * 2 * NORM_SIDE / (NORM_ABOVE + NORM_BELOW)))
        return centre, angle, (NORM_ABOVE + NORM_BELOW) * d / height, width, height
    x, y, w, h = face.box
    side = max(w, h) * size / (size - 2 * margin)
    return (x + w / 2, y + h / 2), angle, side / size, size, size


def warp_frame(pixels: np.ndarray, centre: tuple[float, float], angle: float, scale: float, width: int,
               height: int, *, pad: str = "black") -> tuple[np.ndarray, bool]:
    """Cut the (rotated) rectangle ``width*scale`` x ``height*scale`` around ``centre``, resized.

    Args:
        pixels: the source image.
        centre: rectangle centre in source pixels (continuous coordinates).
        angle: rotation of the rectangle in radians (the rotation the output undoes).
        scale: source pixels per output pixel.
        width, height: output size.
        pad: ``black`` or ``edge`` for the parts outside the source.

    Returns:
        The output pixels and whether any part of the rectangle lay outside the source.
    """
    import cv2

    h, w = pixels.shape[:2]
    cos, sin = math.cos(angle), math.sin(angle)
    corners = [(sx * width / 2, sy * height / 2) for sx in (-1, 1) for sy in (-1, 1)]
    src = [(centre[0] + scale * (cos * u - sin * v), centre[1] + scale * (sin * u + cos * v)) for u, v in corners]
    tol = 0.5
    padded = any(px < -tol or py < -tol or px > w + tol or py > h + tol for px, py in src)
    # when shrinking: warp at source resolution, then an area resize (no aliasing)
    if scale > 1:
        mid_w, mid_h = max(1, round(width * scale)), max(1, round(height * scale))
        out_scale = scale * width / mid_w
    else:
        mid_w, mid_h = width, height
        out_scale = scale
    inv = 1.0 / out_scale
    # source (continuous) -> output (continuous): rotate by -angle, scale, recentre
    a = np.array([[cos * inv, sin * inv], [-sin * inv, cos * inv]])
    t = np.array([mid_w / 2, mid_h / 2]) - a @ np.array(centre)
    # pixel-index coordinates: index + 0.5 = continuous
    t = t + a @ np.array([0.5, 0.5]) - 0.5
    matrix = np.hstack([a, t[:, None]])
    border = cv2.BORDER_CONSTANT if pad == "black" else cv2.BORDER_REPLICATE
    interp = cv2.INTER_LINEAR if scale > 1 else cv2.INTER_CUBIC
    out = cv2.warpAffine(pixels, matrix, (mid_w, mid_h), flags=interp, borderMode=border, borderValue=0)
    if (mid_w, mid_h) != (width, height):
        out = cv2.resize(out, (width, height), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(out, dtype=np.uint8), padded


def apply_clahe(pixels: np.ndarray, *, clip_limit: float = 2.0, tile_size: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (gray, or the L channel of Lab for RGB).

    Example:
        >>> apply_clahe(np.full((48, 48), 100, np.uint8)).shape
        (48, 48)
    """
    import cv2

    clahe = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(int(tile_size), int(tile_size)))
    if pixels.ndim == 2:
        return clahe.apply(np.ascontiguousarray(pixels))
    lab = cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2LAB)
    lab[:, :, 0] = clahe.apply(np.ascontiguousarray(lab[:, :, 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


# ---------------------------------------------------------------- configs

def _check_common(cfg: Any) -> None:
    if not 0.0 <= cfg.min_confidence <= 1.0:
        raise UsageError(f"--min-confidence {cfg.min_confidence} is not allowed; allowed: a number in [0, 1]")
    if cfg.min_face_size < 0:
        raise UsageError(f"--min-face-size {cfg.min_face_size} is not allowed; allowed: 0 or more source pixels")
    if cfg.pad not in PAD_MODES:
        raise UsageError(f"--pad {cfg.pad!r} is not allowed; allowed: {', '.join(PAD_MODES)}")
    if cfg.detect_max_side and cfg.detect_max_side < 64:
        raise UsageError(f"--detect-max-side {cfg.detect_max_side} is not allowed; allowed: 0 (off) or >= 64")


def _check_clahe(cfg: Any) -> None:
    if cfg.clip_limit <= 0:
        raise UsageError(f"--clip-limit {cfg.clip_limit} is not allowed; allowed: a number > 0 (e.g. 2.0)")
    if not 1 <= cfg.tile_size <= 64:
        raise UsageError(f"--tile-size {cfg.tile_size} is not allowed; allowed: 1..64 tiles per side")


def _check_size(size: int) -> None:
    if not 16 <= size <= 4096:
        raise UsageError(f"--size {size} is not allowed; allowed: 16..4096 output pixels")


@dataclass
class CropConfig:
    """Options of the ``crop`` step (names match the CLI options)."""

    #: output side in pixels (BTFER: 256)
    size: int = 256
    #: output pixels of context around the face box's longer side (BTFER: 20)
    margin: int = 20
    #: ``largest`` (one row per image) or ``all`` (one row per face, ``face_index``)
    faces: str = "largest"
    #: MTCNN confidence a face needs
    min_confidence: float = 0.95
    #: smallest face box side kept, in source pixels
    min_face_size: int = 20
    #: fill outside the image: ``black`` or ``edge``
    pad: str = "black"
    #: rotate so the eye line is horizontal (paper 003)
    align: bool = False
    #: eye-based crop (paper 003): 1.7 d each side, 1.3 d above, 3.2 d below
    normalize: bool = False
    #: apply CLAHE to the crop
    clahe: bool = False
    clip_limit: float = 2.0
    tile_size: int = 8
    #: longest side of the copy the detector sees (0: full resolution)
    detect_max_side: int = DETECT_MAX_SIDE

    def __post_init__(self) -> None:
        _check_size(self.size)
        if not 0 <= self.margin < self.size / 2:
            raise UsageError(f"--margin {self.margin} is not allowed with --size {self.size}; "
                             f"allowed: 0..{(self.size - 1) // 2} output pixels")
        if self.faces not in FACES_MODES:
            raise UsageError(f"--faces {self.faces!r} is not allowed; allowed: {', '.join(FACES_MODES)}")
        _check_common(self)
        _check_clahe(self)


@dataclass
class AlignConfig:
    """Options of the ``align`` step: rotate each image so the eye line is horizontal."""

    min_confidence: float = 0.9
    min_face_size: int = 20
    pad: str = "black"
    detect_max_side: int = DETECT_MAX_SIDE

    def __post_init__(self) -> None:
        _check_common(self)


@dataclass
class NormalizeConfig:
    """Options of the ``normalize`` step: paper 003's eye-based crop (aligned by default)."""

    size: int = 256
    align: bool = True
    min_confidence: float = 0.9
    min_face_size: int = 20
    pad: str = "black"
    detect_max_side: int = DETECT_MAX_SIDE

    def __post_init__(self) -> None:
        _check_size(self.size)
        _check_common(self)


@dataclass
class ClaheConfig:
    """Options of the ``clahe`` step."""

    clip_limit: float = 2.0
    tile_size: int = 8

    def __post_init__(self) -> None:
        _check_clahe(self)


# ---------------------------------------------------------------- per-image work

def crop_image(pixels: np.ndarray, config: CropConfig) -> tuple[list[tuple[np.ndarray, Face, bool, float]], str,
                                                                dict[str, Any]]:
    """Detect and frame the faces of one image.

    Returns:
        ``[(crop, face, padded, angle_degrees), ...]`` and, when empty, a reject reason and details.

    Example:
        >>> from skimage import data
        >>> crops, reason, _ = crop_image(data.astronaut(), CropConfig())  # doctest: +SKIP
        >>> crops[0][0].shape  # doctest: +SKIP
        (256, 256, 3)
    """
    found = detect_faces(pixels, detect_max_side=config.detect_max_side)
    chosen, reason, details = choose_faces(found, min_confidence=config.min_confidence,
                                           min_face_size=config.min_face_size, faces_mode=config.faces)
    out = []
    for face in chosen:
        centre, angle, scale, width, height = frame_geometry(face, size=config.size, margin=config.margin,
                                                             align=config.align, normalize=config.normalize)
        crop, padded = warp_frame(pixels, centre, angle, scale, width, height, pad=config.pad)
        if config.clahe:
            crop = apply_clahe(crop, clip_limit=config.clip_limit, tile_size=config.tile_size)
        out.append((crop, face, padded, math.degrees(angle)))
    return out, reason, details


def _face_columns() -> dict[str, Any]:
    import datasets

    point = datasets.Sequence(datasets.Value("int32"), length=2)
    return {
        "face_box": datasets.Sequence(datasets.Value("int32"), length=4),
        "face_confidence": datasets.Value("float32"),
        "face_keypoints": {k: point for k in KEYPOINTS},
        "face_index": datasets.Value("int32"),
        "crop_padded": datasets.Value("bool"),
        "face_angle": datasets.Value("float32"),
    }


def _map_faces(dd: datasets.DatasetDict, per_image: Any, *, extra: dict[str, Any], step: str, num_proc: int,
               ) -> tuple[datasets.DatasetDict, list[dict[str, str]]]:
    """Run ``per_image(pixels) -> ([(pixels, columns)], reason, details)`` over every row.

    Rows may multiply (one per face) or go to the ledger with ``reason`` when none is made; other
    columns are carried over (:func:`ferdata.rows.map_images` with ``new_images``).
    """

    def each(pixels: np.ndarray, row: dict[str, Any]) -> list[tuple[np.ndarray, dict[str, Any]]]:
        made, reason, details = per_image(pixels)
        if not made:
            raise RowRejected(reason, details)
        return made

    return map_images(dd, each, step=step, columns=extra, new_images=True, batch_size=16, stateful=True,
                      num_proc=num_proc)


def _rate_info(data: datasets.DatasetDict, rejects: list[dict[str, str]], out: datasets.DatasetDict,
               step: str) -> dict[str, Any]:
    rows = sum(len(ds) for ds in data.values())
    no_face = sum(1 for r in rejects if r["reason"] in {"no_face", "low_confidence", "face_too_small"})
    rate = no_face / rows if rows else 0.0
    padded = sum(sum(ds["crop_padded"]) for ds in out.values() if "crop_padded" in ds.column_names and len(ds))
    info = {"input_rows": rows, "no_face": no_face, "no_face_rate": round(rate, 4), "padded": int(padded)}
    if rows and rate > 0.5:
        logger.warning("%s: no usable face in %d of %d images (%.0f%%); MTCNN needs context around a face: "
                       "skip `crop` for datasets of tight face crops such as FER2013", step, no_face, rows,
                       100 * rate)
    return info


# ---------------------------------------------------------------- steps

@register_step("crop", CropConfig)
def crop_step(data: datasets.DatasetDict, config: CropConfig, ctx: StepContext) -> StepOutput:
    """Detect faces with MTCNN and crop them with the BTFER framing (paper 001)."""
    def per_image(pixels: np.ndarray) -> tuple[list[tuple[np.ndarray, dict[str, Any]]], str, dict[str, Any]]:
        crops, reason, details = crop_image(pixels, config)
        made = [(crop, {**face.as_columns(), "face_index": i, "crop_padded": padded, "face_angle": angle})
                for i, (crop, face, padded, angle) in enumerate(crops)]
        return made, reason, details

    dd, rejects = _map_faces(data, per_image, extra=_face_columns(), step="crop", num_proc=ctx.num_proc)
    info = _rate_info(data, rejects, dd, "crop")
    info["detector"] = {"model": "mtcnn", "detect_max_side": config.detect_max_side, **DETECTOR_THRESHOLDS}
    return StepOutput(dd, rejects, info=info)


def _largest_face(pixels: np.ndarray, cfg: Any) -> tuple[Face | None, str, dict[str, Any]]:
    found = detect_faces(pixels, detect_max_side=cfg.detect_max_side)
    chosen, reason, details = choose_faces(found, min_confidence=cfg.min_confidence, min_face_size=cfg.min_face_size)
    return (chosen[0] if chosen else None), reason, details


def align_image(pixels: np.ndarray, face: Face, *, pad: str = "black") -> tuple[np.ndarray, bool, float]:
    """Rotate ``pixels`` about the eye midpoint so the eye line is horizontal; same size.

    Returns:
        The rotated image, whether padding was needed, and the angle removed (degrees).
    """
    h, w = pixels.shape[:2]
    angle = eye_angle(face)
    (lx, ly), (rx, ry) = face.keypoints["left_eye"], face.keypoints["right_eye"]
    mid = ((lx + rx) / 2, (ly + ry) / 2)
    # keep the image frame: the rectangle centred on the image centre rotated about the eye midpoint
    cos, sin = math.cos(angle), math.sin(angle)
    dx, dy = w / 2 - mid[0], h / 2 - mid[1]
    centre = (mid[0] + cos * dx - sin * dy, mid[1] + sin * dx + cos * dy)
    out, padded = warp_frame(pixels, centre, angle, 1.0, w, h, pad=pad)
    return out, padded and abs(angle) > 1e-6, math.degrees(angle)


@register_step("align", AlignConfig)
def align_step(data: datasets.DatasetDict, config: AlignConfig, ctx: StepContext) -> StepOutput:
    """Rotate each image so the line between the eyes is horizontal (paper 003)."""
    import datasets

    def per_image(pixels: np.ndarray) -> tuple[list[tuple[np.ndarray, dict[str, Any]]], str, dict[str, Any]]:
        face, reason, details = _largest_face(pixels, config)
        if face is None:
            return [], reason, details
        out, padded, angle = align_image(pixels, face, pad=config.pad)
        return [(out, {"face_angle": angle, "align_padded": padded})], "", {}

    extra = {"face_angle": datasets.Value("float32"), "align_padded": datasets.Value("bool")}
    dd, rejects = _map_faces(data, per_image, extra=extra, step="align", num_proc=ctx.num_proc)
    return StepOutput(dd, rejects, info=_rate_info(data, rejects, dd, "align"))


@register_step("normalize", NormalizeConfig)
def normalize_step(data: datasets.DatasetDict, config: NormalizeConfig, ctx: StepContext) -> StepOutput:
    """Crop around the eyes: 1.7 d each side, 1.3 d above, 3.2 d below (paper 003)."""
    import datasets

    def per_image(pixels: np.ndarray) -> tuple[list[tuple[np.ndarray, dict[str, Any]]], str, dict[str, Any]]:
        face, reason, details = _largest_face(pixels, config)
        if face is None:
            return [], reason, details
        centre, angle, scale, width, height = frame_geometry(face, size=config.size, margin=0, align=config.align,
                                                             normalize=True)
        out, padded = warp_frame(pixels, centre, angle, scale, width, height, pad=config.pad)
        return [(out, {"face_angle": math.degrees(angle), "normalize_padded": padded})], "", {}

    extra = {"face_angle": datasets.Value("float32"), "normalize_padded": datasets.Value("bool")}
    dd, rejects = _map_faces(data, per_image, extra=extra, step="normalize", num_proc=ctx.num_proc)
    return StepOutput(dd, rejects, info=_rate_info(data, rejects, dd, "normalize"))


@register_step("clahe", ClaheConfig)
def clahe_step(data: datasets.DatasetDict, config: ClaheConfig, ctx: StepContext) -> StepOutput:
    """Contrast-limited adaptive histogram equalisation of every image."""
    def per_image(pixels: np.ndarray) -> tuple[list[tuple[np.ndarray, dict[str, Any]]], str, dict[str, Any]]:
        return [(apply_clahe(pixels, clip_limit=config.clip_limit, tile_size=config.tile_size), {})], "", {}

    dd, rejects = _map_faces(data, per_image, extra={}, step="clahe", num_proc=ctx.num_proc)
    return StepOutput(dd, rejects)
