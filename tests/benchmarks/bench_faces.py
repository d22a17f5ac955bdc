"""Benchmarks of ferdata.faces and ferdata.quality (issue 3).

Run: ``python tests/benchmarks/bench_faces.py [--scenes 30] [--seed 0]`` (or ``pytest ... -s``).

1. Detection quality: synthetic scenes made by pasting ../shared/data/faces-hr-144 faces (random
   position and scale, 60-300 px) into 640x480 and 1920x1080 textured canvases with known boxes;
   recall and mean IoU of ``crop``'s detections (default settings, ``faces=all``) against them.
2. Speed: photos/s of ``crop`` (detect on a <= 960 px copy, crop from the original) on the
   1920x1080 scenes vs a naive loop of ``MTCNN().detect_faces`` on each full-resolution photo, in
   the same run, and the agreement of the two (IoU between matched faces), beside MTCNN's own noise
   floor: the naive detector's agreement with itself on the same photos shifted by one pixel.
3. Filter: images/s of the ``quality`` step on fer2013-dev (1 process), with the bare per-image
   scoring loop as the reference.

MTCNN on CPU is slow: the default sample is 30 scenes per canvas size.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A textured colour background: smoothed noise, a gradient and random rectangles."""
    import cv2

    small = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
    bg = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    bg += rng.normal(0, 12, (h, w, 3))
    for _ in range(12):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        cv2.rectangle(bg, (x, y), (x + int(rng.integers(20, w // 4)), y + int(rng.integers(20, h // 4))),
                      tuple(float(v) for v in rng.integers(0, 256, 3)), -1)
    return np.clip(bg, 0, 255).astype(np.uint8)


def make_scene(rng: np.random.Generator, faces: list[Path], h: int, w: int, max_face: int
               ) -> tuple[np.ndarray, list[tuple[float, float, float, float]]]:
    """A canvas with 1-3 non-overlapping pasted faces; returns the pixels and the pasted boxes."""
    import cv2
    from PIL import Image

    img = texture(rng, h, w)
    boxes: list[tuple[float, float, float, float]] = []
    for _ in range(int(rng.integers(1, 4))):
        for _try in range(20):
            side = int(rng.integers(60, max_face + 1))
            x, y = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
            if all(iou((x - 10, y - 10, side + 20, side + 20), b) == 0 for b in boxes):
                face = np.asarray(Image.open(faces[int(rng.integers(len(faces)))]).convert("L"))
                face = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA if side < 144 else cv2.INTER_CUBIC)
                img[y:y + side, x:x + side] = face[:, :, None]
                boxes.append((x, y, side, side))
                break
    return img, boxes


def match(truth: list[tuple[float, ...]], found: list[tuple[float, ...]]) -> list[float]:
    """Best IoU of each true box with any found box (0 when none)."""
    return [max((iou(t, f) for f in found), default=0.0) for t in truth]


def bench_detection(n: int, seed: int) -> dict[str, object]:
    from ferdata.faces import CropConfig, crop_image, get_detector

    faces = sorted((SHARED / "faces-hr-144").glob("*.png"))
    if not faces:
        raise SystemExit(f"real data absent: {SHARED / 'faces-hr-144'}")
    rng = np.random.default_rng(seed)
    config = CropConfig(faces="all")
    get_detector()  # build once before timing
    results: dict[str, object] = {}
    for (h, w, max_face) in ((480, 640, 200), (1080, 1920, 300)):
        scenes = [make_scene(rng, faces, h, w, max_face) for _ in range(n)]
        ious: list[float] = []
        ours: list[list[tuple[float, ...]]] = []
        t0 = time.perf_counter()
        for img, _ in scenes:
            crops, _, _ = crop_image(img, config)
            ours.append([face.box for _, face, _, _ in crops])
        t_crop = time.perf_counter() - t0
        for (_, truth), found in zip(scenes, ours, strict=True):
            ious.extend(match(truth, found))
        arr = np.array(ious)
        key = f"{w}x{h}"
        results[key] = {
            "scenes": n, "faces": len(arr), "recall_iou_0.6": round(float((arr >= 0.6).mean()), 4),
            "recall_iou_0.5": round(float((arr >= 0.5).mean()), 4),
            "mean_iou_found": round(float(arr[arr >= 0.5].mean()), 4) if (arr >= 0.5).any() else 0.0,
            "crop_photos_per_s": round(n / t_crop, 2),
        }
        if w == 1920:
            from mtcnn import MTCNN

            detector = MTCNN()  # the naive baseline: a plain detector, as a notebook would build it
            detector.detect_faces(scenes[0][0])  # warm-up outside the timing, like ours
            t0 = time.perf_counter()
            naive = []
            for img, _ in scenes:
                raw = detector.detect_faces(img)
                naive.append([tuple(float(v) for v in r["box"]) for r in raw if r["confidence"] >= 0.95])
            t_naive = time.perf_counter() - t0
            agree = []
            for a, b in zip(naive, ours, strict=True):
                agree.extend(match(a, b))
            # MTCNN's own noise floor: the naive detector on the same photos shifted by one pixel
            floor = []
            for (img, _), a in zip(scenes, naive, strict=True):
                raw = detector.detect_faces(np.ascontiguousarray(img[1:, 1:]))
                floor.extend(match(a, [(r["box"][0] + 1.0, r["box"][1] + 1.0, float(r["box"][2]), float(r["box"][3]))
                                       for r in raw if r["confidence"] >= 0.95]))
            agree_arr = np.array(agree) if agree else np.zeros(1)
            nai_ious = []
            for (_, truth), found in zip(scenes, naive, strict=True):
                nai_ious.extend(match(truth, found))
            nai = np.array(nai_ious)
            results[key].update({  # type: ignore[union-attr]
                "naive_photos_per_s": round(n / t_naive, 2),
                "speedup": round(t_naive / t_crop, 2),
                "naive_recall_iou_0.6": round(float((nai >= 0.6).mean()), 4),
                "naive_faces": len(agree), "same_faces_iou_0.9": round(float((agree_arr >= 0.9).mean()), 4),
                "same_faces_iou_0.8": round(float((agree_arr >= 0.8).mean()), 4),
                "naive_vs_naive_shifted_1px_iou_0.9": round(float((np.array(floor) >= 0.9).mean()), 4),
            })
    return results


def bench_filter() -> dict[str, object]:
    import datasets

    from ferdata.dataset import open_dataset
    from ferdata.images import decode_image
    from ferdata.progress import disable_progress_bars
    from ferdata.quality import score_image
    from ferdata.steps import StepContext, apply_step

    disable_progress_bars()
    csv = SHARED / "fer2013-dev.csv"
    with tempfile.TemporaryDirectory() as tmp:
        src, _ = apply_step("import_fer2013", {"csv": str(csv)}, out=Path(tmp) / "fer")
        rows = sum(len(d) for d in open_dataset(src).values())
        t0 = time.perf_counter()
        apply_step("quality", {}, inputs=[src], out=Path(tmp) / "q", ctx=StepContext(num_proc=1))
        t_step = time.perf_counter() - t0
        raw = open_dataset(src)["train"].cast_column("image", datasets.Image(decode=False))["image"]
        t0 = time.perf_counter()
        for v in raw:
            score_image(decode_image(v["bytes"])[0])
        t_loop = time.perf_counter() - t0
    return {"images": rows, "filter_step_images_per_s": round(rows / t_step), "bare_loop_images_per_s":
            round(len(raw) / t_loop), "target_per_core": 1000}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=30, help="scenes per canvas size (default 30)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-detection", action="store_true")
    args = parser.parse_args(argv)
    if not args.skip_detection:
        for key, value in bench_detection(args.scenes, args.seed).items():
            print(f"detection {key}: {value}")
    print(f"filter: {bench_filter()}")


def test_bench_faces() -> None:
    if not SHARED.exists():
        import pytest

        pytest.skip(f"real data absent: {SHARED}")
    main(["--scenes", "10"])


if __name__ == "__main__":
    main()
