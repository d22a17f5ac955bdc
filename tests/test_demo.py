"""`ferdata demo` end to end, as the README's first command runs it: a real process, nothing but
127.0.0.1 contacted. It is also the offline acceptance test of `ferdata build btfer` (the demo
runs the packaged recipe unchanged against the local hostile engine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ferdata.dataset import class_counts, open_dataset, read_manifest, read_rejects
from tests.conftest import CLASSES

pytestmark = pytest.mark.slow

NOISE = ("I0000", "W0000", "E0000", "oneDNN", "cuInit", "cuda_platform", "cudart_stub", "cpu_feature_guard",
         "absl::InitializeLog", "Saving the dataset", "Generating train split", "Creating parquet")


def test_demo_end_to_end(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "FERDATA_VERBOSITY",
                                                            "HF_DATASETS_DISABLE_PROGRESS_BARS")}
    proc = subprocess.run([sys.executable, "-c", "from ferdata.cli import main; main()", "demo", "--out",
                           "ferdata-demo"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # quiet libraries, ferdata's own progress
    assert not [n for n in NOISE if n in proc.stderr], proc.stderr[-3000:]
    assert "[1/7] crawl" in proc.stderr and "[3/7] crop" in proc.stderr and "[7/7] balance" in proc.stderr
    # the summary table, where things are, what to run next; the one-line summary last
    lines = proc.stdout.strip().splitlines()
    assert lines[0].split() == ["step", "kept", "rejected", "seconds", "rejected", "by", "reason"]
    assert any(line.startswith("crop ") and "no_face 1" in line for line in lines), proc.stdout
    assert "ferdata build fer2013-improved --source fer2013.csv" in proc.stdout
    assert "kaggle.com" in proc.stdout and "fer2013new.csv" in proc.stdout and "FERPlus" in proc.stdout
    assert "ferdata info ferdata-demo" in proc.stdout
    assert lines[-1].startswith("demo: 21 faces {'test': 21} from ") and lines[-1].endswith("-> ferdata-demo")
    # published to the loopback Hub and read back, said just above the last line
    assert lines[-2].startswith("hub: pushed 21 rows (card + 1 parquet shard) to the loopback Hub as "
                                "ferdata/btfer-demo (commit "), lines[-2]
    assert lines[-2].endswith("read back 21 rows, the same ids in the same order -> ferdata-demo/from-hub"), lines[-2]

    out = tmp_path / "ferdata-demo"
    dd = open_dataset(out)
    assert list(dd) == ["test"] and class_counts(dd["test"]) == {c: 3 for c in CLASSES}
    assert {r["image"].size for r in dd["test"]} == {(256, 256)}  # BTFER framing
    assert set(dd["test"]["source"]) == {"crawl:loopback"}
    reasons = {(r["step"], r["reason"]) for r in read_rejects(out, thumbnails=False)}
    for reason in ("http_404", "http_500", "redirect_loop", "not_an_image", "too_large", "corrupt", "too_many_pixels"):
        assert ("crawl", reason) in reasons, reasons
    assert ("crop", "no_face") in reasons and ("balance", "undersampled") in reasons
    manifest = read_manifest(out)
    assert manifest["recipe"]["name"] == "btfer" and manifest["demo"]
    assert [s["step"] for s in manifest["steps"]] == ["crawl", "dedupe", "crop", "quality", "review_exclusions",
                                                      "split", "balance"]
    assert manifest["recipe"]["variables"]["base_url"].startswith("http://127.0.0.1:")
    assert "shared/data" not in json.dumps(manifest)
    card = (out / "hub" / "README.md").read_text()
    assert "This is a demo dataset made by `ferdata demo`" in card and "| test | 3 | 3 | 3 | 3 | 3 | 3 | 3 | 21 |" in card
    assert 'datasets.load_dataset("ferdata-demo/hub")' in card and "load_from_disk" not in card
    # the round trip: import hub wrote OUT/from-hub with exactly the rows pushed (ids, order, labels, lineage)
    back = open_dataset(out / "from-hub")
    assert {s: list(ds["id"]) for s, ds in back.items()} == {s: list(ds["id"]) for s, ds in dd.items()}
    for column in ("label", "root_id", "source"):
        assert back["test"][column] == dd["test"][column], column
    pushed = manifest["demo"]["hub"]
    assert pushed["rows_pushed"] == pushed["rows_read_back"] == 21 and pushed["ids_equal"] and pushed["card_note_kept"]
    assert pushed["files"] == ["README.md", "data/test-00000-of-00001.parquet"]
    upstream = read_manifest(out / "from-hub")
    assert [s["step"] for s in upstream["steps"]] == ["import_hub"]
    assert upstream["upstream"]["repo_id"] == "ferdata/btfer-demo" and upstream["upstream"]["commit"] == pushed["commit"]
    assert upstream["upstream"]["provenance"]["recipe"]["name"] == "btfer"
    assert (out / "review" / "index.html").exists() and (out / "review" / "review.csv").exists()
    assert "ferdata-demo/review/" in proc.stdout  # said where it is
    # every command writes only under its --out: no OUT-review, no fetch cache, no build state beside
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ferdata-demo"]
    # the first thing a user runs on it
    from click.testing import CliRunner

    from ferdata.cli import cli

    result = CliRunner().invoke(cli, ["info", str(out)])
    assert result.exit_code == 0 and "21 rows in 1 split(s)" in result.stdout and "[demo]" in result.stdout
    assert "crawl: http_404" in result.stdout


def test_demo_refuses_existing_output_and_bad_values(tmp_path: Path, run_cli) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("keep me")
    code, _, err = run_cli("demo", "--out", tmp_path / "d")
    assert code == 2 and "Error:" in err and (tmp_path / "d" / "x").read_text() == "keep me"
    code, _, err = run_cli("demo", "--out", tmp_path / "e", "--per-class", "5", "--photos", "2")
    assert code == 2 and "--photos" in err and not (tmp_path / "e").exists()
