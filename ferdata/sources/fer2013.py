"""Import the Kaggle ``fer2013.csv`` (``emotion,pixels,Usage``), optionally with FER+ votes.

Labels use the official FER2013 codes (0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise,
6 neutral: ``manifests/labels.yaml`` ``sources.fer2013``), stored under the canonical
alphabetical class names. ``Usage`` maps Training -> ``train``, PublicTest -> ``validation``,
PrivateTest -> ``test``; a CSV without a Usage column goes to ``train``. A UTF-8 byte-order mark
(Excel writes one) is accepted; a file without data rows, or one holding binary data, is a usage
error (exit 2) that never echoes the file's bytes.

Malformed rows never stop the import; each goes to the ledger with its line number in ``origin``
(``fer2013.csv#L17``) and a reason: ``empty_line``, ``wrong_column_count``, ``bad_label``
(non-numeric), ``unknown_code``, ``wrong_pixel_count``, ``bad_pixels`` (non-numeric or outside
0..255), ``unknown_usage``.

**FER+** (Barsoum et al. 2016, arXiv 1608.01041): ``ferplus=fer2013new.csv`` reads the votes of
the 10 crowd annotators (``Usage, Image name, neutral, happiness, surprise, sadness, anger,
disgust, fear, contempt, unknown, NF``), aligned row by row with the FER2013 CSV (a different row
count, or a row whose Usage differs, is one usage error before any work). Every row then carries
``ferplus_votes`` (the 10 raw counts, in that order) and ``label_fer2013`` (the original label);
``label_source`` chooses which one ``label`` is:

* ``ferplus`` (the default with FER+): the FER+ rule of ``ferplus_mode`` decides (see
  :func:`ferplus_label`). Rows it cannot label go to the ledger: ``ferplus_no_majority``,
  ``ferplus_tie``, ``ferplus_unknown`` (the winner is FER+'s "unknown"), ``ferplus_not_face`` (the
  winner is "NF", e.g. the rows FER+ dropped), ``ferplus_no_votes``, ``bad_ferplus_votes``.
  FER+ has an 8th class, contempt; it follows ``classes``: kept with 8, merged into negative with
  3, and to the ledger (``class_not_in_grouping``) with 7 or 6.
* ``fer2013``: ``label`` stays FER2013's; the votes are kept for comparison and soft labels.
"""

from __future__ import annotations

import codecs
import csv
import itertools
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ferdata.errors import UsageError
from ferdata.images import pixel_id
from ferdata.labels import GROUPINGS, LabelMaps
from ferdata.sources import SPLIT_NAMES, check_input, pixels_row, reject_row, rows_to_dataset
from ferdata.steps import StepContext, StepOutput, register_step

SOURCE = "fer2013"
#: The vote columns of FER+'s fer2013new.csv, in file order.
FERPLUS_VOTES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown",
                 "NF")
#: Canonical class name of the first 8 vote columns (unknown and NF are not classes).
FERPLUS_CLASSES = ("neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt")
FERPLUS_MODES = ("majority", "plurality", "probability")
LABEL_SOURCES = ("ferplus", "fer2013")
_UNKNOWN, _NF = 8, 9


@dataclass
class Fer2013Config:
    """Options of the FER2013 CSV importer."""

    csv: str = ""
    #: side of the square images in the CSV (FER2013: 48)
    image_size: int = 48
    #: class grouping applied after import (paper 003): 7 keeps the canonical classes; 8 (FER+ labels only) adds contempt
    classes: int = 7
    #: FER+ votes file aligned row by row with ``csv`` (fer2013new.csv); "" for none
    ferplus: str = ""
    #: which labels become ``label`` when ``ferplus`` is given: ferplus | fer2013
    label_source: str = "ferplus"
    #: FER+ rule turning votes into a label: majority | plurality | probability
    ferplus_mode: str = "majority"
    #: parameters that apply only when another is given (a card does not list them otherwise)
    APPLIES_WHEN: ClassVar[dict[str, str]] = {"label_source": "ferplus", "ferplus_mode": "ferplus"}

    def __post_init__(self) -> None:
        if not self.csv:
            raise UsageError("import_fer2013 needs csv: the path of a fer2013.csv file")
        if self.image_size < 1:
            raise UsageError(f"image_size must be a positive number of pixels, got {self.image_size}")
        if self.classes not in GROUPINGS:
            raise UsageError(f"classes must be one of {', '.join(map(str, GROUPINGS))}, got {self.classes}")
        if self.label_source not in LABEL_SOURCES:
            raise UsageError(f"label_source must be one of {', '.join(LABEL_SOURCES)}, got {self.label_source!r}")
        if self.ferplus_mode not in FERPLUS_MODES:
            raise UsageError(f"ferplus_mode must be one of {', '.join(FERPLUS_MODES)}, got {self.ferplus_mode!r}")
        if self.classes == 8 and not (self.ferplus and self.label_source == "ferplus"):
            raise UsageError("--classes 8 needs FER+ labels (--ferplus FILE --label-source ferplus): "
                             "FER2013 has no contempt class; allowed without FER+: 7, 6, 3")


# ---------------------------------------------------------------- FER+ rules (pure functions)

def ferplus_counts(votes: Sequence[int]) -> np.ndarray:
    """The 10 vote counts with FER+'s outlier removal: a class with a single vote gets 0.

    Example:
        >>> ferplus_counts([6, 1, 0, 0, 3, 0, 0, 0, 0, 0]).tolist()
        [6, 0, 0, 0, 3, 0, 0, 0, 0, 0]
    """
    v = np.asarray(votes, dtype=np.int64).copy()
    v[v <= 1] = 0
    return v


def ferplus_label(votes: Sequence[int], mode: str = "majority") -> tuple[int | None, str]:
    """The FER+ label of one row: an index into :data:`FERPLUS_CLASSES`, or None and a ledger reason.

    Single votes are outliers and are dropped first (:func:`ferplus_counts`). Then:

    * ``majority``: the top class needs more than half of the remaining votes;
    * ``plurality``: the top class needs more votes than any other (a tie is refused);
    * ``probability``: the paper's probabilistic target: the top classes (at most 3) are taken in
      vote order until they cover 75 % of the votes, stopping at unknown / NF; they must cover more
      than half of them. The label is the first of them (ties in FER+'s column order).

    A winner that is ``unknown`` or ``NF`` (not a face) is refused in every mode.

    Example:
        >>> ferplus_label([0, 0, 0, 0, 6, 0, 1, 0, 3, 0])
        (4, '')
        >>> ferplus_label([4, 0, 0, 0, 4, 0, 0, 0, 2, 0])
        (None, 'ferplus_no_majority')
        >>> ferplus_label([0, 0, 0, 0, 0, 0, 0, 0, 0, 10])
        (None, 'ferplus_not_face')
    """
    if mode not in FERPLUS_MODES:
        raise UsageError(f"unknown FER+ mode {mode!r}; allowed: {', '.join(FERPLUS_MODES)}")
    v = ferplus_counts(votes)
    total = int(v.sum())
    if total == 0:
        return None, "ferplus_no_votes"
    order = np.argsort(-v, kind="stable")
    top = int(order[0])
    if mode == "majority" and 2 * int(v[top]) <= total:
        return None, "ferplus_no_majority"
    if mode == "plurality" and len(order) > 1 and v[order[1]] == v[top]:
        return None, "ferplus_tie"
    if mode == "probability":
        covered, taken = 0, 0
        for i in order:
            if v[i] == 0 or taken == 3 or 4 * covered >= 3 * total or i >= _UNKNOWN:
                break
            covered += int(v[i])
            taken += 1
        if taken and 2 * covered <= total:
            return None, "ferplus_no_majority"
    if top == _UNKNOWN:
        return None, "ferplus_unknown"
    if top == _NF:
        return None, "ferplus_not_face"
    return top, ""


def ferplus_distribution(votes: Sequence[int], names: Sequence[str]) -> np.ndarray:
    """The FER+ vote distribution over the class names ``names`` (soft labels).

    Outlier votes are dropped, unknown and NF are ignored, and classes absent from ``names`` (e.g.
    contempt for a 7-class model) lose their votes; the result sums to 1 (all zeros when nothing
    is left).

    Example:
        >>> ferplus_distribution([6, 0, 0, 0, 4, 0, 0, 0, 0, 0], ["angry", "neutral"]).tolist()
        [0.4, 0.6]
    """
    v = ferplus_counts(votes)
    index = {name: i for i, name in enumerate(names)}
    out = np.zeros(len(names), dtype=np.float64)
    for i, name in enumerate(FERPLUS_CLASSES):
        if name in index:
            out[index[name]] += v[i]
    total = out.sum()
    return out / total if total > 0 else out


# ---------------------------------------------------------------- reading the files

def _printable(text: str, limit: int = 80) -> str:
    """``text`` with anything but printable ASCII replaced by ``?`` and cut to ``limit`` characters."""
    clean = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text)
    return clean if len(clean) <= limit else clean[:limit] + "..."


def _check_text(path: str, what: str) -> None:
    """Refuse a binary file before parsing it (the error never shows its bytes).

    Raises:
        UsageError: when the start of the file holds NUL bytes or is not UTF-8.
    """
    with _open_binary(path) as f:
        head = f.read(65536)
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        binary = b"\x00" in head
    except UnicodeDecodeError:
        binary = True
    if binary:
        raise UsageError(f"{path} is not a text CSV file (it holds binary data); {what}")


#: Compressed forms of the CSV read directly, streaming (users keep Kaggle's file compressed).
COMPRESSED_SUFFIXES = (".gz", ".zip")


def _open_binary(path: str) -> Any:
    """The CSV's bytes as a stream: plain, gzip (``.csv.gz``) or a ``.zip`` holding one CSV.

    Raises:
        UsageError: for a zip archive that does not hold exactly one ``.csv`` file.
    """
    import gzip
    import zipfile

    with open(path, "rb") as f:
        magic = f.read(4)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")
    if magic == b"PK\x03\x04":
        archive = zipfile.ZipFile(path)
        members = [n for n in archive.namelist() if n.lower().endswith(".csv") and not n.startswith("__MACOSX/")]
        if len(members) != 1:
            archive.close()
            raise UsageError(f"{path} is a zip archive with {len(members)} .csv files "
                             f"({', '.join(members[:5]) or 'none'}); allowed: a zip holding exactly one CSV")
        return archive.open(members[0])
    return open(path, "rb")


def open_csv(path: str) -> Any:
    """A FER2013-style CSV as text, whatever its packing (plain, ``.csv.gz``, ``.zip`` of one CSV)."""
    import io

    return io.TextIOWrapper(_open_binary(path), newline="", encoding="utf-8-sig", errors="replace")


def _blank(row: Sequence[str]) -> bool:
    return not row or all(not c.strip() for c in row)


def _columns(path: str) -> tuple[int, int, int | None, int]:
    """Indices of emotion, pixels and Usage in the header, and the column count.

    Raises:
        UsageError: for a binary file, a header that does not name emotion and pixels, or no data rows.
    """
    _check_text(path, "expected a FER2013 CSV: emotion,pixels,Usage")
    with open_csv(path) as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader, [])]
        if "emotion" not in header or "pixels" not in header:
            found = _printable(",".join(header)) or "(empty file)"
            raise UsageError(f"{path} is not a FER2013 CSV: the header must name emotion and pixels (and Usage); "
                             f"found {found}")
        if not any(not _blank(row) for row in reader):
            raise UsageError(f"{path} has no rows: only the header line is there (emotion,pixels,Usage); "
                             "nothing to import")
    return header.index("emotion"), header.index("pixels"), header.index("usage") if "usage" in header else None, \
        len(header)


def _parse_votes(cells: Sequence[str]) -> list[int] | None:
    """The vote counts in ``cells``, or None when one is not a whole number or is negative."""
    try:
        votes = [int(c.strip()) for c in cells]
    except ValueError:
        return None
    return votes if min(votes) >= 0 else None


def _vote_details(votes: Sequence[int], mode: str) -> str:
    """Ledger details of a row the FER+ rule refused: its votes and the mode."""
    return '{"votes": ' + str(list(votes)) + f', "mode": "{mode}"}}'


def read_ferplus(path: str) -> list[tuple[str, list[int] | None]]:
    """The rows of a FER+ ``fer2013new.csv``: (Usage, the 10 vote counts or None when malformed).

    Blank lines are skipped (they are not rows of either file).

    Raises:
        UsageError: for a binary file or a header without Usage and the 10 vote columns.

    Example:
        >>> read_ferplus("fer2013new.csv")[0]   # doctest: +SKIP
        ('Training', [4, 0, 0, 1, 3, 2, 0, 0, 0, 0])
    """
    _check_text(path, "expected FER+'s fer2013new.csv")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with open_csv(path) as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader, [])]
        wanted = ["usage", *[n.lower() for n in FERPLUS_VOTES]]
        missing = [n for n in wanted if n not in header]
        if missing:
            raise UsageError(f"{path} is not a FER+ votes file (fer2013new.csv): its header lacks "
                             f"{', '.join(missing)}; expected Usage, Image name, {', '.join(FERPLUS_VOTES)}")
        i_usage = header.index("usage")
        i_votes = [header.index(n.lower()) for n in FERPLUS_VOTES]
        rows: list[tuple[str, list[int] | None]] = []
        for row in reader:
            if _blank(row):
                continue
            usage = row[i_usage].strip() if len(row) > i_usage else ""
            rows.append((usage, _parse_votes([row[i] for i in i_votes]) if len(row) > max(i_votes) else None))
    return rows


def _usages(path: str, i_usage: int | None) -> list[str]:
    """The Usage of every non-blank data row of the FER2013 CSV (one streaming pass)."""
    out = []
    with open_csv(path) as f:
        reader = csv.reader(f)
        next(reader, None)
        for row in reader:
            if _blank(row):
                continue
            out.append(row[i_usage].strip() if i_usage is not None and len(row) > i_usage else "Training")
    return out


def check_alignment(fer_csv: str, ferplus: Sequence[tuple[str, list[int] | None]], ferplus_path: str) -> None:
    """Refuse a FER+ file that is not aligned row by row with the FER2013 CSV.

    Raises:
        UsageError: for a different number of rows or the first row whose Usage differs.
    """
    _, _, i_usage, _ = _columns(fer_csv)
    usages = _usages(fer_csv, i_usage)
    if len(usages) != len(ferplus):
        raise UsageError(f"--ferplus {ferplus_path} has {len(ferplus)} rows but {fer_csv} has {len(usages)}: "
                         "the FER+ file must be aligned row by row with the FER2013 CSV (fer2013new.csv goes "
                         "with the full fer2013.csv)")
    if i_usage is None:
        return
    for n, (a, (b, _)) in enumerate(zip(usages, ferplus, strict=True), start=1):
        if a.lower() != b.lower():
            raise UsageError(f"--ferplus {ferplus_path} is not aligned with {fer_csv}: data row {n} has Usage "
                             f"{_printable(a)!r} in the CSV and {_printable(b)!r} in the FER+ file")


# ---------------------------------------------------------------- rows

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


@dataclass
class _RowParser:
    """The checks of one FER2013 CSV row: a dataset row, or a ledger row naming what is wrong."""

    image_size: int
    columns: tuple[int, int, int | None, int]
    codes: dict[int, int]
    ferplus: bool
    use_ferplus_label: bool
    ferplus_mode: str
    label_names: list[str]

    def parse(self, row: list[str], *, origin: str, usage: str, split: str, extra: dict[str, Any],
              data_row: int) -> dict[str, Any]:
        """The row to yield for ``row`` (``extra``: its FER+ columns, filled in here)."""
        i_emotion, i_pixels, i_usage, n_columns = self.columns
        count = self.image_size * self.image_size

        def bad(reason: str, details: str, id: str = "") -> dict[str, Any]:
            return {**reject_row(reason, details, origin=origin, source=SOURCE, split=split, id=id), **extra}

        if _blank(row):
            return bad("empty_line", "")
        if len(row) != n_columns:
            return bad("wrong_column_count", f"{len(row)} columns, expected {n_columns}")
        if i_usage is not None and usage.lower() not in SPLIT_NAMES:
            return bad("unknown_usage", f"Usage {_printable(usage)!r}; known: Training, PublicTest, PrivateTest")
        try:
            code = int(row[i_emotion].strip())
        except ValueError:
            return bad("bad_label", f"emotion {_printable(row[i_emotion])!r} is not a number")
        if code not in self.codes:
            return bad("unknown_code", f"emotion code {code}; known: {sorted(self.codes)}")
        pixels = _parse_pixels(row[i_pixels], count)
        if isinstance(pixels, str):
            return bad(pixels, f"expected {count} integers 0..255")
        pixels = pixels.reshape(self.image_size, self.image_size)
        label = self.codes[code]
        if self.ferplus:
            votes = extra["ferplus_votes"]
            extra["label_fer2013"] = label
            if votes is None and self.use_ferplus_label:
                return bad("bad_ferplus_votes", f"FER+ data row {data_row + 1}: expected 10 whole vote counts",
                           id=pixel_id(pixels))
            if votes is not None and self.use_ferplus_label:
                winner, reason = ferplus_label(votes, self.ferplus_mode)
                if winner is None:
                    return bad(reason, _vote_details(votes, self.ferplus_mode), id=pixel_id(pixels))
                label = self.label_names.index(FERPLUS_CLASSES[winner])
        return {**pixels_row(pixels, label, origin=origin, source=SOURCE, split=split), **extra}


def _skip_plain_lines(f: Any, rows: int) -> tuple[list[str], int, int]:
    """Skip up to ``rows`` rows of a CSV text stream without parsing them.

    A line without a double quote is one whole row (only a quoted cell can hold a line break), so
    it is skipped unparsed; the first line with a quote stops the skip and is handed back to be
    parsed. Returns that line (or none), the rows skipped and how many of them were not blank.
    """
    skipped = data = 0
    while skipped < rows:
        line = next(f, "")
        if not line:
            break
        if '"' in line:
            return [line], skipped, data
        skipped += 1
        data += 1 if line.replace(",", "").strip() else 0  # a blank row: only commas and spaces
    return [], skipped, data


def generate_rows(path: str, image_size: int, limit: int | None, ferplus: str = "", label_source: str = "fer2013",
                  ferplus_mode: str = "majority", ranges: list[tuple[int, int | None]] | None = None,
                  ) -> Iterator[dict[str, Any]]:
    """Yield one row (good or reject) per data line of the CSV (with FER+ columns when ``ferplus``).

    ``ranges`` (half-open ``[start, stop)`` indices of the CSV's rows after the header, ``stop``
    None for the end) restricts the rows yielded: a worker process of a parallel import parses
    only its own contiguous part (the rows before it are skipped unparsed where they are plain
    lines, see :func:`_skip_plain_lines`, and it stops after its part), so the parts concatenate
    in file order.
    """
    maps = LabelMaps.load()
    names = list(maps.canonical)
    codes = {code: names.index(name) for code, name in maps.sources[SOURCE].items()}
    use_ferplus_label = bool(ferplus) and label_source == "ferplus"
    label_names = maps.names_for({"contempt"}) if use_ferplus_label else names
    votes_rows = read_ferplus(ferplus) if ferplus else []
    name = Path(path).name
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    columns = _columns(path)
    i_usage = columns[2]
    parser = _RowParser(image_size, columns, codes, bool(ferplus), use_ferplus_label, ferplus_mode, label_names)
    stops = [b for _, b in ranges or []]
    stop = None if ranges is None or None in stops else max(b for b in stops if b is not None)
    with open_csv(path) as f:
        header = csv.reader(f)
        next(header, None)
        pending, skipped, data_rows = _skip_plain_lines(f, min(a for a, _ in ranges)) if ranges else ([], 0, 0)
        lines_before = header.line_num + skipped
        data_row = data_rows - 1  # index of the last data row read: FER+ votes align with the data rows
        reader = csv.reader(itertools.chain(pending, f))
        made = 0
        for index, row in enumerate(reader, start=skipped):
            if stop is not None and index >= stop:
                break
            if ranges is not None and not any(a <= index and (b is None or index < b) for a, b in ranges):
                data_row += 0 if _blank(row) else 1  # FER+ votes align with the data rows before this part too
                continue
            if limit is not None and made >= limit:
                break
            made += 1
            origin = f"{name}#L{lines_before + reader.line_num}"
            usage = row[i_usage].strip() if i_usage is not None and len(row) > i_usage else "Training"
            split = SPLIT_NAMES.get(usage.lower(), "train")
            extra: dict[str, Any] = {}
            if not _blank(row):
                data_row += 1
                if ferplus:
                    extra = {"ferplus_votes": votes_rows[data_row][1], "label_fer2013": -1}
            elif ferplus:
                extra = {"ferplus_votes": None, "label_fer2013": -1}
            yield parser.parse(row, origin=origin, usage=usage, split=split, extra=extra, data_row=data_row)


#: A parallel import gives each worker at least this many CSV rows (forking costs more on fewer).
MIN_ROWS_PER_WORKER = 4000


def _count_rows(path: str) -> int:
    """Rows of the CSV after the header (physical lines: FER2013 cells hold no line breaks)."""
    with _open_binary(path) as f:
        count = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 22), b""))
    return max(0, count - 1)


def _uncompressed_size(path: str) -> int | None:
    """Bytes of the CSV once decompressed, without decompressing it: the file's size, or a gzip
    file's trailer (ISIZE: exact for one member under 4 GiB); None for a zip or an implausible trailer."""
    with open(path, "rb") as f:
        magic = f.read(2)
        if magic != b"\x1f\x8b":
            return None if magic == b"PK" else os.path.getsize(path)
        f.seek(-4, os.SEEK_END)
        size = int.from_bytes(f.read(4), "little")
    return size if size >= os.path.getsize(path) else None


def _estimate_rows(path: str, head_bytes: int = 1 << 20) -> int:
    """About how many rows the CSV has after the header, from its uncompressed size and the mean length
    of its first lines (a file that fits in ``head_bytes``, or of unknown size, is counted).

    The parallel parts of an import only need to cover the file (the last one is open-ended), so an
    estimate costs at most some balance between the workers, never a row; it saves a decompressing
    pass over the file before they start (about 1 s on a gzipped FER2013).
    """
    size = _uncompressed_size(path)
    with _open_binary(path) as f:
        head = f.read(head_bytes)
    lines = head.split(b"\n")
    if size is None or len(head) < head_bytes or len(lines) < 3:
        return _count_rows(path)
    whole = lines[1:-1]  # the header first, a cut line last
    return max(1, round((size - len(lines[0]) - 1) * len(whole) / sum(len(x) + 1 for x in whole)))


def _workers(path: str, ctx: StepContext, rows: int | None = None) -> int:
    """Processes for the import: ``--num-proc``, fewer on a small file, 1 for a ``--limit`` trial
    (``rows``: the file's :func:`_estimate_rows`, when already estimated)."""
    if ctx.num_proc <= 1 or ctx.limit is not None:
        return 1
    rows = _estimate_rows(path) if rows is None else rows
    return max(1, min(ctx.num_proc, rows // MIN_ROWS_PER_WORKER))


def _row_ranges(rows: int, workers: int) -> list[tuple[int, int | None]]:
    """``workers`` contiguous ranges of about ``rows`` rows (the last one open-ended: nothing is lost
    when the estimate, or the line count, differs from the CSV's row count)."""
    bounds: list[int | None] = [rows * k // workers for k in range(workers)] + [None]
    return [(int(bounds[k] or 0), bounds[k + 1]) for k in range(workers)]


@register_step("import_fer2013", Fer2013Config, source=True)
def import_fer2013(data: None, config: Fer2013Config, ctx: StepContext) -> StepOutput:
    """Import a Kaggle fer2013.csv (emotion,pixels,Usage) with the official label codes, optionally FER+ votes."""
    import datasets

    from ferdata.labels.step import apply_grouping

    path = check_input(config.csv, kind="CSV file", is_dir=False)
    _columns(str(path))
    maps = LabelMaps.load()
    gen_kwargs: dict[str, Any] = {"path": str(path), "image_size": config.image_size, "limit": ctx.limit}
    names = list(maps.canonical)
    extra_features = None
    info: dict[str, Any] = {"source": str(path)}
    if config.ferplus:
        fp = check_input(config.ferplus, kind="FER+ votes file", is_dir=False)
        check_alignment(str(path), read_ferplus(str(fp)), str(fp))
        gen_kwargs.update(ferplus=str(fp), label_source=config.label_source, ferplus_mode=config.ferplus_mode)
        if config.label_source == "ferplus":
            names = maps.names_for({"contempt"})
        extra_features = {"ferplus_votes": datasets.Sequence(datasets.Value("int32"), length=len(FERPLUS_VOTES)),
                          "label_fer2013": datasets.ClassLabel(names=list(maps.canonical))}
        info.update(ferplus=str(fp), label_source=config.label_source, ferplus_mode=config.ferplus_mode,
                    ferplus_votes_order=list(FERPLUS_VOTES))
    rows = _estimate_rows(str(path)) if ctx.num_proc > 1 and ctx.limit is None else 0
    workers = _workers(str(path), ctx, rows)
    if workers > 1:
        gen_kwargs["ranges"] = _row_ranges(rows, workers)
    dd, rejects = rows_to_dataset(generate_rows, gen_kwargs, names, cache_dir=ctx.scratch(), step="import_fer2013",
                                  extra_features=extra_features, num_proc=workers)
    if ctx.limit is not None:  # a trial: the data lines not read are counted (recorded as limited_out)
        with open_csv(str(path)) as f:
            info["limited_out"] = max(0, sum(1 for _ in csv.reader(f)) - 1 - ctx.limit)
    if config.classes != 7 or len(names) != 7:
        dd, more = apply_grouping(dd, config.classes, step="import_fer2013")
        rejects += more
    return StepOutput(dd, rejects, info=info)


# ---------------------------------------------------------------- the FER+ folder layout

#: FER+'s folders (generate_training_data.py) -> ferdata split names.
FERPLUS_FOLDERS = {"FER2013Train": "train", "FER2013Valid": "validation", "FER2013Test": "test"}
FERPLUS_SOURCE = "ferplus"


@dataclass
class FerplusFolderConfig:
    """Options of the FER+ folder importer (``ROOT/FER2013Train/label.csv`` + PNGs, also Valid/Test)."""

    src: str = ""
    #: class grouping (paper 003); contempt is a class only with 8
    classes: int = 7
    #: FER+ rule turning votes into a label: majority | plurality | probability
    ferplus_mode: str = "majority"

    def __post_init__(self) -> None:
        if not self.src:
            raise UsageError("import_ferplus needs src: a folder with FER2013Train/label.csv (and Valid/Test)")
        if self.classes not in GROUPINGS:
            raise UsageError(f"classes must be one of {', '.join(map(str, GROUPINGS))}, got {self.classes}")
        if self.ferplus_mode not in FERPLUS_MODES:
            raise UsageError(f"ferplus_mode must be one of {', '.join(FERPLUS_MODES)}, got {self.ferplus_mode!r}")


def ferplus_folder_rows(root: str, ferplus_mode: str, limit: int | None) -> Iterator[dict[str, Any]]:
    """One row per line of every ``label.csv``: ``name,"(x, y, w, h)",<10 votes>`` (no header)."""
    from ferdata.sources import file_row

    names = LabelMaps.load().names_for({"contempt"})
    made = 0
    for folder, split in FERPLUS_FOLDERS.items():
        label_file = Path(root) / folder / "label.csv"
        if not label_file.is_file():
            continue
        _check_text(str(label_file), "expected FER+'s label.csv: image name, face box, 10 vote counts")
        with open_csv(str(label_file)) as f:
            for line_no, row in enumerate(csv.reader(f), start=1):
                if limit is not None and made >= limit:
                    return
                if _blank(row):
                    continue
                made += 1
                origin = f"{folder}/label.csv#L{line_no}"

                def bad(reason: str, details: str, origin: str = origin, split: str = split,
                        votes: list[int] | None = None) -> dict[str, Any]:
                    return {**reject_row(reason, details, origin=origin, source=FERPLUS_SOURCE, split=split),
                            "ferplus_votes": votes}

                votes = _parse_votes(row[-len(FERPLUS_VOTES):]) if len(row) > len(FERPLUS_VOTES) else None
                if votes is None:
                    yield bad("bad_ferplus_votes", f"expected name, box and {len(FERPLUS_VOTES)} whole vote counts")
                    continue
                image = Path(root) / folder / row[0].strip()
                if not row[0].strip() or not image.is_file():
                    yield bad("missing_file", f"{_printable(row[0].strip())!r} not found in {folder}", votes=votes)
                    continue
                winner, reason = ferplus_label(votes, ferplus_mode)
                if winner is None:
                    yield bad(reason, _vote_details(votes, ferplus_mode), votes=votes)
                    continue
                out = file_row(image.read_bytes(), names.index(FERPLUS_CLASSES[winner]),
                               origin=f"{folder}/{row[0].strip()}", source=FERPLUS_SOURCE, split=split)
                yield {**out, "ferplus_votes": votes}


@register_step("import_ferplus", FerplusFolderConfig, source=True)
def import_ferplus(data: None, config: FerplusFolderConfig, ctx: StepContext) -> StepOutput:
    """Import FER+'s folder layout: FER2013Train|Valid|Test/label.csv + PNGs, labels by the FER+ rule."""
    import datasets

    from ferdata.labels.step import apply_grouping

    root = check_input(config.src, kind="FER+ folder", is_dir=True)
    present = [f for f in FERPLUS_FOLDERS if (root / f / "label.csv").is_file()]
    if not present:
        raise UsageError(f"{root} holds no FER+ label file: expected {', '.join(f + '/label.csv' for f in FERPLUS_FOLDERS)}")
    names = LabelMaps.load().names_for({"contempt"})
    extra = {"ferplus_votes": datasets.Sequence(datasets.Value("int32"), length=len(FERPLUS_VOTES))}
    dd, rejects = rows_to_dataset(ferplus_folder_rows, {"root": str(root), "ferplus_mode": config.ferplus_mode,
                                                        "limit": ctx.limit},
                                  names, cache_dir=ctx.scratch(), step="import_ferplus", extra_features=extra)
    dd, more = apply_grouping(dd, config.classes, step="import_ferplus")
    return StepOutput(dd, rejects + more, info={"source": str(root), "folders": present,
                                                "ferplus_mode": config.ferplus_mode,
                                                "ferplus_votes_order": list(FERPLUS_VOTES)})
