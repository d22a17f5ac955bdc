"""The options of one training: what ``ferdata train`` takes, and what every refine training uses.

:class:`TrainConfig` holds the model, the optimiser and data settings of a training; run-level
choices (output, overwrite, verbosity) stay arguments of :func:`ferdata.train.run.train_run`.
``ferdata refine`` builds its trainings from the same class (:meth:`ferdata.refine.RefineConfig.train_config`).

Example:
    >>> TrainConfig(model="fer-cnn", epochs=40).batch_size
    64
"""

from __future__ import annotations

from dataclasses import dataclass

from ferdata.errors import UsageError

#: Share of the training split held out for validation when a dataset has no validation split.
DEFAULT_VAL_FRACTION = 0.2


@dataclass(frozen=True)
class TrainConfig:
    """Validated training options (defaults: ``ferdata train``'s).

    Example:
        >>> TrainConfig(model="tiny-cnn", epochs=5, augment="light").epochs
        5
        >>> TrainConfig(model="resnet")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ferdata.errors.UsageError: unknown model 'resnet'; allowed: shallow-cnn, ...
    """

    #: a ``ferdata.train.build_model`` name (``MODEL_NAMES``)
    model: str = "shallow-cnn"
    #: maximum epochs (the best validation-accuracy epoch is kept)
    epochs: int = 30
    batch_size: int = 64
    #: Adam's initial learning rate (halved on plateaus, see ``fit_model``)
    lr: float = 1e-3
    #: learning-rate schedule: ``plateau`` or ``cosine`` (``ferdata.train.fit.SCHEDULES``)
    schedule: str = "plateau"
    #: loss weights per class: ``none``, ``simple``, ``conservative`` or ``inverse``
    class_weights: str = "none"
    #: augmentation preset of the training batches (``AUGMENT_PRESETS``)
    augment: str = "none"
    #: input side (or (h, w)); None: the model's design size (``tiny-cnn``: the data's)
    image_size: int | tuple[int, int] | None = None
    #: 1 or 3; None: the model's (``tiny-cnn``: the data's)
    channels: int | None = None
    #: early-stopping patience in epochs (0: off); None: ``fit_model``'s default
    patience: int | None = None
    #: the held-out share of train when the dataset has no validation split
    val_fraction: float = DEFAULT_VAL_FRACTION
    #: ``efficientnet-b0`` backbone weights: ``imagenet``, None, or a local .h5 file (see ``build_model``)
    weights: str | None = "imagenet"
    #: let Keras download the ImageNet weights
    allow_download: bool = False
    #: seeds the split, the shuffle, the augmentation and the weights
    seed: int = 0
    #: train on a seeded random subset of at most this many training images (trials)
    limit: int | None = None
    #: train on the vote distribution of this column (``ferplus_votes``) instead of one-hot labels
    soft_labels: str | None = None

    def __post_init__(self) -> None:
        from ferdata.train.data import AUGMENT_PRESETS
        from ferdata.train.fit import check_schedule
        from ferdata.train.models import MODEL_NAMES
        from ferdata.train.weights import CLASS_WEIGHT_METHODS

        if self.model not in MODEL_NAMES:
            raise UsageError(f"unknown model {self.model!r}; allowed: {', '.join(MODEL_NAMES)}")
        if self.class_weights not in CLASS_WEIGHT_METHODS:
            raise UsageError(f"unknown class-weight method {self.class_weights!r}; "
                             f"allowed: {', '.join(CLASS_WEIGHT_METHODS)}")
        check_schedule(self.schedule)
        if self.augment not in AUGMENT_PRESETS:
            raise UsageError(f"unknown augmentation {self.augment!r}; allowed: {', '.join(AUGMENT_PRESETS)}")
        if self.batch_size < 1 or self.epochs < 1:
            raise UsageError(f"epochs and batch size must be at least 1, got {self.epochs} and {self.batch_size}")

    @property
    def fit_patience(self) -> int:
        """The early-stopping patience ``fit_model`` gets: ``patience``, or ``fit_model``'s default when None."""
        from ferdata.train.fit import DEFAULT_PATIENCE

        return DEFAULT_PATIENCE if self.patience is None else self.patience
