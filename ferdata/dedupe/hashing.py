"""Hashing the images of a dataset: a 64-bit perceptual hash and a constant-image flag per row.

:func:`image_hash` hashes one image with ``imagehash``; :func:`hash_dataset` adds the hash column
(named after its method: ``phash`` by default), ``<method>_of`` (the ``id`` the hash was computed
from, so a stale hash is never reused) and ``is_constant`` to every split, mapping
:func:`hash_row` over every image through the row helper (:func:`ferdata.rows.map_images`).

Constant images (every pixel the same value) get ``is_constant = True``: their perceptual hashes
are degenerate (a black and a white frame hash alike), so the grouping never matches them by hash.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import numpy as np

from ferdata.columns import HASH_OF_SUFFIX, ID, IMAGE, IS_CONSTANT
from ferdata.dedupe.config import DEFAULT_METHOD, STEP, check_method

if TYPE_CHECKING:
    import datasets


def image_hash(pixels: np.ndarray, method: str = DEFAULT_METHOD) -> str:
    """The 64-bit perceptual hash of an image as 16 hex digits (``imagehash``, 8x8).

    Args:
        pixels: uint8 gray ``(H, W)`` or RGB ``(H, W, 3)`` array.
        method: ``phash`` (DCT), ``dhash`` (gradients), ``whash`` (Haar wavelet) or ``ahash`` (mean).

    Example:
        >>> image_hash(np.tile(np.arange(48, dtype=np.uint8) * 5, (48, 1)), "dhash")
        'ffffffffffffffff'
    """
    import imagehash
    from PIL import Image

    check_method(method)
    img = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8))
    if method == "phash":
        return _phash(img)
    fn = {"dhash": imagehash.dhash, "whash": imagehash.whash, "ahash": imagehash.average_hash}[method]
    return str(fn(img, hash_size=8))


def _phash(img: Any) -> str:
    """``str(imagehash.phash(img))``, bit for bit, without its per-bit Python formatting (2-3x faster).

    The same steps on the same values: gray, 32 x 32 Lanczos, the DCT of scipy.fftpack along
    both axes, the 8 x 8 lowest frequencies against their median; the 64 bits row by row, the
    first one the most significant (imagehash's hex string).
    """
    import scipy.fftpack
    from PIL import Image

    small = np.asarray((img if img.mode == "L" else img.convert("L")).resize((32, 32), Image.Resampling.LANCZOS))
    low = scipy.fftpack.dct(scipy.fftpack.dct(small, axis=0), axis=1)[:8, :8].ravel()
    ordered = np.sort(low)
    median = (ordered[31] + ordered[32]) / 2  # numpy.median of 64 values
    return f"{int(np.packbits(low > median).view('>u8')[0]):016x}"


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _gray_png(value: Any) -> np.ndarray | None:
    """The pixels of an 8-bit grayscale PNG held as bytes (OpenCV, ~3x faster than Pillow), else None.

    Only this unambiguous layout (IHDR bit depth 8, colour type 0, one channel decoded) takes
    the fast path; its pixels are the ones :func:`ferdata.images.to_array` returns (mode "L").
    Everything else (other layouts, paths, PIL images) returns None for the general decoder.
    """
    import cv2

    data = value.get("bytes") if isinstance(value, dict) else None
    if not data or len(data) < 33 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR" or data[24] != 8 or data[25] != 0:
        return None
    arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    return arr if arr is not None and arr.ndim == 2 and arr.dtype == np.uint8 else None


def _phash_many(images: list[np.ndarray]) -> list[str]:
    """:func:`_phash` of each image, bit for bit, a stack of same-size gray images at a time.

    Pillow's Lanczos resize is separable and each pass treats every row (column) on its own, so
    the stack is resized by two one-pass Pillow calls on one tall image: the rows of all images
    (width 48 -> 32), then, transposed, their columns (height 48 -> 32): the same coefficients,
    sums and rounding as one ``resize`` per image. The 8 x 8 lowest DCT frequencies are two matrix
    products on the whole stack. A row whose low frequencies come within 1e-6 of their median
    (where a different rounding could flip a bit) is hashed again by :func:`_phash` alone; other
    layouts (RGB) go one by one.
    """
    from PIL import Image

    codes: list[str | None] = [None] * len(images)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for k, x in enumerate(images):
        if x.ndim == 2 and x.dtype == np.uint8:
            by_shape.setdefault(x.shape, []).append(k)
        else:
            codes[k] = _phash(Image.fromarray(np.ascontiguousarray(x, dtype=np.uint8)))
    for (h, w), rows in by_shape.items():
        stack = np.stack([images[k] for k in rows])
        wide = np.asarray(Image.fromarray(stack.reshape(-1, w)).resize((32, len(rows) * h), Image.Resampling.LANCZOS))
        cols = np.ascontiguousarray(wide.reshape(len(rows), h, 32).transpose(0, 2, 1)).reshape(-1, h)
        small = np.asarray(Image.fromarray(cols).resize((32, len(rows) * 32), Image.Resampling.LANCZOS))
        small = small.reshape(len(rows), 32, 32).transpose(0, 2, 1)
        for k, code in zip(rows, _phash_codes(small, stack), strict=True):
            codes[k] = code
    return codes  # type: ignore[return-value]


@functools.cache
def _dct_low() -> np.ndarray:
    """The 8 lowest rows of scipy.fftpack's unnormalised DCT-II of length 32 (``2 cos(pi k (2n + 1) / 64)``)."""
    k, n = np.arange(8)[:, None], np.arange(32)[None, :]
    return 2 * np.cos(np.pi * k * (2 * n + 1) / 64)


def _phash_codes(small: np.ndarray, originals: np.ndarray) -> list[str]:
    """The hex codes of a stack of 32 x 32 gray thumbnails (``originals``: their images, for the rare re-hash)."""
    from PIL import Image

    basis = _dct_low()
    low = (basis @ small.astype(np.float64) @ basis.T).reshape(len(small), 64)
    ordered = np.sort(low, axis=1)
    median = (ordered[:, 31:32] + ordered[:, 32:33]) / 2
    codes = [f"{int(c):016x}" for c in np.packbits(low > median, axis=1).view(">u8").ravel()]
    for k in np.nonzero(np.abs(low - median).min(axis=1) < 1e-6)[0]:
        codes[k] = _phash(Image.fromarray(originals[k]))
    return codes


def is_constant(pixels: np.ndarray) -> bool:
    """True when every pixel has the same value (all one colour)."""
    arr = np.asarray(pixels)
    if arr.ndim == 3:
        return bool((arr == arr.reshape(-1, arr.shape[-1])[0]).all())
    return bool(arr.size == 0 or arr.min() == arr.max())


def hash_of_column(method: str) -> str:
    """The column holding the ``id`` each ``method`` hash was computed from (``phash_of``)."""
    return f"{method}{HASH_OF_SUFFIX}"


def hash_row(pixels: np.ndarray, row: dict[str, Any], *, method: str) -> dict[str, Any]:
    """The hash columns of one image (``row`` holds its ``id``)."""
    return {method: image_hash(pixels, method), IS_CONSTANT: is_constant(pixels), hash_of_column(method): row[ID]}


def _has_hashes(dd: datasets.DatasetDict, method: str) -> bool:
    """True when every row has a well-formed hash computed from its current pixels.

    ``<method>_of`` holds the ``id`` each hash was computed from; a later step that changes the
    pixels (crop, upscale) gives the row a new ``id``, so its stale hash is not reused.
    """
    import pyarrow.compute as pc

    for ds in dd.values():
        if any(c not in ds.column_names for c in (method, hash_of_column(method), IS_CONSTANT)):
            return False
        if not len(ds):
            continue
        values = _column(ds, method)
        if values.null_count or pc.min_max(pc.utf8_length(values)).as_py() != {"min": 16, "max": 16}:
            return False
        if not pc.all(pc.equal(_column(ds, hash_of_column(method)), _column(ds, ID))).as_py():
            return False
    return True


def _column(ds: datasets.Dataset, name: str) -> Any:
    """One column as a pyarrow array (fast: no per-row Python formatting)."""
    import pyarrow as pa

    column = ds.with_format("arrow")[name]
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def hash_dataset(dd: datasets.DatasetDict, *, method: str = DEFAULT_METHOD, num_proc: int = 1,
                 step: str = STEP) -> tuple[datasets.DatasetDict, list[dict[str, str]], bool]:
    """Add the ``method`` hash column (16 hex digits), ``<method>_of`` and ``is_constant`` to every split.

    Hashes already present (a previous run with the same method, on the same pixels: every
    ``<method>_of`` equals the row's ``id``) are reused. Undecodable images go to the ledger with
    their reason before hashing.

    Returns:
        The dataset with the columns, the ledger rows, and whether the hashes were reused.

    Example:
        >>> dd, rejects, reused = hash_dataset(open_dataset("fer"), method="phash")  # doctest: +SKIP
        >>> dd["train"][0]["phash"]  # doctest: +SKIP
        'c3a4b1952ad1aecb'
    """
    import datasets

    from ferdata.rows import map_images

    check_method(method)
    if _has_hashes(dd, method):
        return dd, [], True
    fast = _phash_columns(dd, num_proc=num_proc) if method == "phash" else None
    if fast is not None:
        return fast, [], False
    hash_of = hash_of_column(method)
    columns = {method: datasets.Value("string"), IS_CONSTANT: datasets.Value("bool"), hash_of: datasets.Value("string")}
    out, rejects = map_images(dd, hash_row, step=step, columns=columns, drop=(method, hash_of, IS_CONSTANT),
                              input_columns=[IMAGE, ID], fn_kwargs={"method": method}, context={"before": "hashing"},
                              num_proc=num_proc, desc=method)
    return out, rejects, False


_HASH_CHUNK = 4096


def _phash_columns(dd: datasets.DatasetDict, *, num_proc: int = 1) -> datasets.DatasetDict | None:
    """:func:`hash_dataset`'s ``phash`` columns without rewriting the images: the PNG bytes read from
    Arrow, decoded (OpenCV for 8-bit gray PNGs), hashed by :func:`_phash_many` in chunks on
    ``num_proc`` threads, the three columns added beside the others.

    Returns None when an image does not decode (the general path puts it in the ledger).
    """
    from concurrent.futures import ThreadPoolExecutor

    import datasets

    from ferdata.dataset import column_slice, column_values
    from ferdata.images import ImageRejected, to_array

    def chunk(ds: datasets.Dataset, lo: int) -> tuple[list[str], list[bool]] | None:
        arrays = []
        values = column_slice(ds, IMAGE, lo, lo + _HASH_CHUNK)  # {bytes, path}: undecoded, one chunk at a time
        for value in values:
            arr = _gray_png(value)
            if arr is None:
                try:
                    arr = to_array(value)
                except ImageRejected:
                    return None
            arrays.append(arr)
        return _phash_many(arrays), [is_constant(a) for a in arrays]

    out = {}
    hash_of = hash_of_column("phash")
    with ThreadPoolExecutor(max(1, num_proc)) as pool:
        for split, ds in dd.items():
            parts = list(pool.map(functools.partial(chunk, ds), range(0, len(ds), _HASH_CHUNK)))
            if any(part is None for part in parts):
                return None
            ds = ds.remove_columns([c for c in ("phash", IS_CONSTANT, hash_of) if c in ds.column_names])
            ds = ds.add_column("phash", [h for part in parts for h in part[0]])
            ds = ds.add_column(IS_CONSTANT, [c for part in parts for c in part[1]])
            out[split] = ds.add_column(hash_of, column_values(ds, ID))
    return datasets.DatasetDict(out)
