"""Lineage (``root_id``, ``parent_id``) through pixel-changing steps, and reviews matched by it."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ferdata.dataset import lineage_ids, open_dataset, read_manifest, read_rejects


def test_lineage_ids_entry_and_step() -> None:
    assert lineage_ids("a") == {"id": "a", "parent_id": None, "root_id": "a"}
    assert lineage_ids("b", {"id": "a", "root_id": "a"}) == {"id": "b", "parent_id": "a", "root_id": "a"}
    assert lineage_ids("c", {"id": "b", "parent_id": "a", "root_id": "a"}) == {"id": "c", "parent_id": "b",
                                                                                "root_id": "a"}
    # a row made before lineage existed counts its own id as its root
    assert lineage_ids("b", {"id": "a"}) == {"id": "b", "parent_id": "a", "root_id": "a"}


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 'crawl' of class folders: three face photos and one without a face."""
    skimage_data = pytest.importorskip("skimage.data")
    face = skimage_data.astronaut()[:320, 60:380]
    root = tmp_path_factory.mktemp("photos")
    (root / "happy").mkdir()
    (root / "sad").mkdir()
    Image.fromarray(face).save(root / "happy" / "a.png")
    Image.fromarray(np.ascontiguousarray(face[:, ::-1])).save(root / "happy" / "b.png")
    Image.fromarray(np.clip(face.astype(int) + 25, 0, 255).astype(np.uint8)).save(root / "sad" / "c.png")
    Image.fromarray(np.full((320, 320, 3), 128, np.uint8)).save(root / "sad" / "blank.png")
    return root


@pytest.fixture(scope="module")
def pipeline(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """import (the crawl output) -> review sheets -> crop -> clahe, each through the CLI."""
    from click.testing import CliRunner

    from ferdata.cli import cli

    work = tmp_path_factory.mktemp("lineage")
    paths = {"crawl": work / "crawl", "review": work / "crawl-review", "crop": work / "crop", "clahe": work / "clahe"}
    runner = CliRunner()
    for args in (["import", "folder", photos, "--out", paths["crawl"]],
                 ["review", paths["crawl"], "--out", paths["review"]],
                 ["crop", paths["crawl"], "--out", paths["crop"], "--size", "128", "--margin", "10"],
                 ["clahe", paths["crop"], "--out", paths["clahe"]]):
        result = runner.invoke(cli, [str(a) for a in args] + ["-q"])
        assert result.exit_code == 0, result.output
    return paths


def _review(src: Path, dst: Path, reject_origins: set[str], extra_ids: tuple[str, ...] = ()) -> Path:
    with src.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        if row["origin"].split("/")[-1] in reject_origins:
            row["decision"] = "reject"
    rows += [{"id": i, "label": "happy", "origin": "elsewhere", "decision": "reject"} for i in extra_ids]
    with dst.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return dst


def test_every_step_carries_root_and_parent(pipeline: dict[str, Path]) -> None:
    crawl = open_dataset(pipeline["crawl"])["train"]
    assert crawl["root_id"] == crawl["id"] and set(crawl["parent_id"]) == {None}
    by_origin = {r["origin"]: r["id"] for r in crawl}
    crop = open_dataset(pipeline["crop"])["train"]
    assert len(crop) == 3  # the blank photo has no face
    for row in crop:
        assert row["parent_id"] == row["root_id"] == by_origin[row["origin"]] and row["id"] != row["parent_id"]
    clahe = open_dataset(pipeline["clahe"])["train"]
    crop_ids = {r["origin"]: r["id"] for r in crop}
    for row in clahe:
        assert row["parent_id"] == crop_ids[row["origin"]] and row["root_id"] == by_origin[row["origin"]]


def test_review_of_the_crawl_applies_after_crop(pipeline: dict[str, Path], tmp_path: Path, run_cli) -> None:
    """btfer: review.csv is written for the crawl output; crop gives new ids; the review still applies."""
    review = _review(pipeline["review"] / "review.csv", tmp_path / "review.csv", {"a.png", "blank.png"})
    for stage in ("crop", "clahe"):  # matched by parent_id after crop, by root_id after crop + clahe
        code, _, err = run_cli("apply-review", pipeline[stage], review, "--out", tmp_path / stage, "-q")
        assert code == 0, err
        kept = open_dataset(tmp_path / stage)["train"]
        assert sorted(o.split("/")[-1] for o in kept["origin"]) == ["b.png", "c.png"]
        ledger = [r for r in read_rejects(tmp_path / stage) if r["step"] == "review_exclusions"]
        assert [r["origin"].split("/")[-1] for r in ledger] == ["a.png"]
        info = read_manifest(tmp_path / stage)["steps"][-1]["info"]
        # blank.png was rejected by the reviewer and already removed by crop: accounted for, not an error
        assert info["excluded"] == 1 and info["removed_before"] == 1 and info["rejected_ids_not_found"] == 0


def test_review_of_the_cropped_rows_applies(pipeline: dict[str, Path], tmp_path: Path, run_cli) -> None:
    code, _, err = run_cli("review", pipeline["crop"], "--out", tmp_path / "rv", "-q")
    assert code == 0, err
    review = _review(tmp_path / "rv" / "review.csv", tmp_path / "review.csv", {"c.png"})
    code, _, err = run_cli("apply-review", pipeline["clahe"], review, "--out", tmp_path / "o", "-q")
    assert code == 0, err
    assert sorted(o.split("/")[-1] for o in open_dataset(tmp_path / "o")["train"]["origin"]) == ["a.png", "b.png"]


def test_rejected_id_matching_nothing_is_an_error(pipeline: dict[str, Path], tmp_path: Path, run_cli) -> None:
    review = _review(pipeline["review"] / "review.csv", tmp_path / "review.csv", {"b.png"}, ("f" * 64,))
    code, _, err = run_cli("apply-review", pipeline["crop"], review, "--out", tmp_path / "o", "-q")
    assert code == 2 and err.count("\n") == 1 and "1 rejected id(s)" in err and "--allow-missing" in err
    assert not (tmp_path / "o").exists()
    code, _, err = run_cli("apply-review", pipeline["crop"], review, "--out", tmp_path / "o", "-q", "--allow-missing")
    assert code == 0, err
    assert sorted(o.split("/")[-1] for o in open_dataset(tmp_path / "o")["train"]["origin"]) == ["a.png", "c.png"]
    assert read_manifest(tmp_path / "o")["steps"][-1]["info"]["rejected_ids_not_found"] == 1


def test_review_step_allow_missing_param() -> None:
    from ferdata.errors import RecipeError, UsageError
    from ferdata.steps import get_step

    step = get_step("review_exclusions")
    assert step.make_config({"review_csv": "r.csv", "allow_missing": True}).allow_missing is True
    with pytest.raises(UsageError, match="allow_missing must be true or false"):
        step.make_config({"allow_missing": "yes"})
    with pytest.raises(RecipeError):
        step.make_config({"allow_misssing": True})


def test_a_split_emptied_by_a_step_still_opens(tmp_path: Path) -> None:
    """A step that rejects every row of a split (crop on face-less images) writes a loadable empty split."""
    import datasets

    from ferdata.dataset import core_features, lineage_features, new_manifest, save_dataset

    empty = datasets.Dataset.from_dict({k: [] for k in lineage_features(core_features(["happy"]))},
                                       features=lineage_features(core_features(["happy"])))
    full = datasets.Dataset.from_dict({"image": [Image.new("L", (8, 8))], "label": [0], "id": ["a"], "source": ["t"],
                                       "origin": ["o"], "root_id": ["a"], "parent_id": [None]},
                                      features=lineage_features(core_features(["happy"])))
    save_dataset(datasets.DatasetDict({"train": full, "test": full.select([])}), tmp_path / "o",
                 manifest=new_manifest())
    dd = open_dataset(tmp_path / "o")
    assert {k: len(v) for k, v in dd.items()} == {"train": 1, "test": 0}
    save_dataset(datasets.DatasetDict({"train": empty}), tmp_path / "e", manifest=new_manifest(), num_proc=2)
    assert len(open_dataset(tmp_path / "e")["train"]) == 0


def test_review_of_a_photo_whose_crop_was_removed_later(pipeline: dict[str, Path], tmp_path: Path, run_cli) -> None:
    """The ledger keeps the removed crop's root_id, so rejecting its photo is accounted for, not an error."""
    code, _, err = run_cli("balance", pipeline["crop"], "--out", tmp_path / "bal", "--strategy", "undersample", "-q")
    assert code == 0, err
    ledger = [r for r in read_rejects(tmp_path / "bal") if r["step"] == "balance"]
    crawl = {r["origin"]: r["id"] for r in open_dataset(pipeline["crawl"])["train"]}
    assert len(ledger) == 1 and ledger[0]["root_id"] == crawl[ledger[0]["origin"]] != ledger[0]["id"]
    assert ledger[0]["parent_id"] == ledger[0]["root_id"]
    review = _review(pipeline["review"] / "review.csv", tmp_path / "review.csv", {"a.png", "b.png"})
    code, _, err = run_cli("apply-review", tmp_path / "bal", review, "--out", tmp_path / "o", "-q")
    assert code == 0, err
    info = read_manifest(tmp_path / "o")["steps"][-1]["info"]
    assert info["excluded"] == 1 and info["removed_before"] == 1 and info["rejected_ids_not_found"] == 0
    assert [o.split("/")[-1] for o in open_dataset(tmp_path / "o")["train"]["origin"]] == ["c.png"]
