"""Training benchmarks. Run: ``python tests/benchmarks/bench_train.py [--data dev|train] [--epochs 3]``.

**Throughput (issue 24)**, both rates measured in the same run, on the same rows and model:

* *ferdata*: ``to_tf_dataset`` (decode included) + ``fit_model`` (its callbacks, validation every
  epoch), training images per second;
* *Keras*: the same model (fresh, same seed), compiled the same way, ``model.fit`` on in-memory
  ``float32`` arrays (loading them is not timed), validation every epoch;

then ``ferdata / Keras``, in images per second of wall time and in images per CPU-second of the
process (less sensitive to other jobs on a shared machine). The runs alternate (Keras, ferdata, Keras, ferdata, ...) ``--repeats``
times and the medians are compared, so a busier minute hits both sides. ``--augment light`` adds
a pair with refine's augmentation preset: ferdata augments the batches in its pipeline, Keras runs
the same random layers in front of the model (the Keras way of augmenting in-memory arrays).
Data: ``--data dev`` is fer2013-dev (3,436 rows), ``--data train`` fer2013-train
(26,223 rows); 80 % trains, 20 % validates; ``--limit N`` takes the first N rows.

``--issue7`` runs the issue 7 figures instead: the input pipeline at 224x224x1 with ``paper001``
augmentation against shallow-cnn's step rate, and a short fer-cnn run on fer2013-dev.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
DEV = DATA / "fer2013-dev"
SOURCES = {"dev": DATA / "fer2013-dev.csv", "train": DATA / "fer2013-train.csv.gz"}


def _import_csv(tmp: Path, data: str) -> Path:
    from ferdata.steps import apply_step

    out = tmp / f"fer2013-{data}"
    apply_step("import_fer2013", {"csv": str(SOURCES[data])}, out=out)
    return out


def _splits(ds_dir: Path, limit: int | None) -> tuple[object, object]:
    from ferdata import open_dataset
    from ferdata.train.run import stratified_holdout

    dd = open_dataset(ds_dir)
    import datasets

    full = datasets.concatenate_datasets([dd[s] for s in dd])
    if limit:
        full = full.select(range(min(limit, len(full))))
    return stratified_holdout(full, 0.2, seed=0)


def _arrays(ds: object, classes: int) -> tuple[np.ndarray, np.ndarray]:
    from ferdata.rows import read_pixels

    raw = ds.cast_column("image", __import__("datasets").Image(decode=False))  # type: ignore[attr-defined]
    x = np.stack([read_pixels(v) for v in raw["image"]]).astype("float32")[..., None]
    y = np.eye(classes, dtype="float32")[np.asarray(raw["label"])]
    return x, y


def keras_rate(x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, *, model: str, epochs: int,
               batch: int, augment: str = "none") -> tuple[float, float]:
    """(images/s wall, images per CPU-second) of Keras ``fit`` on the arrays; ``augment``: the preset's random
    layers in front of the model (Keras' way)."""
    import keras

    from ferdata.train import build_model, compile_model
    from ferdata.train.data import augmentation_layers

    keras.utils.set_random_seed(0)
    net = build_model(model, x.shape[1:], y.shape[1])
    layers = augmentation_layers(augment, seed=0)
    if layers:
        inputs = keras.Input(x.shape[1:])
        h = inputs
        for layer in layers:
            h = layer(h)
        net = keras.Model(inputs, net(h))
    net = compile_model(net)
    start, cpu = time.perf_counter(), time.process_time()
    net.fit(x, y, batch_size=batch, epochs=epochs, validation_data=(xv, yv), shuffle=True, verbose=0)
    return len(x) * epochs / (time.perf_counter() - start), len(x) * epochs / (time.process_time() - cpu)


def ferdata_rate(train: object, val: object, classes: int, *, model: str, epochs: int, batch: int,
                 augment: str) -> tuple[float, float]:
    """(images/s wall, images per CPU-second) of ``to_tf_dataset`` (decoding included) + ``fit_model``."""
    import keras

    from ferdata.train import build_model, fit_model, to_tf_dataset

    keras.utils.set_random_seed(0)
    start, cpu = time.perf_counter(), time.process_time()
    net = build_model(model, (48, 48, 1), classes)
    tr = to_tf_dataset(train, channels=1, batch_size=batch, shuffle=True, augment=augment, num_classes=classes)
    va = to_tf_dataset(val, channels=1, batch_size=batch, num_classes=classes)
    fit_model(net, tr, va, epochs=epochs, patience=0, progress=None)
    images = len(train) * epochs  # type: ignore[arg-type]
    return images / (time.perf_counter() - start), images / (time.process_time() - cpu)


def bench_throughput(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        train, val = _splits(_import_csv(Path(tmp), args.data), args.limit)
        classes = len(train.features["label"].names)  # type: ignore[attr-defined]
        x, y = _arrays(train, classes)
        xv, yv = _arrays(val, classes)
        print(f"data: fer2013-{args.data}, {len(x)} train / {len(xv)} validation rows, 48x48x1 "
              f"(prepared in {time.perf_counter() - t0:.0f} s); model {args.model}, batch {args.batch}, "
              f"{args.epochs} epochs, {args.repeats} alternating repeats; load before: {os.getloadavg()[0]:.2f}")
        augments = ["none"] + ([args.augment] if args.augment != "none" else [])
        rates: dict[tuple[str, str], list[tuple[float, float]]] = {(side, a): [] for a in augments
                                                                    for side in ("keras", "ferdata")}
        for r in range(args.repeats):
            for augment in augments:
                rates[("keras", augment)].append(keras_rate(x, y, xv, yv, model=args.model, epochs=args.epochs,
                                                            batch=args.batch, augment=augment))
                rates[("ferdata", augment)].append(ferdata_rate(train, val, classes, model=args.model,
                                                                epochs=args.epochs, batch=args.batch, augment=augment))
            print(f"repeat {r + 1}: " + ", ".join(f"{s}/{a} {v[-1][0]:.0f}" for (s, a), v in rates.items())
                  + " images/s wall; per CPU-second: " + ", ".join(f"{s}/{a} {v[-1][1]:.0f}" for (s, a), v in
                                                                   rates.items())
                  + f" (load {os.getloadavg()[0]:.2f})", flush=True)
        for augment in augments:
            for k, unit in ((0, "images/s (wall)"), (1, "images per CPU-second")):
                ours, theirs = (statistics.median(v[k] for v in rates[(side, augment)]) for side in ("ferdata", "keras"))
                paired = statistics.median(a[k] / b[k] for a, b in zip(rates[("ferdata", augment)],
                                                                        rates[("keras", augment)], strict=True))
                print(f"augment {augment:>5}: ferdata {ours:6.0f}, Keras fit on arrays {theirs:6.0f} {unit}: "
                      f"ratio of medians {ours / theirs:.2f}, median of paired ratios {paired:.2f}")
        print(f"load after: {os.getloadavg()[0]:.2f} (1-min average, {os.cpu_count()} cores)")


def bench_pipeline(ds_dir: Path, *, batches: int, batch_size: int = 32) -> tuple[float, float]:
    import keras

    from ferdata.train import build_model, compile_model, to_tf_dataset

    data = to_tf_dataset(ds_dir, split="train", image_size=224, channels=1, batch_size=batch_size, shuffle=True,
                         augment="paper001").repeat()
    it = iter(data)
    next(it)  # warm-up
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    pipeline_rate = batches * batch_size / (time.perf_counter() - start)

    keras.utils.set_random_seed(0)
    model = compile_model(build_model("shallow-cnn", (224, 224, 1), 7))
    cached = list(data.take(2))
    model.train_on_batch(*cached[0])  # warm-up: tracing
    steps = max(2, batches // 4)
    start = time.perf_counter()
    for i in range(steps):
        model.train_on_batch(*cached[i % 2])
    model_rate = steps * batch_size / (time.perf_counter() - start)
    return pipeline_rate, model_rate


def bench_issue7(args: argparse.Namespace) -> None:
    from ferdata.steps import apply_step
    from ferdata.train.run import train_run

    if not DEV.exists():
        print(f"skipped: {DEV} is absent (see ../shared/data/README.md)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        ds_dir = Path(tmp) / "fer2013-dev"
        apply_step("import_folder", {"src": str(DEV)}, out=ds_dir)
        pipe, model = bench_pipeline(ds_dir, batches=8 if args.quick else 40)
        print(f"input pipeline, 224x224x1 + paper001 augmentation: {pipe:8.1f} images/s")
        print(f"baseline: shallow-cnn training steps (batch 32):    {model:8.1f} images/s")
        print(f"pipeline / model = {pipe / model:.1f}x -> {'OK, not the bottleneck' if pipe > model else 'BOTTLENECK'}")
        epochs = 1 if args.quick else args.epochs
        start = time.perf_counter()
        result = train_run(ds_dir, Path(tmp) / "run", model="fer-cnn", epochs=epochs, batch_size=64, lr=1e-3,
                           augment="none", patience=0, seed=0, limit=1000 if args.quick else None, verbose=2)
        m = result["metrics"]
        print(f"fer-cnn on fer2013-dev, {epochs} epochs ({time.perf_counter() - start:.0f}s): best epoch "
              f"{result['best_epoch']}, validation accuracy {m['accuracy']:.4f}, top-2 {m['top2_accuracy']:.4f}, "
              f"macro F1 {m['macro_f1']:.4f}")
        print("per-class F1: " + json.dumps({k: v["f1"] for k, v in m["per_class"].items()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=sorted(SOURCES), default="dev")
    parser.add_argument("--model", default="shallow-cnn-std")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="first N rows only (smoke runs)")
    parser.add_argument("--augment", choices=("none", "light"), default="none",
                        help="also time the ferdata pipeline with this augmentation")
    parser.add_argument("--issue7", action="store_true", help="the issue 7 figures instead (module doc)")
    parser.add_argument("--quick", action="store_true", help="with --issue7: smoke sizes")
    args = parser.parse_args()
    from ferdata.progress import disable_progress_bars

    disable_progress_bars()
    if args.issue7:
        bench_issue7(args)
        return
    if not SOURCES[args.data].exists():
        print(f"skipped: {SOURCES[args.data]} is absent (see ../shared/data/README.md)")
        return
    bench_throughput(args)


if __name__ == "__main__":
    main()
