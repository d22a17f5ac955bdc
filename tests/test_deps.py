"""The declared dependency floors admit no version the code cannot run on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def requirement(name: str) -> Requirement:
    deps = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["dependencies"]
    found = [Requirement(d) for d in deps if Requirement(d).name == name]
    assert len(found) == 1, f"{name} is declared {len(found)} times in {PYPROJECT}"
    return found[0]


def test_numpy_floor_is_2() -> None:
    """ferdata.dedupe calls np.bitwise_count, new in numpy 2.0: numpy 1.x must not be allowed."""
    spec = requirement("numpy").specifier
    assert not spec.contains("1.26.4") and spec.contains("2.0.0")
    assert np.lib.NumpyVersion(np.__version__) >= "2.0.0"
    assert np.bitwise_count(np.array([0b1011], np.uint64)).tolist() == [3]


def test_tensorflow_floor_supports_numpy_2() -> None:
    """TensorFlow 2.16/2.17 need numpy < 2; 2.18 is the first built against numpy 2."""
    spec = requirement("tensorflow").specifier
    assert not spec.contains("2.17.1") and spec.contains("2.18.0")
