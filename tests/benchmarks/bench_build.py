"""Whole-build benchmark (issue 27): ``ferdata build fer2013-improved`` step by step, each beside its own limit.

Run: ``python tests/benchmarks/bench_build.py [--csv PATH] [--num-proc 2] [--memory [--copies K] [--only-copies]]``
(default CSV: ../shared/data/fer2013-train.csv.gz, 26,223 FER2013 Training rows; exits with a message when absent).

The build runs in a subprocess (its peak memory is that process's maximum RSS); every limit is
measured in this process on the same rows, in the same run, so a loaded machine slows both sides:

* import    vs parsing the CSV's pixels and PNG-encoding + hashing them across ``--num-proc`` processes;
* dedupe    vs one single-process ``imagehash.phash`` pass over the same faces;
* quality   vs its per-image checks (``score_image``) on decoded arrays across ``--num-proc`` processes;
* upscale   vs ``Upscaler.upscale`` (the network API) on the faces the build upscaled;
* export + report vs writing the final rows' parquet shards.

The headline is the whole build against the network's own time (the irreducible part): the
issue's target is 1.4x. The sum of the steps' limits is printed beside it: the floor of a build
whose steps run one after another.

``--memory`` (issue 27 item 2: peak memory at 3k, 30k and 300k rows) runs whole builds instead, each
in its own subprocess, and prints for each the CSV, the rows its import step kept, the build's wall
seconds and its peak RSS: ../shared/data/fer2013-dev.csv (3,436 rows), ``--csv`` (26,223 rows), and
``--csv`` K times (``--copies K``, default 12: 314,676 rows). That last CSV is written first into a
temporary directory under /tmp (its time and size are printed): a gzip CSV in ``--csv``'s format
(same header and columns) holding every row K times, each copy other pixels that are not a near
duplicate of the others (the rows' other columns unchanged): the original, its horizontal mirror,
then the eight other ``DISTINCT`` transforms of bench_dedupe.py (rotations, flips, transposes,
inverted; its ninth, "flip", is the mirror), then the inverted mirror and more inverted versions
(:data:`COPY_KINDS`, 16 in all, so K = 12 ends with the inverted 180-degree rotation; copies beyond
the 16th repeat them, the same pixels again). It is written by 2 worker
processes over chunks of rows, streaming (314,676 rows, 1.0 GB: 124 s on 2 shared cores, where
this process's reading of the source and gzip level 1 are the slower half).
Then the growth of the peak per row is printed between the 3k and 26k builds and between the
26k and 300k builds (both measured: the 300k figure is a run, not an extrapolation). The 300k
build writes about 10 GB of 224 px PNGs, into a temporary directory under /tmp deleted afterwards.
``--only-copies`` runs the 300k build alone:

    python tests/benchmarks/bench_build.py --memory --only-copies
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from itertools import islice
from math import isqrt
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))   # this checkout's ferdata, as the build's subprocess (cwd=ROOT) uses
sys.path.insert(0, str(Path(__file__).resolve().parent))
DATA = ROOT.parent / "shared" / "data"

from bench_dedupe import DISTINCT, transform  # noqa: E402

#: The copies of ``--copies`` in turn: the original, its horizontal mirror (DISTINCT's "flip"), the
#: rest of DISTINCT, then inverted versions of the other eight (255 - pixels): for a face that is
#: not itself symmetric, 16 different images, none a near duplicate of another (rotations, mirrors
#: and negatives move the phash far). Copies beyond the 16th cycle: the same pixels again.
COPY_KINDS = ("original", "flip", *(d for d in DISTINCT if d != "flip"),
              *(f"invert_{d}" for d in ("flip", "rot180", "rot270", "flipud", "transpose", "transverse")))
_NUMBERS = np.array([str(v) for v in range(256)], dtype=object)
_RNG = np.random.default_rng(0)  # transform's signature; the DISTINCT transforms draw nothing from it


def _run_build(csv_path: Path, out: Path, num_proc: int) -> tuple[dict, float, float]:
    """The build in a subprocess: its manifest, wall seconds and peak RSS (GB) of that process."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "ferdata", "build", "fer2013-improved", "--source", str(csv_path),
                              "--out", str(out), "--num-proc", str(num_proc), "-q"], cwd=ROOT)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise subprocess.CalledProcessError(child.returncode, child.args)
    wall = time.perf_counter() - start
    return json.loads((out / "ferdata.json").read_text()), wall, usage.ru_maxrss / 1024 / 1024  # KB -> GB


def _cell(text: str) -> str:
    """One CSV cell as the csv module writes it (QUOTE_MINIMAL), without its per-row cost."""
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\r\n') else text


def _copy_pixels(arr: np.ndarray, kind: str) -> np.ndarray:
    """One of :data:`COPY_KINDS` of a square gray image."""
    if kind == "original":
        return arr
    if kind in DISTINCT:
        return transform(arr, kind, _RNG)
    return 255 - _copy_pixels(arr, kind.removeprefix("invert_"))


def _copy_chunk(rows: list[list[str]], i_pixels: int, kind: str) -> bytes:
    """The CSV lines of one copy of ``rows``: the pixels cell replaced by the ``kind`` copy's, the other
    cells as they were. A row whose pixels are not a square of 0..255 numbers keeps its cell, so
    it is rejected by the import as the original would be."""
    lines = []
    for row in rows:
        cells = [_cell(c) for c in row]
        if kind != "original" and len(row) > i_pixels:
            try:
                with warnings.catch_warnings():  # a non-numeric cell: numpy 1 stops early (and warns), numpy 2 raises
                    warnings.simplefilter("ignore")
                    values = np.fromstring(row[i_pixels], dtype=np.int64, sep=" ")
            except ValueError:
                values = np.empty(0, dtype=np.int64)
            side = isqrt(values.size)
            if values.size and side * side == values.size and values.min() >= 0 and values.max() <= 255:
                arr = _copy_pixels(values.astype(np.uint8).reshape(side, side), kind)
                cells[i_pixels] = " ".join(_NUMBERS[arr.ravel()])
        lines.append(",".join(cells))
    return ("\n".join(lines) + "\n").encode()


def write_copies(src: Path, dest: Path, copies: int, *, workers: int = 2, chunk_rows: int = 2000) -> int:
    """Write ``dest`` (gzip CSV): the header of ``src`` (a FER2013 CSV, plain or .gz), then all its rows
    ``copies`` times, copy k being :data:`COPY_KINDS` [k % 16] of every row (see the module doc).

    Streaming: ``src`` is read once per copy with the csv module, in chunks of ``chunk_rows`` that
    ``workers`` processes turn into CSV lines, written in order with a few chunks in flight. The
    gzip is one member at level 1 (level 6 would make this process the bottleneck). Returns the
    data rows written.
    """
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    opener = gzip.open if src.suffix == ".gz" else open
    written = 0
    pending: deque[Future[bytes]] = deque()
    with gzip.open(dest, "wb", compresslevel=1) as out, ProcessPoolExecutor(workers) as pool:
        for k in range(copies):
            with opener(src, "rt", newline="", encoding="utf-8-sig") as f:
                reader = csv.reader(f)
                header = next(reader)
                if k == 0:
                    out.write((",".join(_cell(c) for c in header) + "\n").encode())
                kind = COPY_KINDS[k % len(COPY_KINDS)]
                while chunk := list(islice(reader, chunk_rows)):
                    written += len(chunk)
                    pending.append(pool.submit(_copy_chunk, chunk, header.index("pixels"), kind))
                    if len(pending) > 2 * workers:
                        out.write(pending.popleft().result())
        while pending:
            out.write(pending.popleft().result())
    return written


def memory(csvs: list[Path], num_proc: int, copies: int, only_copies: bool = False) -> None:
    """Peak RSS of whole builds at each size (issue 27 item 2), and the growth per row between them.

    ``csvs``: the 3k and 26k CSVs (left out with ``only_copies``); the last one is also written
    ``copies`` times (:func:`write_copies`) for the 300k build.
    """
    with tempfile.TemporaryDirectory(prefix="bench-build-copies-", dir="/tmp") as tmp:
        big = Path(tmp) / f"{csvs[-1].name.split('.')[0]}-x{copies}.csv.gz"
        start = time.perf_counter()
        n = write_copies(csvs[-1], big, copies)
        print(f"wrote {big.name}: {n:,} rows ({copies} copies of {csvs[-1].name}), {big.stat().st_size / 1e9:.2f} GB "
              f"gzip, in {time.perf_counter() - start:.1f} s\n", flush=True)
        print("| CSV | rows | build s | peak RSS GB |\n|---|---:|---:|---:|", flush=True)
        rows = []
        for csv_path in ([] if only_copies else csvs) + [big]:
            with tempfile.TemporaryDirectory(prefix="bench-build-", dir="/tmp") as out:
                manifest, wall, peak = _run_build(csv_path, Path(out) / "b", num_proc)
            rows.append((manifest["steps"][0]["kept"], wall, peak))
            print(f"| {csv_path.name} | {rows[-1][0]:,} | {wall:.1f} | {peak:.2f} |", flush=True)
    if len(rows) < 2:
        print(f"\nthe {rows[0][0]:,}-row build is a run (peak {rows[0][2]:.2f} GB); without --only-copies the "
              "3k and 26k builds are run too and the growth per row printed")
        return
    slopes = [(a[0], b[0], (b[2] - a[2]) / max(1, b[0] - a[0]) * 1e6)  # KB per row
              for a, b in zip(rows, rows[1:], strict=False)]
    print("\ngrowth of the peak per row (all three builds are runs, the 300k one included: nothing extrapolated): "
          + "; ".join(f"{s:.1f} KB per row from {a:,} to {b:,} rows" for a, b, s in slopes))


def _parse_chunk(lines: list[str]) -> list[tuple[bytes, str]]:
    from ferdata.images import encode_png, pixel_id

    out = []
    for row in csv.reader(lines):
        pixels = np.array(row[1].split(), dtype=np.uint8).reshape(48, 48)
        out.append((encode_png(pixels), pixel_id(pixels)))
    return out


def _faces(csv_path: Path) -> tuple[list[str], np.ndarray]:
    opener = gzip.open if csv_path.suffix == ".gz" else open
    with opener(csv_path, "rt", newline="") as f:
        lines = f.read().splitlines()[1:]
    arrays = np.stack([np.array(line.split(",")[1].split(), dtype=np.uint8).reshape(48, 48) for line in lines])
    return lines, arrays


def _score_chunk(arrays: np.ndarray) -> int:
    from ferdata.quality import score_image

    return sum(1 for a in arrays if score_image(a))


def limits(csv_path: Path, manifest: dict, out: Path, num_proc: int) -> dict[str, float]:
    import imagehash
    from PIL import Image

    from ferdata.dataset import open_dataset
    from ferdata.sr import Upscaler

    lines, arrays = _faces(csv_path)
    found: dict[str, float] = {}
    chunks = [lines[i:i + 2000] for i in range(0, len(lines), 2000)]
    start = time.perf_counter()
    with ProcessPoolExecutor(num_proc) as pool:
        list(pool.map(_parse_chunk, chunks))
    found["import_fer2013"] = time.perf_counter() - start
    start = time.perf_counter()
    for a in arrays:
        imagehash.phash(Image.fromarray(a))
    found["dedupe"] = time.perf_counter() - start
    start = time.perf_counter()
    with ProcessPoolExecutor(num_proc) as pool:
        list(pool.map(_score_chunk, np.array_split(arrays, num_proc * 8)))
    found["quality"] = time.perf_counter() - start
    steps = {e["step"]: e for e in manifest["steps"]}
    n_up = steps["upscale"]["kept"]
    up = Upscaler.load()
    up.upscale(arrays[:64], size=224)  # warm-up (graph tracing) is not the network's steady rate
    start = time.perf_counter()
    for i in range(0, n_up, 1024):
        up.upscale(arrays[i:min(i + 1024, n_up)], size=224)
    found["upscale"] = time.perf_counter() - start
    dd = open_dataset(out)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        for split, ds in dd.items():
            ds.to_parquet(f"{tmp}/{split}.parquet")
        found["export + report"] = time.perf_counter() - start
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=DATA / "fer2013-train.csv.gz")
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--memory", action="store_true",
                        help="only the peak RSS of builds of fer2013-dev.csv, --csv and --csv x --copies, "
                             "and the growth per row")
    parser.add_argument("--copies", type=int, default=12,
                        help="with --memory: copies of --csv in the largest build (default 12: 314,676 rows)")
    parser.add_argument("--only-copies", action="store_true",
                        help="--memory with the largest build alone (the --copies CSV)")
    args = parser.parse_args()
    for path in [args.csv] + ([DATA / "fer2013-dev.csv"] if args.memory and not args.only_copies else []):
        if not path.exists():
            sys.exit(f"{path} not found: this benchmark needs ../shared/data (see its README)")
    if args.memory or args.only_copies:
        if args.copies < 1:
            sys.exit("--copies must be at least 1")
        return memory([DATA / "fer2013-dev.csv", args.csv], args.num_proc, args.copies, args.only_copies)
    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp:
        out = Path(tmp) / "b"
        manifest, wall, peak = _run_build(args.csv, out, args.num_proc)
        limit = limits(args.csv, manifest, out, args.num_proc)
    seconds = {e["step"]: e["seconds"] for e in manifest["steps"]}
    seconds["export + report"] = wall - sum(seconds.values())
    load = os.getloadavg()[0]
    print(f"\n## fer2013-improved on {args.csv.name}: {manifest['steps'][0]['kept']} rows imported, "
          f"{manifest['steps'][-1]['kept']} upscaled; {os.cpu_count()} cores, --num-proc {args.num_proc}, "
          f"load {load:.1f}\n")
    print("| step | build s | limit s | ratio | limit measured as |")
    print("|---|---:|---:|---:|---|")
    how = {"import_fer2013": f"CSV parse + PNG encode + id, {args.num_proc} processes",
           "dedupe": "one single-process imagehash.phash pass", "quality": f"score_image, {args.num_proc} processes",
           "upscale": "Upscaler.upscale (the network API), same faces", "export + report": "parquet shards of the rows"}
    for step, s in seconds.items():
        print(f"| {step} | {s:.1f} | {limit[step]:.1f} | {s / limit[step]:.2f}x | {how[step]} |")
    print(f"\nwhole build {wall:.1f} s = {wall / limit['upscale']:.2f}x the network's own time "
          f"({limit['upscale']:.1f} s; target 1.4x); peak RSS of the build {peak:.2f} GB")
    floor = sum(limit[step] for step in seconds)
    print(f"the steps' own limits, one after another: {floor:.1f} s = {floor / limit['upscale']:.2f}x the network's "
          f"time (a build whose steps run in turn cannot go below it)")


if __name__ == "__main__":
    main()
