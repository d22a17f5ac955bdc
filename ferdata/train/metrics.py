"""Pure evaluation functions (NumPy) and plots (matplotlib, imported when a plot is drawn).

Conventions: the confusion matrix has true classes as rows and predicted classes as columns
(paper 002); precision of a class never predicted, and recall of a class absent from the data,
are reported as 0.0 with a warning naming the class (never a silent NaN).

The counts and per-class scores are scikit-learn's (``sklearn.metrics.confusion_matrix`` and
``precision_recall_fscore_support`` with ``zero_division=0``); this module adds the input checks,
the warnings, and a macro F1 over the classes present in ``y_true`` only. Top-k accuracy stays
here: its tie rule (lower class id first) differs from ``sklearn.metrics.top_k_accuracy_score``.

Example:
    >>> confusion_matrix([0, 1, 1], [0, 1, 0], 2).tolist()
    [[1, 0], [1, 1]]
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ferdata.errors import UsageError


def confusion_matrix(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``cm[t, p]`` of examples of true class ``t`` predicted as ``p``.

    Raises:
        UsageError: when the lengths differ or a label is outside ``0..num_classes-1``.

    Example:
        >>> confusion_matrix([0, 0, 1], [0, 1, 1], 2).tolist()
        [[1, 1], [0, 1]]
    """
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise UsageError(f"y_true has {t.size} labels but y_pred has {p.size}")
    for name, arr in (("y_true", t), ("y_pred", p)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            bad = sorted(set(arr[(arr < 0) | (arr >= num_classes)].tolist()))
            raise UsageError(f"{name} has labels outside 0..{num_classes - 1}: {bad}")
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix

    if not t.size:
        return np.zeros((num_classes, num_classes), dtype=np.int64)
    return sk_confusion_matrix(t, p, labels=np.arange(num_classes)).astype(np.int64)


def top_k_accuracy(y_true: Sequence[int] | np.ndarray, probs: np.ndarray, k: int = 2) -> float:
    """Share of examples whose true class is among the ``k`` highest probabilities (ties: lower id first).

    Example:
        >>> top_k_accuracy([2], np.array([[0.5, 0.1, 0.4]]), k=2)
        1.0
    """
    t = np.asarray(y_true, dtype=np.int64).ravel()
    if t.size == 0:
        return 0.0
    order = np.argsort(-np.asarray(probs, dtype=np.float64), axis=1, kind="stable")[:, :k]
    return float((order == t[:, None]).any(axis=1).mean())


def classification_report(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    probs: np.ndarray | None,
    label_names: Sequence[str],
) -> dict[str, Any]:
    """Accuracy, top-2 accuracy, per-class precision / recall / F1 / support, macro F1, confusion matrix.

    Args:
        y_true: true class ids.
        y_pred: predicted class ids.
        probs: ``(N, C)`` probabilities for top-2 accuracy, or None (then ``top2_accuracy`` is None).
        label_names: the class names, index = class id.

    Returns:
        ``{"accuracy", "top2_accuracy", "macro_f1", "num_examples", "per_class": {name: {"precision",
        "recall", "f1", "support"}}, "confusion_matrix", "label_names", "warnings"}``. ``macro_f1``
        averages the classes present in ``y_true`` (absent classes are warned about, not averaged).

    Example:
        >>> r = classification_report([0, 1, 1], [0, 1, 0], None, ["happy", "sad"])
        >>> r["accuracy"], r["per_class"]["sad"]["recall"]
        (0.6667, 0.5)
    """
    from sklearn.metrics import precision_recall_fscore_support

    names = list(label_names)
    c = len(names)
    cm = confusion_matrix(y_true, y_pred, c)
    n = int(cm.sum())
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    if n:
        precisions, recalls, f1_scores, _ = precision_recall_fscore_support(
            np.asarray(y_true, dtype=np.int64).ravel(), np.asarray(y_pred, dtype=np.int64).ravel(),
            labels=np.arange(c), average=None, zero_division=0.0)
    else:
        precisions = recalls = f1_scores = np.zeros(c)
    warnings: list[str] = []
    per_class: dict[str, dict[str, float | int]] = {}
    f1s = []
    for i, name in enumerate(names):
        precision, recall, f1 = float(precisions[i]), float(recalls[i]), float(f1_scores[i])
        if support[i] == 0:
            warnings.append(f"class {name!r} has no example: recall and F1 reported as 0.0 and left out of macro F1")
        else:
            f1s.append(f1)
            if predicted[i] == 0:
                warnings.append(f"class {name!r} is never predicted: precision reported as 0.0")
        per_class[name] = {"precision": round(float(precision), 4), "recall": round(float(recall), 4),
                           "f1": round(float(f1), 4), "support": int(support[i])}
    return {
        "num_examples": n,
        "accuracy": round(float(tp.sum() / n), 4) if n else 0.0,
        "top2_accuracy": round(top_k_accuracy(y_true, probs, 2), 4) if probs is not None else None,
        "macro_f1": round(float(np.mean(f1s)), 4) if f1s else 0.0,
        "per_class": per_class,
        "label_names": names,
        "confusion_matrix": cm.tolist(),
        "warnings": warnings,
    }


def normalize_rows(cm: np.ndarray) -> np.ndarray:
    """Row-normalised confusion matrix (each true class sums to 1; empty rows stay 0)."""
    cm = np.asarray(cm, dtype=np.float64)
    sums = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, sums, out=np.zeros_like(cm), where=sums > 0)


def write_confusion_csv(cm: np.ndarray, label_names: Sequence[str], path: str | Path) -> Path:
    """CSV with a ``true\\predicted`` header row and one row per true class."""
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["true\\predicted", *label_names])
        for name, row in zip(label_names, np.asarray(cm).tolist(), strict=True):
            writer.writerow([name, *row])
    return path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(cm: np.ndarray, label_names: Sequence[str], path: str | Path, *, normalize: bool = False,
                   title: str | None = None) -> Path:
    """Save a confusion-matrix heat map (counts, or row-normalised shares) as PNG."""
    plt = _pyplot()
    values = normalize_rows(cm) if normalize else np.asarray(cm)
    c = len(label_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * c, 1.0 + 0.7 * c))
    im = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_xticks(range(c), label_names, rotation=45, ha="right")
    ax.set_yticks(range(c), label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or ("confusion matrix (row-normalised)" if normalize else "confusion matrix (counts)"))
    top = float(values.max()) if values.size else 0.0
    for i in range(c):
        for j in range(c):
            text = f"{values[i, j]:.2f}" if normalize else str(int(values[i, j]))
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if top and values[i, j] > top / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_learning_curves(history: Mapping[str, Sequence[float]], out_dir: str | Path) -> list[Path]:
    """Save ``accuracy.png`` and ``loss.png``: train vs validation per epoch."""
    plt = _pyplot()
    out = Path(out_dir)
    written = []
    for metric in ("accuracy", "loss"):
        if metric not in history:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        epochs = range(1, len(history[metric]) + 1)
        ax.plot(epochs, history[metric], label="train")
        if f"val_{metric}" in history:
            ax.plot(epochs, history[f"val_{metric}"], label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric}: train vs validation")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"{metric}.png", dpi=100)
        plt.close(fig)
        written.append(out / f"{metric}.png")
    return written
