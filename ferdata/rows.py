"""The row protocol: how a per-image step reads, changes and rejects rows.

Every step that looks at pixels (quality, crop/align/normalize/clahe, upscale, dedupe's hashing)
runs through :func:`map_rows`, which owns the machinery a step would otherwise write again:

* the ``image`` column is handed over undecoded (``{"bytes", "path"}``) and read by one reader,
  :func:`read_pixels` (OpenCV for the plain PNGs ferdata writes, Pillow for anything else);
* a row that cannot be used goes to the rejects ledger: the step raises :class:`RowRejected` (or the
  reader raises :class:`ferdata.images.ImageRejected`) and the helper writes ``_reject_reason`` /
  ``_reject_details`` with one vocabulary (the image reasons of :data:`ferdata.columns.IMAGE_REASONS`,
  details ``{"error": ...}``), then :func:`ferdata.dataset.partition_rejects` moves it out;
* a step that makes new pixels gets new ids and lineage (:func:`ferdata.dataset.lineage_ids`);
* the work runs through the engine's ``map_batches`` (local ``Dataset.map`` or Ray Data), so a step
  never knows which engine runs it.

``--limit`` is not a step's business: :func:`ferdata.steps.run_step` cuts the input before the step
sees it. A per-image step is then a function of one image plus its config::

    def score(pixels, row, *, config):            # -> the row's new columns
        return {"sharpness_score": float(np.std(pixels))}

    dd, rejects = map_images(data, score, step="sharpness", fn_kwargs={"config": config},
                             columns={"sharpness_score": datasets.Value("float32")})
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ferdata.columns import IMAGE, PARENT_ID, REJECT_DETAILS, REJECT_REASON, ROOT_ID
from ferdata.images import ImageRejected

if TYPE_CHECKING:
    import datasets


class RowRejected(Exception):
    """Raised by a per-image function: the row goes to the ledger with ``reason`` and ``details``."""

    def __init__(self, reason: str, details: Mapping[str, Any] | str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details


def image_bytes(value: Any) -> bytes:
    """The encoded bytes of an undecoded image value (``{"bytes", "path"}`` or raw bytes).

    Raises:
        ImageRejected: ``not_an_image`` for anything else (a missing image included).
    """
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, dict):
        data = value.get("bytes")
        if data is None and value.get("path"):
            with open(value["path"], "rb") as f:
                data = f.read()
        return data or b""
    raise ImageRejected("not_an_image", "no image" if value is None else f"unexpected image value {type(value).__name__}")


def read_pixels(value: Any) -> np.ndarray:
    """The uint8 gray or RGB pixels of an image value: the one image reader of every step.

    Plain 8-bit PNGs (what ferdata writes) are decoded by OpenCV, anything else by Pillow through
    :func:`ferdata.images.decode_image`; both give the same pixels.

    Raises:
        ImageRejected: when the value cannot be decoded (its ``reason`` is the ledger's).
    """
    from ferdata.images import decode_image, decode_plain_png

    if isinstance(value, np.ndarray):
        return value
    if value is not None and not isinstance(value, (dict, bytes, bytearray)):  # a decoded PIL image
        from ferdata.images import to_array

        return to_array(value)
    data = image_bytes(value)
    pixels = decode_plain_png(data)
    return pixels if pixels is not None else decode_image(data)[0]


def reject_marks(error: Exception, **context: Any) -> tuple[str, str]:
    """``(_reject_reason, _reject_details)`` of a row that raised ``error`` (one vocabulary for all steps)."""
    if isinstance(error, RowRejected):
        details = error.details if isinstance(error.details, Mapping) else {"error": error.details or ""}
    else:  # ImageRejected
        details = {"error": getattr(error, "details", str(error))}
    return error.reason, json.dumps({**details, **context}, sort_keys=True)


def map_rows(
    dd: datasets.DatasetDict,
    fn: Callable[..., dict[str, list[Any]]],
    *,
    step: str,
    columns: Mapping[str, Any] | None = None,
    new_images: bool = False,
    whole_rows: bool = False,
    input_columns: Sequence[str] | None = None,
    drop: Sequence[str] = (),
    batch_size: int = 256,
    num_proc: int = 1,
    stateful: bool = False,
    fn_kwargs: Mapping[str, Any] | None = None,
    desc: str | None = None,
    **map_kwargs: Any,
) -> tuple[datasets.DatasetDict, list[dict[str, Any]]]:
    """Run a batch function over every split and move the rows it marks to ledger rows.

    Args:
        dd: the step's input.
        fn: ``fn(batch, **fn_kwargs)`` (or ``fn(*input_columns, **fn_kwargs)``) over a batch whose
            ``image`` is undecoded. It returns the new columns of the same rows, or, with
            ``new_images``, the complete output rows (as many as it likes, with ``image`` values
            ``{"bytes", "path"}`` and their lineage) with ``whole_rows``. Either way with ``_reject_reason`` (``""`` to keep)
            and ``_reject_details``.
        step: the step name written in the ledger.
        columns: features of the columns ``fn`` adds.
        new_images: ``fn`` rewrites the images (and ``id``): the lineage columns are declared.
        whole_rows: ``fn`` returns whole rows, which replace the input rows (they may multiply).
        input_columns: the columns ``fn`` receives as positional lists instead of the batch dict.
        drop: input columns removed before mapping (e.g. stale results of an earlier run).
        batch_size, num_proc, stateful, desc: as for :func:`ferdata.engines.map_batches`
            (``stateful``: ``fn`` holds a model; Ray runs it in an actor pool); other keywords go
            to ``Dataset.map`` (e.g. ``cache_file_name``).

    Returns:
        The kept rows (internal columns removed, ``image`` decoded again) and the ledger rows.
    """
    import datasets

    from ferdata.dataset import lineage_features, partition_rejects
    from ferdata.engines import map_batches

    result = {}
    for split, ds in dd.items():
        has_image = IMAGE in ds.column_names
        raw = ds.cast_column(IMAGE, datasets.Image(decode=False)) if has_image else ds
        stale = [c for c in drop if c in raw.column_names]
        if stale:
            raw = raw.remove_columns(stale)
        features = raw.features.copy()
        features.update(columns or {})
        if new_images:
            features = lineage_features(features)
        features[REJECT_REASON] = datasets.Value("string")
        features[REJECT_DETAILS] = datasets.Value("string")
        mapped = map_batches(raw, fn, stateful=stateful, batched=True, batch_size=batch_size, features=features,
                             input_columns=list(input_columns) if input_columns else None,
                             remove_columns=raw.column_names if whole_rows else None, fn_kwargs=dict(fn_kwargs or {}),
                             num_proc=num_proc if num_proc > 1 and len(raw) > 1 else None,
                             desc=f"{desc or step} {split}", **map_kwargs)
        result[split] = mapped.cast_column(IMAGE, datasets.Image()) if has_image else mapped
    return partition_rejects(datasets.DatasetDict(result), step)


class _EachImage:
    """A batch function that calls a per-image function row by row (see :func:`map_images`)."""

    def __init__(self, fn: Callable[..., Any], names: Sequence[str], new_images: bool, context: Mapping[str, Any],
                 input_columns: Sequence[str] | None = None) -> None:
        self.fn, self.names, self.new_images, self.context = fn, list(names), new_images, dict(context)
        self.input_columns = list(input_columns or [])

    def __call__(self, *columns: Any, **kwargs: Any) -> dict[str, list[Any]]:
        batch = dict(zip(self.input_columns, columns, strict=True)) if self.input_columns else columns[0]
        if self.new_images:
            return self._rows(batch, kwargs)
        out: dict[str, list[Any]] = {name: [] for name in [*self.names, REJECT_REASON, REJECT_DETAILS]}
        for i in range(len(batch[IMAGE])):
            row = {k: v[i] for k, v in batch.items()}
            try:
                values, reason, details = self.fn(read_pixels(row[IMAGE]), row, **kwargs), "", ""
            except (RowRejected, ImageRejected) as e:
                values, (reason, details) = {}, reject_marks(e, **self.context)
            for name in self.names:
                out[name].append(values.get(name))
            out[REJECT_REASON].append(reason)
            out[REJECT_DETAILS].append(details)
        return out

    def _rows(self, batch: dict[str, list[Any]], kwargs: dict[str, Any]) -> dict[str, list[Any]]:
        from ferdata.dataset import lineage_ids
        from ferdata.images import encode_png, pixel_id

        names = [*batch, *self.names, PARENT_ID, ROOT_ID, REJECT_REASON, REJECT_DETAILS]
        out: dict[str, list[Any]] = {name: [] for name in dict.fromkeys(names)}
        empty = dict.fromkeys(self.names)
        for i in range(len(batch[IMAGE])):
            row = {k: v[i] for k, v in batch.items()}
            try:
                made = self.fn(read_pixels(row[IMAGE]), row, **kwargs)
                marks = {REJECT_REASON: "", REJECT_DETAILS: ""}
            except (RowRejected, ImageRejected) as e:
                reason, details = reject_marks(e, **self.context)
                made, marks = [], {REJECT_REASON: reason, REJECT_DETAILS: details}
                new_rows = [{**empty, **row, IMAGE: None, **lineage_ids(row.get("id"), row), **marks}]
            if made:
                new_rows = [{**empty, **row, **cols, IMAGE: {"bytes": encode_png(px), "path": None},
                             **lineage_ids(pixel_id(px), row), **marks} for px, cols in made]
            for new in new_rows:
                for name in out:
                    out[name].append(new.get(name))
        return out


def map_images(
    dd: datasets.DatasetDict,
    fn: Callable[..., Any],
    *,
    step: str,
    columns: Mapping[str, Any] | None = None,
    new_images: bool = False,
    context: Mapping[str, Any] | None = None,
    **map_kwargs: Any,
) -> tuple[datasets.DatasetDict, list[dict[str, Any]]]:
    """Run a per-image function over every row: the usual shape of a per-image step.

    ``fn(pixels, row, **fn_kwargs)`` gets the decoded pixels and the row (``image`` undecoded) and
    returns the row's new columns (a dict), or, with ``new_images``, a list of ``(pixels, columns)``
    (one output row each: a face crop per face). It raises :class:`RowRejected` to send the row to
    the ledger; an undecodable image goes there by itself. ``context`` is added to every rejected
    row's details (e.g. ``{"before": "hashing"}``). With ``input_columns`` (``image`` among them)
    the row holds only those columns (faster: the others are not read). Other keywords as for
    :func:`map_rows`.

    Example:
        >>> dd, rejects = map_images(data, lambda px, row: {"mean": float(px.mean())}, step="mean",
        ...                          columns={"mean": datasets.Value("float32")})  # doctest: +SKIP
    """
    runner = _EachImage(fn, list(columns or {}), new_images, context or {}, map_kwargs.get("input_columns"))
    return map_rows(dd, runner, step=step, columns=columns, new_images=new_images, whole_rows=new_images,
                    **map_kwargs)
