"""How many worker processes it is safe to fork: the one rule every worker pool goes through.

Both :mod:`ferdata.dataset` (``save_to_disk``) and :mod:`ferdata.steps` (``Dataset.map`` of every
step) import it from here, so neither imports the other for it. ``from ferdata.steps import
safe_num_proc`` keeps working (re-exported there).
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger(__name__)

#: the ``what`` names already warned about (later ones log at info level)
_warned_tf_fork: set[str] = set()


def safe_num_proc(num_proc: int | None, *, what: str = "worker pool") -> int:
    """The number of worker processes it is safe to fork now: 1 once TensorFlow is imported.

    A process forked after TensorFlow has started its threads can deadlock, so once
    ``"tensorflow" in sys.modules`` every ferdata worker pool (``Dataset.map``, ``save_to_disk``)
    runs in this one process instead, and the log says so (a warning the first time per ``what``).

    Example:
        >>> safe_num_proc(4) if "tensorflow" not in sys.modules else 4
        4
    """
    n = max(1, int(num_proc or 1))
    if n > 1 and "tensorflow" in sys.modules:
        log = logger.info if what in _warned_tf_fork else logger.warning
        _warned_tf_fork.add(what)
        log("%s: TensorFlow is loaded in this process, so no worker processes are forked "
            "(--num-proc %d runs as 1)", what, n)
        return 1
    return n
