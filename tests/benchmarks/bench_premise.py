"""Paper 004's premise, measured: does ESPCN upscaling help a FER classifier against bicubic and against none?

Run: ``python tests/benchmarks/bench_premise.py [--size 96] [--seeds 0,1,2] [--epochs 15] [--model shallow-cnn]``.
Uses ../shared/data (fer2013-dev.csv and fer2013-dev-ferplus.csv); exits with a message when absent;
never needs a GPU (``--size 224`` where one is available).

Protocol: the 3,436 fer2013-dev rows are split once (seed 0, stratified by the FER2013 label, the
same for every condition and model seed) into 70 % train, 15 % validation (best-epoch selection
and early stopping) and 15 % test (untouched until the end). The same model (paper 004's
``shallow-cnn`` by default), the same epochs and the same seeds are trained on three versions of
the images: (a) the 48x48 originals, (b) bicubic to N px, (c) ferdata's ESPCN (what ``ferdata upscale
--scale auto --model auto`` picks for these images: the native factor for 48 -> N, e.g. x2 for 96, and
the smooth or aliased model from their spectrum) then resampled to N px. Test accuracy and macro-F1 against FER2013's
own labels and against the FER+ majority label (the 8 crowd votes per image; rows whose majority
is contempt, unknown or not-a-face, and ties with them, are left out of the FER+ columns) are
printed as mean +- std over the seeds, each condition beside the others from the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
#: FER+ vote columns in fer2013new.csv order -> FER2013 code (None: no FER2013 class)
FERPLUS_TO_FER = {"neutral": 6, "happiness": 3, "surprise": 5, "sadness": 4, "anger": 0, "disgust": 1, "fear": 2,
                  "contempt": None, "unknown": None, "NF": None}


def load() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images (N, 48, 48) uint8, FER2013 labels, FER+ majority labels (-1 where none)."""
    import csv

    with (DATA / "fer2013-dev.csv").open() as f:
        rows = list(csv.DictReader(f))
    images = np.stack([np.array(r["pixels"].split(), np.uint8).reshape(48, 48) for r in rows])
    labels = np.array([int(r["emotion"]) for r in rows])
    with (DATA / "fer2013-dev-ferplus.csv").open() as f:
        plus = list(csv.DictReader(f))
    if len(plus) != len(rows):
        raise SystemExit(f"fer2013-dev-ferplus.csv has {len(plus)} rows, fer2013-dev.csv {len(rows)}")
    ferplus = np.full(len(rows), -1)
    for i, r in enumerate(plus):
        votes = {k: int(float(r.get(k) or 0)) for k in FERPLUS_TO_FER}
        best = max(votes.values())
        top = [k for k, v in votes.items() if v == best]
        if best > 0 and len(top) == 1 and FERPLUS_TO_FER[top[0]] is not None:
            ferplus[i] = FERPLUS_TO_FER[top[0]]
    return images, labels, ferplus


def split(labels: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Stratified 70/15/15 index split."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {"train": [], "validation": [], "test": []}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        a, b = int(round(0.7 * len(idx))), int(round(0.85 * len(idx)))
        parts["train"] += idx[:a].tolist()
        parts["validation"] += idx[a:b].tolist()
        parts["test"] += idx[b:].tolist()
    return {k: np.sort(np.array(v)) for k, v in parts.items()}


def macro_f1(y: np.ndarray, p: np.ndarray, classes: int = 7) -> float:
    f1 = []
    for c in range(classes):
        tp, fp, fn = np.sum((p == c) & (y == c)), np.sum((p == c) & (y != c)), np.sum((p != c) & (y == c))
        if tp + fp + fn:
            f1.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1))


def train_and_test(x: np.ndarray, labels: np.ndarray, ferplus: np.ndarray, parts: dict[str, np.ndarray], *,
                   model_name: str, seed: int, epochs: int, batch_size: int) -> dict[str, float]:
    import keras
    import tensorflow as tf

    from ferdata.train import build_model, fit_model

    keras.utils.set_random_seed(seed)
    x = x[..., None]
    onehot = np.eye(7, dtype=np.float32)[labels]

    def ds(idx: np.ndarray, shuffle: bool) -> tf.data.Dataset:
        d = tf.data.Dataset.from_tensor_slices((x[idx], onehot[idx]))
        if shuffle:
            d = d.shuffle(len(idx), seed=seed, reshuffle_each_iteration=True)
        return d.batch(batch_size).prefetch(2)

    model = build_model(model_name, x.shape[1:], 7)
    fit_model(model, ds(parts["train"], True), ds(parts["validation"], False), epochs=epochs, seed=seed,
              patience=max(3, epochs // 3), progress=None)
    test = parts["test"]
    pred = np.argmax(model.predict(x[test], batch_size=256, verbose=0), axis=1)
    keep = ferplus[test] >= 0
    return {"acc": float(np.mean(pred == labels[test])), "f1": macro_f1(labels[test], pred),
            "acc_plus": float(np.mean(pred[keep] == ferplus[test][keep])), "f1_plus": macro_f1(ferplus[test][keep], pred[keep])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96, help="N for the upscaled conditions (96 on CPU, 224 on a GPU)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--model", default="shallow-cnn")
    parser.add_argument("--conditions", default="48,bicubic,espcn")
    args = parser.parse_args(argv)
    if not (DATA / "fer2013-dev.csv").is_file() or not (DATA / "fer2013-dev-ferplus.csv").is_file():
        print(f"shared data absent: {DATA} (see ../shared/data/README.md); nothing to benchmark")
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import cv2

    from ferdata.sr.spectrum import estimate_degradation
    from ferdata.sr.step import choose_model, native_scale
    from ferdata.sr.upscaler import Upscaler

    images, labels, ferplus = load()
    parts = split(labels)
    n = args.size
    versions: dict[str, np.ndarray] = {}
    conditions = args.conditions.split(",")
    if "48" in conditions:
        versions["48 px (no upscaling)"] = images
    if "bicubic" in conditions:
        versions[f"bicubic to {n}"] = np.stack([cv2.resize(im, (n, n), interpolation=cv2.INTER_CUBIC) for im in images])
    if "espcn" in conditions:
        sample = list(images[:500])
        estimate = estimate_degradation(sample)
        scale = native_scale(48, n, estimate.regime)
        name, evidence = choose_model(sample, scale, estimate=estimate)
        t = time.perf_counter()
        versions[f"ESPCN {name} to {n}"] = Upscaler.load(name, scale).upscale(images, size=n)
        print(f"ESPCN: {name} (auto: {evidence['why']}); {len(images)} images in {time.perf_counter() - t:.1f} s")
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"\n## Premise: {args.model}, {args.epochs} epochs max, seeds {seeds}; train {len(parts['train'])}, "
          f"validation {len(parts['validation'])}, test {len(parts['test'])} "
          f"({int(np.sum(ferplus[parts['test']] >= 0))} with a FER+ majority)\n", flush=True)
    results: dict[str, list[dict[str, float]]] = {}
    for seed in seeds:  # seed-major: a run cut short still has every condition for its finished seeds
        for label, x in versions.items():
            t = time.perf_counter()
            r = train_and_test(x, labels, ferplus, parts, model_name=args.model, seed=seed, epochs=args.epochs,
                               batch_size=args.batch_size)
            results.setdefault(label, []).append(r)
            print(f"  {label}, seed {seed}: accuracy {r['acc']:.4f}, macro-F1 {r['f1']:.4f}, FER+ accuracy "
                  f"{r['acc_plus']:.4f}, FER+ macro-F1 {r['f1_plus']:.4f} ({time.perf_counter() - t:.0f} s)", flush=True)
    print("\n| input | accuracy (FER2013 labels) | macro-F1 | accuracy (FER+ majority) | macro-F1 (FER+) |")
    print("|---|---|---|---|---|")
    for label, rs in results.items():
        keys = ("acc", "f1", "acc_plus", "f1_plus")
        cells = [f"{np.mean([r[k] for r in rs]):.4f} ± {np.std([r[k] for r in rs]):.4f}" for k in keys]
        print(f"| {label} ({len(rs)} seeds) | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
