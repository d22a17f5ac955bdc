"""The options of the refinement loop (:class:`RefineConfig`) and what a run returns (:class:`RefineResult`).

Example:
    >>> RefineConfig().mode, RefineConfig(mode="prune").rule
    ('flag', 'posterior')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferdata.errors import UsageError
from ferdata.refine.rules import RULES

if TYPE_CHECKING:
    from ferdata.train.config import TrainConfig

MODES = ("flag", "prune", "relabel")
#: The default mode: annotate suspects, change nothing (relabel is paper 000's loop, kept by name: on
#: fer2013-dev against FER+ it took label accuracy from 0.79 to 0.44; docs/refine.md).
DEFAULT_MODE = "flag"
#: Defaults that depend on the mode: (model, rounds, epochs (None: :func:`auto_epochs`), out-of-sample
#: folds, rule, augment, tta, learning-rate schedule).
MODE_DEFAULTS: dict[str, tuple[str, int, int | None, int | None, str, str, bool, str]] = {
    "relabel": ("fer-cnn", 5, 40, 1, "argmax", "none", False, "plateau"),  # paper 000 (in-sample predictions)
    # posterior (the model calibrated through the estimated noise channel): the highest F1 on
    # fer2013-train's real noise and its synthetic flips, ahead of argmax and cleanlab on the same
    # probabilities (docs/refine.md, *The defaults* under *At the size users run*).
    # shallow-cnn (three 3x3 convolutions), not refine-cnn: on synthetic flips of fer2013-dev it reached
    # out-of-sample accuracy 0.444 vs 0.364 on the same 3 folds x 12 epochs, in 124 s vs 432 s; then
    # per-image standardisation (shallow-cnn-std), light augmentation and the mirrored test-time average
    # raised it to 0.549 on 3 folds x 20 epochs (0.474 without standardisation; docs/refine.md).
    # Epochs None: a fixed training budget (auto_epochs), with the cosine schedule: 10 epochs on all of
    # fer2013-train (26k rows, one sitting on 2 cores: issue 24's <= 30 min), more on fewer rows, where
    # more training is what the detector needs (docs/refine.md, *At the size users run*).
    "prune": ("shallow-cnn-std", 1, None, 5, "posterior", "light", True, "cosine"),
    "flag": ("shallow-cnn-std", 1, None, 5, "posterior", "light", True, "cosine"),
}
#: flag/prune's default training length: about this many training images per model (10 epochs of the
#: 15,104 rows each fold model of fer2013-train trains on: the 28-minute pass on 2 cores)...
TRAIN_IMAGES = 150_000
#: ... in this many epochs at least and at most (fewer rows: more epochs; more rows: the run grows)
EPOCH_RANGE = (10, 40)


def auto_epochs(train_rows: int) -> int:
    """flag/prune's default epochs for models that train on ``train_rows`` rows (:data:`TRAIN_IMAGES`
    images, within :data:`EPOCH_RANGE`).

    Example:
        >>> auto_epochs(15_104), auto_epochs(6_375), auto_epochs(1_979), auto_epochs(300_000)
        (10, 24, 40, 10)
    """
    low, high = EPOCH_RANGE
    return int(min(high, max(low, round(TRAIN_IMAGES / max(1, int(train_rows))))))


@dataclass
class RefineConfig:
    """Options of the refinement loop (defaults: ``mode="flag"``, one out-of-sample 5-fold pass).

    ``model``, ``rounds``, ``epochs``, ``cv``, ``rule``, ``augment``, ``tta`` and ``schedule`` left at None (``"auto"`` for the
    model) take the mode's defaults (:data:`MODE_DEFAULTS`): paper 000 for ``relabel``; for
    ``flag`` and ``prune`` one out-of-sample 5-fold pass of ``shallow-cnn-std`` (epochs from the rows:
    :func:`auto_epochs`; cosine schedule, light augmentation, mirrored test-time average) and the
    posterior rule (``argmax`` and ``confident`` are the alternatives; docs/refine.md has the tables
    that chose).

    Example:
        >>> RefineConfig(model="tiny-cnn", rounds=3, epochs=5).mode
        'flag'
        >>> RefineConfig(mode="relabel").model, RefineConfig(mode="relabel").rounds
        ('fer-cnn', 5)
        >>> RefineConfig(mode="flag").cv, RefineConfig(mode="flag").model
        (5, 'shallow-cnn-std')
    """

    #: CNN trained every round (a ``ferdata.train.build_model`` name, or "auto": the mode's default)
    model: str = "auto"
    #: maximum number of trainings (the paper needed 5); None: 5 for relabel, 1 for flag/prune
    rounds: int | None = None
    #: epochs per training (the paper: 40 to 100); None: 40 for relabel, for flag/prune set by the run
    #: from the rows each model trains on (:func:`auto_epochs`: 10 on a whole FER2013, up to 40)
    epochs: int | None = None
    #: stop when every class's precision on the current set reaches this
    precision_target: float = 0.90
    #: ... or when every off-diagonal count of the confusion matrix is at most this ("single digits")
    offdiag_max: int = 9
    #: flag (annotate suspects, the default) | prune (suspects to the ledger) | relabel (paper 000's loop)
    mode: str = DEFAULT_MODE
    #: K for out-of-sample K-fold predictions each round; 1 = in-sample (the paper); None: 5 for flag/prune
    cv: int | None = None
    #: suspect rule: argmax (predicted != given) | posterior (error posterior, best expected F1) |
    #: confident (confident learning); None: the mode's
    rule: str | None = None
    #: flag exactly the K rows ranked most suspect (lowest normalised margin) instead of the rule
    top: int | None = None
    #: the guard: above this share of suspect rows nothing is flagged, pruned or relabelled (unless force)
    max_flag_rate: float = 0.5
    #: act on the suspects even when the guard says the model cannot judge the labels
    force: bool = False
    #: seed of the splits and of every training
    seed: int = 0
    #: also refine the validation split (never by default)
    include_validation: bool = False
    #: also refine the test split (never by default: cleaning a test set inflates its scores)
    include_test: bool = False
    batch_size: int = 64
    #: Adam's initial learning rate, halved on plateaus down to 1e-5 (the paper: 0.01 for its BatchNorm CNN)
    lr: float = 1e-3
    #: share of the current set used to pick the best epoch (the paper: 0.2)
    val_fraction: float = 0.2
    #: share carved out of the training data as the held-out split when there is no test/validation split
    heldout_fraction: float = 0.1
    #: augmentation preset of ferdata.train while training: none | paper001 | paper002 | light;
    #: None: none for relabel, light for flag/prune
    augment: str | None = None
    #: average each prediction with that of the horizontally mirrored image; None: on for flag/prune
    tta: bool | None = None
    #: early-stopping patience in epochs without a better validation accuracy (0: train all epochs)
    patience: int = 10
    #: learning-rate schedule of every training (``ferdata.train.fit.SCHEDULES``); None: the mode's
    schedule: str | None = None
    #: side of the square model input; None = the images' own size
    image_size: int | None = None
    #: train the same CNN on the original and on the refined data and compare them on the held-out split;
    #: None: on for relabel and prune, off for flag (flag changes nothing; its run is the flags)
    compare: bool | None = None

    def __post_init__(self) -> None:
        from ferdata.train.data import AUGMENT_PRESETS
        from ferdata.train.models import MODEL_NAMES

        if self.mode not in MODES:
            raise UsageError(f"unknown mode {self.mode!r}; valid modes: {', '.join(MODES)}")
        model, rounds, epochs, cv, rule, augment, tta, schedule = MODE_DEFAULTS[self.mode]
        if self.augment is None:
            self.augment = augment
        if self.tta is None:
            self.tta = tta
        if self.model == "auto":
            self.model = model
        if self.rounds is None:
            self.rounds = rounds
        if self.epochs is None:
            self.epochs = epochs
        if self.cv is None:
            self.cv = cv
        if self.rule is None:
            self.rule = rule
        if self.compare is None:
            self.compare = self.mode != "flag"
        if self.schedule is None:
            self.schedule = schedule
        if self.model not in MODEL_NAMES:
            raise UsageError(f"unknown model {self.model!r}; valid models: auto, {', '.join(MODEL_NAMES)}")
        if self.rule not in RULES:
            raise UsageError(f"unknown rule {self.rule!r}; valid rules: {', '.join(RULES)}")
        if self.top is not None and (not isinstance(self.top, int) or self.top < 1):
            raise UsageError(f"top must be a whole number >= 1, got {self.top!r}")
        if not 0 < float(self.max_flag_rate) <= 1:
            raise UsageError(f"max_flag_rate must be in (0, 1], got {self.max_flag_rate!r}")
        if not isinstance(self.rounds, int) or self.rounds < 1:
            raise UsageError(f"rounds must be a whole number >= 1, got {self.rounds!r}")
        if self.epochs is not None and (not isinstance(self.epochs, int) or self.epochs < 1):
            raise UsageError(f"epochs must be a whole number >= 1, got {self.epochs!r}")
        if not 0 < float(self.precision_target) <= 1:
            raise UsageError(f"precision_target must be in (0, 1], got {self.precision_target!r}")
        if not isinstance(self.offdiag_max, int) or self.offdiag_max < 0:
            raise UsageError(f"offdiag_max must be a whole number >= 0, got {self.offdiag_max!r}")
        if self.cv is not None and (not isinstance(self.cv, int) or self.cv < 1):
            raise UsageError(f"cv must be a whole number >= 2 (or 1/None for in-sample predictions), got {self.cv!r}")
        if self.batch_size < 1:
            raise UsageError(f"batch_size must be >= 1, got {self.batch_size!r}")
        if not self.lr > 0:
            raise UsageError(f"lr must be > 0, got {self.lr!r}")
        if not 0 < self.val_fraction < 1:
            raise UsageError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        if not 0 < self.heldout_fraction < 1:
            raise UsageError(f"heldout_fraction must be in (0, 1), got {self.heldout_fraction!r}")
        if not isinstance(self.patience, int) or self.patience < 0:
            raise UsageError(f"patience must be a whole number >= 0 (0: no early stopping), got {self.patience!r}")
        if self.augment not in AUGMENT_PRESETS:
            raise UsageError(f"unknown augment preset {self.augment!r}; valid presets: {', '.join(AUGMENT_PRESETS)}")
        if self.image_size is not None and self.image_size < 8:
            raise UsageError(f"image_size must be >= 8 pixels (or None for the images' size), got {self.image_size!r}")


    @property
    def out_of_sample(self) -> bool:
        """True when each round predicts with K-fold models that did not train on the row (cv >= 2)."""
        return self.cv is not None and self.cv > 1

    def train_config(self, *, image_size: int | None = None, channels: int | None = None) -> TrainConfig:
        """The options of every training of the run (rounds, folds, comparison) as a ``TrainConfig``.

        ``image_size`` and ``channels``: the input the run resolved from its images (square side).

        Example:
            >>> RefineConfig(model="tiny-cnn", epochs=5).train_config(image_size=16, channels=1).image_size
            16
        """
        from ferdata.train.config import TrainConfig

        return TrainConfig(model=self.model, epochs=int(self.epochs or 1), batch_size=self.batch_size, lr=self.lr,
                           augment=str(self.augment), image_size=image_size, channels=channels,
                           patience=self.patience, schedule=self.schedule, val_fraction=self.val_fraction, seed=self.seed)


@dataclass
class RefineResult:
    """What :func:`refine` returns (everything is also in the run directory)."""

    run_dir: Path
    dataset_dir: Path
    rounds: list[dict[str, Any]]
    stop_reason: str
    #: rows of comparison.csv (empty when ``compare`` is off)
    comparison: list[dict[str, Any]] = field(default_factory=list)
    #: per class: original and refined counts
    distribution: list[dict[str, Any]] = field(default_factory=list)
    #: the guard's verdict (accuracy vs chance, suspect share, triggered, reason, suspects acted on)
    guard: dict[str, Any] = field(default_factory=dict)
