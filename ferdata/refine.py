"""The data-centric refinement loop of paper 000 (Mejia-Escobar et al.), and safer variants.

Round *k* splits the current image set 80/20 (stratified), trains the same CNN from scratch with
the same hyperparameters and seed, keeps the best-validation-accuracy weights, predicts every
image of the current set and builds its confusion matrix. The loop stops when every class's
precision reaches ``precision_target``, or every off-diagonal count is at most ``offdiag_max``,
or after ``rounds`` trainings; otherwise the correctly predicted images (the diagonal) form the
next, smaller set. The last model then predicts every image of the ORIGINAL training data:

* ``mode="relabel"`` (the paper): same images, same count, ``label`` = the model's class,
  ``label_original``, ``relabel_confidence`` and ``relabeled`` columns;
* ``mode="prune"``: rows whose label the model disagrees with go to the rejects ledger
  (reason ``label_disagreement``), labels are unchanged;
* ``mode="flag"``: nothing changes but ``suspect_label``, ``label_confidence`` and the model's
  top-2 classes are added.

``cv=K`` replaces the in-sample predictions by out-of-sample ones: each image of the current set is
predicted by a model that did not train on it (K-fold), and images outside the set by the mean
of the K fold models. Splits named ``test`` (and ``validation``) are never relabelled unless
asked for. A final comparison trains the same CNN on the original and on the refined data and
evaluates both on one untouched held-out split (``test``, else ``validation``, else a stratified
share carved out of the training data before refinement).

Everything goes to a run directory ``RUN``: ``rounds.csv``, ``distribution.csv``,
``comparison.csv``, ``summary.md`` (paper 000's Tables 5, 6 and 7), ``rounds/round_K/`` (confusion
matrix CSV + PNG, learning curves, predictions) and ``dataset/`` (a ferdata dataset directory).
``state.json`` records every finished round, so a killed run started again with the same
arguments resumes after the last finished round.

Example:
    >>> from ferdata.refine import RefineConfig, refine
    >>> result = refine("fer2013", "fer2013-refine", RefineConfig(rounds=5))   # doctest: +SKIP
    >>> result.rounds[-1]["val_accuracy"]                                      # doctest: +SKIP
    0.97
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ferdata.dataset import EVAL_SPLITS, REJECT_DETAILS, REJECT_REASON
from ferdata.errors import OutputExists, UsageError
from ferdata.split import stratified_split

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

MODES = ("relabel", "prune", "flag")
#: How a row becomes a suspect: predicted != given (paper 000) or the confident-learning rule.
RULES = ("argmax", "confident")
#: Defaults that depend on the mode: (model, rounds, epochs, out-of-sample folds, rule, augment, tta).
MODE_DEFAULTS: dict[str, tuple[str, int, int, int | None, str, str, bool]] = {
    "relabel": ("fer-cnn", 5, 40, 1, "argmax", "none", False),     # paper 000 (in-sample predictions)
    # argmax, not confident: on fer2013-dev vs FER+ argmax had the higher F1 (real noise 0.565 vs 0.549,
    # synthetic flips 0.523 vs 0.469; docs/refine.md)
    # shallow-cnn (three 3x3 convolutions), not refine-cnn: on synthetic flips of fer2013-dev it reached
    # out-of-sample accuracy 0.444 vs 0.364 on the same 3 folds x 12 epochs, in 124 s vs 432 s; then
    # per-image standardisation (shallow-cnn-std), light augmentation and the mirrored test-time average
    # raised it to 0.549 on 3 folds x 20 epochs (0.474 without standardisation; docs/refine.md)
    "prune": ("shallow-cnn-std", 1, 20, 5, "argmax", "light", True),
    "flag": ("shallow-cnn-std", 1, 20, 5, "argmax", "light", True),
}
#: The guard: out-of-sample accuracy must reach this multiple of chance (1 / classes) to judge labels.
MIN_ACCURACY_OVER_CHANCE = 2.0
STATE_FILE = "state.json"
STATE_FORMAT = "ferdata-refine/1"
STEP_NAME = "refine"
#: Options that only change what happens after the loop: a finished run can be finished again with
#: other values (e.g. ``--mode prune`` on a copy of a relabel run) without retraining the rounds.
_FINAL_PHASE_OPTIONS = ("mode", "compare", "rule", "top", "max_flag_rate", "force")


@dataclass
class RefineConfig:
    """Options of the refinement loop (defaults: paper 000).

    ``model``, ``rounds``, ``epochs``, ``cv``, ``rule``, ``augment`` and ``tta`` left at None (``"auto"`` for the
    model) take the mode's defaults (:data:`MODE_DEFAULTS`): paper 000 for ``relabel``; for
    ``flag`` and ``prune`` one out-of-sample 5-fold pass of ``shallow-cnn-std`` (20 epochs, light
    augmentation, mirrored test-time average) and the argmax rule (``confident`` is the alternative;
    docs/refine.md has the table that chose).

    Example:
        >>> RefineConfig(model="tiny-cnn", rounds=3, epochs=5).mode
        'relabel'
        >>> RefineConfig(mode="flag").cv, RefineConfig(mode="flag").model
        (5, 'shallow-cnn-std')
    """

    #: CNN trained every round (a ``ferdata.train.build_model`` name, or "auto": the mode's default)
    model: str = "auto"
    #: maximum number of trainings (the paper needed 5); None: 5 for relabel, 1 for flag/prune
    rounds: int | None = None
    #: epochs per training (the paper: 40 to 100); None: 40 for relabel, 20 for flag/prune
    epochs: int | None = None
    #: stop when every class's precision on the current set reaches this
    precision_target: float = 0.90
    #: ... or when every off-diagonal count of the confusion matrix is at most this ("single digits")
    offdiag_max: int = 9
    #: relabel (the paper) | prune | flag
    mode: str = "relabel"
    #: K for out-of-sample K-fold predictions each round; 1 = in-sample (the paper); None: 5 for flag/prune
    cv: int | None = None
    #: suspect rule: argmax (predicted != given) | confident (confident learning); None: the mode's
    rule: str | None = None
    #: flag exactly the K rows ranked most suspect (lowest normalised margin) instead of the rule
    top: int | None = None
    #: the guard: above this share of suspect rows nothing is flagged, pruned or relabelled (unless force)
    max_flag_rate: float = 0.5
    #: act on the suspects even when the guard says the model cannot judge the labels
    force: bool = False
    #: seed of the splits and of every training
    seed: int = 0
    #: also refine the validation split (never by default)
    include_validation: bool = False
    #: also refine the test split (never by default: cleaning a test set inflates its scores)
    include_test: bool = False
    batch_size: int = 64
    #: Adam's initial learning rate, halved on plateaus down to 1e-5 (the paper: 0.01 for its BatchNorm CNN)
    lr: float = 1e-3
    #: share of the current set used to pick the best epoch (the paper: 0.2)
    val_fraction: float = 0.2
    #: share carved out of the training data as the held-out split when there is no test/validation split
    heldout_fraction: float = 0.1
    #: augmentation preset of ferdata.train while training: none | paper001 | paper002 | light;
    #: None: none for relabel, light for flag/prune
    augment: str | None = None
    #: average each prediction with that of the horizontally mirrored image; None: on for flag/prune
    tta: bool | None = None
    #: early-stopping patience in epochs without a better validation accuracy (0: train all epochs)
    patience: int = 10
    #: side of the square model input; None = the images' own size
    image_size: int | None = None
    #: train the same CNN on the original and on the refined data and compare them on the held-out split
    compare: bool = True

    def __post_init__(self) -> None:
        from ferdata.train.data import AUGMENT_PRESETS
        from ferdata.train.models import MODEL_NAMES

        if self.mode not in MODES:
            raise UsageError(f"unknown mode {self.mode!r}; valid modes: {', '.join(MODES)}")
        model, rounds, epochs, cv, rule, augment, tta = MODE_DEFAULTS[self.mode]
        if self.augment is None:
            self.augment = augment
        if self.tta is None:
            self.tta = tta
        if self.model == "auto":
            self.model = model
        if self.rounds is None:
            self.rounds = rounds
        if self.epochs is None:
            self.epochs = epochs
        if self.cv is None:
            self.cv = cv
        if self.rule is None:
            self.rule = rule
        if self.model not in MODEL_NAMES:
            raise UsageError(f"unknown model {self.model!r}; valid models: auto, {', '.join(MODEL_NAMES)}")
        if self.rule not in RULES:
            raise UsageError(f"unknown rule {self.rule!r}; valid rules: {', '.join(RULES)}")
        if self.top is not None and (not isinstance(self.top, int) or self.top < 1):
            raise UsageError(f"top must be a whole number >= 1, got {self.top!r}")
        if not 0 < float(self.max_flag_rate) <= 1:
            raise UsageError(f"max_flag_rate must be in (0, 1], got {self.max_flag_rate!r}")
        if not isinstance(self.rounds, int) or self.rounds < 1:
            raise UsageError(f"rounds must be a whole number >= 1, got {self.rounds!r}")
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise UsageError(f"epochs must be a whole number >= 1, got {self.epochs!r}")
        if not 0 < float(self.precision_target) <= 1:
            raise UsageError(f"precision_target must be in (0, 1], got {self.precision_target!r}")
        if not isinstance(self.offdiag_max, int) or self.offdiag_max < 0:
            raise UsageError(f"offdiag_max must be a whole number >= 0, got {self.offdiag_max!r}")
        if self.cv is not None and (not isinstance(self.cv, int) or self.cv < 1):
            raise UsageError(f"cv must be a whole number >= 2 (or 1/None for in-sample predictions), got {self.cv!r}")
        if self.batch_size < 1:
            raise UsageError(f"batch_size must be >= 1, got {self.batch_size!r}")
        if not self.lr > 0:
            raise UsageError(f"lr must be > 0, got {self.lr!r}")
        if not 0 < self.val_fraction < 1:
            raise UsageError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        if not 0 < self.heldout_fraction < 1:
            raise UsageError(f"heldout_fraction must be in (0, 1), got {self.heldout_fraction!r}")
        if not isinstance(self.patience, int) or self.patience < 0:
            raise UsageError(f"patience must be a whole number >= 0 (0: no early stopping), got {self.patience!r}")
        if self.augment not in AUGMENT_PRESETS:
            raise UsageError(f"unknown augment preset {self.augment!r}; valid presets: {', '.join(AUGMENT_PRESETS)}")
        if self.image_size is not None and self.image_size < 8:
            raise UsageError(f"image_size must be >= 8 pixels (or None for the images' size), got {self.image_size!r}")


    @property
    def out_of_sample(self) -> bool:
        """True when each round predicts with K-fold models that did not train on the row (cv >= 2)."""
        return self.cv is not None and self.cv > 1


@dataclass
class RefineResult:
    """What :func:`refine` returns (everything is also in the run directory)."""

    run_dir: Path
    dataset_dir: Path
    rounds: list[dict[str, Any]]
    stop_reason: str
    #: rows of comparison.csv (empty when ``compare`` is off)
    comparison: list[dict[str, Any]] = field(default_factory=list)
    #: per class: original and refined counts
    distribution: list[dict[str, Any]] = field(default_factory=list)
    #: the guard's verdict (accuracy vs chance, suspect share, triggered, reason, suspects acted on)
    guard: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- pure helpers

def stratified_folds(labels: Sequence[int] | np.ndarray, k: int, *, seed: int) -> np.ndarray:
    """Fold number (0..k-1) of every position, each class spread evenly over the folds.

    Example:
        >>> stratified_folds([0, 0, 0, 1, 1, 1], 3, seed=0).tolist().count(0)
        2
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    folds = np.zeros(len(labels), dtype=np.int64)
    offset = 0
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        folds[idx] = (np.arange(len(idx)) + offset) % k
        offset += len(idx)
    return folds


def carve(labels: Sequence[int] | np.ndarray, fraction: float, *, seed: int,
          groups: Sequence[Any] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(rest, part) positions, ``fraction`` of every class in ``part``; rows of one group stay together.

    Without groups this is :func:`ferdata.split.stratified_split` (exact per-class shares); with
    groups (``ferdata.split.row_groups``: shared ``group``, ``id`` or ``root_id``) it is
    :func:`ferdata.split.assign`, so repeats and duplicates never straddle the carve.

    Example:
        >>> groups = np.repeat(np.arange(10), 2)                     # 10 pairs of repeats
        >>> rest, part = carve([0] * 10 + [1] * 10, 0.2, seed=0, groups=groups)
        >>> len(part), set(groups[rest]) & set(groups[part])
        (4, set())
    """
    if groups is None:
        return stratified_split(labels, fraction, seed=seed)
    from ferdata.split import assign

    where = assign(labels, [1 - fraction, fraction], groups=list(groups), seed=seed)
    return np.flatnonzero(where == 0).astype(np.int64), np.flatnonzero(where == 1).astype(np.int64)


def group_folds(labels: Sequence[int] | np.ndarray, k: int, *, seed: int,
                groups: Sequence[Any] | np.ndarray | None = None) -> np.ndarray:
    """Fold of every position (:func:`stratified_folds`), keeping each group in one fold."""
    if groups is None:
        return stratified_folds(labels, k, seed=seed)
    from ferdata.split import assign

    return assign(labels, [1.0 / k] * k, groups=list(groups), seed=seed)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrix (rows: label, columns: prediction) via ``ferdata.train.metrics``."""
    from ferdata.train.metrics import confusion_matrix

    return np.asarray(confusion_matrix(np.asarray(y_true), np.asarray(y_pred), num_classes), dtype=np.int64)


def class_precision(cm: np.ndarray) -> list[float | None]:
    """Precision per class of a confusion matrix; None for a class neither present nor predicted.

    Example:
        >>> class_precision(np.array([[3, 1], [0, 4]]))
        [1.0, 0.8]
    """
    out: list[float | None] = []
    for c in range(cm.shape[0]):
        predicted, present = cm[:, c].sum(), cm[c, :].sum()
        if predicted == 0:
            out.append(None if present == 0 else 0.0)
        else:
            out.append(float(cm[c, c] / predicted))
    return out


def stop_reason(cm: np.ndarray, *, precision_target: float, offdiag_max: int) -> str:
    """Why the loop stops after a round with this confusion matrix ("" to go on).

    Example:
        >>> stop_reason(np.array([[50, 2], [3, 40]]), precision_target=0.99, offdiag_max=9)
        'offdiag_max'
    """
    precision = [p for p in class_precision(cm) if p is not None]
    if precision and min(precision) >= precision_target:
        return "precision_target"
    off = cm.copy()
    np.fill_diagonal(off, 0)
    if off.max(initial=0) <= offdiag_max:
        return "offdiag_max"
    return ""


def flag_row(label: int, probs: Sequence[float]) -> dict[str, Any]:
    """What the model thinks of one row: top-2 classes, the given label's probability, suspicion.

    Example:
        >>> flag_row(0, [0.2, 0.7, 0.1])["suspect_label"]
        True
    """
    probs = np.asarray(probs, dtype=np.float64)
    order = np.argsort(-probs, kind="stable")
    top1, top2 = int(order[0]), int(order[1]) if len(order) > 1 else int(order[0])
    return {
        "predicted": top1,
        "suspect_label": top1 != int(label),
        "label_confidence": float(probs[int(label)]),
        "top1_label": top1,
        "top1_confidence": float(probs[top1]),
        "top2_label": top2,
        "top2_confidence": float(probs[top2]),
    }


def label_scores(labels: Sequence[int] | np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(self-confidence, normalised margin) of every row: p(given) and p(given) - max p(other), in [-1, 1].

    The lower, the more suspect; both rank label errors (Northcutt et al. 2021, "ranking").

    Example:
        >>> sc, margin = label_scores([0, 1], np.array([[0.7, 0.3], [0.6, 0.4]]))
        >>> sc.round(2).tolist(), margin.round(2).tolist()
        ([0.7, 0.4], [0.4, -0.2])
    """
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    rows = np.arange(len(labels))
    self_conf = probs[rows, labels] if len(labels) else np.zeros(0)
    others = probs.copy()
    if len(labels):
        others[rows, labels] = -np.inf
    best_other = others.max(axis=1) if probs.shape[1] > 1 and len(labels) else np.zeros(len(labels))
    return self_conf, self_conf - best_other


def confident_thresholds(labels: Sequence[int] | np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per-class thresholds of confident learning: t_j = mean p_j over the rows labelled j.

    A class with no row gets a threshold above 1 (no row is ever confidently in it).

    Example:
        >>> confident_thresholds([0, 0, 1], np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])).round(2).tolist()
        [0.7, 0.7]
    """
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    out = np.full(probs.shape[1], 1.0 + 1e-6)
    for j in range(probs.shape[1]):
        rows = labels == j
        if rows.any():
            out[j] = probs[rows, j].mean()
    return out


def find_suspects(labels: Sequence[int] | np.ndarray, probs: np.ndarray, *, rule: str = "confident",
                  top: int | None = None) -> np.ndarray:
    """Which rows look mislabelled, from (ideally out-of-sample) class probabilities.

    * ``argmax``: the predicted class differs from the given one (paper 000);
    * ``confident``: confident learning's off-diagonal of the confident joint (Northcutt et al.
      2021): a row labelled i is suspect when some other class j reaches its threshold
      (:func:`confident_thresholds`) and the most probable of the classes that reach theirs is j;
    * ``top=K``: the K rows with the lowest normalised margin (:func:`label_scores`), whatever the rule.

    Example:
        >>> find_suspects([0, 0, 1, 1], np.array([[.9, .1], [.2, .8], [.1, .9], [.8, .2]]), rule="argmax").tolist()
        [False, True, False, True]
    """
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if top is not None:
        _, margin = label_scores(labels, probs)
        out = np.zeros(len(labels), dtype=bool)
        out[np.argsort(margin, kind="stable")[:top]] = True
        return out
    if rule == "argmax":
        return probs.argmax(axis=1) != labels
    if rule != "confident":
        raise UsageError(f"unknown rule {rule!r}; valid rules: {', '.join(RULES)}")
    above = probs >= confident_thresholds(labels, probs)[None, :]
    confident_class = np.where(above, probs, -1.0).argmax(axis=1)
    return above.any(axis=1) & (confident_class != labels)


def guard_check(labels: Sequence[int] | np.ndarray, probs: np.ndarray, suspects: np.ndarray, *, classes: int,
                max_flag_rate: float, out_of_sample: bool) -> dict[str, Any]:
    """Can this model judge these labels? Accuracy against 2x chance, suspect share against ``max_flag_rate``.

    Returns:
        ``{"accuracy", "chance", "flag_rate", "max_flag_rate", "out_of_sample", "triggered", "reason"}``.

    Example:
        >>> guard_check([0, 1, 0, 1], np.eye(2)[[1, 0, 1, 0]], np.ones(4, bool), classes=2, max_flag_rate=0.5,
        ...             out_of_sample=True)["triggered"]
        True
    """
    labels = np.asarray(labels, dtype=np.int64)
    accuracy = float(np.mean(np.asarray(probs).argmax(axis=1) == labels)) if len(labels) else 0.0
    chance = 1.0 / max(1, classes)
    rate = float(np.mean(suspects)) if len(suspects) else 0.0
    reasons = []
    if accuracy < MIN_ACCURACY_OVER_CHANCE * chance:
        reasons.append(f"{'out-of-sample' if out_of_sample else 'in-sample'} accuracy {accuracy:.3f} is under "
                       f"{MIN_ACCURACY_OVER_CHANCE:g}x chance ({MIN_ACCURACY_OVER_CHANCE * chance:.3f} for {classes} "
                       "classes): the model has not learnt enough to judge labels")
    if rate > max_flag_rate:
        reasons.append(f"{rate:.1%} of the rows would be suspects, above --max-flag-rate {max_flag_rate:g}")
    return {"accuracy": round(accuracy, 4), "chance": round(chance, 4), "flag_rate": round(rate, 4),
            "max_flag_rate": max_flag_rate, "out_of_sample": out_of_sample, "triggered": bool(reasons),
            "reason": "; ".join(reasons)}


# ---------------------------------------------------------------- training glue (ferdata.train)

@dataclass
class _Trainer:
    """Builds, trains and predicts with the configured CNN through the ferdata.train API."""

    config: RefineConfig
    image_size: int
    channels: int
    num_classes: int

    def _tf(self, ds: datasets.Dataset, *, shuffle: bool, augment: str) -> Any:
        from ferdata.train import to_tf_dataset

        return to_tf_dataset(ds, image_size=self.image_size, channels=self.channels,
                             batch_size=self.config.batch_size, shuffle=shuffle, seed=self.config.seed,
                             augment=augment, num_classes=self.num_classes)

    def fit(self, train: datasets.Dataset, val: datasets.Dataset, out_dir: Path) -> tuple[Any, dict[str, list[float]]]:
        """Train from scratch (same seed every time) and return the best-val-acc model and its history."""
        import keras

        from ferdata.train import build_model, fit_model

        keras.utils.set_random_seed(self.config.seed)
        model = build_model(self.config.model, (self.image_size, self.image_size, self.channels), self.num_classes)
        result = fit_model(model, self._tf(train, shuffle=True, augment=self.config.augment),
                           self._tf(val, shuffle=False, augment="none"), epochs=self.config.epochs, lr=self.config.lr,
                           class_weight=None, out_dir=out_dir, patience=self.config.patience, seed=self.config.seed,
                           verbose=0, progress=f"{self.config.model} {out_dir.parent.name}/{out_dir.name}")
        return model, _history_dict(result)

    def predict(self, model: Any, ds: datasets.Dataset) -> np.ndarray:
        """Class probabilities, one row per row of ``ds`` (in order)."""
        from ferdata.train import predict_proba

        if len(ds) == 0:
            return np.zeros((0, self.num_classes), dtype=np.float32)
        batches = self._tf(ds, shuffle=False, augment="none")
        probs = np.asarray(predict_proba(model, batches), dtype=np.float32)
        if self.config.tta:
            import tensorflow as tf

            mirrored = batches.map(lambda x, *rest: (tf.image.flip_left_right(x), *rest))
            probs = (probs + np.asarray(predict_proba(model, mirrored), dtype=np.float32)) / 2
        return probs


def _history_dict(result: Any) -> dict[str, list[float]]:
    """The per-epoch history from whatever fit_model returns (History, dict, or an object with .history)."""
    for candidate in (result, getattr(result, "history", None)):
        if isinstance(candidate, dict) and candidate and all(isinstance(v, list | tuple) for v in candidate.values()):
            return {k: [float(x) for x in v] for k, v in candidate.items()}
        inner = getattr(candidate, "history", None)
        if isinstance(inner, dict):
            return {k: [float(x) for x in v] for k, v in inner.items()}
    return {}


def _with_labels(ds: datasets.Dataset, labels: np.ndarray) -> datasets.Dataset:
    """``ds`` with its ``label`` column replaced (same ClassLabel feature)."""
    feature = ds.features["label"]
    return ds.remove_columns("label").add_column("label", [int(x) for x in labels], feature=feature)


# ---------------------------------------------------------------- the run

class _Run:
    """One refinement run: its directory, state file and the data it works on."""

    def __init__(self, source: Path, run_dir: Path, config: RefineConfig, *, overwrite: bool) -> None:
        from ferdata.dataset import label_names, open_dataset

        self.source, self.run_dir, self.config = source, run_dir, config
        self.dd = open_dataset(source)
        self.names = label_names(self.dd)
        self.num_classes = len(self.names)
        self._plan()
        self.state = self._open_state(overwrite)

    # -- what is refined, what is held out

    def _plan(self) -> None:
        import datasets

        c = self.config
        protected = {"test": not c.include_test, "validation": not c.include_validation}
        self.pool_splits = [s for s in self.dd if not protected.get(s, False)]
        self.untouched_splits = [s for s in self.dd if s not in self.pool_splits]
        if not self.pool_splits:
            raise UsageError(f"nothing to refine: the dataset has only the splits {', '.join(self.dd)}; "
                             "pass --include-validation or --include-test to refine them")
        from ferdata.split import row_groups

        keep_columns = ["image", "label"] + [k for k in ("group", "id", "root_id")
                                             if all(k in self.dd[s].column_names for s in self.pool_splits)]
        parts = [self.dd[s].select_columns(keep_columns) for s in self.pool_splits]
        self.pool = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
        # rows sharing a group, an id or a root_id never straddle a carve (held-out, 80/20, folds)
        groups = row_groups(self.pool)
        self.groups = None if groups is None else np.asarray(groups, dtype=object)
        self.pool = self.pool.select_columns(["image", "label"])
        self.offsets = dict(zip(self.pool_splits, np.cumsum([0] + [len(p) for p in parts[:-1]]).tolist(), strict=True))
        self.labels = np.asarray(self.pool["label"], dtype=np.int64)
        present = np.unique(self.labels)
        if len(present) < 2:
            found = ", ".join(self.names[i] for i in present) or "none"
            raise UsageError(f"refine needs at least two classes with images in {', '.join(self.pool_splits)}; "
                             f"found {found}")
        self.present = present.tolist()
        heldout_split = next((s for s in EVAL_SPLITS if s in self.untouched_splits and len(self.dd[s])), None)
        if heldout_split is not None:
            self.heldout_name = heldout_split
            self.heldout = self.dd[heldout_split].select_columns(["image", "label"])
            self.work = np.arange(len(self.pool), dtype=np.int64)
        else:
            self.heldout_name = f"carved {c.heldout_fraction:.0%} of {'+'.join(self.pool_splits)}"
            rest, carved = carve(self.labels, c.heldout_fraction, seed=c.seed + 7919, groups=self.groups)
            self.heldout = self.pool.select(carved)
            self.work = rest
        from ferdata.train.data import image_shape

        height, width, self.channels = image_shape(self.pool)
        self.image_size = c.image_size or max(height, width)
        self.trainer = _Trainer(c, self.image_size, self.channels, self.num_classes)

    def _groups(self, positions: np.ndarray) -> np.ndarray | None:
        return None if self.groups is None else self.groups[positions]

    # -- state

    def _identity(self) -> dict[str, Any]:
        from ferdata.dataset import read_manifest

        manifest = read_manifest(self.source)
        loop = {k: v for k, v in dataclasses.asdict(self.config).items() if k not in _FINAL_PHASE_OPTIONS}
        return {"source": str(self.source.resolve()), "created": manifest.get("created"),
                "splits": {s: len(d) for s, d in self.dd.items()}, "config": loop}

    def _open_state(self, overwrite: bool) -> dict[str, Any]:
        identity = self._identity()
        file = self.run_dir / STATE_FILE
        if self.run_dir.exists():
            if overwrite:
                shutil.rmtree(self.run_dir)
            elif file.exists():
                state = json.loads(file.read_text(encoding="utf-8"))
                if state.get("identity") == identity:
                    logger.info("resuming %s after round %d", self.run_dir, len(state["rounds"]))
                    return state
                raise OutputExists(f"{self.run_dir} holds a refinement run of other data or options; "
                                   "pass --overwrite to replace it, or choose another --out")
            else:
                raise OutputExists(f"output {self.run_dir} already exists; pass --overwrite to replace it")
        (self.run_dir / "rounds").mkdir(parents=True)
        state = {"format": STATE_FORMAT, "identity": identity, "rounds": [], "finished": False,
                 "stop_reason": "", "final_round": None, "current": "rounds/current_0.npy", "done": False}
        np.save(self.run_dir / state["current"], self.work)
        self._save_state(state)
        return state

    def _save_state(self, state: dict[str, Any] | None = None) -> None:
        state = state if state is not None else self.state
        tmp = self.run_dir / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(state, indent=2), encoding="utf-8")
        os.replace(tmp, self.run_dir / STATE_FILE)

    # -- one round

    def round(self, k: int) -> dict[str, Any]:
        """Train, predict and evaluate round ``k`` (1-based); write its files; return its rows."""
        c = self.config
        current = np.load(self.run_dir / self.state["current"])
        labels = self.labels[current]
        rdir = self.run_dir / "rounds" / f"round_{k}"
        if rdir.exists():  # a round killed half-way: start it again
            shutil.rmtree(rdir)
        rdir.mkdir(parents=True)
        start = time.perf_counter()
        if c.out_of_sample:
            probs_current, probs_all, info, histories = self._round_cv(current, labels, rdir)
        else:
            probs_current, probs_all, info, histories = self._round_in_sample(current, labels, rdir, k)
        pred = probs_current.argmax(axis=1)
        cm = confusion(labels, pred, self.num_classes)
        precision = class_precision(cm)
        kept = current[pred == labels]
        reason = stop_reason(cm, precision_target=c.precision_target, offdiag_max=c.offdiag_max)
        if not reason and k >= int(c.rounds or 1):   # the last round: no next set to build
            reason = "max_rounds"
        if not reason:
            dropped = [self.names[i] for i in self.present if not np.any(self.labels[kept] == i)]
            if dropped:
                reason = f"class_dropped:{','.join(dropped)}"
                logger.warning("round %d: keeping only correctly predicted images would leave no image of %s; "
                               "stopping with the model of round %d", k, ", ".join(dropped), k)
        row: dict[str, Any] = {"round": k, "images_train": info["images_train"], "images_val": info["images_val"],
                               "total": int(len(current)), "val_accuracy": info["val_accuracy"],
                               "accuracy": round(float(np.mean(pred == labels)), 4) if len(current) else 0.0}
        for name, p in zip(self.names, precision, strict=True):
            row[f"precision_{name}"] = "" if p is None else round(p, 4)
        row.update({"kept": int(len(kept)), "removed": int(len(current) - len(kept)),
                    "max_offdiag": int((cm - np.diag(np.diag(cm))).max(initial=0)), "stop": reason})
        _write_confusion(rdir, cm, self.names, title=f"round {k}: {len(current)} images, labels vs predictions")
        _write_histories(rdir, histories)
        np.save(rdir / "probs.npy", probs_all)
        np.save(rdir / "current.npy", current)
        next_file = f"rounds/current_{k}.npy"
        np.save(self.run_dir / next_file, kept)
        self.state["rounds"].append(row)
        self.state.setdefault("seconds", []).append(round(time.perf_counter() - start, 1))
        self.state["current"] = next_file
        if reason:
            self.state.update(finished=True, stop_reason=reason, final_round=k)
        self._save_state()
        return row

    def _round_in_sample(self, current: np.ndarray, labels: np.ndarray, rdir: Path, k: int
                         ) -> tuple[np.ndarray, np.ndarray, dict[str, Any], list[dict[str, list[float]]]]:
        c = self.config
        tr, va = carve(labels, c.val_fraction, seed=c.seed * 1000 + k, groups=self._groups(current))
        model, history = self.trainer.fit(self.pool.select(current[tr]), self.pool.select(current[va]), rdir / "train")
        probs_all = self.trainer.predict(model, self.pool)
        probs_current = probs_all[current]
        val_acc = float(np.mean(probs_current[va].argmax(1) == labels[va])) if len(va) else 0.0
        _save_model(model, rdir / "model.keras")
        info = {"images_train": int(len(tr)), "images_val": int(len(va)), "val_accuracy": round(val_acc, 4)}
        return probs_current, probs_all, info, [history]

    def _round_cv(self, current: np.ndarray, labels: np.ndarray, rdir: Path
                  ) -> tuple[np.ndarray, np.ndarray, dict[str, Any], list[dict[str, list[float]]]]:
        from ferdata.progress import progress

        c = self.config
        k_folds = int(c.cv or 2)
        folds = group_folds(labels, k_folds, seed=c.seed, groups=self._groups(current))
        outside = np.setdiff1d(np.arange(len(self.pool)), current)
        probs_current = np.zeros((len(current), self.num_classes), dtype=np.float32)
        probs_outside = np.zeros((len(outside), self.num_classes), dtype=np.float32)
        sizes_train, sizes_val, val_accs, histories = [], [], [], []
        for f in progress(range(k_folds), desc=f"cv folds ({k_folds})", total=k_folds):
            held = np.flatnonzero(folds == f)
            fit_pos = np.flatnonzero(folds != f)
            fit_groups = self._groups(current[fit_pos])
            tr, va = carve(labels[fit_pos], c.val_fraction, seed=c.seed * 1000 + f, groups=fit_groups)
            tr, va = fit_pos[tr], fit_pos[va]
            model, history = self.trainer.fit(self.pool.select(current[tr]), self.pool.select(current[va]),
                                              rdir / f"fold_{f}")
            probs_current[held] = self.trainer.predict(model, self.pool.select(current[held]))
            if len(outside):
                probs_outside += self.trainer.predict(model, self.pool.select(outside)) / k_folds
            pv = self.trainer.predict(model, self.pool.select(current[va]))
            val_accs.append(float(np.mean(pv.argmax(1) == labels[va])) if len(va) else 0.0)
            sizes_train.append(len(tr))
            sizes_val.append(len(va))
            histories.append(history)
            del model
        probs_all = np.zeros((len(self.pool), self.num_classes), dtype=np.float32)
        probs_all[current] = probs_current
        probs_all[outside] = probs_outside
        info = {"images_train": int(round(np.mean(sizes_train))), "images_val": int(round(np.mean(sizes_val))),
                "val_accuracy": round(float(np.mean(val_accs)), 4)}
        return probs_current, probs_all, info, histories

    # -- after the loop

    def final_probs(self) -> np.ndarray:
        return np.load(self.run_dir / "rounds" / f"round_{self.state['final_round']}" / "probs.npy")

    def judge(self, probs: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """(suspect mask of every pool row, the guard's verdict); the guard empties the mask unless forced."""
        cached = getattr(self, "_judged", None)
        if cached is not None:
            return cached
        c = self.config
        suspects = find_suspects(self.labels, probs, rule=str(c.rule), top=c.top)
        guard = guard_check(self.labels, probs, suspects, classes=len(self.present), max_flag_rate=c.max_flag_rate,
                            out_of_sample=c.out_of_sample)
        guard.update(rule=c.rule if c.top is None else f"top {c.top} by normalised margin", forced=c.force,
                     candidates=int(suspects.sum()))
        if guard["triggered"]:
            if c.force:
                logger.warning("refine guard: %s; acting anyway (--force)", guard["reason"])
            else:
                logger.warning("refine guard: %s; NOTHING is flagged, pruned or relabelled (pass --force to act "
                               "anyway, or use a model/epochs that learn these data)", guard["reason"])
                suspects = np.zeros_like(suspects)
        guard["suspects"] = int(suspects.sum())
        self._judged = (suspects, guard)
        return self._judged

    def refined_labels(self, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(labels after refinement for every pool row, mask of rows kept in the refined training data)."""
        suspects, _ = self.judge(probs)
        pred = probs.argmax(axis=1).astype(np.int64)
        if self.config.mode == "relabel":
            return np.where(suspects, pred, self.labels), np.ones(len(pred), dtype=bool)
        return self.labels.copy(), ~suspects

    def compare(self, probs: np.ndarray) -> list[dict[str, Any]]:
        """Train the same CNN on the original and the refined training data; evaluate on the held-out split."""
        c = self.config
        new_labels, keep = self.refined_labels(probs)
        held_labels = np.asarray(self.heldout["label"], dtype=np.int64)
        rows = []
        # prune and flag train on the same rows (those the model agrees with): one cached training serves both
        import hashlib

        digest = hashlib.sha256(np.packbits(keep).tobytes() + new_labels.astype(np.int64).tobytes()).hexdigest()[:12]
        refined_key = f"refined-{'relabel' if c.mode == 'relabel' else 'agree'}-{digest}"
        variants = [("original", "original", self.work, self.labels[self.work]),
                    ("refined", refined_key, self.work[keep[self.work]], new_labels[self.work[keep[self.work]]])]
        for name, key, idx, labels in variants:
            cdir = self.run_dir / "comparison" / key
            if (cdir / "result.json").exists():
                rows.append(json.loads((cdir / "result.json").read_text(encoding="utf-8")))
                continue
            data = _with_labels(self.pool.select(idx), labels)
            tr, va = carve(labels, c.val_fraction, seed=c.seed * 1000, groups=self._groups(idx))
            if cdir.exists():
                shutil.rmtree(cdir)
            cdir.mkdir(parents=True)
            model, history = self.trainer.fit(data.select(tr), data.select(va), cdir / "train")
            acc = {}
            for part, ds, y in (("train", data.select(tr), labels[tr]), ("val", data.select(va), labels[va]),
                                ("heldout", self.heldout, held_labels)):
                p = self.trainer.predict(model, ds).argmax(1)
                acc[part] = round(float(np.mean(p == y)), 4) if len(y) else 0.0
                if part == "heldout":
                    _write_confusion(cdir, confusion(y, p, self.num_classes), self.names,
                                     title=f"{name} data: held-out ({self.heldout_name})")
            _write_histories(cdir, [history])
            rows.append({"dataset": name, "images_train": int(len(tr)), "images_val": int(len(va)),
                         "total": int(len(idx)), "train_accuracy": acc["train"], "val_accuracy": acc["val"],
                         "heldout_accuracy": acc["heldout"], "heldout_split": self.heldout_name,
                         "heldout_images": int(len(held_labels))})
            (cdir / "result.json").write_text(json.dumps(rows[-1], indent=2), encoding="utf-8")
        return rows

    def distribution(self, probs: np.ndarray) -> list[dict[str, Any]]:
        new_labels, keep = self.refined_labels(probs)
        final_set = np.load(self.run_dir / "rounds" / f"round_{self.state['final_round']}" / "current.npy")
        rows = []
        for i, name in enumerate(self.names):
            rows.append({"class": name, "original": int(np.sum(self.labels == i)),
                         "refined": int(np.sum((new_labels == i) & keep)),
                         "last_round_set": int(np.sum(self.labels[final_set] == i))})
        rows.append({"class": "total", "original": int(len(self.labels)), "refined": int(keep.sum()),
                     "last_round_set": int(len(final_set))})
        return rows

    def write_dataset(self, probs: np.ndarray, *, num_proc: int | None = None) -> Path:
        """RUN/dataset: the input dataset with the pool splits relabelled, pruned or flagged."""
        import datasets

        from ferdata.dataset import partition_rejects, read_manifest, read_rejects, save_dataset
        from ferdata.steps import safe_num_proc

        c = self.config
        out = self.run_dir / "dataset"
        # training ran in this process, so TensorFlow is loaded: forking workers now can deadlock
        num_proc = safe_num_proc(num_proc, what=STEP_NAME)
        suspects, guard = self.judge(probs)
        class_label = self.dd[self.pool_splits[0]].features["label"]
        splits = {}
        for split, ds in self.dd.items():
            if split in self.pool_splits:
                lo, hi = self.offsets[split], self.offsets[split] + len(ds)
                kwargs = {"probs": probs[lo:hi], "suspects": suspects[lo:hi], "mode": c.mode}
                ds = ds.map(_annotate_batch, batched=True, with_indices=True, fn_kwargs=kwargs,
                            num_proc=num_proc if num_proc > 1 else None, desc=f"refine {split}")
            elif c.mode != "prune":
                ds = ds.map(_untouched_batch, batched=True, fn_kwargs={"mode": c.mode}, desc=f"keep {split}")
            for column, feature in _new_features(c.mode, class_label).items():
                if column in ds.column_names:
                    ds = ds.cast_column(column, feature)
            splits[split] = ds
        dd, rejects = partition_rejects(datasets.DatasetDict(splits), STEP_NAME)
        manifest = read_manifest(self.source)
        info = {"mode": c.mode, "relabelled_splits": self.pool_splits, "untouched_splits": self.untouched_splits,
                "rounds": len(self.state["rounds"]), "stop_reason": self.state["stop_reason"],
                "heldout": self.heldout_name, "run_dir": str(self.run_dir.resolve()), "guard": guard,
                "note": (f"labels of {', '.join(self.untouched_splits)} were never changed" if self.untouched_splits
                         else "every split was refined, test included: scores on it are optimistic")}
        rows_in = sum(len(d) for d in self.dd.values())
        entry = {"step": STEP_NAME, "params": dataclasses.asdict(c), "seed": c.seed, "limit": None,
                 "limited_out": 0, "input_rows": rows_in,
                 "kept": sum(len(d) for d in dd.values()), "rejected": len(rejects),
                 "rejected_by_reason": {"label_disagreement": len(rejects)} if rejects else {}, "info": info}
        manifest["steps"] = [*manifest.get("steps", []), entry]
        save_dataset(dd, out, manifest=manifest, rejects=[*read_rejects(self.source), *rejects], overwrite=True,
                     num_proc=num_proc)
        return out


def _annotate_batch(batch: dict[str, list], indices: list[int], *, probs: np.ndarray, suspects: np.ndarray,
                    mode: str) -> dict[str, list]:
    """Per-row result of the final model for one batch of a refined split (``suspects``: the judged mask)."""
    rows = []
    for label, i in zip(batch["label"], indices, strict=True):
        row = flag_row(label, probs[i])
        row["suspect_label"] = bool(suspects[i])
        row["label_margin"] = float(label_scores([label], probs[i][None, :])[1][0])
        rows.append(row)
    if mode == "relabel":
        new = [r["predicted"] if r["suspect_label"] else int(lab) for lab, r in zip(batch["label"], rows, strict=True)]
        return {"label_original": list(batch["label"]), "label": new,
                "relabel_confidence": [r["top1_confidence"] for r in rows],
                "relabeled": [n != int(lab) for n, lab in zip(new, batch["label"], strict=True)]}
    if mode == "prune":
        reasons = ["label_disagreement" if r["suspect_label"] else None for r in rows]
        details = [json.dumps({"label": int(lab), "predicted": r["predicted"], "confidence": round(r["top1_confidence"], 4),
                               "label_confidence": round(r["label_confidence"], 4),
                               "margin": round(r["label_margin"], 4)}) if r["suspect_label"] else None
                   for lab, r in zip(batch["label"], rows, strict=True)]
        return {REJECT_REASON: reasons, REJECT_DETAILS: details}
    return {key: [r[key] for r in rows] for key in ("suspect_label", "label_confidence", "label_margin", "top1_label",
                                                    "top1_confidence", "top2_label", "top2_confidence")}


def _new_features(mode: str, class_label: Any) -> dict[str, Any]:
    """Features of the columns a mode adds (so every split has the same schema)."""
    import datasets

    score, flag = datasets.Value("float32"), datasets.Value("bool")
    if mode == "relabel":
        return {"label": class_label, "label_original": class_label, "relabel_confidence": score, "relabeled": flag}
    if mode == "flag":
        return {"suspect_label": flag, "label_confidence": score, "label_margin": score, "top1_label": class_label,
                "top1_confidence": score, "top2_label": class_label, "top2_confidence": score}
    return {}


def _untouched_batch(batch: dict[str, list], *, mode: str) -> dict[str, list]:
    """The same columns for a split that is not refined: labels kept, nothing suspected."""
    n = len(batch["label"])
    if mode == "relabel":
        return {"label_original": list(batch["label"]), "relabel_confidence": [None] * n, "relabeled": [False] * n}
    return {"suspect_label": [False] * n, "label_confidence": [None] * n, "label_margin": [None] * n,
            "top1_label": [None] * n,
            "top1_confidence": [None] * n, "top2_label": [None] * n, "top2_confidence": [None] * n}


# ---------------------------------------------------------------- writers

def _save_model(model: Any, path: Path) -> None:
    try:
        model.save(str(path))
    except Exception as e:  # a model that cannot be serialised must not lose the round
        logger.warning("could not save the model of %s: %s", path.parent.name, e)


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        path.write_text("", encoding="utf-8")
        return
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _write_confusion(directory: Path, cm: np.ndarray, names: Sequence[str], *, title: str) -> None:
    """confusion.csv and confusion.png (rows: label, columns: prediction) via ferdata.train.metrics."""
    from ferdata.train.metrics import plot_confusion, write_confusion_csv

    write_confusion_csv(cm, names, directory / "confusion.csv")
    plot_confusion(cm, names, directory / "confusion.png", title=title)


def _write_histories(directory: Path, histories: Sequence[dict[str, list[float]]]) -> None:
    """learning_curves.csv (every model's epochs) and accuracy.png / loss.png per model."""
    from ferdata.train.metrics import plot_learning_curves

    rows = []
    for m, hist in enumerate(histories):
        epochs = max((len(v) for v in hist.values()), default=0)
        for e in range(epochs):
            rows.append({"model": m, "epoch": e + 1, **{k: v[e] for k, v in hist.items() if e < len(v)}})
        if hist:
            target = directory if len(histories) == 1 else directory / f"fold_{m}"
            target.mkdir(parents=True, exist_ok=True)
            plot_learning_curves(hist, target)
    _write_csv(directory / "learning_curves.csv", rows)


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def summary_markdown(rounds: Sequence[dict[str, Any]], distribution: Sequence[dict[str, Any]],
                     comparison: Sequence[dict[str, Any]], *, title: str, notes: Sequence[str] = ()) -> str:
    """summary.md: paper 000's Tables 5 (rounds), 6 (distribution) and 7 (comparison)."""
    lines = [f"# {title}", ""]
    lines += [f"- {n}" for n in notes]
    lines += ["", "## Refinement rounds (paper 000, Table 5)", "",
              "| Training | Images (train) | Images (val) | Total | Accuracy (val) | Kept | Stop |",
              "|---|---|---|---|---|---|---|"]
    for r in rounds:
        lines.append(f"| {r['round']} | {r['images_train']} | {r['images_val']} | {r['total']} | "
                     f"{_fmt(r['val_accuracy'])} | {r['kept']} | {r['stop'] or ''} |")
    classes = [d for d in distribution if d["class"] != "total"]
    total = next((d for d in distribution if d["class"] == "total"), None)
    header = " | ".join(d["class"].capitalize() for d in classes)
    lines += ["", "## Class distribution (paper 000, Table 6)", "", f"| Dataset | {header} | Total |",
              "|---" * (len(classes) + 2) + "|"]
    for key, label in (("original", "original"), ("refined", "refined")):
        cells = " | ".join(str(d[key]) for d in classes)
        lines.append(f"| {label} | {cells} | {total[key] if total else ''} |")
    if comparison:
        lines += ["", "## Original vs refined training data (paper 000, Table 7)", "",
                  "| Dataset | Images (training) | Images (validation) | Total | Train acc | Val acc | Held-out acc |",
                  "|---|---|---|---|---|---|---|"]
        for r in comparison:
            lines.append(f"| {r['dataset']} | {r['images_train']} | {r['images_val']} | {r['total']} | "
                         f"{_fmt(r['train_accuracy'])} | {_fmt(r['val_accuracy'])} | {_fmt(r['heldout_accuracy'])} |")
        lines += ["", f"Held-out split: {comparison[0]['heldout_split']} ({comparison[0]['heldout_images']} images, "
                      "original labels, never refined)."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the API

def refine(
    source: str | Path,
    out: str | Path,
    config: RefineConfig | None = None,
    *,
    overwrite: bool = False,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    num_proc: int | None = None,
) -> RefineResult:
    """Run the refinement loop on a dataset directory and write the run directory ``out``.

    Args:
        source: a ferdata dataset directory (never modified).
        out: the run directory. When it holds an unfinished run of the same data and options, the
            run resumes after its last finished round; a finished one is rewritten from its state.
        config: the options (paper 000 defaults when None).
        overwrite: start again from scratch when ``out`` exists.
        on_round: called with each round's row right after the round is saved (progress, tests).
        num_proc: processes for writing the output dataset.

    Returns:
        The rounds, stop reason, distribution, comparison and output paths.

    Raises:
        UsageError: for fewer than two classes, nothing to refine, or bad options (exit code 2).
        OutputExists: when ``out`` exists with another run and ``overwrite`` is False.

    Example:
        >>> refine("fer2013", "run", RefineConfig(model="fer-cnn", rounds=5, mode="prune"))  # doctest: +SKIP
    """
    from ferdata.dataset import no_input_caching, prepare_output

    config = config or RefineConfig()
    source, out = Path(source), Path(out)
    prepare_output(out, overwrite=True, inputs=[source])
    with no_input_caching():
        run = _Run(source, out, config, overwrite=overwrite)
        while not run.state["finished"]:
            row = run.round(len(run.state["rounds"]) + 1)
            logger.info("round %d: %d images, val accuracy %.4f, kept %d%s", row["round"], row["total"],
                        row["val_accuracy"], row["kept"], f", stop: {row['stop']}" if row["stop"] else "")
            if on_round is not None:
                on_round(row)
        probs = run.final_probs()
        comparison = run.compare(probs) if config.compare else []
        distribution = run.distribution(probs)
        dataset_dir = run.write_dataset(probs, num_proc=num_proc)
    rounds = run.state["rounds"]
    _write_csv(out / "rounds.csv", rounds)
    _write_csv(out / "distribution.csv", distribution)
    _write_csv(out / "comparison.csv", comparison)
    notes = [f"input: {source}", f"mode: {config.mode}, model: {config.model}, epochs: {config.epochs}, "
             f"predictions: {'out-of-sample, ' + str(config.cv) + '-fold' if config.out_of_sample else 'in-sample (paper)'}",
             f"stopped after round {run.state['final_round']}: {run.state['stop_reason']}",
             f"refined splits: {', '.join(run.pool_splits)}; untouched: {', '.join(run.untouched_splits) or 'none'}"]
    if "test" in run.pool_splits:
        notes.append("WARNING: the test split was refined too (--include-test); scores measured on it are optimistic")
    _, guard = run.judge(probs)
    notes.append(f"suspects: {guard['suspects']} of {len(run.labels)} rows (rule: {guard['rule']}); model accuracy "
                 f"on the given labels {guard['accuracy']:.4f} ({'out-of-sample' if config.out_of_sample else 'in-sample'}), "
                 f"chance {guard['chance']:.4f}")
    if guard["triggered"]:
        notes.append(f"WARNING (guard): {guard['reason']}; "
                     + ("acted anyway (--force)" if config.force else "nothing was flagged, pruned or relabelled"))
    (out / "summary.md").write_text(summary_markdown(rounds, distribution, comparison,
                                                     title=f"ferdata refine: {source.name}", notes=notes),
                                    encoding="utf-8")
    run.state["done"] = True
    run._save_state()
    return RefineResult(out, dataset_dir, rounds, run.state["stop_reason"], comparison, distribution, guard)
