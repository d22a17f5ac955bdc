"""Benchmark of ``ferdata report``: size and time on fer2013-dev and on fer2013-dev x10.

    python tests/benchmarks/bench_report.py            # about 3-4 minutes on 2 cores
    python tests/benchmarks/bench_report.py --copies 3  # a quicker run

Builds ``fer2013-dev`` the way the fer2013-improved recipe starts (import the CSV, dedupe,
quality with the recipe's drops), then a x``copies`` version of the result (every row and every
ledger row repeated with a copy suffix on its ids, the ledger repeated 2.5x more, so x10 is
34,360 rows and ~5,000 ledger rows: full FER2013's scale), and reports both with the default caps.

The baseline measured in the same run is what ferdata offered before: ``ferdata review``'s
contact sheets (one thumbnail file per row). Targets: the full-scale report under 10 MB and
60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def build_dev(work: Path) -> Path:
    from ferdata.progress import disable_progress_bars
    from ferdata.steps import apply_step

    disable_progress_bars()
    apply_step("import_fer2013", {"csv": str(DATA / "fer2013-dev.csv")}, out=work / "imported")
    apply_step("dedupe", {"method": "phash", "keep": "test,validation,train"}, inputs=[work / "imported"],
               out=work / "deduped")
    apply_step("quality", {"drop": ["low_information", "dark", "light", "blurry"]}, inputs=[work / "deduped"],
               out=work / "dev")
    return work / "dev"


def scale_up(src: Path, out: Path, copies: int, ledger_factor: float = 2.5) -> Path:
    """``copies`` x the rows of ``src`` (ids suffixed per copy) and ``copies * ledger_factor`` x its ledger."""
    import datasets

    from ferdata.dataset import open_dataset, read_manifest, read_rejects, save_dataset

    dd = open_dataset(src)
    parts = {}
    for split, ds in dd.items():
        copies_ = []
        for k in range(copies):
            def suffix(batch: dict, k: int = k) -> dict:
                out = {"id": [f"{x}{k:02d}" for x in batch["id"]]}
                if "group" in batch:
                    out["group"] = [f"{x}{k:02d}" for x in batch["group"]]
                return out
            copies_.append(ds.map(suffix, batched=True, desc=f"copy {k}"))
        parts[split] = datasets.concatenate_datasets(copies_)
    ledger = read_rejects(src)
    big_ledger = []
    for k in range(int(round(copies * ledger_factor))):
        for r in ledger:
            d = json.loads(r["details"]) if r.get("details") else {}
            for key in ("group", "duplicate_of"):
                if key in d:
                    d[key] = f"{d[key]}{k % copies:02d}" if k < copies else f"{d[key]}x{k:02d}"
            big_ledger.append({**r, "id": f"{r['id']}{k:02d}", "details": json.dumps(d)})
    manifest = read_manifest(src)
    save_dataset(datasets.DatasetDict(parts), out, manifest=manifest, rejects=big_ledger)
    return out


def measure_report(path: Path, out: Path) -> dict:
    from ferdata.report import write_report

    start = time.perf_counter()
    result = write_report(path, out)
    return {"seconds": time.perf_counter() - start, "mb": result.bytes / 1e6, "images": result.images,
            "sections": len(result.sections), "warnings": result.warnings}


def measure_review(path: Path, out: Path) -> dict:
    from ferdata.review import write_review

    start = time.perf_counter()
    write_review(path, out)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    files = sum(1 for _ in out.rglob("*") if _.is_file())
    return {"seconds": time.perf_counter() - start, "mb": size / 1e6, "files": files}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--no-baseline", action="store_true", help="skip the review contact sheets baseline")
    args = parser.parse_args()
    if not (DATA / "fer2013-dev.csv").exists():
        print(f"skipped: {DATA / 'fer2013-dev.csv'} is absent (see ../shared/data/README.md)")
        return
    from ferdata.dataset import open_dataset, read_rejects

    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        dev = build_dev(work)
        big = scale_up(dev, work / f"dev-x{args.copies}", args.copies)
        print(f"datasets built in {time.perf_counter() - t:.0f}s")
        rows = []
        for name, path in (("fer2013-dev", dev), (f"fer2013-dev x{args.copies}", big)):
            n = sum(len(ds) for ds in open_dataset(path).values())
            ledger = len(read_rejects(path, thumbnails=False))
            rep = measure_report(path, work / f"{path.name}.html")
            base = None if args.no_baseline else measure_review(path, work / f"{path.name}-review")
            rows.append((name, n, ledger, rep, base))
        print()
        print("| dataset | rows | ledger rows | report MB | report s | images | baseline: review sheets MB | "
              "baseline s | baseline files |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name, n, ledger, rep, base in rows:
            b = ("–", "–", "–") if base is None else (f"{base['mb']:.1f}", f"{base['seconds']:.1f}", f"{base['files']:,}")
            print(f"| {name} | {n:,} | {ledger:,} | {rep['mb']:.2f} | {rep['seconds']:.1f} | {rep['images']} | "
                  f"{b[0]} | {b[1]} | {b[2]} |")
        for name, _, _, rep, _ in rows:
            for w in rep["warnings"]:
                print(f"warning ({name}): {w}")
        big_rep = rows[-1][3]
        print(f"\ntargets at full scale: size {big_rep['mb']:.2f} MB (< 10: {'ok' if big_rep['mb'] < 10 else 'MISSED'}), "
              f"time {big_rep['seconds']:.1f} s (< 60: {'ok' if big_rep['seconds'] < 60 else 'MISSED'})")


if __name__ == "__main__":
    main()
