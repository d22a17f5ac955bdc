"""ferdata: build facial-expression-recognition datasets worth training on, and train on them.

Importing ferdata (any module) applies the command line's quiet-library policy: TensorFlow's C++
start-up lines and absl/TensorFlow Python logging are hidden (``TF_CPP_MIN_LOG_LEVEL=3`` unless
already set; see :func:`ferdata.progress.quiet_libraries`), and the ``ferdata`` logger prints
WARNING and above. ``FERDATA_VERBOSITY=debug`` (or ``info`` ...) changes it; ``debug`` leaves every
library as it is.

Example:
    >>> import ferdata
    >>> dd = ferdata.open_dataset("fer2013")   # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ferdata.errors import FerdataError, UsageError
from ferdata.progress import quiet_libraries as _quiet_libraries

_quiet_libraries()  # stdlib only: sets environment defaults and a finder for TensorFlow's first import

__version__ = "0.1.0"
__all__ = ["FerdataError", "UsageError", "__version__", "open_dataset"]

if TYPE_CHECKING:
    import datasets


def open_dataset(path: Any) -> datasets.DatasetDict:
    """Open a ferdata dataset directory (see :func:`ferdata.dataset.open_dataset`)."""
    from ferdata.dataset import open_dataset as _open

    return _open(path)
