"""Tests of ferdata.faces: framing geometry, MTCNN crop on a real photo, bad inputs, CLI."""

from __future__ import annotations

import io
import json
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from ferdata.faces import (
    CropConfig,
    Face,
    align_image,
    apply_clahe,
    choose_faces,
    frame_geometry,
    warp_frame,
)
from ferdata.images import encode_png
from tests.conftest import CLASSES, shared_data


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    from PIL import Image

    img = Image.fromarray(arr)
    if mode:
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="TIFF" if mode == "CMYK" else "PNG")
    return buf.getvalue()


def _png16(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint16) * 257).save(buf, format="PNG")
    return buf.getvalue()


def _bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A tiny PNG whose header claims width x height pixels."""
    data = encode_png(np.zeros((8, 8), np.uint8))
    ihdr = struct.pack(">II", width, height) + data[24:29]
    chunk = b"IHDR" + ihdr
    return data[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:]


def make_dataset_dir(path: Path, images: list[bytes], origins: list[str] | None = None) -> Path:
    """A dataset directory (train split) holding the given encoded images as-is."""
    import datasets

    from ferdata.dataset import core_features, new_manifest, save_dataset

    origins = origins or [f"img{i}" for i in range(len(images))]
    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": b, "path": None} for b in images], "label": [0] * len(images),
         "id": [f"id{i}" for i in range(len(images))], "source": ["test"] * len(images), "origin": origins},
        features=core_features(CLASSES))
    save_dataset(datasets.DatasetDict({"train": ds}), path, manifest=new_manifest())
    return path


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    skimage_data = pytest.importorskip("skimage.data")
    return skimage_data.astronaut()


# ---------------------------------------------------------------- geometry (no detector)

def test_btfer_framing_puts_box_margin_pixels_from_the_border() -> None:
    img = np.zeros((400, 400), np.uint8)
    img[100:160, 120:170] = 255  # face box x=120, y=100, w=50, h=60
    face = Face((120, 100, 50, 60), 0.99)
    centre, angle, scale, w, h = frame_geometry(face, size=256, margin=20, align=False, normalize=False)
    out, padded = warp_frame(img, centre, angle, scale, w, h)
    assert out.shape == (256, 256) and not padded
    rows = np.where(out.max(axis=1) > 127)[0]
    cols = np.where(out.max(axis=0) > 127)[0]
    assert abs(rows[0] - 20) <= 1 and abs(rows[-1] - 235) <= 1  # longer side spans [20, 236)
    width = 50 * 216 / 60
    assert abs(cols[0] - (128 - width / 2)) <= 1.5 and abs(cols[-1] + 1 - (128 + width / 2)) <= 1.5


def test_frame_leaving_the_image_is_padded_black_or_edge() -> None:
    img = np.full((200, 200), 200, np.uint8)
    face = Face((0, 0, 60, 60), 0.99)
    geo = frame_geometry(face, size=128, margin=20, align=False, normalize=False)
    black, padded = warp_frame(img, *geo, pad="black")
    assert padded and black[0, 0] == 0 and black[-1, -1] == 200
    edge, padded = warp_frame(img, *geo, pad="edge")
    assert padded and edge.min() == 200


def test_align_makes_the_eye_line_horizontal() -> None:
    img = np.zeros((200, 200), np.uint8)
    left, right = (60.0, 80.0), (140.0, 120.0)  # 26.6 degrees
    for x, y in (left, right):
        img[int(y) - 2:int(y) + 3, int(x) - 2:int(x) + 3] = 255
    face = Face((50, 50, 100, 120), 0.99, {"left_eye": left, "right_eye": right})
    out, _, angle = align_image(img, face)
    assert angle == pytest.approx(math.degrees(math.atan2(40, 80)))
    ys, xs = np.where(out > 100)
    blobs = [ys[xs < 100].mean(), ys[xs >= 100].mean()]
    assert abs(blobs[0] - blobs[1]) < 1.5
    assert abs(blobs[0] - 100) < 1.5  # rotated about the eye midpoint (100, 100)


def test_normalize_frame_follows_paper_003() -> None:
    face = Face((0, 0, 100, 100), 0.99, {"left_eye": (80.0, 100.0), "right_eye": (120.0, 100.0)})
    centre, angle, scale, width, height = frame_geometry(face, size=225, margin=0, align=True, normalize=True)
    d = 40
    assert (width, height) == (170, 225)  # 3.4 d : 4.5 d
    assert scale == pytest.approx(4.5 * d / 225)
    assert centre == pytest.approx((100.0, 100.0 + 0.95 * d))  # 1.3 d above, 3.2 d below the midpoint
    assert angle == 0.0


def test_choose_faces_reasons_and_best_confidence() -> None:
    small = Face((0, 0, 15, 15), 0.99)
    weak = Face((0, 0, 80, 80), 0.9)
    assert choose_faces([], min_confidence=0.95, min_face_size=20)[1] == "no_face"
    _, reason, details = choose_faces([weak], min_confidence=0.95, min_face_size=20)
    assert reason == "low_confidence" and details["best_confidence"] == 0.9
    assert choose_faces([small], min_confidence=0.95, min_face_size=20)[1] == "face_too_small"
    good = Face((0, 0, 50, 50), 0.99)
    assert choose_faces([good, small], min_confidence=0.95, min_face_size=10, faces_mode="all")[0] == [good, small]


def test_config_validation_names_value_and_allowed() -> None:
    from ferdata.errors import UsageError

    with pytest.raises(UsageError, match="--faces 'some' is not allowed; allowed: largest, all"):
        CropConfig(faces="some")
    with pytest.raises(UsageError, match="--margin 128"):
        CropConfig(margin=128)
    with pytest.raises(UsageError, match="--pad"):
        CropConfig(pad="mirror")


def test_clahe_raises_local_contrast() -> None:
    rng = np.random.default_rng(0)
    low = (100 + rng.integers(0, 20, (64, 64))).astype(np.uint8)
    assert apply_clahe(low).std() > low.std() * 2
    assert apply_clahe(np.stack([low] * 3, axis=2)).shape == (64, 64, 3)


# ---------------------------------------------------------------- MTCNN on a real photo

def test_crop_real_photo_pins_framing_and_handles_bad_inputs(tmp_path: Path, astronaut: np.ndarray) -> None:
    from ferdata.dataset import open_dataset, read_manifest, read_rejects
    from ferdata.faces import detect_faces
    from ferdata.steps import apply_step

    gray = np.asarray(astronaut.mean(axis=2), np.uint8)
    images = {
        "astronaut": _png(astronaut),
        "palette": _png(astronaut, "P"),
        "rgba": _png(astronaut, "RGBA"),
        "cmyk": _png(astronaut, "CMYK"),
        "gray16": _png16(gray),
        "blank": _png(np.full((300, 300), 128, np.uint8)),
        "zero": b"",
        "text": b"not an image at all",
        "truncated": _png(astronaut)[:2000],
        "tiny": _png(np.zeros((1, 1), np.uint8)),
        "bomb": _bomb_png(),
    }
    src = make_dataset_dir(tmp_path / "in", list(images.values()), list(images))
    out, entry = apply_step("crop", {}, inputs=[src], out=tmp_path / "out")
    ds = open_dataset(out)["train"]
    assert sorted(ds["origin"]) == ["astronaut", "cmyk", "gray16", "palette", "rgba"]
    reasons = {r["origin"]: r["reason"] for r in read_rejects(out)}
    assert reasons["blank"] == "no_face"
    assert reasons["zero"] == "empty_file" and reasons["text"] == "not_an_image"
    assert reasons["truncated"] == "corrupt" and reasons["tiny"] == "too_small"
    assert reasons["bomb"] == "too_many_pixels"
    assert json.loads(next(r for r in read_rejects(out) if r["origin"] == "blank")["details"])["best_confidence"] is None
    assert entry["info"]["no_face"] == 1

    row = ds[ds["origin"].index("astronaut")]
    x, y, w, h = row["face_box"]
    assert abs(x - 182) <= 4 and abs(y - 64) <= 4 and abs(w - 83) <= 4 and abs(h - 107) <= 4
    assert row["face_confidence"] > 0.99 and row["parent_id"] == "id0" and row["id"] != "id0"
    kp = row["face_keypoints"]
    assert set(kp) == {"left_eye", "right_eye", "nose", "mouth_left", "mouth_right"}
    assert abs(kp["left_eye"][0] - 204) <= 4 and abs(kp["left_eye"][1] - 100) <= 4
    assert kp["left_eye"][0] < kp["right_eye"][0] and kp["right_eye"][1] < kp["nose"][1] < kp["mouth_left"][1]
    crop = np.asarray(row["image"])
    assert crop.shape == (256, 256, 3) and row["crop_padded"] is False
    # the documented framing: the box's longer side spans [20, 236], centred
    (again,) = detect_faces(crop)[:1]
    ax, ay, aw, ah = again.box
    assert abs(ay - 20) <= 8 and abs(ay + ah - 236) <= 8
    assert abs(ax + aw / 2 - 128) <= 8
    assert read_manifest(out)["steps"][-1]["step"] == "crop"
    gray_row = ds[ds["origin"].index("gray16")]
    assert np.asarray(gray_row["image"]).ndim == 2  # gray stays gray


def test_crop_all_faces_large_photo_and_normalize(tmp_path: Path, astronaut: np.ndarray) -> None:
    from ferdata.dataset import open_dataset
    from ferdata.steps import apply_step

    canvas = np.full((1200, 2000, 3), 90, np.uint8)
    canvas[100:612, 100:612] = astronaut
    canvas[600:1112, 1300:1812] = astronaut[:, ::-1]
    src = make_dataset_dir(tmp_path / "in", [_png(canvas)])
    out, _ = apply_step("crop", {"faces": "all", "align": True, "clahe": True}, inputs=[src], out=tmp_path / "o")
    ds = open_dataset(out)["train"]
    assert sorted(ds["face_index"]) == [0, 1] and set(ds["parent_id"]) == {"id0"}
    boxes = sorted(ds["face_box"])
    # detected on a 960-px copy, mapped back to the 2000-px original
    assert abs(boxes[0][0] - 282) <= 8 and abs(boxes[0][1] - 164) <= 8
    assert abs(boxes[1][0] - (1300 + 512 - 182 - 83)) <= 8 and abs(boxes[1][1] - 664) <= 8
    out2, _ = apply_step("normalize", {"size": 225}, inputs=[out], out=tmp_path / "n")
    norm = open_dataset(out2)["train"]
    assert len(norm) == 2 and np.asarray(norm[0]["image"]).shape == (225, 170, 3)


# ---------------------------------------------------------------- CLI

def test_cli_crop_on_tight_noise_reports_no_face_rate(fer_dir: Path, tmp_path: Path, run_cli) -> None:
    code, stdout, _ = run_cli("crop", fer_dir, "--out", tmp_path / "c", "--limit", "3", "-q")
    assert code == 0, stdout
    assert "crop: kept 0, rejected 9" in stdout
    assert "no usable face in 9 of 9 images (100.0%)" in stdout


def test_cli_crop_bad_options_exit_2(fer_dir: Path, tmp_path: Path, run_cli) -> None:
    code, _, stderr = run_cli("crop", fer_dir, "--out", tmp_path / "c", "--margin", "200")
    assert code == 2 and stderr.startswith("Error: --margin 200 is not allowed with --size 256")
    code, _, stderr = run_cli("crop", fer_dir, "--out", tmp_path / "c", "--min-confidence", "1.5")
    assert code == 2 and "Error: --min-confidence 1.5 is not allowed; allowed: a number in [0, 1]" in stderr


def test_cli_clahe_makes_new_ids(fer_dir: Path, tmp_path: Path, run_cli) -> None:
    from ferdata.dataset import open_dataset

    code, stdout, _ = run_cli("clahe", fer_dir, "--out", tmp_path / "c", "-q")
    assert code == 0 and "clahe: kept 42, rejected 0" in stdout
    before, after = open_dataset(fer_dir)["train"], open_dataset(tmp_path / "c")["train"]
    assert after["parent_id"] == before["id"] and after["id"] != before["id"]


def test_crop_on_fer2013_tight_faces_reports_rate(tmp_path: Path) -> None:
    """Real 48x48 FER2013 faces: MTCNN needs context; the rate is reported, not hidden."""
    from ferdata.steps import apply_step

    folder = shared_data("fer2013-dev", "happy")
    files = sorted(folder.glob("*.png"))[:20]
    src = make_dataset_dir(tmp_path / "in", [f.read_bytes() for f in files])
    _, entry = apply_step("crop", {}, inputs=[src], out=tmp_path / "o")
    info = entry["info"]
    assert info["input_rows"] == 20 and info["no_face"] == entry["rejected"]
    assert info["no_face_rate"] == pytest.approx(info["no_face"] / 20, abs=1e-3)


def test_min_face_size_filters_after_detection(astronaut: np.ndarray) -> None:
    """A large --min-face-size must not blind the detector (mtcnn 1.0 finds nothing when its own
    min_face_size pushes the last pyramid levels below 12 px); it only rejects smaller faces."""
    from ferdata.faces import CropConfig, crop_image

    crops, reason, _ = crop_image(astronaut, CropConfig(min_face_size=60))
    assert reason == "" and len(crops) == 1
    crops, reason, details = crop_image(astronaut, CropConfig(min_face_size=400))
    assert crops == [] and reason == "face_too_small" and details["largest_face"] < 400
