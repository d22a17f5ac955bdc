"""Shared fixtures: tiny generated data, isolation from caches, tokens and the network."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CRAFTED = Path(__file__).resolve().parent / "data"
CLASSES = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]


def shared_data(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test with a reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (see ../shared/data/README.md)")
    return path


@pytest.fixture(autouse=True)
def _isolate(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Caches in tmp, no Hub token, offline Hub, no progress bars."""
    cache = tmp_path_factory.getbasetemp() / "hf-cache"
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache / "datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    from ferdata.progress import disable_progress_bars

    disable_progress_bars()


def write_fer_csv(path: Path, rows_per_class: int = 4, *, seed: int = 0, usages: tuple[str, ...] = ("Training",),
                  extra_lines: tuple[str, ...] = ()) -> Path:
    """Write a tiny fer2013-format CSV: each class gets a distinct brightness pattern."""
    rng = np.random.default_rng(seed)
    lines = ["emotion,pixels,Usage"]
    for code in range(7):
        for i in range(rows_per_class):
            pixels = rng.integers(0, 256, 48 * 48)
            lines.append(f"{code},{' '.join(map(str, pixels))},{usages[i % len(usages)]}")
    lines.extend(extra_lines)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_class_folders(root: Path, per_class: int = 4, *, size: int = 48, seed: int = 0,
                        classes: list[str] | None = None, mode: str = "L") -> Path:
    """Write ``root/<class>/<i>.png`` random images."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name in classes or CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = (size, size) if mode == "L" else (size, size, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def fer_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 7 classes x 6 rows FER2013 CSV with Training/PublicTest/PrivateTest usages."""
    return write_fer_csv(tmp_path_factory.mktemp("csv") / "fer2013.csv", 6,
                         usages=("Training", "Training", "Training", "Training", "PublicTest", "PrivateTest"))


@pytest.fixture(scope="session")
def fer_dir(tmp_path_factory: pytest.TempPathFactory, fer_csv: Path) -> Path:
    """A dataset directory imported from ``fer_csv`` (train 28, validation 7, test 7)."""
    from ferdata.steps import apply_step

    out = tmp_path_factory.mktemp("ds") / "fer"
    apply_step("import_fer2013", {"csv": str(fer_csv)}, out=out)
    return out


@pytest.fixture
def run_cli():
    """Run the real ``ferdata`` entry point in-process; returns (exit_code, stdout, stderr)."""
    from click.testing import CliRunner

    from ferdata.cli import cli

    def run(*args: str) -> tuple[int, str, str]:
        runner = CliRunner()
        result = runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    return run


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
