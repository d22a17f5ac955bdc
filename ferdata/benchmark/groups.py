"""Demographic groups of crawled test rows: the terms of their ``query`` in the crawl's query grid.

``ferdata crawl`` records the search query of every image (``query``: ``young asian man happy
face``), made from the grid of ``manifests/btfer-queries.yaml`` (ethnicity x gender x age). A
query is read back into its terms by looking it up among the grid's expanded queries; a query the
grid did not make (another manifest, edited text) is read term by term, each dimension's terms
matched as whole words, longest first (``middle eastern`` before ``middle``). A dimension with no
term in the query is ``(none)``, so the groups of a dimension always add up to the rows scored.

Example:
    >>> grid = QueryGrid.from_dict({"template": "{age} {gender} {expression} face",
    ...                             "demographics": {"gender": ["man", "woman"], "age": ["young", "elderly"]},
    ...                             "classes": {"happy": ["happy"]}})
    >>> parse_query("elderly woman happy face", grid)
    {'gender': 'woman', 'age': 'elderly'}
    >>> parse_query("happy face", grid)
    {'gender': '(none)', 'age': '(none)'}
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from ferdata.sources.queries import QueryGrid

NONE_TERM = "(none)"
QUERY_COLUMN = "query"


def _expanded(grid: QueryGrid) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for label in grid.classes:
        for query in grid.queries(label):
            out.setdefault(query.text.lower(), dict(query.terms))
    return out


@lru_cache(maxsize=4)
def _patterns(terms: tuple[tuple[str, tuple[str, ...]], ...]) -> tuple[tuple[str, tuple[tuple[str, re.Pattern[str]], ...]], ...]:
    out = []
    for dim, values in terms:
        ordered = sorted(values, key=len, reverse=True)
        out.append((dim, tuple((v, re.compile(rf"(?<![\w-]){re.escape(v.lower())}(?![\w-])")) for v in ordered)))
    return tuple(out)


def parse_query(text: str | None, grid: QueryGrid, *, expanded: dict[str, dict[str, str]] | None = None
                ) -> dict[str, str]:
    """``{dimension: term}`` of one query (``(none)`` for a dimension it names no term of)."""
    lookup = expanded if expanded is not None else _expanded(grid)
    key = " ".join((text or "").lower().split())
    found = lookup.get(key)
    if found is not None:
        return {dim: found.get(dim, NONE_TERM) for dim in grid.demographics}
    terms = tuple((dim, tuple(values)) for dim, values in grid.demographics.items())
    out = {}
    for dim, patterns in _patterns(terms):
        out[dim] = next((value for value, pattern in patterns if pattern.search(key)), NONE_TERM)
    return out


def parse_queries(texts: Sequence[str | None], grid: QueryGrid) -> dict[str, list[str]]:
    """``{dimension: [term of each row]}`` for a column of queries.

    Example:
        >>> parse_queries(["young man happy face", "elderly woman happy face"], grid)   # doctest: +SKIP
        {'gender': ['man', 'woman'], 'age': ['young', 'elderly']}
    """
    expanded = _expanded(grid)
    cache: dict[str | None, dict[str, str]] = {}
    out: dict[str, list[str]] = {dim: [] for dim in grid.demographics}
    for text in texts:
        if text not in cache:
            cache[text] = parse_query(text, grid, expanded=expanded)
        for dim, term in cache[text].items():
            out[dim].append(term)
    return out
