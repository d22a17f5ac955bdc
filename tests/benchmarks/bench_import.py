"""Benchmark: import a FER2013-format CSV of the real file's size (35,887 rows).

Prints rows/s and peak memory, beside a baseline measured in the same run: parsing the same CSV
with pandas (`read_csv` + per-row `np.array(str.split())`) into memory, the way notebooks do it.
Target: the import takes <= 15 s on the 2-core CI machine and memory stays bounded (streamed).

    python tests/benchmarks/bench_import.py [--rows 35887]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def make_csv(path: Path, rows: int) -> None:
    rng = np.random.default_rng(0)
    usages = ["Training"] * 8 + ["PublicTest", "PrivateTest"]
    block = rng.integers(0, 256, (1000, 2304))
    lines = [" ".join(map(str, r)) for r in block]
    with path.open("w") as f:
        f.write("emotion,pixels,Usage\n")
        for i in range(rows):
            f.write(f"{i % 7},{lines[i % 1000]},{usages[i % 10]}\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=35_887)
    args = parser.parse_args()
    from ferdata.progress import disable_progress_bars
    from ferdata.steps import StepContext, apply_step

    disable_progress_bars()
    tmp = Path(tempfile.mkdtemp())
    try:
        csv = tmp / "fer2013.csv"
        make_csv(csv, args.rows)
        print(f"CSV: {args.rows} rows, {csv.stat().st_size / 1e6:.0f} MB")

        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        _, entry = apply_step("import_fer2013", {"csv": str(csv)}, out=tmp / "out", ctx=StepContext())
        seconds = time.perf_counter() - start
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(f"ferdata import fer2013: {seconds:.1f} s ({args.rows / seconds:,.0f} rows/s), kept {entry['kept']}; "
              f"peak RSS grew {max(0, rss_after - rss_before) / 1024:.0f} MB; "
              f"target <= 15 s: {'PASS' if seconds <= 15 else 'FAIL'}")
        start = time.perf_counter()
        import pandas as pd

        frame = pd.read_csv(csv)
        images = [np.array(p.split(), dtype=np.uint8).reshape(48, 48) for p in frame["pixels"]]
        baseline = time.perf_counter() - start
        print(f"baseline pandas + split into memory: {baseline:.1f} s ({args.rows / baseline:,.0f} rows/s), "
              f"{sum(i.nbytes for i in images) / 1e6:.0f} MB of arrays held")
        del frame, images
        print(f"ratio ferdata / baseline speed: {baseline / seconds:.2f}x "
              "(ferdata also encodes PNGs, hashes ids and writes Arrow)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
