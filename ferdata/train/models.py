"""Model factories: uncompiled Keras classifiers that take 0..255 float images.

Every model starts with its own input scaling (``Rescaling(1/255)`` for the CNNs, EfficientNet's
built-in normalisation for ``efficientnet-b0``), so datasets feed raw pixel values.

* ``shallow-cnn`` -- paper 004, Table 1: three 3x3 convolutions (32, 64, 128; ``same`` padding),
  each followed by ReLU and 2x2 max pooling, dropout 0.25, flatten, Dense 512 + ReLU, dropout 0.5,
  Dense ``num_classes`` softmax. Made for 224x224x1. The dropout rates are not given in the paper
  (0.25 / 0.5 are the usual Keras choices).
* ``shallow-cnn-std`` -- ``shallow-cnn`` with per-image standardisation instead of ``1/255``
  (each image minus its mean, divided by its standard deviation + 1 gray level, so flat images stay
  finite): removes each face's brightness and contrast before the first convolution. The default of
  ``ferdata refine --mode flag|prune``: on fer2013-dev's synthetic flips it raised out-of-sample
  accuracy from 0.474 to 0.549 on the same 3 folds x 20 epochs (docs/refine.md).
* ``fer-cnn`` -- paper 000's FER2013 CNN for 48x48x1: Conv64 3x3, Conv128 5x5, Conv512 3x3,
  Conv512 3x3 (each BatchNorm, ReLU, 2x2 max pooling, dropout 0.25), flatten, Dense 256 and Dense
  512 (each BatchNorm, ReLU, dropout 0.25), Dense ``num_classes`` softmax.
* ``efficientnet-b0`` -- transfer learning (paper 000): Keras' EfficientNetB0 without its top,
  global average pooling, dropout 0.2, Dense ``num_classes`` softmax. Gray inputs are repeated to
  3 channels inside the model. ImageNet weights come from a local file, or from the Keras cache,
  or are downloaded only with ``allow_download=True``.
* ``tiny-cnn`` -- a small, fast CNN for tests, benchmarks and CPU-bound refinement runs: three
  3x3 convolutions (16, 32, 64) with ReLU and 2x2 max pooling, dropout 0.25, Dense ``num_classes``
  softmax after global average pooling (about 24k parameters at any input size).
* ``refine-cnn`` -- built as a candidate default of ``ferdata refine --mode flag|prune`` (the default
  is ``shallow-cnn``: on fer2013-dev synthetic flips refine-cnn reached out-of-sample accuracy 0.364
  vs 0.444 in 3.5x the time, docs/refine.md): three stages of two 3x3
  convolutions (32, 64, 128) with BatchNorm (momentum 0.9, so its statistics settle within the few
  hundred steps of a small dataset) and ReLU, 2x2 max pooling after each stage, global
  average pooling, dropout 0.5, Dense 128 + ReLU, dropout 0.5, Dense ``num_classes`` softmax
  (about 300k parameters at any input size), trained with Adam 1e-3.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferdata.errors import FerdataError, UsageError

if TYPE_CHECKING:
    import keras

MODEL_NAMES = ("shallow-cnn", "fer-cnn", "efficientnet-b0", "tiny-cnn", "refine-cnn", "shallow-cnn-std")
#: The input each model was designed for, used when a command is given no --image-size/--channels.
DEFAULT_INPUT = {
    "shallow-cnn": (224, 224, 1),
    "shallow-cnn-std": (48, 48, 1),
    "fer-cnn": (48, 48, 1),
    "efficientnet-b0": (224, 224, 3),
    "tiny-cnn": (48, 48, 1),
    "refine-cnn": (48, 48, 1),
}
_EFFNET_WEIGHTS_FILE = "efficientnetb0_notop.h5"


class WeightsUnavailable(FerdataError):
    """Pretrained weights that are neither local nor allowed to be downloaded (exit code 2)."""

    exit_code = 2


def build_model(
    name: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    weights: str | os.PathLike | None = "imagenet",
    allow_download: bool = False,
) -> keras.Model:
    """Build an uncompiled classifier by name.

    Args:
        name: one of ``shallow-cnn``, ``fer-cnn``, ``efficientnet-b0``, ``tiny-cnn``.
        input_shape: ``(height, width, channels)``, channels 1 or 3.
        num_classes: number of output classes (softmax).
        weights: ``efficientnet-b0`` only: ``"imagenet"`` (from the Keras cache, or downloaded when
            ``allow_download``), a local ``.h5``/``.weights.h5`` file of the no-top backbone, or
            ``None`` for random initialisation. Ignored by the other models.
        allow_download: let Keras download the ImageNet weights.

    Returns:
        A ``keras.Model`` named after ``name``, taking float images in 0..255.

    Raises:
        UsageError: for an unknown name, a bad shape or class count, an input too small for the model.
        WeightsUnavailable: when ImageNet weights are needed offline and not cached.

    Example:
        >>> model = build_model("shallow-cnn", (224, 224, 1), 7)      # doctest: +SKIP
        >>> model.get_layer("fc1").count_params()                   # doctest: +SKIP
        51380736
    """
    if name not in MODEL_NAMES:
        raise UsageError(f"unknown model {name!r}; allowed: {', '.join(MODEL_NAMES)}")
    try:
        h, w, c = (int(v) for v in input_shape)
    except (TypeError, ValueError) as e:
        raise UsageError(f"input_shape must be (height, width, channels), got {input_shape!r}") from e
    if c not in (1, 3):
        raise UsageError(f"input channels must be 1 or 3, got {c}")
    if int(num_classes) < 2:
        raise UsageError(f"num_classes must be at least 2, got {num_classes}")
    minimum = {"shallow-cnn": 8, "shallow-cnn-std": 8, "fer-cnn": 16, "tiny-cnn": 8, "efficientnet-b0": 32, "refine-cnn": 8}[name]
    if min(h, w) < minimum:
        raise UsageError(f"{name} needs images of at least {minimum}x{minimum}, got {h}x{w}; use --image-size")
    builder = {"shallow-cnn": _shallow_cnn, "shallow-cnn-std": _shallow_cnn_std, "fer-cnn": _fer_cnn, "tiny-cnn": _tiny_cnn,
               "refine-cnn": _refine_cnn}.get(name)
    if builder is not None:
        return builder((h, w, c), int(num_classes))
    return _efficientnet_b0((h, w, c), int(num_classes), weights=weights, allow_download=allow_download)


_standardize_cls: Any = None


def per_image_standardization() -> Any:
    """Return the serializable ``PerImageStandardization`` Keras layer class (defined on first use)."""
    global _standardize_cls
    if _standardize_cls is not None:
        return _standardize_cls
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="ferdata")
    class PerImageStandardization(keras.layers.Layer):
        """``(x - mean(x)) / (std(x) + 1)`` over each image's pixels and channels (inputs in 0..255)."""

        def call(self, inputs: Any) -> Any:
            mean = ops.mean(inputs, axis=(1, 2, 3), keepdims=True)
            std = ops.std(inputs, axis=(1, 2, 3), keepdims=True)
            return (inputs - mean) / (std + 1.0)

    _standardize_cls = PerImageStandardization
    return PerImageStandardization


def _shallow_cnn_std(shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    return _shallow_cnn(shape, num_classes, standardize=True)


def _shallow_cnn(shape: tuple[int, int, int], num_classes: int, *, standardize: bool = False) -> keras.Model:
    import keras
    from keras import layers

    inputs = keras.Input(shape=shape, name="image")
    if standardize:
        x = per_image_standardization()(name="standardize")(inputs)
    else:
        x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    for i, filters in enumerate((32, 64, 128), start=1):
        x = layers.Conv2D(filters, 3, padding="same", name=f"conv{i}")(x)
        x = layers.Activation("relu", name=f"relu{i}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.Dropout(0.25, name="dropout1")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(512, name="fc1")(x)
    x = layers.Activation("relu", name="relu4")(x)
    x = layers.Dropout(0.5, name="dropout2")(x)
    x = layers.Dense(num_classes, name="fc2")(x)
    outputs = layers.Activation("softmax", name="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="shallow_cnn_std" if standardize else "shallow_cnn")


def _fer_cnn(shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    import keras
    from keras import layers

    inputs = keras.Input(shape=shape, name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    for i, (filters, kernel) in enumerate(((64, 3), (128, 5), (512, 3), (512, 3)), start=1):
        x = layers.Conv2D(filters, kernel, padding="same", name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.Activation("relu", name=f"relu{i}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
        x = layers.Dropout(0.25, name=f"dropout{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    for i, units in enumerate((256, 512), start=1):
        x = layers.Dense(units, name=f"fc{i}")(x)
        x = layers.BatchNormalization(name=f"fc{i}_bn")(x)
        x = layers.Activation("relu", name=f"fc{i}_relu")(x)
        x = layers.Dropout(0.25, name=f"fc{i}_dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="fer_cnn")


def _tiny_cnn(shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    import keras
    from keras import layers

    inputs = keras.Input(shape=shape, name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    for i, filters in enumerate((16, 32, 64), start=1):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{i}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.25, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="tiny_cnn")


def _refine_cnn(shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    import keras
    from keras import layers

    inputs = keras.Input(shape=shape, name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    for stage, filters in enumerate((32, 64, 128), start=1):
        for j in (1, 2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{stage}_{j}")(x)
            x = layers.BatchNormalization(momentum=0.9, name=f"bn{stage}_{j}")(x)
            x = layers.Activation("relu", name=f"relu{stage}_{j}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{stage}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.5, name="dropout1")(x)
    x = layers.Dense(128, activation="relu", name="fc1")(x)
    x = layers.Dropout(0.5, name="dropout2")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="refine_cnn")


def _keras_cache_file(filename: str) -> Path:
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(base) / "models" / filename


def _efficientnet_b0(shape: tuple[int, int, int], num_classes: int, *, weights: str | os.PathLike | None,
                     allow_download: bool) -> keras.Model:
    import keras
    from keras import layers

    backbone_weights: str | None
    if weights is None or str(weights).lower() == "none":
        backbone_weights = None
    elif str(weights) == "imagenet":
        if not allow_download and not _keras_cache_file(_EFFNET_WEIGHTS_FILE).exists():
            raise WeightsUnavailable(
                "efficientnet-b0 needs ImageNet weights that are not in the Keras cache "
                f"({_keras_cache_file(_EFFNET_WEIGHTS_FILE)}); pass --allow-download, --weights FILE, or --weights none")
        backbone_weights = "imagenet"
    else:
        path = Path(weights)
        if not path.is_file():
            raise WeightsUnavailable(f"weights file not found: {path}")
        backbone_weights = str(path)
    inputs = keras.Input(shape=shape, name="image")
    x = inputs
    if shape[2] == 1:
        x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
    backbone = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(shape[0], shape[1], 3))
    if backbone_weights == "imagenet":
        try:
            keras.applications.EfficientNetB0(include_top=False, weights="imagenet", input_shape=(shape[0], shape[1], 3))
        except Exception as e:  # network failure, corrupt cache
            raise WeightsUnavailable(f"could not get the efficientnet-b0 ImageNet weights: {e}") from e
        backbone.load_weights(str(_keras_cache_file(_EFFNET_WEIGHTS_FILE)))
    elif backbone_weights is not None:
        try:
            backbone.load_weights(backbone_weights)
        except Exception as e:
            raise WeightsUnavailable(f"{backbone_weights} is not an efficientnet-b0 (no top) weights file: {e}") from e
    x = backbone(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="efficientnet_b0")
