"""The upscale step's core (issue 17 item 4): the same pixels and ids as ``Upscaler.upscale``, whatever the fast paths."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ferdata.columns import IMAGE_REASONS  # one vocabulary: sr's own "undecodable" is gone (issue 22)
from ferdata.images import decode_image, decode_plain_png, encode_png, pixel_id
from ferdata.sr.step import get_upscaler, upscale_batch


def _png(im: np.ndarray, **save: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(im).save(buf, format="PNG", **save)
    return buf.getvalue()


def _inputs() -> tuple[list[bytes], list[np.ndarray | None]]:
    """PNG bytes of several kinds (fast path and Pillow fallback) and the pixels decode_image gives."""
    rng = np.random.default_rng(3)
    gray = [rng.integers(0, 256, (48, 48), dtype=np.uint8) for _ in range(3)]
    rgb = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    small = rng.integers(0, 256, (40, 40), dtype=np.uint8)
    palette = Image.fromarray(rgb).convert("P")  # not a plain PNG: decoded by Pillow
    buf = io.BytesIO()
    palette.save(buf, format="PNG")
    raw = [encode_png(gray[0]), _png(gray[1]), _png(gray[2], transparency=7), encode_png(rgb), encode_png(small),
           buf.getvalue(), b"not an image", encode_png(gray[0])[:-12]]  # the last: no IEND chunk, Pillow still reads it
    pixels: list[np.ndarray | None] = []
    for b in raw:
        try:
            pixels.append(decode_image(b)[0])
        except Exception:
            pixels.append(None)
    return raw, pixels


def test_decode_plain_png_equals_decode_image_or_declines() -> None:
    raw, pixels = _inputs()
    for b, want in zip(raw, pixels, strict=True):
        got = decode_plain_png(b)
        if got is not None:
            assert want is not None and got.dtype == np.uint8 and np.array_equal(got, want)
    assert decode_plain_png(raw[0]) is not None and decode_plain_png(raw[3]).shape == (48, 48, 3)
    assert decode_plain_png(raw[5]) is None and decode_plain_png(raw[6]) is None and decode_plain_png(None) is None
    assert decode_plain_png(_png(np.zeros((4, 4), np.uint8))) is None  # smaller than MIN_SIDE: decode_image rejects it
    assert decode_plain_png(_png(np.zeros((16, 16), np.uint16))) is None  # 16-bit: decode_image scales it


@pytest.mark.parametrize(("size", "backend"), [(100, "tf"), (None, "tf"), (100, "opencv"), (None, "opencv")])
def test_step_output_is_the_api_output(size: int | None, backend: str) -> None:
    """upscale_batch's decoded images and ids == Upscaler.upscale on decode_image's pixels, image by image
    (with OpenCV, the step runs the images on threads, each with its own copy of the network)."""
    raw, pixels = _inputs()
    batch = {"image": [{"bytes": b, "path": None} for b in raw], "id": [f"r{k}" for k in range(len(raw))]}
    res = upscale_batch(batch, model="espcn_x4", scale=4, backend=backend, size=size, resize="post",
                        allow_downscale=False, batch_size=2)
    up = get_upscaler("espcn_x4", 4, backend)
    for k, want_in in enumerate(pixels):
        if want_in is None:
            assert res["image"][k] is None and res["_reject_reason"][k] in IMAGE_REASONS and res["id"][k] == f"r{k}"
            continue
        want = up.upscale([want_in], size=size)[0]
        got = decode_image(res["image"][k]["bytes"])[0]
        assert np.array_equal(got, want), k
        assert res["id"][k] == pixel_id(want) and res["parent_id"][k] == f"r{k}" and res["_reject_reason"][k] == ""
    # a batch of one shape takes the stacked path: the same pixels as image by image
    same = {"image": batch["image"][:3], "id": batch["id"][:3]}
    stacked = upscale_batch(same, model="espcn_x4", scale=4, backend=backend, size=size, resize="post",
                            allow_downscale=False, batch_size=2)
    assert stacked["id"] == res["id"][:3]


def test_parts_give_the_one_call_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stack runs through the network in parts (encoded while the next part runs): the images,
    bytes and ids of one Upscaler.upscale call over the whole stack, in order, for a last part
    that is not whole."""
    import ferdata.sr.step as module

    rng = np.random.default_rng(5)
    faces = rng.integers(0, 256, (21, 48, 48), dtype=np.uint8)
    batch = {"image": [{"bytes": encode_png(f), "path": None} for f in faces], "id": [f"r{k}" for k in range(21)]}
    monkeypatch.setattr(module, "PIPELINE_IMAGES", 7)  # parts of 6 rows (whole network batches of 3) + 3
    res = upscale_batch(batch, model="espcn_x4", scale=4, backend="tf", size=100, resize="post",
                        allow_downscale=False, batch_size=3)
    want = get_upscaler("espcn_x4", 4, "tf").upscale(faces, size=100, batch_size=3)
    assert [r["bytes"] for r in res["image"]] == [encode_png(w) for w in want]
    assert res["id"] == [pixel_id(w) for w in want]


def test_opencv_threads_give_the_one_thread_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """With OpenCV the parts run on threads with their own network copies: the bytes and ids of one
    Upscaler.upscale call over the whole stack, in order (parts of 7, a last part not whole)."""
    import cv2

    import ferdata.sr.step as module

    rng = np.random.default_rng(6)
    faces = rng.integers(0, 256, (23, 48, 48), dtype=np.uint8)
    batch = {"image": [{"bytes": encode_png(f), "path": None} for f in faces], "id": [f"r{k}" for k in range(23)]}
    monkeypatch.setattr(module, "PIPELINE_IMAGES", 7)
    threads = cv2.getNumThreads()
    res = upscale_batch(batch, model="espcn_x4", scale=4, backend="opencv", size=100, resize="post",
                        allow_downscale=False, batch_size=32)
    assert cv2.getNumThreads() == threads  # OpenCV's own threads are given back
    want = get_upscaler("espcn_x4", 4, "opencv").upscale(faces, size=100)
    assert [r["bytes"] for r in res["image"]] == [encode_png(w) for w in want]
    assert res["id"] == [pixel_id(w) for w in want]



def test_opencv_api_threads_give_the_one_thread_pixels() -> None:
    """Upscaler.upscale with OpenCV splits the images over threads (one network copy each) when
    OpenCV may use several: the pixels of the same call with OpenCV on one thread (no split)."""
    import cv2

    faces = np.random.default_rng(7).integers(0, 256, (150, 48, 48), dtype=np.uint8)
    up = get_upscaler("espcn_x4", 4, "opencv")
    threads = cv2.getNumThreads()
    if threads < 2:
        pytest.skip("OpenCV has one thread here: nothing is split")
    split = up.upscale(faces, size=100)
    assert cv2.getNumThreads() == threads
    cv2.setNumThreads(1)
    try:
        alone = up.upscale(faces, size=100)
    finally:
        cv2.setNumThreads(threads)
    assert np.array_equal(split, alone)
