"""ferdata: build facial-expression-recognition datasets worth training on, and train on them.

Example:
    >>> import ferdata
    >>> dd = ferdata.open_dataset("fer2013")   # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ferdata.errors import FerdataError, UsageError

__version__ = "0.1.0"
__all__ = ["FerdataError", "UsageError", "__version__", "open_dataset"]

if TYPE_CHECKING:
    import datasets


def open_dataset(path: Any) -> datasets.DatasetDict:
    """Open a ferdata dataset directory (see :func:`ferdata.dataset.open_dataset`)."""
    from ferdata.dataset import open_dataset as _open

    return _open(path)
