from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ferdata.dataset import class_counts, open_dataset, read_rejects
from tests.conftest import write_class_folders


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def messy_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Class folders with synonyms, splits and every kind of bad or odd file."""
    root = tmp_path_factory.mktemp("messy")
    write_class_folders(root / "train", 2, classes=["anger", "Happiness", "neutral"])
    write_class_folders(root / "test", 1, classes=["anger", "Happiness", "neutral"], seed=1)
    bad = root / "train" / "neutral"
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    (bad / "zero.png").write_bytes(b"")
    (bad / "text.jpg").write_text("<html>not an image</html>")
    (bad / "truncated.png").write_bytes(_png(rgb)[:60])
    Image.fromarray(rgb).convert("CMYK").save(bad / "cmyk.jpg")
    Image.fromarray(rgb).convert("P").save(bad / "palette.png")
    Image.fromarray(np.dstack([rgb, np.full((20, 20), 128, np.uint8)])).save(bad / "rgba.png")
    Image.fromarray((rng.integers(0, 65535, (20, 20))).astype(np.uint16)).save(bad / "gray16.png")
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(bad / "pixel.png")
    Image.new("L", (9000, 9000)).save(bad / "bomb.png", optimize=False)
    return root


def test_folder_import_converts_and_rejects(messy_folder: Path, tmp_path: Path, run_cli) -> None:
    code, out, err = run_cli("import", "folder", messy_folder, "--out", tmp_path / "o", "-q", "--num-proc", "2")
    assert code == 0, err
    dd = open_dataset(tmp_path / "o")
    assert set(dd) == {"train", "test"}
    counts = class_counts(dd["train"])
    assert counts["angry"] == 2 and counts["happy"] == 2 and counts["neutral"] == 2 + 4  # + cmyk, palette, rgba, 16-bit
    modes = {r["origin"].split("/")[-1]: r["image"].mode for r in dd["train"]}
    assert modes["cmyk.jpg"] == "RGB" and modes["palette.png"] == "RGB" and modes["rgba.png"] == "RGB"
    assert modes["gray16.png"] == "L"
    reasons = {r["origin"].split("/")[-1]: r["reason"] for r in read_rejects(tmp_path / "o")}
    assert reasons == {"zero.png": "empty_file", "text.jpg": "not_an_image", "truncated.png": "corrupt",
                       "pixel.png": "too_small", "bomb.png": "too_many_pixels"}
    assert all(r["source"] == f"folder:{messy_folder.name}" for r in dd["test"])


def test_folder_unknown_class_and_label_map(tmp_path: Path, run_cli) -> None:
    write_class_folders(tmp_path / "src", 1, classes=["joyful", "grumpy"])
    code, _, err = run_cli("import", "folder", tmp_path / "src", "--out", tmp_path / "o")
    assert code == 2 and "'grumpy'" in err and "--label-map" in err and err.count("\n") == 1
    (tmp_path / "map.yaml").write_text("joyful: happy\ngrumpy: angry\n")
    code, _, err = run_cli("import", "folder", tmp_path / "src", "--out", tmp_path / "o", "--label-map",
                           tmp_path / "map.yaml", "-q")
    assert code == 0, err
    assert class_counts(open_dataset(tmp_path / "o")["train"])["happy"] == 1


def test_same_pixels_same_id(tmp_path: Path, run_cli) -> None:
    arr = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    (tmp_path / "src" / "happy").mkdir(parents=True)
    Image.fromarray(arr).save(tmp_path / "src" / "happy" / "a.png")
    Image.fromarray(arr).save(tmp_path / "src" / "happy" / "b.png", compress_level=9)
    Image.fromarray(arr).save(tmp_path / "src" / "happy" / "c.bmp")
    code, _, err = run_cli("import", "folder", tmp_path / "src", "--out", tmp_path / "o", "-q")
    assert code == 0, err
    assert len(set(open_dataset(tmp_path / "o")["train"]["id"])) == 1


def test_affectnet_import(tmp_path: Path, run_cli) -> None:
    root = tmp_path / "affectnet"
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    rng = np.random.default_rng(0)
    for i, code in enumerate([0, 1, 6, 7, 9]):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(root / "images" / f"{i}.jpg")
        np.save(root / "annotations" / f"{i}_exp.npy", np.array(str(code)))
    Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(root / "images" / "99.jpg")
    np.save(root / "annotations" / "5_exp.npy", np.array([object()], dtype=object), allow_pickle=True)
    Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(root / "images" / "5.jpg")
    code, _, err = run_cli("import", "affectnet", root, "--out", tmp_path / "o", "-q")
    assert code == 0, err
    ds = open_dataset(tmp_path / "o")["train"]
    names = ds.features["label"].names
    assert names[-1] == "contempt"
    assert sorted(names[x] for x in ds["label"]) == ["angry", "contempt", "happy", "neutral"]
    reasons = sorted(r["reason"] for r in read_rejects(tmp_path / "o"))
    assert reasons == ["bad_annotation", "no_annotation", "unknown_code"]  # pickle refused, 99 missing, code 9
    code, _, err = run_cli("import", "affectnet", root, "--out", tmp_path / "o7", "-q", "--classes", "7")
    assert code == 0, err
    assert "class_not_in_grouping" in {r["reason"] for r in read_rejects(tmp_path / "o7")}


def test_hf_import_and_grouping(tmp_path: Path, fer_dir: Path, run_cli) -> None:
    import datasets

    raw = datasets.Dataset.from_dict(
        {"img": [Image.fromarray(np.full((16, 16), i * 30, np.uint8)) for i in range(4)], "y": [0, 1, 2, 0]},
        features=datasets.Features({"img": datasets.Image(), "y": datasets.ClassLabel(names=["Anger", "sadness",
                                                                                              "Surprised"])}))
    raw.save_to_disk(str(tmp_path / "raw"))
    code, _, err = run_cli("import", "hf", tmp_path / "raw", "--out", tmp_path / "o", "--image-column", "img",
                           "--label-column", "y", "-q", "--classes", "3")
    assert code == 0, err
    ds = open_dataset(tmp_path / "o")["train"]
    assert ds.features["label"].names == ["negative", "neutral", "positive"]
    assert [ds.features["label"].names[x] for x in ds["label"]] == ["negative", "negative", "neutral", "negative"]
    assert ds["label_original"] == ["angry", "sad", "surprise", "angry"]


def _codes_dataset(path: Path, codes: list[int]) -> None:
    import datasets

    imgs = [Image.fromarray(np.full((16, 16), 10 + i * 20, np.uint8)) for i in range(len(codes))]
    datasets.Dataset.from_dict({"image": imgs, "label": codes},
                               features=datasets.Features({"image": datasets.Image(),
                                                           "label": datasets.Value("int64")})).save_to_disk(str(path))


def test_hf_import_rafdb_codes_by_value(tmp_path: Path, run_cli) -> None:
    """RAF-DB codes 1..7 (1 surprise ... 7 neutral): looked up by value, not used as list positions."""
    _codes_dataset(tmp_path / "raw", [1, 2, 3, 4, 5, 6, 7])
    code, _, err = run_cli("import", "hf", tmp_path / "raw", "--out", tmp_path / "o", "--codes", "rafdb", "-q")
    assert code == 0, err
    ds = open_dataset(tmp_path / "o")["train"]
    names = ds.features["label"].names
    got = {r["origin"]: names[r["label"]] for r in ds}
    assert got == {"train[0]": "surprise", "train[1]": "fear", "train[2]": "disgust", "train[3]": "happy",
                   "train[4]": "sad", "train[5]": "angry", "train[6]": "neutral"}
    assert read_rejects(tmp_path / "o") == []


def test_hf_import_unknown_codes_go_to_ledger(tmp_path: Path, run_cli) -> None:
    _codes_dataset(tmp_path / "raw", [0, 1, -1, 8, 7])
    code, _, err = run_cli("import", "hf", tmp_path / "raw", "--out", tmp_path / "o", "--codes", "rafdb", "-q")
    assert code == 0, err
    ds = open_dataset(tmp_path / "o")["train"]
    assert sorted(ds.features["label"].names[x] for x in ds["label"]) == ["neutral", "surprise"]
    ledger = {r["origin"]: r["reason"] for r in read_rejects(tmp_path / "o")}
    assert ledger == {"train[0]": "unknown_code", "train[2]": "unknown_code", "train[3]": "unknown_code"}


def test_hf_import_classlabel_minus_one_goes_to_ledger(tmp_path: Path, run_cli) -> None:
    import datasets

    imgs = [Image.fromarray(np.full((16, 16), 10 + i * 20, np.uint8)) for i in range(3)]
    datasets.Dataset.from_dict({"image": imgs, "label": [0, -1, 1]},
                               features=datasets.Features({"image": datasets.Image(),
                                                           "label": datasets.ClassLabel(names=["happy", "sad"])})
                               ).save_to_disk(str(tmp_path / "raw"))
    code, _, err = run_cli("import", "hf", tmp_path / "raw", "--out", tmp_path / "o", "-q")
    assert code == 0, err
    ds = open_dataset(tmp_path / "o")["train"]
    assert sorted(ds.features["label"].names[x] for x in ds["label"]) == ["happy", "sad"]
    assert [(r["origin"], r["reason"]) for r in read_rejects(tmp_path / "o")] == [("train[1]", "unknown_code")]


def test_hf_import_unknown_code_map_is_usage_error(tmp_path: Path, run_cli) -> None:
    _codes_dataset(tmp_path / "raw", [1])
    code, _, err = run_cli("import", "hf", tmp_path / "raw", "--out", tmp_path / "o", "--codes", "raf", "-q")
    assert code == 2 and "'raf'" in err and "rafdb" in err and err.count("\n") == 1


def test_import_hf_classes_7_drops_contempt(tmp_path: Path) -> None:
    """--classes 7 means the canonical seven for every importer: a saved dataset's contempt rows go to the ledger."""
    import datasets

    from ferdata.dataset import open_dataset, read_rejects
    from ferdata.steps import apply_step

    rng = np.random.default_rng(0)
    names = ["angry", "contempt", "happy"]
    images = [rng.integers(0, 256, (48, 48), dtype=np.uint8) for _ in range(6)]
    ds = datasets.Dataset.from_dict({"image": images, "label": [0, 1, 2, 1, 0, 2]},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "label": datasets.ClassLabel(names=names)}))
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "saved"))
    apply_step("import_hf", {"src": str(tmp_path / "saved")}, out=tmp_path / "o")
    assert "contempt" not in open_dataset(tmp_path / "o")["train"].features["label"].names
    assert [r["reason"] for r in read_rejects(tmp_path / "o")] == ["class_not_in_grouping"] * 2
