"""What ``ferdata train``, ``ferdata evaluate`` and ``ferdata export-tflite`` do, as library calls.

A **run directory** (``RUN/``) holds a trained model and everything needed to judge it:

==========================  ==============================================================
``model.keras``             the model with the best validation-accuracy weights
``labels.json``             the class names, index = output unit
``run.json``                model name, input shape, dataset, seed, options, split notes
``history.csv``             per-epoch loss / accuracy / top-2 / learning rate (train and val)
``accuracy.png``            learning curves, train vs validation (also ``loss.png``)
``confusion.csv``           confusion matrix on the validation split (rows true, cols predicted)
``confusion.png``           the same as a heat map (also ``confusion_normalized.png``)
``metrics.json``            accuracy, top-2, per-class precision / recall / F1 / support, macro F1,
                            inference ms per image, warnings (absent classes)
``seen.parquet``            the ids and root ids of every training and validation row
                            (:mod:`ferdata.train.seen`): ``evaluate`` leaves the training rows out
==========================  ==============================================================
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ferdata.dataset import atomic_dir
from ferdata.errors import InputNotFound, OutputExists, UsageError
from ferdata.train.config import TrainConfig
from ferdata.train.seen import SEEN_FILE, scored_rows, write_seen

logger = logging.getLogger(__name__)

#: the per-row predictions ``evaluate`` writes beside metrics.json
PREDICTIONS_FILE = "predictions.csv"


def stratified_holdout(ds: Any, fraction: float, *, seed: int = 0) -> tuple[Any, Any]:
    """Split a ``Dataset`` into (train, validation) per class, seeded (see :func:`ferdata.split.stratified_split`).

    Example:
        >>> train, val = stratified_holdout(dd["train"], 0.2, seed=0)   # doctest: +SKIP
    """
    from ferdata.split import stratified_split

    if not 0 < fraction < 1:
        raise UsageError(f"validation fraction must be between 0 and 1, got {fraction}")
    rest, part = stratified_split(ds["label"], fraction, seed=seed)
    return ds.select(rest.tolist()), ds.select(part.tolist())


def _parse_size(image_size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, int):
        return (image_size, image_size)
    return (int(image_size[0]), int(image_size[1]))


def _write_json(path: Path, data: Any) -> None:
    with path.open("w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, default=lambda v: v.item() if hasattr(v, "item") else str(v))


def _evaluate_into(model: Any, ds: Any, names: list[str], out: Path, *, batch_size: int, image_size: tuple[int, int],
                   channels: int, label_index: dict[int, int] | None = None, extra: dict[str, Any] | None = None,
                   rows: np.ndarray | None = None) -> dict[str, Any]:
    """Predict a split, write metrics.json + confusion CSV/PNGs into ``out``, return the metrics.

    With ``rows`` (each scored row's position in its split), ``predictions.csv`` lists every
    scored row: ``row, id, true, predicted``.
    """
    from ferdata.train.data import to_tf_dataset
    from ferdata.train.fit import predict_proba
    from ferdata.train.metrics import classification_report, plot_confusion, write_confusion_csv

    tfds = to_tf_dataset(ds, image_size=image_size, channels=channels, batch_size=batch_size,
                         num_classes=len(names), label_index=label_index)
    labels = np.asarray(ds["label"], dtype=np.int64)
    if label_index is not None:
        labels = np.asarray([label_index[int(v)] for v in labels], dtype=np.int64)
    predict_proba(model, tfds.take(1))  # warm-up: graph tracing is not inference time
    start = time.perf_counter()
    probs = predict_proba(model, tfds)
    seconds = time.perf_counter() - start
    report = classification_report(labels, probs.argmax(axis=1), probs, names)
    report["inference_ms_per_image"] = round(1000 * seconds / max(len(labels), 1), 3)
    report.update(extra or {})
    cm = np.asarray(report["confusion_matrix"])
    if rows is not None:
        _write_predictions(out / PREDICTIONS_FILE, rows, ds, labels, probs.argmax(axis=1), names)
    write_confusion_csv(cm, names, out / "confusion.csv")
    plot_confusion(cm, names, out / "confusion.png")
    plot_confusion(cm, names, out / "confusion_normalized.png", normalize=True)
    _write_json(out / "metrics.json", report)
    for warning in report["warnings"]:
        (logger.warning if "no example" in warning else logger.info)(warning)
    return report


def _write_predictions(path: Path, rows: np.ndarray, ds: Any, labels: np.ndarray, predicted: np.ndarray,
                       names: list[str]) -> None:
    """``predictions.csv``: the split position, id, true and predicted class of every scored row."""
    import csv

    ids = ds["id"] if "id" in ds.column_names else [""] * len(labels)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["row", "id", "true", "predicted"])
        for row, row_id, t, p in zip(rows.tolist(), ids, labels.tolist(), predicted.tolist(), strict=True):
            writer.writerow([row, row_id, names[t], names[p]])


def _no_input_writes(fn: Any) -> Any:
    """Run ``fn`` with ``datasets`` caching off, so no cache file is ever written under an input directory."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ferdata.dataset import no_input_caching

        with no_input_caching():
            return fn(*args, **kwargs)

    return wrapper


def prepare_training(config: TrainConfig, train: Any, validation: Any, *, input_shape: tuple[int, int, int],
                     num_classes: int) -> tuple[Any, Any, Any]:
    """Seed Keras, build ``config.model`` and batch both splits: ``(model, train batches, validation batches)``.

    The one place a training starts from a :class:`TrainConfig` (``train_run`` and every refine
    training): the training batches are shuffled and augmented with ``config.seed``, the
    validation batches neither. Pass the result to ``fit_model``.

    Example:
        >>> model, tr, va = prepare_training(TrainConfig(model="tiny-cnn"), dd["train"], dd["validation"],
        ...                                  input_shape=(48, 48, 1), num_classes=7)   # doctest: +SKIP
    """
    import keras

    from ferdata.train.data import to_tf_dataset
    from ferdata.train.models import build_model

    size = (input_shape[0], input_shape[1])
    keras.utils.set_random_seed(config.seed)
    net = build_model(config.model, input_shape, num_classes, weights=config.weights,
                      allow_download=config.allow_download)
    train_ds = to_tf_dataset(train, image_size=size, channels=input_shape[2], batch_size=config.batch_size,
                             shuffle=True, seed=config.seed, augment=config.augment, num_classes=num_classes,
                             soft_labels=config.soft_labels)
    val_ds = to_tf_dataset(validation, image_size=size, channels=input_shape[2], batch_size=config.batch_size,
                           num_classes=num_classes)
    return net, train_ds, val_ds


def _training_splits(dataset_dir: str | Path, config: TrainConfig, notes: list[str]
                     ) -> tuple[list[str], Any, Any, str | None]:
    """(class names, train, validation, note when validation was carved out of train) of a dataset directory."""
    from ferdata.dataset import label_names, open_dataset

    dd = open_dataset(dataset_dir)
    if "train" not in dd:
        raise UsageError(f"{dataset_dir} has no 'train' split; splits: {', '.join(dd) or '(none)'}")
    names = label_names(dd)
    train, validation = dd["train"], dd.get("validation")
    if len(train) == 0:
        raise UsageError(f"{dataset_dir}: the train split is empty")
    limit, seed = config.limit, config.seed
    if limit is not None and limit < len(train):
        # a seeded permutation, not Dataset.shuffle: shuffle writes an indices cache file into the input directory
        pick = np.random.default_rng(seed).permutation(len(train))[:limit]
        train = train.select(pick.tolist())
        notes.append(f"--limit {limit}: training on {limit} random training images")
    split_note = None
    if validation is None or len(validation) == 0:
        train, validation = stratified_holdout(train, config.val_fraction, seed=seed)
        split_note = (f"no validation split in {dataset_dir}: held out a stratified {config.val_fraction:.0%} of "
                      f"train (seed {seed}): {len(train)} train / {len(validation)} validation")
        notes.append(split_note)
    return names, train, validation, split_note


def _input_shape(config: TrainConfig, train: Any, notes: list[str]) -> tuple[int, int, int]:
    """The model input (height, width, channels): the config's, else the model's design (``tiny-cnn``: the data's)."""
    from ferdata.train.data import image_shape
    from ferdata.train.models import DEFAULT_INPUT

    native = image_shape(train)
    default = DEFAULT_INPUT[config.model]
    size = _parse_size(config.image_size) or ((native[0], native[1]) if config.model == "tiny-cnn" else default[:2])
    chans = config.channels or (native[2] if config.model == "tiny-cnn" else default[2])
    if size != native[:2]:
        notes.append(f"images are resized from {native[0]}x{native[1]} to {size[0]}x{size[1]} (bilinear)")
    if chans != native[2]:
        notes.append(f"images are converted from {native[2]} to {chans} channel(s)")
    return size[0], size[1], chans


def _class_weights(config: TrainConfig, counts: dict[str, int], notes: list[str]
                   ) -> tuple[list[str], dict[int, float] | None]:
    """(classes without a training example, the loss weights per class or None for ``class_weights="none"``)."""
    from ferdata.train.weights import class_weights as compute_weights

    absent = [n for n, c in counts.items() if c == 0]
    if absent:
        notes.append(f"classes absent from training: {', '.join(absent)}")
    cw = None if config.class_weights == "none" else compute_weights(list(counts.values()), config.class_weights)
    return absent, cw


def _record_seen(tmp: Path, train: Any, validation: Any, *, carved: bool, dataset_dir: str | Path,
                 notes: list[str]) -> dict[str, Any]:
    """Write ``seen.parquet`` (the rows the run trained and validated on); its summary for ``run.json``."""
    seen = write_seen(tmp / SEEN_FILE, [("train", "train", train),
                                        ("validation", "train" if carved else "validation", validation)])
    if carved:
        notes.append(f"the held-out rows are listed in {SEEN_FILE}: `ferdata evaluate RUN {Path(dataset_dir).name} "
                     "--split train` scores only them (the training rows are left out)")
    return seen


@_no_input_writes
def train_run(
    dataset_dir: str | Path,
    out: str | Path,
    config: TrainConfig | None = None,
    *,
    overwrite: bool = False,
    verbose: int = 0,
    notes: list[str] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Train a model on a dataset directory and write a run directory (see the module doc).

    The ``train`` split trains; ``validation`` selects the best epoch and is the split the
    metrics describe. A dataset without a validation split gets one: a stratified, seeded
    ``val_fraction`` of train (recorded in ``run.json`` and in ``notes``).

    Args:
        dataset_dir: a ferdata dataset directory with a ``train`` split.
        out: the run directory to write (atomically).
        config: the training options (:class:`~ferdata.train.config.TrainConfig`; its defaults when None).
        overwrite: replace an existing ``out``.
        verbose: Keras verbosity.
        notes: a list that receives human-readable notes (split created, resizing ...).
        **options: ``TrainConfig`` fields by keyword (``model="fer-cnn", epochs=40``), applied over ``config``.

    Returns:
        ``{"out", "best_epoch", "epochs_run", "metrics", "notes"}``.

    Raises:
        UsageError: for bad options, a dataset without ``train``, or an output that exists.

    Example:
        >>> train_run("fer2013", "runs/fer-cnn", TrainConfig(model="fer-cnn", epochs=40))   # doctest: +SKIP
        >>> train_run("fer2013", "runs/fer-cnn", model="fer-cnn", epochs=40)                # doctest: +SKIP
    """
    from ferdata.dataset import class_counts, prepare_output
    from ferdata.train.fit import fit_model
    from ferdata.train.metrics import plot_learning_curves

    cfg = replace(config or TrainConfig(), **options) if options else (config or TrainConfig())
    notes = notes if notes is not None else []
    out = prepare_output(out, overwrite=overwrite, inputs=[dataset_dir])
    names, train, validation, split_note = _training_splits(dataset_dir, cfg, notes)
    shape = _input_shape(cfg, train, notes)
    counts = class_counts(train)
    absent, cw = _class_weights(cfg, counts, notes)
    if cfg.soft_labels is not None:
        notes.append(f"soft labels: training targets are the vote distribution of {cfg.soft_labels!r} "
                     "(FER+ outlier rule)")
    net, train_ds, val_ds = prepare_training(cfg, train, validation, input_shape=shape, num_classes=len(names))
    with atomic_dir(out) as tmp:
        start = time.perf_counter()
        history = fit_model(net, train_ds, val_ds, epochs=cfg.epochs, lr=cfg.lr, class_weight=cw, out_dir=tmp,
                            patience=cfg.fit_patience, seed=cfg.seed, schedule=cfg.schedule,
                            verbose=verbose, progress=f"train {cfg.model}" if not verbose else None)
        train_seconds = time.perf_counter() - start
        net.save(tmp / "model.keras")
        (tmp / "best.weights.h5").unlink(missing_ok=True)  # model.keras holds the same weights
        plot_learning_curves(history.history, tmp)
        _write_json(tmp / "labels.json", names)
        seen = _record_seen(tmp, train, validation, carved=split_note is not None, dataset_dir=dataset_dir,
                            notes=notes)
        run_json = {
            "format": "ferdata-run/1", "model": cfg.model, "input_shape": list(shape),
            "dataset": str(Path(dataset_dir).resolve()), "label_names": names, "epochs": cfg.epochs,
            "epochs_run": len(history.history.get("loss", [])), "best_epoch": history.best_epoch,
            "batch_size": cfg.batch_size, "lr": cfg.lr, "schedule": cfg.schedule, "class_weights": cfg.class_weights,
            "class_weight_values": cw, "augment": cfg.augment, "soft_labels": cfg.soft_labels, "seed": cfg.seed,
            "train_examples": len(train), "validation_examples": len(validation),
            "validation_split": "created" if split_note else "validation", "train_class_counts": counts,
            "train_seconds": round(train_seconds, 1), "seen_rows": seen, "notes": notes,
        }
        _write_json(tmp / "run.json", run_json)
        metrics = _evaluate_into(net, validation, names, tmp, batch_size=cfg.batch_size, image_size=shape[:2],
                                 channels=shape[2], extra={"split": "validation", "best_epoch": history.best_epoch})
        metrics["warnings"] = [f"training: class {n!r} has no training example" for n in absent] + metrics["warnings"]
        _write_json(tmp / "metrics.json", metrics)
    return {"out": out, "best_epoch": history.best_epoch, "epochs_run": run_json["epochs_run"], "metrics": metrics,
            "notes": notes}


def check_run_dir(run_dir: str | Path) -> Path:
    """Return ``run_dir`` when it holds ``model.keras`` and ``run.json`` (cheap: nothing is loaded).

    Raises:
        InputNotFound: when it does not; a dataset directory or a refine run is named as such.

    Example:
        >>> check_run_dir("runs/fer")   # doctest: +SKIP
        PosixPath('runs/fer')
    """
    run_dir = Path(run_dir)
    missing = [name for name in ("model.keras", "run.json") if not (run_dir / name).is_file()]
    if missing:
        hint = ""
        if (run_dir / "dataset_dict.json").exists():
            hint = " but a dataset directory (ferdata evaluate takes RUN, then DIR)"
        elif (run_dir / "dataset" / "dataset_dict.json").exists():
            hint = f" (a refine run? its round models are {run_dir / 'rounds'}/*/model.keras)"
        raise InputNotFound(f"{run_dir} is not a training run directory{hint}: no {' or '.join(missing)} in it")
    return run_dir


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """A run directory's ``run.json`` (without loading the model or TensorFlow)."""
    run_dir = check_run_dir(run_dir)
    with (run_dir / "run.json").open(encoding="utf-8") as f:
        return json.load(f)


def load_run(run_dir: str | Path) -> tuple[Any, dict[str, Any]]:
    """Load a run directory's model and ``run.json``.

    Raises:
        InputNotFound: when ``run_dir`` has no ``model.keras`` / ``run.json`` (before TensorFlow loads).
    """
    config = read_run_config(run_dir)
    import keras

    return keras.models.load_model(Path(run_dir) / "model.keras"), config


def default_eval_dir(run_dir: str | Path, dataset_dir: str | Path, split: str) -> Path:
    """``RUN/eval/<dataset name>-<split>``: where ``evaluate`` writes when no ``out`` is given."""
    return Path(run_dir) / "eval" / f"{Path(dataset_dir).name}-{split}"


@_no_input_writes
def evaluate_run(
    run_dir: str | Path,
    dataset_dir: str | Path,
    *,
    split: str = "test",
    out: str | Path | None = None,
    saliency: int = 0,
    label_map: dict[str, str | None] | None = None,
    batch_size: int = 64,
    overwrite: bool = False,
    notes: list[str] | None = None,
    include_seen: bool = False,
) -> dict[str, Any]:
    """Evaluate a trained run on a dataset directory's split (e.g. train on FER2013, test on BTFER).

    Writes ``metrics.json``, ``confusion.csv``, ``confusion.png``, ``confusion_normalized.png``
    and, with ``saliency`` N > 0, ``saliency/<class>.png`` (N images of each class beside their
    gradient saliency maps, paper 002) into ``out`` (default ``RUN/eval/<dataset>-<split>``).
    Images are resized / converted to the model's input; labels are matched by name (a class
    ``label_map`` maps to None is left out and counted). Rows the run was trained on (same ``id``
    or ``root_id``, ``RUN/seen.parquet``) are left out and counted, unless ``include_seen``; on
    the dataset a run was trained on without a validation split, what is scored is the held-out
    part ``train`` wrote down. ``predictions.csv`` lists every scored row.

    The default output holds only what this function derives, so a re-run replaces it (said in
    ``notes``); an ``out`` the caller names is replaced only with ``overwrite``. Every check of
    the inputs and options runs before TensorFlow loads.

    Returns:
        The metrics (``classification_report`` plus ``inference_ms_per_image``, ``split``, ``dataset``, ``out``
        and the counts of :func:`scored_rows`: ``rows_in_split``, ``dropped_rows``, ``dropped_by_class``,
        ``excluded_seen``, ``validation_rows_scored``, ``seen_check``).

    Raises:
        UsageError: for a missing split, classes the model does not know, or a named output that exists.

    Example:
        >>> evaluate_run("runs/fer-cnn", "btfer", split="test", saliency=3)["accuracy"]   # doctest: +SKIP
    """
    from ferdata.dataset import open_dataset

    if saliency < 0:
        raise UsageError(f"--saliency must be 0 or more, got {saliency}")
    config = read_run_config(run_dir)
    replaced = _eval_output(run_dir, dataset_dir, split, out, overwrite=overwrite)
    out = Path(out) if out is not None else default_eval_dir(run_dir, dataset_dir, split)
    dd = open_dataset(dataset_dir)
    if split not in dd:
        raise UsageError(f"split {split!r} not found in {dataset_dir}; splits: {', '.join(dd) or '(none)'}")
    ds = dd[split]
    if len(ds) == 0:
        raise UsageError(f"split {split!r} of {dataset_dir} is empty")
    names = list(config["label_names"])
    rows = scored_rows(run_dir, ds, names, split=split, label_map=label_map, include_seen=include_seen)
    index = rows.index
    if len(rows.keep) < len(ds):
        ds = ds.select(rows.keep.tolist())
    model, config = load_run(run_dir)  # TensorFlow loads here, after every check
    h, w, c = config["input_shape"]
    extra = {"split": split, "dataset": str(Path(dataset_dir).resolve()), **rows.counts}
    with atomic_dir(out) as tmp:
        report = _evaluate_into(model, ds, names, tmp, batch_size=batch_size, image_size=(h, w), channels=c,
                                label_index=index, extra=extra, rows=rows.keep)
        if saliency:
            write_saliency_maps(model, ds, names, tmp / "saliency", per_class=saliency, image_size=(h, w),
                                channels=c, label_index=index)
    report["out"] = str(out)
    if notes is not None:
        notes.extend(rows.notes)
    if replaced and notes is not None:
        notes.append(f"replaced the previous evaluation in {out} (evaluate's default output; "
                     "give --out DIR to keep several)")
    return report


def _eval_output(run_dir: str | Path, dataset_dir: str | Path, split: str, out: str | Path | None, *,
                 overwrite: bool) -> bool:
    """Check evaluate's output before any work; True when a previous default output will be replaced.

    Raises:
        OutputExists: for a named ``out`` that exists without ``overwrite``, or a default output
            that holds something other than an evaluation (no metrics.json).
    """
    if out is not None:
        if Path(out).exists() and not overwrite:
            raise OutputExists(f"output {out} already exists; pass --overwrite to replace it")
        return False
    default = default_eval_dir(run_dir, dataset_dir, split)
    if not default.exists():
        return False
    if not overwrite and not (default / "metrics.json").is_file() and any(default.iterdir()):
        raise OutputExists(f"output {default} already exists and is not an evaluation (no metrics.json); "
                           "pass --overwrite to replace it, or --out DIR")
    return True


def saliency_map(model: Any, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Gradient saliency (Simonyan et al.): ``max_c |d score[class] / d pixel|``, scaled to 0..1 per image.

    Args:
        model: a Keras classifier.
        images: ``(N, H, W, C)`` float images as the model takes them.
        classes: ``(N,)`` class ids whose scores are differentiated.

    Returns:
        ``(N, H, W)`` float32 maps.
    """
    import tensorflow as tf

    x = tf.convert_to_tensor(images, dtype=tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        probs = model(x, training=False)
        scores = tf.gather(probs, tf.convert_to_tensor(classes, dtype=tf.int32), axis=1, batch_dims=1)
    grads = tf.reduce_max(tf.abs(tape.gradient(scores, x)), axis=-1).numpy()
    top = grads.reshape(len(grads), -1).max(axis=1).reshape(-1, 1, 1)
    return np.divide(grads, top, out=np.zeros_like(grads), where=top > 0).astype(np.float32)


def write_saliency_maps(model: Any, ds: Any, names: list[str], out: Path, *, per_class: int, image_size: tuple[int, int],
                        channels: int, label_index: dict[int, int] | None = None) -> list[Path]:
    """Write ``out/<class>.png``: up to ``per_class`` images of each true class beside their saliency maps."""
    from ferdata.train.data import to_tf_dataset
    from ferdata.train.metrics import _pyplot

    out.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(ds["label"], dtype=np.int64)
    if label_index is not None:
        labels = np.asarray([label_index[int(v)] for v in labels], dtype=np.int64)
    plt = _pyplot()
    written = []
    for cls, name in enumerate(names):
        idx = np.flatnonzero(labels == cls)[:per_class]
        if idx.size == 0:
            continue
        batch = to_tf_dataset(ds.select(idx.tolist()), image_size=image_size, channels=channels,
                              batch_size=len(idx), num_classes=len(names), label_index=label_index)
        images = next(iter(batch))[0].numpy()
        maps = saliency_map(model, images, np.full(len(idx), cls))
        preds = np.asarray(model(images, training=False)).argmax(axis=1)
        fig, axes = plt.subplots(len(idx), 2, figsize=(4, 2 * len(idx)), squeeze=False)
        for row, (img, sal, pred) in enumerate(zip(images, maps, preds, strict=True)):
            axes[row, 0].imshow(img.squeeze().astype(np.uint8), cmap="gray" if channels == 1 else None)
            axes[row, 0].set_title(f"true {name}, pred {names[pred]}", fontsize=7)
            axes[row, 1].imshow(sal, cmap="hot", vmin=0, vmax=1)
            axes[row, 1].set_title("saliency", fontsize=7)
            for ax in axes[row]:
                ax.axis("off")
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=100)
        plt.close(fig)
        written.append(out / f"{name}.png")
    return written


def export_tflite(run_dir: str | Path, out: str | Path | None = None, *, overwrite: bool = False) -> Path:
    """Convert a run's ``model.keras`` to TensorFlow Lite (float32) for edge deployment (paper 001).

    Returns:
        The ``.tflite`` path (default ``RUN/model.tflite``).

    Raises:
        UsageError: when the output exists and ``overwrite`` is False.

    Example:
        >>> export_tflite("runs/fer-cnn")            # doctest: +SKIP
        PosixPath('runs/fer-cnn/model.tflite')
    """
    import tensorflow as tf

    model, _ = load_run(run_dir)
    out = Path(out) if out is not None else Path(run_dir) / "model.tflite"
    if out.exists() and not overwrite:
        raise UsageError(f"output {out} already exists; pass --overwrite to replace it")
    from ferdata.dataset import work_dir

    with work_dir("ferdata-tflite-") as tmp:
        model.export(str(tmp / "saved"), format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp / "saved"))
        data = converter.convert()
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    part.write_bytes(data)
    os.replace(part, out)
    return out


def tflite_predict(path: str | Path, images: np.ndarray) -> np.ndarray:
    """Run a ``.tflite`` classifier on ``(N, H, W, C)`` float images; returns ``(N, classes)`` probabilities."""
    import warnings

    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "tf.lite.Interpreter is deprecated": still shipped in TF 2.21
        interpreter = tf.lite.Interpreter(model_path=str(path))
    inp = interpreter.get_input_details()[0]
    outp = interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(inp["index"], [len(images), *images.shape[1:]])
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], images.astype(np.float32))
    interpreter.invoke()
    return np.asarray(interpreter.get_tensor(outp["index"]))
