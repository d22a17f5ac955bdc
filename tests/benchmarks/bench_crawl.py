"""Crawl throughput against the loopback search server (no network beyond 127.0.0.1).

Crawls the packaged btfer query grid (7 classes) with the loopback engine, ``--per-class N``
distinct face photos per class, with 4 download threads (the default) and with 1 thread (the
baseline), cold (empty cache) and re-run (everything from the fetch cache). Every image response
waits ``--latency`` seconds (default 0.05, a typical web round trip) so threads matter as on
the web; result pages answer at once.

    python tests/benchmarks/bench_crawl.py [--per-class 20] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from ferdata.progress import disable_progress_bars
from ferdata.sources.queries import QueryGrid
from ferdata.steps import StepContext, apply_step
from tests.crawl_server import LoopbackSearchServer, face_photos, jpeg


def main(per_class: int = 20, latency: float = 0.05) -> None:
    disable_progress_bars()
    grid = QueryGrid.load("btfer-queries")
    with LoopbackSearchServer(latency=latency) as srv:
        photos = iter([jpeg(p) for p in face_photos(len(grid.classes) * per_class)])
        for label in grid.classes:
            queries = grid.queries(label)
            for i in range(per_class):
                srv.add_image(f"{label}{i}", next(photos))
            for j, q in enumerate(queries):  # each query returns its share of the class's images
                srv.set_results(q.text, [f"{label}{i}" for i in range(per_class) if i % len(queries) == j])
        with tempfile.TemporaryDirectory() as d:  # warm-up (imports, first Arrow writes), not timed
            apply_step("crawl", {"engine": "loopback", "base_url": srv.base_url, "per_class": 1,
                                 "cache": f"{d}/cache"}, out=f"{d}/w", ctx=StepContext())
        for threads in (4, 1):
            with tempfile.TemporaryDirectory() as d:
                params = {"engine": "loopback", "base_url": srv.base_url, "per_class": per_class, "threads": threads,
                          "cache": f"{d}/cache"}
                t = time.perf_counter()
                _, cold = apply_step("crawl", params, out=f"{d}/a", ctx=StepContext())
                cold_s = time.perf_counter() - t
                t = time.perf_counter()
                _, warm = apply_step("crawl", params, out=f"{d}/b", ctx=StepContext())
                warm_s = time.perf_counter() - t
            label = "figure  " if threads == 4 else "baseline"
            print(f"{label} threads={threads}: kept {cold['kept']} (rejected {cold['rejected']}); "
                  f"cold {cold_s:.2f}s = {cold['kept'] / cold_s:.1f} img/s; "
                  f"cached re-run {warm_s:.2f}s = {warm['kept'] / warm_s:.1f} img/s")


def test_bench_crawl() -> None:
    main()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    main(args.per_class, args.latency)
