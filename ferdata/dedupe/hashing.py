"""Hashing the images of a dataset: a 64-bit perceptual hash and a constant-image flag per row.

:func:`image_hash` hashes one image with ``imagehash``; :func:`hash_dataset` adds the hash column
(named after its method: ``phash`` by default), ``<method>_of`` (the ``id`` the hash was computed
from, so a stale hash is never reused) and ``is_constant`` to every split, mapping
:func:`_hash_batch` over batches of undecoded images (:func:`_hash_split`).

Constant images (every pixel the same value) get ``is_constant = True``: their perceptual hashes
are degenerate (a black and a white frame hash alike), so the grouping never matches them by hash.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from ferdata.columns import HASH_OF_SUFFIX, ID, IMAGE, IS_CONSTANT, REJECT_DETAILS, REJECT_REASON
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
    fn = {"phash": imagehash.phash, "dhash": imagehash.dhash, "whash": imagehash.whash,
          "ahash": imagehash.average_hash}[method]
    return str(fn(img, hash_size=8))


def is_constant(pixels: np.ndarray) -> bool:
    """True when every pixel has the same value (all one colour)."""
    arr = np.asarray(pixels)
    if arr.ndim == 3:
        return bool((arr == arr.reshape(-1, arr.shape[-1])[0]).all())
    return bool(arr.size == 0 or arr.min() == arr.max())


def hash_of_column(method: str) -> str:
    """The column holding the ``id`` each ``method`` hash was computed from (``phash_of``)."""
    return f"{method}{HASH_OF_SUFFIX}"


def _hash_batch(images: list[Any], ids: list[str], *, method: str) -> dict[str, list[Any]]:
    """Hash a batch of undecoded image values; undecodable ones are marked for the ledger."""
    from ferdata.images import ImageRejected, to_array

    out: dict[str, list[Any]] = {method: [], IS_CONSTANT: [], REJECT_REASON: [], REJECT_DETAILS: [],
                                 hash_of_column(method): list(ids)}
    for value in images:
        try:
            if value is None:
                raise ImageRejected("not_an_image", "no image")
            arr = to_array(value)
        except ImageRejected as e:
            out[method].append("")
            out[IS_CONSTANT].append(False)
            out[REJECT_REASON].append(e.reason)
            out[REJECT_DETAILS].append(json.dumps({"error": e.details, "before": "hashing"}))
            continue
        out[method].append(image_hash(arr, method))
        out[IS_CONSTANT].append(is_constant(arr))
        out[REJECT_REASON].append("")
        out[REJECT_DETAILS].append("")
    return out


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

    from ferdata.dataset import partition_rejects

    check_method(method)
    if _has_hashes(dd, method):
        return dd, [], True
    result = {split: _hash_split(ds, split, method=method, num_proc=num_proc) for split, ds in dd.items()}
    out, rejects = partition_rejects(datasets.DatasetDict(result), step)
    return out, rejects, False


def _hash_split(ds: datasets.Dataset, split: str, *, method: str, num_proc: int) -> datasets.Dataset:
    """One split with its hash columns: :func:`_hash_batch` mapped over its undecoded images, in batches."""
    import datasets

    from ferdata.engines import map_batches

    raw = ds.cast_column(IMAGE, datasets.Image(decode=False))
    drop = [c for c in (method, hash_of_column(method), IS_CONSTANT) if c in raw.column_names]
    if drop:
        raw = raw.remove_columns(drop)
    features = raw.features.copy()
    features[method] = datasets.Value("string")
    features[IS_CONSTANT] = datasets.Value("bool")
    features[hash_of_column(method)] = datasets.Value("string")
    features[REJECT_REASON] = datasets.Value("string")
    features[REJECT_DETAILS] = datasets.Value("string")
    hashed = map_batches(raw, _hash_batch, input_columns=[IMAGE, ID], batched=True, batch_size=256, features=features,
                         fn_kwargs={"method": method}, num_proc=num_proc if num_proc > 1 and len(raw) > 1 else None,
                         desc=f"{method} {split}")
    return hashed.cast_column(IMAGE, datasets.Image())
