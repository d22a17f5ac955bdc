from __future__ import annotations

import json
from pathlib import Path

import datasets

from ferdata.dataset import class_counts, open_dataset, read_manifest, read_rejects
from tests.conftest import shared_data, write_fer_csv


def test_import_splits_and_labels(fer_dir: Path) -> None:
    dd = open_dataset(fer_dir)
    assert {k: len(v) for k, v in dd.items()} == {"train": 28, "validation": 7, "test": 7}
    assert dd["train"].features["label"].names == ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    # official codes: code 6 is neutral, code 4 is sad (not alphabetical)
    assert class_counts(dd["train"]) == {n: 4 for n in dd["train"].features["label"].names}
    row = dd["train"][0]
    assert row["image"].size == (48, 48) and row["image"].mode == "L"
    assert row["source"] == "fer2013" and row["origin"].endswith("#L2")
    assert len(row["id"]) == 64
    assert isinstance(datasets.load_from_disk(str(fer_dir)), datasets.DatasetDict)
    manifest = read_manifest(fer_dir)
    assert manifest["steps"][0]["step"] == "import_fer2013" and manifest["splits"]["train"] == 28


def test_official_code_map(tmp_path: Path, run_cli) -> None:
    csv = tmp_path / "f.csv"
    csv.write_text("emotion,pixels,Usage\n6," + " ".join(["7"] * 2304) + ",Training\n4," + " ".join(["9"] * 2304)
                   + ",Training\n")
    code, out, err = run_cli("import", "fer2013", csv, "--out", tmp_path / "o", "-q")
    assert code == 0, err
    ds = open_dataset(tmp_path / "o")["train"]
    names = ds.features["label"].names
    assert [names[x] for x in ds["label"]] == ["neutral", "sad"]


def test_malformed_rows_go_to_ledger(tmp_path: Path, run_cli) -> None:
    good = " ".join(["1"] * 2304)
    csv = write_fer_csv(tmp_path / "bad.csv", 1, extra_lines=(
        "",                                       # empty line
        "3," + " ".join(["1"] * 100) + ",Training",  # wrong pixel count
        "3," + good.replace("1", "x", 1) + ",Training",  # non-numeric pixel
        "9," + good + ",Training",                # unknown code
        "happy," + good + ",Training",            # non-numeric label
        "3," + " ".join(["300"] * 2304) + ",Training",  # out of range
        "3," + good + ",Training,extra",          # wrong column count
        "3," + good + ",Training",                # good
    ))
    code, out, err = run_cli("import", "fer2013", csv, "--out", tmp_path / "o", "-q")
    assert code == 0, err
    assert len(open_dataset(tmp_path / "o")["train"]) == 8
    rejects = read_rejects(tmp_path / "o")
    reasons = {r["origin"].split("#")[1]: r["reason"] for r in rejects}
    assert reasons == {"L10": "wrong_pixel_count", "L11": "bad_pixels", "L12": "unknown_code", "L13": "bad_label",
                       "L14": "bad_pixels", "L15": "wrong_column_count"} | ({"L9": "empty_line"} if "L9" in reasons
                                                                             else {})
    assert all(r["step"] == "import_fer2013" for r in rejects)
    assert "import_fer2013: kept 8" in out


def test_missing_input_and_existing_output(tmp_path: Path, run_cli, fer_csv: Path) -> None:
    code, _, err = run_cli("import", "fer2013", tmp_path / "missing.csv", "--out", tmp_path / "o")
    assert code == 2 and err.count("\n") == 1 and "missing.csv" in err
    (tmp_path / "exists").mkdir()
    code, _, err = run_cli("import", "fer2013", fer_csv, "--out", tmp_path / "exists")
    assert code == 2 and "already exists" in err and "--overwrite" in err
    code, _, err = run_cli("import", "fer2013", fer_csv, "--out", tmp_path / "exists", "--overwrite", "-q")
    assert code == 0, err


def test_not_a_fer_csv(tmp_path: Path, run_cli) -> None:
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    code, _, err = run_cli("import", "fer2013", bad, "--out", tmp_path / "o")
    assert code == 2 and "emotion" in err and "Traceback" not in err


def test_real_fer2013_dev(tmp_path: Path, run_cli) -> None:
    csv = shared_data("fer2013-dev.csv")
    code, _, err = run_cli("import", "fer2013", csv, "--out", tmp_path / "x", "-q")
    assert code == 0, err
    dd = datasets.load_from_disk(str(tmp_path / "x"))
    assert sum(len(d) for d in dd.values()) == 3436
    assert class_counts(dd["train"]) == {"angry": 500, "disgust": 436, "fear": 500, "happy": 500, "neutral": 500,
                                         "sad": 500, "surprise": 500}
    assert json.loads((tmp_path / "x" / "ferdata.json").read_text())["splits"] == {"train": 3436}
