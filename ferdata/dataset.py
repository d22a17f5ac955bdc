"""Dataset directories: the unit every ferdata command reads and writes.

A dataset directory is ``DatasetDict.save_to_disk`` output plus two files:

* ``ferdata.json``: the recipe, the steps that made it (parameters, kept and rejected counts,
  seconds), the seed, the label names, class weights and the package versions;
* ``rejects.parquet``: the rejects ledger, one row per removed item with ``id, origin, step,
  reason, details`` (``details`` is a JSON string) and ``thumbnail`` (a <= 64 px JPEG of the
  rejected image, or null; older ledgers without the column still open). The ledger is cumulative: a command copies its
  input's ledger and appends its own rows.

``datasets.load_from_disk(DIR)`` opens it directly; :func:`open_dataset` does the same with clear
errors. Directories are written to a temporary sibling and renamed into place, so a killed
command never leaves a half-written output, and an input directory is never modified.

The core schema is ``image`` (``Image()``), ``label`` (``ClassLabel``), ``id`` (sha256 of the
decoded pixels, see :func:`ferdata.images.pixel_id`), ``source`` and ``origin``; rows made by
ferdata also carry their lineage, ``root_id`` and ``parent_id`` (see :func:`lineage_ids`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferdata.columns import (  # noqa: F401  (re-exported: older imports name them here)
    CORE_COLUMNS,
    LINEAGE_COLUMNS,
    MANIFEST_FILE,
    PARENT_ID,
    REJECT_COLUMNS,
    REJECT_DETAILS,
    REJECT_REASON,
    REJECTS_FILE,
    ROOT_ID,
    THUMBNAIL,
)
from ferdata.errors import InputNotFound, NotADatasetDir, OutputExists, UsageError

if TYPE_CHECKING:
    import datasets

LEDGER_THUMB_SIDE = 64
#: Split names, in the order in which they are evaluation splits (most protected first).
EVAL_SPLITS = ("test", "validation")
_VERSIONED = ("ferdata", "datasets", "huggingface_hub", "numpy", "pillow", "tensorflow", "keras", "mtcnn",
              "opencv-contrib-python-headless", "imagehash", "icrawler")


def core_features(label_names: Sequence[str]) -> datasets.Features:
    """Features of the core schema for the given class names."""
    import datasets

    return datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=list(label_names)),
            "id": datasets.Value("string"),
            "source": datasets.Value("string"),
            "origin": datasets.Value("string"),
        }
    )


def lineage_ids(new_id: str, row: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``id``, ``parent_id`` and ``root_id`` of a row whose pixel id is (now) ``new_id``.

    The one place lineage is decided: a source step calls it with ``row=None`` when a row enters
    the dataset (``root_id`` = its id, ``parent_id`` null); a step that changes pixels (crop, align,
    upscale ...) calls it with the input row when it recomputes the id (``parent_id`` = the old id,
    ``root_id`` carried over; a row made before lineage existed counts its own id as its root).
    Reviews, labels and duplicates can so always be traced back to the row that entered.

    Example:
        >>> lineage_ids("b2", {"id": "a1", "root_id": "r0"})
        {'id': 'b2', 'parent_id': 'a1', 'root_id': 'r0'}
        >>> lineage_ids("r0")
        {'id': 'r0', 'parent_id': None, 'root_id': 'r0'}
    """
    if row is None:
        return {"id": new_id, PARENT_ID: None, ROOT_ID: new_id or None}
    old = row.get("id")
    return {"id": new_id, PARENT_ID: old, ROOT_ID: row.get(ROOT_ID) or old}


def lineage_features(features: datasets.Features) -> datasets.Features:
    """A copy of ``features`` with the lineage columns declared (strings, after the others)."""
    import datasets

    features = features.copy()
    for name in LINEAGE_COLUMNS:
        features[name] = datasets.Value("string")
    return features


def make_reject(id: str, origin: str, step: str, reason: str, details: Any = "", *,
                thumbnail: bytes | None = None) -> dict[str, Any]:
    """One rejects-ledger row; ``details`` (a dict or string) is stored as JSON text.

    ``thumbnail`` (small JPEG bytes, see :func:`ledger_thumbnail`) lets a report show the rejected
    image when its origin is gone; :func:`partition_rejects` and :func:`ferdata.steps.run_step` fill
    it in for rows whose pixels they hold.
    """
    text = details if isinstance(details, str) else json.dumps(details, default=_json_default, sort_keys=True)
    row: dict[str, Any] = {"id": id or "", "origin": origin or "", "step": step, "reason": reason, "details": text}
    if thumbnail is not None:
        row[THUMBNAIL] = thumbnail
    return row


def ledger_thumbnail(image: Any, size: int = LEDGER_THUMB_SIDE) -> bytes | None:
    """A small JPEG (longest side ``size`` px, gray stays gray) of an image value, or None.

    ``image`` is a PIL image, an ``Image(decode=False)`` value (``{"bytes", "path"}``), raw bytes
    or a path; anything that does not decode gives None (the ledger row keeps no thumbnail).

    Example:
        >>> from PIL import Image
        >>> len(ledger_thumbnail(Image.new("L", (48, 48)))) < 4096
        True
    """
    import io

    from PIL import Image

    try:
        if isinstance(image, dict):
            image = image.get("bytes") or image.get("path")
        if isinstance(image, bytes | bytearray):
            image = Image.open(io.BytesIO(image))
        elif isinstance(image, str | Path):
            image = Image.open(image)
        if not isinstance(image, Image.Image):
            return None
        img = image.convert("L" if image.mode in ("L", "I", "I;16", "F", "1", "LA") else "RGB")
        img.thumbnail((size, size))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=80)
        return buf.getvalue()
    except Exception:  # a bad image is already a reject; it just has no thumbnail
        return None


def column_values(ds: datasets.Dataset, name: str) -> list[Any]:
    """The values of a (non-image) column as a Python list, read from Arrow in one pass.

    ``ds[name]`` is a lazy ``datasets.Column`` in datasets 5: iterating it formats row by row
    (10-50 us a row), which made counting labels or ids cost seconds on a FER2013-sized split.

    Example:
        >>> import datasets
        >>> column_values(datasets.Dataset.from_dict({"label": [1, 0]}).select([1]), "label")
        [0]
    """
    if ds._indices is None:
        return ds.data.column(name).to_pylist()
    return ds.select_columns([name]).with_format("arrow")[:][name].to_pylist()


def column_slice(ds: datasets.Dataset, name: str, start: int, stop: int) -> list[Any]:
    """:func:`column_values` of the rows ``start:stop`` only (a caller reading a large column a slice
    at a time holds one slice's Python objects, not the column's: ~1 GB of image bytes at 300k rows)."""
    if ds._indices is None:
        return ds.data.column(name).slice(start, max(0, stop - start)).to_pylist()
    return column_values(ds.select(range(start, min(stop, len(ds)))), name)


#: the replays of a memory-mapped table (operations ``datasets`` re-applies on load) that act on
#: columns only, so they give the same rows applied to each record batch of the file in turn
_COLUMN_REPLAYS = {"replace_schema_metadata", "cast", "drop", "select", "rename_columns", "remove_column", "flatten",
                   "combine_chunks"}


def _blocks(ds: datasets.Dataset) -> list[list[Any]]:
    """``ds.data``'s table blocks: rows of blocks side by side (one row of one block when it is not a
    ``ConcatenationTable``)."""
    from datasets.table import ConcatenationTable

    return ds.data.blocks if isinstance(ds.data, ConcatenationTable) else [[ds.data]]


def plain_readable(ds: datasets.Dataset) -> bool:
    """Whether :func:`contiguous_parts` can read ``ds``: every block either in memory or a whole Arrow
    file with only column operations to replay (no slice, filter or added column), and no indices
    mapping or one in file order that keeps at least half the rows (a filter's, a sorted selection's)."""
    import numpy as np
    from datasets.table import InMemoryTable, MemoryMappedTable

    if ds._indices is not None:
        order = ds._indices.column(0).to_numpy()
        if 2 * len(order) < len(ds.data) or np.any(np.diff(order.astype(np.int64)) < 0):
            return False
    return all(isinstance(b, InMemoryTable) or (isinstance(b, MemoryMappedTable)
                                                 and all(op in _COLUMN_REPLAYS for op, *_ in b.replays))
               for row in _blocks(ds) for b in row)


def _block_pieces(block: Any) -> Iterator[Any]:
    """A table block as consecutive ``pa.Table`` pieces: a memory-mapped block's file read batch by
    batch with plain reads (its replays applied to each batch), an in-memory block as it is."""
    import pyarrow as pa
    from datasets.table import MemoryMappedTable

    if not isinstance(block, MemoryMappedTable):
        yield block.table
        return
    with pa.OSFile(block.path) as f:
        for batch in pa.ipc.open_stream(f):
            yield MemoryMappedTable._apply_replays(pa.Table.from_batches([batch]), block.replays)


class RowStream:
    """Rows taken in order from a stream of ``pa.Table`` pieces, re-cut to the sizes asked for (the
    pieces of :func:`contiguous_parts`, taken as the row groups of a parquet shard)."""

    def __init__(self, pieces: Iterator[Any]) -> None:
        self.pieces, self.pending = pieces, None

    def stream(self, n: int) -> Iterator[Any]:
        """The next ``n`` rows as pieces, read as they are asked for."""
        while n:
            piece = self.pending if self.pending is not None else next(self.pieces)
            self.pending = None
            if len(piece) > n:
                piece, self.pending = piece.slice(0, n), piece.slice(n)
            n -= len(piece)
            yield piece

    def take(self, n: int) -> list[Any]:
        """The next ``n`` rows as a list of pieces."""
        return list(self.stream(n))


def _pieces(ds: datasets.Dataset) -> Iterator[Any]:
    """``ds``'s rows as consecutive ``pa.Table`` pieces: each block read with :func:`_block_pieces`
    (blocks side by side, as in a ``ConcatenationTable``, joined piece by piece), then the rows of its
    indices mapping (in file order) taken from each piece."""
    import numpy as np
    import pyarrow as pa

    def table_pieces() -> Iterator[Any]:
        for first, *others in _blocks(ds):
            rows = [RowStream(_block_pieces(b)) for b in others]
            for piece in _block_pieces(first):
                if not len(piece):
                    continue
                for other in rows:
                    side = pa.concat_tables(other.take(len(piece)))
                    for name, column in zip(side.column_names, side.columns, strict=True):
                        piece = piece.append_column(name, column)
                yield piece

    if ds._indices is None:
        yield from table_pieces()
        return
    order = ds._indices.column(0).to_numpy().astype(np.int64)
    start = taken = 0
    for piece in table_pieces():
        if taken == len(order):
            return
        stop = taken + int(np.searchsorted(order[taken:], start + len(piece)))
        if stop > taken:
            yield piece.take(pa.array(order[taken:stop] - start))
        start, taken = start + len(piece), stop


def contiguous_parts(ds: datasets.Dataset, parts: int) -> Iterator[Iterator[Any]]:
    """The rows of ``ds.shard(parts, i, contiguous=True)`` for each ``i``, as ``pa.Table`` pieces read
    with plain file reads, a record batch at a time as they are asked for (:func:`plain_readable` must
    hold; read each part's pieces before asking for the next part).

    A memory-mapped read leaves every page it touched resident: a commit or an export that reads the
    whole split through the map holds an RSS the size of the split (~9 GB of 224 px faces at 300k rows).
    """
    if not plain_readable(ds):
        raise ValueError("contiguous_parts needs a dataset plain_readable accepts")
    rows = RowStream(_pieces(ds))
    div, mod = divmod(len(ds), parts)
    for i in range(parts):
        yield rows.stream(div + (i < mod))


def _has_files(piece: Any, features: datasets.Features) -> bool:
    """Whether writing ``piece`` must embed local files (``save_to_disk`` does): a top-level image or
    audio column with a path, or a nested feature that could hold one. Without, embedding leaves
    the rows as they are; skipping it saves ``datasets`` re-reading the features from the schema
    of every record batch (~1 s of a fer2013-train build's checkpoints)."""
    from datasets.features.features import require_storage_embed

    for name, feature in features.items():
        if not require_storage_embed(feature):
            continue
        column = piece.column(name)
        if not hasattr(feature, "embed_storage") or column.type.num_fields != 2:
            return True  # nested, or not the {bytes, path} storage: let datasets decide
        for chunk in column.chunks:
            if chunk.field("path").null_count != len(chunk) or chunk.field("bytes").null_count != chunk.null_count:
                return True
    return False


def _save_split(ds: datasets.Dataset, out: Path, num_shards: int | None) -> None:
    """``ds.save_to_disk(out, num_shards=...)``, reading ``ds`` with plain reads when it can
    (:func:`contiguous_parts`): the same shards, written by the same ``ArrowWriter``, the same
    ``state.json`` and ``dataset_info.json``, and an RSS of one record batch, not of the split."""
    from datasets import config
    from datasets.arrow_writer import ArrowWriter
    from datasets.utils.py_utils import asdict, convert_file_size_to_int

    if not plain_readable(ds) or not len(ds):
        ds.save_to_disk(str(out), num_shards=num_shards)
        return
    shards = num_shards or int(ds._estimate_nbytes() / convert_file_size_to_int(config.MAX_SHARD_SIZE)) + 1
    shards = min(shards, len(ds))
    out.mkdir(parents=True, exist_ok=True)
    names = [f"data-{i:05d}-of-{shards:05d}.arrow" for i in range(shards)]
    for name, part in zip(names, contiguous_parts(ds, shards), strict=True):
        writer = ArrowWriter(features=ds.features, path=str(out / name), embed_local_files=True)
        try:
            for piece in part:
                writer.embed_local_files = _has_files(piece, ds.features)
                writer.write_table(piece)
            writer.finalize()
        finally:
            writer.close()
    state = {key: ds.__dict__[key] for key in
             ("_fingerprint", "_format_columns", "_format_kwargs", "_format_type", "_output_all_columns")}
    state["_split"] = str(ds.split) if ds.split is not None else None
    state["_data_files"] = [{"filename": name} for name in names]
    with (out / config.DATASET_STATE_JSON_FILENAME).open("w", encoding="utf-8") as f:
        json.dump(state, f, indent=2, sort_keys=True)
    info = asdict(ds.info)
    with (out / config.DATASET_INFO_FILENAME).open("w", encoding="utf-8") as f:
        json.dump({key: info[key] for key in sorted(info)}, f, indent=2)


def _thumbnails(ds: datasets.Dataset, rows: Sequence[int]) -> list[bytes | None]:
    """Ledger thumbnails of rows of ``ds`` (read undecoded from Arrow; None without an image column)."""
    import datasets

    if "image" not in ds.column_names or not isinstance(ds.features["image"], datasets.Image) or not len(rows):
        return [None] * len(rows)
    values = column_values(ds.select_columns(["image"]).select(list(rows)), "image")  # {"bytes", "path"}: undecoded
    return [ledger_thumbnail(v) if v else None for v in values]


def add_ledger_thumbnails(rejects: Sequence[dict[str, Any]], data: datasets.DatasetDict | None) -> int:
    """Give ledger rows without a thumbnail one from the row of ``data`` with the same ``id``.

    Returns:
        The number of rows that got one.
    """
    if data is None:
        return 0
    want = {r["id"] for r in rejects if r.get(THUMBNAIL) is None and r.get("id")}
    if not want:
        return 0
    found: dict[str, bytes | None] = {}
    for ds in data.values():
        if "id" not in ds.column_names or not len(ds):
            continue
        ids = column_values(ds, "id")
        rows = [i for i, x in enumerate(ids) if x in want and x not in found]
        first: dict[str, int] = {}
        for i in rows:
            first.setdefault(ids[i], i)
        for rid, thumb in zip(first, _thumbnails(ds, list(first.values())), strict=True):
            found[rid] = thumb
    n = 0
    for r in rejects:
        if r.get(THUMBNAIL) is None and found.get(r.get("id", "")) is not None:
            r[THUMBNAIL] = found[r["id"]]  # type: ignore[index]
            n += 1
    return n


def add_ledger_lineage(rejects: Sequence[dict[str, Any]], data: datasets.DatasetDict | None) -> int:
    """Give ledger rows without a ``root_id`` the lineage of the row of ``data`` with the same ``id``.

    ``data`` is the step's input (None for a source step: a row rejected on entry is its own root).
    So a ledger row always says which photo it came from, and a review of the crawl output knows a
    crop that a later step removed (:func:`ferdata.review.review_exclusions`).

    Returns:
        The number of rows that got a ``root_id``.
    """
    want = {r["id"] for r in rejects if not r.get(ROOT_ID) and r.get("id")}
    if not want:
        return 0
    found: dict[str, tuple[str, str]] = {}
    if data is None:
        found = {i: (i, "") for i in want}
    for ds in (data or {}).values():
        if "id" not in ds.column_names or not len(ds):
            continue
        ids = column_values(ds, "id")
        roots = column_values(ds, ROOT_ID) if ROOT_ID in ds.column_names else [None] * len(ids)
        parents = column_values(ds, PARENT_ID) if PARENT_ID in ds.column_names else [None] * len(ids)
        for rid, root, parent in zip(ids, roots, parents, strict=True):
            if rid in want and rid not in found:
                found[rid] = (root or rid, parent or "")
    n = 0
    for r in rejects:
        if not r.get(ROOT_ID) and r.get("id") in found:
            r[ROOT_ID], r[PARENT_ID] = found[r["id"]]  # type: ignore[index]
            n += 1
    return n


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def check_dataset_dir(path: str | Path) -> Path:
    """Return ``path`` when it is a dataset directory; else raise an error that says what it is and what to run.

    Cheap (no ``datasets`` import), so commands call it before loading anything heavy.

    Raises:
        InputNotFound: when the path does not exist.
        NotADatasetDir: for a file (a CSV: "import it first: ferdata import fer2013 ..."), a run directory
            (its ``dataset/``), a folder of class folders ("ferdata import folder ..."), a Hub-layout folder.

    Example:
        >>> check_dataset_dir("fer2013.csv")   # doctest: +SKIP
        NotADatasetDir: fer2013.csv is a file, not a dataset directory; import it first: ferdata import fer2013 ...
    """
    path = Path(path)
    if not path.exists():
        raise InputNotFound(f"dataset directory not found: {path}")
    if not path.is_dir():
        raise NotADatasetDir(file_not_dataset_message(path))
    if not (path / "dataset_dict.json").exists():
        raise NotADatasetDir(not_a_dataset_message(path))
    return path


_check_dataset_dir = check_dataset_dir  # the older private name (ferdata.sources.hf)

_EXAMPLE_IMPORT = "dataset directories are written by ferdata commands, e.g. ferdata import folder SRC --out DIR"


def _first_line(path: Path) -> str:
    import gzip

    try:
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", errors="replace") as f:
            return f.readline(4096)
    except (OSError, EOFError):
        return ""


def file_not_dataset_message(path: str | Path, *, expected: str = "a dataset directory") -> str:
    """One line for a file given where a directory is expected, with the command that imports it.

    Args:
        path: the file.
        expected: what was expected instead (``"a dataset directory"``; ``"a source folder"`` for the
            importers, whose hint then names the right importer rather than "import it first").

    Example:
        >>> file_not_dataset_message("x.csv.gz")
        'x.csv.gz is a file, not a dataset directory; import it first: ferdata import fer2013 x.csv.gz --out DIR'
    """
    import shlex

    path = Path(path)
    q = shlex.quote(str(path))
    head = f"{path} is a file, not {expected}"
    first = "import it first" if expected == "a dataset directory" else "it is imported by"
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        if "image name" in _first_line(path).lower():  # FER+'s fer2013new.csv: votes, no pixels
            return (f"{head}; it holds FER+ votes, imported beside its FER2013 CSV: "
                    f"ferdata import fer2013 FER2013.csv --ferplus {q} --out DIR")
        return f"{head}; {first}: ferdata import fer2013 {q} --out DIR"
    if name.endswith(".zip"):
        return (f"{head}; {first}: ferdata import fer2013 {q} --out DIR (a zip of one FER2013 CSV), "
                "or unzip class folders and run ferdata import folder SRC --out DIR")
    if (path.parent / "dataset_dict.json").exists():
        return f"{head}; give the dataset directory that holds it: {path.parent}"
    if name.endswith((".parquet", ".arrow")):
        return f"{head}; {first} (its folder): ferdata import hf {shlex.quote(str(path.parent))} --out DIR"
    return f"{head} ({_EXAMPLE_IMPORT})"


def _looks_like_class_folders(path: Path) -> bool:
    """True when ``path`` (or one of its first subfolders: split folders) holds folders named for classes."""
    from ferdata.labels import LabelMaps

    known = set(LabelMaps.load().synonyms)
    dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if any(p.name.lower() in known for p in dirs):
        return True
    return any(c.is_dir() and c.name.lower() in known for p in dirs[:10] for c in p.iterdir())


def not_a_dataset_message(path: str | Path) -> str:
    """One line for a directory without ``dataset_dict.json``: what it is and what to give or run instead.

    Example:
        >>> not_a_dataset_message("runs/refine")   # doctest: +SKIP
        'runs/refine is a run directory, not a dataset directory; its dataset is runs/refine/dataset'
    """
    import shlex

    path = Path(path)
    q = shlex.quote(str(path))
    head = f"{path} is not a dataset directory"
    if (path / "dataset" / "dataset_dict.json").exists():
        return f"{path} is a run directory, not a dataset directory; its dataset is {path / 'dataset'}"
    if (path / "run.json").is_file() or (path / "model.keras").is_file():
        trained_on = ""
        try:
            with (path / "run.json").open(encoding="utf-8") as f:
                dataset = json.load(f).get("dataset")
            trained_on = f"; it was trained on {dataset}" if dataset else ""
        except (OSError, ValueError, AttributeError):
            pass
        return f"{path} is a training run directory, not a dataset directory{trained_on}"
    if (path / "dataset_info.json").exists():
        return (f"{head} (a single Dataset, not a DatasetDict: no dataset_dict.json); "
                f"import it first: ferdata import hf {q} --out DIR")
    try:
        if (path / "images").is_dir() and (path / "annotations").is_dir():
            return f"{head}; an AffectNet folder? import it first: ferdata import affectnet {q} --out DIR"
        if _looks_like_class_folders(path):
            return f"{head} but a folder of class folders; import it first: ferdata import folder {q} --out DIR"
        if (path / "README.md").is_file() and (any(path.glob("*.parquet")) or any(path.glob("data/*.parquet"))):
            return f"{head} but a Hub-layout folder; import it first: ferdata import hf {q} --out DIR"
        inside = sorted(p.name for p in path.iterdir() if (p / "dataset_dict.json").exists())
    except OSError:
        inside = []
    if inside:
        shown = ", ".join(str(path / n) for n in inside[:3]) + (", ..." if len(inside) > 3 else "")
        return f"{head}; it holds dataset directories: {shown}"
    return f"{head}: no dataset_dict.json in it ({_EXAMPLE_IMPORT})"


def open_dataset(path: str | Path) -> datasets.DatasetDict:
    """Open a ferdata dataset directory as a ``datasets.DatasetDict``.

    Args:
        path: a directory written by a ferdata command (or any ``DatasetDict.save_to_disk`` dir).

    Returns:
        The dataset, splits as keys; images decode to PIL images.

    Raises:
        InputNotFound: when the path does not exist.
        NotADatasetDir: when it is not a saved DatasetDict.

    Example:
        >>> dd = open_dataset("fer2013")          # doctest: +SKIP
        >>> dd["train"].features["label"].names   # doctest: +SKIP
        ['angry', 'disgust', 'fear', 'happy', 'neutral', 'sad', 'surprise']
    """
    import datasets

    path = check_dataset_dir(path)
    return datasets.load_from_disk(str(path))


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Return ``ferdata.json`` of a dataset directory (a fresh manifest when it has none)."""
    file = Path(path) / MANIFEST_FILE
    if not file.exists():
        return new_manifest()
    with file.open(encoding="utf-8") as f:
        return json.load(f)


def read_rejects(path: str | Path, *, thumbnails: bool = True) -> list[dict[str, Any]]:
    """Return the rejects ledger of a dataset directory as a list of rows.

    Rows have ``thumbnail`` (JPEG bytes or None) when the ledger has that column; ledgers written
    before it existed open the same way, without the key. ``thumbnails=False`` skips reading it.
    """
    file = Path(path) / REJECTS_FILE
    if not file.exists():
        return []
    import pyarrow.parquet as pq

    names = pq.read_schema(file).names
    columns = None if thumbnails else [c for c in names if c != THUMBNAIL]
    return pq.read_table(file, columns=columns).to_pylist()


def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages a dataset's content depends on."""
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def new_manifest(*, seed: int | None = None, recipe: dict[str, Any] | None = None) -> dict[str, Any]:
    """A fresh ``ferdata.json`` content."""
    return {
        "format": "ferdata-dataset/1",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "recipe": recipe,
        "seed": seed,
        "steps": [],
        "versions": package_versions(),
    }


def label_names(dd: datasets.DatasetDict | datasets.Dataset) -> list[str]:
    """Class names of a dataset's ``label`` column.

    Raises:
        UsageError: when there is no ClassLabel ``label`` column.
    """
    import datasets

    ds = next(iter(dd.values())) if isinstance(dd, datasets.DatasetDict) else dd
    feature = ds.features.get("label")
    if not isinstance(feature, datasets.ClassLabel):
        raise UsageError(f"dataset has no ClassLabel 'label' column; columns: {', '.join(ds.column_names)}")
    return list(feature.names)


def class_counts(ds: datasets.Dataset) -> dict[str, int]:
    """Rows per class name, in label order (classes with no row included, as 0)."""
    names = label_names(ds)
    counts = Counter(column_values(ds, "label")) if len(ds) else Counter()
    return {name: int(counts.get(i, 0)) for i, name in enumerate(names)}


def split_counts(dd: datasets.DatasetDict) -> dict[str, int]:
    """Rows per split."""
    return {name: len(ds) for name, ds in dd.items()}


def partition_rejects(dd: datasets.DatasetDict, step: str) -> tuple[datasets.DatasetDict, list[dict[str, str]]]:
    """Move rows whose ``_reject_reason`` is set to a ledger list and drop the internal columns.

    A batched step marks a bad row by setting ``_reject_reason`` (and optionally
    ``_reject_details``, a JSON string) instead of dropping it; this turns the marks into ledger rows
    and returns the clean dataset.
    """
    import datasets

    rejects: list[dict[str, str]] = []
    kept = {}
    for split, ds in dd.items():
        if REJECT_REASON not in ds.column_names:
            kept[split] = ds
            continue
        reasons = column_values(ds, REJECT_REASON)
        bad = [i for i, r in enumerate(reasons) if r]
        if bad:
            details = column_values(ds.select(bad), REJECT_DETAILS) if REJECT_DETAILS in ds.column_names else [""] * len(bad)
            meta = ds.select_columns(["id", "origin"]).select(bad)
            thumbs = _thumbnails(ds, bad)
            for row, reason, detail, thumb in zip(meta, (reasons[i] for i in bad), details, thumbs, strict=True):
                rejects.append(make_reject(row["id"], row["origin"], step, reason, detail or "", thumbnail=thumb))
            good = sorted(set(range(len(ds))) - set(bad))
            ds = ds.select(good)
        drop = [c for c in (REJECT_REASON, REJECT_DETAILS) if c in ds.column_names]
        kept[split] = ds.remove_columns(drop)
    return datasets.DatasetDict(kept), rejects


@contextlib.contextmanager
def no_input_caching() -> Iterator[None]:
    """Keep ``datasets`` from writing cache files next to an input's Arrow files.

    ``Dataset.map`` on a dataset loaded from disk writes ``cache-*.arrow`` into that directory;
    ferdata never modifies its inputs, so transforms run with caching off (results go to a
    temporary directory) while this context is active.
    """
    import datasets

    was_enabled = datasets.is_caching_enabled()
    datasets.disable_caching()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_caching()


def prepare_output(out: str | Path, *, overwrite: bool, inputs: Sequence[str | Path] = ()) -> Path:
    """Check that ``out`` may be written: not an input, and absent unless ``overwrite``.

    Raises:
        OutputExists: when it exists and ``overwrite`` is False.
        UsageError: when it is (or contains) one of the inputs.
    """
    out = Path(out)
    resolved = out.resolve()
    for inp in inputs:
        inp_resolved = Path(inp).resolve()
        if resolved == inp_resolved or inp_resolved.is_relative_to(resolved):
            raise UsageError(f"--out {out} would overwrite the input {inp}; choose another output directory")
    if out.exists() and not overwrite:
        raise OutputExists(f"output {out} already exists; pass --overwrite to replace it")
    return out


def write_rejects(rows: Sequence[dict[str, str]], file: str | Path) -> None:
    """Write ledger rows to a parquet file with the ledger schema (``thumbnail`` null where absent)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {c: pa.array([r.get(c, "") for r in rows], type=pa.string()) for c in REJECT_COLUMNS}
    for c in LINEAGE_COLUMNS:  # the removed row's lineage ("" where unknown), see add_ledger_lineage
        columns[c] = pa.array([r.get(c) or "" for r in rows], type=pa.string())
    columns[THUMBNAIL] = pa.array([r.get(THUMBNAIL) for r in rows], type=pa.binary())
    pq.write_table(pa.table(columns), str(file))


def save_dataset(
    dd: datasets.DatasetDict,
    out: str | Path,
    *,
    manifest: dict[str, Any],
    rejects: Sequence[dict[str, str]] = (),
    overwrite: bool = False,
    num_proc: int | None = None,
    files: dict[str, str | Path] | None = None,
) -> Path:
    """Write a dataset directory atomically: temp sibling, then rename into place.

    Args:
        dd: the dataset to write.
        out: the output directory.
        manifest: ``ferdata.json`` content (label names and split counts are filled in here).
        rejects: the full rejects ledger to write (input ledger plus new rows).
        overwrite: replace an existing ``out``.
        num_proc: accepted for the callers' sake; the data is written in this process (from plain reads
            where it can be, :func:`_save_split`): writing only copies Arrow data (0.1-0.8 s for 26k rows
            at 48 or 224 px), while ``save_to_disk``'s worker pool (``spawn``: a fresh interpreter per
            worker) took 2-3 s to start on every commit.
        files: extra files to copy into the directory before it is renamed into place
            (``{name inside out: source path}``), so they appear with it or not at all.

    Returns:
        The output path.
    """
    import datasets
    from datasets import config

    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExists(f"output {out} already exists; pass --overwrite to replace it")
    if not isinstance(dd, datasets.DatasetDict):
        raise TypeError(f"save_dataset expects a DatasetDict, got {type(dd).__name__}")
    with atomic_dir(out) as tmp:
        # an empty split gets one (empty) shard: datasets otherwise writes none and cannot load the split
        with (tmp / config.DATASETDICT_JSON_FILENAME).open("w", encoding="utf-8") as f:  # as DatasetDict's
            json.dump({"splits": list(dd)}, f)
        for split, ds in dd.items():
            _save_split(ds, tmp / split, 1 if len(ds) == 0 else None)
        for name, src in (files or {}).items():
            target = tmp / name
            if not target.resolve().is_relative_to(tmp.resolve()):
                raise ValueError(f"extra file {name!r} must stay inside the output directory")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
        manifest = dict(manifest)
        manifest.pop("files", None)  # an input's extra files are not carried into a new directory
        if files:
            manifest["files"] = sorted(files)
        if len(dd):
            with contextlib.suppress(UsageError):
                manifest["label_names"] = label_names(dd)
        manifest["splits"] = split_counts(dd)
        if any(isinstance(e, dict) and e.get("limit") is not None for e in manifest.get("steps", [])):
            manifest["trial"] = True  # made under --limit (the one place the mark is set): rows were left out
        manifest.setdefault("versions", package_versions())
        with (tmp / MANIFEST_FILE).open("w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, default=_json_default)
        write_rejects(rejects, tmp / REJECTS_FILE)
    return out


def _remove_stale_siblings(out: Path) -> None:
    """Remove the temporary siblings of ``out`` left by a killed process (``.OUT.tmp-PID-*`` and
    ``.OUT.old-PID-*`` whose process is gone); those of a running process are left alone."""
    import glob

    for kind in ("tmp", "old"):
        for path in out.parent.glob(f".{glob.escape(out.name)}.{kind}-*-*"):
            pid = path.name[len(out.name) + len(kind) + 3:].split("-", 1)[0]
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                os.kill(int(pid), 0)
                continue  # still running: not ours to remove
            except ProcessLookupError:
                shutil.rmtree(path, ignore_errors=True)
            except PermissionError:
                continue


@contextlib.contextmanager
def atomic_dir(out: str | Path) -> Iterator[Path]:
    """Write a directory atomically: yield an empty temporary sibling of ``out``, then rename it to
    ``out`` (replacing an existing one) when the block succeeds; remove it when the block fails.

    Example:
        >>> with atomic_dir("run") as tmp:           # doctest: +SKIP
        ...     (tmp / "model.keras").write_bytes(b"...")
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_siblings(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
            try:
                os.replace(tmp, out)
            except BaseException:
                os.replace(old, out)  # the rename failed: the previous output goes back, whole
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def work_dir(prefix: str = "ferdata-") -> Iterator[Path]:
    """A temporary working directory removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
