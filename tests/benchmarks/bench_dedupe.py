"""Benchmarks of ferdata.dedupe: duplicate-detection quality, search speed, hashing throughput.

Run all three (about 2-3 minutes on a 2-core machine):

    python tests/benchmarks/bench_dedupe.py
    python tests/benchmarks/bench_dedupe.py quality          # or: speed, hashing
    python tests/benchmarks/bench_dedupe.py speed --n 200000 # smaller speed run (documented flag)

* quality: transformed copies of ../shared/data/fer2013-dev images (JPEG q30-90, 2x
  downscale-upscale, brightness +-10 %, 2-4 px crop, Gaussian noise sigma=2; horizontal flip
  reported separately) mixed with the untouched distinct images; precision and recall of the
  duplicate pairs per hash method and threshold 0..12. The baseline in the same run is
  threshold 0 (identical hashes only).
* speed: first the whole dedupe step on fer2013-train (26,223 rows, defaults, --num-proc 2) beside
  one single-process ``imagehash.phash`` pass over the same images, in turns in the same run
  (``step-vs-phash`` alone: ``--rounds``, ``--num-proc``); then find_duplicates over N random
  64-bit hashes with 10 % planted near copies (1-4 flipped bits) at radius 8, beside a vectorised
  numpy brute force on the 100,000 set (same pairs checked).
* step: the dedupe step's global pass over N pre-hashed rows (train + test, 10 % copies).
* hashing: images per second of ``ferdata dedupe`` hashing fer2013-dev (5 copies, 17,180 images)
  with num_proc 1 and 2.
"""

from __future__ import annotations

import argparse
import io
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"

from ferdata.dedupe import (  # noqa: E402
    DEFAULT_METHOD,
    DEFAULT_MIN_SCORE,
    DEFAULT_SIMILAR_SCORE,
    DEFAULT_THRESHOLD,
    METHODS,
    brute_force_pairs,
    find_duplicate_arrays,
    image_hash,
)
from ferdata.images import pixel_id  # noqa: E402

TRANSFORMS = ("jpeg", "downup", "brightness", "crop", "noise")
#: copies of other pixels (rotations, mirrors, negatives): nine per face makes fer2013-dev x10 without duplicates
DISTINCT = ("flip", "rot90", "rot180", "rot270", "flipud", "transpose", "transverse", "invert", "invert_rot90")


def load_dev_images(limit: int | None = None) -> list[np.ndarray]:
    """fer2013-dev images (48x48 gray), distinct pixels only, in a fixed order."""
    from PIL import Image

    root = DATA / "fer2013-dev"
    if not root.exists():
        raise SystemExit(f"skipped: {root} is absent (see ../shared/data/README.md)")
    seen, images = set(), []
    for path in sorted(root.glob("*/*.png")):
        arr = np.asarray(Image.open(path).convert("L"), dtype=np.uint8)
        pid = pixel_id(arr)
        if pid not in seen:
            seen.add(pid)
            images.append(arr)
        if limit and len(images) >= limit:
            break
    return images


def transform(arr: np.ndarray, name: str, rng: np.random.Generator) -> np.ndarray:
    """One transformed copy of a 48x48 gray image."""
    from PIL import Image

    img = Image.fromarray(arr)
    h, w = arr.shape
    if name == "jpeg":
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(rng.integers(30, 91)))
        return np.asarray(Image.open(buf).convert("L"))
    if name == "downup":
        return np.asarray(img.resize((w // 2, h // 2), Image.BILINEAR).resize((w, h), Image.BILINEAR))
    if name == "brightness":
        factor = 1.1 if rng.random() < 0.5 else 0.9
        return np.clip(arr.astype(np.float64) * factor, 0, 255).round().astype(np.uint8)
    if name == "crop":
        c = int(rng.integers(2, 5))
        ox, oy = int(rng.integers(0, c + 1)), int(rng.integers(0, c + 1))
        return np.asarray(img.crop((ox, oy, ox + w - c, oy + h - c)).resize((w, h), Image.BILINEAR))
    if name == "noise":
        return np.clip(arr + rng.normal(0, 2, arr.shape), 0, 255).round().astype(np.uint8)
    if name == "flip":
        return arr[:, ::-1].copy()
    if name in DISTINCT:  # other pixels, not a near duplicate: a FER2013-size input that dedupe keeps
        out = np.rot90(arr, {"rot90": 1, "rot180": 2, "rot270": 3}.get(name.removeprefix("invert_"), 0))
        out = {"flipud": arr[::-1], "transpose": arr.T, "transverse": np.rot90(arr, 2).T}.get(name, out)
        return np.ascontiguousarray(255 - out if name.startswith("invert") else out)
    raise ValueError(name)


def synthetic_pool(loaded: list[np.ndarray], copies_per_transform: int, rng: np.random.Generator, *,
                   verbose: bool = False) -> tuple[list[np.ndarray], list[np.ndarray], list[int], list[str]]:
    """The synthetic pool: fer2013-dev images without pre-existing near duplicates (phash <= 6), then
    ``copies_per_transform`` transformed copies per transform. Returns originals, items, source, kind."""
    ph = np.array([int(image_hash(x, "phash"), 16) for x in loaded], dtype=np.uint64)
    ci, cj, _ = find_duplicate_arrays(ph, 6)
    known = set(ci.tolist()) | set(cj.tolist())
    originals = [x for k, x in enumerate(loaded) if k not in known]
    if verbose:
        print(f"quality: {len(loaded)} distinct fer2013-dev images; {len(known)} in {len(ci)} pre-existing "
              f"near-duplicate pairs (phash <= 6) left out of the pool")
    n = len(originals)
    items, source, kind = list(originals), list(range(n)), ["original"] * n
    for name in TRANSFORMS:
        for k in rng.choice(n, copies_per_transform, replace=False):
            items.append(transform(originals[k], name, rng))
            source.append(int(k))
            kind.append(name)
    return originals, items, source, kind


def quality(copies_per_transform: int = 400, max_threshold: int = 12) -> None:
    """Precision / recall table per method and threshold."""
    rng = np.random.default_rng(0)
    loaded = load_dev_images()
    # fer2013-dev already holds near duplicates (visually checked: pairs at phash distance <= 6
    # are the same photo, with another watermark or a slightly different crop). Copies of them
    # would have true partners we cannot label, so both members leave the pool. Pairs of two
    # untouched images are not labelled at all: they are counted in the orig-orig column and
    # left out of precision (at phash 8, 7 of 8 sampled such pairs were real duplicates too).
    originals, items, source, kind = synthetic_pool(loaded, copies_per_transform, rng, verbose=True)
    n = len(originals)
    flips = [(int(k), transform(originals[k], "flip", rng)) for k in rng.choice(n, copies_per_transform, replace=False)]
    source_arr, kind_arr = np.array(source), np.array(kind)
    print(f"quality: {n} pool images + {copies_per_transform} copies per transform "
          f"({', '.join(TRANSFORMS)}); flips ({copies_per_transform}) scored separately")
    true_total = {t: copies_per_transform for t in TRANSFORMS}
    # pairs that should be found: (original, copy) and (copy, copy) of one original
    groups = np.bincount(source_arr)
    n_true = int((groups * (groups - 1) // 2).sum())
    print(f"true duplicate pairs: {n_true}")
    print("precision: over pairs with at least one synthetic copy; recall: over all copy pairs "
          "(flips excluded); per-transform columns: recall of (original, copy) pairs")
    header = "method  thr  precision  recall  " + "  ".join(f"{t:>10}" for t in TRANSFORMS) + "  flip  orig-orig"
    print(header)
    for method in METHODS:
        start = time.perf_counter()
        hashes = [image_hash(x, method) for x in items]
        flip_h = [image_hash(x, method) for _, x in flips]
        seconds = time.perf_counter() - start
        hv = np.array([int(x, 16) for x in hashes], dtype=np.uint64)
        fv = np.array([int(x, 16) for x in flip_h], dtype=np.uint64)
        flip_d = np.bitwise_count(hv[[k for k, _ in flips]] ^ fv)
        i, j, d = find_duplicate_arrays(hv, max_threshold)
        same = source_arr[i] == source_arr[j]
        orig_orig = (kind_arr[i] == "original") & (kind_arr[j] == "original")
        for thr in range(0, max_threshold + 1):
            sel = d <= thr
            tp = int((sel & same).sum())
            found = int((sel & ~orig_orig).sum())
            precision = tp / found if found else 1.0
            recall = tp / n_true
            per = []
            for t in TRANSFORMS:
                # (original, copy) pairs of transform t
                m = sel & same & (((kind_arr[i] == "original") & (kind_arr[j] == t)) |
                                  ((kind_arr[j] == "original") & (kind_arr[i] == t)))
                per.append(int(m.sum()) / true_total[t])
            flip_recall = float((flip_d <= thr).mean())
            mark = " <- default" if (method, thr) == (DEFAULT_METHOD, DEFAULT_THRESHOLD) else ""
            print(f"{method:6} {thr:4}  {precision:9.4f}  {recall:6.4f}  "
                  + "  ".join(f"{x:10.3f}" for x in per)
                  + f"  {flip_recall:.3f}  {int((sel & orig_orig).sum()):9}{mark}")
        print(f"  ({method}: {len(items) + len(flips)} hashes in {seconds:.1f}s)")
    crop_variants(items, source_arr, kind_arr, n_true, copies_per_transform)


def _crop_variant_hashes(arr: np.ndarray, c: int = 3) -> list[int]:
    """phash of 5 crops of c px (4 corners + centre), resized back: extra query hashes."""
    from PIL import Image

    img = Image.fromarray(arr)
    w, h = img.size
    boxes = [(0, 0), (c, 0), (0, c), (c, c), (c / 2, c / 2)]
    return [int(image_hash(np.asarray(img.crop((ox, oy, ox + w - c, oy + h - c)).resize((w, h), Image.BILINEAR)),
                           "phash"), 16) for ox, oy in boxes]


def crop_variants(items: list[np.ndarray], source_arr: np.ndarray, kind_arr: np.ndarray, n_true: int,
                  copies: int) -> None:
    """Experiment (not in the product): phash plus 5 crop variants per image as extra queries.

    A pair matches when the main hashes, or a variant of one and the main hash of the other, are
    within the threshold. Shows the recall/precision trade-off on crops.
    """
    main = np.array([int(image_hash(x, "phash"), 16) for x in items], dtype=np.uint64)
    var = np.array([_crop_variant_hashes(x) for x in items], dtype=np.uint64)
    n, nv = var.shape
    hashes = np.concatenate([main, var.ravel()])
    owner = np.concatenate([np.arange(n), np.repeat(np.arange(n), nv)])
    is_main = np.arange(len(hashes)) < n
    i, j, d = find_duplicate_arrays(hashes, 12)
    ok = (is_main[i] | is_main[j]) & (owner[i] != owner[j])
    a, b, d = owner[i[ok]], owner[j[ok]], d[ok]
    key = np.minimum(a, b) * n + np.maximum(a, b)
    order = np.lexsort((d, key))
    key, d = key[order], d[order]
    first = np.ones(len(key), dtype=bool)
    first[1:] = key[1:] != key[:-1]
    key, d = key[first], d[first]
    pa, pb = key // n, key % n
    same = source_arr[pa] == source_arr[pb]
    orig_orig = (kind_arr[pa] == "original") & (kind_arr[pb] == "original")
    print("phash + 5 crop variants as extra queries (experiment, not a ferdata option):")
    for thr in range(2, 13, 2):
        sel = d <= thr
        tp, found = int((sel & same).sum()), int((sel & ~orig_orig).sum())
        per = [int((sel & same & (((kind_arr[pa] == "original") & (kind_arr[pb] == t)) |
                                  ((kind_arr[pb] == "original") & (kind_arr[pa] == t)))).sum()) / copies
               for t in TRANSFORMS]
        print(f"phash+v {thr:3}  {tp / found if found else 1.0:9.4f}  {tp / n_true:6.4f}  "
              + "  ".join(f"{x:10.3f}" for x in per) + f"     -  {int((sel & orig_orig).sum()):9}")


def _planted(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    k = n // 10
    copies = h[rng.integers(0, n - k, k)].copy()
    for _ in range(int(rng.integers(1, 5))):
        copies ^= np.uint64(1) << rng.integers(0, 64, k).astype(np.uint64)
    h[n - k:] = copies
    return h


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (the step's hashing workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _load() -> str:
    import os

    return "load average " + " / ".join(f"{x:.1f}" for x in os.getloadavg()) + f" ({os.cpu_count()} cores)"


def step_vs_phash(rounds: int = 2, num_proc: int = 2, csv: Path | None = None) -> None:
    """The whole dedupe step beside one single-process ``imagehash.phash`` pass over the same images.

    fer2013-train (26,223 rows, ``ferdata import fer2013 ../shared/data/fer2013-train.csv.gz``) is
    imported once; then, ``rounds`` times in turn (so both see the same machine load): one
    ``imagehash.phash`` pass in this process over every image (PNG decode included, as the step's
    hashing decodes them), and ``ferdata dedupe`` with the defaults and ``--num-proc num_proc``
    (the step's own time, as ``ferdata.json`` records it; its output written afterwards is not in
    it). Prints wall and CPU seconds of both and their ratio, and the machine's load.
    """
    import io
    import tempfile

    import datasets
    import imagehash
    from PIL import Image

    from ferdata.progress import disable_progress_bars
    from ferdata.steps import StepContext, apply_step

    disable_progress_bars()
    csv = csv or DATA / "fer2013-train.csv.gz"
    if not csv.exists():
        raise SystemExit(f"skipped: {csv} is absent (see ../shared/data/README.md)")
    print(f"speed: {_load()} at the start")
    with tempfile.TemporaryDirectory() as tmp:
        apply_step("import_fer2013", {"csv": str(csv)}, out=Path(tmp) / "fer")
        dd = datasets.load_from_disk(str(Path(tmp) / "fer"))
        raw = [v["bytes"] for s in dd for v in dd[s].cast_column("image", datasets.Image(decode=False))
               .with_format("arrow")["image"].to_pylist()]
        print(f"speed: {csv.name}: {len(raw)} rows; step with --num-proc {num_proc}")
        print("round  phash pass wall / CPU   dedupe step wall / CPU   ratio wall   ratio CPU   removed")
        ratios = []
        for k in range(rounds):
            wall, cpu = time.perf_counter(), _cpu_seconds()
            for data in raw:
                imagehash.phash(Image.open(io.BytesIO(data)))
            p_wall, p_cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
            cpu = _cpu_seconds()
            _, entry = apply_step("dedupe", {}, inputs=[Path(tmp) / "fer"], out=Path(tmp) / f"d{k}",
                                  ctx=StepContext(num_proc=num_proc))
            s_wall, s_cpu = entry["seconds"], _cpu_seconds() - cpu
            ratios.append(s_wall / p_wall)
            print(f"{k + 1:5}  {p_wall:8.1f}s / {p_cpu:5.1f}s     {s_wall:8.1f}s / {s_cpu:5.1f}s      "
                  f"{s_wall / p_wall:7.2f}    {s_cpu / p_cpu:8.2f}   {entry['rejected_by_reason']}")
    print(f"speed: dedupe step / phash pass (wall, same run): {min(ratios):.2f}-{max(ratios):.2f}; {_load()} at the end")


def speed(n_large: int = 1_000_000, threshold: int = 8) -> None:
    """Search time at 100k (beside brute force) and at n_large, at radius 8.

    (At the step's candidate radius 16-18 the cost model picks the brute force for a million random
    hashes, ~28 min CPU, and ~1.5e8 pairs are within 18: docs/dedupe.md.)
    """
    h = _planted(100_000)
    start, cpu = time.perf_counter(), time.process_time()
    i, j, d = find_duplicate_arrays(h, threshold)
    t_index, c_index = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    bi, bj, bd = brute_force_pairs(h, threshold)
    t_brute, c_brute = time.perf_counter() - start, time.process_time() - cpu
    same = np.array_equal(i, bi) and np.array_equal(j, bj) and np.array_equal(d, bd)
    print(f"speed: 100,000 hashes, radius {threshold}: index {t_index:.2f}s wall ({c_index:.2f}s CPU), "
          f"brute force {t_brute:.1f}s wall ({c_brute:.1f}s CPU), {len(i)} pairs, identical: {same}")
    h = _planted(n_large)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start, cpu = time.perf_counter(), time.process_time()
    i, j, d = find_duplicate_arrays(h, threshold)
    t_large, c_large = time.perf_counter() - start, time.process_time() - cpu
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"speed: {n_large:,} hashes, radius {threshold}: {t_large:.1f}s wall ({c_large:.1f}s CPU), {len(i)} pairs, "
          f"peak RSS {rss / 1024:.0f} MB (before: {rss0 / 1024:.0f} MB; hashes {h.nbytes / 2**20:.0f} MB)")


def search(n: int = 1_000_000, radius: int = 18) -> None:
    """One exact search (``find_duplicate_arrays``) of ``n`` planted random hashes at ``radius``.

    Prints the cost model's plan, the time and the pairs, beside the expected number of random
    pairs within the radius (the size of the answer, whatever the algorithm).
    """
    import math

    from ferdata.dedupe import HASH_BITS, _plan

    h = _planted(n)
    plan = _plan(len(np.unique(h)), radius)
    start, cpu = time.perf_counter(), time.process_time()
    i, _, _ = find_duplicate_arrays(h, radius)
    frac = sum(math.comb(HASH_BITS, k) for k in range(radius + 1)) / 2.0**HASH_BITS
    print(f"search: {n:,} hashes, radius {radius}, plan "
          f"{'brute force' if plan.brute else f'{len(plan.blocks)} blocks, radii {plan.radii}'}: "
          f"{time.perf_counter() - start:.1f}s wall / {time.process_time() - cpu:.1f}s CPU, {len(i)} pairs "
          f"(random pairs expected within the radius: {frac * n * (n - 1) / 2:.3g})")


def step(n: int = 1_000_000) -> None:
    """The dedupe step's global pass (grouping, survivors, ledger, new columns) on n pre-hashed rows.

    Rows carry planted phash values (10 % near copies, the last 10 % of rows in a ``test``
    split) and no pixels, so this measures everything after hashing.
    """
    import datasets

    from ferdata.dedupe import DedupeConfig, dedupe_dataset
    from ferdata.progress import disable_progress_bars

    disable_progress_bars()
    datasets.disable_caching()
    h = _planted(n)
    features = datasets.Features({
        "image": datasets.Image(), "label": datasets.ClassLabel(names=list("abcdefg")),
        "id": datasets.Value("string"), "source": datasets.Value("string"), "origin": datasets.Value("string"),
        "phash": datasets.Value("string"), "phash_of": datasets.Value("string"),
        "is_constant": datasets.Value("bool")})
    ids = [f"{i:064x}" for i in range(n)]
    ds = datasets.Dataset.from_dict({
        "image": [None] * n, "label": np.random.default_rng(0).integers(0, 7, n).tolist(),
        "id": ids, "source": ["bench"] * n, "origin": [f"row#{i}" for i in range(n)],
        "phash": [f"{int(x):016x}" for x in h], "phash_of": ids, "is_constant": [False] * n}, features=features)
    k = n // 10
    dd = datasets.DatasetDict({"train": ds.select(range(n - k)), "test": ds.select(range(n - k, n))})
    start, cpu = time.perf_counter(), time.process_time()
    # no pixels here: the radius alone (the verifier needs images; see pipeline for the verified step)
    result = dedupe_dataset(dd, DedupeConfig(threshold=8, verify="none"))
    assert result.info["hashes_reused"], "the planted hashes must be reused"
    print(f"step: {n:,} pre-hashed rows, radius 8, verify none: {time.perf_counter() - start:.1f}s wall "
          f"({time.process_time() - cpu:.1f}s CPU), removed {len(result.rejects)}, "
          f"leakage {result.info['leakage_groups']}, peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB (dataset built in memory)")


def hashing(limit: int | None = None) -> None:
    """Images per second of the dedupe step's hashing map over fer2013-dev."""
    import tempfile

    import datasets

    from ferdata.dedupe import hash_dataset
    from ferdata.progress import disable_progress_bars
    from ferdata.steps import apply_step

    disable_progress_bars()
    csv = DATA / "fer2013-dev.csv"
    if not csv.exists():
        raise SystemExit(f"skipped: {csv} is absent")
    with tempfile.TemporaryDirectory() as tmp:
        apply_step("import_fer2013", {"csv": str(csv)}, out=Path(tmp) / "fer")
        dd = datasets.load_from_disk(str(Path(tmp) / "fer"))
        if limit:
            dd = datasets.DatasetDict({k: v.select(range(min(limit, len(v)))) for k, v in dd.items()})
        # 5 copies of fer2013-dev (17,180 images) so process start-up does not dominate
        dd = datasets.DatasetDict({k: datasets.concatenate_datasets([v] * 5) for k, v in dd.items()})
        rows = sum(len(v) for v in dd.values())
        datasets.disable_caching()
        for num_proc in (1, 2):
            start = time.perf_counter()
            hash_dataset(dd, method=DEFAULT_METHOD, num_proc=num_proc)
            seconds = time.perf_counter() - start
            print(f"hashing: {rows} images ({DEFAULT_METHOD}), num_proc {num_proc}: {rows / seconds:.0f} images/s "
                  f"({seconds:.1f}s)")


PAIRS_CSV = ROOT / "tests" / "data" / "fer2013-dev-pairs.csv"
TRAIN_PAIRS_CSV = ROOT / "tests" / "data" / "fer2013-train-pairs.csv"


def _train_rows(lines: set[int]) -> dict[int, np.ndarray]:
    """The 48x48 pixels of the given lines (1-based, header = line 1) of fer2013-train.csv.gz."""
    import csv
    import gzip

    path = DATA / "fer2013-train.csv.gz"
    if not path.exists():
        raise SystemExit(f"skipped: {path} is absent (see ../shared/data/README.md)")
    out = {}
    with gzip.open(path, "rt", newline="") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if line in lines:
                out[line] = np.array(row[1].split(), dtype=np.uint8).reshape(48, 48)
    return out


def train() -> None:
    """The labelled fer2013-train pairs (dataset scale): precision / recall by distance and threshold.

    tests/data/fer2013-train-pairs.csv: pairs of fer2013-train.csv.gz (26,223 rows) labelled by eye
    (same_photo / same_person / different_people): 335 candidate pairs within phash 22 sampled by
    distance and xcorr band (the band around the old threshold over-sampled), then 200 random
    near_duplicate removals of ``ferdata dedupe`` at the defaults, and 200 more (a second sample, drawn
    from the removals at today's defaults less the first sample's). Columns: the old verifier
    (xcorr >= 0.65, radius 18), the residual-checked score at a fixed threshold, and the defaults
    (threshold rising with the distance).
    """
    import csv

    from ferdata.dedupe import DedupeConfig, verify_array, verify_pairs

    rows = list(csv.DictReader(TRAIN_PAIRS_CSV.open()))
    line = lambda origin: int(origin.rsplit("#L", 1)[1])  # noqa: E731
    pixels = _train_rows({line(r[k]) for r in rows for k in ("a", "b")})
    keys = sorted(pixels)
    pos = {k: n for n, k in enumerate(keys)}
    arrays = [pixels[k] for k in keys]
    assert all(pixel_id(pixels[line(r["a"])]) == r["a_id"] for r in rows), "fer2013-train differs from the labels"
    ph = np.array([int(image_hash(x, "phash"), 16) for x in arrays], dtype=np.uint64)
    a = np.array([pos[line(r["a"])] for r in rows])
    b = np.array([pos[line(r["b"])] for r in rows])
    dist = np.bitwise_count(ph[a] ^ ph[b])
    res = verify_pairs([verify_array(x) for x in arrays], a, b)
    label = np.array([r["label"] for r in rows])
    same = label == "same_photo"
    removal = np.array([r["sampled_from"].startswith("random") for r in rows])
    cfg = DedupeConfig()
    rules = {"old: xcorr >= 0.65, radius 18": (dist <= 18) & (res.xcorr >= 0.65),
             "xcorr - residual >= 0.44, radius 18": (dist <= 18) & (res.score >= 0.44),
             "default: >= 0.44 + 0.01/bit > 10, radius 18": (dist <= cfg.threshold)
             & (res.score >= cfg.required_score(dist)),
             "same, radius 22 (not the default)": (dist <= 22) & (res.score >= cfg.required_score(dist))}
    strat = ~removal
    counts = {k: int((label[strat] == k).sum()) for k in ("same_photo", "same_person", "different_people")}
    print(f"train: {len(rows)} labelled fer2013-train pairs: {int(strat.sum())} sampled by distance and score "
          f"{counts}, {int(removal.sum())} random removals at the defaults")
    print("rule (on the 335 stratified pairs)               same_photo called / all  same_person  different_people"
          "  recall (all)  recall (<= radius 18)")
    within = strat & same & (dist <= 18)
    for name, called in rules.items():
        c = called & strat
        person = int((c & (label == "same_person")).sum())
        print(f"  {name:46} {int((c & same).sum()):4} / {int((strat & same).sum())}  {person:11}"
              f"  {int((c & (label == 'different_people')).sum()):16}  {(c & same).sum() / (strat & same).sum():12.3f}"
              f"  {(c & within).sum() / within.sum():21.3f}")
    print("by distance (stratified pairs, defaults): distance band: same_photo called/all, same_person called/all, "
          "different_people called/all")
    called = rules["default: >= 0.44 + 0.01/bit > 10, radius 18"]
    for lo, hi in ((0, 10), (12, 14), (16, 18), (20, 22)):
        band = strat & (dist >= lo) & (dist <= hi)
        cells = [f"{int((band & called & (label == k)).sum())}/{int((band & (label == k)).sum())}" for k in counts]
        print(f"  {lo:2}-{hi:2}: " + "  ".join(f"{k} {v}" for k, v in zip(counts, cells, strict=True)))
    sample = np.array([r["sampled_from"] for r in rows])
    for name in [*dict.fromkeys(sample[removal]), "both samples"]:
        rem = removal & ((sample == name) | (name == "both samples"))
        print(f"{name} judged by eye: same_photo {int((rem & same).sum())} / {int(rem.sum())} = precision "
              f"{(rem & same).sum() / max(1, rem.sum()):.3f} "
              f"(not: {dict((k, int((rem & (label == k)).sum())) for k in ('same_person', 'different_people'))})")
RADII = (4, 6, 8, 10, 12, 14, 16, 18, 20)
SCORES = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)


def _pr(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float, int]:
    tp = int((pred & truth).sum())
    found = int(pred.sum())
    return (tp / found if found else 1.0), tp / max(1, int(truth.sum())), found


def real() -> None:
    """Precision / recall on the labelled real pairs (tests/data/fer2013-dev-pairs.csv).

    Each pair was labelled by looking at it (same_photo / same_person / different_people). A
    method calls a pair a duplicate when the phash distance is within the radius and (for the
    verified rows) the verifier score is at least the threshold. Also: how the similar-group
    threshold catches same_person pairs among the pairs not called duplicates.
    """
    import csv

    from PIL import Image

    from ferdata.dedupe import verify_array, verify_pairs

    root = DATA / "fer2013-dev"
    if not root.exists():
        raise SystemExit(f"skipped: {root} is absent (see ../shared/data/README.md)")
    rows = list(csv.DictReader(PAIRS_CSV.open()))
    files = sorted({r[k] for r in rows for k in ("a", "b")})
    pos = {f: k for k, f in enumerate(files)}
    arrays = [np.asarray(Image.open(root / f).convert("L"), dtype=np.uint8) for f in files]
    assert all(pixel_id(arrays[pos[r["a"]]]) == r["a_id"] for r in rows), "fer2013-dev differs from the labels"
    ph = np.array([int(image_hash(x, "phash"), 16) for x in arrays], dtype=np.uint64)
    a = np.array([pos[r["a"]] for r in rows])
    b = np.array([pos[r["b"]] for r in rows])
    dist = np.bitwise_count(ph[a] ^ ph[b])
    label = np.array([r["label"] for r in rows])
    start = time.perf_counter()
    score = verify_pairs([verify_array(x) for x in arrays], a, b).score
    seconds = time.perf_counter() - start
    same = label == "same_photo"
    counts = {k: int((label == k).sum()) for k in ("same_photo", "same_person", "different_people")}
    print(f"real: {len(rows)} labelled fer2013-dev pairs {counts}, phash distance 0-{dist.max()}; "
          f"verifier {seconds:.2f}s")
    print("method           radius  min_score  precision  recall  called  (same_photo pairs: precision / recall)")
    for r in RADII:
        p, rec, found = _pr(dist <= r, same)
        print(f"phash only       {r:6}          -  {p:9.4f}  {rec:6.4f}  {found:6}")
    for r in RADII:
        for t in SCORES:
            p, rec, found = _pr((dist <= r) & (score >= t), same)
            print(f"phash+verify {r:6}  {t:9.2f}  {p:9.4f}  {rec:6.4f}  {found:6}")
    from ferdata.dedupe import DedupeConfig

    cfg = DedupeConfig()
    p, rec, found = _pr((dist <= cfg.threshold) & (score >= cfg.required_score(dist)), same)
    print(f"phash+verify {cfg.threshold:6}  {cfg.min_score:.2f}+rise  {p:9.4f}  {rec:6.4f}  {found:6} <- default "
          f"(score >= {cfg.min_score} + {cfg.score_rise} per bit beyond 10)")
    print("verifier score by label (min / 5 % / median / 95 % / max):")
    for k in counts:
        v = score[label == k]
        print(f"  {k:17} " + " / ".join(f"{x:.3f}" for x in np.percentile(v, [0, 5, 50, 95, 100])))
    print("similar groups: pairs with similar_score <= score < min_score at the default radius; "
          "share of same_person pairs caught, and what else is caught:")
    for t in (0.3, 0.35, 0.4, 0.45, 0.5):
        sel = (dist <= DEFAULT_THRESHOLD) & (score >= t) & (score < DEFAULT_MIN_SCORE)
        per = {k: int((sel & (label == k)).sum()) for k in counts}
        mark = " <- default" if t == DEFAULT_SIMILAR_SCORE else ""
        print(f"  similar_score {t:.2f}: same_person {per['same_person']}/{counts['same_person']}, "
              f"different_people {per['different_people']}, same_photo {per['same_photo']}{mark}")


def verified(copies_per_transform: int = 400) -> None:
    """The synthetic transforms through the verifier: recall per transform and precision."""
    from ferdata.dedupe import verify_array, verify_pairs

    rng = np.random.default_rng(0)
    loaded = load_dev_images()
    _, items, source, kind = synthetic_pool(loaded, copies_per_transform, rng)
    source_arr, kind_arr = np.array(source), np.array(kind)
    hv = np.array([int(image_hash(x, "phash"), 16) for x in items], dtype=np.uint64)
    i, j, d = find_duplicate_arrays(hv, max(RADII))
    start = time.perf_counter()
    score = verify_pairs([verify_array(x) for x in items], i, j).score
    seconds = time.perf_counter() - start
    same = source_arr[i] == source_arr[j]
    orig_orig = (kind_arr[i] == "original") & (kind_arr[j] == "original")
    print(f"verified (synthetic): {len(items)} images, {len(i)} candidate pairs within {max(RADII)} verified in "
          f"{seconds:.1f}s; precision over pairs with a copy; orig-orig = pairs of two untouched images called")
    print("radius  min_score  precision  " + "  ".join(f"{t:>10}" for t in TRANSFORMS) + "  orig-orig")
    for r in RADII:
        for t in (None, *SCORES):
            sel = (d <= r) if t is None else (d <= r) & (score >= t)
            tp, found = int((sel & same).sum()), int((sel & ~orig_orig).sum())
            per = [int((sel & same & (((kind_arr[i] == "original") & (kind_arr[j] == x)) |
                                      ((kind_arr[j] == "original") & (kind_arr[i] == x)))).sum()) / copies_per_transform
                   for x in TRANSFORMS]
            mark = " <- default" if (r, t) == (DEFAULT_THRESHOLD, DEFAULT_MIN_SCORE) else ""
            print(f"{r:6}  {'-' if t is None else f'{t:.2f}':>9}  {tp / found if found else 1.0:9.4f}  "
                  + "  ".join(f"{x:10.3f}" for x in per) + f"  {int((sel & orig_orig).sum()):9}{mark}")


def dev_copies(copies: int, kinds: tuple[str, ...], seed: int = 0) -> list[np.ndarray]:
    """fer2013-dev x ``copies``: each distinct face, then ``copies - 1`` transformed copies (``kinds`` in turn)."""
    rng = np.random.default_rng(seed)
    images = []
    for arr in load_dev_images():
        images.append(arr)
        for c in range(copies - 1):
            images.append(transform(arr, kinds[c % len(kinds)], rng))
    return images


def pipeline(copies: int = 10) -> None:
    """The whole dedupe step on fer2013-dev x copies (one untouched + transformed copies each).

    Baseline in the same run: the same step with ``verify="none"`` (radius only, no verifier).
    """
    import datasets

    from ferdata.dedupe import DedupeConfig, dedupe_dataset, hash_dataset

    images = dev_copies(copies, (*TRANSFORMS, "jpeg", "noise", "brightness", "downup"))
    ids = [pixel_id(x) for x in images]
    from PIL import Image

    def png(x: np.ndarray) -> dict:
        buf = io.BytesIO()
        Image.fromarray(x).save(buf, format="PNG")
        return {"bytes": buf.getvalue(), "path": None}

    labels = [0] * len(images)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["x"]),
                                  "id": datasets.Value("string"), "origin": datasets.Value("string")})
    ds = datasets.Dataset.from_dict({"image": [png(x) for x in images], "label": labels, "id": ids,
                                     "origin": [f"row{k}" for k in range(len(images))]}, features=features)
    dd = datasets.DatasetDict({"train": ds})

    def cpu() -> float:
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    t0, c0 = time.perf_counter(), cpu()
    hashed, _, _ = hash_dataset(dd, method=DEFAULT_METHOD, num_proc=2)
    print(f"pipeline: fer2013-dev x{copies} = {len(images)} rows; hashing (num_proc 2): "
          f"{time.perf_counter() - t0:.1f}s wall / {cpu() - c0:.1f}s CPU")
    for cfg in (DedupeConfig(verify="none"), DedupeConfig()):
        t0, c0 = time.perf_counter(), cpu()
        res = dedupe_dataset(hashed, cfg)
        wall, used = time.perf_counter() - t0, cpu() - c0
        info = res.info
        print(f"pipeline: verify={cfg.verify} radius {cfg.threshold}: grouping + verification + columns "
              f"{wall:.1f}s wall / {used:.1f}s CPU; removed {info['removed']}, candidate pairs "
              f"{info['near_hash_pairs']}, verified {info['verified_pairs']}, max group diameter "
              f"{info['max_group_diameter']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="*",
                        default=["train", "real", "verified", "quality", "pipeline", "speed", "hashing", "step"])
    parser.add_argument("--n", type=int, default=1_000_000, help="hashes in the large speed run (default 1e6)")
    parser.add_argument("--copies", type=int, default=400, help="copies per transform in the quality run")
    parser.add_argument("--radius", type=int, default=18, help="radius of the search run (default 18)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of phash pass + step in the speed run")
    parser.add_argument("--num-proc", type=int, default=2, help="the step's --num-proc in the speed run (2 cores)")
    args = parser.parse_args()
    for which in args.which:
        if which == "quality":
            quality(args.copies)
        elif which == "speed":
            step_vs_phash(args.rounds, args.num_proc)
            speed(args.n)
        elif which == "step-vs-phash":
            step_vs_phash(args.rounds, args.num_proc)
        elif which == "hashing":
            hashing()
        elif which == "step":
            step(args.n)
        elif which == "real":
            real()
        elif which == "train":
            train()
        elif which == "verified":
            verified(args.copies)
        elif which == "pipeline":
            pipeline()
        elif which == "search":
            search(args.n, args.radius)
        else:
            raise SystemExit(f"unknown benchmark {which!r}; choose from train, quality, real, verified, pipeline, speed, "
                             "step-vs-phash, search, hashing, step")


def test_bench_dedupe() -> None:
    """pytest entry: ``pytest tests/benchmarks/bench_dedupe.py -s``."""
    quality()
    speed()
    hashing()
    step()


if __name__ == "__main__":
    main()
