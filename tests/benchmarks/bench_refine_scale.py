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

5. ``--synthetic``: the same on item 2's synthetic case: the rows where FER2013 and FER+ agree (>= 8
   of 10 votes), 20 % of their labels flipped to another class (seeded); precision / recall against
   the flips.

Run:  python tests/benchmarks/bench_refine_scale.py --work /tmp/refine-scale            (import + refine + tables)
      python tests/benchmarks/bench_refine_scale.py --work /tmp/refine-scale --synthetic
      python tests/benchmarks/bench_refine_scale.py --work /tmp/refine-scale --score    (tables of a finished run)
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


def score(run: Path) -> None:
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
    print_table("Real noise, all of fer2013-train, same out-of-sample probabilities", rows)


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
    print_table("Synthetic 20 % flips of the rows where FER2013 and FER+ agree, same out-of-sample probabilities", rows)


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
    parser.add_argument("extra", nargs="*", help="after --: options for ferdata refine")
    args = parser.parse_args()
    if not CSV.exists() or not VOTES.exists():
        print(f"skipped: {CSV} or {VOTES} is absent (see ../shared/data/README.md)")
        return
    src, run = args.work / "train", args.work / ("run-synthetic" if args.synthetic else "run")
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
        score(run)
    early_stopping(run)


if __name__ == "__main__":
    main()
