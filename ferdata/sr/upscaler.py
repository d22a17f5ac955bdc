"""``Upscaler``: super-resolve uint8 images with a packaged or external ESPCN/FSRCNN graph.

Models: a packaged name (``espcn_x4``; ``None`` = the packaged model for the scale), a frozen
TensorFlow ``.pb`` in OpenCV's ``dnn_superres`` convention (gray/Y input in [0, 1], one
placeholder, output in [0, 1] at ``scale`` times the size, e.g. the public ``ESPCN_x4.pb`` or
``FSRCNN_x4.pb``), or a ``.keras`` model made by ``ferdata train-espcn``.

Backends: ``tf`` (default) runs the graph batched over same-size images; ``opencv`` runs
``cv2.dnn_superres`` one image at a time, exactly as OpenCV users do.

Images: a uint8 ``(N, H, W)`` gray stack, an ``(N, H, W, 3)`` RGB stack, or a list of ``(H, W)`` /
``(H, W, 3)`` arrays of any sizes (grouped by size and shape, each group batched; the order is
kept). Gray in, gray out. Colour goes through YCrCb as OpenCV does: the Y channel through the
network, Cr and Cb bicubic-resized (OpenCV itself uses bilinear for chroma).

Sizes: ``size=None`` returns ``scale`` times the input. ``size=224`` (or ``(H, W)``) gives that
size: with ``resize="post"`` (default) the network output is resampled (area when shrinking,
bicubic when growing) to the target; with ``resize="pre"`` the input is first bicubic-resized to
``target / scale`` (rounded up) and the network output resampled to the exact target if needed.
Targets smaller than the input raise :class:`UsageError` unless ``allow_downscale=True``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ferdata.errors import UsageError

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "tf", "opencv")
RESIZE_MODES = ("post", "pre")
_ALGORITHMS = ("espcn", "fsrcnn", "lapsrn", "edsr")


def packaged_models() -> dict[str, Path]:
    """Packaged model names -> ``.pb`` paths (``ferdata/sr/models/*.pb``)."""
    root = Path(str(resources.files("ferdata.sr") / "models"))
    return {p.stem: p for p in sorted(root.glob("*.pb"))}


def resolve_model(name_or_path: str | Path | None, scale: int) -> tuple[str, Path]:
    """Return (display name, file) of a packaged name or a path.

    Raises:
        UsageError: for an unknown name or a missing file.
    """
    models = packaged_models()
    if name_or_path is None:
        name_or_path = f"espcn_x{scale}"
    text = str(name_or_path)
    if text in models:
        return text, models[text]
    path = Path(text)
    if path.suffix.lower() in (".pb", ".keras"):
        if not path.is_file():
            raise UsageError(f"model file not found: {path}")
        return path.name, path
    raise UsageError(f"unknown model {text!r}; packaged models: {', '.join(models) or '(none)'}, "
                     "or give a path to an OpenCV-format .pb or a ferdata .keras file")


def _tf_graph_runner(path: Path, name: str) -> Callable[[np.ndarray], np.ndarray]:
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(path.read_bytes())
    except DecodeError as e:
        raise UsageError(f"model {name} is not a TensorFlow graph (.pb): {e}") from e
    placeholders = [n.name for n in graph_def.node if n.op == "Placeholder"]
    if len(placeholders) != 1:
        raise UsageError(f"model {name} is not a super-resolution graph: expected one input placeholder, "
                         f"found {len(placeholders)}")
    consumed = {i.split(":")[0].lstrip("^") for n in graph_def.node for i in n.input}
    sinks = [n.name for n in graph_def.node if n.name not in consumed and n.op not in ("Const", "NoOp", "Placeholder")]
    if not sinks:
        raise UsageError(f"model {name} is not a super-resolution graph: it has no output node")
    output = "output" if "output" in sinks else sinks[-1]

    def imported(x: Any) -> Any:
        (y,) = tf.compat.v1.import_graph_def(graph_def, input_map={f"{placeholders[0]}:0": x},
                                             return_elements=[f"{output}:0"], name="")
        return y

    try:
        fn = tf.compat.v1.wrap_function(imported, [tf.TensorSpec([None, None, None, 1], tf.float32)])
    except Exception as e:  # TF raises many kinds for an unusable graph
        raise UsageError(f"model {name} is not a usable super-resolution graph: {type(e).__name__}: {e}") from e

    def run(x: np.ndarray) -> np.ndarray:
        return fn(tf.constant(x)).numpy()

    return run


def _keras_runner(path: Path, name: str) -> Callable[[np.ndarray], np.ndarray]:
    import keras

    from ferdata.sr.model import depth_to_space_layer

    depth_to_space_layer()
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:
        raise UsageError(f"model {name} could not be loaded as a Keras model: {type(e).__name__}: {e}") from e

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(model(x, training=False))

    return run


class Upscaler:
    """A loaded super-resolution model; use :meth:`load`.

    Example:
        >>> up = Upscaler.load()                                   # doctest: +SKIP
        >>> up.upscale(np.zeros((2, 48, 48), np.uint8), size=224).shape  # doctest: +SKIP
        (2, 224, 224)
    """

    def __init__(self, *, name: str, path: Path, scale: int, backend: str, runner: Any,
                 algorithm: str | None = None) -> None:
        self.name, self.path, self.scale, self.backend = name, path, scale, backend
        self.algorithm = algorithm
        self._runner = runner

    def copies(self, n: int) -> list[Upscaler]:
        """``n`` instances of this model, this one first (each its own OpenCV network: one per thread;
        loaded once and kept)."""
        have = self.__dict__.setdefault("_copies", [self])
        while len(have) < n:
            up = Upscaler.load(self.path, self.scale, backend=self.backend, algorithm=self.algorithm)
            up.name = self.name
            have.append(up)
        return have[:n]

    @classmethod
    def load(cls, name_or_path: str | Path | None = None, scale: int = 4, *, backend: str = "auto",
             algorithm: str | None = None) -> Upscaler:
        """Load a packaged model by name or a model file, and check its scale.

        Args:
            name_or_path: ``None`` (the packaged model for ``scale``), a packaged name such as
                ``espcn_x4``, or a path to a ``.pb`` (OpenCV format) or ``.keras`` file.
            scale: the upscale factor the model must have (2, 3 or 4).
            backend: ``opencv`` (``cv2.dnn_superres``, per image; ``.pb`` only), ``tf`` (TensorFlow,
                batched) or ``auto`` (default): ``opencv`` for a ``.pb``, ``tf`` for a ``.keras``. Both
                run the same weights (outputs within one gray level); OpenCV 4.14 runs the packaged
                ESPCN as fast or faster here and needs no TensorFlow import (~5 s, ~0.7 GB): docs/sr.md.
            algorithm: OpenCV algorithm name for ``setModel`` (default: guessed from the file
                name, ``espcn`` otherwise).

        Raises:
            UsageError: for an unknown model, a file that is not an SR graph, or a wrong scale.
        """
        from ferdata.sr.model import SCALES

        if scale not in SCALES:
            raise UsageError(f"scale must be one of {', '.join(map(str, SCALES))}, got {scale!r}")
        if backend not in BACKENDS:
            raise UsageError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        name, path = resolve_model(name_or_path, scale)
        if backend == "auto":
            backend = "opencv" if path.suffix.lower() == ".pb" else "tf"
        if backend == "opencv":
            if path.suffix.lower() != ".pb":
                raise UsageError(f"backend opencv needs a .pb model, got {path.name}")
            runner: Any = _opencv_runner(path, name, scale, algorithm)
        elif path.suffix.lower() == ".keras":
            runner = _keras_runner(path, name)
        else:
            runner = _tf_graph_runner(path, name)
        up = cls(name=name, path=path, scale=scale, backend=backend, runner=runner, algorithm=algorithm)
        up._check_scale()
        return up

    def _check_scale(self) -> None:
        probe = np.zeros((1, 8, 10, 1), np.float32)
        try:
            if self.backend == "opencv":
                shape = self._runner(np.zeros((8, 10), np.uint8)).shape
                shape = (1, *shape[:2], 1)
            else:
                shape = tuple(self._runner(probe).shape)
        except UsageError:
            raise
        except Exception as e:
            raise UsageError(f"model {self.name} is not a usable super-resolution graph: {type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}") from e
        expected = (1, 8 * self.scale, 10 * self.scale, 1)
        if tuple(shape) != expected:
            ok = len(shape) == 4 and shape[1] % 8 == 0 and shape[1] * 10 == shape[2] * 8
            found = f"x{shape[1] // 8}" if ok else str(shape)
            raise UsageError(f"model {self.name} is not an x{self.scale} super-resolution model: an 8x10 input gave "
                             f"{found} instead of {expected[1]}x{expected[2]}; pass --scale/scale= to match the model")

    # ------------------------------------------------------------------ inference

    def upscale_y(self, y: np.ndarray, *, batch_size: int = 32, size: tuple[int, int] | None = None) -> np.ndarray:
        """Super-resolve a uint8 ``(N, h, w)`` stack of gray/Y images to ``(N, h*s, w*s)``.

        With ``size`` = (height, width), each batch's output is resampled to it as it comes out of
        the network (area when shrinking, bicubic when growing), so no full-size intermediate stack
        is kept.
        """
        n, h, w = y.shape
        target = size or (h * self.scale, w * self.scale)
        out = np.empty((n, *target), np.uint8)
        if self.backend == "opencv":
            self._opencv_y(y, out, target)
            return out
        for i in range(0, n, batch_size):
            x = y[i:i + batch_size, :, :, None].astype(np.float32) * np.float32(1 / 255)
            sr = np.clip(np.rint(self._runner(x)[..., 0] * 255.0), 0, 255).astype(np.uint8)
            out[i:i + batch_size] = _fit(sr, target)
        return out

    def _opencv_y(self, y: np.ndarray, out: np.ndarray, target: tuple[int, int]) -> None:
        """:meth:`upscale_y` with OpenCV: one image per network call, split over :meth:`in_threads`
        (parts of at least 64 images): the same pixels, ~1.2x the images/s of one call on OpenCV's own
        threads on 2 cores (1,229-1,314 vs 964-1,177 on 10,000 faces; a 48 px face is too small a call
        for them). Inside such a thread (OpenCV on one thread) it runs in the calling thread.
        """
        import cv2

        def run(up: Upscaler, rows: np.ndarray) -> None:
            for i in rows:
                out[i] = _fit(up._runner(y[i])[None], target)[0]

        self.in_threads(run, np.array_split(np.arange(len(y)), max(1, min(cv2.getNumThreads(), len(y) // 64))))

    def in_threads(self, fn: Callable[[Upscaler, Any], Any], parts: Sequence[Any]) -> list[Any]:
        """``fn(copy, part)`` for every part, in order, on as many threads as OpenCV may use
        (``cv2.getNumThreads()``: 1 in a Ray actor), each thread with its own copy of the network
        (:meth:`copies`) and OpenCV on one thread meanwhile (restored after); in the calling thread
        when that is one thread or one part.
        """
        import queue

        import cv2

        threads = cv2.getNumThreads()
        workers = min(threads, len(parts))
        if workers <= 1:
            return [fn(self, part) for part in parts]
        free: queue.SimpleQueue[Upscaler] = queue.SimpleQueue()
        for up in self.copies(workers):
            free.put(up)

        def run(part: Any) -> Any:
            mine = free.get()
            try:
                return fn(mine, part)
            finally:
                free.put(mine)

        cv2.setNumThreads(1)
        try:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                return list(pool.map(run, parts))
        finally:
            cv2.setNumThreads(threads)

    def upscale(self, images: np.ndarray | Sequence[np.ndarray], size: int | tuple[int, int] | None = None, *,
                resize: str = "post", allow_downscale: bool = False, batch_size: int = 32) -> np.ndarray | list[np.ndarray]:
        """Super-resolve images (see the module docstring for layouts, colour and sizes).

        Args:
            images: uint8 ``(N, H, W)`` / ``(N, H, W, 3)`` array or a list of ``(H, W)`` / ``(H, W, 3)`` arrays.
            size: target side (square) or ``(height, width)``; ``None``: ``scale`` times the input.
            resize: ``post`` (network, then resample) or ``pre`` (resample to target/scale, then network).
            allow_downscale: permit a target smaller than an input.
            batch_size: images per TF batch.

        Returns:
            A uint8 array ``(N, H', W'[, 3])`` when all outputs share a shape (always for an array
            input), else a list in input order.

        Raises:
            UsageError: for a bad dtype/shape, a bad ``resize`` or a target smaller than an input.

        Example:
            >>> Upscaler.load().upscale(np.zeros((1, 48, 48), np.uint8)).shape   # doctest: +SKIP
            (1, 192, 192)
        """
        if resize not in RESIZE_MODES:
            raise UsageError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
        target = _parse_size(size)
        items = _as_items(images)
        if isinstance(images, np.ndarray) and len(images):  # one stack, one shape: no regrouping copies
            return self._upscale_group(images, target, resize, allow_downscale, batch_size)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, im in enumerate(items):
            groups.setdefault(im.shape, []).append(i)
        results: list[np.ndarray | None] = [None] * len(items)
        for index in groups.values():
            out = self._upscale_group(np.stack([items[i] for i in index]), target, resize, allow_downscale, batch_size)
            for k, i in enumerate(index):
                results[i] = out[k]
        shapes = {r.shape for r in results if r is not None}
        if isinstance(images, np.ndarray) or len(shapes) == 1:
            if not results:
                return np.zeros((0, 0, 0), np.uint8)
            return np.stack(results)  # type: ignore[arg-type]
        return results  # type: ignore[return-value]

    def _upscale_group(self, batch: np.ndarray, target: tuple[int, int] | None, resize: str, allow_downscale: bool,
                       batch_size: int) -> np.ndarray:
        import cv2

        h, w = batch.shape[1:3]
        if target is not None and (target[0] < h or target[1] < w) and not allow_downscale:
            raise UsageError(f"target size {target[0]}x{target[1]} is smaller than an input of {h}x{w}; "
                             "pass allow_downscale=True (--allow-downscale) to shrink")
        s = self.scale
        if target is not None and resize == "pre":
            pre = (-(-target[0] // s), -(-target[1] // s))
            if pre != (h, w):
                batch = np.stack([cv2.resize(im, (pre[1], pre[0]), interpolation=cv2.INTER_CUBIC) for im in batch])
                h, w = pre
        if batch.ndim == 3:
            return self.upscale_y(batch, batch_size=batch_size, size=target)
        ycc = np.stack([cv2.cvtColor(im, cv2.COLOR_RGB2YCrCb) for im in batch])
        y = self.upscale_y(np.ascontiguousarray(ycc[..., 0]), batch_size=batch_size)
        chroma = np.stack([cv2.resize(im[..., 1:], (w * s, h * s), interpolation=cv2.INTER_CUBIC) for im in ycc])
        out = np.stack([cv2.cvtColor(np.dstack([yy, cc]), cv2.COLOR_YCrCb2RGB) for yy, cc in zip(y, chroma, strict=True)])
        return _fit(out, target) if target is not None else out


def _fit(images: np.ndarray, target: tuple[int, int]) -> np.ndarray:
    """Resample a uint8 stack to ``target`` (height, width): area when shrinking, bicubic when growing."""
    import cv2

    if images.shape[1:3] == tuple(target):
        return images
    shrink = target[0] < images.shape[1] or target[1] < images.shape[2]
    flag = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    out = np.empty((len(images), *target, *images.shape[3:]), np.uint8)
    for k, im in enumerate(images):
        out[k] = cv2.resize(im, (target[1], target[0]), interpolation=flag)
    return out


def _parse_size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        pair = (int(size), int(size))
    elif isinstance(size, (tuple, list)) and len(size) == 2:
        pair = (int(size[0]), int(size[1]))
    else:
        raise UsageError(f"size must be an integer side or a (height, width) pair, got {size!r}")
    if min(pair) < 1:
        raise UsageError(f"size must be positive, got {size!r}")
    return pair


def _as_items(images: Any) -> list[np.ndarray]:
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise UsageError(f"images must be uint8, got {images.dtype}")
        if images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3):
            return list(images)
        raise UsageError(f"an image array must be (N, H, W) or (N, H, W, 3), got shape {images.shape}")
    if not isinstance(images, (list, tuple)):
        raise UsageError(f"images must be a uint8 array or a list of arrays, got {type(images).__name__}")
    items = []
    for i, im in enumerate(images):
        im = np.asarray(im)
        if im.dtype != np.uint8:
            raise UsageError(f"image {i} must be uint8, got {im.dtype}")
        if not (im.ndim == 2 or (im.ndim == 3 and im.shape[-1] == 3)):
            raise UsageError(f"image {i} must be (H, W) or (H, W, 3), got shape {im.shape}")
        items.append(im)
    return items


def _opencv_runner(path: Path, name: str, scale: int, algorithm: str | None) -> Callable[[np.ndarray], np.ndarray]:
    import cv2

    algo = algorithm or next((a for a in _ALGORITHMS if a in path.name.lower()), "espcn")
    if algo not in _ALGORITHMS:
        raise UsageError(f"algorithm must be one of {', '.join(_ALGORITHMS)}, got {algo!r}")
    sr = cv2.dnn_superres.DnnSuperResImpl_create()
    try:
        sr.readModel(str(path))
    except cv2.error as e:
        raise UsageError(f"model {name} is not a graph OpenCV can read: {str(e).strip().splitlines()[-1]}") from e
    sr.setModel(algo, scale)

    def run(image: np.ndarray) -> np.ndarray:
        return sr.upsample(np.ascontiguousarray(image))

    return run
