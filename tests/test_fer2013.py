from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest

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
                       "L14": "bad_pixels", "L15": "wrong_column_count", "L9": "empty_line"}
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


# ---------------------------------------------------------------- issue 12, defect 10: bad CSV input


def test_utf8_bom_is_accepted(tmp_path: Path, run_cli) -> None:
    csv = tmp_path / "excel.csv"
    csv.write_text("emotion,pixels,Usage\n3," + " ".join(["5"] * 2304) + ",Training\n", encoding="utf-8-sig")
    assert csv.read_bytes().startswith(b"\xef\xbb\xbf")
    code, out, err = run_cli("import", "fer2013", csv, "--out", tmp_path / "o", "-q")
    assert code == 0, err
    ds = open_dataset(tmp_path / "o")["train"]
    assert len(ds) == 1 and ds.features["label"].names[ds[0]["label"]] == "happy"


def test_header_only_csv_says_no_rows(tmp_path: Path, run_cli) -> None:
    csv = tmp_path / "empty.csv"
    csv.write_text("emotion,pixels,Usage\n\n")
    code, _, err = run_cli("import", "fer2013", csv, "--out", tmp_path / "o")
    assert code == 2 and "no rows" in err and err.count("\n") == 1 and "Instruction" not in err
    assert not (tmp_path / "o").exists()


def test_binary_file_is_refused_without_echoing_it(tmp_path: Path, run_cli) -> None:
    blob = tmp_path / "photo.csv"
    blob.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\x01\x02emotion")
    code, _, err = run_cli("import", "fer2013", blob, "--out", tmp_path / "o")
    assert code == 2 and "binary" in err and err.count("\n") == 1
    assert all(32 <= ord(ch) < 127 for ch in err.strip()), err


# ---------------------------------------------------------------- FER+ votes (issue 14)

def write_pair(tmp_path: Path, rows: list[tuple[int, list[int]]], *, usages: list[str] | None = None,
               ferplus_usages: list[str] | None = None) -> tuple[Path, Path]:
    """A fer2013.csv and a FER+ fer2013new.csv aligned row by row: (fer2013 code, 10 votes) per row."""
    rng = np.random.default_rng(1)
    usages = usages or ["Training"] * len(rows)
    ferplus_usages = ferplus_usages or usages
    lines = ["emotion,pixels,Usage"]
    votes = ["Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"]
    for i, ((code, v), usage, fusage) in enumerate(zip(rows, usages, ferplus_usages, strict=True)):
        lines.append(f"{code},{' '.join(map(str, rng.integers(0, 256, 2304)))},{usage}")
        name = "" if v[9] == 10 else f"fer{i:07d}.png"
        votes.append(f"{fusage},{name},{','.join(map(str, v))}")
    fer, plus = tmp_path / "fer2013.csv", tmp_path / "fer2013new.csv"
    fer.write_text("\n".join(lines) + "\n")
    plus.write_text("\n".join(votes) + "\n")
    return fer, plus


#            neutral happy surprise sad angry disgust fear contempt unknown NF
CRAFTED_VOTES = [
    (3, [0, 9, 0, 0, 0, 0, 0, 0, 1, 0]),   # clear happy (FER2013 says happy too)
    (6, [5, 1, 1, 1, 1, 1, 0, 0, 0, 0]),   # neutral 5 of 10 raw, 5 of 5 once the single votes are dropped
    (0, [4, 0, 0, 0, 4, 0, 0, 0, 2, 0]),   # neutral/angry tie: no majority
    (6, [0, 0, 0, 0, 0, 0, 0, 0, 0, 10]),  # FER+ dropped it: not a face
    (2, [2, 0, 0, 0, 0, 0, 0, 0, 8, 0]),   # winner unknown
    (0, [0, 0, 0, 0, 2, 0, 0, 8, 0, 0]),   # contempt
    (0, [0, 0, 0, 0, 3, 0, 0, 0, 0, 0]),   # angry, FER+ agrees
    (4, [0, 0, 3, 0, 0, 0, 6, 0, 1, 0]),   # FER2013 sad (code 4), FER+ fear
]


def test_ferplus_rules_on_crafted_votes() -> None:
    from ferdata.sources.fer2013 import FERPLUS_CLASSES, ferplus_label

    names = [(FERPLUS_CLASSES[w] if w is not None else r) for w, r in (ferplus_label(v) for _, v in CRAFTED_VOTES)]
    assert names == ["happy", "neutral", "ferplus_no_majority", "ferplus_not_face", "ferplus_unknown", "contempt",
                     "angry", "fear"]
    # the outlier rule decides row 2: without it 5 of 10 is no majority
    assert ferplus_label([4, 2, 2, 1, 1, 0, 0, 0, 0, 0]) == (None, "ferplus_no_majority")  # 4 of 8 kept votes
    assert ferplus_label([4, 4, 0, 0, 2, 0, 0, 0, 0, 0], "plurality") == (None, "ferplus_tie")
    assert ferplus_label([4, 3, 0, 0, 2, 0, 0, 0, 1, 0], "plurality") == (0, "")
    assert ferplus_label([4, 3, 0, 0, 2, 0, 0, 0, 1, 0], "majority") == (None, "ferplus_no_majority")
    # probability: the top classes up to 75 % of the votes, stopping at unknown/NF, must cover more than half
    assert ferplus_label([4, 3, 0, 0, 3, 0, 0, 0, 0, 0], "probability") == (0, "")
    assert ferplus_label([3, 0, 0, 0, 0, 0, 0, 0, 4, 3], "probability") == (None, "ferplus_unknown")
    assert ferplus_label([4, 0, 0, 0, 0, 0, 0, 0, 3, 3], "probability") == (None, "ferplus_no_majority")


def test_import_with_ferplus_votes(tmp_path: Path, run_cli) -> None:
    fer, plus = write_pair(tmp_path, CRAFTED_VOTES)
    code, out, err = run_cli("import", "fer2013", fer, "--ferplus", plus, "--out", tmp_path / "o", "-q")
    assert code == 0, err
    ds = open_dataset(tmp_path / "o")["train"]
    names = ds.features["label"].names
    assert names == ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]  # contempt follows --classes 7
    assert [names[x] for x in ds["label"]] == ["happy", "neutral", "angry", "fear"]
    old = ds.features["label_fer2013"].names
    assert [old[x] for x in ds["label_fer2013"]] == ["happy", "neutral", "angry", "sad"]
    assert ds["ferplus_votes"][3] == [0, 0, 3, 0, 0, 0, 6, 0, 1, 0]
    reasons = {r["origin"].split("#")[1]: r["reason"] for r in read_rejects(tmp_path / "o")}
    assert reasons == {"L4": "ferplus_no_majority", "L5": "ferplus_not_face", "L6": "ferplus_unknown",
                       "L7": "class_not_in_grouping"}
    assert all(len(r["id"]) == 64 for r in read_rejects(tmp_path / "o"))
    # --classes 8 keeps contempt as a class
    code, out, err = run_cli("import", "fer2013", fer, "--ferplus", plus, "--classes", "8", "--out", tmp_path / "o8",
                             "-q")
    assert code == 0, err
    ds8 = open_dataset(tmp_path / "o8")["train"]
    assert "contempt" in ds8.features["label"].names and len(ds8) == 5
    # --label-source fer2013: every row kept with its FER2013 label, the votes beside it
    code, out, err = run_cli("import", "fer2013", fer, "--ferplus", plus, "--label-source", "fer2013",
                             "--out", tmp_path / "of", "-q")
    assert code == 0, err
    dsf = open_dataset(tmp_path / "of")["train"]
    assert len(dsf) == len(CRAFTED_VOTES) and dsf["label"] == dsf["label_fer2013"]
    assert dsf["ferplus_votes"] == [v for _, v in CRAFTED_VOTES]
    code, _, err = run_cli("import", "fer2013", fer, "--classes", "8", "--out", tmp_path / "bad")
    assert code == 2 and "contempt" in err


def test_misaligned_ferplus_file_is_one_clear_error(tmp_path: Path, run_cli) -> None:
    fer, plus = write_pair(tmp_path, CRAFTED_VOTES)
    short = tmp_path / "short.csv"
    short.write_text("\n".join(plus.read_text().splitlines()[:-1]) + "\n")
    code, _, err = run_cli("import", "fer2013", fer, "--ferplus", short, "--out", tmp_path / "o")
    assert code == 2 and "7 rows" in err and "8" in err and err.count("\n") == 1
    fer2, plus2 = write_pair(tmp_path / "..", CRAFTED_VOTES[:3], usages=["Training", "PublicTest", "Training"],
                             ferplus_usages=["Training", "Training", "Training"])
    code, _, err = run_cli("import", "fer2013", fer2, "--ferplus", plus2, "--out", tmp_path / "o")
    assert code == 2 and "row 2" in err and "PublicTest" in err
    assert not (tmp_path / "o").exists()


def test_real_fer2013_dev_with_ferplus(tmp_path: Path, run_cli) -> None:
    csv, votes = shared_data("fer2013-dev.csv"), shared_data("fer2013-dev-ferplus.csv")
    code, out, err = run_cli("import", "fer2013", csv, "--ferplus", votes, "--out", tmp_path / "x", "-q")
    assert code == 0, err
    ds = open_dataset(tmp_path / "x")["train"]
    rejects = read_rejects(tmp_path / "x")
    assert len(ds) + len(rejects) == 3436
    # the 17 rows FER+ dropped have NF = 10
    assert sum(r["reason"] == "ferplus_not_face" for r in rejects) >= 17


def test_ferplus_folder_layout(tmp_path: Path, run_cli) -> None:
    from PIL import Image

    rows = {"FER2013Train": [("fer0000000.png", [0, 9, 0, 0, 0, 0, 0, 0, 1, 0]),    # happy
                             ("fer0000001.png", [4, 0, 0, 0, 4, 0, 0, 0, 2, 0]),    # no majority
                             ("fer0000002.png", [0, 0, 0, 0, 0, 0, 0, 8, 2, 0]),    # contempt
                             ("fer0000009.png", [0, 0, 0, 0, 8, 0, 0, 0, 2, 0])],   # PNG missing
            "FER2013Valid": [("fer0000003.png", [0, 0, 0, 7, 0, 0, 3, 0, 0, 0])]}   # sad
    rng = np.random.default_rng(0)
    for folder, items in rows.items():
        (tmp_path / "src" / folder).mkdir(parents=True)
        lines = []
        for name, votes in items:
            if name != "fer0000009.png":
                Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(tmp_path / "src" / folder / name)
            lines.append(f'{name},"(0, 0, 48, 48)",' + ",".join(map(str, votes)))
        (tmp_path / "src" / folder / "label.csv").write_text("\n".join(lines) + "\n")
    code, out, err = run_cli("import", "ferplus", tmp_path / "src", "--out", tmp_path / "o", "-q")
    assert code == 0, err
    dd = open_dataset(tmp_path / "o")
    names = dd["train"].features["label"].names
    assert [names[x] for x in dd["train"]["label"]] == ["happy"]
    assert [names[x] for x in dd["validation"]["label"]] == ["sad"]
    assert dd["train"]["ferplus_votes"] == [[0, 9, 0, 0, 0, 0, 0, 0, 1, 0]]
    reasons = sorted(r["reason"] for r in read_rejects(tmp_path / "o"))
    assert reasons == ["class_not_in_grouping", "ferplus_no_majority", "missing_file"]
    code, _, err = run_cli("import", "ferplus", tmp_path, "--out", tmp_path / "o2")
    assert code == 2 and "FER2013Train/label.csv" in err


# ---------------------------------------------------------------- compressed CSVs (issue 27 item 4)

@pytest.mark.parametrize("form", ["gz", "zip"])
def test_compressed_csv_imports_like_the_plain_one(tmp_path: Path, fer_csv: Path, form: str) -> None:
    """``fer2013.csv.gz`` and a ``.zip`` holding the CSV give the plain CSV's ids, labels and origins."""
    import gzip
    import zipfile

    from ferdata.dataset import open_dataset
    from ferdata.steps import apply_step

    packed = tmp_path / f"fer2013.csv.{form}" if form == "gz" else tmp_path / "fer2013.zip"
    if form == "gz":
        packed.write_bytes(gzip.compress(fer_csv.read_bytes()))
    else:
        with zipfile.ZipFile(packed, "w") as z:
            z.write(fer_csv, "fer2013.csv")
    apply_step("import_fer2013", {"csv": str(fer_csv)}, out=tmp_path / "plain")
    apply_step("import_fer2013", {"csv": str(packed)}, out=tmp_path / "packed")
    a, b = open_dataset(tmp_path / "plain"), open_dataset(tmp_path / "packed")
    assert sorted(a) == sorted(b)
    for split in a:
        cols = ["id", "label", "root_id"]
        assert a[split].select_columns(cols).to_list() == b[split].select_columns(cols).to_list()
        assert [o.split("#")[1] for o in a[split]["origin"]] == [o.split("#")[1] for o in b[split]["origin"]]


def test_zip_without_one_csv_is_refused(tmp_path: Path, run_cli) -> None:
    import zipfile

    packed = tmp_path / "two.zip"
    with zipfile.ZipFile(packed, "w") as z:
        z.writestr("a.csv", "emotion,pixels,Usage\n")
        z.writestr("b.csv", "emotion,pixels,Usage\n")
    code, _, err = run_cli("import", "fer2013", packed, "--out", tmp_path / "o")
    assert code == 2 and "exactly one CSV" in err and err.count("\n") == 1


@pytest.mark.parametrize("ferplus", [False, True])
def test_parallel_import_equals_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ferplus: bool) -> None:
    """--num-proc 3 parses contiguous parts of the CSV in 3 processes: same rows, order, votes and ledger."""
    from ferdata.sources import fer2013 as module
    from ferdata.steps import StepContext, apply_step

    rows = [CRAFTED_VOTES[i % len(CRAFTED_VOTES)] for i in range(20)]
    fer, plus = write_pair(tmp_path, rows, usages=["Training", "PublicTest", "PrivateTest", "Training"] * 5)
    if not ferplus:  # a malformed row and a blank line in the last part (FER+ needs aligned rows)
        with fer.open("a") as f:
            f.write("9,1 2 3,Training\n\n")
    params = {"csv": str(fer), **({"ferplus": str(plus), "label_source": "ferplus"} if ferplus else {})}
    apply_step("import_fer2013", params, out=tmp_path / "one")
    monkeypatch.setattr(module, "MIN_ROWS_PER_WORKER", 1)
    assert module._workers(str(fer), StepContext(num_proc=3)) == 3
    apply_step("import_fer2013", params, out=tmp_path / "three", ctx=StepContext(num_proc=3))
    a, b = open_dataset(tmp_path / "one"), open_dataset(tmp_path / "three")
    assert list(a) == list(b)
    for split in a:
        assert a[split].select_columns([c for c in a[split].column_names if c != "image"]).to_list() == \
            b[split].select_columns([c for c in b[split].column_names if c != "image"]).to_list()
    assert read_rejects(tmp_path / "one") == read_rejects(tmp_path / "three")


def test_parallel_import_skips_quoted_and_blank_lines_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker skips the rows before its part unparsed only where a line is a whole row: quoted cells
    (one holding a line break), blank lines and malformed rows before a part give the same rows,
    origins (line numbers) and ledger as one process."""
    from ferdata.sources import fer2013 as module
    from ferdata.steps import StepContext, apply_step

    rng = np.random.default_rng(3)
    lines = ["emotion,pixels,Usage"]
    for i in range(24):
        pixels = " ".join(map(str, rng.integers(0, 256, 2304)))
        lines.append(f'{i % 7},"{pixels}",Training' if i in (9, 17) else f"{i % 7},{pixels},PublicTest")
        if i == 3:
            lines += ["", " , ,", "9,1 2 3,Training"]
        if i == 6:
            lines.append(f'3,{pixels},"Train\ning"')  # a quoted cell over two lines: one row, unknown usage
    fer = tmp_path / "fer2013.csv"
    fer.write_text("\n".join(lines) + "\n")
    apply_step("import_fer2013", {"csv": str(fer)}, out=tmp_path / "one")
    monkeypatch.setattr(module, "MIN_ROWS_PER_WORKER", 1)
    apply_step("import_fer2013", {"csv": str(fer)}, out=tmp_path / "four", ctx=StepContext(num_proc=4))
    a, b = open_dataset(tmp_path / "one"), open_dataset(tmp_path / "four")
    assert list(a) == list(b) and sum(len(ds) for ds in a.values()) == 24
    for split in a:
        assert a[split].select_columns([c for c in a[split].column_names if c != "image"]).to_list() == \
            b[split].select_columns([c for c in b[split].column_names if c != "image"]).to_list()
    ledger = read_rejects(tmp_path / "one")
    assert ledger == read_rejects(tmp_path / "four")
    assert {r["origin"].split("#")[1]: r["reason"] for r in ledger} == {
        "L6": "empty_line", "L7": "empty_line", "L8": "unknown_code", "L13": "unknown_usage"}  # a row's last line


def test_row_estimate_and_a_wrong_one_lose_no_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The parallel parts come from an estimate of the rows (uncompressed size over the first lines'
    length, a gzip file's size read from its trailer); any estimate, far too low or too high, gives
    the rows, origins and ledger of one process."""
    import gzip

    from ferdata.sources import fer2013 as module
    from ferdata.steps import StepContext, apply_step

    fer = write_fer_csv(tmp_path / "f.csv", 10, extra_lines=("", "9,1 2 3,Training"))
    packed = tmp_path / "f.csv.gz"
    packed.write_bytes(gzip.compress(fer.read_bytes()))
    rows = module._count_rows(str(fer))
    for path in (fer, packed):
        assert module._uncompressed_size(str(path)) == fer.stat().st_size
        assert abs(module._estimate_rows(str(path), head_bytes=20_000) - rows) <= 0.1 * rows
        assert module._estimate_rows(str(path)) == rows  # small enough to be counted
    apply_step("import_fer2013", {"csv": str(packed)}, out=tmp_path / "one")
    monkeypatch.setattr(module, "MIN_ROWS_PER_WORKER", 1)
    for k, wrong in enumerate((3, 5 * rows)):
        monkeypatch.setattr(module, "_estimate_rows", lambda path, wrong=wrong: wrong)
        apply_step("import_fer2013", {"csv": str(packed)}, out=tmp_path / f"p{k}", ctx=StepContext(num_proc=3))
        a, b = open_dataset(tmp_path / "one"), open_dataset(tmp_path / f"p{k}")
        assert list(a) == list(b)
        for split in a:
            assert a[split].select_columns([c for c in a[split].column_names if c != "image"]).to_list() == \
                b[split].select_columns([c for c in b[split].column_names if c != "image"]).to_list()
        assert read_rejects(tmp_path / "one") == read_rejects(tmp_path / f"p{k}")
