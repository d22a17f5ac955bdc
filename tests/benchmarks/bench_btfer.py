"""`ferdata build btfer` end to end against the loopback engine: images/s and time per stage.

Run: ``python tests/benchmarks/bench_btfer.py [--per-class 3] [--photos 10] [--latency 0.05]``
(or ``--serve`` to keep the engine running for your own ``ferdata build btfer`` tries). Nothing
but 127.0.0.1 is contacted. Prints the build's own summary (kept/rejected per step and reason,
share of time per step), the candidates per class at each step, and the throughput: crawled
candidates per second through the whole recipe beside the crawl step alone (the baseline from
the same run).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.crawl_server import btfer_demo_engine  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=3, help="faces per class in the final test split")
    parser.add_argument("--photos", type=int, default=10, help="face photos the engine serves per class")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds each image response waits")
    parser.add_argument("--serve", action="store_true", help="only run the engine until Ctrl-C")
    args = parser.parse_args(argv)
    from ferdata.dataset import read_manifest

    with tempfile.TemporaryDirectory(prefix="bench-btfer-") as tmp, \
            btfer_demo_engine(Path(tmp), per_class_photos=args.photos, latency=args.latency) as (server, queries):
        command = ["ferdata", "build", "btfer", "--per-class", str(args.per_class), "--engine", "loopback",
                   "--base-url", server.base_url, "--queries", str(queries), "--out", str(Path(tmp) / "btfer"), "-q"]
        if args.serve:
            print("loopback engine running; in another shell:\n  " + " ".join(command[:-3]) + " --out btfer-demo")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                return 0
        start = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - start
        print(proc.stdout.strip())
        if proc.returncode:
            print(proc.stderr.strip()[-2000:])
            return proc.returncode
        manifest = read_manifest(Path(tmp) / "btfer")
        steps = manifest["steps"]
        print("\n| step | kept | rejected | seconds | candidates per class after the step |")
        print("|---|---|---|---|---|")
        for e in steps:
            per_class = " ".join(f"{k} {v}" for k, v in sorted(e.get("class_counts", {}).items()))
            print(f"| {e['step']} | {e['kept']} | {e['rejected']} | {e['seconds']:.1f} | {per_class} |")
        crawled = steps[0]["kept"] + steps[0]["rejected"]
        print(f"\nwhole recipe: {crawled} candidate URLs in {wall:.1f} s wall = {crawled / wall:.2f} candidates/s "
              f"({sum(manifest['splits'].values())} faces out); crawl step alone: "
              f"{crawled / max(steps[0]['seconds'], 1e-9):.2f} candidates/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
