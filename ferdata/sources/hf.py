"""Import a Hugging Face dataset saved on disk (``save_to_disk``) or exported Hub layout.

The image column is decoded and validated like any image; the label column may be a ``ClassLabel``
or strings (names mapped through the synonyms of ``manifests/labels.yaml``) or integer codes of a
named source map (``--codes fer2013|affectnet|rafdb|alphabetical``). A single ``Dataset`` becomes
the ``train`` split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ferdata.errors import UsageError
from ferdata.labels import GROUPINGS, LabelMaps
from ferdata.sources import check_input, pixels_row, reject_row
from ferdata.steps import StepContext, StepOutput, register_step

if TYPE_CHECKING:
    import datasets


@dataclass
class HfConfig:
    """Options of the saved-Hugging-Face-dataset importer."""

    src: str = ""
    image_column: str = "image"
    label_column: str = "label"
    #: name of a numeric label map for integer labels without class names
    codes: str | None = None
    name: str | None = None
    classes: int = 7

    def __post_init__(self) -> None:
        if not self.src:
            raise UsageError("import_hf needs src: a directory written by save_to_disk or ferdata export")
        if self.classes not in GROUPINGS:
            raise UsageError(f"classes must be one of {', '.join(map(str, GROUPINGS))}, got {self.classes}")


def _load(src: str) -> datasets.DatasetDict:
    import datasets

    from ferdata.dataset import _check_dataset_dir

    path = check_input(src, kind="dataset directory", is_dir=True)
    if (path / "dataset_info.json").exists() and not (path / "dataset_dict.json").exists():
        return datasets.DatasetDict({"train": datasets.load_from_disk(str(path))})
    if (path / "dataset_dict.json").exists():
        return datasets.load_from_disk(str(_check_dataset_dir(path)))
    return datasets.load_dataset(str(path))  # Hub layout (parquet + README) exported by ferdata or others


def _label_lookup(ds: datasets.Dataset, config: HfConfig) -> dict[int, str]:
    """Canonical name of each known raw label value, looked up by value (never by position).

    For a ``ClassLabel`` the values are its indices; for integer codes they are the keys of the
    ``--codes`` map (RAF-DB's run 1..7). A value absent from the result is an ``unknown_code``.
    """
    import datasets

    feature = ds.features[config.label_column]
    maps = LabelMaps.load()
    if isinstance(feature, datasets.ClassLabel):
        raw = dict(enumerate(feature.names))
    elif config.codes:
        if config.codes not in maps.sources:
            raise UsageError(f"--codes {config.codes!r} is not a known label map; known maps: "
                             f"{', '.join(maps.source_names())}")
        return dict(maps.sources[config.codes])
    else:
        raise UsageError(f"label column {config.label_column!r} has no class names ({feature}); pass --codes with one of: "
                         f"{', '.join(maps.source_names())}")
    names = {}
    for value, name in raw.items():
        canonical = maps.canonical_name(name)
        if canonical is None:
            raise UsageError(f"unknown class name {name!r}; known names: {', '.join(sorted(maps.synonyms))}")
        names[value] = canonical
    return names


def _code(value: Any) -> int | None:
    """An integer label value, or None for a missing or non-integer one."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() else None


@register_step("import_hf", HfConfig, source=True)
def import_hf(data: None, config: HfConfig, ctx: StepContext) -> StepOutput:
    """Import a Hugging Face dataset saved on disk into the core schema."""
    import datasets

    from ferdata.dataset import partition_rejects
    from ferdata.images import ImageRejected, pixel_id, to_array
    from ferdata.labels.step import apply_grouping
    from ferdata.sources import SPLIT_COLUMN, row_features

    raw = _load(config.src)
    first = next(iter(raw.values()))
    for column in (config.image_column, config.label_column):
        if column not in first.column_names:
            raise UsageError(f"column {column!r} not found; columns: {', '.join(first.column_names)}")
    value_names = _label_lookup(first, config)
    names = LabelMaps.load().names_for(set(value_names.values()))
    known = ", ".join(map(str, sorted(value_names)))
    source = f"hf:{config.name or check_input(config.src).resolve().name}"

    def convert(batch: dict[str, list[Any]], indices: list[int], split: str) -> dict[str, list[Any]]:
        rows = []
        for image, label, index in zip(batch[config.image_column], batch[config.label_column], indices, strict=True):
            origin = f"{split}[{index}]"
            try:
                if image is None:
                    raise ImageRejected("no_image", "empty image cell")
                pixels = to_array(image)
            except ImageRejected as e:
                rows.append(reject_row(e.reason, e.details, origin=origin, source=source, split=split))
                continue
            name = value_names.get(_code(label))  # type: ignore[arg-type]
            if name is None:
                rows.append(reject_row("unknown_code", f"label {label!r} in column {config.label_column!r}; known: {known}",
                                       origin=origin, source=source, split=split, id=pixel_id(pixels)))
                continue
            rows.append(pixels_row(pixels, names.index(name), origin=origin, source=source, split=split))
        return {k: [r[k] for r in rows] for k in row_features(names)}

    parts, limited_out = {}, 0
    for split, ds in raw.items():
        if ctx.limit is not None:  # like every step with a dataset input: the first N rows of each split
            limited_out += max(0, len(ds) - ctx.limit)
            ds = ds.select(range(min(ctx.limit, len(ds))))
        ds = ds.cast_column(config.image_column, datasets.Image(decode=False))
        parts[split] = ds.map(convert, batched=True, with_indices=True, fn_kwargs={"split": split},
                              remove_columns=ds.column_names, features=row_features(names),
                              num_proc=ctx.num_proc if ctx.num_proc > 1 else None, desc=f"import {split}"
                              ).remove_columns([SPLIT_COLUMN])
    dd, rejects = partition_rejects(datasets.DatasetDict(parts), "import_hf")
    if config.classes != 7:
        dd, more = apply_grouping(dd, config.classes, step="import_hf")
        rejects += more
    return StepOutput(dd, rejects, info={"source": config.src, "limited_out": limited_out})
