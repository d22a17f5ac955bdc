"""The downstream import: a ferdata dataset as a ``tf.data.Dataset`` any Keras code can train on.

Rows stream from the Arrow files in chunks (never the whole split in memory): the encoded image
bytes are read by a Python generator, decoded, resized and channel-converted by TensorFlow ops in
parallel, batched, augmented on the batch, and prefetched. Images come out as ``float32`` in
0..255 (ferdata models rescale inside), labels as one-hot ``float32``.

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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ferdata.errors import UsageError

if TYPE_CHECKING:
    import datasets
    import tensorflow as tf

logger = logging.getLogger(__name__)

AUGMENT_PRESETS = ("none", "paper001", "paper002", "light")
_CHUNK = 256


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

    Args:
        source: a dataset directory, a ``DatasetDict`` (then ``split`` picks the split) or a
            ``Dataset`` (for example one from ``datasets.load_dataset`` of an exported Hub dir).
        split: the split to read from a directory or ``DatasetDict``.
        image_size: resize every image to this (``int`` for square, or ``(height, width)``);
            ``None`` keeps the first image's size (then every image must have it).
        channels: 1 (gray) or 3 (RGB); ``None`` keeps the first image's channel count.
        batch_size: examples per batch.
        shuffle: reshuffle the order every epoch (seeded; a different order per epoch).
        seed: seed of the shuffle and of the augmentation.
        augment: ``none``, ``paper001`` or ``paper002`` (module doc).
        num_classes: length of the one-hot vectors; defaults to the number of label names.
        label_index: optional ``{dataset label id: model class id}`` remapping (see ``evaluate``).
        soft_labels: a column of FER+ vote counts (``ferplus_votes``): the targets become the vote
            distribution over the label names (FER+'s outlier rule; unknown/NF ignored) instead of
            one-hot; a row without usable votes keeps its one-hot label.

    Returns:
        Batches of ``float32`` images ``(B, H, W, C)`` in 0..255 and ``float32`` one-hot labels.

    Raises:
        UsageError: for a missing split or column, a bad size, channel count, batch size or preset.

    Example:
        >>> train = to_tf_dataset("fer2013", split="train", shuffle=True, augment="paper001")  # doctest: +SKIP
        >>> model.fit(train, epochs=10)                                                         # doctest: +SKIP
    """
    import tensorflow as tf

    from ferdata.dataset import label_names

    ds = _as_dataset(source, split)
    if batch_size < 1:
        raise UsageError(f"batch_size must be at least 1, got {batch_size}")
    if channels is not None and channels not in (1, 3):
        raise UsageError(f"channels must be 1 or 3, got {channels}")
    layers = augmentation_layers(augment, seed=seed)
    native = image_shape(ds) if (image_size is None or channels is None) else None
    if image_size is None:
        assert native is not None
        size = (native[0], native[1])
    elif isinstance(image_size, int):
        size = (image_size, image_size)
    else:
        size = (int(image_size[0]), int(image_size[1]))
    if min(size) < 1:
        raise UsageError(f"image_size must be positive, got {image_size}")
    out_channels = channels if channels is not None else native[2]  # type: ignore[index]
    names = label_names(ds)
    depth = int(num_classes) if num_classes is not None else len(names)
    mapping = np.arange(len(names), dtype=np.int64)
    if label_index is not None:
        mapping = np.full(len(names), -1, dtype=np.int64)
        for k, v in label_index.items():
            mapping[int(k)] = int(v)
    if soft_labels is not None and soft_labels not in ds.column_names:
        raise UsageError(f"--soft-labels column {soft_labels!r} not found; columns: {', '.join(ds.column_names)}")
    if soft_labels is not None and label_index is not None:
        raise UsageError("soft_labels and label_index cannot be combined")
    selected = ["image", "label"] + ([soft_labels] if soft_labels else [])
    columns = ds.select_columns(selected).cast_column("image", _undecoded())
    n = len(columns)
    epoch = [0]

    def generate() -> Any:
        order = np.arange(n)
        if shuffle:
            order = np.random.default_rng([seed, epoch[0]]).permutation(n)
            epoch[0] += 1
        for start in range(0, n, _CHUNK):
            idx = order[start:start + _CHUNK]
            rows = columns[idx.tolist()] if shuffle else columns[int(start):int(start) + _CHUNK]
            softs = rows[soft_labels] if soft_labels else [None] * len(rows["label"])
            for image, label, votes in zip(rows["image"], rows["label"], softs, strict=True):
                data = image.get("bytes")
                if data is None:
                    with open(image["path"], "rb") as f:
                        data = f.read()
                if soft_labels:
                    yield data, _soft_target(votes, int(label), names, depth)
                else:
                    yield data, mapping[label]

    target_spec = tf.TensorSpec((depth,), tf.float32) if soft_labels else tf.TensorSpec((), tf.int64)
    signature = (tf.TensorSpec((), tf.string), target_spec)
    data = tf.data.Dataset.from_generator(generate, output_signature=signature)
    height, width = size

    def decode(raw: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image = tf.io.decode_image(raw, channels=out_channels, expand_animations=False)
        image = tf.cast(image, tf.float32)
        image = tf.image.resize(image, (height, width), method="bilinear")
        image = tf.clip_by_value(image, 0.0, 255.0)
        image = tf.ensure_shape(image, (height, width, out_channels))
        return image, (label if soft_labels else tf.one_hot(label, depth, dtype=tf.float32))

    data = data.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    data = data.batch(batch_size)
    if layers:
        def augment_batch(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            for layer in layers:
                images = layer(images, training=True)
            return images, labels

        data = data.map(augment_batch, num_parallel_calls=tf.data.AUTOTUNE)
    data = data.prefetch(tf.data.AUTOTUNE)
    return data.apply(tf.data.experimental.assert_cardinality((n + batch_size - 1) // batch_size))


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
