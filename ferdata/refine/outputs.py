"""What a refinement run writes: the refined dataset directory, the tables and the summary.

* :func:`write_dataset` -- ``RUN/dataset``: the input with its pool splits relabelled, pruned or
  flagged (the columns of :mod:`ferdata.columns`' refine section, or the rejects ledger), plus the
  manifest entry of the ``refine`` step;
* :func:`write_tables` -- ``rounds.csv``, ``distribution.csv``, ``comparison.csv`` and ``summary.md``
  (paper 000's Tables 5, 6 and 7, through :func:`summary_markdown`);
* per round / per comparison training: confusion matrix CSV + PNG, learning curves, the model.

Example:
    >>> print(summary_markdown([], [], [], title="t").splitlines()[0])
    # t
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ferdata.columns import (
    FLAG_COLUMNS,
    LABEL_CONFIDENCE,
    LABEL_DISAGREEMENT,
    LABEL_MARGIN,
    LABEL_ORIGINAL,
    RELABEL_CONFIDENCE,
    RELABELED,
    SUSPECT_LABEL,
    TOP1_CONFIDENCE,
    TOP1_LABEL,
    TOP2_CONFIDENCE,
    TOP2_LABEL,
)
from ferdata.dataset import REJECT_DETAILS, REJECT_REASON
from ferdata.refine.rules import ACTIONS, flag_row, guard_statement, label_scores

if TYPE_CHECKING:
    from ferdata.refine.loop import _Run
    from ferdata.steps import StepOutput

logger = logging.getLogger(__name__)

STEP_NAME = "refine"


# ---------------------------------------------------------------- the refined dataset

def _annotate_batch(batch: dict[str, list], indices: list[int], *, probs: np.ndarray, suspects: np.ndarray,
                    mode: str) -> dict[str, list]:
    """Per-row result of the final model for one batch of a refined split (``suspects``: the judged mask)."""
    rows = []
    for label, i in zip(batch["label"], indices, strict=True):
        row = flag_row(label, probs[i])
        row[SUSPECT_LABEL] = bool(suspects[i])
        row[LABEL_MARGIN] = float(label_scores([label], probs[i][None, :])[1][0])
        rows.append(row)
    if mode == "relabel":
        new = [r["predicted"] if r[SUSPECT_LABEL] else int(lab) for lab, r in zip(batch["label"], rows, strict=True)]
        return {LABEL_ORIGINAL: list(batch["label"]), "label": new,
                RELABEL_CONFIDENCE: [r[TOP1_CONFIDENCE] for r in rows],
                RELABELED: [n != int(lab) for n, lab in zip(new, batch["label"], strict=True)]}
    if mode == "prune":
        reasons = [LABEL_DISAGREEMENT if r[SUSPECT_LABEL] else None for r in rows]
        details = [json.dumps({"label": int(lab), "predicted": r["predicted"], "confidence": round(r[TOP1_CONFIDENCE], 4),
                               LABEL_CONFIDENCE: round(r[LABEL_CONFIDENCE], 4),
                               "margin": round(r[LABEL_MARGIN], 4)}) if r[SUSPECT_LABEL] else None
                   for lab, r in zip(batch["label"], rows, strict=True)]
        return {REJECT_REASON: reasons, REJECT_DETAILS: details}
    return {key: [r[key] for r in rows] for key in FLAG_COLUMNS}


def _new_features(mode: str, class_label: Any) -> dict[str, Any]:
    """Features of the columns a mode adds (so every split has the same schema)."""
    import datasets

    score, flag = datasets.Value("float32"), datasets.Value("bool")
    if mode == "relabel":
        return {"label": class_label, LABEL_ORIGINAL: class_label, RELABEL_CONFIDENCE: score, RELABELED: flag}
    if mode == "flag":
        return {SUSPECT_LABEL: flag, LABEL_CONFIDENCE: score, LABEL_MARGIN: score, TOP1_LABEL: class_label,
                TOP1_CONFIDENCE: score, TOP2_LABEL: class_label, TOP2_CONFIDENCE: score}
    return {}


def _untouched_batch(batch: dict[str, list], *, mode: str) -> dict[str, list]:
    """The same columns for a split that is not refined: labels kept, nothing suspected."""
    n = len(batch["label"])
    if mode == "relabel":
        return {LABEL_ORIGINAL: list(batch["label"]), RELABEL_CONFIDENCE: [None] * n, RELABELED: [False] * n}
    return {SUSPECT_LABEL: [False] * n, **{key: [None] * n for key in FLAG_COLUMNS[1:]}}


def write_dataset(run: _Run, probs: np.ndarray, *, num_proc: int | None = None) -> Path:
    """RUN/dataset: the input dataset with the pool splits relabelled, pruned or flagged.

    The ``refine`` step runs through :func:`ferdata.steps.run_step` and is written by the one commit
    path (:func:`ferdata.commit.commit`), like every step: pruned rows go to the rejects ledger
    (reason ``label_disagreement``) with their thumbnail and lineage (``root_id``, ``parent_id``),
    after the input's ledger, and the step's entry is appended to the input's manifest.
    """
    from ferdata.commit import Chain, commit
    from ferdata.steps import Step, StepContext, run_step

    c = run.config
    suspects, guard = run.judge(probs)

    def annotate(data: Any, config: Any, ctx: StepContext) -> StepOutput:
        return _annotated(run, probs, suspects, guard, num_proc=ctx.num_proc)

    step = Step(STEP_NAME, annotate, type(c), source=False, summary="Flag, prune or relabel the rows of the pool splits.")
    # training ran in this process, so TensorFlow is loaded: run_step forks no workers (safe_num_proc)
    ctx = StepContext(num_proc=num_proc or 1, seed=c.seed)
    result, entry = run_step(step, run.dd, c, ctx)
    chain = Chain.of(run.source)
    chain.add(result, entry)
    return commit(result.data, run.run_dir / "dataset", chain, overwrite=True, num_proc=ctx.num_proc)


def _annotated(run: _Run, probs: np.ndarray, suspects: np.ndarray, guard: Any, *, num_proc: int) -> StepOutput:
    """The refine step's output: refined splits annotated by the final model's ``probs`` and the judged
    ``suspects``, untouched splits given the same columns, pruned rows as ledger rows."""
    import datasets

    from ferdata.dataset import partition_rejects
    from ferdata.steps import StepOutput

    c = run.config
    class_label = run.dd[run.pool_splits[0]].features["label"]
    splits = {}
    for split, ds in run.dd.items():
        if split in run.pool_splits:
            lo, hi = run.offsets[split], run.offsets[split] + len(ds)
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
    info = {"mode": c.mode, "relabelled_splits": run.pool_splits, "untouched_splits": run.untouched_splits,
            "rounds": len(run.state["rounds"]), "stop_reason": run.state["stop_reason"],
            "heldout": run.heldout_name, "run_dir": str(run.run_dir.resolve()), "guard": guard,
            "note": (f"labels of {', '.join(run.untouched_splits)} were never changed" if run.untouched_splits
                     else "every split was refined, test included: scores on it are optimistic")}
    return StepOutput(dd, rejects, info=info)


# ---------------------------------------------------------------- tables

def distribution_rows(names: Sequence[str], labels: np.ndarray, new_labels: np.ndarray, keep: np.ndarray,
                      final_set: np.ndarray, suspects: np.ndarray | None = None) -> list[dict[str, Any]]:
    """distribution.csv (paper 000, Table 6): per class the original, flagged, refined and last-round-set counts.

    ``refined`` counts the rows of the refined dataset (``keep``: every row in flag mode, which
    changes nothing); ``flagged`` the suspects acted on, by their given class.

    Example:
        >>> rows = distribution_rows(["a", "b"], np.array([0, 1, 1]), np.array([0, 0, 1]), np.ones(3, bool),
        ...                          np.array([0, 2]), np.array([False, True, False]))
        >>> [(r["class"], r["original"], r["flagged"], r["refined"], r["last_round_set"]) for r in rows]
        [('a', 1, 0, 2, 1), ('b', 2, 1, 1, 1), ('total', 3, 1, 3, 2)]
    """
    suspects = np.zeros(len(labels), bool) if suspects is None else np.asarray(suspects, bool)
    rows = []
    for i, name in enumerate(names):
        rows.append({"class": name, "original": int(np.sum(labels == i)), "flagged": int(np.sum(suspects & (labels == i))),
                     "refined": int(np.sum((new_labels == i) & keep)),
                     "last_round_set": int(np.sum(labels[final_set] == i))})
    rows.append({"class": "total", "original": int(len(labels)), "flagged": int(suspects.sum()), "refined": int(keep.sum()),
                 "last_round_set": int(len(final_set))})
    return rows


def round_rows(rounds: Sequence[dict[str, Any]], *, mode: str, guard: dict[str, Any] | None = None
               ) -> list[dict[str, Any]]:
    """rounds.csv's rows (paper 000, Table 5) in the words of the mode, the verdict on the last row.

    ``relabel`` keeps the paper's ``kept``/``removed`` (rows that go on to the next round or not);
    ``flag`` and ``prune`` say ``agree``/``disagree`` (prediction equal to the given label or not),
    since nothing is removed by a round. The last row adds ``candidates`` (suspects by the rule),
    the mode's action (``flagged``, ``pruned`` or ``relabelled``: rows acted on), ``guard``
    (``refused``, ``overridden`` with ``--force``, or empty) and ``guard_statement``
    (:func:`ferdata.refine.rules.guard_statement`: what would have been done, and why not).

    Example:
        >>> round_rows([{"round": 1, "kept": 8, "removed": 2}], mode="flag",
        ...            guard={"candidates": 2, "suspects": 2})[0]
        {'round': 1, 'agree': 8, 'disagree': 2, 'candidates': 2, 'flagged': 2, 'guard': '', 'guard_statement': ''}
    """
    rows = []
    for r in rounds:
        row = dict(r)
        if mode != "relabel":
            row = {("agree" if k == "kept" else "disagree" if k == "removed" else k): v for k, v in row.items()}
        rows.append(row)
    if rows and guard is not None:
        verdict = ("overridden" if guard.get("forced") else "refused") if guard.get("triggered") else ""
        rows[-1].update({"candidates": int(guard.get("candidates", 0)), ACTIONS[mode]: int(guard.get("suspects", 0)),
                         "guard": verdict, "guard_statement": guard_statement(guard, mode=mode)})
    return rows


def result_line(guard: dict[str, Any], *, mode: str) -> str:
    """The terminal's verdict line: rows acted on, the guard's refusal in short, the model's accuracy.

    Example:
        >>> result_line({"suspects": 0, "candidates": 7, "rows": 10, "rule": "argmax", "triggered": True,
        ...              "accuracy": 0.2, "chance": 0.25, "out_of_sample": True}, mode="flag").split("),")[0]
        'flagged: 0 of 10 rows (argmax rule; the guard refused 7 candidates'
    """
    refused = (f"; the guard refused {guard.get('candidates', 0)} candidates" if guard.get("triggered")
               and not guard.get("forced") else "; guard overridden (--force)" if guard.get("triggered") else "")
    return (f"{ACTIONS[mode]}: {guard.get('suspects', 0)} of {guard.get('rows', 0)} rows ({guard.get('rule')} rule"
            f"{refused}), model accuracy on the given labels {guard.get('accuracy', 0):.4f} "
            f"({'out-of-sample' if guard.get('out_of_sample') else 'in-sample'}), chance {guard.get('chance', 0):.4f}")


def round_line(row: dict[str, Any], *, mode: str) -> str:
    """One line per finished round for the terminal, in the words of the mode.

    Example:
        >>> round_line({"round": 1, "total": 10, "val_accuracy": 0.5, "kept": 8, "stop": ""}, mode="flag")
        'round 1: 10 images, val accuracy 0.5000, the model agrees with 8 given labels'
    """
    done = (f"kept {row['kept']}" if mode == "relabel" else f"the model agrees with {row['kept']} given labels")
    return (f"round {row['round']}: {row['total']} images, val accuracy {row['val_accuracy']:.4f}, {done}"
            + (f", stop: {row['stop']}" if row.get("stop") else ""))


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
    kept = "kept" if any("kept" in r for r in rounds) else "agree"
    action = next((a for a in ACTIONS.values() if any(a in r for r in rounds)), "")
    lines += ["", "## Refinement rounds (paper 000, Table 5)", "",
              f"| Training | Images (train) | Images (val) | Total | Accuracy (val) | {kept.capitalize()} | Stop |"
              + (f" Candidates | {action.capitalize()} | Guard |" if action else ""),
              "|---|---|---|---|---|---|---|" + ("---|---|---|" if action else "")]
    for r in rounds:
        lines.append(f"| {r['round']} | {r['images_train']} | {r['images_val']} | {r['total']} | "
                     f"{_fmt(r['val_accuracy'])} | {r[kept]} | {r['stop'] or ''} |"
                     + (f" {r.get('candidates', '')} | {r.get(action, '')} | {r.get('guard', '')} |" if action else ""))
    classes = [d for d in distribution if d["class"] != "total"]
    total = next((d for d in distribution if d["class"] == "total"), None)
    header = " | ".join(d["class"].capitalize() for d in classes)
    lines += ["", "## Class distribution (paper 000, Table 6)", "", f"| Dataset | {header} | Total |",
              "|---" * (len(classes) + 2) + "|"]
    for key in ("original", "flagged", "refined"):
        if classes and key not in classes[0]:
            continue
        cells = " | ".join(str(d[key]) for d in classes)
        lines.append(f"| {key} | {cells} | {total[key] if total else ''} |")
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


def summary_notes(run: _Run, guard: dict[str, Any], *, compare_skipped: bool = False) -> list[str]:
    """The bullet points above summary.md's tables: input, options, stop, splits, suspects and the guard."""
    config = run.config
    predictions = f"out-of-sample, {config.cv}-fold" if config.out_of_sample else "in-sample (paper)"
    notes = [f"input: {run.source}", f"mode: {config.mode}, model: {config.model}, epochs: {config.epochs}, "
             f"predictions: {predictions}",
             f"stopped after round {run.state['final_round']}: {run.state['stop_reason']}",
             f"refined splits: {', '.join(run.pool_splits)}; untouched: {', '.join(run.untouched_splits) or 'none'}"]
    if "test" in run.pool_splits:
        notes.append("WARNING: the test split was refined too (--include-test); scores measured on it are optimistic")
    notes.append(f"{ACTIONS[config.mode]}: {guard['suspects']} of {len(run.labels)} rows (rule: {guard['rule']}); "
                 f"model accuracy on the given labels {guard['accuracy']:.4f} "
                 f"({'out-of-sample' if config.out_of_sample else 'in-sample'}), chance {guard['chance']:.4f}")
    if guard["triggered"]:
        notes.append(f"WARNING (guard): {guard_statement(guard, mode=config.mode)}")
    if compare_skipped:
        notes.append(f"comparison: not trained, nothing was {ACTIONS[config.mode]} (the refined training data "
                     "equals the original)")
    return notes


def write_tables(out: Path, rounds: Sequence[dict[str, Any]], distribution: Sequence[dict[str, Any]],
                 comparison: Sequence[dict[str, Any]], *, title: str, notes: Sequence[str]) -> None:
    """rounds.csv, distribution.csv, comparison.csv and summary.md of a run directory."""
    _write_csv(out / "rounds.csv", rounds)
    _write_csv(out / "distribution.csv", distribution)
    _write_csv(out / "comparison.csv", comparison)
    (out / "summary.md").write_text(summary_markdown(rounds, distribution, comparison, title=title, notes=notes),
                                    encoding="utf-8")
