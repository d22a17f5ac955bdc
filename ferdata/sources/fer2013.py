"""Import the Kaggle ``fer2013.csv`` (``emotion,pixels,Usage``).

Labels use the official FER2013 codes (0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise,
6 neutral: ``manifests/labels.yaml`` ``sources.fer2013``), stored under the canonical
alphabetical class names. ``Usage`` maps Training -> ``train``, PublicTest -> ``validation``,
PrivateTest -> ``test``; a CSV without a Usage column goes to ``train``.

Malformed rows never stop the import; each goes to the ledger with its line number in ``origin``
(``fer2013.csv#L17``) and a reason: ``empty_line``, ``wrong_column_count``, ``bad_label``
(non-numeric), ``unknown_code``, ``wrong_pixel_count``, ``bad_pixels`` (non-numeric or outside
0..255), ``unknown_usage``.
"""

from __future__ import annotations

import csv
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ferdata.errors import UsageError
from ferdata.labels import GROUPINGS, LabelMaps
from ferdata.sources import SPLIT_NAMES, check_input, pixels_row, reject_row, rows_to_dataset
from ferdata.steps import StepContext, StepOutput, register_step

SOURCE = "fer2013"


@dataclass
class Fer2013Config:
    """Options of the FER2013 CSV importer."""

    csv: str = ""
    #: side of the square images in the CSV (FER2013: 48)
    image_size: int = 48
    #: class grouping applied after import (paper 003): 7 keeps the canonical classes
    classes: int = 7

    def __post_init__(self) -> None:
        if not self.csv:
            raise UsageError("import_fer2013 needs csv: the path of a fer2013.csv file")
        if self.image_size < 1:
            raise UsageError(f"image_size must be a positive number of pixels, got {self.image_size}")
        if self.classes not in GROUPINGS:
            raise UsageError(f"classes must be one of {', '.join(map(str, GROUPINGS))}, got {self.classes}")


def _parse_pixels(text: str, count: int) -> np.ndarray | str:
    """Parse space-separated pixels; return the uint8 array or a reject reason."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            values = np.fromstring(text, dtype=np.int32, sep=" ")
        except (ValueError, DeprecationWarning):
            return "bad_pixels"
    if values.size != count:
        return "wrong_pixel_count"
    if values.min() < 0 or values.max() > 255:
        return "bad_pixels"
    return values.astype(np.uint8)


def _columns(path: str) -> tuple[int, int, int | None, int]:
    """Indices of emotion, pixels and Usage in the header, and the column count.

    Raises:
        UsageError: when the header does not name emotion and pixels.
    """
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        header = [h.strip().lower() for h in next(csv.reader(f), [])]
    if "emotion" not in header or "pixels" not in header:
        raise UsageError(f"{path} is not a FER2013 CSV: the header must name emotion and pixels (and Usage); "
                         f"found {','.join(header) or '(empty file)'}")
    return header.index("emotion"), header.index("pixels"), header.index("usage") if "usage" in header else None, \
        len(header)


def generate_rows(path: str, image_size: int, limit: int | None) -> Iterator[dict[str, Any]]:
    """Yield one row (good or reject) per data line of the CSV."""
    maps = LabelMaps.load()
    names = maps.canonical
    codes = {code: names.index(name) for code, name in maps.sources[SOURCE].items()}
    count = image_size * image_size
    name = Path(path).name
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    i_emotion, i_pixels, i_usage, n_columns = _columns(path)
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f)
        next(reader, None)
        made = 0
        for row in reader:
            if limit is not None and made >= limit:
                break
            made += 1
            origin = f"{name}#L{reader.line_num}"
            usage = row[i_usage].strip() if i_usage is not None and len(row) > i_usage else "Training"
            split = SPLIT_NAMES.get(usage.lower(), "train")

            def bad(reason: str, details: str, origin: str = origin, split: str = split) -> dict[str, Any]:
                return reject_row(reason, details, origin=origin, source=SOURCE, split=split)

            if not row or all(not c.strip() for c in row):
                yield bad("empty_line", "")
                continue
            if len(row) != n_columns:
                yield bad("wrong_column_count", f"{len(row)} columns, expected {n_columns}")
                continue
            if i_usage is not None and usage.lower() not in SPLIT_NAMES:
                yield bad("unknown_usage", f"Usage {usage!r}; known: Training, PublicTest, PrivateTest")
                continue
            try:
                code = int(row[i_emotion].strip())
            except ValueError:
                yield bad("bad_label", f"emotion {row[i_emotion]!r} is not a number")
                continue
            if code not in codes:
                yield bad("unknown_code", f"emotion code {code}; known: {sorted(codes)}")
                continue
            pixels = _parse_pixels(row[i_pixels], count)
            if isinstance(pixels, str):
                yield bad(pixels, f"expected {count} integers 0..255")
                continue
            yield pixels_row(pixels.reshape(image_size, image_size), codes[code], origin=origin, source=SOURCE,
                             split=split)


@register_step("import_fer2013", Fer2013Config, source=True)
def import_fer2013(data: None, config: Fer2013Config, ctx: StepContext) -> StepOutput:
    """Import a Kaggle fer2013.csv (emotion,pixels,Usage) with the official label codes."""
    from ferdata.labels_step import apply_grouping

    path = check_input(config.csv, kind="CSV file", is_dir=False)
    _columns(str(path))
    gen_kwargs = {"path": str(path), "image_size": config.image_size, "limit": ctx.limit}
    dd, rejects = rows_to_dataset(generate_rows, gen_kwargs, LabelMaps.load().canonical,
                                  cache_dir=ctx.scratch(), step="import_fer2013")
    if config.classes != 7:
        dd, more = apply_grouping(dd, config.classes, step="import_fer2013")
        rejects += more
    return StepOutput(dd, rejects, info={"source": str(path)})
