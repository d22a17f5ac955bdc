"""The pure rules of the refinement loop: numpy functions over labels and probability matrices.

Nothing here trains, reads or writes: folds and carves of row positions, the confusion matrix and
per-class precision, the loop's stop rule, the suspect rules (``argmax``: paper 000;
``posterior``: the probability that the given label is wrong under confident learning's noise
estimate, the model calibrated through it, cut where the expected F1 is highest; ``confident``:
confident learning; ``top=K`` by normalised margin) and the guard that decides whether a model has
learnt enough to judge labels.

Example:
    >>> import numpy as np
    >>> find_suspects([0, 1], np.array([[0.9, 0.1], [0.8, 0.2]]), rule="argmax").tolist()
    [False, True]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ferdata.columns import (
    LABEL_CONFIDENCE,
    SUSPECT_LABEL,
    TOP1_CONFIDENCE,
    TOP1_LABEL,
    TOP2_CONFIDENCE,
    TOP2_LABEL,
)
from ferdata.errors import UsageError
from ferdata.split import stratified_split

#: How a row becomes a suspect: predicted != given (paper 000), the error posterior cut at the best
#: expected F1, or the confident-learning rule.
RULES = ("argmax", "posterior", "confident")
#: The guard: out-of-sample accuracy must reach this multiple of chance (1 / classes) to judge labels.
MIN_ACCURACY_OVER_CHANCE = 2.0


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
        SUSPECT_LABEL: top1 != int(label),
        LABEL_CONFIDENCE: float(probs[int(label)]),
        TOP1_LABEL: top1,
        TOP1_CONFIDENCE: float(probs[top1]),
        TOP2_LABEL: top2,
        TOP2_CONFIDENCE: float(probs[top2]),
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


def _confident_classes(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(reaches some threshold, the most probable class among those reaching theirs) of every row."""
    above = probs >= confident_thresholds(labels, probs)[None, :]
    return above.any(axis=1), np.where(above, probs, -1.0).argmax(axis=1)


def noise_joint(labels: Sequence[int] | np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Estimated joint of (given label, true label), confident learning's calibrated confident joint.

    A row labelled i counts towards (i, j) when class j is the most probable of the classes that
    reach their threshold (:func:`confident_thresholds`); rows reaching none are not counted. Each
    given label's row is then scaled to that label's share of the rows (Northcutt et al. 2021,
    "calibration"), so the matrix sums to 1; ``1 - trace`` is the estimated noise rate. A given
    label with no counted row keeps its share on the diagonal.

    Example:
        >>> noise_joint([0, 0, 1, 1], np.array([[.9, .1], [.1, .9], [.1, .9], [.3, .7]])).round(2).tolist()
        [[0.25, 0.25], [0.0, 0.5]]
    """
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    k = probs.shape[1]
    counts = np.zeros((k, k))
    hit, confident_class = _confident_classes(labels, probs)
    np.add.at(counts, (labels[hit], confident_class[hit]), 1.0)
    share = np.bincount(labels, minlength=k)[:k] / max(1, len(labels))
    rows = counts.sum(axis=1)
    joint = np.where(rows[:, None] > 0, counts / np.maximum(rows, 1)[:, None], np.eye(k)) * share[:, None]
    return joint


#: Temperatures tried by :func:`channel_temperature` (log-spaced; below 1 sharpens, above 1 softens).
TEMPERATURES = np.exp(np.linspace(np.log(0.01), np.log(10.0), 121))


def _given_if_true(joint: np.ndarray) -> np.ndarray:
    """``P(given = i | true = y)`` as ``[i, y]`` from a joint (a true class no row reaches: identity)."""
    true_total = joint.sum(axis=0)
    return np.where(true_total > 0, joint / np.where(true_total > 0, true_total, 1.0), np.eye(len(joint)))


def _tempered(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log p / T)``, row by row."""
    z = np.log(np.clip(probs, 1e-12, 1.0)) / float(temperature)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def channel_temperature(labels: Sequence[int] | np.ndarray, probs: np.ndarray,
                        given_if_true: np.ndarray | None = None) -> float:
    """The temperature that makes the model's probabilities, sent through the estimated noise channel,
    most likely to produce the labels at hand: ``max_T sum log sum_y p_T(y | x) P(given | true = y)``
    over :data:`TEMPERATURES`.

    A model's class probabilities are judged against the *true* class, but only noisy labels are
    there to calibrate them on; through the channel (:func:`noise_joint`) the two meet. A model
    right about the classes but timid (``p`` ~ 0.4 for the right class) is sharpened (T < 1), an
    over-confident one softened.

    Example:
        >>> channel_temperature([0, 0, 1, 1], np.array([[.6, .4], [.6, .4], [.4, .6], [.4, .6]])) < 0.1
        True
    """
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if not len(labels):
        return 1.0
    channel = _given_if_true(noise_joint(labels, probs)) if given_if_true is None else given_if_true
    weights = channel[labels, :]
    likelihood = [np.log(np.clip((_tempered(probs, t) * weights).sum(axis=1), 1e-300, None)).sum()
                  for t in TEMPERATURES]
    return float(TEMPERATURES[int(np.argmax(likelihood))])


def error_posterior(labels: Sequence[int] | np.ndarray, probs: np.ndarray, *,
                    temperature: float | None = None) -> np.ndarray:
    """Probability that each row's given label is wrong: the model's class probabilities weighted by
    how often each true class is given this label (:func:`noise_joint`, normalised per true class).

    ``P(true = y | x, given = i) ~ p_T(y | x) * P(given = i | true = y)``; the result is 1 minus it at
    ``y = i``. Where annotators rarely confuse two classes, the model must disagree strongly before a
    row is doubted; where they often do, a weaker disagreement suffices. ``p_T``: the probabilities
    at ``temperature``, by default the one fitted through the channel (:func:`channel_temperature`);
    ``temperature=1`` takes them as they are.

    Example:
        >>> error_posterior([0, 0, 1, 1], np.array([[.9, .1], [.1, .9], [.1, .9], [.3, .7]]),
        ...                 temperature=1).round(2).tolist()
        [0.04, 0.75, 0.0, 0.0]
    """
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if not len(labels):
        return np.zeros(0)
    given_if_true = _given_if_true(noise_joint(labels, probs))
    if temperature is None:
        temperature = channel_temperature(labels, probs, given_if_true)
    weighted = _tempered(probs, temperature) * given_if_true[labels, :]
    total = weighted.sum(axis=1)
    rows = np.arange(len(labels))
    return np.where(total > 0, 1.0 - weighted[rows, labels] / np.where(total > 0, total, 1.0), 0.0)


def expected_f1_cut(scores: np.ndarray) -> np.ndarray:
    """Flag the rows with the highest error probabilities, as many as maximise the expected F1.

    Taking the probabilities as calibrated, flagging the top k expects ``sum(top k)`` hits among
    ``sum(all)`` errors, so F1 ~ 2 * sum(top k) / (k + sum(all)); nothing is flagged when no row
    is likely wrong.

    Example:
        >>> expected_f1_cut(np.array([0.9, 0.1, 0.8, 0.05])).tolist()
        [True, False, True, False]
    """
    scores = np.asarray(scores, dtype=np.float64)
    out = np.zeros(len(scores), dtype=bool)
    if not len(scores) or scores.sum() <= 0:
        return out
    order = np.argsort(-scores, kind="stable")
    f1 = 2.0 * np.cumsum(scores[order]) / (np.arange(1, len(scores) + 1) + scores.sum())
    out[order[:int(f1.argmax()) + 1]] = True
    return out


def find_suspects(labels: Sequence[int] | np.ndarray, probs: np.ndarray, *, rule: str = "confident",
                  top: int | None = None) -> np.ndarray:
    """Which rows look mislabelled, from (ideally out-of-sample) class probabilities.

    * ``argmax``: the predicted class differs from the given one (paper 000);
    * ``posterior``: the probability that the label is wrong (:func:`error_posterior`, the model
      calibrated through the noise channel), cut where the expected F1 is highest
      (:func:`expected_f1_cut`);
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
    if rule == "posterior":
        return expected_f1_cut(error_posterior(labels, probs))
    if rule == "argmax":
        return probs.argmax(axis=1) != labels
    if rule != "confident":
        raise UsageError(f"unknown rule {rule!r}; valid rules: {', '.join(RULES)}")
    hit, confident_class = _confident_classes(labels, probs)
    return hit & (confident_class != labels)


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


def judge(labels: Sequence[int] | np.ndarray, probs: np.ndarray, *, rule: str, top: int | None, classes: int,
          max_flag_rate: float, out_of_sample: bool, force: bool) -> tuple[np.ndarray, dict[str, Any]]:
    """(suspect mask, the guard's verdict): :func:`find_suspects` checked by :func:`guard_check`.

    A triggered guard empties the mask unless ``force``. The verdict adds ``rule`` (or the ``top``
    ranking), ``forced``, ``candidates`` (suspects before the guard) and ``suspects`` (after it).

    Example:
        >>> mask, guard = judge([0, 1, 0, 1], np.eye(2)[[1, 0, 1, 0]], rule="argmax", top=None, classes=2,
        ...                     max_flag_rate=0.5, out_of_sample=True, force=False)
        >>> mask.tolist(), guard["candidates"], guard["suspects"]
        ([False, False, False, False], 4, 0)
    """
    suspects = find_suspects(labels, probs, rule=rule, top=top)
    guard = guard_check(labels, probs, suspects, classes=classes, max_flag_rate=max_flag_rate,
                        out_of_sample=out_of_sample)
    guard.update(rule=rule if top is None else f"top {top} by normalised margin", forced=force,
                 candidates=int(suspects.sum()), rows=int(len(suspects)))
    if guard["triggered"] and not force:
        suspects = np.zeros_like(suspects)
    guard["suspects"] = int(suspects.sum())
    return suspects, guard


#: What a mode does to a suspect row (the verb of outputs and messages).
ACTIONS = {"flag": "flagged", "prune": "pruned", "relabel": "relabelled"}


def guard_statement(guard: dict[str, Any], *, mode: str) -> str:
    """The one sentence that states a guard refusal (or a forced run): what would have been done, and why not.

    Empty when the guard did not trip. Used by the log, the summary, the tables and the report.

    Example:
        >>> _, g = judge([0, 1, 0, 1], np.eye(2)[[1, 0, 1, 0]], rule="argmax", top=None, classes=2,
        ...              max_flag_rate=0.5, out_of_sample=True, force=False)
        >>> guard_statement(g, mode="flag").split(";")[0]
        'refine guard: 4 of 4 rows (100.0%) would have been flagged by the argmax rule'
    """
    if not guard.get("triggered"):
        return ""
    action = ACTIONS.get(mode, "flagged")
    rows, candidates = int(guard.get("rows", 0)), int(guard.get("candidates", 0))
    share = f"{candidates / rows:.1%}" if rows else "0%"
    if guard.get("forced"):
        return (f"refine guard overridden (--force): {candidates} of {rows} rows ({share}) were {action} by the "
                f"{guard.get('rule')} rule, although {guard.get('reason')}")
    return (f"refine guard: {candidates} of {rows} rows ({share}) would have been {action} by the "
            f"{guard.get('rule')} rule; none was, because {guard.get('reason')}. Pass --force to act anyway, "
            "or use a model or more epochs that learn these data")


def refined_labels(labels: np.ndarray, probs: np.ndarray, suspects: np.ndarray, *, mode: str
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(labels after refinement, mask of rows kept in the refined training data) of every row.

    ``relabel`` gives each suspect the predicted class and keeps every row; ``prune`` and ``flag``
    keep the labels and leave the suspects out.

    Example:
        >>> refined_labels(np.array([0, 1]), np.array([[.9, .1], [.8, .2]]), np.array([False, True]),
        ...                mode="relabel")[0].tolist()
        [0, 0]
    """
    pred = probs.argmax(axis=1).astype(np.int64)
    if mode == "relabel":
        return np.where(suspects, pred, labels), np.ones(len(pred), dtype=bool)
    return labels.copy(), ~suspects
