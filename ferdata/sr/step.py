"""The ``upscale`` step and ``ferdata upscale --espcn``: super-resolve every image of a dataset.

Each row keeps its label and other columns; ``image`` is replaced by the upscaled PNG, ``id``
becomes the new pixels' id, ``parent_id`` holds the old one and ``root_id`` is kept (lineage). The step's manifest
entry records the model, scale, backend, resize mode, and the input and output sizes.

``model: auto`` (the default) decodes a seeded sample of up to 500 input images, estimates how
they were made (:func:`ferdata.sr.spectrum.estimate_degradation`: ``smooth``, ``aliased``,
``compressed`` (8x8 JPEG blocks) or ``nearest`` (OpenCV nearest-neighbour downscale)) and picks
the packaged model for that regime (:func:`auto_candidates`); the estimate with its evidence, the
rule that decided (``why``), the candidates and the choice are recorded under ``info.auto`` of
the step's entry in ``ferdata.json``.

Rows are processed in batches of 1,024 in one process (``--num-proc`` does not apply: TensorFlow
and ``cv2.dnn`` already use every core, and worker processes forked after TensorFlow has run
deadlock); inside a batch images are grouped by size and shape and each group is run batched
(mixed sizes are fine). An image that cannot be decoded, or that is larger
than the target while ``allow_downscale`` is off, goes to the rejects ledger
(an image reason of :data:`ferdata.columns.IMAGE_REASONS` / ``larger_than_target``); if the
*first* image of a split is larger than the target the step stops with a usage error before any work.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ferdata.errors import UsageError
from ferdata.sr.upscaler import BACKENDS, RESIZE_MODES, Upscaler
from ferdata.steps import StepContext, StepOutput, register_step

#: Default resize mode for a target that is not a multiple of the scale (measured: see docs/sr.md).
DEFAULT_RESIZE = "post"
#: ``model`` value that picks the packaged model from the inputs' degradation regime
AUTO = "auto"
#: images decoded to estimate the regime for ``model: auto``
AUTO_SAMPLE = 500
#: regimes with their own packaged model (``espcn_x{s}_{regime}``), in fallback order
SPECIALISED = ("aliased", "compressed", "nearest")


@dataclass
class UpscaleConfig:
    """Options of the ``upscale`` step."""

    #: output side in pixels (square); None = scale x input
    size: int | None = 224
    #: 2, 3, 4, or "auto": the native packaged scale for the first image and ``size`` (:func:`native_scale`)
    scale: int | str = AUTO
    #: "auto" (pick a packaged model from the inputs' spectrum, see ferdata.sr.spectrum), a packaged
    #: model name, or a path to a .pb / .keras (None = packaged espcn_x{scale})
    model: str | None = AUTO
    #: auto (opencv for a .pb, tf for a .keras), tf or opencv: see Upscaler.load
    backend: str = "auto"
    #: post: network then resample to size; pre: resample to size/scale then network
    resize: str = DEFAULT_RESIZE
    allow_downscale: bool = False
    batch_size: int = 32

    def __post_init__(self) -> None:
        from ferdata.sr.model import SCALES

        if self.scale not in SCALES and self.scale != AUTO:
            raise UsageError(f"scale must be one of {', '.join(map(str, SCALES))} or auto, got {self.scale!r}")
        if self.size is not None and (not isinstance(self.size, int) or self.size < 1):
            raise UsageError(f"size must be a positive number of pixels, got {self.size!r}")
        if self.backend not in BACKENDS:
            raise UsageError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.resize not in RESIZE_MODES:
            raise UsageError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {self.resize!r}")
        if self.batch_size < 1:
            raise UsageError(f"batch_size must be positive, got {self.batch_size!r}")


_upscalers: dict[tuple[Any, ...], Upscaler] = {}


def native_scale(side: int | None, size: int | None, regime: str | None = None) -> int:
    """``scale: auto``: the factor of the packaged ``espcn_x{s}`` that reaches ``size`` from an
    input of ``side`` pixels with the least resampling -- the smallest packaged factor whose output
    is at least ``size`` (48 -> 96: 2; 48 -> 112 or 144: 3), else the largest packaged one (48 -> 224: 4);
    4 when ``size`` or ``side`` is unknown. With ``regime="aliased"`` (``compressed``, ``nearest``)
    only factors that have a packaged ``espcn_x{s}_aliased`` (``_compressed``, ``_nearest``) count,
    when any has one (the smooth models lose to bicubic on those inputs).

    Example:
        >>> native_scale(48, 96), native_scale(48, 224)   # doctest: +SKIP
        (2, 4)
    """
    from ferdata.sr.model import SCALES
    from ferdata.sr.upscaler import packaged_models

    models = packaged_models()
    suffix = f"_{regime}" if regime in SPECIALISED else ""
    have = [s for s in SCALES if f"espcn_x{s}{suffix}" in models] or [s for s in SCALES if f"espcn_x{s}" in models]
    if not have or side is None or size is None:
        return 4
    reach = [s for s in have if s * side >= size]
    return min(reach) if reach else max(have)


def auto_candidates(scale: int) -> dict[str, str]:
    """Regime -> packaged model name for ``model: auto`` at ``scale``: ``espcn_x{scale}`` for
    ``smooth``; ``espcn_x{scale}_{regime}`` for ``aliased``, ``compressed`` and ``nearest`` where
    packaged, else ``espcn_x{scale}`` (``nearest`` falls back to the aliased model: its input is
    an aliased resize).

    Raises:
        UsageError: when no packaged model has this scale.
    """
    from ferdata.sr.upscaler import packaged_models

    models = packaged_models()
    base = f"espcn_x{scale}"
    if base not in models:
        raise UsageError(f"--model auto: no packaged x{scale} model (packaged: {', '.join(models) or '(none)'}); "
                         f"pass --scale 4 or --model PATH to a .pb / .keras")
    out = {"smooth": base}
    for regime in SPECIALISED:
        fallback = out["aliased"] if regime == "nearest" else base
        out[regime] = f"{base}_{regime}" if f"{base}_{regime}" in models else fallback
    return out


def choose_model(images: list[np.ndarray], scale: int, *, estimate: Any = None) -> tuple[str, dict[str, Any]]:
    """Pick the packaged model for a sample of input images; return it and the evidence.

    ``estimate``: an already computed :func:`ferdata.sr.spectrum.estimate_degradation` of ``images``
    (skips estimating again).

    Example:
        >>> choose_model(list(faces_48), 4)[0]     # doctest: +SKIP
        'espcn_x4'
    """
    from ferdata.sr.spectrum import estimate_degradation

    candidates = auto_candidates(scale)
    try:
        estimate = estimate if estimate is not None else estimate_degradation(images)
    except UsageError as e:  # nothing measurable (tiny or flat images): the default model, and why
        return candidates["smooth"], {"chosen": candidates["smooth"], "candidates": candidates, "estimate": None,
                                      "why": str(e)}
    name = candidates[estimate.regime]
    evidence = {"chosen": name, "candidates": candidates, "estimate": estimate.to_dict(),
                "why": estimate.summary()}
    return name, evidence


def get_upscaler(model: str | None, scale: int, backend: str) -> Upscaler:
    """One loaded :class:`Upscaler` per process and (model, scale, backend)."""
    key = (model, scale, backend)
    if key not in _upscalers:
        _upscalers[key] = Upscaler.load(model, scale, backend=backend)
    return _upscalers[key]


#: images the network runs between two hand-overs to the PNG encoders (a multiple of ``batch_size`` is used)
PIPELINE_IMAGES = 128


def _encode_all(outs: Any) -> list[tuple[bytes, str]]:
    from ferdata.images import encode_png, pixel_id

    return [(encode_png(out), pixel_id(out)) for out in outs]


def _upscale_encoded(up: Upscaler, inputs: Any, *, size: int | None, resize: str, allow_downscale: bool,
                     batch_size: int) -> list[tuple[bytes, str]]:
    """The upscaled images' PNG bytes and ids, in input order (:func:`_per_image_threads` for OpenCV).

    A stack goes through the network in parts of whole network batches (so every network batch holds
    the same images as in one call, and gives the same pixels); each part's outputs are PNG-encoded
    and hashed on threads while the network runs the next part (both release the GIL; TensorFlow
    keeps about 1.5 of 2 cores busy): 3-4 % less time than encoding after the whole batch, on 3,000
    FER2013 faces, idle or shared cores. Mixed sizes go in one call.
    """
    if up.backend == "opencv":
        return _per_image_threads(up, inputs, size=size, resize=resize, allow_downscale=allow_downscale)
    part = max(1, PIPELINE_IMAGES // batch_size) * batch_size
    parts = [inputs[i:i + part] for i in range(0, len(inputs), part)] if isinstance(inputs, np.ndarray) else [inputs]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        futures = []
        for chunk in parts:
            outs = up.upscale(chunk, size=size, resize=resize, allow_downscale=allow_downscale, batch_size=batch_size)
            futures += [pool.submit(_encode_all, outs[k:k + batch_size]) for k in range(0, len(outs), batch_size)]
        return [item for f in futures for item in f.result()]


def _per_image_threads(up: Upscaler, inputs: Any, *, size: int | None, resize: str,
                       allow_downscale: bool) -> list[tuple[bytes, str]]:
    """The OpenCV backend's share of :func:`_upscale_encoded`: network, resample and PNG encode of
    each part of PIPELINE_IMAGES images in one of :meth:`Upscaler.in_threads`' threads (the network
    runs one image at a time either way, so the pixels are the same).

    On 4,000 fer2013-train faces, 2 cores: 871 images/s for network + resample + encode this way,
    against 364 in one thread with OpenCV's own two (the network alone: 991).
    """
    def run(mine: Upscaler, part: Any) -> list[tuple[bytes, str]]:
        return _encode_all(mine.upscale(part, size=size, resize=resize, allow_downscale=allow_downscale))

    parts = [inputs[i:i + PIPELINE_IMAGES] for i in range(0, len(inputs), PIPELINE_IMAGES)]
    return [item for result in up.in_threads(run, parts) for item in result]


def upscale_batch(batch: dict[str, list[Any]], *, model: str | None, scale: int, backend: str, size: int | None,
                  resize: str, allow_downscale: bool, batch_size: int) -> dict[str, list[Any]]:
    """Upscale one batch of rows (``image`` undecoded) and set ``id``, its lineage and reject marks.

    Plain 8-bit PNGs (what ferdata writes) are decoded by OpenCV, anything else by
    :func:`ferdata.images.to_array`; same-shape images go to the network as one stack (no regrouping copies).
    """
    from ferdata.dataset import PARENT_ID, REJECT_DETAILS, REJECT_REASON, ROOT_ID, lineage_ids
    from ferdata.images import ImageRejected
    from ferdata.rows import read_pixels, reject_marks

    up = get_upscaler(model, scale, backend)
    n = len(batch["image"])
    pixels: list[np.ndarray | None] = []
    reasons, details = [""] * n, [""] * n
    for i, value in enumerate(batch["image"]):
        try:
            im = read_pixels(value)
        except ImageRejected as e:
            pixels.append(None)
            reasons[i], details[i] = reject_marks(e)
            continue
        if size is not None and max(im.shape[:2]) > size and not allow_downscale:
            pixels.append(None)
            reasons[i] = "larger_than_target"
            details[i] = json.dumps({"input": list(im.shape[:2]), "size": size})
            continue
        pixels.append(im)
    good = [i for i, p in enumerate(pixels) if p is not None]
    inputs: Any = [pixels[i] for i in good]
    if len({im.shape for im in inputs}) == 1:
        inputs = np.stack(inputs)
    encoded = _upscale_encoded(up, inputs, size=size, resize=resize, allow_downscale=allow_downscale,
                               batch_size=batch_size) if good else []
    images: list[Any] = [None] * n
    rows = [{"id": i, ROOT_ID: r} for i, r in zip(batch["id"], batch.get(ROOT_ID) or [None] * n, strict=True)]
    lineage = [lineage_ids(row["id"], row) for row in rows]  # a rejected row keeps its id
    for i, (png, new_id) in zip(good, encoded, strict=True):
        images[i] = {"bytes": png, "path": None}
        lineage[i] = lineage_ids(new_id, rows[i])
    return {"image": images, **{k: [x[k] for x in lineage] for k in ("id", PARENT_ID, ROOT_ID)},
            REJECT_REASON: reasons, REJECT_DETAILS: details}


@register_step("upscale", UpscaleConfig)
def upscale_step(data: Any, config: UpscaleConfig, ctx: StepContext) -> StepOutput:
    """Super-resolve every image (ESPCN by default, 48x48 -> 224x224), keeping labels and lineage."""
    import datasets

    from ferdata.images import to_array
    from ferdata.rows import map_rows
    from ferdata.sr.spectrum import sample_dataset_images

    params = {k: v for k, v in asdict(config).items()}
    scale = config.scale
    sample: list[np.ndarray] = []
    estimate = None  # the sample's degradation estimate, once computed
    if config.model == AUTO:
        if scale != AUTO:
            auto_candidates(scale)  # fail fast before decoding
        sample, _ = sample_dataset_images(data, n=AUTO_SAMPLE, seed=ctx.seed)
    if scale == AUTO:
        from ferdata.sr.spectrum import estimate_degradation

        first_image = next((ds.cast_column("image", datasets.Image(decode=False))[0]["image"]
                            for ds in data.values() if len(ds)), None)
        try:
            estimate = estimate_degradation(sample) if sample else None
        except UsageError:
            estimate = None
        regime = estimate.regime if estimate is not None else None
        scale = native_scale(max(to_array(first_image).shape[:2]) if first_image is not None else None, config.size,
                             regime)
        if config.model not in (AUTO, None):
            factor = re.fullmatch(r"espcn_x([234])(_\w+)?", str(config.model))
            if factor is None:
                raise UsageError(f"scale auto needs model auto or a packaged name, got model {config.model!r}; "
                                 "pass --scale 2|3|4 to match that model")
            scale = int(factor.group(1))
        params["scale"] = scale
    auto: dict[str, Any] | None = None
    if config.model == AUTO:
        auto_candidates(scale)
        params["model"], auto = choose_model(sample, scale, estimate=estimate)
    up = get_upscaler(params["model"], scale, config.backend)  # fail fast on a bad model
    in_sizes: Counter[str] = Counter()
    for split, ds in data.items():
        if len(ds):
            first = to_array(ds.cast_column("image", datasets.Image(decode=False))[0]["image"])
            if config.size is not None and max(first.shape[:2]) > config.size and not config.allow_downscale:
                raise UsageError(f"--size {config.size} is smaller than the input images ({first.shape[0]}x{first.shape[1]} "
                                 f"in split {split}); pass --allow-downscale to shrink")
            in_sizes[f"{first.shape[0]}x{first.shape[1]}"] += len(ds)
    # One process: TensorFlow (and cv2.dnn) already use every core, and a process forked after
    # TensorFlow has run deadlocks, so --num-proc does not apply to this step (the Ray engine
    # runs it in a pool of single-threaded actors, one model each: stateful=True).
    kept, rejects = map_rows(data, upscale_batch, step="upscale", new_images=True, stateful=True, batch_size=1024,
                             fn_kwargs=params, cache_file_name=None)
    out_size = None
    for ds in kept.values():
        if len(ds):
            w, h = ds.cast_column("image", datasets.Image())[0]["image"].size
            out_size = f"{h}x{w}"
            break
    info = {"model": up.name, "model_file": str(up.path), "scale": scale, "scale_requested": config.scale,
            "backend": up.backend, "backend_requested": config.backend, "resize": config.resize,
            "input_sizes_first_row": dict(in_sizes), "output_size": out_size}
    if auto is not None:
        info["auto"] = auto
    return StepOutput(kept, rejects, info=info)


def upscale_input(inp: str | Path, *, out: str | Path, params: dict[str, Any], ctx: StepContext | None = None,
                  overwrite: bool = False) -> tuple[Path, list[dict[str, Any]]]:
    """``ferdata upscale``: upscale a dataset directory, a class-folder image tree or a FER2013 CSV.

    A folder or CSV is imported on the fly with the registered importer step
    (``import_folder`` / ``import_fer2013``), then upscaled; the output manifest lists both steps.

    Returns:
        The output path and the manifest entries of the steps run.

    Example:
        >>> upscale_input("fer2013.csv", out="fer224", params={"size": 224})   # doctest: +SKIP
    """
    from ferdata.commit import Chain, commit
    from ferdata.dataset import prepare_output
    from ferdata.steps import apply_step, get_step, run_step

    ctx = ctx or StepContext()
    inp = Path(inp)
    if not inp.exists():
        from ferdata.errors import InputNotFound

        raise InputNotFound(f"input not found: {inp}")
    if inp.is_dir() and (inp / "dataset_dict.json").exists():
        path, entry = apply_step("upscale", params, inputs=[inp], out=out, ctx=ctx, overwrite=overwrite)
        return path, [entry]
    if inp.is_dir():
        importer, iparams = "import_folder", {"src": str(inp)}
    elif inp.name.lower().endswith((".csv", ".csv.gz", ".zip")):
        importer, iparams = "import_fer2013", {"csv": str(inp)}
    else:
        raise UsageError(f"{inp} is not a dataset directory, an image folder or a FER2013 .csv (.csv.gz, .zip)")
    step_up = get_step("upscale")
    config_up = step_up.make_config(params)
    out = prepare_output(out, overwrite=overwrite, inputs=[inp])
    if config_up.scale == AUTO:
        pass  # the scale depends on the imported images; a bad model still fails before any upscaling
    elif config_up.model == AUTO:
        auto_candidates(config_up.scale)  # no model for the scale: fail before importing
    else:
        get_upscaler(config_up.model, config_up.scale, config_up.backend)  # bad model: fail before importing
    step_in = get_step(importer)
    imported, entry_in = run_step(step_in, None, step_in.make_config(iparams), ctx)
    upscaled, entry_up = run_step(step_up, imported.data, config_up, ctx)
    chain = Chain.start(seed=ctx.seed)
    chain.add(imported, entry_in)
    chain.add(upscaled, entry_up)
    commit(upscaled.data, out, chain, overwrite=overwrite, num_proc=ctx.num_proc)
    return out, [entry_in, entry_up]
