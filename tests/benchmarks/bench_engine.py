"""Engine benchmark: the fer2013-improved recipe on the local engine and on Ray, stage by stage.

Run: ``python tests/benchmarks/bench_engine.py [--rows 1000] [--csv ../shared/data/fer2013-dev.csv]
[--hashes 1000000] [--order local,ray1,ray2] [--scenes 48] [--only stages|crop|gather]``.
Uses ../shared/data/fer2013-dev.csv when present (else a generated CSV) and faces-hr-144.

1. Stages: ``ferdata build fer2013-improved`` on the first ``--rows`` rows of the CSV with the local
   engine (the baseline), then with Ray on 1 CPU (1 worker process, 1 ESPCN actor) and on 2 CPUs
   (2 worker processes, 2 ESPCN actors). Prints rows/s of every stage side by side (the stage's
   ``seconds`` in ``ferdata.json``: driver work plus the Ray round trip), Ray's start-up time and
   the whole build, and checks the three outputs have the same ids and labels.
2. Crop: MTCNN ``crop`` on ``--scenes`` 640x480 scenes of pasted faces-hr-144 faces, local and on
   Ray with 1 and 2 actors (a CPU more than actors each), photos/s and the 2-to-1 scaling ratio.
3. Narrow gather: what a global dedupe decides on, gathered to the driver: ``--hashes`` synthetic
   64-bit hashes (plus 1% near copies) through ``ferdata.dedupe.find_duplicates`` at radius 8,
   time and the driver's peak memory, beside the bytes of the columns themselves.

Every figure is measured in the same run; nothing is compared with remembered numbers.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a Ray started here listens on 127.0.0.1

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _csv(path: Path | None, rows: int, work: Path) -> Path:
    """The first ``rows`` data rows of ``path`` (or a generated CSV) as a new CSV in ``work``."""
    out = work / "fer.csv"
    if path is not None and path.exists():
        with path.open() as src, out.open("w") as dst:
            for i, line in enumerate(src):
                if i > rows:
                    break
                dst.write(line)
        return out
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from conftest import write_fer_csv

    return write_fer_csv(out, max(1, rows // 7), seed=1)


def _run(csv: Path, out: Path, engine) -> tuple[dict, float]:
    from ferdata.pipeline import build, load_recipe
    from ferdata.steps import StepContext

    start = time.perf_counter()
    manifest = build(load_recipe("fer2013-improved", {"source": str(csv)}), out, ctx=StepContext(), engine=engine)
    return manifest, time.perf_counter() - start


def bench_stages(csv: Path, work: Path, order: list[str]) -> None:
    import ray

    from ferdata.dataset import open_dataset
    from ferdata.engines.local import LocalEngine
    from ferdata.engines.ray import RayEngine

    runs: dict[str, tuple[dict, float, float]] = {}
    for key in order:  # the machine may be shared: run the engines in both orders to see the noise
        if key == "local":
            manifest, total = _run(csv, work / "local", LocalEngine())
            runs["local"] = (manifest, total, 0.0)
            continue
        cpus = int(key.removeprefix("ray"))
        name = f"ray {cpus} cpu"
        with RayEngine(num_cpus=cpus, actors=cpus, object_store_memory=512 * 1024**2) as engine:
            t = time.perf_counter()
            engine.start()
            startup = time.perf_counter() - t
            manifest, total = _run(csv, work / name.replace(" ", "-"), engine)
        assert not ray.is_initialized()
        runs[name] = (manifest, total, startup)
    runs = dict(sorted(runs.items(), key=lambda kv: (kv[0] != "local", kv[0])))
    base = open_dataset(work / "local")
    for name in runs:
        if name == "local":
            continue
        other = open_dataset(work / name.replace(" ", "-"))
        same = all(base[s]["id"] == other[s]["id"] and base[s]["label"] == other[s]["label"] for s in base)
        print(f"{name}: same ids and labels as local: {same}")
    names = list(runs)
    print(f"\nfer2013-improved on {csv} ({sum(runs['local'][0]['splits'].values())} rows out)")
    print(f"{'stage':<16}{'rows in':>9}" + "".join(f"{n + ' rows/s':>18}" for n in names))
    steps = runs["local"][0]["steps"]
    for i, entry in enumerate(steps):
        cells = []
        for n in names:
            e = runs[n][0]["steps"][i]
            cells.append(f"{e['input_rows'] / e['seconds'] if e['seconds'] and e['input_rows'] else float('nan'):>18.1f}")
        print(f"{entry['step']:<16}{entry['input_rows']:>9}" + "".join(cells))
    print(f"{'ray start (s)':<25}" + "".join(f"{runs[n][2]:>18.1f}" for n in names))
    print(f"{'whole build (s)':<25}" + "".join(f"{runs[n][1]:>18.1f}" for n in names))


def bench_crop(n: int) -> None:
    """MTCNN ``crop`` on ``n`` 640x480 scenes of pasted real faces: local, then Ray with 1 and 2 actors."""
    import datasets
    import numpy as np
    import ray

    from ferdata.dataset import core_features
    from ferdata.engines.local import LocalEngine
    from ferdata.engines.ray import RayEngine
    from ferdata.images import encode_png, pixel_id
    from ferdata.steps import StepContext, get_step

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_faces import make_scene

    faces = sorted((DATA / "faces-hr-144").glob("*.png"))
    if not faces:
        print(f"\ncrop: skipped, real faces absent ({DATA / 'faces-hr-144'})")
        return
    rng = np.random.default_rng(0)
    scenes = [make_scene(rng, faces, 480, 640, 200)[0] for _ in range(n)]
    table = {"image": [{"bytes": encode_png(im), "path": None} for im in scenes], "label": [0] * n,
             "id": [pixel_id(im) for im in scenes], "source": ["bench"] * n, "origin": [str(i) for i in range(n)]}
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict(table, features=core_features(["angry"]))})
    step = get_step("crop")
    config = step.make_config({})
    rates: dict[str, float] = {}
    ids: dict[str, list[str]] = {}
    for name, actors in (("local", 0), ("ray 1 actor", 1), ("ray 2 actors", 2)):
        if actors:
            with RayEngine(num_cpus=actors + 1, actors=actors, object_store_memory=512 * 1024**2) as engine:
                engine.start()
                out, entry = engine.run_step(step, dd, config, StepContext())
            assert not ray.is_initialized()
        else:
            out, entry = LocalEngine().run_step(step, dd, config, StepContext())
        rates[name] = n / entry["seconds"]
        ids[name] = out.data["train"]["id"]
    print(f"\ncrop (MTCNN) on {n} 640x480 scenes, photos/s (step seconds, actor start included):")
    for name, rate in rates.items():
        print(f"  {name:<14}{rate:8.2f}   same crops as local: {ids[name] == ids['local']}")
    print(f"  2 actors / 1 actor: {rates['ray 2 actors'] / rates['ray 1 actor']:.2f}x")


def bench_gather(n: int) -> None:
    import numpy as np

    from ferdata.dedupe import find_duplicates

    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
    near = rng.choice(n, n // 100, replace=False)
    flips = np.uint64(1) << rng.integers(0, 64, len(near)).astype(np.uint64)
    hashes = np.concatenate([hashes, hashes[near] ^ flips])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    pairs = find_duplicates(hashes, 8)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nnarrow gather: {len(hashes):,} hashes ({hashes.nbytes / 1e6:.0f} MB as uint64) -> {len(pairs):,} pairs "
          f"within 8 bits (planted {len(near):,}) in {seconds:.1f} s; driver peak RSS {peak:.0f} MB "
          f"(before: {before:.0f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--csv", type=Path, default=DATA / "fer2013-dev.csv")
    parser.add_argument("--hashes", type=int, default=1_000_000)
    parser.add_argument("--scenes", type=int, default=48)
    parser.add_argument("--only", choices=["stages", "crop", "gather"], default=None)
    parser.add_argument("--order", default="local,ray1,ray2", help="engines in the order they run")
    args = parser.parse_args()
    from ferdata.progress import disable_progress_bars

    disable_progress_bars()
    work = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    try:
        if args.only in (None, "stages"):
            bench_stages(_csv(args.csv, args.rows, work), work, args.order.split(","))
        if args.only in (None, "crop"):
            bench_crop(args.scenes)
        if args.only in (None, "gather"):
            bench_gather(args.hashes)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_bench_engine_smoke() -> None:  # pragma: no cover - the benchmarks are not part of CI
    sys.argv = ["bench_engine.py", "--rows", "100", "--hashes", "10000"]
    main()


if __name__ == "__main__":
    main()
