"""The dataset card is written through huggingface_hub's DatasetCard and reads back with datasets' own API."""

from __future__ import annotations

from pathlib import Path


def test_card_metadata_round_trips(fer_dir: Path, tmp_path: Path, run_cli) -> None:
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCard

    from ferdata.dataset import open_dataset

    code, _, err = run_cli("export", fer_dir, "--out", tmp_path / "hub", "--license", "cc-by-4.0", "-q")
    assert code == 0, err
    card = DatasetCard.load(tmp_path / "hub" / "README.md")
    assert card.data.license == "cc-by-4.0" and card.data.size_categories == ["n<1K"]
    infos = DatasetInfosDict.from_dataset_card_data(card.data)
    dd = open_dataset(fer_dir)
    assert infos["default"].features == dd["train"].features
    assert {s: i.num_examples for s, i in infos["default"].splits.items()} == {s: len(ds) for s, ds in dd.items()}
    assert [c["config_name"] for c in card.data.configs] == ["default"]
    assert "import_fer2013" in card.text


def test_built_card_is_provenance_field_by_field(tmp_path: Path, run_cli) -> None:
    """Build a recipe, export, push nothing: read the card back and check every field against the data."""
    import re

    from huggingface_hub import DatasetCard

    from ferdata.balance import all_class_weights
    from ferdata.dataset import class_counts, open_dataset, read_manifest
    from tests.conftest import CRAFTED, write_fer_csv

    (tmp_path / "inputs").mkdir()
    csv = write_fer_csv(tmp_path / "inputs" / "fer2013.csv", 3, usages=("Training", "PublicTest", "PrivateTest"))
    recipe = tmp_path / "inputs" / "tiny-report.yaml"  # the tiny recipe, with its HTML report
    recipe.write_text((CRAFTED / "tiny-recipe.yaml").read_text() + "report: true\n")
    out = tmp_path / "fer-built"
    code, _, err = run_cli("build", recipe, "--source", csv, "--out", out, "-q")
    assert code == 0, err
    code, _, err = run_cli("export", out, "--out", tmp_path / "exported", "--license", "cc-by-4.0", "-q")
    assert code == 0, err
    dd, manifest = open_dataset(out), read_manifest(out)
    for card_file, load_path in ((out / "hub" / "README.md", "fer-built/hub"),
                                 (tmp_path / "exported" / "README.md", str(tmp_path / "exported"))):
        text = card_file.read_text(encoding="utf-8")
        card = DatasetCard(text)
        # nothing names a temporary folder or a local path
        assert ".tmp-" not in text and str(tmp_path) not in text and "/inputs/" not in text, card_file
        # the load line names the directory the user chose (an absolute one by its name)
        expected = load_path if not Path(load_path).is_absolute() else Path(load_path).name
        assert f'`datasets.load_dataset("{expected}")`' in text
        data = card.data
        assert data.pretty_name == "fer-built" and text.count("# fer-built\n") == 1
        assert data.task_categories == ["image-classification"] and data.size_categories == ["n<1K"]
        assert [c["path"] for c in data.configs[0]["data_files"]] == [f"data/{s}-*.parquet" for s in dd]
        assert {s["name"]: s["num_examples"] for s in data.dataset_info["splits"]} == {s: len(v) for s, v in dd.items()}
        facts = data.ferdata
        assert facts["seed"] == manifest["seed"] and facts["recipe"] == {"name": "tiny", "variables": {
            "source": "fer2013.csv", "per_class": 3}}
        assert [s["step"] for s in facts["steps"]] == [s["step"] for s in manifest["steps"]]
        for fact, entry in zip(facts["steps"], manifest["steps"], strict=True):
            assert fact["kept"] == entry["kept"] and fact["rejected"] == entry["rejected"]
        imported = facts["steps"][0]["params"]
        # no FER+ file was given: the FER+ options did not apply and are not written
        assert imported == {"csv": "fer2013.csv", "image_size": 48, "classes": 7}
        assert "label_source" not in text and "ferplus_mode" not in text
        assert facts["class_weights"] == all_class_weights(dd)  # from the final rows: no split that is not there
        assert set(facts["class_weights"]) == set(dd)
        table = re.findall(r"^\| (\w+) \| (?:\d+ \| )+(\d+) \|$", text.split("## Class distribution")[1], re.M)
        assert {split: int(total) for split, total in table} == {s: len(v) for s, v in dd.items()}
        assert all(str(n) in text for n in class_counts(dd["train"]).values())
    assert DatasetCard.load(tmp_path / "exported" / "README.md").data.license == "cc-by-4.0"
    # the report's title and header name the dataset, not the temporary build folder
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<title>ferdata report: fer-built</title>" in html and "<h1>ferdata report: fer-built</h1>" in html
    assert ".tmp-" not in html
