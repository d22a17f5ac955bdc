"""Paper 004's recipe, complete (issue 27 item 3): class weights, and ``--supplement`` for the minority classes.

``ferdata build fer2013-improved`` runs on a tiny generated FER2013 CSV through the real entry point,
without and with ``--supplement DIR`` (a second CSV imported with ``ferdata import fer2013``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ferdata.balance import all_class_weights
from ferdata.dataset import class_counts, open_dataset, read_manifest, read_rejects
from tests.conftest import CLASSES
from tests.test_dedupe import _altered_copies, _smooth, _textured

#: train rows per class of the base CSV: disgust is the minority (median 5)
TRAIN = {"angry": 5, "disgust": 2, "fear": 5, "happy": 7, "neutral": 5, "sad": 5, "surprise": 4}
MEDIAN = 5
#: the Kaggle CSV's emotion codes (the official map, not alphabetical)
CODES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def _face(k: int) -> np.ndarray:
    """A distinct face-like 48x48 image per ``k`` (smooth layout plus fine grain: passes the quality checks)."""
    return _textured(_smooth(900 + k), k)


def _write_csv(path: Path, rows: list[tuple[str, np.ndarray, str]]) -> Path:
    lines = ["emotion,pixels,Usage"]
    lines += [f"{CODES.index(name)},{' '.join(map(str, pixels.ravel()))},{usage}" for name, pixels, usage in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The base CSV, the supplement's CSV and which of its faces are what."""
    root = tmp_path_factory.mktemp("improved")
    k = iter(range(1000))
    base: list[tuple[str, np.ndarray, str]] = []
    for name, n in TRAIN.items():
        base += [(name, _face(next(k)), "Training") for _ in range(n)]
    base += [(name, _face(next(k)), usage) for usage in ("PublicTest", "PrivateTest") for name in CLASSES]
    happy_photo = base[sum(list(TRAIN.values())[:3])][1]  # the first happy train face
    test_disgust = next(px for name, px, usage in base if name == "disgust" and usage == "PrivateTest")
    fresh = [_face(next(k)) for _ in range(4)]
    other = [("disgust", px, "Training") for px in fresh]
    other += [("disgust", _altered_copies(happy_photo)["bright"], "Training"),  # 15 % brighter: another id
              ("disgust", test_disgust, "Training"),                           # the same pixels: the same id
              ("happy", _face(next(k)), "Training"), ("happy", _face(next(k)), "Training"),
              ("disgust", _face(next(k)), "PublicTest"), ("disgust", _face(next(k)), "PrivateTest")]
    return {"root": root, "base": _write_csv(root / "fer2013.csv", base),
            "other": _write_csv(root / "other.csv", other)}


@pytest.fixture(scope="module")
def builds(case: dict[str, object]) -> dict[str, Path]:
    """The recipe without and with --supplement, and the recipe as it was before --supplement existed."""
    import yaml
    from click.testing import CliRunner

    from ferdata.cli import cli
    from ferdata.pipeline import recipe_path

    root = case["root"]
    assert isinstance(root, Path)

    def run(*args: object) -> None:
        result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.stderr

    run("import", "fer2013", case["other"], "--out", root / "other", "-q")
    common = ("--source", case["base"], "--size", "96", "-q")
    run("build", "fer2013-improved", "--out", root / "plain", *common)
    run("build", "fer2013-improved", "--out", root / "plus", "--supplement", root / "other", *common)
    raw = yaml.safe_load(recipe_path("fer2013-improved").read_text())
    raw["variables"] = {k: v for k, v in raw["variables"].items() if not k.startswith("supplement")}
    raw["steps"] = [s for s in raw["steps"] if "when" not in s]
    (root / "before.yaml").write_text(yaml.safe_dump(raw))
    run("build", root / "before.yaml", "--out", root / "before", *common)
    return {"plain": root / "plain", "plus": root / "plus", "before": root / "before", "other": root / "other"}


def _ids(path: Path, column: str = "id") -> dict[str, list[str]]:
    dd = open_dataset(path)
    return {s: sorted(ds[column]) for s, ds in dd.items()}


def _ledger(path: Path) -> list[tuple[str, str, str]]:
    return sorted((r["id"], r["step"], r["reason"]) for r in read_rejects(path))


def test_without_supplement_nothing_changes(builds: dict[str, Path]) -> None:
    plain, before = builds["plain"], builds["before"]
    assert [e["step"] for e in read_manifest(plain)["steps"]] == ["import_fer2013", "dedupe", "quality", "upscale"]
    assert _ids(plain) == _ids(before)
    assert _ledger(plain) == _ledger(before)
    assert read_manifest(plain)["class_weights"] == read_manifest(before)["class_weights"]
    assert class_counts(open_dataset(plain)["train"]) == TRAIN  # nothing lost on the way: the comparison means something


def test_supplement_tops_up_the_minority_class_from_the_other_train_split(builds: dict[str, Path]) -> None:
    plain, plus, other = builds["plain"], builds["plus"], open_dataset(builds["other"])
    manifest = read_manifest(plus)
    assert [e["step"] for e in manifest["steps"]] == ["import_fer2013", "dedupe", "balance", "quality", "upscale"]
    dd = open_dataset(plus)
    assert class_counts(dd["train"]) == {**TRAIN, "disgust": MEDIAN}  # up to the train median, no further
    # evaluation splits untouched: the same rows as without --supplement
    assert {s: ids for s, ids in _ids(plus).items() if s != "train"} == \
        {s: ids for s, ids in _ids(plain).items() if s != "train"}
    # the new train rows are photos of the supplement's train split (upscaled: root_id is the imported id)
    new_roots = set(_ids(plus, "root_id")["train"]) - set(_ids(plain, "root_id")["train"])
    fresh = set(other["train"].filter(lambda r: r["label"] == CLASSES.index("disgust"))["id"][:4])
    assert len(new_roots) == MEDIAN - TRAIN["disgust"] and new_roots <= fresh
    assert not new_roots & {i for s in ("validation", "test") for i in other[s]["id"]}
    info = next(e for e in manifest["steps"] if e["step"] == "balance")["info"]
    assert info["per_class"] == {"train": MEDIAN}
    assert info["supplemented"] == {"disgust": MEDIAN - TRAIN["disgust"]}
    assert info["supplement_left_out"]["already_present"] == 1 and info["supplement_left_out"]["same_photo"] == 1


def test_copies_of_base_photos_are_ledgered_as_contamination(builds: dict[str, Path]) -> None:
    other = open_dataset(builds["other"])["train"]
    bright_id, same_id = other["id"][4], other["id"][5]
    rows = {r["id"]: r for r in read_rejects(builds["plus"]) if r["step"] == "balance"}
    assert set(rows) == {bright_id, same_id}
    assert {r["reason"] for r in rows.values()} == {"contamination"}
    bright, same = json.loads(rows[bright_id]["details"]), json.loads(rows[same_id]["details"])
    assert bright["match"] == "near" and bright["class"] == "disgust" and bright["supplement_split"] == "train"
    assert bright["against_split"] == "train"  # the happy train face it was brightened from
    assert same["match"] == "same_pixels" and same["against_split"] == "test" and same["against_id"] == same_id
    assert rows[bright_id]["root_id"] == bright_id and rows[bright_id].get("thumbnail")
    plus_roots = {i for ids in _ids(builds["plus"], "root_id").values() for i in ids}
    assert bright_id not in plus_roots


def test_class_weights_state_the_final_rows(builds: dict[str, Path]) -> None:
    plain, plus = builds["plain"], builds["plus"]
    weights = read_manifest(plus)["class_weights"]
    assert weights == all_class_weights(open_dataset(plus))
    assert weights["train"]["simple"]["disgust"] == pytest.approx(7 / 5, abs=1e-3)  # happy 7 / disgust 5
    assert read_manifest(plain)["class_weights"]["train"]["simple"]["disgust"] == pytest.approx(7 / 2, abs=1e-3)
    assert weights["train"]["conservative"]["disgust"] == pytest.approx(7 / 5, abs=1e-3)
    card = (plus / "hub" / "README.md").read_text(encoding="utf-8")
    simple = weights["train"]["simple"]
    assert "| train | simple | " + " | ".join(f"{simple[n]:.3g}" for n in CLASSES) + " |" in card
    report = (plus / "report.html").read_text(encoding="utf-8")
    assert "Class weights" in report and "no class labels" not in report


def test_when_names_a_variable(tmp_path: Path) -> None:
    from ferdata.errors import RecipeError
    from ferdata.pipeline import load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text("variables: {source: null, extra: ''}\nsteps:\n  - step: import_fer2013\n    csv: '{source}'\n"
                      "  - step: balance\n    when: extras\n")
    with pytest.raises(RecipeError, match="when: 'extras'.*extra, source"):
        load_recipe(recipe, {"source": "x.csv"})
    recipe.write_text(recipe.read_text().replace("extras", "extra") + "    per_clas: 3\n")
    with pytest.raises(RecipeError, match="no parameter 'per_clas'"):  # checked even when the step is skipped
        load_recipe(recipe, {"source": "x.csv"})
    recipe.write_text(recipe.read_text().replace("per_clas", "per_class"))
    assert [s.name for s, _ in load_recipe(recipe, {"source": "x.csv"}).steps] == ["import_fer2013"]
    assert [s.name for s, _ in load_recipe(recipe, {"source": "x.csv", "extra": "d"}).steps] == \
        ["import_fer2013", "balance"]


def test_per_class_median_and_all_classes() -> None:
    from ferdata.balance import BalanceConfig, per_class_target
    from ferdata.errors import UsageError

    config = BalanceConfig(strategy="keep", per_class="median", supplement="d", supplement_classes="all")
    assert config.supplement_classes is None  # every class: "" cannot be given on the command line
    assert BalanceConfig(per_class="40").per_class == 40
    assert per_class_target("median", {"a": 3, "b": 0, "c": 9, "d": 5}) == 5
    with pytest.raises(UsageError, match="'mean'"):
        BalanceConfig(per_class="mean")
