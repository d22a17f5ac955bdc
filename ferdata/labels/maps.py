"""Explicit, named label maps (``manifests/labels.yaml``).

Every dataset stores its class names in a ``ClassLabel``. Sources map their own codes or folder
names onto the canonical names here; nothing is ever guessed from positions.

Example:
    >>> maps = LabelMaps.load()
    >>> maps.code_to_name("fer2013", 6)
    'neutral'
    >>> maps.canonical_name("Happiness")
    'happy'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ferdata.errors import ManifestError, UsageError
from ferdata.resources import load_yaml, manifest_path

GROUPINGS = (8, 7, 6, 3)


@dataclass(frozen=True)
class LabelMaps:
    """The label maps of one ``labels.yaml`` file."""

    canonical: tuple[str, ...]
    extra: tuple[str, ...]
    sources: dict[str, dict[int, str]] = field(default_factory=dict)
    synonyms: dict[str, str] = field(default_factory=dict)
    groupings: dict[int, dict[str, tuple[str, ...]]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path | None = None) -> LabelMaps:
        """Load ``labels.yaml`` (the packaged one by default).

        Raises:
            ManifestError: when the file is malformed.
        """
        return _load(str(path or manifest_path("labels")))

    @property
    def all_names(self) -> tuple[str, ...]:
        """Canonical names followed by the extra ones (contempt)."""
        return self.canonical + self.extra

    def source_names(self) -> list[str]:
        """Names of the numeric source maps (``fer2013``, ``affectnet`` ...)."""
        return sorted(self.sources)

    def code_to_name(self, source: str, code: int) -> str:
        """Map a source's numeric label code to its canonical name.

        Raises:
            UsageError: for an unknown source; KeyError for an unknown code.
        """
        if source not in self.sources:
            raise UsageError(f"unknown label map {source!r}; known maps: {', '.join(self.source_names())}")
        return self.sources[source][int(code)]

    def canonical_name(self, name: str, *, mapping: dict[str, str | None] | None = None) -> str | None:
        """Canonical name of a folder or label name (case-insensitive), or None when unknown (or, with a
        ``mapping``, mapped to null: see :func:`dropped_names`)."""
        key = name.strip().lower()
        if mapping is not None:
            lowered = {k.lower(): v for k, v in mapping.items()}
            return lowered.get(key)
        return self.synonyms.get(key)

    def names_for(self, present: set[str]) -> list[str]:
        """The ClassLabel names for a dataset whose classes are ``present``.

        The canonical 7 always (so label ids agree across datasets), plus contempt when present.
        """
        names = list(self.canonical)
        names += [n for n in self.extra if n in present]
        return names

    def grouping(self, classes: int) -> dict[str, tuple[str, ...]]:
        """The class grouping of paper 003 for ``classes`` in 8, 7, 6, 3.

        Raises:
            UsageError: for another number.
        """
        if classes not in self.groupings:
            allowed = ", ".join(str(g) for g in sorted(self.groupings, reverse=True))
            raise UsageError(f"--classes {classes} is not a known grouping; allowed: {allowed}")
        return self.groupings[classes]


@lru_cache(maxsize=8)
def _load(path: str) -> LabelMaps:
    raw: Any = load_yaml(path)
    try:
        canonical = tuple(str(n) for n in raw["canonical"])
        extra = tuple(str(n) for n in raw.get("extra", []))
        sources = {str(s): {int(k): str(v) for k, v in m.items()} for s, m in raw.get("sources", {}).items()}
        synonyms = {str(k).lower(): str(v) for k, v in raw.get("synonyms", {}).items()}
        groupings = {
            int(g): {str(new): tuple(str(o) for o in olds) for new, olds in m.items()}
            for g, m in raw.get("groupings", {}).items()
        }
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise ManifestError(f"{path} is not a valid label map file: {e}") from e
    known = set(canonical) | set(extra)
    for where, values in [("sources", [v for m in sources.values() for v in m.values()]), ("synonyms", synonyms.values())]:
        unknown = sorted(set(values) - known)
        if unknown:
            raise ManifestError(f"{path}: {where} name unknown classes {unknown}; known: {sorted(known)}")
    return LabelMaps(canonical, extra, sources, synonyms, groupings)


def load_label_mapping(path: str | Path) -> dict[str, str | None]:
    """Read a user ``--label-map`` YAML file: ``{folder_or_label_name: canonical_name}``.

    A name mapped to ``null`` (``contempt: null``) is a class to drop: an importer sends its rows
    to the rejects ledger (reason ``class_dropped_by_label_map``), ``evaluate`` and ``benchmark``
    leave them out and count them. Nothing is dropped without the file saying so.

    Raises:
        ManifestError: when it is not a mapping of names to known canonical names (or null), or
            when it drops every class.

    Example:
        >>> load_label_mapping("nhfi-labels.yaml")   # doctest: +SKIP
        {'Happiness': 'happy', 'contempt': None}
    """
    maps = LabelMaps.load()
    raw = load_yaml(path)
    if not isinstance(raw, dict) or not raw:
        raise ManifestError(f"--label-map {path} must be a YAML mapping of names to classes (null drops a class)")
    mapping = {str(k): (None if v is None else str(v)) for k, v in raw.items()}
    unknown = sorted({v for v in mapping.values() if v is not None} - set(maps.all_names))
    if unknown:
        raise ManifestError(f"--label-map {path} maps to unknown classes {unknown}; allowed: {', '.join(maps.all_names)} "
                            "or null (drop the class)")
    if all(v is None for v in mapping.values()):
        raise ManifestError(f"--label-map {path} maps every name to null: nothing would be kept")
    return mapping


def dropped_names(mapping: dict[str, str | None] | None) -> set[str]:
    """The names a label mapping drops (mapped to ``null``), lower-cased.

    Example:
        >>> sorted(dropped_names({"Contempt": None, "joy": "happy"}))
        ['contempt']
    """
    return {k.strip().lower() for k, v in (mapping or {}).items() if v is None}
