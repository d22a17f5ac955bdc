"""Benchmark of ``ferdata refine --mode flag`` against human relabelling (FER+), on ../shared/data.

Three tables, each with its baselines measured in the same run:

1. **real noise** -- all of fer2013-dev. A row is *really mislabelled* when the FER+ votes give one of
   the 7 classes at least 5 of the 10 votes and it is not FER2013's label; *really correct* when that
   class is FER2013's; rows without such a class are left out of precision / recall. Flags come from
   one out-of-sample ``--cv K`` pass of the refine model; each rule (``argmax``, ``confident``, the
   ``--top K`` ranking with K = the confident rule's count) is scored, beside a pixel
   logistic-regression baseline (same folds idea: ``cross_val_predict``, predicted != given) and the
   base rate (flag everything).
2. **synthetic flips on clean rows** -- the rows where FER2013 and FER+ agree with >= 8 of 10 votes
   (clean by two independent labellings); 20 % of them get another class at random. Precision,
   recall and F1 of each rule, beside predicted != given and, if installed, cleanlab's
   ``find_label_issues`` on the same out-of-sample probabilities.
3. **held-out effect** -- an untouched 20 % split; the same model trained on (a) FER2013 labels,
   (b) FER2013 labels without the flagged rows, (c) FER+ majority labels; accuracy on the FER+
   labels of the untouched split.

4. **models** (``--sections models --on synthetic|real --models a,b@lr``) -- candidate refine models
   trained on the same folds (fixed epochs, no early stopping), each with the rule table: how the
   default of ``--model auto`` was chosen.

Run:  nice -n 10 python tests/benchmarks/bench_refine.py                      (defaults: shallow-cnn, --cv 5, 20 epochs)
      nice -n 10 python tests/benchmarks/bench_refine.py --cv 3 --epochs 10 --sections real   (quicker)
      nice -n 10 python tests/benchmarks/bench_refine.py --probs hog-lr --sections real,synthetic  (no CNN: the
          rules on HOG + logistic-regression probabilities; minutes even on a loaded machine)
      nice -n 10 python tests/benchmarks/bench_refine.py --sections models --on synthetic --cv 3 --epochs 12 \
          --models shallow-cnn,refine-cnn     (the candidate table of docs/refine.md; --on real for real noise)
      nice -n 10 python tests/benchmarks/bench_refine.py --work W --sections models,heldout-models --on real \
          --cv 3 --epochs 12 --models shallow-cnn     (held-out effect incl. soft labels, small scale)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))   # this checkout's ferdata, not an installed copy
DATA = ROOT.parent / "shared" / "data"
CSV, VOTES = DATA / "fer2013-dev.csv", DATA / "fer2013-dev-ferplus.csv"


def ferplus_truth(votes: list[list[int]], names: list[str]) -> np.ndarray:
    """Index (in ``names``) of the class with >= 5 of the 10 raw FER+ votes, or -1."""
    from ferdata.sources.fer2013 import FERPLUS_CLASSES

    out = np.full(len(votes), -1, dtype=np.int64)
    for i, v in enumerate(votes):
        top = int(np.argmax(v))
        if v[top] >= 5 and top < len(FERPLUS_CLASSES) and FERPLUS_CLASSES[top] in names:
            out[i] = names.index(FERPLUS_CLASSES[top])
    return out


def synthetic_flips(labels: np.ndarray, truth: np.ndarray, votes: list[list[int]], seed: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clean rows (FER2013 == FER+ with >= 8 of 10 votes), which 20 % are flipped, and the noisy labels."""
    clean = np.flatnonzero([(t >= 0 and t == lab and max(v) >= 8) for t, lab, v in zip(truth, labels, votes,
                                                                                        strict=True)])
    rng = np.random.default_rng(seed)
    true = labels[clean]
    flip = rng.random(len(true)) < 0.2
    noisy = true.copy()
    present = np.unique(true)
    for i in np.flatnonzero(flip):
        noisy[i] = int(rng.choice([c for c in present if c != true[i]]))
    return clean, flip, noisy


def prf(found: np.ndarray, errors: np.ndarray, scored: np.ndarray | None = None) -> tuple[float, float, float, int]:
    if scored is not None:
        found, errors = found[scored], errors[scored]
    hits = float((found & errors).sum())
    p = hits / max(1.0, float(found.sum()))
    r = hits / max(1.0, float(errors.sum()))
    return p, r, (2 * p * r / (p + r) if p + r else 0.0), int(found.sum())


def oos_probs(src: Path, run: Path, args: argparse.Namespace) -> tuple[np.ndarray, dict, float]:
    """Out-of-sample probabilities of the train split from one flag run (and its guard, seconds)."""
    from ferdata.refine import RefineConfig, refine

    start = time.perf_counter()
    cpu0 = time.process_time()
    result = refine(src, run, RefineConfig(mode="flag", model=args.model, cv=args.cv, epochs=args.epochs,
                                           compare=False, seed=args.seed), overwrite=True)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    print(f"  refine --mode flag --model {args.model} --cv {args.cv} --epochs {args.epochs}: {wall:.0f} s wall, "
          f"{cpu:.0f} s CPU (this process; the machine was shared), out-of-sample accuracy "
          f"{result.guard['accuracy']:.3f}, guard {'TRIGGERED' if result.guard['triggered'] else 'ok'}", flush=True)
    return np.load(run / "rounds" / "round_1" / "probs.npy"), result.guard, wall


def features(ds, kind: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    """``pixels``: 24x24 standardised pixels; ``hog``: HOG of the 48x48 image (8x8 cells, 9 orientations)."""
    images = [np.asarray(im.convert("L"), dtype=np.float32) / 255 for im in ds["image"]]
    if kind == "hog":
        from skimage.feature import hog

        return np.stack([hog(im, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2)) for im in images])
    from PIL import Image

    x = np.stack([np.asarray(Image.fromarray((im * 255).astype(np.uint8)).resize((24, 24)), np.float32).ravel()
                  for im in images])
    return (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-6)


def lr_probs(ds, labels: np.ndarray, seed: int, kind: str = "pixels", folds: int = 5) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Logistic regression on ``features(kind)``: out-of-sample (``folds``-fold cross_val_predict) probabilities."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    model = LogisticRegression(max_iter=500, C=0.05 if kind == "pixels" else 0.5)
    return cross_val_predict(model, features(ds, kind), labels,
                             cv=StratifiedKFold(folds, shuffle=True, random_state=seed), method="predict_proba")


def probs_for(src: Path, run: Path, ds, labels: np.ndarray, args: argparse.Namespace) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Out-of-sample probabilities from ``--probs``: the refine model (``model``) or a cheap HOG/pixel LR."""
    cache = run.parent / f"{run.name}-{args.probs}-cv{args.cv}-e{args.epochs}-probs.npy"
    if cache.exists():
        probs = np.load(cache)
        print(f"  reusing {cache}: accuracy on the given labels {np.mean(probs.argmax(1) == labels):.3f}")
        return probs
    if args.probs == "model":
        probs = oos_probs(src, run, args)[0]
    else:
        start, cpu0 = time.perf_counter(), time.process_time()
        probs = lr_probs(ds, labels, args.seed, "hog" if args.probs == "hog-lr" else "pixels", args.cv)
        print(f"  {args.probs} {args.cv}-fold out-of-sample probabilities: {time.perf_counter() - start:.0f} s wall, "
              f"{time.process_time() - cpu0:.0f} s CPU, accuracy on the given labels "
              f"{np.mean(probs.argmax(1) == labels):.3f}", flush=True)
    np.save(cache, probs)
    return probs


def rule_rows(labels: np.ndarray, probs: np.ndarray, errors: np.ndarray, scored: np.ndarray | None,
              prefix: str) -> list[tuple[str, tuple[float, float, float, int]]]:
    from ferdata.refine import channel_temperature, error_posterior, expected_f1_cut, find_suspects

    rows = []
    confident = find_suspects(labels, probs, rule="confident")
    candidates = [("argmax (predicted != given)", find_suspects(labels, probs, rule="argmax")),
                  (f"posterior (the default: calibrated through the channel, T = {channel_temperature(labels, probs):.2f})",
                   find_suspects(labels, probs, rule="posterior")),
                  ("posterior at face value (T = 1, session 36)",
                   expected_f1_cut(error_posterior(labels, probs, temperature=1))),
                  ("confident (confident learning)", confident),
                  (f"top {int(confident.sum())} by normalised margin",
                   find_suspects(labels, probs, top=max(1, int(confident.sum()))))]
    for share in (0.1, 0.2, 0.3):
        k = max(1, int(round(share * len(labels))))
        candidates.append((f"top {k} ({share:.0%}) by normalised margin", find_suspects(labels, probs, top=k)))
    for name, found in candidates:
        rate = float(found.mean())
        rows.append((f"{prefix}{name}{' [guard: flag rate %.0f%% > 50%%]' % (100 * rate) if rate > 0.5 else ''}",
                     prf(found, errors, scored)))
    return rows


def cleanlab_row(labels: np.ndarray, probs: np.ndarray, errors: np.ndarray, scored: np.ndarray | None
                 ) -> list[tuple[str, tuple[float, float, float, int]]]:
    try:
        from cleanlab.filter import find_label_issues
    except ImportError:
        print("  cleanlab: not installed (optional extra; pip install cleanlab to compare)")
        return []
    issues = np.asarray(find_label_issues(labels, probs), dtype=bool)
    return [("cleanlab find_label_issues (same probs)", prf(issues, errors, scored))]


def compare_models(x: np.ndarray, y: np.ndarray, errors: np.ndarray, scored: np.ndarray | None, num_classes: int,
                   args: argparse.Namespace, title: str, save: Path) -> None:
    """Candidate refine models on the same stratified folds: fixed epochs, Adam, batch 64, no early stopping.

    ``--models name[@lr],...``; each gets the rule table (plus cleanlab when installed) of its own
    out-of-sample probabilities, so the default of ``--model auto`` can be read off one run.
    """
    import keras
    from sklearn.model_selection import StratifiedKFold

    from ferdata.train import build_model

    for cand in args.models.split(","):
        name, _, lr = cand.partition("@")
        probs = np.zeros((len(y), num_classes), np.float32)
        start = time.perf_counter()
        for k, (tr, te) in enumerate(StratifiedKFold(args.cv, shuffle=True, random_state=args.seed).split(x, y)):
            keras.utils.set_random_seed(args.seed + k)
            model = build_model(name, x.shape[1:], num_classes)
            model.compile(optimizer=keras.optimizers.Adam(float(lr or 1e-3)), loss="sparse_categorical_crossentropy")
            model.fit(x[tr], y[tr], batch_size=64, epochs=args.epochs, verbose=0)
            probs[te] = model.predict(x[te], batch_size=256, verbose=0)
            print(f"  {cand} fold {k + 1}/{args.cv}: {time.perf_counter() - start:.0f} s", flush=True)
        np.save(save / f"models-{args.on}-{cand}-cv{args.cv}-e{args.epochs}-probs.npy", probs)
        rows = rule_rows(y, probs, errors, scored, "") + cleanlab_row(y, probs, errors, scored)
        print_table(f"{title} | {cand} | {args.cv} folds x {args.epochs} epochs | {time.perf_counter() - start:.0f} s "
                    f"wall | out-of-sample accuracy {np.mean(probs.argmax(1) == y):.3f}", rows)


def heldout_models(x: np.ndarray, labels: np.ndarray, votes: list[list[int]], truth: np.ndarray, names: list[str],
                   probs: np.ndarray, args: argparse.Namespace) -> None:
    """Held-out effect at small scale: ``args.model`` trained (fixed epochs) on (a) FER2013 labels, (b) those
    minus the argmax flags of ``probs`` (out-of-sample probabilities of every row), (c) FER+ majority,
    (d) the FER+ vote distribution (soft labels); accuracy on FER+ labels of an untouched 20 % split."""
    import keras

    from ferdata.refine import carve, find_suspects
    from ferdata.sources.fer2013 import FERPLUS_CLASSES
    from ferdata.train import build_model

    rest, test = carve(labels, 0.2, seed=args.seed + 1)
    test = test[truth[test] >= 0]
    flag = find_suspects(labels[rest], probs[rest], rule="argmax")
    soft = np.zeros((len(labels), len(names)), np.float32)
    raw = np.asarray(votes, np.float32)
    for c, n in enumerate(FERPLUS_CLASSES):
        if n in names:
            soft[:, names.index(n)] = raw[:, c]
    has = soft.sum(1) > 0
    soft[has] /= soft[has].sum(1, keepdims=True)
    eye = np.eye(len(names), dtype=np.float32)
    sure = rest[truth[rest] >= 0]
    variants = {"(a) FER2013 labels": (rest, eye[labels[rest]]),
                "(b) FER2013 labels, argmax flags removed": (rest[~flag], eye[labels[rest][~flag]]),
                "(c) FER+ majority (>= 5 votes)": (sure, eye[truth[sure]]),
                "(d) FER+ vote distribution (soft labels)": (rest[has[rest]], soft[rest[has[rest]]])}
    print(f"\nHeld-out effect ({args.model}, {args.epochs} epochs): train pool {len(rest)} rows ({int(flag.sum())} "
          f"argmax-flagged), untouched test {len(test)} rows with a FER+ majority\n"
          "| training labels | rows | test accuracy (FER+ labels) | test accuracy (FER2013 labels) |\n|---|---|---|---|")
    for name, (idx, y) in variants.items():
        keras.utils.set_random_seed(args.seed)
        model = build_model(args.model, x.shape[1:], len(names))
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
        model.fit(x[idx], y, batch_size=64, epochs=args.epochs, verbose=0)
        pred = model.predict(x[test], batch_size=256, verbose=0).argmax(1)
        print(f"| {name} | {len(idx)} | {np.mean(pred == truth[test]):.3f} | {np.mean(pred == labels[test]):.3f} |",
              flush=True)


def print_table(title: str, rows: list[tuple[str, tuple[float, float, float, int]]]) -> None:
    print(f"\n{title}\n| flags | found | precision | recall | F1 |\n|---|---|---|---|---|")
    for name, (p, r, f, n) in rows:
        print(f"| {name} | {n} | {p:.3f} | {r:.3f} | {f:.3f} |")


def save(dd, out: Path) -> Path:  # type: ignore[no-untyped-def]
    from ferdata.dataset import new_manifest, save_dataset

    return save_dataset(dd, out, manifest=new_manifest(seed=0), overwrite=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="auto", help="refine --model for --probs model (auto: the flag default)")
    parser.add_argument("--cv", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sections", default="real,synthetic,heldout")
    parser.add_argument("--probs", choices=("model", "hog-lr", "pixel-lr"), default="model",
                        help="where the out-of-sample probabilities come from: the refine model (refine --mode flag), "
                             "or a cheap logistic regression on HOG / pixels (minutes on a loaded CPU)")
    parser.add_argument("--models", default="shallow-cnn,refine-cnn",
                        help="section models: candidate refine models name[@lr],... on the same folds")
    parser.add_argument("--on", choices=("synthetic", "real"), default="synthetic", help="data of section models")
    parser.add_argument("--work", default=None, help="scratch directory (default: a temporary one)")
    args = parser.parse_args(argv)
    from ferdata.refine import RefineConfig

    args.model = RefineConfig(mode="flag", model=args.model).model  # auto -> the flag default, for build_model too
    if not CSV.exists() or not VOTES.exists():
        print(f"skipped: {CSV} or {VOTES} is absent (see ../shared/data/README.md)")
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import datasets

    from ferdata.dataset import label_names, open_dataset
    from ferdata.progress import disable_progress_bars
    from ferdata.steps import apply_step

    disable_progress_bars()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-refine-"))
    work.mkdir(parents=True, exist_ok=True)
    imported = work / "imported"
    if not (imported / "ferdata.json").exists():
        apply_step("import_fer2013", {"csv": str(CSV), "ferplus": str(VOTES), "label_source": "fer2013"},
                   out=imported, overwrite=True)
    full = open_dataset(imported)["train"]
    names = label_names(open_dataset(imported))
    labels = np.asarray(full["label"], dtype=np.int64)
    votes = [list(v) for v in full["ferplus_votes"]]
    truth = ferplus_truth(votes, names)
    sections = set(args.sections.split(","))
    print(f"fer2013-dev: {len(labels)} rows; FER+ gives a class with >= 5 votes for {int((truth >= 0).sum())}; "
          f"of those FER2013 disagrees on {int(((truth >= 0) & (truth != labels)).sum())} "
          f"({((truth >= 0) & (truth != labels)).sum() / max(1, (truth >= 0).sum()):.1%})", flush=True)

    if "models" in sections:
        x = np.stack([np.asarray(im.convert("L"), np.float32) for im in full["image"]])[..., None]
        if args.on == "synthetic":
            clean, flip, noisy = synthetic_flips(labels, truth, votes, args.seed)
            print(f"models on synthetic flips: {len(clean)} clean rows, {int(flip.sum())} flipped", flush=True)
            compare_models(x[clean], noisy, flip, None, len(names), args, "Synthetic 20 % flips", work)
        else:
            compare_models(x, labels, truth != labels, truth >= 0, len(names), args, "Real noise vs FER+", work)

    if "heldout-models" in sections:  # needs the probabilities of --sections models --on real (same --cv/--epochs)
        x = np.stack([np.asarray(im.convert("L"), np.float32) for im in full["image"]])[..., None]
        probs = np.load(work / f"models-real-{args.models.split(',')[0]}-cv{args.cv}-e{args.epochs}-probs.npy")
        heldout_models(x, labels, votes, truth, names, probs, args)

    if "real" in sections:
        scored = truth >= 0
        errors = truth != labels
        probs = probs_for(imported, work / "real-run", full, labels, args)
        rows = rule_rows(labels, probs, errors, scored, "")
        rows += cleanlab_row(labels, probs, errors, scored)
        lr = lr_probs(full, labels, args.seed, "pixels")
        rows.append(("baseline: pixel logistic regression, predicted != given", prf(lr.argmax(1) != labels, errors,
                                                                                     scored)))
        rows.append(("baseline: flag every row (base rate)", prf(np.ones(len(labels), bool), errors, scored)))
        print_table(f"Real noise: flags vs FER+ (>= 5 votes), {int(scored.sum())} rows scored", rows)

    if "synthetic" in sections:
        clean, flip, noisy = synthetic_flips(labels, truth, votes, args.seed)
        sub = full.select(clean.tolist())
        sub = sub.remove_columns("label").add_column("label", noisy.tolist(), feature=full.features["label"])
        src = save(datasets.DatasetDict({"train": sub}), work / "synthetic")
        print(f"\nsynthetic: {len(clean)} clean rows (FER2013 == FER+ with >= 8 of 10 votes), "
              f"{int(flip.sum())} flipped", flush=True)
        probs = probs_for(src, work / "synthetic-run", sub, noisy, args)
        rows = rule_rows(noisy, probs, flip, None, "")
        rows.append(("baseline: pixel logistic regression, predicted != given",
                     prf(lr_probs(sub, noisy, args.seed, "pixels").argmax(1) != noisy, flip)))
        rows += cleanlab_row(noisy, probs, flip, None)
        print_table("Synthetic 20 % flips on clean rows", rows)

    if "heldout" in sections:
        from ferdata.refine import carve, find_suspects

        rest, test = carve(labels, 0.2, seed=args.seed + 1)
        test = test[truth[test] >= 0]
        train_ds = full.select(rest.tolist())
        src = save(datasets.DatasetDict({"train": train_ds}), work / "heldout-train")
        probs = probs_for(src, work / "heldout-run", train_ds, labels[rest], args)
        flagged = find_suspects(labels[rest], probs, rule="confident")
        variants = {"(a) FER2013 labels": (rest, labels[rest]),
                    "(b) FER2013 labels, confident flags removed": (rest[~flagged], labels[rest][~flagged]),
                    "(c) FER+ labels (>= 5 votes)": (rest[truth[rest] >= 0], truth[rest][truth[rest] >= 0])}
        print(f"\nHeld-out effect: train {len(rest)} rows, untouched test {len(test)} rows scored on FER+ labels\n"
              "| training labels | rows | test accuracy (FER+ labels) | test accuracy (FER2013 labels) |\n|---|---|---|---|")
        for name, (idx, y) in variants.items():
            acc_plus, acc_fer = train_and_score(full, idx, y, test, truth[test], labels[test], args)
            print(f"| {name} | {len(idx)} | {acc_plus:.3f} | {acc_fer:.3f} |", flush=True)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def train_and_score(full, idx: np.ndarray, y: np.ndarray, test: np.ndarray, y_plus: np.ndarray,  # type: ignore[no-untyped-def]
                    y_fer: np.ndarray, args: argparse.Namespace) -> tuple[float, float]:
    """Train the model on rows ``idx`` with labels ``y`` (80/20 for the best epoch); accuracy on ``test``."""
    import keras

    from ferdata.refine import _with_labels, carve
    from ferdata.train import build_model, fit_model, predict_proba, to_tf_dataset

    data = _with_labels(full.select(idx.tolist()), y)
    tr, va = carve(y, 0.2, seed=args.seed)
    keras.utils.set_random_seed(args.seed)
    model = build_model(args.model, (48, 48, 1), len(full.features["label"].names))

    def tf(ds, shuffle=False):  # type: ignore[no-untyped-def]
        return to_tf_dataset(ds, image_size=48, channels=1, batch_size=64, shuffle=shuffle, seed=args.seed)

    fit_model(model, tf(data.select(tr.tolist()), True), tf(data.select(va.tolist())), epochs=args.epochs,
              patience=5, seed=args.seed, progress=None)
    pred = predict_proba(model, tf(full.select(test.tolist()))).argmax(1)
    return float(np.mean(pred == y_plus)), float(np.mean(pred == y_fer))


def test_bench_refine() -> None:  # pragma: no cover - run with pytest -s tests/benchmarks/bench_refine.py
    assert main(["--cv", "3", "--epochs", "10"]) == 0


if __name__ == "__main__":
    sys.exit(main())
