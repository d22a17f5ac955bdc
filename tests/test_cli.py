"""The CLI's shared plumbing: -q everywhere, one-line summaries, helpful errors, `ferdata info`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click

from tests.conftest import CRAFTED

RECIPE = CRAFTED / "tiny-recipe.yaml"
NOISE = ("I0000", "oneDNN", "cuInit", "cuda_platform", "cpu_feature_guard", "Saving the dataset",
         "Generating train split", "Creating parquet", "absl::InitializeLog")


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    out = []
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            out += _commands(cmd, f"{prefix}{name} ")
        else:
            out.append((prefix + name, cmd))
    return out


def test_every_command_has_quiet_and_an_example() -> None:
    from ferdata.cli import cli

    commands = _commands(cli)
    assert len(commands) > 20
    missing_q = [n for n, c in commands if not any("-q" in p.opts for p in c.params)]
    assert missing_q == [], f"commands without -q: {missing_q}"
    no_example = [n for n, c in commands if "Example" not in (c.help or "")]
    assert no_example == [], f"commands without an example: {no_example}"


def test_quiet_build_prints_only_the_summary_line(tmp_path: Path, fer_csv: Path, run_cli) -> None:
    code, out, err = run_cli("build", RECIPE, "--source", fer_csv, "--out", tmp_path / "q", "-q")
    assert code == 0, err
    assert out.count("\n") == 1 and out.startswith("built tiny:"), out
    assert err == ""


def test_unknown_command_suggests_the_closest(run_cli) -> None:
    code, _, err = run_cli("biuld", "btfer")
    assert code == 2 and "no such command 'biuld'" in err and "did you mean build" in err
    code, _, err = run_cli("import", "fer2031", "x.csv")
    assert code == 2 and "did you mean fer2013" in err
    code, _, err = run_cli("zzzzzz")
    assert code == 2 and "commands:" in err and "build" in err


def test_a_file_where_a_directory_is_expected_names_what_to_run(tmp_path: Path, fer_csv: Path, run_cli) -> None:
    # existing(): a dataset argument, an importer's source folder and a run directory each say what fits
    code, _, err = run_cli("balance", fer_csv, "--out", tmp_path / "o")
    assert code == 2 and err.count("\n") == 1
    assert f"is a file, not a dataset directory; import it first: ferdata import fer2013 {fer_csv} --out DIR" in err
    code, _, err = run_cli("import", "folder", fer_csv, "--out", tmp_path / "o")
    assert code == 2 and f"is a file, not a source folder; it is imported by: ferdata import fer2013 {fer_csv}" in err
    code, _, err = run_cli("export-tflite", fer_csv)
    assert code == 2 and "is a file, not a run directory (the --out of ferdata train or refine)" in err
    ferplus = tmp_path / "fer2013new.csv"
    ferplus.write_text("Usage,Image name,neutral,happiness\nTraining,fer0000000.png,8,2\n")
    code, _, err = run_cli("info", ferplus)
    assert code == 2 and "FER+ votes, imported beside its FER2013 CSV" in err
    assert f"ferdata import fer2013 FER2013.csv --ferplus {ferplus} --out DIR" in err
    assert not (tmp_path / "o").exists()


def test_missing_source_names_the_variables_and_where_to_get_fer2013(tmp_path: Path, run_cli) -> None:
    code, _, err = run_cli("build", "fer2013-improved", "--out", tmp_path / "o")
    assert code == 2, err
    assert "--source" in err and "--size" in err and "fer2013.csv" in err
    assert "kaggle.com" in err and "fer2013new.csv" in err and "FERPlus" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_cli_build_stderr_has_no_library_noise(tmp_path: Path, fer_csv: Path) -> None:
    """A real process, bars on: step lines and the steps' own bars, none of Hugging Face's internal ones.

    (TensorFlow's start-up lines are checked by tests/test_demo.py, whose crop step loads MTCNN.)
    """
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "FERDATA_VERBOSITY")}
    proc = subprocess.run([sys.executable, "-c", "from ferdata.cli import main; main()", "build", str(RECIPE),
                           "--source", str(fer_csv), "--out", str(tmp_path / "b")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "[1/" in proc.stderr and "step" in proc.stdout and "built tiny" in proc.stdout
    assert not [n for n in NOISE if n in proc.stderr], proc.stderr
    assert "balance train" in proc.stderr or "split" in proc.stderr


def test_info_terminal_and_json(tmp_path: Path, fer_csv: Path, run_cli) -> None:
    code, _, err = run_cli("build", RECIPE, "--source", fer_csv, "--out", tmp_path / "d", "-q",
                           "--per-class", "2")
    assert code == 0, err
    code, out, err = run_cli("info", tmp_path / "d")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"{tmp_path / 'd'}: 28 rows in 2 split(s)") and "on disk" in lines[0]
    assert "recipe: tiny" in out and "per_class=2" in out
    assert any(line.split()[:1] == ["happy"] and line.split()[-1] == "4" for line in lines), out
    assert "import_fer2013" in out and "balance" in out and "undersampled" in out
    assert "columns: image (Image), label (ClassLabel(7))" in out and "versions:" in out
    code, out, _ = run_cli("info", tmp_path / "d", "--json")
    info = json.loads(out)
    assert info["rows"] == 28 and sum(s["rows"] for s in info["splits"].values()) == 28
    assert sum(info["splits"]["train"]["classes"].values()) == info["splits"]["train"]["rows"]
    assert info["reject_reasons"][0] == {"step": "balance", "reason": "undersampled", "rows": info["rejected"]}
    assert info["recipe"]["name"] == "tiny" and info["size_bytes"] > 0 and info["versions"]["datasets"]
    assert [s["step"] for s in info["steps"]] == ["import_fer2013", "balance", "split"]
    code, out, _ = run_cli("info", tmp_path / "d", "-q")
    assert code == 0 and out.count("\n") == 1
    code, _, err = run_cli("info", tmp_path)
    assert code == 2 and "Error:" in err and "Traceback" not in err


def test_build_engine_is_local_ray_or_the_recipes_own_variable(tmp_path: Path, fer_csv: Path, run_cli) -> None:
    code, _, err = run_cli("build", RECIPE, "--source", fer_csv, "--engine", "bing", "--out", tmp_path / "o")
    assert code == 2 and "'bing' is not local or ray" in err and "no engine variable" in err
    assert not (tmp_path / "o").exists()
