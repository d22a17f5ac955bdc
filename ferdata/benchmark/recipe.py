"""A benchmark protocol as a file: the ``benchmark:`` section of a YAML, run by ``ferdata benchmark --recipe``.

A published protocol is re-run from its file; options given on the command line win over the
file's. Dataset directories are relative to the file's folder::

    benchmark:
      train: {fer48: data/fer48}
      test: {fer48: data/fer48, faces: data/faces, btfer: data/btfer}
      split: {btfer: test}            # the split a test set is scored on (optional)
      train_split: {}                 # the split a training set trains on (optional)
      model: shallow-cnn
      epochs: 5
      image_size: 48
      seeds: [0, 1, 2]
      classes: 3
      class_weights: simple
      augment: none

Example:
    >>> options = load_recipe("bench-paper001.yaml")          # doctest: +SKIP
    >>> options["train"]                                       # doctest: +SKIP
    {'fer48': '/work/data/fer48'}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ferdata.errors import ManifestError

#: keys of a ``benchmark:`` section; the named-dataset ones map names to directories or splits
NAMED_KEYS = ("train", "test", "split", "train_split")
OPTION_KEYS = ("model", "epochs", "image_size", "channels", "seeds", "classes", "class_weights", "augment",
               "batch_size", "lr", "patience", "queries", "bootstrap")


def _named(path: Path, key: str, value: Any, *, paths: bool) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ManifestError(f"{path}: benchmark.{key} must map dataset names to {'directories' if paths else 'splits'}")
    if not paths:
        return {k: str(v) for k, v in value.items()}
    return {k: str((path.parent / str(v)).resolve()) for k, v in value.items()}


def load_recipe(path: str | Path) -> dict[str, Any]:
    """The options of a benchmark file (see the module doc), dataset paths resolved.

    Returns:
        ``{"train": {name: dir}, "test": {...}, "split": {...}, "train_split": {...}, <option>: value}``;
        ``seeds`` as a comma-separated string, as the command line takes it.

    Raises:
        ManifestError: for a file without a ``benchmark`` mapping, an unknown key (naming the allowed
            ones) or a malformed dataset mapping.
    """
    from ferdata.resources import load_yaml

    path = Path(path)
    raw = load_yaml(path)
    section = raw.get("benchmark") if isinstance(raw, dict) else None
    if not isinstance(section, dict):
        raise ManifestError(f"{path}: a benchmark recipe is a YAML file with a 'benchmark:' mapping")
    unknown = sorted(set(section) - set(NAMED_KEYS) - set(OPTION_KEYS))
    if unknown:
        raise ManifestError(f"{path}: unknown keys {unknown} in benchmark; allowed: "
                            f"{', '.join((*NAMED_KEYS, *OPTION_KEYS))}")
    out: dict[str, Any] = {}
    for key in NAMED_KEYS:
        if key in section:
            out[key] = _named(path, key, section[key], paths=key in ("train", "test"))
    for key in OPTION_KEYS:
        if key in section:
            value = section[key]
            out[key] = ",".join(str(v) for v in value) if key == "seeds" and isinstance(value, list) else value
    return out
