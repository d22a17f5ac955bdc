"""`ferdata build btfer` end to end against a loopback search engine (nothing else is contacted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferdata.dataset import class_counts, open_dataset, read_manifest, read_rejects
from tests.conftest import CLASSES
from tests.crawl_server import btfer_demo_engine

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory):
    """A loopback engine with 10 face photos per class, hostile responses and traps."""
    with btfer_demo_engine(tmp_path_factory.mktemp("q")) as (server, queries):
        yield server, queries


def test_build_btfer_loopback(engine, tmp_path: Path, run_cli) -> None:
    server, queries = engine
    code, out, err = run_cli("build", "btfer", "--per-class", "3", "--engine", "loopback", "--base-url",
                             server.base_url, "--queries", queries, "--out", tmp_path / "btfer", "-q")
    assert code == 0, err
    assert "built btfer" in out and "crawl" in out and "crop" in out
    dd = open_dataset(tmp_path / "btfer")
    assert list(dd) == ["test"]
    assert class_counts(dd["test"]) == {c: 3 for c in CLASSES}
    assert {r["image"].size for r in dd["test"]} == {(256, 256)}
    card = (tmp_path / "btfer" / "hub" / "README.md").read_text()
    assert "btfer" in card and "crawl" in card and "| test | 3 | 3 | 3 | 3 | 3 | 3 | 3 | 21 |" in card
    reasons = {(r["step"], r["reason"]) for r in read_rejects(tmp_path / "btfer")}
    assert {("crawl", "http_404"), ("crawl", "not_an_image"), ("crawl", "corrupt"),
            ("crawl", "too_many_pixels")} <= reasons
    assert any(step == "crop" for step, _ in reasons)  # the coffee cup has no face
    manifest = read_manifest(tmp_path / "btfer")
    assert [s["step"] for s in manifest["steps"]] == ["crawl", "dedupe", "crop", "quality", "review_exclusions",
                                                      "split", "balance"]
    assert "shortfall" not in manifest


def test_build_btfer_reports_shortfall_and_strict(engine, tmp_path: Path, run_cli) -> None:
    server, queries = engine
    args = ["build", "btfer", "--per-class", "12", "--engine", "loopback", "--base-url", server.base_url,
            "--queries", queries, "--out", tmp_path / "short", "-q", "--strict"]
    code, _, err = run_cli(*args)
    assert code == 1 and "short by" in err and not (tmp_path / "short").exists()
    code, _, err = run_cli(*args[:-1])  # without --strict: resumes and writes what it has
    assert code == 0, err
    assert "happy is short of its target" in err and "lost by step" in err
    shortfall = read_manifest(tmp_path / "short")["shortfall"]
    assert shortfall["happy"]["missing"] >= 2 and shortfall["happy"]["source_step"] == "crawl"
