"""Class weights for imbalanced training sets (no TensorFlow import: cheap to use anywhere).

Three published recipes, all returning 1.0 for the largest class's relative scale:

* ``simple`` (paper 001): ``(1/n_i) / min_j(1/n_j)`` = ``max(n) / n_i`` -- the largest class gets 1.0.
* ``conservative`` (paper 001): ``min(max(n) / n_i, 3)`` -- the same, capped at 3 against overfitting.
* ``inverse`` (paper 003): ``max(n) / (C * n_i)`` with ``C`` the number of classes -- the largest
  class gets ``1/C`` (paper 003, Table 1: happy 134,412 images -> 0.1250, anger 24,882 -> 0.6752).
* ``none``: every class 1.0.

A class with no example gets weight 0.0 (it never contributes to the loss) and is left out of
``max`` and ``C``.

Example:
    >>> class_weights({"happy": 100, "sad": 50}, "simple")
    {'happy': 1.0, 'sad': 2.0}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import overload

from ferdata.errors import UsageError

CLASS_WEIGHT_METHODS = ("none", "simple", "conservative", "inverse")
#: The cap of the conservative recipe (paper 001).
CONSERVATIVE_CAP = 3.0


@overload
def class_weights(counts: Mapping[str, int], method: str = ...) -> dict[str, float]: ...
@overload
def class_weights(counts: Sequence[int], method: str = ...) -> dict[int, float]: ...


def class_weights(counts: Mapping[str, int] | Sequence[int], method: str = "simple") -> dict:
    """Per-class loss weights from class counts.

    Args:
        counts: examples per class, as ``{name: count}`` or a sequence indexed by label id.
        method: one of ``none``, ``simple``, ``conservative``, ``inverse`` (see the module doc).

    Returns:
        Weights keyed like ``counts`` (names, or label ids -- the form ``keras.Model.fit`` takes).

    Raises:
        UsageError: for an unknown method, a negative count, or no example at all.

    Example:
        >>> class_weights([24882, 134412], "inverse")
        {0: 2.701, 1: 0.5}
    """
    if method not in CLASS_WEIGHT_METHODS:
        raise UsageError(f"unknown class-weight method {method!r}; allowed: {', '.join(CLASS_WEIGHT_METHODS)}")
    items = list(counts.items()) if isinstance(counts, Mapping) else list(enumerate(counts))
    for key, n in items:
        if int(n) < 0:
            raise UsageError(f"class {key!r} has a negative count {n}")
    present = [int(n) for _, n in items if int(n) > 0]
    if not present:
        raise UsageError("cannot compute class weights: every class has 0 examples")
    largest, num_present = max(present), len(present)
    out = {}
    for key, n in items:
        n = int(n)
        if n == 0:
            out[key] = 0.0
        elif method == "none":
            out[key] = 1.0
        elif method == "simple":
            out[key] = round(largest / n, 4)
        elif method == "conservative":
            out[key] = round(min(largest / n, CONSERVATIVE_CAP), 4)
        else:  # inverse
            out[key] = round(largest / (num_present * n), 4)
    return out
