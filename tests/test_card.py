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
