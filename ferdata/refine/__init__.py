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

The package: :mod:`~ferdata.refine.rules` (pure numpy rules: folds, carves, stop rule, suspect
rules, the guard), :mod:`~ferdata.refine.config` (:class:`RefineConfig`, :class:`RefineResult`),
:mod:`~ferdata.refine.loop` (the loop, its resume state, the comparison trainings, :func:`refine`)
and :mod:`~ferdata.refine.outputs` (the refined dataset, the tables, summary.md).

Example:
    >>> from ferdata.refine import RefineConfig, refine
    >>> result = refine("fer2013", "fer2013-refine", RefineConfig(rounds=5))   # doctest: +SKIP
    >>> result.rounds[-1]["val_accuracy"]                                      # doctest: +SKIP
    0.97
"""

from __future__ import annotations

from ferdata.refine.config import MODE_DEFAULTS, MODES, RefineConfig, RefineResult, auto_epochs
from ferdata.refine.loop import STATE_FILE, STATE_FORMAT, refine

# private names the tests and benchmarks import from ferdata.refine
from ferdata.refine.loop import _Run as _Run
from ferdata.refine.loop import _Trainer as _Trainer
from ferdata.refine.loop import _with_labels as _with_labels
from ferdata.refine.outputs import STEP_NAME, distribution_rows, summary_markdown, summary_notes, write_dataset, write_tables
from ferdata.refine.rules import (
    MIN_ACCURACY_OVER_CHANCE,
    RULES,
    carve,
    channel_temperature,
    class_precision,
    confident_thresholds,
    confusion,
    error_posterior,
    expected_f1_cut,
    find_suspects,
    flag_row,
    group_folds,
    guard_check,
    judge,
    label_scores,
    noise_joint,
    refined_labels,
    stop_reason,
    stratified_folds,
)
from ferdata.split import stratified_split  # re-exported: it was importable from ferdata.refine

__all__ = [
    "MIN_ACCURACY_OVER_CHANCE",
    "MODES",
    "MODE_DEFAULTS",
    "RULES",
    "STATE_FILE",
    "STATE_FORMAT",
    "STEP_NAME",
    "RefineConfig",
    "RefineResult",
    "auto_epochs",
    "carve",
    "channel_temperature",
    "class_precision",
    "confident_thresholds",
    "confusion",
    "distribution_rows",
    "error_posterior",
    "expected_f1_cut",
    "find_suspects",
    "flag_row",
    "group_folds",
    "guard_check",
    "judge",
    "label_scores",
    "noise_joint",
    "refine",
    "refined_labels",
    "stop_reason",
    "stratified_folds",
    "stratified_split",
    "summary_markdown",
    "summary_notes",
    "write_dataset",
    "write_tables",
]
