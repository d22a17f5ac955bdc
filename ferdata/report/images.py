"""Thumbnails for the report: sampled rows decoded one by one, embedded as data URIs or written beside.

Only the rows a section shows are ever decoded: their ``image`` values are taken undecoded from
the Arrow table (``{"bytes", "path"}``), shrunk when larger than the tile, and encoded once (the
same row shown in two sections is stored once). Small PNG/JPEG images that already fit are
embedded as they are, without re-encoding.
"""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

#: Images at most this many bytes that already fit the tile are embedded unchanged.
_REUSE_BYTES = 8_000


#: per dataset fingerprint: (is an Image column read straight from Arrow, chunk start offsets)
_LAYOUT: dict[str, tuple[bool, list[int]]] = {}


def raw_images(ds: datasets.Dataset, rows: list[int]) -> list[dict[str, Any] | None]:
    """Undecoded ``image`` values (``{"bytes", "path"}``) of ``rows`` of ``ds``, read from Arrow.

    Rows are read as scalars from their Arrow chunk (no ``take`` over a many-chunk column, no copy
    of the features per call), so the report's one-row reads stay cheap on concatenated datasets.
    """
    import bisect

    import datasets

    if not rows or "image" not in ds.column_names:
        return [None] * len(rows)
    key = f"{ds._fingerprint}:{id(ds.data)}"
    if key not in _LAYOUT:
        direct = ds._indices is None and isinstance(ds.features["image"], datasets.Image)
        starts = [0]
        if direct:
            for chunk in ds.data.column("image").chunks:
                starts.append(starts[-1] + len(chunk))
        _LAYOUT[key] = (direct, starts)
    direct, starts = _LAYOUT[key]
    if direct:
        col = ds.data.column("image")
        out = []
        for r in rows:
            k = bisect.bisect_right(starts, r) - 1
            out.append(col.chunk(k)[r - starts[k]].as_py())
        return out
    sub = ds.select_columns(["image"]).select(rows).cast_column("image", datasets.Image(decode=False))
    return list(sub["image"])


def _open(value: Any) -> Any:
    from PIL import Image

    if value is None:
        return None
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, bytes | bytearray):
        return Image.open(io.BytesIO(value))
    if isinstance(value, str | Path) and Path(value).is_file():
        return Image.open(value)
    return None


class ImageStore:
    """Encodes tiles once and hands out their ``src``: a data URI, or a file beside the report.

    Example:
        >>> store = ImageStore()
        >>> from PIL import Image
        >>> store.src(Image.new("L", (48, 48)), key="a", side=96).startswith("data:image/")
        True
    """

    def __init__(self, assets_dir: Path | None = None, assets_href: str = "") -> None:
        self.assets_dir = assets_dir
        self.assets_href = assets_href
        self._done: dict[tuple[str, int], str | None] = {}
        self.count = 0
        self.bytes = 0
        self.failed = 0

    def _emit(self, data: bytes, mime: str) -> str:
        self.count += 1
        self.bytes += len(data)
        if self.assets_dir is None:
            return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
        self.assets_dir.mkdir(parents=True, exist_ok=True)
        name = f"{self.count:05d}.{'png' if mime == 'image/png' else 'jpg'}"
        (self.assets_dir / name).write_bytes(data)
        return f"{self.assets_href}/{name}"

    def src(self, value: Any, *, key: str, side: int = 96, quality: int = 82) -> str | None:
        """The ``src`` of an image value shrunk to at most ``side`` px (None when it does not decode)."""
        if value is None:  # nothing kept (e.g. a ledger row without thumbnail): not a failure
            return None
        cache_key = (key, side)
        if key and cache_key in self._done:
            return self._done[cache_key]
        result: str | None = None
        try:
            raw = value.get("bytes") if isinstance(value, dict) else value if isinstance(value, bytes) else None
            img = _open(value)
            if img is None:
                raise ValueError("no image")
            fmt = (img.format or "").upper()
            if raw and len(raw) <= _REUSE_BYTES and max(img.size) <= side and fmt in ("PNG", "JPEG"):
                result = self._emit(bytes(raw), "image/png" if fmt == "PNG" else "image/jpeg")
            else:
                img.load()
                gray = img.mode in ("L", "I", "I;16", "F", "1", "LA")
                img = img.convert("L" if gray else "RGB")
                if max(img.size) > side:
                    img.thumbnail((side, side))
                buf = io.BytesIO()
                if max(img.size) <= 64 and gray:
                    img.save(buf, format="PNG", optimize=True)
                    result = self._emit(buf.getvalue(), "image/png")
                else:
                    img.save(buf, format="JPEG", quality=quality)
                    result = self._emit(buf.getvalue(), "image/jpeg")
        except Exception as e:  # one bad image never stops the report
            logger.debug("report: image %s not shown: %s", key, e)
            self.failed += 1
            result = None
        if key:
            self._done[cache_key] = result
        return result


def image_size(value: Any) -> tuple[int, int] | None:
    """(width, height) of an image value without decoding its pixels, or None."""
    try:
        img = _open(value)
        return None if img is None else tuple(img.size)  # type: ignore[return-value]
    except Exception:
        return None
