"""Training benchmarks (issue 7). Run: ``python tests/benchmarks/bench_train.py [--quick]``.

1. Input pipeline vs model: images per second that ``to_tf_dataset`` delivers at 224x224x1 with
   ``paper001`` augmentation (from a dataset directory of 48x48 images, resized), against the
   shallow CNN's training-step rate on the same batches (the baseline it must outrun).
2. A short real run: ``fer-cnn`` on ../shared/data/fer2013-dev (48x48, stratified 80/20 split made
   by ``train_run``), a few epochs; prints validation accuracy and per-class F1.

``--quick`` shrinks both (fewer batches, 1 epoch on 1,000 images) for a smoke run; the figures
reported in docs/training.md come from the default sizes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
DEV = ROOT.parent / "shared" / "data" / "fer2013-dev"


def _import_dev(tmp: Path) -> Path:
    from ferdata.steps import apply_step

    out = tmp / "fer2013-dev"
    apply_step("import_folder", {"src": str(DEV)}, out=out)
    return out


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


def bench_real_run(ds_dir: Path, out: Path, *, epochs: int, limit: int | None) -> dict:
    from ferdata.train.run import train_run

    start = time.perf_counter()
    result = train_run(ds_dir, out, model="fer-cnn", epochs=epochs, batch_size=64, lr=1e-3, augment="none",
                       patience=0, seed=0, limit=limit, verbose=2)
    result["seconds"] = time.perf_counter() - start
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke sizes (not the reported figures)")
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args()
    if not DEV.exists():
        print(f"skipped: {DEV} is absent (see ../shared/data/README.md)")
        return
    from ferdata.progress import disable_progress_bars

    disable_progress_bars()
    with tempfile.TemporaryDirectory() as tmp:
        ds_dir = _import_dev(Path(tmp))
        pipe, model = bench_pipeline(ds_dir, batches=8 if args.quick else 40)
        print(f"input pipeline, 224x224x1 + paper001 augmentation: {pipe:8.1f} images/s")
        print(f"baseline: shallow-cnn training steps (batch 32):    {model:8.1f} images/s")
        print(f"pipeline / model = {pipe / model:.1f}x -> {'OK, not the bottleneck' if pipe > model else 'BOTTLENECK'}")
        epochs = args.epochs or (1 if args.quick else 5)
        result = bench_real_run(ds_dir, Path(tmp) / "run", epochs=epochs, limit=1000 if args.quick else None)
        m = result["metrics"]
        print(f"fer-cnn on fer2013-dev, {epochs} epochs ({result['seconds']:.0f}s): best epoch {result['best_epoch']}, "
              f"validation accuracy {m['accuracy']:.4f}, top-2 {m['top2_accuracy']:.4f}, macro F1 {m['macro_f1']:.4f} "
              f"(chance baseline ~{1 / 7:.4f})")
        print("per-class F1: " + json.dumps({k: v["f1"] for k, v in m["per_class"].items()}))
        for note in result["notes"]:
            print(f"note: {note}")


if __name__ == "__main__":
    main()
