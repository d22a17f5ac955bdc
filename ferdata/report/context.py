"""The shared reading context of the report's sections: the dataset, its manifest and ledger, images."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from ferdata.report.images import ImageStore, raw_images

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)


def column(ds: datasets.Dataset, name: str) -> list[Any]:
    """A column as Python values, read from Arrow (images never decoded); Nones when it is absent."""
    from ferdata.dataset import column_values

    return column_values(ds, name) if name in ds.column_names else [None] * len(ds)


def short(rid: Any) -> str:
    """The short form of an id shown in captions (first 8 characters)."""
    return str(rid or "")[:8]


def _details(text: Any) -> dict[str, Any]:
    if isinstance(text, dict):
        return text
    try:
        value = json.loads(text) if text else {}
    except (TypeError, ValueError):
        return {"text": str(text)}
    return value if isinstance(value, dict) else {"value": value}


class Context:
    """The dataset being reported: splits, label names, row lookup by id, images, the ledger."""

    def __init__(self, dd: datasets.DatasetDict, manifest: dict[str, Any], rejects: list[dict[str, Any]],
                 store: ImageStore, *, seed: int = 0, side: int = 96, review: bool = True) -> None:
        import datasets

        self.dd, self.manifest, self.rejects, self.store = dd, manifest, rejects, store
        self.seed, self.side, self.review = seed, side, review
        first = next(iter(dd.values())) if len(dd) else None
        feature = first.features.get("label") if first is not None else None
        self.names: list[str] = list(feature.names) if isinstance(feature, datasets.ClassLabel) else \
            list(manifest.get("label_names") or [])
        self._cols: dict[tuple[str, str], list[Any]] = {}
        self._index: dict[str, tuple[str, int]] | None = None

    def col(self, split: str, name: str) -> list[Any]:
        key = (split, name)
        if key not in self._cols:
            self._cols[key] = column(self.dd[split], name)
        return self._cols[key]

    def has(self, name: str) -> bool:
        return any(name in ds.column_names for ds in self.dd.values())

    def label_name(self, value: Any) -> str:
        if isinstance(value, str) and not value.lstrip("-").isdigit():
            return value
        try:
            k = int(value)
        except (TypeError, ValueError):
            return "(none)" if value is None else str(value)
        return self.names[k] if 0 <= k < len(self.names) else ("(none)" if k < 0 else str(k))

    def find(self, rid: str) -> tuple[str, int] | None:
        """(split, row) of the first row with ``id`` = rid."""
        if self._index is None:
            self._index = {}
            for split in self.dd:
                for i, x in enumerate(self.col(split, "id")):
                    self._index.setdefault(x, (split, i))
        return self._index.get(rid)

    def tiles(self, split: str, rows: list[int], *, extra: list[list[str]] | None = None,
              cls: list[str] | None = None, side: int | None = None) -> list[dict[str, Any]]:
        """Tiles (src, alt, caption) of rows of a split; decodes only these rows."""
        if not rows:
            return []
        raws = raw_images(self.dd[split], rows)
        ids, labels = self.col(split, "id"), self.col(split, "label")
        sources, origins = self.col(split, "source"), self.col(split, "origin")
        votes = self.col(split, "ferplus_votes") if "ferplus_votes" in self.dd[split].column_names else None
        out = []
        for k, (row, raw) in enumerate(zip(rows, raws, strict=True)):
            rid = ids[row] or ""
            label = self.label_name(labels[row])
            lines = list((extra or [[]] * len(rows))[k])
            if votes is not None and votes[row] is not None and not any(x.startswith("FER+") for x in lines):
                lines.append(_ferplus(votes[row]))
            out.append(self.tile(raw, rid=rid, split=split, label=label, source=sources[row] or "",
                                 origin=origins[row] or "", extra=lines,
                                 cls=(cls or [""] * len(rows))[k], side=side))
        return out

    def tile(self, raw: Any, *, rid: str, split: str, label: str, source: str, origin: str,
             extra: list[str] | None = None, cls: str = "", side: int | None = None, head: str | None = None,
             key: str | None = None) -> dict[str, Any]:
        """A tile of an image value; ``head`` replaces the first caption line (``split · id``), ``key``
        the image cache key (a picture of ``rid`` other than its row's: e.g. from another stage)."""
        side = side or self.side
        src = self.store.src(raw, key=key or (f"{rid}:{split}" if rid else ""), side=side)
        lines = [head if head is not None else f"{split} · {short(rid)}", source] + list(extra or [])
        return {"src": src, "alt": f"{label} face, {split} split, id {short(rid)}, from {source or 'unknown source'}",
                "lines": [x for x in lines if x], "id": rid, "label": label, "origin": origin, "split": split,
                "cls": cls, "side": side, "review": self.review and bool(rid)}


def _ferplus(value: Any) -> str:
    from ferdata.sources.fer2013 import FERPLUS_VOTES  # the vote order of fer2013new.csv

    if value is None:
        return ""
    if isinstance(value, dict):
        items = [(k, v) for k, v in value.items() if v]
    elif isinstance(value, list | tuple) and len(value) in (8, 9, 10):
        items = [(FERPLUS_VOTES[i], v) for i, v in enumerate(value) if v]
    else:
        return f"FER+ {value}"
    items.sort(key=lambda kv: -float(kv[1]))
    return "FER+ " + ", ".join(f"{k} {v:g}" if isinstance(v, int | float) else f"{k} {v}" for k, v in items[:4])
