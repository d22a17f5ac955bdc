"""Issue 24, items 3 and 2(b): ``ferdata refine`` with its defaults on a whole FER2013 Training split.

1. ``ferdata import fer2013 ../shared/data/fer2013-train.csv.gz --ferplus fer2013-train-ferplus.csv
   --label-source fer2013``: FER2013's own labels (what refine judges), every row kept, FER+ votes beside
   them (refine never reads them);
2. ``ferdata refine WORK/train --out WORK/run`` through the real entry point (a child process), timed
   (wall and CPU; the 1-minute load average is sampled every 30 s, so a shared machine shows);
   extra arguments after ``--`` go to refine (e.g. ``-- --patience 3``);
3. the flags against FER+ (a row is *really mislabelled* when one of the 7 classes gets >= 5 of its 10
   votes and it is not FER2013's label; rows without such a class are not scored), on the same
   out-of-sample probabilities (``RUN/rounds/round_1/probs.npy``): ferdata's default (the guarded
   ``suspect_label`` of ``RUN/dataset``), predicted != given, the confident rule, the margin
   ranking, and cleanlab's ``find_label_issues`` when installed;
4. early stopping, measured on the run's own learning curves: training is deterministic, so a run
   with ``--patience P`` follows the same epochs until it stops; for each P the epoch each fold
   would stop at, whether its kept (best validation accuracy) epoch is the one the full run kept,
   and the epochs saved.

6. ``--effect``: issue 24 item 5 on a finished run: the same model (``--effect-model``, fixed epochs,
   cosine schedule, light augmentation) trained on the run's refined rows with (i) FER2013 labels,
   (ii) minus the default's flags, (iii) the confident rule's flags relabelled to the prediction,
   (iv) FER+ majority, (v) FER+ vote distributions; each scored on the FER+ majority of the rows the
   run carved out and never refined (its held-out split).

5. ``--synthetic``: the same on item 2's synthetic case: the rows where FER2013 and FER+ agree (>= 8
   of 10 votes), 20 % of their labels flipped to another class (seeded); precision / recall against
   the flips.

Run:  python tests/benchmarks/bench_refine_scale.py --work /tmp/refine-scale            (import + refine + tables)
      python tests/benchmarks/bench_refine_scale.py --work /tmp/refine-scale --synthetic
      python tests/benchmarks/bench_refine_scale.py --work /tmp/refine-scale --score    (tables of a finished run)
      python tests/benchmarks/bench_refine_scale.py --work /tmp/refine-scale --score --knn   (+ the kNN rows)
      python tests/benchmarks/bench_refine_scale.py --work /tmp/refine-scale --effect   (item 5's table)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
DATA = ROOT.parent / "shared" / "data"
CSV, VOTES = DATA / "fer2013-train.csv.gz", DATA / "fer2013-train-ferplus.csv"


def cli(*args: object) -> int:
    """``python -m ferdata ARGS`` in a child process (its progress lines go straight to this stderr)."""
    import subprocess

    return subprocess.run([sys.executable, "-m", "ferdata", *[str(a) for a in args]], cwd=ROOT, check=False).returncode


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_refine(src: Path, run: Path, extra: list[str]) -> dict:
    loads: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(30):
            loads.append(os.getloadavg()[0])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start, cpu0 = time.perf_counter(), _children_cpu()
    code = cli("refine", src, "--out", run, *extra)
    wall, cpu = time.perf_counter() - start, _children_cpu() - cpu0
    stop.set()
    info = {"exit": code, "wall_s": round(wall), "cpu_s": round(cpu), "args": extra,
            "load_mean": round(float(np.mean(loads)), 2) if loads else None,
            "load_max": round(float(np.max(loads)), 2) if loads else None, "cores": os.cpu_count()}
    (run.parent / f"{run.name}.timing.json").write_text(json.dumps(info, indent=2))
    return info


def score(run: Path, *, knn_src: Path | None = None) -> None:
    import datasets
    from bench_refine import cleanlab_row, ferplus_truth, prf, print_table, rule_rows

    ds = datasets.load_from_disk(str(run / "dataset"))["train"]
    names = ds.features["label"].names
    labels = np.asarray(ds["label"], dtype=np.int64)
    truth = ferplus_truth(ds["ferplus_votes"], names)
    scored, errors = truth >= 0, (truth >= 0) & (truth != labels)
    probs = np.load(run / "rounds" / "round_1" / "probs.npy")
    flags = np.asarray(ds["suspect_label"], dtype=bool)
    accuracy = float(np.mean(probs.argmax(1) == labels))
    print(f"\n{len(labels)} rows, {int(scored.sum())} scored (a FER+ class with >= 5 of 10 votes), "
          f"{int(errors.sum())} really mislabelled (base rate {errors[scored].mean():.3f}); out-of-sample accuracy "
          f"on FER2013 labels {accuracy:.3f}, on FER+ labels {np.mean(probs.argmax(1)[scored] == truth[scored]):.3f}")
    rows = [("ferdata default (guarded flags of RUN/dataset)", prf(flags, errors, scored))]
    rows += rule_rows(labels, probs, errors, scored, "")
    rows += cleanlab_row(labels, probs, errors, scored)
    rows += frontier(labels, probs, errors, scored)
    if knn_src is not None:
        near = knn_probs(run, knn_src)
        inside = near.sum(1) > 0   # the held-out split has no fold of its own: model alone there
        mixed = np.where(inside[:, None], (probs + near) / 2, probs)
        rows += [("kNN(25) label shares in the fold models' last hidden layer, argmax",
                  prf(inside & (near.argmax(1) != labels), errors, scored & inside)),
                 ("(model + kNN(25)) / 2, argmax", prf(mixed.argmax(1) != labels, errors, scored))]
    print_table("Real noise, all of fer2013-train, same out-of-sample probabilities", rows)


def frontier(labels: np.ndarray, probs: np.ndarray, errors: np.ndarray, scored: np.ndarray | None
             ) -> list[tuple[str, tuple[float, float, float, int]]]:
    """Rules beyond the standard rows, on the same probabilities: the normalised margin cut at fixed
    values, self-confidence p(given) cut at fixed values (where precision 0.65 at recall 0.6 lies)."""
    from bench_refine import prf

    n = len(labels)
    given = probs[np.arange(n), labels]
    other = probs.copy()
    other[np.arange(n), labels] = -1
    margin = given - other.max(1)
    rows = [(f"margin < -{d:.2f}", prf(margin < -d, errors, scored)) for d in (0.05, 0.08, 0.10, 0.15)]
    rows += [(f"p(given) < {t:.2f}", prf(given < t, errors, scored)) for t in (0.20, 0.25, 0.30, 0.35)]
    return rows


def knn_probs(run: Path, src: Path, k: int = 25) -> np.ndarray:
    """Label shares of the ``k`` nearest rows in each fold model's penultimate layer (cosine), for that
    fold's held-out rows, neighbours from its other rows (no extra training; issue 24's idea)."""
    import keras

    from ferdata.refine.config import RefineConfig
    from ferdata.refine.loop import _Run
    from ferdata.refine.rules import group_folds
    from ferdata.train import build_model

    meta = json.loads((run / "state.json").read_text())["identity"]["config"]
    cfg = RefineConfig(**{k2: v for k2, v in meta.items() if k2 in RefineConfig.__dataclass_fields__})
    import tempfile

    r = _Run(src, Path(tempfile.mkdtemp()), cfg, overwrite=True)
    current = np.load(run / "rounds" / "round_1" / "current.npy")
    labels = r.labels[current]
    folds = group_folds(labels, int(cfg.cv), seed=cfg.seed, groups=r._groups(current))
    out = np.zeros((len(current), r.num_classes))
    for f in range(int(cfg.cv)):
        model = build_model(cfg.model, (r.image_size, r.image_size, r.channels), r.num_classes)
        model.load_weights(str(run / "rounds" / "round_1" / f"fold_{f}" / "best.weights.h5"))
        feat = keras.Model(model.inputs, model.layers[-4].output)   # the last hidden layer, before dropout
        emb = np.concatenate([feat.predict_on_batch(x) for x, *_ in r.trainer._tf(r.pool.select(current))])
        emb /= np.linalg.norm(emb, axis=1, keepdims=True) + 1e-8
        held, ref = np.flatnonzero(folds == f), np.flatnonzero(folds != f)
        for s in range(0, len(held), 1024):
            q = held[s:s + 1024]
            near = np.argsort(-(emb[q] @ emb[ref].T), axis=1)[:, :k]
            votes = labels[ref][near]
            out[q] = np.stack([(votes == c).mean(1) for c in range(r.num_classes)], axis=1)
    full = np.zeros((len(r.labels), r.num_classes))
    full[current] = out
    return full


def make_synthetic(src: Path, out: Path, *, seed: int = 0) -> Path:
    """The rows where FER2013 and FER+ agree (>= 8 of 10 votes), 20 % of their labels flipped (seeded);
    the flipped rows are listed in ``OUT.flips.npy`` (positions in ``OUT``'s train split)."""
    import datasets
    from bench_refine import ferplus_truth, synthetic_flips

    from ferdata.dataset import new_manifest, save_dataset
    from ferdata.refine import _with_labels

    ds = datasets.load_from_disk(str(src))["train"]
    labels = np.asarray(ds["label"], dtype=np.int64)
    votes = ds["ferplus_votes"]
    clean, flip, noisy = synthetic_flips(labels, ferplus_truth(votes, ds.features["label"].names), votes, seed)
    subset = _with_labels(ds.select(clean.tolist()), noisy)
    save_dataset(datasets.DatasetDict({"train": subset}), out, manifest=new_manifest(seed=seed), overwrite=True)
    np.save(out.parent / f"{out.name}.flips.npy", flip)
    print(f"synthetic: {len(clean)} clean rows (FER2013 == FER+ with >= 8 votes), {int(flip.sum())} flipped", flush=True)
    return out


def score_synthetic(run: Path, flips: np.ndarray) -> None:
    import datasets
    from bench_refine import cleanlab_row, prf, print_table, rule_rows

    ds = datasets.load_from_disk(str(run / "dataset"))["train"]
    labels = np.asarray(ds["label"], dtype=np.int64)
    probs = np.load(run / "rounds" / "round_1" / "probs.npy")
    flags = np.asarray(ds["suspect_label"], dtype=bool)
    print(f"\n{len(labels)} rows, {int(flips.sum())} flipped; out-of-sample accuracy on the given labels "
          f"{np.mean(probs.argmax(1) == labels):.3f}")
    rows = [("ferdata default (guarded flags of RUN/dataset)", prf(flags, flips))]
    rows += rule_rows(labels, probs, flips, None, "")
    rows += cleanlab_row(labels, probs, flips, None)
    rows += frontier(labels, probs, flips, None)
    print_table("Synthetic 20 % flips of the rows where FER2013 and FER+ agree, same out-of-sample probabilities", rows)


def effect(run: Path, *, model: str, epochs: int, seed: int = 0, only: str = "") -> None:
    """Item 5: what each kind of label does to a model scored on FER+ labels of the untouched rows
    (``only``: the variants whose name starts with one of these comma-separated numerals, e.g. ``ii,v``)."""
    import datasets
    from bench_refine import ferplus_truth

    from ferdata.refine import _with_labels, find_suspects
    from ferdata.train import fit_model, predict_proba, to_tf_dataset
    from ferdata.train.config import TrainConfig
    from ferdata.train.run import prepare_training

    ds = datasets.load_from_disk(str(run / "dataset"))["train"]
    names = ds.features["label"].names
    labels = np.asarray(ds["label"], dtype=np.int64)
    truth = ferplus_truth(ds["ferplus_votes"], names)
    probs = np.load(run / "rounds" / "round_1" / "probs.npy")
    pool = np.load(run / "rounds" / "round_1" / "current.npy")
    test = np.setdiff1d(np.arange(len(labels)), pool)
    test = test[truth[test] >= 0]
    flags = np.asarray(ds["suspect_label"], dtype=bool)
    confident = find_suspects(labels, probs, rule="confident")
    relabelled = np.where(confident, probs.argmax(1), labels)
    sure = pool[truth[pool] >= 0]
    has_votes = np.asarray([sum(v) > 0 for v in ds["ferplus_votes"]])
    variants = {"(i) FER2013 labels": (pool, labels, None),
                "(ii) FER2013 minus the default's flags": (pool[~flags[pool]], labels, None),
                "(iii) confident flags relabelled to the prediction": (pool, relabelled, None),
                "(iv) FER+ majority (>= 5 of 10 votes)": (sure, truth, None),
                "(v) FER+ vote distributions (soft labels)": (pool[has_votes[pool]], labels, "ferplus_votes")}
    x_test = to_tf_dataset(ds.select(test.tolist()), image_size=48, channels=1, batch_size=256, num_classes=len(names))
    print(f"\nEffect ({model}, {epochs} epochs, cosine, light augmentation): {len(pool)} refined rows "
          f"({int(flags[pool].sum())} flagged, {int(confident[pool].sum())} confident flags), {len(test)} untouched "
          "held-out rows with a FER+ majority\n| training labels | rows | held-out accuracy (FER+) | "
          "held-out accuracy (FER2013) | seconds |\n|---|---|---|---|---|", flush=True)
    for name, (rows, y, soft) in variants.items():
        if only and not any(name.startswith(f"({v})") for v in only.split(",")):
            continue
        start = time.perf_counter()
        data = _with_labels(ds.select(rows.tolist()), y[rows])
        config = TrainConfig(model=model, epochs=epochs, augment="light", schedule="cosine", patience=0, seed=seed,
                             soft_labels=soft)
        net, train_ds, _ = prepare_training(config, data, data.select([0]), input_shape=(48, 48, 1),
                                            num_classes=len(names))
        fit_model(net, train_ds, None, epochs=epochs, patience=0, seed=seed, schedule="cosine", progress=None)
        pred = predict_proba(net, x_test).argmax(1)
        print(f"| {name} | {len(rows)} | {np.mean(pred == truth[test]):.3f} | {np.mean(pred == labels[test]):.3f} | "
              f"{time.perf_counter() - start:.0f} |", flush=True)


def early_stopping(run: Path, patiences: tuple[int, ...] = (2, 3, 5)) -> None:
    folds = sorted((run / "rounds" / "round_1").glob("fold_*/history.csv"))
    if not folds:
        print("no fold histories")
        return
    curves, best = [], []
    for path in folds:
        with path.open() as f:
            rows = list(csv.DictReader(f))
        curves.append([float(r["val_accuracy"]) for r in rows])
        # the epoch fit_model keeps: best validation accuracy, ties to the lower validation loss
        keys = [(float(r["val_accuracy"]), -float(r["val_loss"])) for r in rows]
        best.append(max(range(len(keys)), key=lambda i: (keys[i], -i)) + 1)
    full = sum(len(c) for c in curves)
    print(f"\nEarly stopping on the run's own curves ({len(curves)} folds, {full} epochs run; kept epochs {best}):")
    print("| patience | stops after | same kept epoch | epochs | saved |\n|---|---|---|---|---|")
    for p in patiences:
        stops, same = [], []
        for curve, b in zip(curves, best, strict=True):
            top, since, stop = -1.0, 0, len(curve)
            for e, v in enumerate(curve, start=1):
                if v > top:
                    top, since = v, 0
                else:
                    since += 1
                if since >= p:
                    stop = e
                    break
            stops.append(stop)
            same.append(b <= stop)
        total = sum(stops)
        print(f"| {p} | {stops} | {sum(same)}/{len(same)} | {total} | {1 - total / full:.0%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--score", action="store_true", help="only print the tables of a finished run")
    parser.add_argument("--synthetic", action="store_true",
                        help="refine the synthetic-flip subset instead (WORK/synthetic, run WORK/run-synthetic)")
    parser.add_argument("--knn", action="store_true", help="also score kNN label shares in the fold models' "
                        "embeddings (inference only, a few minutes)")
    parser.add_argument("--effect", action="store_true", help="item 5's table on the finished run WORK/run")
    parser.add_argument("--effect-model", default="shallow-cnn-std")
    parser.add_argument("--effect-epochs", type=int, default=10)
    parser.add_argument("--effect-only", default="", help="only these variants of --effect, e.g. ii,v")
    parser.add_argument("--run", default="run", help="the run directory under WORK (default: run)")
    parser.add_argument("extra", nargs="*", help="after --: options for ferdata refine")
    args = parser.parse_args()
    if not CSV.exists() or not VOTES.exists():
        print(f"skipped: {CSV} or {VOTES} is absent (see ../shared/data/README.md)")
        return
    src, run = args.work / "train", args.work / ("run-synthetic" if args.synthetic else args.run)
    if args.effect:
        effect(run, model=args.effect_model, epochs=args.effect_epochs, only=args.effect_only)
        return
    if not args.score:
        if not src.exists():
            start = time.perf_counter()
            code = cli("import", "fer2013", CSV, "--ferplus", VOTES, "--label-source", "fer2013", "--out", src, "-q")
            print(f"import: exit {code}, {time.perf_counter() - start:.0f} s", flush=True)
        refined = make_synthetic(src, args.work / "synthetic") if args.synthetic else src
        info = timed_refine(refined, run, args.extra)
        print(f"\nrefine {' '.join(args.extra) or '(defaults)'}: exit {info['exit']}, {info['wall_s']} s wall "
              f"({info['wall_s'] / 60:.1f} min), {info['cpu_s']} s CPU; 1-min load mean {info['load_mean']}, "
              f"max {info['load_max']} on {info['cores']} cores", flush=True)
    if args.synthetic:
        score_synthetic(run, np.load(args.work / "synthetic.flips.npy"))
    else:
        score(run, knn_src=src if args.knn else None)
    early_stopping(run)


if __name__ == "__main__":
    main()
