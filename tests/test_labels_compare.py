"""`ferdata labels compare` (issue 14): agreement of two label columns, classes matched by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ferdata.labels.compare import agreement_table
from tests.test_fer2013 import CRAFTED_VOTES, write_pair


def test_agreement_table_counts_by_hand() -> None:
    a = ["happy", "happy", "sad", "sad", "fear", None, "fear"]
    b = ["happy", "sad", "sad", "sad", "sad", "happy", None]
    t = agreement_table(a, b, classes=["fear", "happy", "sad"])
    assert t["matrix"] == [[0, 0, 1], [0, 1, 1], [0, 0, 2]]
    assert (t["rows"], t["agree"], t["missing"]) == (5, 3, 2)
    assert t["agreement"] == 0.6
    # kappa = (0.6 - pe) / (1 - pe), pe = (1*0 + 2*1 + 2*4) / 25 = 0.4
    assert t["cohen_kappa"] == pytest.approx((0.6 - 0.4) / 0.6, abs=1e-4)
    per = {c["class"]: c for c in t["per_class"]}
    assert per["happy"]["agreement_a"] == 0.5 and per["happy"]["agreement_b"] == 1.0
    assert per["fear"]["agreement_a"] == 0.0 and per["fear"]["agreement_b"] is None


def test_compare_command_on_a_ferplus_import(tmp_path: Path, run_cli) -> None:
    fer, plus = write_pair(tmp_path, CRAFTED_VOTES)
    code, _, err = run_cli("import", "fer2013", fer, "--ferplus", plus, "--out", tmp_path / "d", "-q")
    assert code == 0, err
    code, out, err = run_cli("labels", "compare", tmp_path / "d", "--a", "label_fer2013", "--b", "label",
                             "--json", tmp_path / "c.json")
    assert code == 0, err
    result = json.loads((tmp_path / "c.json").read_text())
    # kept rows: happy/happy, neutral/neutral, angry/angry, sad(FER2013)/fear(FER+)
    assert (result["rows"], result["agree"]) == (4, 3)
    names = result["classes"]
    assert result["matrix"][names.index("sad")][names.index("fear")] == 1
    assert "agreement 0.7500" in out
    # the votes column gives the FER+ majority directly, rows without one are counted as missing
    code, _, err = run_cli("import", "fer2013", fer, "--ferplus", plus, "--label-source", "fer2013",
                           "--out", tmp_path / "f", "-q")
    assert code == 0, err
    code, out, err = run_cli("labels", "compare", tmp_path / "f", "--a", "label", "--b", "ferplus_votes")
    assert code == 0, err
    assert "5 rows with both" in out and "3 rows without both labels" in out
    code, _, err = run_cli("labels", "compare", tmp_path / "f", "--a", "label", "--b", "nope")
    assert code == 2 and "'nope' not found" in err and err.count("\n") == 1
