"""High-resolution face folders, the person-held-out split, the degradation pool and the metrics.

Degradations (how a low-resolution input is made from a high-resolution face; the HR image is
first cropped to a multiple of the scale). Fixed ones, each one row of the robustness table:

* ``area``: OpenCV ``INTER_AREA`` (box average);
* ``bicubic`` / ``bilinear``: Pillow ``BICUBIC`` / ``BILINEAR`` with their antialiasing (the
  MATLAB ``imresize`` convention of the SR literature);
* ``cv_cubic`` / ``cv_linear`` / ``nearest``: OpenCV ``INTER_CUBIC`` / ``INTER_LINEAR`` /
  ``INTER_NEAREST`` *without* antialiasing, i.e. a plain ``cv2.resize`` downscale (aliased);
* ``blur1_area``: Gaussian blur sigma 1 HR px, then ``area``;
* ``area_jpeg75`` / ``area_jpeg50``: ``area``, then JPEG quality 75 / 50 (Pillow, 4:2:0 irrelevant: gray);
* ``area_noise2``: ``area``, then Gaussian sensor noise sigma 2 gray levels.

Random ones, for training (each draw differs; seeded):

* ``blur_jpeg``: blur sigma 0.3-1.0, ``area``, JPEG quality 70-95 (the earlier packaged mix);
* ``mix``: a blind-SR chain in the manner of BSRGAN / Real-ESRGAN (Zhang et al. 2021, Wang et al.
  2021; this pool and its probabilities are ferdata's own): blur (p 0.5, sigma 0.2-1.5 HR px),
  the downscale (one of the five centred resize kernels above, uniformly: all but ``nearest``)
  and sensor noise (p 0.4, sigma
  0.5-4 gray levels) in random order (blur and noise act at whatever resolution the image has
  at that point), then JPEG (p 0.5, quality 50-95);
* ``mix_smooth`` / ``mix_aliased``: ``mix`` with only the antialiased (area, bicubic, bilinear)
  or only the aliased (cv_cubic, cv_linear) kernels;
* ``mix_jpeg``: ``mix_smooth`` whose last stage is always JPEG, quality 40-90 (compressed web
  faces; the training pool of ``espcn_x4_compressed``);
* ``mix_nearest``: ``mix`` with only the ``nearest`` kernel (the training pool of ``espcn_x4_nearest``).

The split is by **person**: the name in the file name (``Colin_Powell_0042.png`` -> ``Colin_Powell``)
is hashed (sha256 modulo 100): buckets 0-9 are ``heldout`` (evaluation only, never trained on,
never used for early stopping), 10-14 ``validation`` (PSNR callback, early stopping), the rest
``train``. No person is in two splits.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import numpy as np

from ferdata.errors import InputNotFound, UsageError

#: fixed degradations, in the order of the robustness table
FIXED = ("area", "bicubic", "bilinear", "cv_cubic", "cv_linear", "nearest", "blur1_area", "area_jpeg75", "area_jpeg50",
         "area_noise2")
#: random degradations (training)
RANDOM = ("blur_jpeg", "mix", "mix_smooth", "mix_aliased", "mix_jpeg", "mix_nearest")
DEGRADATIONS = FIXED + RANDOM
#: the rows of the robustness table (issue 17's, plus nearest, noise and JPEG 50 from issue 27)
ROBUST_EVAL = FIXED
SMOOTH_KERNELS = ("area", "bicubic", "bilinear")
#: nearest is left out of the random chains: it samples the top-left HR pixel of each block, a
#: 1.5 px shift for x4 that the centred kernels do not have (measured, docs/sr.md: with nearest in
#: the aliased pool the fine-tuned model stayed below bicubic on cv_cubic/cv_linear, -0.57/-0.76 dB;
#: without it +0.59/+0.61 dB)
ALIASED_KERNELS = ("cv_cubic", "cv_linear")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def person_of(name: str) -> str:
    """The person in an LFW-style file name: the stem without its trailing ``_NNNN``.

    Example:
        >>> person_of("Colin_Powell_0042.png")
        'Colin_Powell'
    """
    return re.sub(r"_\d+$", "", Path(name).stem)


def split_of(name: str) -> str:
    """The split of an HR file by its person's hash: ``heldout`` (10 %), ``validation`` (5 %) or ``train``.

    Example:
        >>> split_of("Abba_Eban_0001.png") == split_of("Abba_Eban_0002.png")
        True
    """
    bucket = int(hashlib.sha256(person_of(name).encode()).hexdigest(), 16) % 100
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


def _resize(im: np.ndarray, size: tuple[int, int], kernel: str) -> np.ndarray:
    import cv2
    from PIL import Image

    if kernel in ("bicubic", "bilinear"):
        return np.asarray(Image.fromarray(im).resize(size, Image.BICUBIC if kernel == "bicubic" else Image.BILINEAR),
                          dtype=np.uint8)
    flags = {"area": cv2.INTER_AREA, "cv_cubic": cv2.INTER_CUBIC, "cv_linear": cv2.INTER_LINEAR,
             "nearest": cv2.INTER_NEAREST}
    return cv2.resize(im, size, interpolation=flags[kernel])


def _blur(im: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(im, (0, 0), sigmaX=float(sigma))


def _noise(im: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(np.rint(im + rng.normal(0.0, sigma, im.shape)), 0, 255).astype(np.uint8)


def _jpeg(im: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(im).save(buf, format="JPEG", quality=int(quality))
    return np.asarray(Image.open(buf).convert("L"), dtype=np.uint8)


def _chain(hr: np.ndarray, size: tuple[int, int], kernels: tuple[str, ...], rng: np.random.Generator, *,
           jpeg_p: float = 0.5, quality: tuple[int, int] = (50, 95)) -> np.ndarray:
    ops = ["resize"]
    if rng.random() < 0.5:
        ops.append("blur")
    if rng.random() < 0.4:
        ops.append("noise")
    order = [ops[i] for i in rng.permutation(len(ops))]
    im = hr
    for op in order:
        if op == "resize":
            im = _resize(im, size, kernels[int(rng.integers(len(kernels)))])
        elif op == "blur":  # sigma in HR pixels; scaled down when the image is already small
            im = _blur(im, rng.uniform(0.2, 1.5) * im.shape[1] / hr.shape[1])
        else:
            im = _noise(im, rng.uniform(0.5, 4.0), rng)
    if rng.random() < jpeg_p:
        im = _jpeg(im, int(rng.integers(quality[0], quality[1] + 1)))
    return im


def degrade(hr: np.ndarray, scale: int, method: str, *, rng: np.random.Generator | None = None) -> np.ndarray:
    """Make the LR version of one gray uint8 HR image (see the module docstring).

    Example:
        >>> degrade(np.zeros((144, 144), np.uint8), 4, "area").shape
        (36, 36)
    """
    if method not in DEGRADATIONS:
        raise UsageError(f"degradation must be one of {', '.join(DEGRADATIONS)}, got {method!r}")
    hr = crop_to_multiple(hr, scale)
    h, w = hr.shape
    size = (w // scale, h // scale)
    rng = rng or np.random.default_rng(0)
    if method in ("area", "bicubic", "bilinear", "cv_cubic", "cv_linear", "nearest"):
        return _resize(hr, size, method)
    if method == "blur1_area":
        return _resize(_blur(hr, 1.0), size, "area")
    if method in ("area_jpeg75", "area_jpeg50"):
        return _jpeg(_resize(hr, size, "area"), int(method[-2:]))
    if method == "area_noise2":
        return _noise(_resize(hr, size, "area"), 2.0, rng)
    if method == "blur_jpeg":
        lr = _resize(_blur(hr, rng.uniform(0.3, 1.0)), size, "area")
        return _jpeg(lr, int(rng.integers(70, 96)))
    if method == "mix_jpeg":
        return _chain(hr, size, SMOOTH_KERNELS, rng, jpeg_p=1.0, quality=(40, 90))
    kernels = {"mix": SMOOTH_KERNELS + ALIASED_KERNELS, "mix_smooth": SMOOTH_KERNELS, "mix_aliased": ALIASED_KERNELS,
               "mix_nearest": ("nearest",)}
    return _chain(hr, size, kernels[method], rng)


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
