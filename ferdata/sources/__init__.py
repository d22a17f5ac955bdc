"""Importers: turn a source on disk (a CSV, class folders, AffectNet, a saved HF dataset) into a
dataset in the core schema. Each is a registered *source* step and a ``ferdata import`` command.

Importers stream: rows are produced by a generator and written by ``Dataset.from_generator`` into
a scratch cache, so memory stays bounded whatever the size of the source. A row that cannot be
used (undecodable image, malformed CSV row, unknown label) is written with ``_reject_reason`` set
and moved to the rejects ledger; the import goes on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferdata.errors import InputNotFound
from ferdata.images import ImageRejected, decode_image, encode_png, pixel_id

if TYPE_CHECKING:
    import datasets

SPLIT_COLUMN = "_split"
#: Split folder / CSV usage names -> ferdata split names.
SPLIT_NAMES = {
    "train": "train", "training": "train",
    "val": "validation", "valid": "validation", "validation": "validation", "publictest": "validation",
    "test": "test", "testing": "test", "privatetest": "test",
}
#: Image formats kept byte-for-byte when no conversion is needed; others are re-encoded as PNG.
_KEEP_FORMATS = (b"\x89PNG", b"\xff\xd8\xff")


def check_input(path: str | Path, *, kind: str = "path", is_dir: bool | None = None) -> Path:
    """Check an input path exists (and is a dir/file); errors name it.

    Raises:
        InputNotFound: when missing, of the wrong kind or unreadable.
    """
    path = Path(path)
    if not path.exists():
        raise InputNotFound(f"{kind} not found: {path}")
    if is_dir is True and not path.is_dir():
        raise InputNotFound(f"{kind} must be a directory: {path}")
    if is_dir is False and not path.is_file():
        raise InputNotFound(f"{kind} must be a file: {path}")
    if not os.access(path, os.R_OK):
        raise InputNotFound(f"{kind} is not readable: {path}")
    return path


def row_features(label_names: Sequence[str]) -> datasets.Features:
    """Core features plus the internal split and reject columns an importer writes."""
    import datasets

    from ferdata.dataset import REJECT_DETAILS, REJECT_REASON, core_features, lineage_features

    features = lineage_features(core_features(label_names))
    features[SPLIT_COLUMN] = datasets.Value("string")
    features[REJECT_REASON] = datasets.Value("string")
    features[REJECT_DETAILS] = datasets.Value("string")
    return features


def reject_row(reason: str, details: str, *, origin: str, source: str, split: str, id: str = "") -> dict[str, Any]:
    """A row that goes to the rejects ledger."""
    from ferdata.dataset import REJECT_DETAILS, REJECT_REASON, lineage_ids

    return {"image": None, "label": -1, **lineage_ids(id), "source": source, "origin": origin, SPLIT_COLUMN: split,
            REJECT_REASON: reason, REJECT_DETAILS: details}


def pixels_row(pixels: Any, label: int, *, origin: str, source: str, split: str, data: bytes | None = None) -> dict[str, Any]:
    """A good row from decoded pixels (``data``: original bytes to keep, else PNG-encoded); it enters
    the dataset here, so its ``root_id`` is its ``id``."""
    from ferdata.dataset import REJECT_DETAILS, REJECT_REASON, lineage_ids

    return {"image": {"bytes": data if data is not None else encode_png(pixels), "path": None}, "label": label,
            **lineage_ids(pixel_id(pixels)), "source": source, "origin": origin, SPLIT_COLUMN: split,
            REJECT_REASON: "", REJECT_DETAILS: ""}


def file_row(data: bytes, label: int, *, origin: str, source: str, split: str) -> dict[str, Any]:
    """A row from an image file's bytes: decoded, validated, converted if needed."""
    try:
        pixels, note = decode_image(data)
    except ImageRejected as e:
        return reject_row(e.reason, e.details, origin=origin, source=source, split=split)
    keep = not note and data.startswith(_KEEP_FORMATS)
    return pixels_row(pixels, label, origin=origin, source=source, split=split, data=data if keep else None)


def rows_to_dataset(
    generator: Callable[..., Iterator[dict[str, Any]]],
    gen_kwargs: dict[str, Any],
    label_names: Sequence[str],
    *,
    cache_dir: Path,
    num_proc: int = 1,
    step: str,
    extra_features: dict[str, Any] | None = None,
) -> tuple[datasets.DatasetDict, list[dict[str, str]]]:
    """Write generated rows to Arrow, split them by ``_split`` and move rejects to the ledger.

    List-valued ``gen_kwargs`` are sharded over ``num_proc`` processes by ``datasets``.
    ``extra_features`` declares source-specific columns the rows carry (e.g. FER+ votes).
    """
    import datasets

    from ferdata.dataset import column_values, partition_rejects

    features = row_features(label_names)
    features.update(extra_features or {})
    ds = datasets.Dataset.from_generator(
        generator,
        gen_kwargs=gen_kwargs,
        features=features,
        cache_dir=str(cache_dir),
        num_proc=num_proc if num_proc > 1 else None,
        # fresh scratch cache per run: never reuse rows from an earlier import of a changed file
        fingerprint=os.urandom(8).hex(),
    )
    splits_present = sorted(set(column_values(ds, SPLIT_COLUMN)), key=_split_order)
    parts = {}
    for split in splits_present:
        part = ds.filter(lambda s, name=split: [v == name for v in s], input_columns=[SPLIT_COLUMN], batched=True,
                         batch_size=10_000)
        parts[split] = part.remove_columns([SPLIT_COLUMN])
    return partition_rejects(datasets.DatasetDict(parts), step)


def _split_order(name: str) -> tuple[int, str]:
    order = {"train": 0, "validation": 1, "test": 2}
    return (order.get(name, 3), name)
