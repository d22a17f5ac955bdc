"""The refinement loop (``ferdata refine``) on a generated, learnable dataset with flipped labels.

The data: 4 classes whose images differ in mean brightness (50, 100, 150, 200, pixel noise
sd 20, 16x16 gray), so a clean ``tiny-cnn`` separates them almost perfectly in a few epochs; 20 %
of the train labels (and of the test labels) are flipped to another class with a fixed seed. A
model that learns the classes from the 80 % majority therefore disagrees with (nearly) exactly
the flipped rows, which is what the precision / recall thresholds below check.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from ferdata.dataset import read_manifest
from ferdata.errors import OutputExists, UsageError
from ferdata.refine import (
    RefineConfig,
    class_precision,
    flag_row,
    refine,
    stop_reason,
    stratified_folds,
)
from ferdata.split import stratified_split

NAMES = ["angry", "happy", "sad", "surprise"]
#: CLI options of a fast training on the generated data (tiny CNN, few epochs, small batches)
FAST = ["--model", "tiny-cnn", "--epochs", "6", "--batch-size", "8", "--lr", "0.01", "--patience", "0"]


def fast_config(**kw: object) -> RefineConfig:
    base = {"model": "tiny-cnn", "epochs": 6, "batch_size": 8, "lr": 0.01, "patience": 0, "rounds": 3,
            "precision_target": 1.0, "offdiag_max": 0, "mode": "relabel"}
    base.update(kw)
    return RefineConfig(**base)  # type: ignore[arg-type]


def write_noisy_dataset(out: Path, *, per_class: int = 50, noise: float = 0.2, seed: int = 0,
                        names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Write a dataset directory of brightness classes with flipped labels; return the true labels per split."""
    import datasets

    from ferdata.dataset import core_features, new_manifest, save_dataset
    from ferdata.images import encode_png, pixel_id

    names = names or NAMES
    rng = np.random.default_rng(seed)
    splits, truth = {}, {}
    for split, n in (("train", per_class), ("validation", per_class // 6), ("test", per_class // 6)):
        rows: dict[str, list] = {"image": [], "label": [], "id": [], "source": [], "origin": []}
        true = []
        for c in range(len(names)):
            for i in range(n):
                px = np.clip(rng.normal(50 + 50 * c, 20, (16, 16)), 0, 255).astype(np.uint8)
                label = c
                if len(names) > 1 and rng.random() < noise:
                    label = int(rng.choice([k for k in range(len(names)) if k != c]))
                rows["image"].append({"bytes": encode_png(px), "path": None})
                rows["label"].append(label)
                rows["id"].append(pixel_id(px))
                rows["source"].append("synthetic")
                rows["origin"].append(f"{split}/{c}/{i}")
                true.append(c)
        splits[split] = datasets.Dataset.from_dict(rows, features=core_features(names))
        truth[split] = np.asarray(true)
    save_dataset(datasets.DatasetDict(splits), out, manifest=new_manifest(seed=seed))
    return truth


def tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="session")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    out = tmp_path_factory.mktemp("refine-data") / "noisy"
    return out, write_noisy_dataset(out)


@pytest.fixture(scope="session")
def paper_run(noisy: tuple[Path, dict[str, np.ndarray]], tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[Path, str, int, str]:
    """``ferdata refine`` in paper mode through the real entry point; returns (RUN, input digest before, exit, stdout)."""
    from click.testing import CliRunner

    from ferdata.cli import cli

    src, _ = noisy
    before = tree_digest(src)
    run = tmp_path_factory.mktemp("refine-run") / "run"
    result = CliRunner().invoke(cli, ["refine", str(src), "--out", str(run), "--mode", "relabel", *FAST, "--rounds", "3",
                                      "--precision-target", "1.0", "--offdiag-max", "0", "-q"],
                                catch_exceptions=False)
    return run, before, result.exit_code, result.stdout + result.stderr


# ---------------------------------------------------------------- pure helpers

def test_stratified_split_keeps_class_shares_and_is_seeded() -> None:
    labels = [0] * 50 + [1] * 10 + [2] * 1
    rest, part = stratified_split(labels, 0.2, seed=3)
    assert sorted(np.concatenate([rest, part]).tolist()) == list(range(61))
    assert [int(np.sum(np.asarray(labels)[part] == c)) for c in range(3)] == [10, 2, 0]
    again = stratified_split(labels, 0.2, seed=3)
    assert again[1].tolist() == part.tolist()
    assert stratified_split(labels, 0.2, seed=4)[1].tolist() != part.tolist()


def test_stratified_folds_cover_every_class() -> None:
    folds = stratified_folds([0] * 9 + [1] * 6, 3, seed=0)
    for f in range(3):
        chosen = np.flatnonzero(folds == f)
        assert len(chosen) == 5 and set(np.asarray([0] * 9 + [1] * 6)[chosen]) == {0, 1}


def test_stop_rules() -> None:
    cm = np.array([[90, 5, 0], [12, 80, 0], [0, 0, 0]])
    assert class_precision(cm) == [90 / 102, 80 / 85, None]      # class 2: neither present nor predicted
    assert class_precision(np.array([[5, 1], [0, 0]])) == [1.0, 0.0]  # predicted, never present
    assert stop_reason(cm, precision_target=0.88, offdiag_max=9) == "precision_target"
    assert stop_reason(cm, precision_target=0.95, offdiag_max=12) == "offdiag_max"
    assert stop_reason(cm, precision_target=0.95, offdiag_max=9) == ""


def test_flag_row_top2() -> None:
    row = flag_row(2, [0.1, 0.6, 0.3])
    assert (row["top1_label"], row["top2_label"], row["suspect_label"]) == (1, 2, True)
    assert row["label_confidence"] == pytest.approx(0.3)


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--precision-target", "1.5", "precision_target must be in (0, 1], got 1.5"),
    ("--precision-target", "0", "precision_target must be in (0, 1], got 0.0"),
    ("--model", "resnet", "unknown model 'resnet'; valid models: auto, shallow-cnn, fer-cnn"),
    ("--max-flag-rate", "1.5", "1.5 is not in the range"),
    ("--cv", "-2", "cv must be a whole number >= 2"),
    ("--rounds", "0", "rounds must be a whole number >= 1"),
])
def test_bad_options_exit_2(run_cli, noisy, tmp_path: Path, option: str, value: str, message: str) -> None:
    code, _, err = run_cli("refine", noisy[0], "--out", tmp_path / "run", option, value)
    assert code == 2
    assert err.startswith("Error: ") and message in err
    assert not (tmp_path / "run").exists()


def test_fewer_than_two_classes_exit_2(run_cli, tmp_path: Path) -> None:
    src = tmp_path / "one"
    write_noisy_dataset(src, per_class=12, names=["happy"])
    code, _, err = run_cli("refine", src, "--out", tmp_path / "run", "--model", "tiny-cnn")
    assert code == 2
    assert "refine needs at least two classes with images in train; found happy" in err


# ---------------------------------------------------------------- paper mode, end to end

def test_paper_mode_fixes_the_flipped_labels(paper_run, noisy) -> None:
    import datasets

    run, _, code, output = paper_run
    _, truth = noisy
    assert code == 0, output
    refined = datasets.load_from_disk(str(run / "dataset"))
    train = refined["train"]
    assert len(train) == len(truth["train"])                      # same images, same count
    original, new = np.asarray(train["label_original"]), np.asarray(train["label"])
    flipped, changed = original != truth["train"], new != original
    assert np.array_equal(changed, np.asarray(train["relabeled"]))
    precision = (flipped & changed).sum() / max(1, changed.sum())
    recall = (flipped & changed).sum() / flipped.sum()
    # the classes are separable: a model fitted to the 80 % clean majority contradicts the flips only
    assert precision >= 0.8 and recall >= 0.8, (precision, recall)
    assert np.mean(new == truth["train"]) >= 0.9
    assert all(0 <= c <= 1 for c in train["relabel_confidence"])


def test_the_set_shrinks_every_round_and_outputs_mirror_the_paper(paper_run) -> None:
    run, _, code, output = paper_run
    assert code == 0, output
    rounds = read_csv(run / "rounds.csv")
    totals = [int(r["total"]) for r in rounds]
    assert len(rounds) >= 2 and all(b < a for a, b in zip(totals, totals[1:], strict=False)), totals
    for r in rounds:
        assert int(r["images_train"]) + int(r["images_val"]) == int(r["total"])
        assert {f"precision_{n}" for n in NAMES} <= set(r)
        k = r["round"]
        for name in ("confusion.csv", "confusion.png", "accuracy.png", "loss.png", "learning_curves.csv"):
            assert (run / "rounds" / f"round_{k}" / name).exists(), name
    assert rounds[-1]["stop"] in {"precision_target", "offdiag_max", "max_rounds"}
    assert all(r["stop"] == "" for r in rounds[:-1])
    dist = {r["class"]: r for r in read_csv(run / "distribution.csv")}
    assert int(dist["total"]["original"]) == int(dist["total"]["refined"]) == 200
    comparison = read_csv(run / "comparison.csv")
    assert [r["dataset"] for r in comparison] == ["original", "refined"]
    assert {r["heldout_split"] for r in comparison} == {"test"}
    summary = (run / "summary.md").read_text()
    for table in ("Table 5", "Table 6", "Table 7"):
        assert table in summary
    assert "refine: " in output and "held-out accuracy" in output


def test_input_untouched_and_test_never_relabelled(paper_run, noisy) -> None:
    import datasets

    from ferdata.dataset import read_manifest

    run, before, code, _ = paper_run
    src, _ = noisy
    assert code == 0
    assert tree_digest(src) == before
    original = datasets.load_from_disk(str(src))
    refined = datasets.load_from_disk(str(run / "dataset"))
    for split in ("test", "validation"):
        assert refined[split]["label"] == original[split]["label"]
        assert not any(refined[split]["relabeled"])
    entry = read_manifest(run / "dataset")["steps"][-1]
    assert entry["step"] == "refine"
    assert entry["info"]["untouched_splits"] == ["validation", "test"]


def test_existing_run_of_other_options_is_refused(paper_run, noisy) -> None:
    run, _, _, _ = paper_run
    with pytest.raises(OutputExists, match="other data or options"):
        refine(noisy[0], run, fast_config(rounds=2))


def test_resume_after_a_kill_gives_the_same_rounds(paper_run, noisy, tmp_path: Path) -> None:
    run, _, _, _ = paper_run
    out = tmp_path / "resumed"
    config = fast_config(compare=False)

    def kill_after_round_1(row: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        refine(noisy[0], out, config, on_round=kill_after_round_1)
    state = json.loads((out / "state.json").read_text())
    assert len(state["rounds"]) == 1 and not (out / "rounds.csv").exists()
    resumed: list[int] = []
    refine(noisy[0], out, config, on_round=lambda row: resumed.append(row["round"]))
    assert resumed and resumed[0] == 2                             # round 1 was not trained again
    assert (out / "rounds.csv").read_text() == (run / "rounds.csv").read_text()


def test_a_run_killed_between_folds_resumes_from_its_last_finished_fold(noisy, tmp_path: Path, monkeypatch) -> None:
    """Killed when fold 3 of 3 starts: the rerun loads folds 1-2, trains only fold 3, and ends as an unbroken run."""
    import datasets

    from ferdata import refine as refine_module

    config = fast_config(mode="flag", cv=3, rounds=1, compare=False, augment="none", tta=False, epochs=12)
    whole = refine(noisy[0], tmp_path / "whole", config)
    real_fit = refine_module._Trainer.fit
    trained: list[str] = []

    def fit_killed_at_fold_3(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if len(trained) == 2:
            raise KeyboardInterrupt
        trained.append(kwargs.get("label", ""))
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(refine_module._Trainer, "fit", fit_killed_at_fold_3)
    with pytest.raises(KeyboardInterrupt):
        refine(noisy[0], tmp_path / "killed", config)
    finished = sorted(p.parent.name for p in (tmp_path / "killed" / "rounds" / "round_1").glob("fold_*/fold.json"))
    assert finished == ["fold_0", "fold_1"] and not (tmp_path / "killed" / "rounds.csv").exists()
    trained.clear()
    monkeypatch.setattr(refine_module._Trainer, "fit", lambda self, *a, **k: (trained.append(k.get("label", "")),
                                                                               real_fit(self, *a, **k))[1])
    resumed = refine(noisy[0], tmp_path / "killed", config)
    assert trained == ["fold 3/3"]                                     # folds 1 and 2 were loaded, not trained
    assert (tmp_path / "killed" / "rounds.csv").read_text() == (tmp_path / "whole" / "rounds.csv").read_text()
    np.testing.assert_allclose(np.load(tmp_path / "killed" / "rounds" / "round_1" / "probs.npy"),
                               np.load(tmp_path / "whole" / "rounds" / "round_1" / "probs.npy"), atol=1e-5)
    flags = [datasets.load_from_disk(str(r.dataset_dir))["train"]["suspect_label"] for r in (whole, resumed)]
    assert flags[0] == flags[1] and any(flags[0])


def test_progress_lines_per_epoch_and_fold_with_an_eta(noisy, tmp_path: Path, capsys) -> None:
    from ferdata.progress import disable_progress_bars, enable_progress_bars, is_quiet, progress_bars_disabled, set_quiet

    was_off, was_quiet = progress_bars_disabled(), is_quiet()
    set_quiet(False)
    enable_progress_bars()
    try:
        refine(noisy[0], tmp_path / "run", fast_config(mode="flag", cv=2, rounds=1, compare=False, epochs=2,
                                                       augment="none", tta=False))
    finally:
        set_quiet(was_quiet)
        if was_off:
            disable_progress_bars()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("refine fold ")]
    epochs = [line for line in lines if " epoch " in line]
    assert len(epochs) == 4 and epochs[0].startswith("refine fold 1/2 epoch 1/2: loss ")
    assert all(" elapsed, ETA " in line for line in lines)
    assert [line.split(":")[0] for line in lines if " done" in line] == ["refine fold 1/2 done", "refine fold 2/2 done"]
    assert lines[-1].endswith("ETA 0s")


# ---------------------------------------------------------------- safer variants

def test_cv_prune_sends_disagreements_to_the_ledger(noisy, tmp_path: Path) -> None:
    import datasets

    from ferdata.dataset import read_rejects

    src, truth = noisy
    result = refine(src, tmp_path / "run", fast_config(rounds=1, cv=2, mode="prune", compare=False, epochs=12))
    assert result.stop_reason in {"max_rounds", "precision_target", "offdiag_max"}
    refined = datasets.load_from_disk(str(result.dataset_dir))
    rejects = [r for r in read_rejects(result.dataset_dir) if r["step"] == "refine"]
    assert {r["reason"] for r in rejects} == {"label_disagreement"}
    assert len(refined["train"]) + len(rejects) == len(truth["train"])
    src_train = datasets.load_from_disk(str(src))["train"]
    flipped_ids = {i for i, lab, t in zip(src_train["id"], src_train["label"], truth["train"], strict=True) if lab != t}
    pruned = {r["id"] for r in rejects}
    assert len(pruned & flipped_ids) / len(pruned) >= 0.8          # precision of out-of-sample flags
    assert len(pruned & flipped_ids) / len(flipped_ids) >= 0.8     # recall
    assert len(refined["test"]) == len(truth["test"])              # held-out splits never pruned
    assert json.loads(rejects[0]["details"])["predicted"] != json.loads(rejects[0]["details"])["label"]


def test_flag_mode_changes_no_label(noisy, tmp_path: Path) -> None:
    import datasets

    src, truth = noisy
    result = refine(src, tmp_path / "run", fast_config(rounds=1, mode="flag", cv=1, rule="argmax", compare=False))
    original = datasets.load_from_disk(str(src))
    refined = datasets.load_from_disk(str(result.dataset_dir))
    for split in original:
        assert refined[split]["label"] == original[split]["label"]
    train = refined["train"]
    suspect = np.asarray(train["suspect_label"])
    flipped = np.asarray(train["label"]) != truth["train"]
    assert (suspect & flipped).sum() / max(1, suspect.sum()) >= 0.8
    assert (suspect & flipped).sum() / flipped.sum() >= 0.8
    assert np.all(np.asarray(train["top1_label"])[suspect] != np.asarray(train["label"])[suspect])
    assert not any(refined["test"]["suspect_label"])
    assert refined["train"].features["top2_label"].names == NAMES
    # flag mode reports flags, not removals: nothing was removed from the dataset
    rounds = read_csv(tmp_path / "run" / "rounds.csv")
    assert "kept" not in rounds[0] and "removed" not in rounds[0] and int(rounds[-1]["flagged"]) == suspect.sum()
    dist = {r["class"]: r for r in read_csv(tmp_path / "run" / "distribution.csv")}
    assert int(dist["total"]["refined"]) == int(dist["total"]["original"]) == 200
    assert int(dist["total"]["flagged"]) == suspect.sum()
    entry = read_manifest(result.dataset_dir)["steps"][-1]  # recorded like every other step
    assert entry["step"] == "refine" and entry["seed"] == 0 and entry["limit"] is None and entry["limited_out"] == 0
    assert entry["input_rows"] == entry["kept"] + entry["rejected"] + entry["limited_out"]


def test_class_dropping_to_zero_keeps_the_last_good_round(noisy, tmp_path: Path, monkeypatch) -> None:
    """A model that never predicts 'surprise' would empty that class: the loop stops at that round."""
    from ferdata import refine as refine_module

    real_predict = refine_module._Trainer.predict

    def never_surprise(self, model, ds):  # type: ignore[no-untyped-def]
        probs = real_predict(self, model, ds)
        probs[:, 3] = 0.0
        return probs

    monkeypatch.setattr(refine_module._Trainer, "predict", never_surprise)
    result = refine(noisy[0], tmp_path / "run", fast_config(rounds=3, compare=False, epochs=1))
    assert len(result.rounds) == 1
    assert result.stop_reason.startswith("class_dropped:") and "surprise" in result.stop_reason
    assert (result.dataset_dir / "dataset_dict.json").exists()
    assert result.stop_reason in (tmp_path / "run" / "summary.md").read_text()


def test_nothing_to_refine_is_a_usage_error(noisy, tmp_path: Path) -> None:
    import datasets

    from ferdata.dataset import new_manifest, save_dataset

    only_test = tmp_path / "only-test"
    dd = datasets.load_from_disk(str(noisy[0]))
    save_dataset(datasets.DatasetDict({"test": dd["test"]}), only_test, manifest=new_manifest())
    with pytest.raises(UsageError, match="nothing to refine"):
        refine(only_test, tmp_path / "run", fast_config())


def test_a_finished_run_finishes_again_in_another_mode_without_training(paper_run, noisy, tmp_path: Path) -> None:
    import shutil

    import datasets

    run, _, _, _ = paper_run
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    trained: list[int] = []
    result = refine(noisy[0], copy, fast_config(mode="flag", cv=1, rule="argmax", compare=False, augment="none",
                                                tta=False, schedule="plateau"),  # the paper run's training options
                    on_round=lambda r: trained.append(r["round"]))
    assert trained == []
    same = ("round", "images_train", "images_val", "total", "val_accuracy")   # the same trainings, in flag's words
    flag_rows, paper_rows = read_csv(copy / "rounds.csv"), read_csv(run / "rounds.csv")
    assert [[r[k] for k in same] for r in flag_rows] == [[r[k] for k in same] for r in paper_rows]
    assert [r["agree"] for r in flag_rows] == [r["kept"] for r in paper_rows] and "kept" not in flag_rows[0]
    train = datasets.load_from_disk(str(result.dataset_dir))["train"]
    relabelled = datasets.load_from_disk(str(run / "dataset"))["train"]
    assert train["suspect_label"] == relabelled["relabeled"]   # same final model, other output


def test_the_same_command_again_resumes_a_finished_run_without_training(paper_run, noisy, run_cli) -> None:
    run, _, _, _ = paper_run
    before = (run / "rounds.csv").read_text()
    code, out, err = run_cli("refine", noisy[0], "--out", run, "--mode", "relabel", *FAST, "--rounds", "3",
                             "--precision-target", "1.0", "--offdiag-max", "0", "-q")
    assert code == 0, err
    assert "round " not in err                                   # no round was trained again
    assert (run / "rounds.csv").read_text() == before
    assert "refine: " in out


def test_refining_every_split_carves_the_held_out_split_first(noisy, tmp_path: Path) -> None:
    import datasets

    src, truth = noisy
    result = refine(src, tmp_path / "run", fast_config(rounds=1, include_validation=True, include_test=True))
    assert {r["heldout_split"] for r in result.comparison} == {"carved 10% of train+validation+test"}
    held = result.comparison[0]["heldout_images"]
    assert result.comparison[0]["total"] == 200 + 32 + 32 - held      # refined without the held-out rows
    refined = datasets.load_from_disk(str(result.dataset_dir))
    assert len(refined["test"]) == len(truth["test"]) and any(refined["test"]["relabeled"])
    assert "WARNING: the test split was refined too" in (tmp_path / "run" / "summary.md").read_text()


# ---------------------------------------------------------------- issue 14: rules, guard, ranking, grouping

def test_confident_learning_rule_by_hand() -> None:
    from ferdata.refine import confident_thresholds, find_suspects, label_scores

    labels = np.array([0, 0, 0, 1, 1, 1])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7],    # row 2: labelled 0, p1 = 0.7 >= t1 = 0.65
                      [0.3, 0.7], [0.2, 0.8], [0.55, 0.45]])  # row 5: p0 = 0.55 < t0 = 0.667: not confident
    t = confident_thresholds(labels, probs)
    assert t.tolist() == pytest.approx([2 / 3, 0.65])
    assert find_suspects(labels, probs, rule="confident").tolist() == [False, False, True, False, False, False]
    assert find_suspects(labels, probs, rule="argmax").tolist() == [False, False, True, False, False, True]
    sc, margin = label_scores(labels, probs)
    assert margin.tolist() == pytest.approx([0.8, 0.6, -0.4, 0.4, 0.6, -0.1])
    assert find_suspects(labels, probs, top=1).tolist() == [False, False, True, False, False, False]
    assert find_suspects(labels, probs, top=2).sum() == 2 and find_suspects(labels, probs, top=2)[5]


def test_posterior_rule_by_hand() -> None:
    """The calibrated confident joint, the error posterior and the expected-F1 cut, computed by hand."""
    from ferdata.refine import error_posterior, expected_f1_cut, find_suspects, noise_joint

    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.1, 0.9], [0.1, 0.9], [0.3, 0.7]])
    # thresholds t0 = 0.5, t1 = 0.8: row 1 counts as (given 0, true 1), row 3 reaches neither
    joint = noise_joint(labels, probs)
    assert joint.ravel().tolist() == pytest.approx([0.25, 0.25, 0.0, 0.5])
    # P(given 0 | true 0) = 1, P(given 0 | true 1) = 1/3: row 1 is wrong with 0.9/3 / (0.1 + 0.9/3) = 0.75
    q = error_posterior(labels, probs, temperature=1)
    assert q.tolist() == pytest.approx([(0.1 / 3) / (0.9 + 0.1 / 3), 0.75, 0.0, 0.0])
    assert find_suspects(labels, probs, rule="posterior").tolist() == [False, True, False, False]
    # expected F1 of the top k, 2 * sum(top k) / (k + sum): 2 * 0.9 / 2.7, 2 * 1.6 / 3.7 (best), 2 * 1.7 / 4.7
    assert expected_f1_cut(np.array([0.1, 0.9, 0.7, 0.0])).tolist() == [False, True, True, False]
    assert not expected_f1_cut(np.zeros(3)).any()


def test_posterior_calibrates_the_model_through_the_noise_channel() -> None:
    """A model right about every class but timid (0.4 for the right class of 4) doubts nothing at
    face value; through the channel its temperature is fitted below 1 and every flipped row is
    flagged, no clean one. The fitted temperature is the grid's most likely one."""
    from ferdata.refine import channel_temperature, error_posterior, find_suspects
    from ferdata.refine.rules import TEMPERATURES, _given_if_true, _tempered, noise_joint

    rng = np.random.default_rng(0)
    true = np.repeat(np.arange(4), 50)
    flipped = rng.random(200) < 0.2
    labels = np.where(flipped, (true + rng.integers(1, 4, 200)) % 4, true)
    probs = np.full((200, 4), 0.6 / 3)
    probs[np.arange(200), true] = 0.4 + rng.uniform(-0.02, 0.02, 200)
    probs /= probs.sum(axis=1, keepdims=True)
    at_face_value = error_posterior(labels, probs, temperature=1)
    assert at_face_value[flipped].min() < 0.35                      # timid: many flips look unlikely errors
    t = channel_temperature(labels, probs)
    assert t < 0.5
    channel = _given_if_true(noise_joint(labels, probs))
    ll = [np.log((_tempered(probs, x) * channel[labels, :]).sum(axis=1)).sum() for x in TEMPERATURES]
    assert t == TEMPERATURES[int(np.argmax(ll))]
    assert (find_suspects(labels, probs, rule="posterior") == flipped).all()
    assert error_posterior(labels, probs)[flipped].min() > 0.9 > 0.1 > error_posterior(labels, probs)[~flipped].max()


def test_guard_check_by_hand() -> None:
    from ferdata.refine import guard_check

    labels = np.array([0, 1, 2, 3] * 5)
    good = np.eye(4)[labels] * 0.7 + 0.075
    ok = guard_check(labels, good, np.zeros(20, bool), classes=4, max_flag_rate=0.5, out_of_sample=True)
    assert not ok["triggered"] and ok["accuracy"] == 1.0 and ok["chance"] == 0.25
    weak = np.roll(good, 1, axis=0)          # accuracy 0: under 2x chance
    g = guard_check(labels, weak, np.zeros(20, bool), classes=4, max_flag_rate=0.5, out_of_sample=True)
    assert g["triggered"] and "2x chance" in g["reason"]
    many = np.arange(20) < 12                # 60 % suspects
    g = guard_check(labels, good, many, classes=4, max_flag_rate=0.5, out_of_sample=True)
    assert g["triggered"] and "--max-flag-rate 0.5" in g["reason"] and "2x chance" not in g["reason"]


def test_carving_keeps_repeats_together() -> None:
    from ferdata.refine import carve, group_folds

    labels = np.repeat([0, 1, 2], 20)
    groups = np.repeat(np.arange(30), 2)     # every image twice (oversampled repeats)
    rest, part = carve(labels, 0.2, seed=3, groups=groups)
    assert not set(groups[rest]) & set(groups[part]) and len(rest) + len(part) == 60
    assert 8 <= len(part) <= 16
    folds = group_folds(labels, 3, seed=0, groups=groups)
    assert all(len(set(folds[groups == g])) == 1 for g in range(30))
    assert all(np.unique(labels[folds == f]).tolist() == [0, 1, 2] for f in range(3))   # every class in every fold
    assert min(np.bincount(folds, minlength=3)) >= 14


def test_held_out_carve_and_folds_group_by_id(tmp_path: Path) -> None:
    """Repeated rows (same id) never straddle the held-out carve of refine (issue 12, defect 6)."""
    import datasets

    from ferdata.dataset import new_manifest, save_dataset
    from ferdata.refine import _Run

    src = tmp_path / "src"
    write_noisy_dataset(src, per_class=20)
    train = datasets.load_from_disk(str(src))["train"]
    doubled = datasets.concatenate_datasets([train, train])      # every id twice
    save_dataset(datasets.DatasetDict({"train": doubled}), tmp_path / "doubled", manifest=new_manifest())
    run = _Run(tmp_path / "doubled", tmp_path / "run", fast_config(mode="flag", heldout_fraction=0.2), overwrite=False)
    ids = np.asarray(doubled["id"])
    carved = np.setdiff1d(np.arange(len(ids)), run.work)
    assert len(carved) > 0 and not set(ids[run.work]) & set(ids[carved])


def random_label_dataset(out: Path, *, n: int = 160, seed: int = 0) -> None:
    """Noise images with random labels: nothing to learn."""
    import datasets

    from ferdata.dataset import core_features, new_manifest, save_dataset
    from ferdata.images import encode_png, pixel_id

    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {"image": [], "label": [], "id": [], "source": [], "origin": []}
    for i in range(n):
        px = rng.integers(0, 256, (16, 16)).astype(np.uint8)
        rows["image"].append({"bytes": encode_png(px), "path": None})
        rows["label"].append(int(rng.integers(0, 4)))
        rows["id"].append(pixel_id(px))
        rows["source"].append("synthetic")
        rows["origin"].append(str(i))
    save_dataset(datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=core_features(NAMES))}),
                 out, manifest=new_manifest(seed=seed))


def _cli_with_log(run_cli, caplog, *args: object) -> tuple[int, str, str]:
    """``run_cli`` with what the ``ferdata`` logger wrote (to the process's stderr) appended to stderr."""
    import logging

    caplog.clear()
    logger = logging.getLogger("ferdata")
    logger.addHandler(caplog.handler)
    try:
        code, out, err = run_cli(*args)
    finally:
        logger.removeHandler(caplog.handler)
    return code, out, err + caplog.text


def test_guard_refuses_to_flag_unlearnable_labels(tmp_path: Path, run_cli, caplog) -> None:
    """A refusal is stated once on stderr, and in summary.md, rounds.csv, distribution.csv and the manifest;
    nothing changed, so no comparison is trained."""
    import datasets

    random_label_dataset(tmp_path / "random")
    code, out, err = _cli_with_log(run_cli, caplog, "refine", tmp_path / "random", "--out", tmp_path / "run",
                                   "--cv", "2", *FAST, "--compare", "-q")
    assert code == 0, err
    assert err.count("refine guard") == 1 and "would have been flagged by the posterior rule; none was, because" in err
    assert "flagged: 0 of 160 rows (posterior rule; the guard refused" in out
    flagged = datasets.load_from_disk(str(tmp_path / "run" / "dataset"))["train"]["suspect_label"]
    assert not any(flagged)
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert "WARNING (guard): refine guard:" in summary and "would have been flagged" in summary
    assert "comparison: not trained, nothing was flagged" in summary and "Table 7" not in summary
    assert not (tmp_path / "run" / "comparison").exists() and (tmp_path / "run" / "comparison.csv").read_text() == ""
    last = read_csv(tmp_path / "run" / "rounds.csv")[-1]
    assert (last["guard"], last["flagged"]) == ("refused", "0") and int(last["candidates"]) > 0
    assert last["guard_statement"].startswith("refine guard: ") and "kept" not in last and "agree" in last
    dist = {r["class"]: r for r in read_csv(tmp_path / "run" / "distribution.csv")}
    assert dist["total"]["flagged"] == "0" and dist["total"]["refined"] == dist["total"]["original"] == "160"
    info = read_manifest(tmp_path / "run" / "dataset")["steps"][-1]["info"]["guard"]
    assert info["triggered"] and info["statement"] == last["guard_statement"]
    from ferdata.report import write_report  # the dataset's report says it too

    page = write_report(tmp_path / "run" / "dataset", per_class=0).path.read_text(encoding="utf-8")
    assert "No row was flagged, pruned or relabelled (mode flag): refine guard: " in page
    assert "0 rows whose label" not in page
    # --force acts on the suspects anyway (finishing the same run: no training)
    code, out, err = _cli_with_log(run_cli, caplog, "refine", tmp_path / "random", "--out", tmp_path / "run",
                                   "--cv", "2", *FAST, "--no-compare", "--force", "-q")
    assert code == 0, err
    assert "refine guard overridden (--force)" in err and "guard overridden" in out
    assert any(datasets.load_from_disk(str(tmp_path / "run" / "dataset"))["train"]["suspect_label"])
    assert read_csv(tmp_path / "run" / "rounds.csv")[-1]["guard"] == "overridden"


def _crafted_probs(n: int = 700, *, classes: int = 7, accuracy: float = 0.8, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(labels, out-of-sample probabilities) of a model right on ``accuracy`` of the rows, confident both ways."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    predicted = np.where(rng.random(n) < accuracy, labels, (labels + rng.integers(1, classes, n)) % classes)
    probs = np.full((n, classes), 0.3 / (classes - 1))
    probs[np.arange(n), predicted] = 0.7
    return labels, probs


def test_default_epochs_follow_the_rows_each_model_trains_on(noisy, tmp_path: Path) -> None:
    """flag/prune's epochs: a training budget (10 on a whole FER2013, more on fewer rows, 10-40), set by
    the run from the rows each fold model trains on; an explicit --epochs wins."""
    from ferdata.refine import _Run, auto_epochs

    assert [auto_epochs(n) for n in (15_104, 6_375, 3_750, 1_979, 1, 300_000)] == [10, 24, 40, 40, 40, 10]
    config = RefineConfig(model="tiny-cnn", cv=2)
    assert config.epochs is None
    run = _Run(noisy[0], tmp_path / "run", config, overwrite=False)
    rows = len(run.work) * (1 - 1 / 2) * (1 - config.val_fraction)   # 2 folds, then the 20 % validation carve
    assert len(run.work) == 200 and run.config.epochs == auto_epochs(int(rows)) == 40   # held out: the test split
    assert config.epochs is None   # the caller's config is not changed: reused on other data, it resolves again
    assert run.trainer.train.epochs == 40 and run.state["identity"]["config"]["epochs"] == 40   # resumes the same
    explicit = RefineConfig(model="tiny-cnn", cv=2, epochs=3)
    assert _Run(noisy[0], tmp_path / "run2", explicit, overwrite=False).trainer.train.epochs == 3


def test_the_default_rule_flags_a_flipped_row_and_not_a_clean_one() -> None:
    """Crafted probabilities: a row the model firmly puts in another class is flagged, a believed row is not."""
    from ferdata.refine import judge

    config = RefineConfig()
    labels, probs = _crafted_probs()
    labels[0], probs[0] = 2, [0.02, 0.02, 0.02, 0.02, 0.02, 0.88, 0.02]   # given 2, model: 5 (a flip)
    labels[1], probs[1] = 3, [0.02, 0.02, 0.02, 0.88, 0.02, 0.02, 0.02]   # given 3, model: 3
    mask, guard = judge(labels, probs, rule=str(config.rule), top=config.top, classes=7,
                        max_flag_rate=config.max_flag_rate, out_of_sample=True, force=False)
    assert mask[0] and not mask[1]
    assert not guard["triggered"] and guard["suspects"] == guard["candidates"] == int(mask.sum())
    assert 0.1 < mask.mean() < 0.3            # about the 20 % the model disagrees with, no more
    confident, _ = judge(labels, probs, rule="confident", top=None, classes=7, max_flag_rate=0.5,
                         out_of_sample=True, force=False)
    assert confident[0] and not confident[1]


def test_the_guard_trips_on_a_model_at_chance() -> None:
    from ferdata.refine import judge
    from ferdata.refine.rules import guard_statement

    labels, probs = _crafted_probs(accuracy=1 / 7, seed=1)           # right as often as a guess
    mask, guard = judge(labels, probs, rule="argmax", top=None, classes=7, max_flag_rate=0.5,
                        out_of_sample=True, force=False)
    assert guard["triggered"] and "under 2x chance" in guard["reason"] and not mask.any()
    assert guard["candidates"] > 500 and guard["suspects"] == 0
    statement = guard_statement(guard, mode="prune")
    assert statement.startswith(f"refine guard: {guard['candidates']} of 700 rows") and "would have been pruned" in statement
    forced, g = judge(labels, probs, rule="argmax", top=None, classes=7, max_flag_rate=0.5, out_of_sample=True,
                      force=True)
    assert forced.sum() == g["candidates"] and guard_statement(g, mode="flag").startswith("refine guard overridden")
    # a good model passes the same guard
    assert not judge(*_crafted_probs(), rule="argmax", top=None, classes=7, max_flag_rate=0.5, out_of_sample=True,
                     force=False)[1]["triggered"]


def test_flag_is_the_default_and_relabel_is_named_with_its_warning(run_cli) -> None:
    code, out, _ = run_cli("refine", "--help")
    assert code == 0
    text = " ".join(out.split())
    assert "[default: flag]" in text and "0.79 to 0.44" in text and "reproduce the paper only" in text
    # flag changes nothing, so it trains no comparison unless asked; prune and relabel do
    assert RefineConfig().compare is False and RefineConfig(mode="prune").compare is True
    assert RefineConfig(compare=True).compare is True and RefineConfig(mode="relabel", compare=False).compare is False


def test_default_flag_run_finds_exactly_the_flipped_labels(noisy, tmp_path: Path, run_cli) -> None:
    """Out-of-sample folds (the flag default) and the confident rule on easy data: precision and recall 1.0.

    Training options made for the tiny data, like the model: no augmentation (with the default light
    augmentation tiny-cnn finds 42 of the 45 flips in these 12 epochs; shallow-cnn-std, the default
    model, standardises each image and so cannot see these brightness classes at all) and the constant
    rate of the plateau schedule (the default cosine decay finds 41 of the 45 in these 12 epochs).
    """
    import datasets

    src, truth = noisy
    code, out, err = run_cli("refine", src, "--out", tmp_path / "run", "--mode", "flag", "--rule", "confident",
                             "--cv", "2", "--model",
                             "tiny-cnn", "--epochs", "12", "--batch-size", "16", "--lr", "0.01", "--patience", "0",
                             "--schedule", "plateau", "--augment", "none", "--no-compare", "-q")
    assert code == 0, err
    train = datasets.load_from_disk(str(tmp_path / "run" / "dataset"))["train"]
    suspect = np.asarray(train["suspect_label"])
    flipped = np.asarray(train["label"]) != truth["train"]
    assert flipped.sum() > 20
    assert (suspect & flipped).sum() / max(1, suspect.sum()) == 1.0   # precision
    assert (suspect & flipped).sum() / flipped.sum() == 1.0           # recall
    manifest = json.loads((tmp_path / "run" / "dataset" / "ferdata.json").read_text())
    params = manifest["steps"][-1]["params"]
    assert (params["cv"], params["rule"], params["rounds"]) == (2, "confident", 1)
    margin = np.asarray(train["label_margin"])
    assert margin[suspect].max() < margin[~suspect].min()             # the ranking puts every flip first


def test_flag_defaults_and_the_mirrored_average(noisy) -> None:
    """flag/prune train shallow-cnn-std with light augmentation and average each prediction with its mirror."""
    import datasets

    from ferdata.images import encode_png
    from ferdata.refine import _Trainer
    from ferdata.train import build_model

    flag, relabel = RefineConfig(), RefineConfig(mode="relabel")
    assert flag.mode == "flag" and (flag.model, flag.augment, flag.tta, flag.cv) == ("shallow-cnn-std", "light", True, 5)
    assert (relabel.model, relabel.augment, relabel.tta) == ("fer-cnn", "none", False)
    assert (flag.epochs, flag.schedule, relabel.epochs, relabel.schedule) == (None, "cosine", 40, "plateau")
    assert flag.train_config(image_size=48, channels=1).schedule == "cosine"
    assert RefineConfig(mode="flag", augment="none", tta=False).tta is False
    rng = np.random.default_rng(1)
    faces = [rng.integers(0, 255, (16, 16), dtype=np.uint8) for _ in range(3)]
    ds = datasets.load_from_disk(str(noisy[0]))["train"].select(range(6))
    ds = ds.cast_column("image", datasets.Image(decode=False)).remove_columns("image").add_column(
        "image", [{"bytes": encode_png(f), "path": None} for f in faces + [f[:, ::-1] for f in faces]],
        feature=datasets.Image())
    model = build_model("tiny-cnn", (16, 16, 1), 4)
    plain = _Trainer(RefineConfig(mode="flag", tta=False), 16, 1, 4).predict(model, ds)
    mirrored = _Trainer(RefineConfig(mode="flag"), 16, 1, 4).predict(model, ds)
    assert not np.allclose(plain[:3], plain[3:], atol=1e-4)      # a random CNN is not mirror-symmetric ...
    assert np.allclose(mirrored[:3], mirrored[3:], atol=1e-5)    # ... the mirrored average is
    assert np.allclose(mirrored, (plain + plain[[3, 4, 5, 0, 1, 2]]) / 2, atol=1e-5)
