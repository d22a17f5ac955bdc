"""Evaluation splits are never rewritten: dedupe's majority vote, balance's supplement, split's grouping."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ferdata.dataset import open_dataset, read_manifest
from tests.conftest import CLASSES


def _pixels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (24, 24), dtype=np.uint8)


def _save(path: Path, splits: dict[str, list[tuple[int, str]]], *, source: str = "t",
          extra: dict[str, dict[str, list]] | None = None) -> Path:
    """A dataset directory whose rows are ``(pixel seed, class name)``; equal seeds = equal pixels (ids)."""
    import datasets

    from ferdata.dataset import core_features, lineage_features, new_manifest, save_dataset
    from ferdata.images import encode_png, pixel_id

    parts = {}
    for split, rows in splits.items():
        cols: dict[str, list] = {"image": [], "label": [], "id": [], "source": [], "origin": [], "root_id": [],
                                 "parent_id": []}
        for i, (seed, name) in enumerate(rows):
            px = _pixels(seed)
            cols["image"].append({"bytes": encode_png(px), "path": None})
            cols["label"].append(CLASSES.index(name))
            cols["id"].append(pixel_id(px))
            cols["root_id"].append(pixel_id(px))
            cols["parent_id"].append(None)
            cols["source"].append(source)
            cols["origin"].append(f"{split}#{i}:{seed}")
        features = lineage_features(core_features(CLASSES))
        for name, values in (extra or {}).get(split, {}).items():
            cols[name] = values
            features[name] = datasets.Value("string")
        parts[split] = datasets.Dataset.from_dict(cols, features=features)
    save_dataset(datasets.DatasetDict(parts), path, manifest=new_manifest())
    return path


def _labels(ds) -> list[tuple[int, str]]:
    names = ds.features["label"].names
    return [(int(o.split(":")[1]), names[x]) for o, x in zip(ds["origin"], ds["label"], strict=True)]


# ---------------------------------------------------------------- dedupe --on-conflict majority

def test_dedupe_majority_never_relabels_the_test_survivor(tmp_path: Path, run_cli) -> None:
    """The survivor of a conflicting group is the test copy by default: it keeps its label."""
    src = _save(tmp_path / "in", {"train": [(1, "sad"), (1, "sad"), (2, "angry"), (3, "fear"), (3, "happy"),
                                            (3, "happy")],
                                  "test": [(1, "happy"), (4, "neutral")]})
    code, _, err = run_cli("dedupe", src, "--out", tmp_path / "o", "--on-conflict", "majority", "-q")
    assert code == 0, err
    dd = open_dataset(tmp_path / "o")
    assert sorted(_labels(dd["test"])) == [(1, "happy"), (4, "neutral")]  # not relabelled to the majority 'sad'
    # a train survivor is still relabelled by the majority (fear -> happy)
    assert sorted(_labels(dd["train"])) == [(2, "angry"), (3, "happy")]
    info = read_manifest(tmp_path / "o")["steps"][-1]["info"]
    assert info["relabelled"] == 1 and info["eval_survivors_not_relabelled"] == 1


# ---------------------------------------------------------------- balance --supplement

@pytest.fixture
def supplement_case(tmp_path: Path) -> tuple[Path, Path]:
    main = _save(tmp_path / "main", {"train": [(10, "happy"), (11, "happy"), (12, "happy"), (13, "disgust")],
                                     "test": [(20, "happy"), (21, "happy"), (22, "disgust")]})
    other = _save(tmp_path / "other", {"train": [(13, "disgust"), (30, "disgust"), (31, "disgust"), (32, "disgust"),
                                                 (33, "disgust"), (34, "happy")],
                                       "validation": [(40, "disgust")],
                                       "test": [(22, "disgust"), (41, "disgust"), (42, "disgust")]},
                  source="other")
    return main, other


def test_supplement_draws_once_from_the_other_train_split(supplement_case: tuple[Path, Path], tmp_path: Path,
                                                          run_cli) -> None:
    main, other = supplement_case
    code, _, err = run_cli("balance", main, "--out", tmp_path / "o", "--strategy", "target", "--per-class", "3",
                           "--splits", "train,test", "--supplement", other, "--supplement-classes", "disgust", "-q",
                           "--seed", "3")
    assert code == 0, err
    dd = open_dataset(tmp_path / "o")
    added = {s: [seed for seed, _ in _labels(dd[s]) if seed >= 30] for s in dd}
    # only the other dataset's train rows (30..33), never its validation/test rows (40..42)
    assert all(seed in (30, 31, 32, 33) for seeds in added.values() for seed in seeds)
    # drawn once: no supplement row lands in two splits, and none duplicates an id already present (13, 22)
    all_ids = [i for ds in dd.values() for i in ds["id"]]
    assert len(all_ids) == len(set(all_ids))
    assert len(added["train"]) == 2 and len(added["test"]) == 2  # disgust 1 -> 3 in each split
    counts = Counter(name for _, name in _labels(dd["test"]))
    assert counts["disgust"] == 3


def test_supplement_skips_rows_whose_root_is_present(tmp_path: Path, run_cli) -> None:
    """A row of the other dataset derived from a photo already present (same root_id) is not added."""
    import datasets

    from ferdata.dataset import save_dataset

    main = _save(tmp_path / "main", {"train": [(10, "happy"), (13, "disgust")]})
    other = _save(tmp_path / "other", {"train": [(50, "disgust"), (51, "disgust")]})
    dd = open_dataset(other)
    root_of_13 = open_dataset(main)["train"]["id"][1]
    ds = dd["train"].map(lambda r, i: {"root_id": root_of_13 if i == 0 else r}, input_columns=["root_id"],
                         with_indices=True)
    save_dataset(datasets.DatasetDict({"train": ds}), tmp_path / "other2", manifest=read_manifest(other))
    code, _, err = run_cli("balance", main, "--out", tmp_path / "o", "--strategy", "oversample",
                           "--supplement", tmp_path / "other2", "--supplement-classes", "disgust", "-q")
    assert code == 0, err
    seeds = [seed for seed, _ in _labels(open_dataset(tmp_path / "o")["train"])]
    assert 50 not in seeds and 51 in seeds


def test_supplement_needs_a_train_split(tmp_path: Path, run_cli) -> None:
    main = _save(tmp_path / "main", {"train": [(10, "happy"), (13, "disgust")]})
    other = _save(tmp_path / "other", {"test": [(50, "disgust")]})
    code, _, err = run_cli("balance", main, "--out", tmp_path / "o", "--supplement", other, "-q")
    assert code == 2 and "train" in err and err.count("\n") == 1


# ---------------------------------------------------------------- split grouping

def test_split_keeps_identical_ids_and_roots_together(tmp_path: Path, run_cli) -> None:
    """Oversampled repeats (same id) and faces of one photo (same root_id) never straddle splits."""
    rows = [(s, CLASSES[s % 3]) for s in range(60)]
    rows += [(s, CLASSES[s % 3]) for s in range(0, 60, 2)]  # repeats of every other row
    src = _save(tmp_path / "in", {"train": rows})
    dd = open_dataset(src)
    ds = dd["train"]
    # rows 1 and 3 are two faces of one photo: different ids, one root
    roots = list(ds["root_id"])
    roots[3] = roots[1]
    import datasets

    from ferdata.dataset import save_dataset
    save_dataset(datasets.DatasetDict({"train": ds.remove_columns("root_id").add_column("root_id", roots)}),
                 tmp_path / "in2", manifest=read_manifest(src))
    for seed in range(3):
        out = tmp_path / f"o{seed}"
        code, _, err = run_cli("split", tmp_path / "in2", "--out", out, "--ratios", "0.5,0.5", "--seed", str(seed), "-q")
        assert code == 0, err
        res = open_dataset(out)
        where: dict[str, set[str]] = {}
        for split, part in res.items():
            for key in (*part["id"], *part["root_id"]):
                where.setdefault(key, set()).add(split)
        assert all(len(s) == 1 for s in where.values()), [k for k, s in where.items() if len(s) > 1][:3]
        assert sum(len(p) for p in res.values()) == 90


def test_split_group_column_still_groups(tmp_path: Path, run_cli) -> None:
    rows = [(s, CLASSES[s % 2]) for s in range(40)]
    groups = [f"g{s // 4}" for s in range(40)]
    src = _save(tmp_path / "in", {"train": rows}, extra={"train": {"group": groups}})
    code, _, err = run_cli("split", src, "--out", tmp_path / "o", "--ratios", "0.5,0.5", "-q")
    assert code == 0, err
    res = open_dataset(tmp_path / "o")
    seen = {g: {s for s, part in res.items() if g in part["group"]} for g in set(groups)}
    assert all(len(v) == 1 for v in seen.values())


# ---------------------------------------------------------------- --classes means the same for every importer

def test_import_folder_classes_7_drops_contempt_like_fer2013(tmp_path: Path, fer_dir: Path, run_cli) -> None:
    from ferdata.dataset import read_rejects
    from tests.conftest import write_class_folders

    src = write_class_folders(tmp_path / "src", 2, classes=["angry", "happy", "contempt"])
    code, _, err = run_cli("import", "folder", src, "--out", tmp_path / "c7", "--classes", "7", "-q")
    assert code == 0, err
    ds = open_dataset(tmp_path / "c7")["train"]
    assert ds.features["label"].names == open_dataset(fer_dir)["train"].features["label"].names == CLASSES
    assert len(ds) == 4
    ledger = read_rejects(tmp_path / "c7", thumbnails=False)
    assert [r["reason"] for r in ledger] == ["class_not_in_grouping"] * 2  # the FER2013 importer's reason
    code, _, err = run_cli("import", "folder", src, "--out", tmp_path / "c8", "--classes", "8", "-q")
    assert code == 0, err
    assert "contempt" in open_dataset(tmp_path / "c8")["train"].features["label"].names
    # a label map drops a class with null: to the ledger, named
    (tmp_path / "map.yaml").write_text("angry: angry\nhappy: happy\ncontempt: null\n")
    code, out, err = run_cli("import", "folder", src, "--out", tmp_path / "m", "--label-map", tmp_path / "map.yaml")
    assert code == 0, err
    assert "class_dropped_by_label_map 2" in out
    assert len(open_dataset(tmp_path / "m")["train"]) == 4
