"""Training and refine on a GPU machine without TensorFlow: ferdata's models under Keras 3 on JAX (issue 24).

The GPU machine this project is sometimes lent has PyTorch, JAX and CUDA but no TensorFlow, and its
wheels (with CUDA 12 libraries) are far over what can be carried to it (64 MiB), so ferdata's own
input path (``to_tf_dataset``, ``tf.data``) cannot run there. What can: the same networks
(``ferdata.train.build_model``, pure Keras), the same augmentation layers
(``ferdata.train.data.augmentation_layers``), the same optimiser, schedule, splits and rules. This
script measures, on that machine:

1. training and prediction throughput of the refine model (``shallow-cnn-std``, 48x48 gray,
   ``light`` augmentation, Adam, cosine schedule) at refine's batch size (64) and at 256, in
   images/s, each beside the same model's rate on the CPU given in docs/training.md;
2. ``refine --cv 5 --mode flag``'s out-of-sample pass, reproduced step by step (the same held-out
   carve, stratified folds and validation carves as ``ferdata refine``, computed here with
   ferdata's own ``carve`` / ``group_folds``; the best validation epoch kept; the mirrored average)
   on all of fer2013-train (real noise) and on the synthetic-flip subset, at several epoch budgets,
   timed; the probabilities come back and are scored here with ferdata's rules and cleanlab.

Three steps:

    python tests/benchmarks/bench_gpu.py prepare --work /tmp/gpu       # here: .gpu/data.npz (not committed)
    # on the GPU machine (device tool), with keras + namex + optree wheels carried in .whl:
    KERAS_BACKEND=jax python tests/benchmarks/bench_gpu.py run --data .gpu/data.npz --out $OUT
    python tests/benchmarks/bench_gpu.py score --data .gpu/data.npz --probs DIR   # here: the tables

``.gpu/`` holds the faces as one array for the trip (research data: ignored by git, never committed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
DATA = ROOT.parent / "shared" / "data"
CSV, VOTES = DATA / "fer2013-train.csv.gz", DATA / "fer2013-train-ferplus.csv"

#: refine's defaults (ferdata.refine.config): batch 64, Adam 1e-3, 20 % validation, 10 % held-out, seed 0
BATCH, LR, VAL_FRACTION, HELDOUT_FRACTION, SEED, FOLDS = 64, 1e-3, 0.2, 0.1, 0, 5


# ------------------------------------------------------------------ prepare (here, ferdata installed)

def _splits(labels: np.ndarray, groups: np.ndarray | None) -> dict[str, np.ndarray]:
    """The held-out carve, folds and per-fold validation carves of ``ferdata refine`` (loop.py's _plan,
    _round_cv and _fold) for a pool of ``labels``: fold -1 = held out; val[f] = validation rows of fold f."""
    from ferdata.refine.rules import carve, group_folds

    n = len(labels)
    rest, carved = carve(labels, HELDOUT_FRACTION, seed=SEED + 7919, groups=groups)
    fold = np.full(n, -1, dtype=np.int64)
    folds = group_folds(labels[rest], FOLDS, seed=SEED, groups=None if groups is None else groups[rest])
    fold[rest] = folds
    val = np.zeros((FOLDS, n), dtype=bool)
    for f in range(FOLDS):
        fit_pos = np.flatnonzero(folds != f)
        _, va = carve(labels[rest][fit_pos], VAL_FRACTION, seed=SEED * 1000 + f,
                      groups=None if groups is None else groups[rest][fit_pos])
        val[f, rest[fit_pos[va]]] = True
    return {"fold": fold, "val": val}


def prepare(work: Path, out: Path) -> None:
    import datasets
    from bench_refine import ferplus_truth, synthetic_flips
    from bench_refine_scale import cli

    from ferdata.split import row_groups

    src = work / "train"
    if not src.exists():
        code = cli("import", "fer2013", CSV, "--ferplus", VOTES, "--label-source", "fer2013", "--out", src, "-q")
        print(f"import: exit {code}")
    ds = datasets.load_from_disk(str(src))["train"]
    names = ds.features["label"].names
    labels = np.asarray(ds["label"], dtype=np.int64)
    votes = ds["ferplus_votes"]
    truth = ferplus_truth(votes, names)
    pixels = np.stack([np.asarray(im.convert("L"), dtype=np.uint8) for im in ds["image"]])
    groups = row_groups(ds.select_columns([c for c in ("group", "id", "root_id") if c in ds.column_names]))
    groups = None if groups is None else np.asarray(groups, dtype=object)
    clean, flip, noisy = synthetic_flips(labels, truth, votes, SEED)
    real = _splits(labels, groups)
    syn = _splits(noisy, None if groups is None else groups[clean])
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, pixels=pixels, labels=labels, truth=truth, names=np.asarray(names),
                        real_fold=real["fold"], real_val=real["val"],
                        syn_rows=clean, syn_labels=noisy, syn_flips=flip, syn_fold=syn["fold"], syn_val=syn["val"])
    print(f"{out}: {len(labels)} rows ({out.stat().st_size / 2**20:.1f} MiB); synthetic {len(clean)} rows, "
          f"{int(flip.sum())} flipped")


# ------------------------------------------------------------------ run (the GPU machine, Keras on JAX)

def light_augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``light`` (``augmentation_layers("light")``: ``RandomTranslation(0.1, 0.1, fill_mode="nearest")``,
    bilinear, then ``RandomFlip("horizontal")``) on the host for a whole array at once.

    Keras's random image layers inside a jitted JAX step cost 130-160 ms a step on the H200 (the model
    itself 1.6 ms: docs/training.md), so on JAX the augmentation is done here, as ferdata's ``tf.data``
    pipeline does it outside the model. A translation is separable: interpolate along rows, then columns.
    """
    n, h, w = x.shape[:3]
    out = x[..., 0]
    for axis, size in ((1, h), (2, w)):
        pos = np.arange(size)[None, :] - rng.uniform(-0.1, 0.1, n)[:, None] * size   # source of each output pixel
        lo = np.floor(pos)
        frac = (pos - lo).astype(np.float32)
        lo = lo.astype(np.int64)
        a, b = np.clip(lo, 0, size - 1), np.clip(lo + 1, 0, size - 1)   # nearest fill: clamp to the edge
        if axis == 1:
            out = (np.take_along_axis(out, a[:, :, None], 1) * (1 - frac)[:, :, None]
                   + np.take_along_axis(out, b[:, :, None], 1) * frac[:, :, None])
        else:
            out = (np.take_along_axis(out, a[:, None, :], 2) * (1 - frac)[:, None, :]
                   + np.take_along_axis(out, b[:, None, :], 2) * frac[:, None, :])
    flip = rng.random(n) < 0.5
    out[flip] = out[flip, :, ::-1]
    return out[..., None]


def _model(name: str = "shallow-cnn-std"):
    from ferdata.train.models import build_model

    return build_model(name, (48, 48, 1), 7)


def _compile(model, steps: int) -> None:
    import keras

    schedule = keras.optimizers.schedules.CosineDecay(LR, decay_steps=max(1, steps))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule), loss="categorical_crossentropy",
                  metrics=["accuracy"], jit_compile=True)


def _predict(net, x: np.ndarray) -> np.ndarray:
    """``net``'s probabilities in batches of 1,024, the last one padded (one compiled shape for every call)."""
    pad = -len(x) % 1024
    xp = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
    return net.predict(xp, batch_size=1024, verbose=0)[:len(x)]


def _epoch(model, x: np.ndarray, onehot: np.ndarray, batch: int, rng: np.random.Generator) -> float:
    """One shuffled, augmented epoch (the last partial batch dropped); returns the seconds the model took."""
    order = rng.permutation(len(x))[: len(x) // batch * batch]
    xa = light_augment(x[order], rng)
    start = time.perf_counter()
    model.fit(xa, onehot[order], batch_size=batch, epochs=1, shuffle=False, verbose=0)
    return time.perf_counter() - start


def throughput(x: np.ndarray, y: np.ndarray) -> list[dict]:
    """Training images/s of the model (2 timed epochs after a warm-up epoch; the host augmentation
    timed apart) and prediction images/s."""
    import keras

    rows, rng = [], np.random.default_rng(SEED)
    onehot = keras.utils.to_categorical(y, 7)
    for batch in (BATCH, 256):
        n = len(x) // batch * batch
        net = _model()
        _compile(net, 3 * n // batch)
        _epoch(net, x, onehot, batch, rng)
        start = time.perf_counter()
        model_s = _epoch(net, x, onehot, batch, rng) + _epoch(net, x, onehot, batch, rng)
        keras.ops.convert_to_numpy(net.weights[0])
        wall = time.perf_counter() - start
        _predict(net, x[:4096])
        start = time.perf_counter()
        _predict(net, x)
        rows.append({"batch": batch, "train_images_per_s": round(2 * n / model_s, 1),
                     "train_with_host_augment_images_per_s": round(2 * n / wall, 1),
                     "predict_images_per_s": round(len(x) / (time.perf_counter() - start), 1)})
        print(f"throughput batch {batch}: {rows[-1]}", flush=True)
    return rows


class _Trainer:
    """One compiled model per (set, epochs, model), reset to the same initial weights for every fold
    (refine trains each fold from scratch with the same seed), so XLA compiles once, not once per fold."""

    def __init__(self, epochs: int, steps_per_epoch: int, model: str) -> None:
        self.epochs = epochs
        self.net = _model(model)
        _compile(self.net, steps_per_epoch * epochs)
        self.initial = self.net.get_weights()

    def fit_predict(self, x: np.ndarray, labels: np.ndarray, train: np.ndarray, val: np.ndarray,
                    predict: list[np.ndarray]) -> tuple[list[np.ndarray], dict]:
        """Train like refine's fold (``light`` augmentation, cosine schedule, best validation epoch
        kept) and predict ``predict`` with the mirrored average."""
        import keras

        net, rng = self.net, np.random.default_rng(SEED)
        net.set_weights(self.initial)
        for v in net.optimizer.variables:
            v.assign(np.zeros(v.shape, dtype=v.dtype))
        onehot = keras.utils.to_categorical(labels, 7)
        best = {"acc": -1.0, "epoch": 0, "weights": None}
        for epoch in range(self.epochs):
            _epoch(net, x[train], onehot[train], BATCH, rng)
            acc = float(np.mean(_predict(net, x[val]).argmax(1) == labels[val]))
            if acc > best["acc"]:
                best.update(acc=acc, epoch=epoch + 1, weights=net.get_weights())
        net.set_weights(best["weights"])
        out = [((_predict(net, x[rows]) + _predict(net, x[rows][:, :, ::-1])) / 2).astype(np.float32) for rows in predict]
        return out, {"best_epoch": best["epoch"], "val_accuracy": round(best["acc"], 4),
                     "images_train": int(len(train) // BATCH * BATCH)}


def oos(x: np.ndarray, labels: np.ndarray, fold: np.ndarray, val: np.ndarray, epochs: int, model: str
        ) -> tuple[np.ndarray, dict]:
    """refine's out-of-sample pass: each fold's rows predicted by the model of the other folds, the
    held-out rows (fold -1) by the mean of the fold models."""
    start = time.perf_counter()
    probs = np.zeros((len(labels), 7), dtype=np.float32)
    outside = np.flatnonzero(fold < 0)
    trains = [np.flatnonzero((fold >= 0) & (fold != f) & ~val[f]) for f in range(FOLDS)]
    trainer = _Trainer(epochs, min(len(t) for t in trains) // BATCH, model)
    folds = []
    for f in range(FOLDS):
        held = np.flatnonzero(fold == f)
        (ph, po), info = trainer.fit_predict(x, labels, trains[f], np.flatnonzero(val[f]), [held, outside])
        probs[held] = ph
        probs[outside] += po / FOLDS
        folds.append({**info, "held_accuracy": round(float(np.mean(ph.argmax(1) == labels[held])), 4),
                      "elapsed_s": round(time.perf_counter() - start, 1)})
        print(f"  fold {f + 1}/{FOLDS}: {folds[-1]}", flush=True)
    trained = sum(fl["images_train"] for fl in folds) * epochs
    wall = time.perf_counter() - start
    return probs, {"model": model, "epochs": epochs, "wall_s": round(wall, 1), "trained_images_per_s": round(trained / wall, 1),
                   "folds": folds}


def run(data: Path, out: Path, passes: list[str], budget_s: float) -> None:
    """Throughput, then each pass ``SET:EPOCHS[:MODEL]`` in order while the budget lasts (each pass's
    probabilities and the timings are written as soon as it ends)."""
    import keras

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    d = np.load(data)
    x = d["pixels"][..., None].astype(np.float32)
    info = {"backend": keras.backend.backend(), "keras": keras.__version__}
    try:
        import jax
        info["devices"] = [str(dev) for dev in jax.devices()]
    except ImportError:
        pass
    print(info, flush=True)
    info["throughput"] = throughput(x, d["labels"])
    (out / "gpu.json").write_text(json.dumps(info, indent=1))
    per_epoch: dict[tuple[str, str], float] = {}   # seconds per epoch of a whole pass (5 folds), from its last pass
    for spec in passes:
        name, e, model = (spec.split(":") + ["shallow-cnn-std"])[:3]
        e = int(e)
        estimate = per_epoch.get((name, model), 0.0) * e
        if time.perf_counter() - start + estimate > budget_s:
            print(f"{spec} not run: about {estimate:.0f} s more would pass the budget of {budget_s:.0f} s", flush=True)
            continue
        if name == "real":
            xs, labels, fold, val = x, d["labels"], d["real_fold"], d["real_val"]
        else:
            xs, labels, fold, val = x[d["syn_rows"]], d["syn_labels"], d["syn_fold"], d["syn_val"]
        print(f"{spec}:", flush=True)
        probs, meta = oos(xs, labels, fold, val, e, model)
        per_epoch[(name, model)] = meta["wall_s"] / e
        key = f"{name}_e{e}" + ("" if model == "shallow-cnn-std" else f"_{model}")
        np.save(out / f"probs_{key}.npy", probs)
        info[key] = meta
        (out / "gpu.json").write_text(json.dumps(info, indent=1))
        print(f"{spec}: {meta['wall_s']} s, {meta['trained_images_per_s']:,.0f} images/s", flush=True)


# ------------------------------------------------------------------ score (here)

def score(data: Path, probs_dir: Path) -> None:
    from bench_refine import cleanlab_row, prf, print_table, rule_rows

    d = np.load(data)
    info = json.loads((probs_dir / "gpu.json").read_text())
    print(json.dumps({k: v for k, v in info.items() if not k.startswith(("real_", "syn_"))}, indent=1))
    for path in sorted(probs_dir.glob("probs_*.npy")):
        key = path.stem[len("probs_"):]
        name, e = key.split("_")[:2]
        probs = np.load(path)
        meta = info.get(key, {})
        if name == "real":
            labels, truth = d["labels"], d["truth"]
            scored, errors = truth >= 0, (truth >= 0) & (truth != d["labels"])
        else:
            labels, errors, scored = d["syn_labels"], d["syn_flips"], None
        acc = float(np.mean(probs.argmax(1) == labels))
        devices = ", ".join(info.get("devices", ["?"]))
        print(f"\n{key} ({meta.get('model')}), {e.lstrip('e')} epochs: {meta.get('wall_s')} s on {devices} "
              f"({meta.get('trained_images_per_s')} images/s trained), out-of-sample accuracy on the given labels {acc:.3f}"
              + (f", on FER+ {np.mean(probs.argmax(1)[scored] == truth[scored]):.3f}" if name == "real" else ""))
        rows = rule_rows(labels, probs, errors, scored, "") + cleanlab_row(labels, probs, errors, scored)
        rows.insert(0, ("every row", prf(np.ones(len(labels), dtype=bool), errors, scored)))
        print_table(f"{name} noise, {meta.get('model')}, {e.lstrip('e')} epochs (GPU probabilities)", rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--out", type=Path, default=ROOT / ".gpu" / "data.npz")
    r = sub.add_parser("run")
    r.add_argument("--data", type=Path, default=ROOT / ".gpu" / "data.npz")
    r.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-out")))
    r.add_argument("--passes", default="synthetic:10,real:10,synthetic:40,real:40,synthetic:40:fer-cnn",
                   help="SET:EPOCHS[:MODEL] in order; SET real or synthetic")
    r.add_argument("--budget-s", type=float, default=420.0, help="start no new pass after this many seconds")
    s = sub.add_parser("score")
    s.add_argument("--data", type=Path, default=ROOT / ".gpu" / "data.npz")
    s.add_argument("--probs", type=Path, required=True)
    args = parser.parse_args()
    if args.step == "prepare":
        if not CSV.exists() or not VOTES.exists():
            print(f"skipped: {CSV} or {VOTES} is absent (see ../shared/data/README.md)")
            return
        prepare(args.work, args.out)
    elif args.step == "run":
        run(args.data, args.out, args.passes.split(","), args.budget_s)
    else:
        score(args.data, args.probs)


if __name__ == "__main__":
    main()
