from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest

from ferdata import steps
from ferdata.balance import all_class_weights
from ferdata.dataset import class_counts, column_values, open_dataset, read_manifest, read_rejects
from ferdata.errors import RecipeError
from ferdata.pipeline import load_recipe
from ferdata.split import assign
from tests.conftest import CLASSES, CRAFTED, write_fer_csv
from tests.test_hub import hub_fixture  # noqa: F401  (fixture: the loopback Hub the push tests use)

RECIPE = CRAFTED / "tiny-recipe.yaml"


def test_balance_undersample_and_weights(fer_dir: Path, tmp_path: Path, run_cli) -> None:
    from tests.test_integrity import digest

    before = digest(fer_dir)
    code, out, err = run_cli("balance", fer_dir, "--out", tmp_path / "b", "--strategy", "undersample",
                             "--per-class", "2", "-q")
    assert code == 0, err
    dd = open_dataset(tmp_path / "b")
    assert set(class_counts(dd["train"]).values()) == {2}
    assert len(dd["test"]) == 7  # only train is balanced by default
    rejects = read_rejects(tmp_path / "b")
    assert len(rejects) == 14 and {r["reason"] for r in rejects} == {"undersampled"}
    weights = read_manifest(tmp_path / "b")["class_weights"]["train"]
    assert weights["simple"]["happy"] == 1.0 and weights["inverse"]["happy"] == pytest.approx(1 / 7, abs=1e-3)
    assert digest(fer_dir) == before  # input untouched: same file names and bytes


def test_oversample_marks_repeats_and_spares_test(tmp_path: Path, run_cli) -> None:
    csv = write_fer_csv(tmp_path / "f.csv", 2, usages=("Training", "PrivateTest"))
    run_cli("import", "fer2013", csv, "--out", tmp_path / "i", "-q")
    code, _, err = run_cli("balance", tmp_path / "i", "--out", tmp_path / "o", "--strategy", "oversample",
                           "--per-class", "3", "--splits", "train,test")
    assert code == 2 and "test" in err
    code, _, err = run_cli("balance", tmp_path / "i", "--out", tmp_path / "o", "--strategy", "oversample",
                           "--per-class", "3", "-q")
    assert code == 0, err
    dd = open_dataset(tmp_path / "o")
    assert len(dd["train"]) == 21 and sum(dd["train"]["augmented"]) == 14
    assert len(dd["test"]) == 7 and not any(dd["test"]["augmented"])


def test_target_shortfall_and_supplement(fer_dir: Path, tmp_path: Path, run_cli) -> None:
    code, out, err = run_cli("balance", fer_dir, "--out", tmp_path / "t", "--strategy", "target", "--per-class", "5",
                             "-q")
    assert code == 0, err
    info = read_manifest(tmp_path / "t")["steps"][-1]["info"]
    assert info["shortfall"]["train"]["happy"] == 1
    other = tmp_path / "other"
    run_cli("import", "fer2013", write_fer_csv(tmp_path / "other.csv", 3, seed=5), "--out", other, "-q")
    code, out, err = run_cli("balance", fer_dir, "--out", tmp_path / "s", "--strategy", "target", "--per-class", "5",
                             "--supplement", other, "--supplement-classes", "disgust", "-q")
    assert code == 0, err
    dd = open_dataset(tmp_path / "s")
    assert class_counts(dd["train"])["disgust"] == 5 and class_counts(dd["train"])["happy"] == 4
    # a dataset cannot supplement itself: its rows are all present already (no duplicated rows)
    code, out, err = run_cli("balance", fer_dir, "--out", tmp_path / "self", "--strategy", "target", "--per-class",
                             "5", "--supplement", fer_dir, "--supplement-classes", "disgust", "-q")
    assert code == 0, err
    assert class_counts(open_dataset(tmp_path / "self")["train"])["disgust"] == 4


def test_supplement_leaves_out_copies_of_the_base(tmp_path: Path, run_cli) -> None:
    """A shifted or re-encoded copy of a base photo has another id; the supplement check still keeps it out."""
    from ferdata.dataset import save_dataset
    from tests.test_dedupe import _altered_copies, _memory_dd, _smooth, _textured

    faces = [_textured(_smooth(600 + k), k) for k in range(6)]
    save_dataset(_memory_dd({"train": [(faces[0], 0), (faces[1], 0), (faces[2], 1), (faces[3], 1)]}),
                 tmp_path / "base", manifest={"steps": []})
    copies = [_altered_copies(faces[0])["shifted"], _altered_copies(faces[2])["jpeg"]]
    save_dataset(_memory_dd({"train": [(copies[0], 2), (copies[1], 2), (faces[4], 2), (faces[5], 2)]}),
                 tmp_path / "other", manifest={"steps": []})
    code, _, err = run_cli("balance", tmp_path / "base", "--out", tmp_path / "b", "--strategy", "target",
                           "--per-class", "4", "--supplement", tmp_path / "other", "--supplement-classes", "c", "-q")
    assert code == 0, err
    added = open_dataset(tmp_path / "b")["train"].filter(lambda r: r["label"] == 2)
    other = open_dataset(tmp_path / "other")["train"]
    assert sorted(added["id"]) == sorted(other["id"][2:])  # the two new faces, not the two copies
    info = read_manifest(tmp_path / "b")["steps"][-1]["info"]
    assert info["supplemented"] == {"c": 2} and info["shortfall"]["train"]["c"] == 2
    assert info["supplement_left_out"]["same_photo"] == 2 and info["supplement_left_out"]["already_present"] == 0


def test_split_stratified_and_group_aware(tmp_path: Path) -> None:
    labels = np.repeat(np.arange(4), 50)
    where = assign(labels, [0.8, 0.1, 0.1], seed=1)
    for c in range(4):
        assert np.bincount(where[labels == c], minlength=3).tolist() == [40, 5, 5]
    groups = [f"g{i // 5}" for i in range(200)]  # groups of 5 rows
    where = assign(labels, [0.8, 0.2], groups=groups, seed=1)
    for g in set(groups):
        assert len({where[i] for i in range(200) if groups[i] == g}) == 1
    assert abs(np.mean(where == 1) - 0.2) < 0.06
    assert (assign(labels, [0.5, 0.5], seed=3) == assign(labels, [0.5, 0.5], seed=3)).all()


def test_split_cli_keeps_existing_and_resplits(fer_dir: Path, tmp_path: Path, run_cli) -> None:
    code, out, err = run_cli("split", fer_dir, "--out", tmp_path / "same", "-q")
    assert code == 0, err
    assert {k: len(v) for k, v in open_dataset(tmp_path / "same").items()} == {"train": 28, "validation": 7, "test": 7}
    code, _, err = run_cli("split", fer_dir, "--out", tmp_path / "re", "--ratios", "0.5,0.5", "--resplit", "-q")
    assert code == 0, err
    assert {k: len(v) for k, v in open_dataset(tmp_path / "re").items()} == {"train": 21, "validation": 21}
    code, _, err = run_cli("split", fer_dir, "--out", tmp_path / "x", "--ratios", "0.5,0.6")
    assert code == 2 and "sum to 1" in err


def test_export_round_trip_and_imagefolder(fer_dir: Path, tmp_path: Path, run_cli) -> None:
    code, _, err = run_cli("export", fer_dir, "--out", tmp_path / "hub", "--license", "cc-by-4.0")
    assert code == 0, err
    card = (tmp_path / "hub" / "README.md").read_text()
    assert "license: cc-by-4.0" in card and "image-classification" in card and "n<1K" in card
    assert "import_fer2013" in card
    loaded = datasets.load_dataset(str(tmp_path / "hub"))
    original = open_dataset(fer_dir)
    for split in original:
        assert loaded[split]["id"] == original[split]["id"]
        assert loaded[split].features["label"].names == original[split].features["label"].names
        assert loaded[split]["label"] == original[split]["label"]
    code, _, err = run_cli("export", fer_dir, "--out", tmp_path / "folders", "--format", "imagefolder")
    assert code == 0, err
    assert len(list((tmp_path / "folders" / "train" / "happy").glob("*.png"))) == 4


def test_export_shards_read_from_files_equal_the_dataset_shards(fer_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """Parquet shards written from the Arrow files read in order (not memory-mapped), a record batch at a
    time, are byte for byte those of ``Dataset.shard(...).to_parquet``; so are those of a dataset without
    an image column (streamed the same way) and of one with an indices mapping (written from its own shards)."""
    import filecmp

    import datasets

    from ferdata.dataset import plain_readable
    from ferdata.hub import _write_parquet_shards, export_hub

    ds = open_dataset(fer_dir)["train"]
    assert plain_readable(ds)  # a dataset as loaded takes the plain reads
    monkeypatch.setattr(datasets.config, "MAX_ROW_GROUP_SIZE", ds.data.nbytes // 20)  # row groups of a few rows
    with monkeypatch.context() as m:
        m.setattr(datasets.Dataset, "to_parquet", None)  # streamed: to_parquet must not be called
        export_hub(fer_dir, tmp_path / "hub", max_shard_bytes=ds.data.nbytes // 4)
    files = sorted((tmp_path / "hub" / "data").glob("train-*.parquet"))
    assert len(files) == 5
    for i, path in enumerate(files):
        ds.shard(len(files), i, contiguous=True).to_parquet(str(tmp_path / "ref.parquet"))
        assert filecmp.cmp(path, tmp_path / "ref.parquet", shallow=False)
    for other in (ds.remove_columns(["image"]), ds.select([5, 1, 3, 2])):
        paths = [tmp_path / f"mine-{i}.parquet" for i in range(3)]
        _write_parquet_shards(other, 3, paths)
        for i, path in enumerate(paths):
            other.shard(3, i, contiguous=True).to_parquet(str(tmp_path / "ref.parquet"))
            assert filecmp.cmp(path, tmp_path / "ref.parquet", shallow=False)


def test_save_reads_arrow_files_with_plain_reads_and_writes_what_save_to_disk_writes(
        fer_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """A dataset read from Arrow files is saved without ``save_to_disk`` (whose memory-mapped read keeps
    the split resident): the same shard files with the same rows, the same state.json and dataset_info.json.
    That holds for a dataset as loaded, for a step's output (columns dropped and cast, a column added
    in memory beside the file's) and for a filter's (an indices mapping in file order); a selection out of
    order, or of few rows, is saved by ``save_to_disk``."""
    import datasets
    import pyarrow as pa

    from ferdata.dataset import new_manifest, plain_readable, save_dataset

    loaded = open_dataset(fer_dir)
    train = loaded["train"]
    stepped = train.cast_column("image", datasets.Image(decode=False))
    stepped = stepped.add_column("score", [float(i) for i in range(len(train))]).remove_columns(["source"])
    file_block, memory_block = stepped.data.blocks[0]  # the file's block replays a cast and a drop
    assert [op for op, *_ in file_block.replays if op != "replace_schema_metadata"] == ["cast", "drop"]
    monkeypatch.setattr(datasets.config, "MAX_SHARD_SIZE", train.data.nbytes // 3)  # several shards
    kept = [i for i in range(len(train)) if i % 5]  # a filter's indices mapping: rows in file order
    filtered = stepped.select(kept)
    png = tmp_path / "face.png"  # an image given by path is embedded, as save_to_disk embeds it
    png.write_bytes(column_values(train.cast_column("image", datasets.Image(decode=False)).select([0]), "image")[0]["bytes"])
    by_path = datasets.Dataset.from_dict({"image": [{"bytes": None, "path": str(png)}, None], "label": [1, 2]},
                                         features=datasets.Features({"image": datasets.Image(decode=False),
                                                                     "label": datasets.Value("int64")}))
    cases = {"loaded": loaded, "stepped": datasets.DatasetDict({"train": stepped}),
             "filtered": datasets.DatasetDict({"train": filtered}), "by_path": datasets.DatasetDict({"files": by_path})}
    for name, dd in cases.items():
        assert all(plain_readable(ds) for ds in dd.values())
        dd.save_to_disk(str(tmp_path / f"ref-{name}"))
        with monkeypatch.context() as m:
            m.setattr(datasets.Dataset, "save_to_disk", None)  # must not be called
            save_dataset(dd, tmp_path / name, manifest=new_manifest())
        for split in dd:
            ref, mine = tmp_path / f"ref-{name}" / split, tmp_path / name / split
            assert sorted(p.name for p in mine.iterdir()) == sorted(p.name for p in ref.iterdir())
            assert len(list(mine.glob("*.arrow"))) >= (2 if split == "train" else 1)
            for file in ("state.json", "dataset_info.json"):
                assert json.loads((mine / file).read_text()) == json.loads((ref / file).read_text())
            for file in ref.glob("*.arrow"):
                assert pa.ipc.open_stream(pa.OSFile(str(mine / file.name))).read_all().equals(
                    pa.ipc.open_stream(pa.OSFile(str(file))).read_all(), check_metadata=True)
        back = open_dataset(tmp_path / name)
        if name == "by_path":
            assert back["files"]["image"][0]["bytes"] == png.read_bytes() and back["files"]["image"][1] is None
            continue
        assert plain_readable(back["train"]) and back["train"].to_dict() == dd["train"].to_dict()
    for rows in ([3, 0, 1], [0, 1, 2]):  # out of file order; in order but few of the rows
        picked = datasets.DatasetDict({"train": train.select(rows)})
        assert not plain_readable(picked["train"])
        save_dataset(picked, tmp_path / "picked", manifest=new_manifest(), overwrite=True)
        assert open_dataset(tmp_path / "picked")["train"]["id"] == picked["train"]["id"]


def test_push_through_the_real_client_never_leaks_token(hub, fer_dir: Path, tmp_path: Path, run_cli) -> None:
    """Through huggingface_hub's own HfApi over HTTP, against the loopback Hub (tests/test_hub.py)."""
    from huggingface_hub import HfApi

    from ferdata.errors import FerdataError
    from ferdata.hub import push
    from tests.test_hub import TOKEN, _smaller

    result = push(fer_dir, "me/fer", token=TOKEN, private=True)
    assert result.committed and result.commit == hub.refs("me/fer")["refs/heads/main"]
    assert HfApi(endpoint=hub.url, token=TOKEN).dataset_info("me/fer").private is True
    assert "README.md" in result.added and "data/train-00000-of-00001.parquet" in result.added
    assert {"README.md", "data/train-00000-of-00001.parquet", ".gitattributes"} <= set(hub.files("me/fer"))

    hub.fail_next("commit", status=401, message=f"401 for token {TOKEN}")  # a Hub that echoes the token
    with pytest.raises(FerdataError) as info:
        push(_smaller(fer_dir, tmp_path / "smaller", run_cli), "me/fer", token=TOKEN)
    assert TOKEN not in str(info.value) and "***" in str(info.value)
    code, _, err = run_cli("push", fer_dir, "me/fer")
    assert code == 2 and "HF_TOKEN" in err
    code, _, err = run_cli("push", fer_dir, "not-a-repo-id", "--token", TOKEN)
    assert code == 2 and TOKEN not in err


def test_build_recipe_resumes_after_kill(tmp_path: Path, fer_csv: Path, run_cli, monkeypatch) -> None:
    code, out, err = run_cli("build", RECIPE, "--source", fer_csv, "--out", tmp_path / "full", "-q")
    assert code == 0, err
    assert "built tiny" in out and "time per step" in out
    full = open_dataset(tmp_path / "full")
    assert (tmp_path / "full" / "hub" / "README.md").exists()
    manifest = read_manifest(tmp_path / "full")
    assert [s["step"] for s in manifest["steps"]] == ["import_fer2013", "balance", "split"]
    assert manifest["recipe"]["variables"]["per_class"] == 3

    split_step = steps.get_step("split")
    calls = {"import": 0}
    real_import = steps.get_step("import_fer2013")

    def killed(*a, **k):
        raise KeyboardInterrupt

    def counting(*a, **k):
        calls["import"] += 1
        return real_import.fn(*a, **k)

    monkeypatch.setitem(steps._REGISTRY, "split", steps.Step("split", killed, split_step.config_cls, False, ""))
    code, _, err = run_cli("build", RECIPE, "--source", fer_csv, "--out", tmp_path / "again", "-q")
    assert code == 130 and not (tmp_path / "again").exists()
    monkeypatch.setitem(steps._REGISTRY, "split", split_step)
    monkeypatch.setitem(steps._REGISTRY, "import_fer2013",
                        steps.Step("import_fer2013", counting, real_import.config_cls, True, ""))
    code, _, err = run_cli("build", RECIPE, "--source", fer_csv, "--out", tmp_path / "again", "-q")
    assert code == 0, err
    assert calls["import"] == 0  # resumed after the finished steps
    again = open_dataset(tmp_path / "again")
    assert list(again) == list(full)
    for split in full:  # the same rows in the same order with the same labels
        assert again[split]["id"] == full[split]["id"] and again[split]["label"] == full[split]["label"]
    assert read_rejects(tmp_path / "again") == read_rejects(tmp_path / "full")
    assert not list(tmp_path.glob(".again*"))


def test_recipe_validation_before_work(tmp_path: Path, fer_csv: Path, run_cli) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n  - step: import_fer2013\n    csv: x.csv\n  - step: sharpen\n")
    code, _, err = run_cli("build", bad, "--out", tmp_path / "o")
    assert code == 2 and "'sharpen'" in err and "balance" in err
    bad.write_text("steps:\n  - step: import_fer2013\n    csv: x.csv\n  - step: balance\n    strategy: sometimes\n")
    code, _, err = run_cli("build", bad, "--out", tmp_path / "o")
    assert code == 2 and "sometimes" in err and "undersample" in err
    bad.write_text("steps:\n  - step: import_fer2013\n    csv: x.csv\n    colour: red\n")
    code, _, err = run_cli("build", bad, "--out", tmp_path / "o")
    assert code == 2 and "colour" in err and "image_size" in err
    code, _, err = run_cli("build", RECIPE, "--out", tmp_path / "o")
    assert code == 2 and "--source" in err
    code, _, err = run_cli("build", RECIPE, "--out", tmp_path / "o", "--source", fer_csv, "--colour", "red")
    assert code == 2 and "colour" in err and "per_class" in err
    code, _, err = run_cli("build", "no-such-recipe", "--out", tmp_path / "o")
    assert code == 2 and "packaged recipes" in err
    assert not (tmp_path / "o").exists()
    with pytest.raises(RecipeError):
        load_recipe(RECIPE, {"source": None})


def test_class_weights_in_manifest_shape(fer_dir: Path) -> None:
    weights = all_class_weights(open_dataset(fer_dir))
    assert set(weights) == {"train", "validation", "test"}
    assert set(weights["train"]) == {"simple", "conservative", "inverse"}
    for split, methods in weights.items():  # every class has the same count: every class the same weight
        for method, per_class in methods.items():
            assert set(per_class) == set(CLASSES) and len(set(per_class.values())) == 1, (split, method)
    assert set(weights["train"]["simple"].values()) == {1.0}
    assert json.loads(json.dumps(weights)) == weights


def test_every_dataset_states_the_class_weights_of_its_own_rows(fer_csv: Path, tmp_path: Path) -> None:
    """Paper 004's recipe needs class weights without a balance step: every commit writes them (issue 27)."""
    from ferdata.balance import all_class_weights
    from ferdata.pipeline import build, load_recipe
    from ferdata.steps import apply_step

    recipe = load_recipe("fer2013-improved", {"source": str(fer_csv), "size": 96})
    build(recipe, tmp_path / "b")
    for path in (tmp_path / "b", apply_step("split", {"ratios": "0.5,0.5", "resplit": True},
                                            inputs=[tmp_path / "b"], out=tmp_path / "s")[0]):
        dd, weights = open_dataset(path), read_manifest(path)["class_weights"]
        assert weights == all_class_weights(dd) and set(weights) == set(dd)
        assert {"simple", "conservative"} <= set(weights["train"])
