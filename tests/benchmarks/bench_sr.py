"""Super-resolution benchmarks: quality on held-out faces, 48->224 resize mode, speed, consistency.

Run: ``python tests/benchmarks/bench_sr.py [--pb ESPCN_x4.pb ...] [--n 10000] [--full 35887] [--only ...]``
(or ``pytest tests/benchmarks/bench_sr.py -s``). Uses ../shared/data (faces-hr-144, fer2013-dev);
exits with a message when it is absent. Every figure is printed with its baseline from the same run.

0. Spectrum: the share of power above 0.75 Nyquist of real FER2013 48x48 images against
   faces-hr-144 downscaled to 48 by area / antialiased / aliased resizes (``--model auto``'s evidence).
1. Quality: held-out faces (hash split, never trained on), x4 from 36x36 to 144x144 with LR made by
   area and by bicubic downscaling; PSNR and SSIM (gray, 4-px border shaved) for nearest, bicubic,
   Lanczos, the packaged ESPCN and every ``--pb`` (run through cv2.dnn_superres).
2. 48->224 mode: HR faces cropped to 140x140, area-downscaled to 30x30 (the same 4.67 ratio as
   48->224), brought back to 140 by: bicubic; ESPCN x4 to 120 then bicubic (``post``); bicubic to
   35 then ESPCN x4 (``pre``).
3. Speed: N real FER 48x48 faces (fer2013-dev tiled) to 224x224 by the default path, by a per-image
   cv2.dnn_superres loop with the same weights (+ bicubic to 224), and by plain bicubic.
4. End to end: ``ferdata upscale --espcn`` on a FER2013-format CSV of ``--full`` rows (fer2013-dev
   rows repeated): decode, upscale, resample, encode, write.
5. Consistency: packaged .pb through cv2.dnn_superres vs the TF path, share of pixels within one
   gray level.
6. Robustness (``--robust [--scale 4] [--compare OLD.pb]``): held-out people, x4 (x3: 48->144, x2:
   72->144), LR made by every degradation
   of ``ferdata.sr.data.ROBUST_EVAL``; bicubic PSNR and each model's gain over it, and the model
   ``--model auto`` picks for each LR set from its spectrum, blockiness and symmetry axis, beside
   what it picked before issue 27 (smooth / aliased only).
7. Detectors (``--only detect``): the blockiness and the faces' symmetry axis behind the
   ``compressed`` and ``nearest`` regimes on held-out faces per degradation (and JPEG 85-95),
   on all of faces-hr-144 at 36 / 48 / 64 px with the spread over random 500-face samples, and on
   real FER2013 (fer2013-dev, a tenth of fer2013-train).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _opencv_sr(pb: Path, scale: int) -> object:
    import cv2

    algo = next((a for a in ("espcn", "fsrcnn", "lapsrn", "edsr") if a in pb.name.lower()), "espcn")
    sr = cv2.dnn_superres.DnnSuperResImpl_create()
    sr.readModel(str(pb))
    sr.setModel(algo, scale)
    return sr


def quality(pbs: list[Path]) -> None:
    import cv2

    from ferdata.sr import Upscaler
    from ferdata.sr.data import degrade_all, load_hr_folder, psnr, resize_stack, ssim

    names, hr = load_hr_folder(DATA / "faces-hr-144", split="heldout")
    print(f"\n## 1. Quality: {len(hr)} held-out faces, x4 36->144 (PSNR dB / SSIM, 4-px border shaved)\n")
    up = Upscaler.load()
    methods: dict[str, object] = {
        "nearest": lambda lr: resize_stack(lr, (144, 144), "nearest"),
        "bicubic": lambda lr: resize_stack(lr, (144, 144), "bicubic"),
        "lanczos": lambda lr: resize_stack(lr, (144, 144), "lanczos"),
        "ESPCN faces (packaged, ferdata)": lambda lr: up.upscale(lr),
    }
    for pb in pbs:
        sr = _opencv_sr(pb, 4)
        methods[f"{pb.name} (cv2.dnn_superres)"] = lambda lr, sr=sr: np.stack([sr.upsample(im) for im in lr])
    lrs = {m: degrade_all(hr, 4, m, seed=1) for m in ("area", "bicubic")}
    print("| method | area LR PSNR | SSIM | bicubic LR PSNR | SSIM | gain vs bicubic (area / bicubic) |")
    print("|---|---|---|---|---|---|")
    base = {m: psnr(hr, resize_stack(lr, (144, 144), "bicubic")) for m, lr in lrs.items()}
    for name, fn in methods.items():
        cells, gains = [], []
        for m, lr in lrs.items():
            out = fn(lr)  # type: ignore[operator]
            p = psnr(hr, out)
            cells += [f"{p:.2f}", f"{ssim(hr, out):.4f}"]
            gains.append(f"{p - base[m]:+.2f}")
        print(f"| {name} | {' | '.join(cells)} | {' / '.join(gains)} |")
    del cv2


def resize_mode() -> None:
    from PIL import Image

    from ferdata.sr import Upscaler
    from ferdata.sr.data import load_hr_folder, psnr, resize_stack

    _, hr = load_hr_folder(DATA / "faces-hr-144", split="heldout")
    hr = np.ascontiguousarray(hr[:, 2:142, 2:142])
    up = Upscaler.load()
    print("\n## 2. 48->224 analogue: 30x30 -> 140x140 (ratio 4.67), held-out faces, PSNR dB\n")
    print("| LR made by | bicubic | post (x4 to 120, bicubic to 140) | pre (bicubic to 35, x4) |")
    print("|---|---|---|---|")
    for m in ("area", "bicubic"):
        lr = resize_stack(hr, (30, 30), "area") if m == "area" else np.stack(
            [np.asarray(Image.fromarray(h).resize((30, 30), Image.BICUBIC)) for h in hr])
        row = [psnr(hr, resize_stack(lr, (140, 140), "bicubic")), psnr(hr, up.upscale(lr, size=140, resize="post")),
               psnr(hr, up.upscale(lr, size=140, resize="pre"))]
        print(f"| {m} | " + " | ".join(f"{v:.2f}" for v in row) + " |")


def fer_faces(n: int) -> np.ndarray:
    from ferdata.sr.data import load_hr_folder

    stacks = [load_hr_folder(d)[1] for d in sorted((DATA / "fer2013-dev").iterdir()) if d.is_dir()]
    faces = np.concatenate(stacks)
    return np.resize(faces, (n, 48, 48))


def speed(n: int) -> None:
    import cv2

    from ferdata.sr import Upscaler, packaged_models

    faces = fer_faces(n)
    up = Upscaler.load()
    up.upscale(faces[:64], size=224)  # warm-up
    print(f"\n## 3. Speed: {n} FER 48x48 faces -> 224x224, images/s ({os.cpu_count()} CPUs)\n")
    t = time.perf_counter()
    ours = up.upscale(faces, size=224)
    t_ours = time.perf_counter() - t
    sr = _opencv_sr(packaged_models()["espcn_x4"], 4)
    m = min(n, 3000)
    t = time.perf_counter()
    for im in faces[:m]:
        cv2.resize(sr.upsample(im), (224, 224), interpolation=cv2.INTER_CUBIC)
    t_cv = (time.perf_counter() - t) * n / m
    t = time.perf_counter()
    for im in faces:
        cv2.resize(im, (224, 224), interpolation=cv2.INTER_CUBIC)
    t_bic = time.perf_counter() - t
    print("| path | images/s | ms/image |")
    print("|---|---|---|")
    for name, sec in (("ferdata default (TF batched ESPCN + bicubic to 224)", t_ours),
                      (f"per-image cv2.dnn_superres loop, same weights (timed on {m})", t_cv),
                      ("plain bicubic cv2.resize", t_bic)):
        print(f"| {name} | {n / sec:,.0f} | {sec / n * 1000:.3f} |")
    print(f"\ndefault path vs OpenCV loop: {t_cv / t_ours:.2f}x; output {ours.shape} {ours.dtype}")


def consistency(n: int = 2000) -> None:
    from ferdata.sr import Upscaler, packaged_models

    faces = fer_faces(n)
    for name in packaged_models():
        scale = int(name.split("_x")[1][0])
        tf_out = Upscaler.load(name, scale).upscale(faces)
        cv_out = Upscaler.load(name, scale, backend="opencv").upscale(faces)
        diff = np.abs(tf_out.astype(np.int16) - cv_out)
        print(f"\n## 5. Consistency of {name} on {n} FER faces x{scale}: pixels within 1 gray level "
              f"{np.mean(diff <= 1) * 100:.4f} %, identical {np.mean(diff == 0) * 100:.4f} %, max difference {diff.max()}")


def end_to_end(rows: int) -> None:
    src = (DATA / "fer2013-dev.csv").read_text().splitlines()
    header, body = src[0], src[1:]
    with tempfile.TemporaryDirectory(prefix="bench-sr-") as tmp:
        csv = Path(tmp) / "fer2013-full.csv"
        with csv.open("w") as f:
            f.write(header + "\n")
            for i in range(rows):
                f.write(body[i % len(body)] + "\n")
        print(f"\n## 4. End to end: `ferdata upscale --espcn` on {rows:,} FER2013 rows -> 224x224\n")
        t = time.perf_counter()
        proc = subprocess.run(["ferdata", "upscale", "--espcn", str(csv), "--out", str(Path(tmp) / "out"), "-q"],
                              capture_output=True, text=True)
        sec = time.perf_counter() - t
        print(proc.stdout.strip() or proc.stderr.strip()[-500:])
        print(f"wall time {sec:.1f} s ({rows / sec:,.0f} images/s), exit code {proc.returncode}; target < 120 s")


def spectral(n: int = 600) -> None:
    """The degradation-regime measurement behind ``--model auto`` (ferdata.sr.spectrum)."""
    import cv2
    from PIL import Image

    from ferdata.sr.data import load_hr_folder
    from ferdata.sr.spectrum import ALIASED_THRESHOLD, band_powers

    rng = np.random.default_rng(0)
    fer = fer_faces(3436)
    fer = fer[rng.permutation(len(fer))[:n]]
    _, hr = load_hr_folder(DATA / "faces-hr-144", limit=n)
    pil = {"pil_bicubic": Image.BICUBIC, "pil_bilinear": Image.BILINEAR}
    ocv = {"area": cv2.INTER_AREA, "cv_cubic": cv2.INTER_CUBIC, "cv_linear": cv2.INTER_LINEAR, "cv_nearest": cv2.INTER_NEAREST}

    def down(im: np.ndarray, how: str) -> np.ndarray:
        if how in pil:
            return np.asarray(Image.fromarray(im).resize((48, 48), pil[how]))
        if how == "blur1_area":
            return cv2.resize(cv2.GaussianBlur(im, (0, 0), 1.0), (48, 48), interpolation=cv2.INTER_AREA)
        return cv2.resize(im, (48, 48), interpolation=ocv[how])

    sets = {"fer2013-dev (real 48x48)": list(fer)}
    for how in ("area", "pil_bicubic", "pil_bilinear", "blur1_area", "cv_cubic", "cv_linear", "cv_nearest"):
        sets[f"faces-hr-144 -> 48 by {how}"] = [down(im, how) for im in hr]
    print(f"\n## 0. Spectrum: share of power above 0.75 Nyquist (DC removed, no window), {n} images each\n")
    print(f"| images | median | mean | 25-75 % | high/mid ratio (median) | above {ALIASED_THRESHOLD} |")
    print("|---|---|---|---|---|---|")
    for name, ims in sets.items():
        fr, ratio = np.array([band_powers(im) for im in ims]).T
        print(f"| {name} | {np.median(fr):.4f} | {fr.mean():.4f} | {np.percentile(fr, 25):.4f}-{np.percentile(fr, 75):.4f} "
              f"| {np.median(ratio):.3f} | {np.mean(fr > ALIASED_THRESHOLD) * 100:.0f} % |")


def robust(compare: list[Path], scale: int = 4) -> dict[str, dict[str, float]]:
    """Issue 17's robustness table: held-out people, x``scale`` to 144, every degradation, gain over bicubic."""
    from ferdata.sr import Upscaler, packaged_models
    from ferdata.sr.data import ROBUST_EVAL, degrade_all, load_hr_folder, psnr, resize_stack
    from ferdata.sr.spectrum import estimate_degradation
    from ferdata.sr.step import auto_candidates, native_scale

    _, hr = load_hr_folder(DATA / "faces-hr-144", split="heldout")
    models = {name: Upscaler.load(name, scale) for name in packaged_models() if name.startswith(f"espcn_x{scale}")}
    if scale != 4:  # what --scale auto uses for compressed / nearest inputs: x4, then area down to 144
        models.update({name: Upscaler.load(name, 4) for name in packaged_models()
                       if name in ("espcn_x4_compressed", "espcn_x4_nearest")})
    for path in compare:
        models[path.name] = Upscaler.load(path, scale)
    candidates = auto_candidates(scale)
    print(f"\n## 6. Robustness: {len(hr)} held-out faces (people never trained on), x{scale} {144 // scale}->144, "
          f"PSNR dB, gain over bicubic ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})\n")
    print("| LR made by | bicubic | " + " | ".join(models) + " | auto before issue 27 | auto picks | auto gain |")
    print("|---|---|" + "---|" * len(models) + "---|---|---|")
    table: dict[str, dict[str, float]] = {}
    for method in ROBUST_EVAL:
        lr = degrade_all(hr, scale, method, seed=1)
        base = psnr(hr, resize_stack(lr, (144, 144), "bicubic"))
        gains = {name: psnr(hr, up.upscale(lr, size=144, allow_downscale=True)) - base for name, up in models.items()}
        est = estimate_degradation(lr)
        pick = auto_candidates(native_scale(lr.shape[-1], 144, est.regime))[est.regime]  # as --scale auto --model auto
        old = f"espcn_x{scale}_aliased" if est.score > 1.0 and f"espcn_x{scale}_aliased" in gains else f"espcn_x{scale}"
        table[method] = {"bicubic": base, **gains, "auto_old": gains[old], "auto": gains[pick]}
        evidence = {"compressed": f"blockiness {est.blockiness:.3f}",
                    "nearest": f"axis {est.axis_offset or 0:+.2f} px"}.get(est.regime, f"score {est.score:.2f}")
        print(f"| {method} | {base:.2f} | " + " | ".join(f"{g:+.2f}" for g in gains.values())
              + f" | {gains[old]:+.2f} | {pick} ({est.regime}, {evidence}) | {gains[pick]:+.2f} |")
    cols = [*models, "auto_old", "auto"]
    means = {c: float(np.mean([row[c] for row in table.values()])) for c in cols}
    worst = {c: float(np.min([row[c] for row in table.values()])) for c in cols}
    issue_rows = ("area", "bicubic", "bilinear", "cv_cubic", "cv_linear", "blur1_area", "area_jpeg75")
    summaries = {"mean gain (issue 27: every row)": means, "worst gain (issue 27: every row)": worst,
                 "mean gain, the issue's 7 rows": {c: float(np.mean([table[r][c] for r in issue_rows])) for c in cols},
                 "worst gain, the issue's 7 rows": {c: float(np.min([table[r][c] for r in issue_rows])) for c in cols}}
    for label, values in summaries.items():
        print(f"| **{label}** | | " + " | ".join(f"{values[c]:+.2f}" for c in models)
              + f" | {values['auto_old']:+.2f} | | {values['auto']:+.2f} |")
    if scale == 4:  # the x2 / x3 models were trained on the person split from the start
        robust_extra(hr, models, candidates)
        leakage(hr, models)
    return table


def robust_extra(hr: np.ndarray, models: dict[str, object], candidates: dict[str, str]) -> None:
    """Inputs beside the table's rows: other JPEG qualities, JPEG after an aliased resize, noise sigma 3 (issue 27)."""
    from ferdata.sr.data import _jpeg, _noise, _resize, psnr, resize_stack
    from ferdata.sr.spectrum import estimate_degradation

    rng = np.random.default_rng(1)
    sets = {f"area, JPEG {q}": [_jpeg(_resize(im, (36, 36), "area"), q) for im in hr] for q in (95, 90, 85, 60, 40)}
    for kernel in ("cv_cubic", "nearest"):
        sets[f"{kernel}, JPEG 75"] = [_jpeg(_resize(im, (36, 36), kernel), 75) for im in hr]
    sets["area, noise sigma 3"] = [_noise(_resize(im, (36, 36), "area"), 3.0, rng) for im in hr]
    print("\nBeyond the table's rows (same faces; blockiness > 1.04 reads as JPEG):\n")
    print("| LR made by | bicubic | " + " | ".join(models) + " | auto picks | auto gain |")
    print("|---|---|" + "---|" * len(models) + "---|---|")
    for name, images in sets.items():
        lr = np.stack(images)
        base = psnr(hr, resize_stack(lr, (144, 144), "bicubic"))
        gains = {m: psnr(hr, up.upscale(lr)) - base for m, up in models.items()}  # type: ignore[attr-defined]
        est = estimate_degradation(lr)
        pick = candidates[est.regime]
        print(f"| {name} | {base:.2f} | " + " | ".join(f"{g:+.2f}" for g in gains.values())
              + f" | {pick} ({est.regime}, score {est.score:.2f}, blockiness {est.blockiness:.3f}) | {gains[pick]:+.2f} |")


def detect(draws: int = 30) -> None:
    """The evidence of the ``compressed`` and ``nearest`` regimes (ferdata.sr.spectrum) on real faces."""
    import gzip

    import cv2

    from ferdata.sr.data import ROBUST_EVAL, _jpeg, _resize, degrade_all, load_hr_folder
    from ferdata.sr.spectrum import _axis_evidence, blockiness, estimate_degradation, symmetry_offset

    _, held = load_hr_folder(DATA / "faces-hr-144", split="heldout")
    _, every = load_hr_folder(DATA / "faces-hr-144")
    print("\n## 7. Detectors: median blockiness, the mean face's symmetry axis (px right of the centre, "
          "+- standard error), the regime `--model auto` reads\n")
    print("| images | blockiness | axis | regime |")
    print("|---|---|---|---|")

    def row(name: str, lr: np.ndarray) -> None:
        est = estimate_degradation(lr)
        offset, se, n = _axis_evidence(list(lr))
        axis = f"{offset:+.3f} +- {se:.3f} ({n})" if offset is not None and se is not None else "-"
        print(f"| {name} | {est.blockiness:.3f} | {axis} | {est.regime} |")

    for method in ROBUST_EVAL:
        row(f"held-out ({len(held)}) -> 36 by {method}", degrade_all(held, 4, method, seed=1))
    for q in (95, 90, 85):
        row(f"held-out -> 36 by area, JPEG {q}", np.stack([_jpeg(_resize(im, (36, 36), "area"), q) for im in held]))
    row("held-out -> 36 by cv_cubic, JPEG 75", np.stack([_jpeg(_resize(im, (36, 36), "cv_cubic"), 75) for im in held]))
    fer = fer_faces(3436)
    row("fer2013-dev (real 48x48)", fer)
    row("fer2013-dev, JPEG 75", np.stack([_jpeg(im, 75) for im in fer]))
    rows = []
    csv = DATA / "fer2013-train.csv.gz"
    if csv.is_file():
        with gzip.open(csv, "rt") as f:
            next(f)
            rows = [np.array(line.split(",")[1].split(), np.uint8).reshape(48, 48) for k, line in enumerate(f) if k % 10 == 0]
        row(f"fer2013-train, every 10th row ({len(rows)}, original pixels)", np.stack(rows))
    print("\nBlockiness (median) of all faces-hr-144 faces resized to each side, clean and after JPEG:\n")
    print("| side | resize | clean | JPEG 90 | JPEG 85 | JPEG 75 |")
    print("|---|---|---|---|---|---|")
    resizes = {"area": cv2.INTER_AREA, "cv_cubic": cv2.INTER_CUBIC, "nearest": cv2.INTER_NEAREST}
    for side in (36, 48, 56, 64, 72):
        for how, flag in resizes.items():
            lr = [cv2.resize(im, (side, side), interpolation=flag) for im in every[::3]]
            cells = [np.median([blockiness(im if q is None else _jpeg(im, q)) for im in lr]) for q in (None, 90, 85, 75)]
            print(f"| {side} | {how} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    rng = np.random.default_rng(0)
    print(f"\nThe axis over {draws} random 500-face samples (what `--model auto` decodes), all {len(every)} faces-hr-144 "
          "faces:\n")
    print("| side | resize | axis, all | axis, 500-face samples: min .. max | samples read as nearest |")
    print("|---|---|---|---|---|")
    flags = {"area": cv2.INTER_AREA, "cv_cubic": cv2.INTER_CUBIC, "nearest": cv2.INTER_NEAREST}
    for side in (36, 48, 64):
        for how, flag in flags.items():
            lr = np.stack([cv2.resize(im, (side, side), interpolation=flag) for im in every])
            samples = [lr[rng.choice(len(lr), 500, replace=False)] for _ in range(draws)]
            offsets = [_axis_evidence(list(x))[0] for x in samples]
            nearest = sum(estimate_degradation(x).regime == "nearest" for x in samples)
            print(f"| {side} | {how} | {symmetry_offset(lr.astype(np.float64).mean(axis=0)):+.3f} "
                  f"| {min(offsets):+.3f} .. {max(offsets):+.3f} | {nearest} of {draws} |")


def leakage(hr: np.ndarray, models: dict[str, object]) -> None:
    """Gains on the held-out people split by whether the earlier file-hash split had held the image out.

    The models fine-tuned from (or equal to) the pre-issue-17 packaged model were trained on 85 % of
    the files by file-name hash, so most of today's held-out people were in their training data:
    this measures whether that matters.
    """
    import hashlib

    from ferdata.sr.data import degrade_all, load_hr_folder, psnr, resize_stack

    names, _ = load_hr_folder(DATA / "faces-hr-144", split="heldout")
    old_heldout = np.array([int(hashlib.sha256(n.encode()).hexdigest(), 16) % 100 < 10 for n in names])
    print(f"\nImages of the held-out people that the old file-hash split also held out: {old_heldout.sum()} "
          f"(never seen by any model here) vs {(~old_heldout).sum()} (in the old training files)\n")
    print("| model | LR | gain, never seen | gain, in old training files |")
    print("|---|---|---|---|")
    for name, up in models.items():
        for method in ("area", "cv_cubic", "area_jpeg50", "nearest"):
            lr = degrade_all(hr, 4, method, seed=1)
            out = up.upscale(lr)  # type: ignore[attr-defined]
            base = resize_stack(lr, (144, 144), "bicubic")
            cells = [psnr(hr[m], out[m]) - psnr(hr[m], base[m]) for m in (old_heldout, ~old_heldout)]
            print(f"| {name} | {method} | {cells[0]:+.2f} | {cells[1]:+.2f} |")


def step_speed(n: int, build_copies: int = 10) -> None:
    """Issue 17 item 4: the upscale step against ``Upscaler.upscale`` on the same images, in one run.

    (a) the core (``upscale_batch``: decode, network, PNG encode, ids) and its parts; (b) the whole
    step through its real entry point (``run_step`` on an imported dataset: Arrow reads and writes)
    and ``save_dataset``; (c) ``ferdata build fer2013-improved`` on fer2013-dev x ``build_copies``
    (``bench_dedupe.dev_copies`` with rotations / mirrors / negatives: distinct pixels that dedupe
    keeps, so the whole CSV reaches ``upscale``), written to a temporary folder.
    """
    import cv2

    from ferdata.dataset import save_dataset
    from ferdata.images import decode_plain_png, encode_png, pixel_id, to_array
    from ferdata.sr.step import get_upscaler, upscale_batch
    from ferdata.steps import StepContext, get_step, run_step

    faces = fer_faces(n)
    pngs = [encode_png(im) for im in faces]
    up = get_upscaler("espcn_x4", 4, "tf")
    up.upscale(faces[:64], size=224)  # warm-up
    print(f"\n## Step speed: {n} FER 48x48 faces -> 224x224 ({os.cpu_count()} CPUs; load {os.getloadavg()[0]:.1f})\n")
    t = time.perf_counter()
    out = up.upscale(faces, size=224)
    t_api = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(0, n, 1024):
        batch = {"image": [{"bytes": b, "path": None} for b in pngs[i:i + 1024]],
                 "id": [str(j) for j in range(i, min(n, i + 1024))]}
        res = upscale_batch(batch, model="espcn_x4", scale=4, backend="tf", size=224, resize="post",
                            allow_downscale=False, batch_size=32)
        last = len(res["image"]) - 1  # the step's pixels are the API's
        assert all(np.array_equal(decode_plain_png(res["image"][k]["bytes"]), out[i + k]) for k in (0, last))
    t_step = time.perf_counter() - t
    adaptive = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY]
    parts, sizes = {}, {}
    for name, fn, items in (("decode 48x48 PNG, Pillow (to_array)", lambda b: to_array({"bytes": b, "path": None}), pngs),
                            ("decode 48x48 PNG, OpenCV (decode_plain_png)", decode_plain_png, pngs),
                            ("PNG encode 224x224, adaptive filter (before)",
                             lambda a: cv2.imencode(".png", a, adaptive)[1].tobytes(), out),
                            ("PNG encode 224x224, Paeth filter (encode_png)", encode_png, out),
                            ("pixel_id", pixel_id, out)):
        t = time.perf_counter()
        results = [fn(x) for x in items]
        parts[name] = (time.perf_counter() - t) / n * 1000
        if isinstance(results[0], bytes):
            sizes[name] = np.mean([len(b) for b in results]) / 1000
    with tempfile.TemporaryDirectory(prefix="bench-sr-step-") as tmp:
        csv = Path(tmp) / "fer.csv"
        write_fer_csv(csv, faces)
        ctx = StepContext()
        importer = get_step("import_fer2013")
        imported, _ = run_step(importer, None, importer.make_config({"csv": str(csv)}), ctx)
        step = get_step("upscale")
        t = time.perf_counter()
        upscaled, entry = run_step(step, imported.data, step.make_config({"size": 224}), ctx)
        t_whole = time.perf_counter() - t
        t = time.perf_counter()
        save_dataset(upscaled.data, Path(tmp) / "out", manifest={"steps": [entry]}, rejects=upscaled.rejects)
        t_save = time.perf_counter() - t
    print("| path | images/s | ms/image | of the API rate |")
    print("|---|---|---|---|")
    print(f"| Upscaler.upscale (API: network + resample) | {n / t_api:,.0f} | {t_api / n * 1000:.3f} | 100 % |")
    print(f"| upscale_batch (the step's core, no Arrow I/O) | {n / t_step:,.0f} | {t_step / n * 1000:.3f} "
          f"| {t_api / t_step * 100:.0f} % |")
    print(f"| whole step: run_step on an imported dataset (Arrow read + write, model {entry['info']['model']}) "
          f"| {n / t_whole:,.0f} | {t_whole / n * 1000:.3f} | {t_api / t_whole * 100:.0f} % |")
    print(f"| save_dataset of the result | | {t_save / n * 1000:.3f} | |")
    for name, ms in parts.items():
        size = f" ({sizes[name]:.1f} KB/image)" if name in sizes else ""
        print(f"| of which {name}{size} | | {ms:.3f} | |")
    print(f"\nstep core / API rate: {t_api / t_step * 100:.0f} % (target >= 80 %); "
          f"whole step / API rate: {t_api / t_whole * 100:.0f} %")
    if build_copies:
        whole_build(build_copies)


def write_fer_csv(path: Path, faces: list[np.ndarray] | np.ndarray) -> None:
    """A FER2013-format CSV (emotion,pixels,Usage) of 48x48 faces; emotions cycle 0-6, all Training."""
    with path.open("w") as f:
        f.write("emotion,pixels,Usage\n")
        for k, im in enumerate(faces):
            f.write(f"{k % 7},{' '.join(map(str, im.ravel()))},Training\n")


def whole_build(copies: int) -> None:
    """``ferdata build fer2013-improved`` on fer2013-dev x ``copies`` (a FER2013-size CSV), with its step times."""
    import json

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_dedupe import DISTINCT, dev_copies

    from ferdata.images import pixel_id

    images = dev_copies(copies, DISTINCT)
    unique = len({pixel_id(im) for im in images})
    with tempfile.TemporaryDirectory(prefix="bench-sr-build-") as tmp:
        csv = Path(tmp) / f"fer2013-dev-x{copies}.csv"
        write_fer_csv(csv, images)
        load = os.getloadavg()[0]
        t = time.perf_counter()
        proc = subprocess.run(["ferdata", "build", "fer2013-improved", "--source", str(csv), "--out",
                               str(Path(tmp) / "out"), "-q"], capture_output=True, text=True)
        sec = time.perf_counter() - t
        print(f"\n## Whole build: `ferdata build fer2013-improved` on fer2013-dev x{copies}: {len(images):,} rows "
              f"({unique:,} distinct pixel ids), 224x224, {os.cpu_count()} CPUs, load {load:.1f}\n")
        if proc.returncode:
            print(f"exit code {proc.returncode}: {proc.stderr.strip()[-800:]}")
            return
        manifest = json.loads((Path(tmp) / "out" / "ferdata.json").read_text())
        print("| step | rows in | kept | seconds |")
        print("|---|---|---|---|")
        for e in manifest["steps"]:
            print(f"| {e['step']} | {e.get('input_rows') or ''} | {e['kept']} | {e['seconds']:.1f} |")
        print(f"\nwall time {sec:.1f} s (build_seconds {manifest.get('build_seconds', 0):.1f}; target < 60 s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pb", type=Path, action="append", default=[], help="extra OpenCV .pb (x4) to compare")
    parser.add_argument("--n", type=int, default=10_000, help="images for the speed test (issue figure: 10000)")
    parser.add_argument("--full", type=int, default=35_887, help="rows for the end-to-end run (FER2013: 35887; 0 skips)")
    parser.add_argument("--only", default="spectral,quality,mode,speed,e2e,consistency",
                        help="sections; 'step' = issue 17 item 4 (step vs API, whole step, whole build); "
                             "'detect' = the compressed / nearest evidence (issue 27)")
    parser.add_argument("--build-copies", type=int, default=10,
                        help="with --only step: the whole build on fer2013-dev x this (0 skips)")
    parser.add_argument("--robust", action="store_true", help="only the robustness table (issue 17)")
    parser.add_argument("--scale", type=int, choices=(2, 3, 4), default=4, help="the robustness table's factor")
    parser.add_argument("--compare", type=Path, action="append", default=[],
                        help="another x4 .pb/.keras for the robustness table (e.g. the previous packaged model)")
    args = parser.parse_args(argv)
    if not (DATA / "faces-hr-144").is_dir():
        print(f"shared data absent: {DATA} (see ../shared/data/README.md); nothing to benchmark")
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    only = set(args.only.split(","))
    if args.robust:
        robust(args.compare, args.scale)
        return 0
    if "spectral" in only:
        spectral()
    if "detect" in only:
        detect()
    if "quality" in only:
        quality(args.pb)
    if "mode" in only:
        resize_mode()
    if "speed" in only:
        speed(args.n)
    if "step" in only:
        step_speed(args.n, args.build_copies)
    if "e2e" in only and args.full:
        end_to_end(args.full)
    if "consistency" in only:
        consistency()
    return 0


def test_bench_sr() -> None:
    """pytest entry (``pytest tests/benchmarks/bench_sr.py -s``): reduced sizes."""
    assert main(["--n", "2000", "--full", "0"]) == 0


if __name__ == "__main__":
    sys.exit(main())
