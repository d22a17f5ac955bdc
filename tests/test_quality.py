"""Tests of ferdata.quality: calc_* scores, flags, --drop, drop_flagged, CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ferdata.errors import UsageError
from ferdata.quality import (
    QualityConfig,
    calc_blurry,
    calc_dark,
    calc_light,
    calc_low_information,
    calc_odd_aspect,
    calc_too_small,
    parse_checks,
    score_image,
)
from tests.test_faces import _png, make_dataset_dir


def _face_like(size: int = 48, seed: int = 0) -> np.ndarray:
    """A textured mid-grey image with detail (stands in for a face)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = 120 + 60 * np.sin(xx / 3.0) * np.cos(yy / 4.0)
    return np.clip(base + rng.normal(0, 15, (size, size)), 0, 255).astype(np.uint8)


def test_calc_scores_have_the_documented_direction() -> None:
    import cv2

    face = _face_like()
    assert calc_dark(face // 8) < 0.2 < calc_dark(face)
    assert calc_light(255 - face // 8) > 0.7 > calc_light(face)
    blurred = cv2.GaussianBlur(face, (0, 0), 2.0)
    assert calc_blurry(blurred) < 0.2 < calc_blurry(face)
    assert calc_low_information(np.zeros((48, 48), np.uint8)) == 0.0
    assert calc_low_information(face) > 4.5
    assert calc_too_small(np.zeros((30, 60), np.uint8)) == 30
    assert calc_odd_aspect(np.zeros((30, 60), np.uint8)) == 2.0


def test_blur_score_is_resolution_independent() -> None:
    import cv2

    face = _face_like(48)
    big_sharp = cv2.resize(face, (256, 256), interpolation=cv2.INTER_NEAREST)
    big_blur = cv2.GaussianBlur(big_sharp, (0, 0), 12.0)
    assert score_image(big_sharp)["blurry"] > 0.2 > score_image(big_blur)["blurry"]


def test_parse_checks() -> None:
    assert parse_checks("all", ["a", "b"]) == ["a", "b"]
    with pytest.raises(UsageError, match="--drop fuzzy is not a known check; allowed: dark"):
        QualityConfig(drop="fuzzy")
    with pytest.raises(UsageError, match="--dark-threshold 2"):
        QualityConfig(dark_threshold=2)


@pytest.fixture
def quality_dir(tmp_path: Path) -> Path:
    import cv2

    face = _face_like()
    images = {
        "good": _png(face),
        "good_rgb": _png(np.stack([face] * 3, axis=2)),
        "black": _png(np.zeros((48, 48), np.uint8)),
        "white": _png(255 - face // 8),
        "blurred": _png(cv2.GaussianBlur(face, (0, 0), 2.5)),
        "small": _png(_face_like(32)),
        "wide": _png(np.hstack([face, face])),
        "corrupt": _png(face)[:60],
    }
    return make_dataset_dir(tmp_path / "in", list(images.values()), list(images))


def test_quality_flags_without_dropping(quality_dir: Path, tmp_path: Path) -> None:
    from ferdata.dataset import open_dataset, read_rejects
    from ferdata.steps import apply_step

    out, entry = apply_step("quality", {}, inputs=[quality_dir], out=tmp_path / "q")
    ds = open_dataset(out)["train"]
    flagged = {o: [c for c in ("dark", "light", "blurry", "low_information", "too_small", "odd_aspect")
                   if ds[i][f"is_{c}"]] for i, o in enumerate(ds["origin"])}
    assert flagged["good"] == [] and flagged["good_rgb"] == []
    assert "dark" in flagged["black"] and "low_information" in flagged["black"]
    assert "light" in flagged["white"] and "dark" not in flagged["white"]
    assert flagged["blurred"] == ["blurry"]
    assert flagged["small"] == ["too_small"] and flagged["wide"] == ["odd_aspect"]
    assert ds[ds["origin"].index("small")]["too_small_score"] == 32
    assert [r["reason"] for r in read_rejects(out)] == ["corrupt"]  # undecodable: ledger, batch goes on
    assert entry["info"]["flagged"]["light"] == 1


def test_cli_filter_drop_moves_rows_to_ledger(quality_dir: Path, tmp_path: Path, run_cli) -> None:
    from ferdata.dataset import open_dataset, read_rejects

    code, stdout, _ = run_cli("filter", quality_dir, "--out", tmp_path / "f", "--drop", "dark,blurry", "-q")
    assert code == 0, stdout
    assert "quality: kept 5, rejected 3 (blurry 1, corrupt 1, dark 1)" in stdout
    rows = {r["origin"]: r for r in read_rejects(tmp_path / "f")}
    details = json.loads(rows["black"]["details"])
    assert details["flagged"] == ["dark", "blurry"] and details["dark_score"] == 0.0  # a constant image
    assert "black" not in open_dataset(tmp_path / "f")["train"]["origin"]


def test_cli_drop_flagged_step(quality_dir: Path, tmp_path: Path, run_cli) -> None:
    from ferdata.dataset import read_rejects

    assert run_cli("filter", quality_dir, "--out", tmp_path / "s", "-q")[0] == 0
    code, stdout, _ = run_cli("drop-flagged", tmp_path / "s", "--out", tmp_path / "d", "--checks", "odd_aspect,too_small")
    assert code == 0 and "drop_flagged: kept 5, rejected 2 (odd_aspect 1, too_small 1)" in stdout
    assert {r["step"] for r in read_rejects(tmp_path / "d")} == {"quality", "drop_flagged"}
    code, _, stderr = run_cli("drop-flagged", tmp_path / "s", "--out", tmp_path / "e", "--checks", "duplicate")
    assert code == 2 and stderr.startswith("Error: cannot drop duplicate: no is_duplicate column")


def test_cli_filter_unknown_check_exit_2(quality_dir: Path, tmp_path: Path, run_cli) -> None:
    code, _, stderr = run_cli("filter", quality_dir, "--out", tmp_path / "f", "--drop", "fuzzy")
    assert code == 2
    assert stderr.strip() == ("Error: --drop fuzzy is not a known check; allowed: dark, light, blurry, "
                              "low_information, too_small, odd_aspect, all")


def test_filter_flags_few_real_fer2013_images(tmp_path: Path) -> None:
    """The defaults flag the non-faces of real FER2013 and almost nothing else."""
    from ferdata.steps import apply_step

    csv = shared_data_csv()
    src, _ = apply_step("import_fer2013", {"csv": str(csv)}, out=tmp_path / "fer")
    _, entry = apply_step("quality", {}, inputs=[src], out=tmp_path / "q")
    share = entry["info"]["flagged_share"]
    assert all(v < 0.01 for v in share.values()), share
    assert entry["info"]["flagged"]["low_information"] >= 1  # the blank/placeholder images


def shared_data_csv() -> Path:
    from tests.conftest import shared_data

    return shared_data("fer2013-dev.csv")
