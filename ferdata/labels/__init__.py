"""Labels: named label maps and class groupings, the ``classes`` step, and label-column agreement.

- :mod:`ferdata.labels.maps`: :class:`LabelMaps` (``manifests/labels.yaml``), ``GROUPINGS``,
  :func:`load_label_mapping` (a user ``--label-map`` file).
- :mod:`ferdata.labels.step`: the ``classes`` step (paper 003's 8 / 7 / 6 / 3 class groupings),
  :func:`apply_grouping`.
- :mod:`ferdata.labels.compare`: :func:`compare_labels`, agreement of two label columns
  (``ferdata labels compare``).

Only the maps are imported here; the step and compare names load on first use, so importing this
package stays light.

Example:
    >>> from ferdata.labels import LabelMaps
    >>> LabelMaps.load().code_to_name("fer2013", 6)
    'neutral'
"""

from __future__ import annotations

import importlib
from typing import Any

from ferdata.labels.maps import GROUPINGS, LabelMaps, load_label_mapping

_LAZY = {
    "ClassesConfig": "ferdata.labels.step",
    "apply_grouping": "ferdata.labels.step",
    "classes_step": "ferdata.labels.step",
    "VOTES_COLUMN": "ferdata.labels.compare",
    "agreement_table": "ferdata.labels.compare",
    "compare_labels": "ferdata.labels.compare",
    "format_table": "ferdata.labels.compare",
}

__all__ = ["GROUPINGS", "LabelMaps", "load_label_mapping", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
