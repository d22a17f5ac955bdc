"""ferdata.train.metrics on scikit-learn gives the same numbers as the formulas it replaced."""

from __future__ import annotations

import numpy as np

from ferdata.train.metrics import classification_report, confusion_matrix


def _reference(t: np.ndarray, p: np.ndarray, c: int) -> tuple[np.ndarray, list[tuple[float, float, float]]]:
    cm = np.zeros((c, c), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    tp, support, predicted = np.diag(cm).astype(float), cm.sum(axis=1), cm.sum(axis=0)
    scores = []
    for i in range(c):
        precision = tp[i] / predicted[i] if predicted[i] else 0.0
        recall = tp[i] / support[i] if support[i] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores.append((precision, recall, f1))
    return cm, scores


def test_same_numbers_as_the_hand_written_formulas() -> None:
    rng = np.random.default_rng(0)
    names = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    for trial in range(40):
        n = int(rng.integers(1, 60))
        t = rng.integers(0, 7 if trial % 3 else 4, n)  # some trials leave classes absent
        p = np.where(rng.random(n) < 0.6, t, rng.integers(0, 7, n))
        cm, scores = _reference(t, p, 7)
        assert (confusion_matrix(t, p, 7) == cm).all()
        report = classification_report(t, p, None, names)
        got = [(r["precision"], r["recall"], r["f1"]) for r in report["per_class"].values()]
        assert got == [tuple(round(x, 4) for x in row) for row in scores]
        present = [f for (_, _, f), s in zip(scores, cm.sum(axis=1), strict=True) if s]
        assert report["macro_f1"] == round(float(np.mean(present)), 4)
    assert confusion_matrix([], [], 3).tolist() == [[0] * 3] * 3
    assert classification_report([], [], None, ["a", "b"])["accuracy"] == 0.0
