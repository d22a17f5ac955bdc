"""Training and prediction: compile, fit with the papers' callbacks, keep the best epoch."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ferdata.errors import UsageError

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

logger = logging.getLogger(__name__)

#: EarlyStopping patience (epochs without a better validation accuracy).
DEFAULT_PATIENCE = 10
#: ReduceLROnPlateau: factor, patience (epochs without a lower validation loss), floor (paper 000: 1e-5).
LR_FACTOR, LR_PATIENCE, MIN_LR = 0.5, 3, 1e-5
#: Learning-rate schedules: ``plateau`` halves the rate when the validation loss stalls (paper 000);
#: ``cosine`` decays it from ``lr`` to 0 along a half cosine over all the training steps (so the last
#: epochs fine-tune: fewer epochs reach what more epochs at a constant rate reach; docs/refine.md).
SCHEDULES = ("plateau", "cosine")


def check_schedule(schedule: str) -> None:
    """Raise ``UsageError`` unless ``schedule`` is one of :data:`SCHEDULES`."""
    if schedule not in SCHEDULES:
        raise UsageError(f"unknown learning-rate schedule {schedule!r}; allowed: {', '.join(SCHEDULES)}")


def _best_weights_callback() -> Any:
    import keras

    class BestWeights(keras.callbacks.Callback):
        """Remember the weights of the epoch with the best validation accuracy; restore them at the end.

        Ties are broken by the lower validation loss. ``best_epoch`` is 1-based (0 before training).
        """

        def __init__(self, monitor: str = "val_accuracy") -> None:
            super().__init__()
            self.monitor = monitor
            self.best: tuple[float, float] | None = None
            self.best_epoch = 0
            self.best_weights: list[Any] | None = None

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            logs = logs or {}
            if self.monitor not in logs:
                return
            key = (float(logs[self.monitor]), -float(logs.get("val_loss", 0.0)))
            if self.best is None or key > self.best:
                self.best, self.best_epoch = key, epoch + 1
                self.best_weights = self.model.get_weights()

        def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)

    return BestWeights()


def _cosine_callback(lr: float, epochs: int) -> Any:
    import math

    import keras

    class CosineDecay(keras.callbacks.Callback):
        """Set the rate before every batch: ``lr * (1 + cos(pi * t / T)) / 2``, T = all steps (or epochs
        when the number of steps per epoch is unknown)."""

        def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
            self.per_epoch = int(self.params.get("steps") or 0)
            self.total, self.t = max(1, self.per_epoch * int(epochs) or int(epochs)), 0

        def _set(self, t: int) -> None:
            share = min(t, self.total) / self.total
            self.model.optimizer.learning_rate.assign(lr * 0.5 * (1 + math.cos(math.pi * share)))

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if not self.per_epoch:
                self._set(epoch)

        def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            if self.per_epoch:
                self._set(self.t)
                self.t += 1

    return CosineDecay()


def compile_model(model: keras.Model, *, lr: float = 1e-3) -> keras.Model:
    """Compile with Adam, categorical cross-entropy, accuracy and top-2 accuracy (paper 003).

    Example:
        >>> compile_model(build_model("tiny-cnn", (48, 48, 1), 7), lr=1e-3)  # doctest: +SKIP
    """
    import keras

    if not lr > 0:
        raise UsageError(f"learning rate must be positive, got {lr}")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=lr),
        loss="categorical_crossentropy",
        metrics=["accuracy", keras.metrics.TopKCategoricalAccuracy(k=2, name="top2_accuracy")],
    )
    return model


def fit_model(
    model: keras.Model,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset | None,
    *,
    epochs: int,
    lr: float = 1e-3,
    class_weight: dict[int, float] | None = None,
    out_dir: str | Path | None = None,
    patience: int = DEFAULT_PATIENCE,
    seed: int = 0,
    verbose: int = 0,
    callbacks: list[Any] | None = None,
    progress: str | None = "train",
    schedule: str = "plateau",
) -> keras.callbacks.History:
    """Compile and train a model; end with the weights of its best validation-accuracy epoch.

    Callbacks: the best-epoch keeper (restores at the end; with ``out_dir`` also a
    ``best.weights.h5`` checkpoint), the learning-rate schedule (``plateau``: ``ReduceLROnPlateau`` on
    validation loss, factor 0.5, patience 3, floor 1e-5, paper 000; ``cosine``: see ``SCHEDULES``),
    ``EarlyStopping`` on validation accuracy after ``patience`` epochs, and with ``out_dir`` a
    ``history.csv`` logger. Without ``val_ds`` the training accuracy is monitored.

    Args:
        model: an uncompiled (or compiled, it is recompiled) model, e.g. from ``build_model``.
        train_ds: batches of ``(image, one_hot)``, e.g. from ``to_tf_dataset``.
        val_ds: the validation batches, or None.
        epochs: maximum number of epochs.
        lr: Adam's initial learning rate.
        class_weight: ``{class id: weight}`` (see ``class_weights``), or None.
        out_dir: where to write ``history.csv`` and ``best.weights.h5``; None writes nothing.
        patience: EarlyStopping patience in epochs (0 disables early stopping).
        seed: seeds Python, NumPy and TensorFlow (deterministic as far as TF's kernels allow).
        verbose: Keras verbosity (0 silent, 1 progress bar, 2 one line per epoch).
        callbacks: extra Keras callbacks (e.g. a refinement monitor), run after the built-in ones.
        schedule: ``plateau`` or ``cosine`` (``SCHEDULES``).
        progress: the label of a tqdm bar over epochs on stderr (loss and accuracies as postfix; off
            under ``-q`` / ``disable_progress_bars()``); None for no bar.

    Returns:
        The Keras ``History``; ``history.best_epoch`` is the restored epoch (1-based).

    Example:
        >>> history = fit_model(model, train, val, epochs=30, out_dir="run")  # doctest: +SKIP
        >>> max(history.history["val_accuracy"])                              # doctest: +SKIP
    """
    import keras

    if int(epochs) < 1:
        raise UsageError(f"epochs must be at least 1, got {epochs}")
    if int(patience) < 0:
        raise UsageError(f"patience must be 0 or more, got {patience}")
    check_schedule(schedule)
    keras.utils.set_random_seed(int(seed))
    compile_model(model, lr=lr)
    prefix = "val_" if val_ds is not None else ""
    best = _best_weights_callback()
    best.monitor = f"{prefix}accuracy"
    cbs: list[Any] = [best, _cosine_callback(lr, int(epochs)) if schedule == "cosine" else
                      keras.callbacks.ReduceLROnPlateau(monitor=f"{prefix}loss", factor=LR_FACTOR,
                                                        patience=LR_PATIENCE, min_lr=MIN_LR, verbose=0)]
    if patience:
        cbs.append(keras.callbacks.EarlyStopping(monitor=f"{prefix}accuracy", patience=int(patience), mode="max"))
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        cbs.append(keras.callbacks.CSVLogger(str(out / "history.csv")))
        cbs.append(keras.callbacks.ModelCheckpoint(str(out / "best.weights.h5"), monitor=f"{prefix}accuracy",
                                                   mode="max", save_best_only=True, save_weights_only=True))
    if progress is not None:
        from ferdata.progress import epoch_bar

        cbs.append(epoch_bar(int(epochs), desc=progress, metrics=(f"{prefix}loss", "accuracy", "val_accuracy")))
    cbs.extend(callbacks or [])
    history = model.fit(train_ds, validation_data=val_ds, epochs=int(epochs), class_weight=class_weight,
                        callbacks=cbs, verbose=verbose, shuffle=False)
    history.best_epoch = best.best_epoch
    return history


def predict_proba(model: keras.Model, ds: tf.data.Dataset | np.ndarray) -> np.ndarray:
    """Class probabilities ``(N, num_classes)`` for a ``to_tf_dataset`` dataset (labels ignored) or an array.

    Example:
        >>> probs = predict_proba(model, to_tf_dataset("fer2013", split="test"))  # doctest: +SKIP
        >>> probs.argmax(1)                                                       # doctest: +SKIP
    """
    if isinstance(ds, np.ndarray):
        return np.asarray(model.predict(ds.astype("float32"), verbose=0))
    images = ds.map(lambda x, *rest: x)
    out = model.predict(images, verbose=0)
    return np.asarray(out)
