"""High-resolution face folders, the held-out split, the degradations and the quality metrics.

Degradations (how a low-resolution training input is made from a high-resolution face; the HR
image is first cropped to a multiple of the scale):

* ``area``: OpenCV ``INTER_AREA`` (box average; what most FER2013-style 48x48 crops look like);
* ``bicubic``: Pillow ``BICUBIC`` with its antialiasing (the MATLAB ``imresize`` convention of the
  SR literature);
* ``blur_jpeg``: a mild Gaussian blur (sigma 0.3-1.0 HR pixels), ``area`` downscale, then JPEG at
  quality 70-95, for compressed web and dataset images.

The held-out split is by file-name hash (sha256 of the name, modulo 100): buckets 0-9 are
``heldout`` (evaluation only, never trained on, never used for early stopping), 10-14 are
``validation`` (PSNR callback, early stopping) and the rest ``train``.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np

from ferdata.errors import InputNotFound, UsageError

DEGRADATIONS = ("area", "bicubic", "blur_jpeg")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def split_of(name: str) -> str:
    """The split of an HR file by name hash: ``heldout`` (10 %), ``validation`` (5 %) or ``train``.

    Example:
        >>> split_of("Abba_Eban_0001.png") in {"heldout", "validation", "train"}
        True
    """
    bucket = int(hashlib.sha256(Path(name).name.encode()).hexdigest(), 16) % 100
    return "heldout" if bucket < 10 else "validation" if bucket < 15 else "train"


def load_hr_folder(path: str | Path, *, split: str | None = None, limit: int | None = None) -> tuple[list[str], np.ndarray]:
    """Load the gray HR images of a folder (all one size), optionally only one hash split.

    Returns:
        The file names and a uint8 ``(N, H, W)`` array.

    Raises:
        InputNotFound: when the folder is missing or holds no images.
        UsageError: when the images differ in size.
    """
    from PIL import Image

    root = Path(path)
    if not root.is_dir():
        raise InputNotFound(f"HR image folder not found: {root}")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if split is not None:
        files = [p for p in files if split_of(p.name) == split]
    if limit is not None:
        files = files[:limit]
    if not files:
        raise InputNotFound(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {root}" + (f" for split {split}" if split else ""))
    images = [np.asarray(Image.open(p).convert("L"), dtype=np.uint8) for p in files]
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise UsageError(f"HR images in {root} must share one size, found {sorted(shapes)[:4]}")
    return [p.name for p in files], np.stack(images)


def crop_to_multiple(hr: np.ndarray, scale: int) -> np.ndarray:
    """Crop the last two spatial axes of ``hr`` (…, H, W) to multiples of ``scale``."""
    h, w = hr.shape[-2:]
    return hr[..., : h - h % scale, : w - w % scale]


def degrade(hr: np.ndarray, scale: int, method: str, *, rng: np.random.Generator | None = None) -> np.ndarray:
    """Make the LR version of one gray uint8 HR image (see the module docstring).

    Example:
        >>> degrade(np.zeros((144, 144), np.uint8), 4, "area").shape
        (36, 36)
    """
    import cv2
    from PIL import Image

    if method not in DEGRADATIONS:
        raise UsageError(f"degradation must be one of {', '.join(DEGRADATIONS)}, got {method!r}")
    hr = crop_to_multiple(hr, scale)
    h, w = hr.shape
    size = (w // scale, h // scale)
    if method == "bicubic":
        return np.asarray(Image.fromarray(hr).resize(size, Image.BICUBIC), dtype=np.uint8)
    if method == "area":
        return cv2.resize(hr, size, interpolation=cv2.INTER_AREA)
    rng = rng or np.random.default_rng(0)
    blurred = cv2.GaussianBlur(hr, (0, 0), sigmaX=float(rng.uniform(0.3, 1.0)))
    lr = cv2.resize(blurred, size, interpolation=cv2.INTER_AREA)
    buf = io.BytesIO()
    Image.fromarray(lr).save(buf, format="JPEG", quality=int(rng.integers(70, 96)))
    return np.asarray(Image.open(buf).convert("L"), dtype=np.uint8)


def degrade_all(hr: np.ndarray, scale: int, method: str, *, seed: int = 0) -> np.ndarray:
    """Degrade every image of a ``(N, H, W)`` stack."""
    rng = np.random.default_rng(seed)
    return np.stack([degrade(im, scale, method, rng=rng) for im in hr])


def psnr(reference: np.ndarray, image: np.ndarray, *, shave: int = 4) -> float:
    """Mean PSNR in dB over a stack of uint8 gray images, ``shave`` pixels cut from each border.

    Example:
        >>> round(psnr(np.zeros((1, 16, 16), np.uint8), np.ones((1, 16, 16), np.uint8)), 2)
        48.13
    """
    ref = reference.astype(np.float64)
    img = image.astype(np.float64)
    if ref.ndim == 2:
        ref, img = ref[None], img[None]
    if shave:
        ref, img = ref[:, shave:-shave, shave:-shave], img[:, shave:-shave, shave:-shave]
    mse = ((ref - img) ** 2).reshape(len(ref), -1).mean(axis=1)
    return float(np.mean(10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))))


def ssim(reference: np.ndarray, image: np.ndarray, *, shave: int = 4) -> float:
    """Mean SSIM (scikit-image, gray, data range 255) with ``shave`` border pixels cut."""
    from skimage.metrics import structural_similarity

    ref, img = (reference, image) if reference.ndim == 3 else (reference[None], image[None])
    s = slice(shave, -shave) if shave else slice(None)
    return float(np.mean([structural_similarity(a[s, s], b[s, s], data_range=255) for a, b in zip(ref, img, strict=True)]))


def resize_stack(images: np.ndarray, size: tuple[int, int], interpolation: str = "bicubic") -> np.ndarray:
    """Resize every image of a uint8 ``(N, H, W)`` stack with OpenCV to ``size`` = (width, height)."""
    import cv2

    flags = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC,
             "lanczos": cv2.INTER_LANCZOS4, "area": cv2.INTER_AREA}
    if interpolation not in flags:
        raise UsageError(f"interpolation must be one of {', '.join(flags)}, got {interpolation!r}")
    return np.stack([cv2.resize(im, size, interpolation=flags[interpolation]) for im in images])
