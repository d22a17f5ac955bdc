"""ferdata benchmark (issue 26): the train x test protocol, its label space, groups and resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from tests.test_train import make_oriented, save_dir

pytestmark = pytest.mark.slow


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """a: train 64 + test 24; b: one split (train 64); crawl: a crawled test set with queries and contempt."""
    from ferdata.sources.queries import QueryGrid

    root = tmp_path_factory.mktemp("bench-sets")
    grid = QueryGrid.load("btfer-queries")
    crawl = make_oriented(30, seed=9, names=["angry", "happy", "sad", "surprise", "contempt"])
    names = crawl.features["label"].names
    queries = [grid.queries(names[y] if names[y] != "contempt" else "angry")[(7 * i) % 36 * 2].text
               for i, y in enumerate(crawl["label"])]
    queries[0] = "a face without a grid term"
    return {"a": save_dir(root / "a", train=make_oriented(64, seed=0), test=make_oriented(24, seed=1)),
            "b": save_dir(root / "b", train=make_oriented(64, seed=3)),
            "crawl": save_dir(root / "crawl", test=crawl.add_column("query", queries))}


@pytest.fixture(scope="module")
def bench(sets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str, str]:
    """A 2 x 2 benchmark (a and b, each a training and a test set), one seed, through the CLI."""
    from click.testing import CliRunner

    from ferdata.cli import cli

    out = tmp_path_factory.mktemp("bench") / "bench"
    result = CliRunner().invoke(cli, ["benchmark", "--train", f"a={sets['a']}", "--train", f"b={sets['b']}",
                                      "--test", f"a={sets['a']}", "--test", f"b={sets['b']}", "--model", "tiny-cnn",
                                      "--epochs", "2", "--batch-size", "16", "--seeds", "0", "--out", str(out), "-q"],
                                catch_exceptions=False)
    return out, result.exit_code, result.stdout, result.stderr


def test_a_2x2_benchmark_matches_evaluate_cell_by_cell(bench, sets: dict[str, Path], tmp_path: Path, run_cli) -> None:
    out, code, stdout, stderr = bench
    assert code == 0, stderr
    results = _rows(out / "results.csv")
    assert [(r["train"], r["test"], r["seed"]) for r in results] == [("a", "a", "0"), ("a", "b", "0"), ("b", "a", "0"),
                                                                      ("b", "b", "0")]
    for r in results:
        assert all(r[k] != "" for k in ("accuracy", "macro_f1", "n_test", "dropped_rows", "excluded_seen"))
        assert {"recall_angry", "recall_happy", "recall_sad", "recall_surprise"} <= set(r)
        assert r["recall_disgust"] == ""  # no test row of the class: empty, not 0.0
        split = "test" if r["test"] == "a" else "train"
        ev = tmp_path / f"{r['train']}-{r['test']}"
        code, _, err = run_cli("evaluate", out / "runs" / r["train"] / "seed-0", sets[r["test"]], "--split", split,
                               "--out", ev, "-q")
        assert code == 0, err
        m = json.loads((ev / "metrics.json").read_text())
        assert (float(r["accuracy"]), float(r["macro_f1"]), int(r["n_test"]), int(r["excluded_seen"])) == \
            (m["accuracy"], m["macro_f1"], m["num_examples"], m["excluded_seen"])
        assert float(r["recall_sad"]) == m["per_class"]["sad"]["recall"]
        cell = out / "cells" / f"{r['train']}__{r['test']}" / "seed-0"
        assert (cell / "predictions.csv").read_text() == (ev / "predictions.csv").read_text()
    # b has one split: the in-domain cell scores only its held-out 20 % (the training rows are left out)
    bb = results[3]
    assert (int(bb["n_test"]), int(bb["excluded_seen"]), int(bb["validation_rows_scored"])) == (12, 52, 12)
    assert int(results[2]["excluded_seen"]) == 0  # a's rows were never b's
    lines = [line for line in stdout.splitlines() if line.startswith("[")]
    assert len(lines) == 4 and lines[0].startswith("[1/4] a seed 0 -> a: accuracy ") and "ETA" in lines[0]
    assert "(52 seen)" in lines[3]
    summary = _rows(out / "summary.csv")
    assert len(summary) == 4 and all(float(s["accuracy_ci_low"]) <= float(s["accuracy"]) <= float(s["accuracy_ci_high"])
                                     for s in summary)
    html = (out / "report.html").read_text()
    for train in "ab":
        for test in "ab":
            assert f'href="#cm-{train}__{test}"' in html and f'id="cm-{train}__{test}"' in html
            assert (out / "confusion" / f"{train}__{test}.csv").is_file()
    assert not (out / "groups.csv").exists()  # no test set has a query column


@pytest.fixture(scope="module")
def interrupted(sets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Train on a, test on a and the crawled set; killed after the first cell, then run again."""
    from ferdata.benchmark import BenchmarkConfig, DatasetSpec, run_benchmark

    out = tmp_path_factory.mktemp("resume") / "bench"
    config = BenchmarkConfig(train=(DatasetSpec("a", str(sets["a"])),),
                             test=(DatasetSpec("a", str(sets["a"])), DatasetSpec("crawl", str(sets["crawl"]))),
                             model="tiny-cnn", epochs=1, batch_size=16, seeds=(0,), bootstrap=200)

    class Killed(Exception):
        pass

    def kill(cell: object) -> None:
        raise Killed

    with pytest.raises(Killed):
        run_benchmark(config, out, on_cell=kill)
    first = out / "cells" / "a__a" / "seed-0" / "metrics.json"
    before = {"cell": first.stat().st_mtime_ns, "model": (out / "runs" / "a" / "seed-0" / "model.keras").stat().st_mtime_ns,
              "results": len(_rows(out / "results.csv"))}
    lines: list[str] = []
    result = run_benchmark(config, out, echo=lines.append)
    return {"out": out, "before": before, "result": result, "lines": lines, "config": config}


def test_a_killed_benchmark_resumes_with_its_finished_cells(interrupted: dict) -> None:
    out, before, result = interrupted["out"], interrupted["before"], interrupted["result"]
    assert before["results"] == 1  # the finished cell was on disk when the run died
    assert result.resumed == 1 and len(result.cells) == 2
    assert (out / "cells" / "a__a" / "seed-0" / "metrics.json").stat().st_mtime_ns == before["cell"]
    assert (out / "runs" / "a" / "seed-0" / "model.keras").stat().st_mtime_ns == before["model"]  # not retrained
    cells = [line for line in interrupted["lines"] if line.startswith("[")]
    assert "kept from an earlier run" in cells[0] and cells[1].startswith("[2/2] a seed 0 -> crawl: accuracy")
    assert any(line.startswith("note: resuming the benchmark") for line in interrupted["lines"])
    assert len(_rows(out / "results.csv")) == 2


def test_another_protocol_in_the_same_output_is_refused(interrupted: dict, sets: dict[str, Path], run_cli) -> None:
    out = interrupted["out"]
    code, _, err = run_cli("benchmark", "--train", f"a={sets['a']}", "--test", f"a={sets['a']}", "--model", "tiny-cnn",
                           "--epochs", "3", "--batch-size", "16", "--seeds", "0", "--out", out)
    assert code == 2 and "other options (epochs)" in err and err.count("\n") == 1


def test_a_test_class_the_model_cannot_output_is_dropped_and_counted(interrupted: dict) -> None:
    row = _rows(interrupted["out"] / "results.csv")[1]
    assert row["test"] == "crawl"
    assert (int(row["dropped_rows"]), row["dropped_classes"], int(row["n_test"])) == (6, "contempt:6", 24)
    assert any("contempt are outside the --classes 7 label space" in line for line in interrupted["lines"])


def test_per_group_rows_for_a_crawled_test_set(interrupted: dict) -> None:
    from ferdata.sources.queries import QueryGrid

    groups = _rows(interrupted["out"] / "groups.csv")
    grid = QueryGrid.load("btfer-queries")
    assert {g["dimension"] for g in groups} == {"ethnicity", "gender", "age"}
    for dim in ("ethnicity", "gender", "age"):
        mine = [g for g in groups if g["dimension"] == dim]
        assert sum(int(g["n"]) for g in mine) == 24  # every scored row in one group of each dimension
        assert {g["term"] for g in mine} <= {*grid.demographics[dim], "(none)"}
        assert len(mine) >= 3 and all(float(g["accuracy_ci_low"]) <= float(g["accuracy"]) <= float(g["accuracy_ci_high"])
                                      for g in mine)
    assert "Accuracy per demographic group" in (interrupted["out"] / "report.html").read_text()


def test_unknown_test_classes_and_bad_options_are_one_line(sets: dict[str, Path], tmp_path: Path, run_cli) -> None:
    odd = save_dir(tmp_path / "odd", test=make_oriented(8, seed=2, names=["angry", "happy", "sad", "smirk"]))
    code, _, err = run_cli("benchmark", "--train", f"a={sets['a']}", "--test", f"odd={odd}", "--model", "tiny-cnn",
                           "--out", tmp_path / "o")
    assert code == 2 and "classes ['smirk'] are neither classes of the --classes 7 models" in err
    assert err.count("\n") == 1 and not (tmp_path / "o").exists()
    code, _, err = run_cli("benchmark", "--train", str(sets["a"]), "--test", f"a={sets['a']}", "--out", tmp_path / "o")
    assert code == 2 and "must be NAME=VALUE" in err
    code, _, err = run_cli("benchmark", "--train", f"a={sets['a']}", "--test", f"a={sets['a']}", "--seeds", "0,x",
                           "--out", tmp_path / "o")
    assert code == 2 and "--seeds" in err
    code, _, err = run_cli("benchmark", "--train", f"crawl={sets['crawl']}", "--test", f"a={sets['a']}",
                           "--out", tmp_path / "o")
    assert code == 2 and "has no 'train' split" in err


def test_label_space_rule_and_query_terms() -> None:
    from ferdata.benchmark.groups import parse_query
    from ferdata.benchmark.space import test_label_map
    from ferdata.sources.queries import QueryGrid

    assert test_label_map(["angry", "contempt", "Happiness"], 7, dataset="x") == \
        {"angry": "angry", "contempt": None, "Happiness": "happy"}
    assert test_label_map(["contempt", "disgust", "surprise"], 3, dataset="x") == \
        {"contempt": "negative", "disgust": "negative", "surprise": "neutral"}
    assert test_label_map(["disgust"], 6, dataset="x") == {"disgust": None}
    grid = QueryGrid.load("btfer-queries")
    assert parse_query("middle-aged middle eastern woman crying face", grid) == \
        {"ethnicity": "middle eastern", "gender": "woman", "age": "middle-aged"}
    assert parse_query("an elderly black man, laughing", grid) == {"ethnicity": "black", "gender": "man", "age": "elderly"}


def test_bootstrap_interval_is_seeded_and_covers_the_accuracy() -> None:
    from ferdata.benchmark.tables import bootstrap_interval

    rng = np.random.default_rng(0)
    correct = (rng.random(400) < 0.7).astype(float)
    rows = np.arange(400)
    low, high = bootstrap_interval([(rows, correct)], replicates=500)
    assert low < correct.mean() < high and 0.05 < high - low < 0.12  # about +-1.96 * sqrt(.21/400)
    assert bootstrap_interval([(rows, correct)], replicates=500) == (low, high)
    # two seeds scored on the same rows share the draw: the interval is the mean accuracy's
    low2, high2 = bootstrap_interval([(rows, correct), (rows, 1 - correct)], replicates=500)
    assert low2 == high2 == 0.5
    assert bootstrap_interval([], replicates=500) == (None, None)


def test_a_recipe_file_reruns_the_protocol(interrupted: dict, sets: dict[str, Path], tmp_path: Path, run_cli) -> None:
    """The same protocol from a `benchmark:` file resumes the benchmark; the command line wins over the file."""
    import os

    rel = {k: os.path.relpath(v, tmp_path) for k, v in sets.items()}
    recipe = tmp_path / "bench.yaml"
    recipe.write_text(f"benchmark:\n  train: {{a: {rel['a']}}}\n  test: {{a: {rel['a']}, crawl: {rel['crawl']}}}\n"
                      "  model: tiny-cnn\n  epochs: 1\n  batch_size: 16\n  seeds: [0]\n  bootstrap: 200\n")
    code, out, err = run_cli("benchmark", "--recipe", recipe, "--out", interrupted["out"], "-q")
    assert code == 0, err
    kept = [line for line in out.splitlines() if line.startswith("[") and "kept from an earlier run" in line]
    assert len(kept) == 2 and "benchmark: 2 cells, 2 kept from an earlier run" in out
    code, _, err = run_cli("benchmark", "--recipe", recipe, "--epochs", "2", "--out", interrupted["out"])
    assert code == 2 and "other options (epochs)" in err
    recipe.write_text("benchmark:\n  trains: {a: x}\n")
    code, _, err = run_cli("benchmark", "--recipe", recipe, "--out", tmp_path / "o")
    assert code == 2 and "unknown keys ['trains']" in err and "allowed: train, test" in err
