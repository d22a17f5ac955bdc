"""The downstream import: a ferdata dataset as a ``tf.data.Dataset`` any Keras code can train on.

Two paths, the same batches:

* **in memory** (the usual case): every image is decoded once by :func:`ferdata.rows.read_pixels`
  (the project's one image reader), converted to the requested channels and kept as one
  ``uint8`` array; each epoch shuffles row indices, gathers whole batches, and casts, resizes
  (bilinear) and augments them with vectorised TensorFlow ops -- no Python on the hot path. Used
  when every image has the same size and the array fits the memory budget
  (``FERDATA_TRAIN_MEMORY_MB``, default :data:`DEFAULT_MEMORY_MB` MB per call).
* **streaming** (mixed image sizes, or over the budget): rows are read from the Arrow files in
  chunks by a generator, decoded by the same reader and channel conversion, resized one by one,
  then batched and augmented like the in-memory batches.

Channel conversion (both paths): gray to RGB repeats the gray plane; RGB to gray is ITU-R 601 luma
(:func:`ferdata.quality.to_gray`, OpenCV), the conversion every other ferdata step uses. Images
come out as ``float32`` in 0..255 (ferdata models rescale inside), labels as one-hot ``float32``.

Augmentation presets (Keras random layers, ``fill_mode="nearest"`` like ``ImageDataGenerator``):

* ``none``;
* ``paper001``: rotation +-20 degrees, width/height shift 0.2, zoom 0.2, horizontal flip;
* ``paper002``: width/height shift 0.2, rotation +-5 degrees, zoom 0.2, horizontal and vertical flips;
* ``light``: horizontal flip and width/height shift 0.1 (the default of ``ferdata refine --mode
  flag|prune``: label judgement needs a model that generalises from a few thousand images, and
  faces are left-right symmetric; docs/refine.md has the measurement).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ferdata.errors import UsageError

if TYPE_CHECKING:
    import datasets
    import tensorflow as tf

logger = logging.getLogger(__name__)

AUGMENT_PRESETS = ("none", "paper001", "paper002", "light")
#: Largest decoded split (``uint8`` pixels at the images' own size) kept in memory, in MB, unless
#: ``FERDATA_TRAIN_MEMORY_MB`` says otherwise (0 forces streaming). FER2013's 28k 48x48 gray faces
#: take 65 MB; 28k 224x224 gray upscales 1.4 GB.
DEFAULT_MEMORY_MB = 2048
MEMORY_ENV = "FERDATA_TRAIN_MEMORY_MB"
_CHUNK = 256
_DECODE_CHUNK = 1024


def _as_dataset(source: Any, split: str) -> datasets.Dataset:
    import datasets

    if isinstance(source, (str, os.PathLike)):
        from ferdata.dataset import open_dataset

        source = open_dataset(Path(source))
    if isinstance(source, (datasets.DatasetDict, dict)):
        if split not in source:
            raise UsageError(f"split {split!r} not found; splits: {', '.join(source) or '(none)'}")
        source = source[split]
    if not isinstance(source, datasets.Dataset):
        raise TypeError(f"source must be a dataset directory, DatasetDict or Dataset, got {type(source).__name__}")
    for column in ("image", "label"):
        if column not in source.column_names:
            raise UsageError(f"dataset has no {column!r} column; columns: {', '.join(source.column_names)}")
    if not isinstance(source.features["image"], datasets.Image):
        raise UsageError(f"the 'image' column must be an Image feature, got {source.features['image']}")
    return source


def image_shape(ds: datasets.Dataset) -> tuple[int, int, int]:
    """``(height, width, channels)`` of a dataset's first image (channels 1 for gray, 3 otherwise).

    Example:
        >>> image_shape(open_dataset("fer2013")["train"])   # doctest: +SKIP
        (48, 48, 1)
    """
    from ferdata.images import to_array

    if len(ds) == 0:
        raise UsageError("the split is empty")
    first = ds.select_columns(["image"]).cast_column("image", _undecoded())[0]["image"]
    arr = to_array(first)
    return int(arr.shape[0]), int(arr.shape[1]), 1 if arr.ndim == 2 else 3


def _undecoded() -> Any:
    import datasets

    return datasets.Image(decode=False)


def augmentation_layers(preset: str, *, seed: int = 0) -> list[Any]:
    """The Keras random layers of an augmentation preset (empty for ``none``).

    Raises:
        UsageError: for an unknown preset.
    """
    if preset not in AUGMENT_PRESETS:
        raise UsageError(f"unknown augmentation {preset!r}; allowed: {', '.join(AUGMENT_PRESETS)}")
    if preset == "none":
        return []
    from keras import layers

    if preset == "light":
        return [layers.RandomTranslation(0.1, 0.1, fill_mode="nearest", seed=seed + 1),
                layers.RandomFlip("horizontal", seed=seed + 3)]
    degrees, flip = (20, "horizontal") if preset == "paper001" else (5, "horizontal_and_vertical")
    return [
        layers.RandomRotation(degrees / 360.0, fill_mode="nearest", seed=seed),
        layers.RandomTranslation(0.2, 0.2, fill_mode="nearest", seed=seed + 1),
        layers.RandomZoom((-0.2, 0.2), fill_mode="nearest", seed=seed + 2),
        layers.RandomFlip(flip, seed=seed + 3),
    ]


def memory_budget_mb() -> float:
    """The in-memory budget of one :func:`to_tf_dataset` call in MB (``FERDATA_TRAIN_MEMORY_MB``, else the default).

    Raises:
        UsageError: when the variable is not a number >= 0.

    Example:
        >>> memory_budget_mb() >= 0
        True
    """
    raw = os.environ.get(MEMORY_ENV, "").strip()
    if not raw:
        return float(DEFAULT_MEMORY_MB)
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise UsageError(f"{MEMORY_ENV} must be a number of MB >= 0 (0: always stream), got {raw!r}")
    return value


@dataclass(frozen=True)
class _Plan:
    """The resolved options of one :func:`to_tf_dataset` call."""

    size: tuple[int, int]
    channels: int
    depth: int
    batch_size: int
    shuffle: bool
    seed: int
    layers: list[Any]
    soft: bool


def to_tf_dataset(
    source: Any,
    *,
    split: str = "train",
    image_size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    batch_size: int = 64,
    shuffle: bool = False,
    seed: int = 0,
    augment: str = "none",
    num_classes: int | None = None,
    label_index: dict[int, int] | None = None,
    soft_labels: str | None = None,
) -> tf.data.Dataset:
    """A ferdata dataset as a batched, prefetched ``tf.data.Dataset`` of ``(image, one_hot_label)``.

    Decoded once and kept in memory when it fits ``FERDATA_TRAIN_MEMORY_MB`` (module doc), streamed
    otherwise; both give the same pixels.

    Args:
        source: a dataset directory, a ``DatasetDict`` (then ``split`` picks the split) or a
            ``Dataset`` (for example one from ``datasets.load_dataset`` of an exported Hub dir).
        split: the split to read from a directory or ``DatasetDict``.
        image_size: resize every image to this (``int`` for square, or ``(height, width)``);
            ``None``: the first image's size (other sizes are resized to it).
        channels: 1 (gray) or 3 (RGB); ``None`` keeps the first image's channel count.
        batch_size: examples per batch.
        shuffle: reshuffle the order every epoch (seeded; a different order per epoch).
        seed: seed of the shuffle and of the augmentation.
        augment: ``none``, ``paper001``, ``paper002`` or ``light`` (module doc).
        num_classes: length of the one-hot vectors; defaults to the number of label names.
        label_index: optional ``{dataset label id: model class id}`` remapping (see ``evaluate``).
        soft_labels: a column of FER+ vote counts (``ferplus_votes``): the targets become the vote
            distribution over the label names (FER+'s outlier rule; unknown/NF ignored) instead of
            one-hot; a row without usable votes keeps its one-hot label.

    Returns:
        Batches of ``float32`` images ``(B, H, W, C)`` in 0..255 and ``float32`` one-hot labels.

    Raises:
        UsageError: for a missing split or column, a bad size, channel count, batch size or preset,
            or an image that cannot be decoded.

    Example:
        >>> train = to_tf_dataset("fer2013", split="train", shuffle=True, augment="paper001")  # doctest: +SKIP
        >>> model.fit(train, epochs=10)                                                         # doctest: +SKIP
    """
    ds = _as_dataset(source, split)
    if soft_labels is not None and soft_labels not in ds.column_names:
        raise UsageError(f"--soft-labels column {soft_labels!r} not found; columns: {', '.join(ds.column_names)}")
    if soft_labels is not None and label_index is not None:
        raise UsageError("soft_labels and label_index cannot be combined")
    plan = _plan(ds, image_size=image_size, channels=channels, batch_size=batch_size, shuffle=shuffle, seed=seed,
                 augment=augment, num_classes=num_classes, soft=soft_labels is not None)
    columns = ds.select_columns(["image", "label"] + ([soft_labels] if soft_labels else [])).cast_column(
        "image", _undecoded())
    targets = _targets(columns, plan, label_index=label_index, soft_labels=soft_labels)
    pixels = _decode_all(columns, plan.channels)
    data = _from_arrays(pixels, targets, plan) if pixels is not None else _streaming(columns, targets, plan)
    return _finish(data, plan, len(columns))


def _plan(ds: datasets.Dataset, *, image_size: int | tuple[int, int] | None, channels: int | None, batch_size: int,
          shuffle: bool, seed: int, augment: str, num_classes: int | None, soft: bool) -> _Plan:
    """Validate the options against the data; resolve the output size, channels and one-hot depth."""
    from ferdata.dataset import label_names

    if batch_size < 1:
        raise UsageError(f"batch_size must be at least 1, got {batch_size}")
    if channels is not None and channels not in (1, 3):
        raise UsageError(f"channels must be 1 or 3, got {channels}")
    layers = augmentation_layers(augment, seed=seed)
    native = image_shape(ds) if (image_size is None or channels is None) else None
    if image_size is None:
        size = (native[0], native[1]) if native else (0, 0)
    elif isinstance(image_size, int):
        size = (image_size, image_size)
    else:
        size = (int(image_size[0]), int(image_size[1]))
    if min(size) < 1:
        raise UsageError(f"image_size must be positive, got {image_size}")
    out_channels = channels if channels is not None else native[2]  # type: ignore[index]
    depth = int(num_classes) if num_classes is not None else len(label_names(ds))
    return _Plan(size=size, channels=int(out_channels), depth=depth, batch_size=int(batch_size),
                 shuffle=bool(shuffle), seed=int(seed), layers=layers, soft=soft)


def _targets(columns: datasets.Dataset, plan: _Plan, *, label_index: dict[int, int] | None,
             soft_labels: str | None) -> np.ndarray:
    """Every row's target: the model class id (``int64``, -1 for an unmapped class) or the vote distribution."""
    from ferdata.dataset import label_names

    names = label_names(columns)
    labels = np.asarray(columns["label"], dtype=np.int64)
    if soft_labels:
        votes = columns[soft_labels]
        return np.stack([_soft_target(v, int(lab), names, plan.depth) for v, lab in zip(votes, labels, strict=True)]
                        ) if len(labels) else np.zeros((0, plan.depth), np.float32)
    mapping = np.arange(len(names), dtype=np.int64)
    if label_index is not None:
        mapping = np.full(len(names), -1, dtype=np.int64)
        for k, v in label_index.items():
            mapping[int(k)] = int(v)
    return mapping[labels]


def _pixels(value: Any, channels: int, row: int) -> np.ndarray:
    """One image as ``uint8 (H, W, channels)``: :func:`ferdata.rows.read_pixels`, then the channel conversion."""
    from ferdata.images import ImageRejected
    from ferdata.quality import to_gray
    from ferdata.rows import read_pixels

    try:
        pixels = read_pixels(value)
    except (ImageRejected, OSError) as e:
        raise UsageError(f"row {row}: the image cannot be decoded ({e}); "
                         "run `ferdata filter` or re-import the dataset to move such rows to the ledger") from e
    if channels == 1:
        return to_gray(pixels)[:, :, None]
    if pixels.ndim == 2:
        return np.repeat(pixels[:, :, None], 3, axis=2)
    return pixels[:, :, :3]


def _decode_all(columns: datasets.Dataset, channels: int) -> np.ndarray | None:
    """Every image decoded into one ``uint8 (N, H, W, C)`` array, or None (mixed sizes, or over the budget)."""
    n = len(columns)
    if n == 0:
        return None
    budget = memory_budget_mb() * 2**20
    first = _pixels(columns[0]["image"], channels, 0)
    if first.nbytes * n > budget:
        logger.info("streaming %d images: %.0f MB decoded exceeds %s=%g", n, first.nbytes * n / 2**20, MEMORY_ENV,
                    budget / 2**20)
        return None
    out = np.empty((n, *first.shape), dtype=np.uint8)
    for start in range(0, n, _DECODE_CHUNK):
        for i, value in enumerate(columns[start:start + _DECODE_CHUNK]["image"], start=start):
            pixels = _pixels(value, channels, i)
            if pixels.shape != first.shape:
                logger.info("streaming: row %d is %dx%d, row 0 %dx%d (mixed sizes)", i, *pixels.shape[:2],
                            *first.shape[:2])
                return None
            out[i] = pixels
    return out


def _from_arrays(pixels: np.ndarray, targets: np.ndarray, plan: _Plan) -> tf.data.Dataset:
    """Batches gathered from the decoded arrays by (shuffled) row indices: ``(uint8 images, targets)``."""
    import tensorflow as tf

    n = len(pixels)
    images, values = tf.constant(pixels), tf.constant(targets)
    if plan.shuffle:  # one NumPy call per epoch (the streaming path's order), never per row
        permutation = _Permutations(n, plan.seed)
        order = tf.data.Dataset.range(1).map(lambda _: tf.ensure_shape(
            tf.numpy_function(permutation, [], tf.int64, stateful=True), (n,))).unbatch()
    else:
        order = tf.data.Dataset.range(n)
    order = order.batch(plan.batch_size)
    return order.map(lambda idx: (tf.gather(images, idx), tf.gather(values, idx)),
                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


class _Permutations:
    """The row order of each epoch: a seeded permutation per call (``default_rng([seed, epoch])``)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def __call__(self) -> np.ndarray:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n).astype(np.int64)
        self.epoch += 1
        return order


def _streaming(columns: datasets.Dataset, targets: np.ndarray, plan: _Plan) -> tf.data.Dataset:
    """Rows read in chunks by a generator (the fallback), resized one by one, batched: ``(float images, targets)``."""
    import tensorflow as tf

    n, channels = len(columns), plan.channels
    permutation = _Permutations(n, plan.seed)

    def generate() -> Any:
        order = permutation() if plan.shuffle else np.arange(n)
        for start in range(0, n, _CHUNK):
            idx = order[start:start + _CHUNK]
            images = (columns[idx.tolist()] if plan.shuffle else columns[int(start):int(start) + _CHUNK])["image"]
            for i, value in zip(idx.tolist(), images, strict=True):
                yield _pixels(value, channels, i), targets[i]

    signature = (tf.TensorSpec((None, None, channels), tf.uint8), tf.TensorSpec(targets.shape[1:], targets.dtype))
    data = tf.data.Dataset.from_generator(generate, output_signature=signature)
    data = data.map(lambda image, target: (_resize(tf.cast(image, tf.float32), plan.size), target),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return data.batch(plan.batch_size)


def _resize(images: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Bilinear resize to ``size`` (one image or a batch; skipped when already that size), clipped to 0..255."""
    import tensorflow as tf

    if tuple(images.shape[-3:-1]) == tuple(size):
        return images
    return tf.clip_by_value(tf.image.resize(images, size, method="bilinear"), 0.0, 255.0)


def _finish(data: tf.data.Dataset, plan: _Plan, n: int) -> tf.data.Dataset:
    """Batch-level float cast, resize, one-hot targets and augmentation (vectorised), then prefetch."""
    import tensorflow as tf

    height, width = plan.size
    layers, depth, soft = plan.layers, plan.depth, plan.soft

    def to_model(images: tf.Tensor, targets: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images = tf.ensure_shape(_resize(tf.cast(images, tf.float32), plan.size), (None, height, width, plan.channels))
        return images, (tf.cast(targets, tf.float32) if soft else tf.one_hot(targets, depth, dtype=tf.float32))

    def augment(images: tf.Tensor, targets: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        for layer in layers:
            images = layer(images, training=True)
        return images, targets

    data = data.map(to_model, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if layers:  # one batch at a time: the random layers draw their seeds in batch order (reproducible runs)
        data = data.map(augment)
    data = data.prefetch(tf.data.AUTOTUNE)
    return data.apply(tf.data.experimental.assert_cardinality((n + plan.batch_size - 1) // plan.batch_size))


def _soft_target(votes: Any, label: int, names: list[str], depth: int) -> np.ndarray:
    """The FER+ vote distribution over ``names`` (one-hot ``label`` when no vote is usable)."""
    from ferdata.sources.fer2013 import ferplus_distribution

    out = np.zeros(depth, dtype=np.float32)
    if votes is not None:
        out[:len(names)] = ferplus_distribution(votes, names)[:depth]
    if out.sum() <= 0:
        out[:] = 0.0
        out[label] = 1.0
    return out
