"""Crawl query manifests (``manifests/btfer-queries.yaml``): expression phrases × demographic grid.

A query manifest names, per class, the expression phrases to search for (a phrase and its
synonyms: ``happy``, ``smiling``, ``laughing``) and, once for all classes, the demographic terms
(``ethnicity``, ``gender``, ``age`` ...). The queries of a class are every phrase crossed with
every combination of demographic terms, written through one ``template``::

    template: "{age} {ethnicity} {gender} {expression} face"
    demographics:
      ethnicity: [asian, black, latino]
      gender: [man, woman]
      age: [young, elderly]
    classes:
      happy: [happy, smiling]
      sad: [sad, crying]

gives ``young asian man happy face``, ``young asian man smiling face``, ... 12 demographic cells
× 2 phrases for each class. Because the demographic grid is shared, every class draws on the same
demographic spread; the crawler visits the queries round-robin (rank 1 of every query, then rank
2 ...), so the kept images of each class are spread evenly over the cells.

The grid expands deterministically: cells in the order of the ``demographics`` mapping (first
dimension slowest), and within a cell the phrases in file order.

A manifest for the ``urls`` engine lists image URLs per class instead::

    urls:
      happy: [https://example.org/a.jpg, https://example.org/b.png]

Example:
    >>> grid = QueryGrid.load("btfer-queries")          # doctest: +SKIP
    >>> grid.queries("happy")[0].text                    # doctest: +SKIP
    'young asian man happy face'
"""

from __future__ import annotations

import itertools
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferdata.errors import ManifestError

_TOP_KEYS = ("format", "description", "template", "demographics", "classes", "urls")
_EXPRESSION = "expression"


@dataclass(frozen=True)
class Query:
    """One search query of a class: its text, the expression phrase and the demographic terms."""

    label: str
    text: str
    phrase: str
    terms: tuple[tuple[str, str], ...] = ()

    def cell(self) -> str:
        """The demographic cell as ``dim=term`` pairs (``""`` when there is no grid)."""
        return ",".join(f"{k}={v}" for k, v in self.terms)


@dataclass(frozen=True)
class QueryGrid:
    """A validated query manifest."""

    path: str
    template: str = "{expression}"
    demographics: dict[str, tuple[str, ...]] = field(default_factory=dict)
    classes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    urls: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def load(cls, name_or_path: str | Path) -> QueryGrid:
        """Load and validate a manifest given as a path or a packaged name (``btfer-queries``).

        Raises:
            ManifestError: naming the file and the problem.
        """
        from ferdata.resources import load_yaml, manifest_path

        path = manifest_path(name_or_path)
        return cls.from_dict(load_yaml(path), path=str(path))

    @classmethod
    def from_dict(cls, raw: Any, *, path: str = "<dict>") -> QueryGrid:
        """Validate the content of a manifest.

        Raises:
            ManifestError: naming the file and the problem.
        """
        if not isinstance(raw, dict):
            raise _fail(path, f"a query manifest must be a mapping with 'classes' or 'urls', got {type(raw).__name__}")
        unknown = sorted(set(map(str, raw)) - set(_TOP_KEYS))
        if unknown:
            raise _fail(path, f"unknown key {', '.join(map(repr, unknown))}; allowed keys: {', '.join(_TOP_KEYS)}")
        if not raw.get("classes") and not raw.get("urls"):
            raise _fail(path, "no 'classes' (expression phrases per class) and no 'urls' (image URLs per class)")
        classes = _class_lists(raw, "classes", path)
        urls = _class_lists(raw, "urls", path)
        for label, items in urls.items():
            for url in items:
                if not re.match(r"^https?://[^\s/]+", url):
                    raise _fail(path, f"'urls.{label}' entry {url!r} is not an http(s) URL")
        demographics = _demographics(raw, path)
        template = _template(raw, demographics, bool(classes), path)
        return cls(path=path, template=template, demographics=demographics, classes=classes, urls=urls)

    def labels(self) -> list[str]:
        """The classes of the manifest, in file order (``classes`` then any only in ``urls``)."""
        return list(dict.fromkeys([*self.classes, *self.urls]))

    def cells(self) -> list[tuple[tuple[str, str], ...]]:
        """Every combination of demographic terms, first dimension slowest."""
        dims = list(self.demographics)
        return [tuple(zip(dims, combo, strict=True)) for combo in itertools.product(*self.demographics.values())]

    def queries(self, label: str) -> list[Query]:
        """The expanded queries of a class: for each demographic cell, each phrase.

        Raises:
            ManifestError: for a class the manifest has no phrases for.
        """
        if label not in self.classes:
            raise ManifestError(f"{self.path}: no expression phrases for class {label!r}; "
                                f"classes: {', '.join(self.classes) or '(none)'}")
        out = []
        for cell in self.cells():
            for phrase in self.classes[label]:
                text = " ".join(self.template.format(expression=phrase, **dict(cell)).split())
                out.append(Query(label, text, phrase, cell))
        return out

    def summary(self) -> dict[str, Any]:
        """Facts recorded in ferdata.json: template, grid, queries per class."""
        return {
            "manifest": self.path,
            "template": self.template,
            "demographics": {k: list(v) for k, v in self.demographics.items()},
            "cells": len(self.cells()),
            "phrases": {k: list(v) for k, v in self.classes.items()},
            "queries_per_class": {k: len(v) * len(self.cells()) for k, v in self.classes.items()},
            "urls_per_class": {k: len(v) for k, v in self.urls.items()},
        }


def _fail(path: str, msg: str) -> ManifestError:
    return ManifestError(f"{path}: {msg}")


def _class_lists(raw: dict[str, Any], key: str, path: str) -> dict[str, tuple[str, ...]]:
    """``raw[key]`` as ``{class: (cleaned phrases or URLs)}``, every class a known one."""
    from ferdata.labels import LabelMaps

    maps = LabelMaps.load()
    known = (*maps.canonical, *maps.extra)
    section = raw.get(key) or {}
    if not isinstance(section, dict):
        raise _fail(path, f"'{key}' must map class names to lists, got {type(section).__name__}")
    out: dict[str, tuple[str, ...]] = {}
    for label, items in section.items():
        if str(label) not in known:
            raise _fail(path, f"unknown class {label!r} in '{key}'; classes: {', '.join(known)}")
        items = [items] if isinstance(items, str) else items
        if not isinstance(items, list) or not items:
            raise _fail(path, f"'{key}.{label}' must be a non-empty list of strings")
        cleaned = []
        for item in items:
            if not isinstance(item, str) or not item.strip():
                raise _fail(path, f"'{key}.{label}' has an empty or non-string entry {item!r}")
            cleaned.append(" ".join(item.split()))
        dup = sorted({x for x in cleaned if cleaned.count(x) > 1})
        if dup:
            raise _fail(path, f"'{key}.{label}' lists {', '.join(map(repr, dup))} more than once")
        out[str(label)] = tuple(cleaned)
    return out


def _demographics(raw: dict[str, Any], path: str) -> dict[str, tuple[str, ...]]:
    """The ``demographics`` grid: ``{dimension: (terms)}``."""
    demographics: dict[str, tuple[str, ...]] = {}
    raw_demo = raw.get("demographics") or {}
    if not isinstance(raw_demo, dict):
        raise _fail(path, f"'demographics' must map a dimension to a list of terms, got {type(raw_demo).__name__}")
    for dim, terms in raw_demo.items():
        if not isinstance(terms, list) or not terms or not all(isinstance(t, str) and t.strip() for t in terms):
            raise _fail(path, f"'demographics.{dim}' must be a non-empty list of non-empty strings")
        cleaned = [" ".join(t.split()) for t in terms]
        if len(set(cleaned)) != len(cleaned):
            raise _fail(path, f"'demographics.{dim}' lists a term more than once")
        demographics[str(dim)] = tuple(cleaned)
    return demographics


def _template(raw: dict[str, Any], demographics: dict[str, tuple[str, ...]], has_classes: bool, path: str) -> str:
    """The query template: ``{expression}`` and every demographic dimension, nothing else."""
    default_template = " ".join([*(f"{{{d}}}" for d in demographics), "{expression}"])
    template = raw.get("template", default_template)
    if not isinstance(template, str):
        raise _fail(path, f"'template' must be a string, got {type(template).__name__}")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise _fail(path, f"'template' {template!r} is not a valid template: {e}") from e
    if has_classes and _EXPRESSION not in fields:
        raise _fail(path, f"'template' {template!r} must contain {{expression}}")
    allowed = {_EXPRESSION, *demographics}
    bad = sorted(set(fields) - allowed)
    if bad:
        raise _fail(path, f"'template' uses {', '.join('{' + b + '}' for b in bad)}; "
                          f"allowed: {', '.join('{' + a + '}' for a in sorted(allowed))}")
    unused = [d for d in demographics if d not in fields]
    if unused:
        raise _fail(path, f"demographic dimension(s) {', '.join(unused)} missing from 'template' {template!r}: "
                          "every dimension must appear in the queries")
    return template
