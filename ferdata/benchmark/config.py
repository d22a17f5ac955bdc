"""The options of one benchmark: which datasets train, which test, and how every model is trained.

Example:
    >>> cfg = BenchmarkConfig(train=(DatasetSpec("fer", "fer2013"),), test=(DatasetSpec("btfer", "btfer"),),
    ...                       model="tiny-cnn", seeds=(0, 1))
    >>> cfg.train_config(1).seed
    1
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ferdata.errors import UsageError
from ferdata.labels.maps import GROUPINGS
from ferdata.train.config import TrainConfig

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset directory of the benchmark, and the splits it trains on and is tested on."""

    name: str
    path: str
    #: the split a model trains on (its ``validation`` split, when present, picks the best epoch)
    train_split: str = "train"
    #: the split it is tested on; None: ``test``, else the only split
    test_split: str | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise UsageError(f"dataset name {self.name!r} must be letters, digits, '.', '_' or '-' (it names files)")


def parse_named(values: Sequence[str], option: str) -> dict[str, str]:
    """``["fer=data/fer", ...]`` as ``{"fer": "data/fer"}``, in order.

    Raises:
        UsageError: for a value without ``=``, an empty side, or a name given twice.

    Example:
        >>> parse_named(["fer=data/fer", "btfer=out/btfer"], "--test")
        {'fer': 'data/fer', 'btfer': 'out/btfer'}
    """
    out: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name.strip() or not rest.strip():
            raise UsageError(f"{option} {value!r} must be NAME=VALUE, e.g. {option} fer=datasets/fer2013")
        if name.strip() in out:
            raise UsageError(f"{option} names {name.strip()!r} twice")
        out[name.strip()] = rest.strip()
    return out


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0,1,2"`` as ``(0, 1, 2)``.

    Raises:
        UsageError: for anything but distinct non-negative integers.

    Example:
        >>> parse_seeds("0, 1,2")
        (0, 1, 2)
    """
    try:
        seeds = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as e:
        raise UsageError(f"--seeds {text!r} must be comma-separated integers, e.g. 0,1,2") from e
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds {text!r} must be distinct non-negative integers, e.g. 0,1,2")
    return seeds


def dataset_specs(named: dict[str, str], *, train_splits: dict[str, str], test_splits: dict[str, str]
                  ) -> tuple[DatasetSpec, ...]:
    """:class:`DatasetSpec` of every ``NAME=DIR`` with its ``--train-split`` / ``--split``."""
    return tuple(DatasetSpec(name, path, train_splits.get(name, "train"), test_splits.get(name))
                 for name, path in named.items())


@dataclass(frozen=True)
class BenchmarkConfig:
    """Validated options of a benchmark (defaults: ``ferdata benchmark``'s).

    Every model of the benchmark is trained the same way (:meth:`train_config`); only the seed and
    the training set change.
    """

    train: tuple[DatasetSpec, ...]
    test: tuple[DatasetSpec, ...]
    model: str = "shallow-cnn"
    epochs: int = 30
    #: input side (or (h, w)); None: the model's design size (``tiny-cnn``: the data's)
    image_size: int | tuple[int, int] | None = None
    channels: int | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    #: the label space: paper 003's grouping (8, 7, 6, 3)
    classes: int = 7
    class_weights: str = "none"
    augment: str = "none"
    batch_size: int = 64
    lr: float = 1e-3
    patience: int | None = None
    #: the crawl query manifest whose demographic terms name the groups of groups.csv
    queries: str = "btfer-queries"
    #: bootstrap replicates of the 95 % intervals
    bootstrap: int = 1000
    #: extra notes (not part of the protocol)
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not self.train or not self.test:
            raise UsageError("a benchmark needs at least one --train NAME=DIR and one --test NAME=DIR")
        if self.classes not in GROUPINGS:
            raise UsageError(f"--classes {self.classes} is not allowed; allowed: {', '.join(map(str, GROUPINGS))}")
        if not self.seeds:
            raise UsageError("--seeds needs at least one seed")
        if self.bootstrap < 100:
            raise UsageError(f"--bootstrap must be at least 100 replicates, got {self.bootstrap}")
        paths: dict[str, str] = {}
        for spec in (*self.train, *self.test):
            known = paths.setdefault(spec.name, str(Path(spec.path).resolve()))
            if known != str(Path(spec.path).resolve()):
                raise UsageError(f"dataset name {spec.name!r} names two directories: {known} and {spec.path}")
        self.train_config(self.seeds[0])  # validates model, weights, augmentation, epochs

    def train_config(self, seed: int) -> TrainConfig:
        """The :class:`TrainConfig` of the model trained with ``seed``."""
        return TrainConfig(model=self.model, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                           class_weights=self.class_weights, augment=self.augment, image_size=self.image_size,
                           channels=self.channels, patience=self.patience, seed=seed)

    def protocol(self) -> dict[str, Any]:
        """What a resumed benchmark must share with the one it continues (training and label space)."""
        keys = ("model", "epochs", "image_size", "channels", "classes", "class_weights", "augment", "batch_size",
                "lr", "patience")
        data = asdict(self)
        data["patience"] = self.train_config(self.seeds[0]).fit_patience  # None means the default: compare values
        return {k: list(data[k]) if isinstance(data[k], tuple) else data[k] for k in keys}

    def datasets(self) -> dict[str, str]:
        """Every dataset name and its resolved directory."""
        return {spec.name: str(Path(spec.path).resolve()) for spec in (*self.train, *self.test)}

    def splits(self) -> dict[str, str]:
        """``{"train:NAME": split, "test:NAME": split or ""}``: the split choices a resumed benchmark must keep."""
        out = {f"train:{spec.name}": spec.train_split for spec in self.train}
        out.update({f"test:{spec.name}": spec.test_split or "" for spec in self.test})
        return out
