"""One progress and logging policy for the whole package.

Progress bars are ``tqdm.auto`` bars on stderr with a ``desc``; :func:`disable_progress_bars`
(or ``-q/--quiet`` on the CLI) turns them all off, Hugging Face ``datasets`` bars included.
Only the ``ferdata`` root logger is configured: WARNING by default, or the level named by the
``FERDATA_VERBOSITY`` environment variable, or :func:`set_verbosity`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_bars_disabled = False
_root = logging.getLogger("ferdata")


def _configure_root() -> None:
    if _root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    _root.addHandler(handler)
    _root.propagate = False
    level = os.environ.get("FERDATA_VERBOSITY", "WARNING").upper()
    _root.setLevel(getattr(logging, level, logging.WARNING))


_configure_root()


def set_verbosity(level: int | str) -> None:
    """Set the level of the ``ferdata`` logger.

    Args:
        level: a ``logging`` level or its name (``"INFO"``, ``"debug"`` ...).

    Example:
        >>> set_verbosity("INFO")
    """
    if isinstance(level, str):
        level = getattr(logging, level.upper(), logging.WARNING)
    _root.setLevel(level)


def disable_progress_bars() -> None:
    """Turn every ferdata (and ``datasets``) progress bar off."""
    global _bars_disabled
    _bars_disabled = True
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass


def enable_progress_bars() -> None:
    """Turn progress bars back on."""
    global _bars_disabled
    _bars_disabled = False
    try:
        import datasets

        datasets.enable_progress_bars()
    except ImportError:  # pragma: no cover
        pass


def progress_bars_disabled() -> bool:
    """Return True when progress bars are off."""
    return _bars_disabled


def progress(iterable: Iterable[T], *, desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Wrap a long loop in a tqdm bar on stderr (or nothing when bars are off).

    Example:
        >>> for _ in progress(range(3), desc="demo"):
        ...     pass
    """
    if _bars_disabled:
        yield from iterable
        return
    from tqdm.auto import tqdm

    yield from tqdm(iterable, desc=desc, total=total, unit=unit, file=sys.stderr, dynamic_ncols=True)
