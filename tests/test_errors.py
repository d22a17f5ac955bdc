"""Errors that name every bad value and the fix, before any heavy work (issue 28 items 3 and 4)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import write_class_folders

#: Runs the real entry point and says, on stderr's last line, whether TensorFlow was ever imported.
CLI_REPORTING_TF = ("import atexit, sys; atexit.register(lambda: print('tensorflow loaded:', 'tensorflow' in "
                    "sys.modules, file=sys.stderr)); from ferdata.cli import main; main()")


def run_real_cli(*args: object, cwd: Path | None = None) -> tuple[int, str, str, float]:
    """``ferdata ARGS`` in a fresh process: (exit code, stdout, stderr, seconds)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CLI_REPORTING_TF, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start


def only_error_line(err: str) -> str:
    """The one ``Error:`` line of a run's stderr (the atexit line aside); fails on anything else."""
    lines = [line for line in err.splitlines() if not line.startswith("tensorflow loaded:")]
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    return lines[0]


# ---------------------------------------------------------------- folder import: every bad name at once


def test_folder_import_names_every_unknown_class_folder_with_a_suggestion(tmp_path: Path, run_cli) -> None:
    write_class_folders(tmp_path / "src", 1, classes=["happyy", "sadd", "angry", "grumpy"])
    code, _, err = run_cli("import", "folder", tmp_path / "src", "--out", tmp_path / "o")
    assert code == 2 and err.count("\n") == 1, err
    assert "'happyy' (did you mean happy?)" in err and "'sadd' (did you mean sad?)" in err
    assert "'grumpy'" in err and "'angry'" not in err  # every bad one, only the bad ones
    assert "--label-map" in err and not (tmp_path / "o").exists()


def test_folder_import_explains_split_folders(tmp_path: Path, run_cli) -> None:
    # a split folder beside a class folder: not "an unknown class folder"
    write_class_folders(tmp_path / "mixed" / "training", 1, classes=["happy"])
    write_class_folders(tmp_path / "mixed", 1, classes=["sad"])
    code, _, err = run_cli("import", "folder", tmp_path / "mixed", "--out", tmp_path / "o")
    assert code == 2 and err.count("\n") == 1, err
    assert "'training' is a split folder" in err and "unknown class folder" not in err
    assert "train (training), validation (val, valid" in err and "SRC/<split>/<class>/<image>" in err
    # split-looking names that are not split names are said to be so
    write_class_folders(tmp_path / "dev" / "train", 1, classes=["happy"])
    write_class_folders(tmp_path / "dev" / "dev", 1, classes=["happy"])
    code, _, err = run_cli("import", "folder", tmp_path / "dev", "--out", tmp_path / "o")
    assert code == 2 and "'dev' (a split folder? not a split folder name)" in err and "split folder names:" in err
    # synonyms of split names are recognised: training/ + valid/ + testing/ import fine
    for split in ("training", "valid", "testing"):
        write_class_folders(tmp_path / "ok" / split, 1, classes=["happy", "sad"])
    code, _, err = run_cli("import", "folder", tmp_path / "ok", "--out", tmp_path / "o", "-q")
    assert code == 0, err
    from ferdata.dataset import open_dataset

    assert sorted(open_dataset(tmp_path / "o")) == ["test", "train", "validation"]


# ---------------------------------------------------------------- a file or the wrong directory as a dataset


def test_csv_given_to_train_gets_the_import_hint_before_tensorflow(tmp_path: Path, fer_csv: Path) -> None:
    code, out, err, seconds = run_real_cli("train", fer_csv, "--out", tmp_path / "run")
    line = only_error_line(err)
    assert code == 2 and out == ""
    assert line.endswith(f"{fer_csv} is a file, not a dataset directory; import it first: "
                         f"ferdata import fer2013 {fer_csv} --out DIR"), line
    assert "tensorflow loaded: False" in err and seconds < 30
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", [["dedupe", "{x}", "--out", "{o}"], ["info", "{x}"], ["evaluate", "{run}", "{x}"]])
def test_file_as_dataset_names_the_importer(command: list[str], tmp_path: Path, fer_csv: Path, run_cli) -> None:
    (tmp_path / "run").mkdir()
    gz = tmp_path / "fer.csv.gz"
    import gzip

    gz.write_bytes(gzip.compress(fer_csv.read_bytes()))
    args = [a.format(x=gz, o=tmp_path / "o", run=tmp_path / "run") for a in command]
    code, _, err = run_cli(*args)
    assert code == 2 and err.count("\n") == 1
    assert f"import it first: ferdata import fer2013 {gz} --out DIR" in err


def test_wrong_directories_point_to_the_right_one(tmp_path: Path, fer_dir: Path, run_cli) -> None:
    import shutil

    # a refine run: its dataset/
    shutil.copytree(fer_dir, tmp_path / "refine-run" / "dataset")
    (tmp_path / "refine-run" / "rounds.csv").write_text("round\n")
    code, _, err = run_cli("info", tmp_path / "refine-run")
    assert code == 2 and err.count("\n") == 1
    assert f"is a run directory, not a dataset directory; its dataset is {tmp_path / 'refine-run' / 'dataset'}" in err
    # a train run: what it was trained on
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text(json.dumps({"dataset": str(fer_dir)}))
    code, _, err = run_cli("info", tmp_path / "run")
    assert code == 2 and f"is a training run directory, not a dataset directory; it was trained on {fer_dir}" in err
    # class folders: import them first
    write_class_folders(tmp_path / "faces", 1, classes=["happy", "sad"])
    code, _, err = run_cli("info", tmp_path / "faces")
    assert code == 2 and f"import it first: ferdata import folder {tmp_path / 'faces'} --out DIR" in err
    # a file inside a dataset directory: its folder
    code, _, err = run_cli("info", fer_dir / "dataset_dict.json")
    assert code == 2 and f"give the dataset directory that holds it: {fer_dir}" in err
    # the arguments of evaluate swapped: said so
    code, _, err = run_cli("evaluate", fer_dir, tmp_path / "run")
    assert code == 2 and "not a training run directory but a dataset directory (ferdata evaluate takes RUN, then DIR)" in err


def test_evaluate_checks_everything_before_tensorflow(tmp_path: Path, fer_dir: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"not loaded before the checks")
    (run / "run.json").write_text(json.dumps({"label_names": ["angry", "happy"], "input_shape": [48, 48, 1]}))
    code, _, err, _ = run_real_cli("evaluate", run, fer_dir, "--split", "nope")
    assert code == 2 and "split 'nope' not found" in only_error_line(err) and "tensorflow loaded: False" in err
    code, _, err, _ = run_real_cli("evaluate", run, fer_dir)  # fer_dir has classes the model lacks
    assert code == 2 and "are not classes of the model" in only_error_line(err) and "tensorflow loaded: False" in err
    (tmp_path / "mine").mkdir()
    code, _, err, _ = run_real_cli("evaluate", run, fer_dir, "--out", tmp_path / "mine")
    assert code == 2 and "already exists; pass --overwrite" in only_error_line(err)
    assert "tensorflow loaded: False" in err


@pytest.mark.slow
def test_evaluate_replaces_its_default_output_with_a_notice(tmp_path: Path, fer_dir: Path, run_cli) -> None:
    code, _, err = run_cli("train", fer_dir, "--model", "tiny-cnn", "--epochs", "1", "--out", tmp_path / "run", "-q")
    assert code == 0, err
    default = tmp_path / "run" / "eval" / f"{fer_dir.name}-test"
    code, _, err = run_cli("evaluate", tmp_path / "run", fer_dir, "-q")
    assert code == 0 and default.is_dir() and "replaced" not in err, err
    (default / "metrics.json").write_text("{}")  # a re-run rewrites it
    code, out, err = run_cli("evaluate", tmp_path / "run", fer_dir, "-q")
    assert code == 0, err
    assert f"note: replaced the previous evaluation in {default}" in err
    assert json.loads((default / "metrics.json").read_text())["split"] == "test"
    # an output the user names is never replaced without --overwrite
    code, _, err = run_cli("evaluate", tmp_path / "run", fer_dir, "--out", tmp_path / "ev", "-q")
    assert code == 0, err
    code, _, err = run_cli("evaluate", tmp_path / "run", fer_dir, "--out", tmp_path / "ev", "-q")
    assert code == 2 and f"output {tmp_path / 'ev'} already exists; pass --overwrite" in err


# ---------------------------------------------------------------- quiet library use


def _stderr_of(code: str, cwd: Path, **env_vars: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "FERDATA_VERBOSITY")}
    env.update(env_vars)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


def test_importing_ferdata_prints_nothing_and_stays_light(tmp_path: Path) -> None:
    err = _stderr_of("import sys, ferdata.train, ferdata.dataset, ferdata.cli\n"
                     "heavy = [m for m in ('tensorflow', 'keras', 'datasets', 'absl') if m in sys.modules]\n"
                     "assert not heavy, heavy\n"
                     "import os; assert os.environ['TF_CPP_MIN_LOG_LEVEL'] == '3'", tmp_path)
    assert err == ""
    # FERDATA_VERBOSITY=debug leaves every library as it is
    assert _stderr_of("import ferdata, os; assert 'TF_CPP_MIN_LOG_LEVEL' not in os.environ", tmp_path,
                      FERDATA_VERBOSITY="debug") == ""


@pytest.mark.slow
def test_library_training_data_prints_nothing_on_stderr(tmp_path: Path, fer_dir: Path) -> None:
    err = _stderr_of("import ferdata.train\n"
                     f"ds = ferdata.train.to_tf_dataset({str(fer_dir)!r}, split='train', batch_size=4)\n"
                     "next(iter(ds))\n", tmp_path)
    assert err == "", err[-3000:]
