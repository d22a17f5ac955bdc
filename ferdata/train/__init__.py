"""Training and evaluation on ferdata datasets (Keras / TensorFlow).

The public API (TensorFlow is imported only when a function runs):

* :func:`to_tf_dataset` -- a dataset directory / ``DatasetDict`` / ``Dataset`` as ``tf.data``;
* :func:`build_model` -- ``shallow-cnn``, ``fer-cnn``, ``efficientnet-b0``, ``tiny-cnn``;
* :func:`fit_model` / :func:`predict_proba` -- training with the papers' callbacks, prediction;
* :func:`class_weights` -- ``none``, ``simple``, ``conservative``, ``inverse``;
* :class:`TrainConfig` -- the options of one training (``ferdata train``, every refine training);
* :mod:`ferdata.train.metrics` -- confusion matrix, classification report, plots;
* :func:`train_run`, :func:`evaluate_run`, :func:`export_tflite` -- what the commands call.

Example:
    >>> from ferdata.train import build_model, fit_model, to_tf_dataset       # doctest: +SKIP
    >>> train = to_tf_dataset("fer2013", split="train", shuffle=True)          # doctest: +SKIP
    >>> val = to_tf_dataset("fer2013", split="validation")                     # doctest: +SKIP
    >>> model = build_model("fer-cnn", (48, 48, 1), 7)                         # doctest: +SKIP
    >>> fit_model(model, train, val, epochs=30)                                # doctest: +SKIP
"""

from __future__ import annotations

from ferdata.train.config import TrainConfig
from ferdata.train.data import AUGMENT_PRESETS, to_tf_dataset
from ferdata.train.fit import compile_model, fit_model, predict_proba
from ferdata.train.models import DEFAULT_INPUT, MODEL_NAMES, WeightsUnavailable, build_model
from ferdata.train.weights import CLASS_WEIGHT_METHODS, class_weights

__all__ = [
    "AUGMENT_PRESETS",
    "CLASS_WEIGHT_METHODS",
    "DEFAULT_INPUT",
    "MODEL_NAMES",
    "TrainConfig",
    "WeightsUnavailable",
    "build_model",
    "class_weights",
    "compile_model",
    "evaluate_run",
    "export_tflite",
    "fit_model",
    "predict_proba",
    "prepare_training",
    "to_tf_dataset",
    "train_run",
]


def __getattr__(name: str):  # the run-level functions live in ferdata.train.run (imports matplotlib lazily)
    if name in ("train_run", "evaluate_run", "export_tflite", "load_run", "prepare_training"):
        from ferdata.train import run

        return getattr(run, name)
    raise AttributeError(f"module 'ferdata.train' has no attribute {name!r}")
