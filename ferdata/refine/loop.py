"""The refinement loop and its resume state: plan the pool, run the rounds, judge, compare.

:class:`_Run` holds one run: which splits are refined and which are held out (``_plan``), the
``state.json`` that lets a killed run resume after its last finished round, the rounds themselves
(in-sample like paper 000, or out-of-sample K-fold) and the final comparison trainings.
:func:`refine` drives it and hands the results to :mod:`ferdata.refine.outputs`. Every training
is built from one :class:`ferdata.train.config.TrainConfig` (:meth:`RefineConfig.train_config`).

Example:
    >>> from ferdata.refine import RefineConfig, refine
    >>> refine("fer2013", "run", RefineConfig(mode="flag"))     # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ferdata.dataset import EVAL_SPLITS
from ferdata.errors import OutputExists, UsageError
from ferdata.refine.config import RefineConfig, RefineResult, auto_epochs
from ferdata.refine.outputs import (
    _save_model,
    _write_confusion,
    _write_histories,
    distribution_rows,
    round_line,
    round_rows,
    summary_notes,
    write_dataset,
    write_tables,
)
from ferdata.refine.rules import (
    carve,
    class_precision,
    confusion,
    group_folds,
    guard_statement,
    judge,
    refined_labels,
    stop_reason,
)

if TYPE_CHECKING:
    import datasets

    from ferdata.train.config import TrainConfig

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"
STATE_FORMAT = "ferdata-refine/1"
#: Options that only change what happens after the loop: a finished run can be finished again with
#: other values (e.g. ``--mode prune`` on a copy of a relabel run) without retraining the rounds.
_FINAL_PHASE_OPTIONS = ("mode", "compare", "rule", "top", "max_flag_rate", "force")


# ---------------------------------------------------------------- training glue (ferdata.train)

@dataclass
class _Trainer:
    """Builds, trains and predicts with the configured CNN through the ferdata.train API.

    ``train``: the run's :class:`~ferdata.train.config.TrainConfig` (model, epochs, batch size,
    learning rate, augmentation, patience, seed, input), made from ``config``.
    """

    config: RefineConfig
    image_size: int
    channels: int
    num_classes: int
    train: TrainConfig = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.train = self.config.train_config(image_size=self.image_size, channels=self.channels)

    def _tf(self, ds: datasets.Dataset) -> Any:
        """Batches of ``ds`` in order, neither shuffled nor augmented (for predictions)."""
        from ferdata.train import to_tf_dataset

        return to_tf_dataset(ds, image_size=self.image_size, channels=self.channels,
                             batch_size=self.train.batch_size, shuffle=False, seed=self.train.seed,
                             augment="none", num_classes=self.num_classes)

    def fit(self, train: datasets.Dataset, val: datasets.Dataset, out_dir: Path, *, clock: _Clock | None = None,
            label: str = "") -> tuple[Any, dict[str, list[float]]]:
        """Train from scratch (same seed every time) and return the best-val-acc model and its history.

        With ``clock``, one line per epoch (``label``, metrics, elapsed, ETA) replaces the epoch bar.
        """
        from ferdata.train import fit_model
        from ferdata.train.run import prepare_training

        t = self.train
        model, train_ds, val_ds = prepare_training(t, train, val, num_classes=self.num_classes,
                                                   input_shape=(self.image_size, self.image_size, self.channels))
        result = fit_model(model, train_ds, val_ds, epochs=t.epochs, lr=t.lr, class_weight=None, out_dir=out_dir,
                           patience=t.fit_patience, seed=t.seed, schedule=t.schedule, verbose=0,
                           callbacks=[clock.callback(label)] if clock is not None else None,
                           progress=None if clock is not None else f"{t.model} {out_dir.parent.name}/{out_dir.name}")
        return model, _history_dict(result)

    def predict(self, model: Any, ds: datasets.Dataset) -> np.ndarray:
        """Class probabilities, one row per row of ``ds`` (in order)."""
        from ferdata.train import predict_proba

        if len(ds) == 0:
            return np.zeros((0, self.num_classes), dtype=np.float32)
        batches = self._tf(ds)
        probs = np.asarray(predict_proba(model, batches), dtype=np.float32)
        if self.config.tta:
            import tensorflow as tf

            mirrored = batches.map(lambda x, *rest: (tf.image.flip_left_right(x), *rest))
            probs = (probs + np.asarray(predict_proba(model, mirrored), dtype=np.float32)) / 2
        return probs


class _Clock:
    """Progress of a round's trainings: one line per epoch and per finished fold on stderr, with an ETA.

    The ETA is the round's wall time per trained epoch so far times the epochs still planned (each
    training's ``epochs``; early stopping only shortens it, so it is an upper estimate). Nothing
    is printed under ``-q`` (or with progress bars off).

    Example:
        >>> clock = _Clock(trainings=5, epochs=20)
        >>> clock.line("fold 1/5 epoch 1/20")  # doctest: +SKIP
    """

    def __init__(self, *, trainings: int, epochs: int) -> None:
        self.epochs, self.planned, self.done = epochs, trainings * epochs, 0
        self.start = time.perf_counter()

    def skip(self, trainings: int = 1) -> None:
        """Trainings that were loaded from a killed run's finished folds: nothing left to do for them."""
        self.planned -= trainings * self.epochs

    def eta(self) -> str:
        if not self.done:
            return "ETA unknown"
        left = (time.perf_counter() - self.start) / self.done * max(0, self.planned - self.done)
        return f"ETA {_duration(left)}"

    def line(self, text: str) -> None:
        from ferdata.progress import is_quiet, progress_bars_disabled

        if is_quiet() or progress_bars_disabled():
            return
        import sys

        sys.stderr.write(f"refine {text} | {_duration(time.perf_counter() - self.start)} elapsed, {self.eta()}\n")
        sys.stderr.flush()

    def callback(self, label: str) -> Any:
        """A Keras callback that counts epochs and prints ``label epoch E/N: metrics`` after each."""
        import keras

        clock = self

        class EpochLine(keras.callbacks.Callback):
            ran = 0

            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                logs = logs or {}
                clock.done += 1
                self.ran += 1
                metrics = ", ".join(f"{k} {logs[k]:.4f}" for k in ("loss", "accuracy", "val_accuracy") if k in logs)
                clock.line(f"{label} epoch {epoch + 1}/{clock.epochs}: {metrics}")

            def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
                clock.planned -= max(0, clock.epochs - self.ran)   # stopped early: those epochs will not run

        return EpochLine()


def _duration(seconds: float) -> str:
    """``1h02m``, ``12m05s`` or ``42s``."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


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

        # a copy: the run resolves its own epochs from its rows, and the caller's config stays reusable
        self.source, self.run_dir, self.config = source, run_dir, dataclasses.replace(config)
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
        if c.epochs is None:   # flag/prune's training budget: epochs from the rows each model trains on
            k = int(c.cv or 1)
            c.epochs = auto_epochs(int(len(self.work) * (1 - 1 / k if k > 1 else 1) * (1 - c.val_fraction)))
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
        if rdir.exists() and not c.out_of_sample:  # a round killed half-way: start it again
            shutil.rmtree(rdir)                     # (K-fold rounds keep their finished folds: _fold)
        rdir.mkdir(parents=True, exist_ok=True)
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
        model, history = self.trainer.fit(self.pool.select(current[tr]), self.pool.select(current[va]), rdir / "train",
                                          clock=_Clock(trainings=1, epochs=int(c.epochs or 1)), label=f"round {k}")
        probs_all = self.trainer.predict(model, self.pool)
        probs_current = probs_all[current]
        val_acc = float(np.mean(probs_current[va].argmax(1) == labels[va])) if len(va) else 0.0
        _save_model(model, rdir / "model.keras")
        info = {"images_train": int(len(tr)), "images_val": int(len(va)), "val_accuracy": round(val_acc, 4)}
        return probs_current, probs_all, info, [history]

    def _round_cv(self, current: np.ndarray, labels: np.ndarray, rdir: Path
                  ) -> tuple[np.ndarray, np.ndarray, dict[str, Any], list[dict[str, list[float]]]]:
        c = self.config
        k_folds = int(c.cv or 2)
        folds = group_folds(labels, k_folds, seed=c.seed, groups=self._groups(current))
        outside = np.setdiff1d(np.arange(len(self.pool)), current)
        probs_current = np.zeros((len(current), self.num_classes), dtype=np.float32)
        probs_outside = np.zeros((len(outside), self.num_classes), dtype=np.float32)
        sizes_train, sizes_val, val_accs, histories = [], [], [], []
        clock = _Clock(trainings=k_folds, epochs=int(c.epochs or 1))
        for f in range(k_folds):
            fold = self._fold(f, k_folds, folds, current, labels, outside, rdir / f"fold_{f}", clock)
            probs_current[folds == f] = fold["held"]
            if len(outside):
                probs_outside += fold["outside"] / k_folds
            val_accs.append(float(fold["val_accuracy"]))
            sizes_train.append(int(fold["images_train"]))
            sizes_val.append(int(fold["images_val"]))
            histories.append(fold["history"])
        probs_all = np.zeros((len(self.pool), self.num_classes), dtype=np.float32)
        probs_all[current] = probs_current
        probs_all[outside] = probs_outside
        info = {"images_train": int(round(np.mean(sizes_train))), "images_val": int(round(np.mean(sizes_val))),
                "val_accuracy": round(float(np.mean(val_accs)), 4)}
        return probs_current, probs_all, info, histories

    def _fold(self, f: int, k_folds: int, folds: np.ndarray, current: np.ndarray, labels: np.ndarray,
              outside: np.ndarray, fdir: Path, clock: _Clock) -> dict[str, Any]:
        """Train fold ``f`` and predict its held-out rows (and the rows outside the set), or load a finished fold.

        A finished fold is saved as ``fold_F/fold.npz`` + ``fold.json`` (written last, atomically), keyed
        by the round's rows and fold assignment, so a killed run resumes after its last finished fold.
        """
        c = self.config
        key = hashlib.sha256(current.astype(np.int64).tobytes() + folds.astype(np.int64).tobytes()).hexdigest()[:16]
        done = fdir / "fold.json"
        if done.exists():
            meta = json.loads(done.read_text(encoding="utf-8"))
            if meta.get("key") == key:
                clock.skip()
                clock.line(f"fold {f + 1}/{k_folds}: finished before the run was stopped, loaded")
                arrays = np.load(fdir / "fold.npz")
                return {**meta, "held": arrays["held"], "outside": arrays["outside"]}
        if fdir.exists():
            shutil.rmtree(fdir)
        held = np.flatnonzero(folds == f)
        fit_pos = np.flatnonzero(folds != f)
        tr, va = carve(labels[fit_pos], c.val_fraction, seed=c.seed * 1000 + f, groups=self._groups(current[fit_pos]))
        tr, va = fit_pos[tr], fit_pos[va]
        model, history = self.trainer.fit(self.pool.select(current[tr]), self.pool.select(current[va]), fdir,
                                          clock=clock, label=f"fold {f + 1}/{k_folds}")
        probs_held = self.trainer.predict(model, self.pool.select(current[held]))
        probs_outside = (self.trainer.predict(model, self.pool.select(outside)) if len(outside)
                         else np.zeros((0, self.num_classes), dtype=np.float32))
        pv = self.trainer.predict(model, self.pool.select(current[va]))
        val_acc = float(np.mean(pv.argmax(1) == labels[va])) if len(va) else 0.0
        del model
        meta = {"key": key, "fold": f, "images_train": int(len(tr)), "images_val": int(len(va)),
                "val_accuracy": val_acc, "history": history}
        np.savez(fdir / "fold.npz", held=probs_held, outside=probs_outside)
        tmp = fdir / ".fold.json.tmp"
        tmp.write_text(json.dumps(meta), encoding="utf-8")
        os.replace(tmp, done)
        clock.line(f"fold {f + 1}/{k_folds} done: val accuracy {val_acc:.4f}, "
                   f"held-out accuracy {float(np.mean(probs_held.argmax(1) == labels[held])):.4f}")
        return {**meta, "held": probs_held, "outside": probs_outside}

    # -- after the loop

    def final_probs(self) -> np.ndarray:
        """Class probabilities of every pool row from the last round's model(s)."""
        return np.load(self.run_dir / "rounds" / f"round_{self.state['final_round']}" / "probs.npy")

    def judge(self, probs: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """(suspect mask of every pool row, the guard's verdict); the guard empties the mask unless forced."""
        cached = getattr(self, "_judged", None)
        if cached is not None:
            return cached
        c = self.config
        suspects, guard = judge(self.labels, probs, rule=str(c.rule), top=c.top, classes=len(self.present),
                                max_flag_rate=c.max_flag_rate, out_of_sample=c.out_of_sample, force=c.force)
        guard["statement"] = guard_statement(guard, mode=c.mode)
        if guard["triggered"]:  # said once, here; the summary, rounds.csv and the manifest repeat the same sentence
            logger.warning("%s", guard["statement"])
        self._judged = (suspects, guard)
        return self._judged

    def refined_labels(self, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(labels after refinement for every pool row, mask of rows kept in the refined training data)."""
        suspects, _ = self.judge(probs)
        return refined_labels(self.labels, probs, suspects, mode=self.config.mode)

    def distribution(self, probs: np.ndarray) -> list[dict[str, Any]]:
        """distribution.csv's rows: per class the original, flagged, refined (RUN/dataset) and last-round-set counts."""
        suspects, _ = self.judge(probs)
        new_labels, keep = self.refined_labels(probs)
        if self.config.mode == "flag":  # flag changes nothing: the refined dataset holds every row
            keep = np.ones_like(keep)
        final_set = np.load(self.run_dir / "rounds" / f"round_{self.state['final_round']}" / "current.npy")
        return distribution_rows(self.names, self.labels, new_labels, keep, final_set, suspects)

    def compare(self, probs: np.ndarray) -> list[dict[str, Any]]:
        """Train the same CNN on the original and the refined training data; evaluate on the held-out split."""
        c = self.config
        new_labels, keep = self.refined_labels(probs)
        held_labels = np.asarray(self.heldout["label"], dtype=np.int64)
        rows = []
        # prune and flag train on the same rows (those the model agrees with): one cached training serves both
        digest = hashlib.sha256(np.packbits(keep).tobytes() + new_labels.astype(np.int64).tobytes()).hexdigest()[:12]
        refined_key = f"refined-{'relabel' if c.mode == 'relabel' else 'agree'}-{digest}"
        refined_name = "without flagged rows" if c.mode == "flag" else "refined"
        variants = [("original", "original", self.work, self.labels[self.work]),
                    (refined_name, refined_key, self.work[keep[self.work]], new_labels[self.work[keep[self.work]]])]
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
            model, history = self.trainer.fit(data.select(tr), data.select(va), cdir / "train",
                                              clock=_Clock(trainings=1, epochs=int(c.epochs or 1)),
                                              label=f"comparison: {name} data")
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
            logger.info("%s", round_line(row, mode=config.mode))
            if on_round is not None:
                on_round(row)
        probs = run.final_probs()
        _, guard = run.judge(probs)
        changed = guard["suspects"] > 0   # nothing flagged, pruned or relabelled: no comparison to train
        comparison = run.compare(probs) if config.compare and changed else []
        distribution = run.distribution(probs)
        dataset_dir = write_dataset(run, probs, num_proc=num_proc)
    rounds = round_rows(run.state["rounds"], mode=config.mode, guard=guard)
    write_tables(out, rounds, distribution, comparison, title=f"ferdata refine: {source.name}",
                 notes=summary_notes(run, guard, compare_skipped=config.compare and not changed))
    run.state["done"] = True
    run._save_state()
    return RefineResult(out, dataset_dir, rounds, run.state["stop_reason"], comparison, distribution, guard)
