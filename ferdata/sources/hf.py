"""Import a Hugging Face dataset saved on disk (``save_to_disk``) or exported Hub layout
(``import_hf``), or a published dataset from the Hub or a Hub-layout folder (``import_hub``: a dataset
ferdata published comes back with its ids, lineage and provenance).

The image column is decoded and validated like any image; the label column may be a ``ClassLabel``
or strings (names mapped through the synonyms of ``manifests/labels.yaml``) or integer codes of a
named source map (``--codes fer2013|affectnet|rafdb|alphabetical``). A single ``Dataset`` becomes
the ``train`` split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ferdata.columns import CORE_COLUMNS
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


def _load(src: str, cache_dir: Any = None) -> datasets.DatasetDict:
    import datasets

    from ferdata.dataset import _check_dataset_dir

    path = check_input(src, kind="dataset directory", is_dir=True)
    if (path / "dataset_info.json").exists() and not (path / "dataset_dict.json").exists():
        return datasets.DatasetDict({"train": datasets.load_from_disk(str(path))})
    if (path / "dataset_dict.json").exists():
        return datasets.load_from_disk(str(_check_dataset_dir(path)))
    # Hub layout (parquet + README) exported by ferdata or others; a fresh cache: datasets would otherwise
    # serve an earlier load of a folder whose files were since rewritten (same paths, new rows)
    return datasets.load_dataset(str(path), cache_dir=str(cache_dir) if cache_dir else None)


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


def _limited(ds: datasets.Dataset, ctx: StepContext) -> tuple[datasets.Dataset, int]:
    """Like every step with a dataset input, ``--limit N`` keeps the first N rows of each split."""
    if ctx.limit is None:
        return ds, 0
    return ds.select(range(min(ctx.limit, len(ds)))), max(0, len(ds) - ctx.limit)


def _convert(raw: datasets.DatasetDict, config: HfConfig, ctx: StepContext, *, source: str, step: str,
             origin_prefix: str = "") -> tuple[datasets.DatasetDict, list[dict[str, Any]], int]:
    """Rows of any image-classification dataset into the core schema: each row enters here (new lineage)."""
    import datasets

    from ferdata.dataset import partition_rejects
    from ferdata.images import ImageRejected, pixel_id, to_array
    from ferdata.sources import SPLIT_COLUMN, row_features

    first = next(iter(raw.values()))
    for column in (config.image_column, config.label_column):
        if column not in first.column_names:
            raise UsageError(f"column {column!r} not found; columns: {', '.join(first.column_names)}")
    value_names = _label_lookup(first, config)
    names = LabelMaps.load().names_for(set(value_names.values()))
    known = ", ".join(map(str, sorted(value_names)))

    def convert(batch: dict[str, list[Any]], indices: list[int], split: str) -> dict[str, list[Any]]:
        rows = []
        for image, label, index in zip(batch[config.image_column], batch[config.label_column], indices, strict=True):
            origin = f"{origin_prefix}{split}[{index}]"
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
        ds, left = _limited(ds, ctx)
        limited_out += left
        ds = ds.cast_column(config.image_column, datasets.Image(decode=False))
        parts[split] = ds.map(convert, batched=True, with_indices=True, fn_kwargs={"split": split},
                              remove_columns=ds.column_names, features=row_features(names),
                              num_proc=ctx.num_proc if ctx.num_proc > 1 else None, desc=f"import {split}"
                              ).remove_columns([SPLIT_COLUMN])
    dd, rejects = partition_rejects(datasets.DatasetDict(parts), step)
    return dd, rejects, limited_out


@register_step("import_hf", HfConfig, source=True)
def import_hf(data: None, config: HfConfig, ctx: StepContext) -> StepOutput:
    """Import a Hugging Face dataset saved on disk into the core schema."""
    from ferdata.dataset import label_names
    from ferdata.labels.step import apply_grouping

    raw = _load(config.src, ctx.scratch())
    source = f"hf:{config.name or check_input(config.src).resolve().name}"
    dd, rejects, limited_out = _convert(raw, config, ctx, source=source, step="import_hf")
    if config.classes != 7 or "contempt" in label_names(dd):  # --classes 7 drops contempt, as every importer does
        dd, more = apply_grouping(dd, config.classes, step="import_hf")
        rejects += more
    return StepOutput(dd, rejects, info={"source": config.src, "limited_out": limited_out})


# ---------------------------------------------------------------- a published dataset back: ferdata import hub

#: Columns that make a dataset ferdata's own: its rows are kept as published (ids and lineage verified).
FERDATA_COLUMNS = CORE_COLUMNS


@dataclass
class HubConfig:
    """Options of ``ferdata import hub``: a Hub dataset (``user/name[@revision]``) or a local Hub-layout folder."""

    repo: str = ""
    image_column: str = "image"
    label_column: str = "label"
    #: numeric label map, for a dataset whose integer labels have no class names (not ferdata's)
    codes: str | None = None
    #: regroup the classes (8, 7, 6, 3); None keeps the classes as published
    classes: int | None = None

    def __post_init__(self) -> None:
        from pathlib import Path

        from ferdata.hub import parse_hub_ref

        if not self.repo:
            raise UsageError("import_hub needs repo: user/name[@revision] or a folder in the Hub layout")
        if not Path(self.repo).is_dir():
            parse_hub_ref(self.repo)
        if self.classes is not None and self.classes not in GROUPINGS:
            raise UsageError(f"classes must be one of {', '.join(map(str, GROUPINGS))}, got {self.classes}")


def _card_facts(folder: Any) -> dict[str, Any]:
    """The published card's license, name and ``ferdata`` provenance block (empty without a card)."""
    from huggingface_hub import DatasetCard

    card = folder / "README.md"
    if not card.exists():
        return {}
    data = DatasetCard(card.read_text(encoding="utf-8")).data.to_dict()
    return {k: data[k] for k in ("license", "pretty_name", "ferdata") if data.get(k) is not None}


def _verified(raw: datasets.DatasetDict, ctx: StepContext, *, step: str
              ) -> tuple[datasets.DatasetDict, list[dict[str, Any]], int]:
    """ferdata's own rows, kept as published (labels, ids, lineage and every step column); a row whose
    image does not decode or whose pixels do not hash to its ``id`` goes to the ledger."""
    import datasets

    from ferdata.dataset import REJECT_DETAILS, REJECT_REASON, label_names, partition_rejects
    from ferdata.images import ImageRejected, pixel_id, to_array

    names = label_names(raw)
    maps = LabelMaps.load()
    unknown = [n for n in names if maps.canonical_name(n) != n]
    if unknown:
        raise UsageError(f"class names {', '.join(map(repr, unknown))} are not ferdata's; known names: "
                         f"{', '.join(sorted(maps.synonyms))}")

    def check(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        reasons, details = [], []
        for image, rid in zip(batch["image"], batch["id"], strict=True):
            try:
                if image is None:
                    raise ImageRejected("no_image", "empty image cell")
                got = pixel_id(to_array(image))
            except ImageRejected as e:
                reasons.append(e.reason)
                details.append(e.details)
                continue
            bad = got != rid
            reasons.append("id_mismatch" if bad else "")
            details.append(f"published id {rid} but the pixels hash to {got}" if bad else "")
        return {REJECT_REASON: reasons, REJECT_DETAILS: details}

    parts, limited_out = {}, 0
    for split, ds in raw.items():
        ds, left = _limited(ds, ctx)
        limited_out += left
        image_feature = ds.features["image"]
        ds = ds.cast_column("image", datasets.Image(decode=False))
        ds = ds.map(check, batched=True, num_proc=ctx.num_proc if ctx.num_proc > 1 else None,
                    desc=f"verify {split}")
        parts[split] = ds.cast_column("image", image_feature)
    dd, rejects = partition_rejects(datasets.DatasetDict(parts), step)
    return dd, rejects, limited_out


@register_step("import_hub", HubConfig, source=True)
def import_hub(data: None, config: HubConfig, ctx: StepContext) -> StepOutput:
    """Import a published dataset (Hub repository or local Hub-layout folder) into a dataset directory.

    A dataset ferdata published comes back as it was: labels, ids, ``root_id``/``parent_id`` and
    every step column, each row's id checked against its pixels; the card's provenance is kept in
    the manifest (``upstream``). Any other image-classification dataset is converted like
    ``import hf`` (its rows enter here). Offline (``HF_HUB_OFFLINE=1``) it reads the local cache.
    """
    from pathlib import Path

    import datasets

    from ferdata.hub import fetch, parse_hub_ref
    from ferdata.labels.step import apply_grouping

    local = Path(config.repo)
    upstream: dict[str, Any]
    if local.is_dir():
        folder, upstream = local, {"folder": local.resolve().name}
        prefix = ""
    else:
        repo_id, revision = parse_hub_ref(config.repo)
        folder = fetch(repo_id, revision)
        upstream = {"repo_id": repo_id, "revision": revision or "main", "commit": folder.name}
        prefix = f"hf://datasets/{repo_id}@{folder.name[:12]}/"
    try:
        raw = datasets.load_dataset(str(folder), cache_dir=str(ctx.scratch()))  # fresh: see _load
    except Exception as e:  # no data files, unreadable parquet ...: one line naming the input
        raise UsageError(f"{config.repo}: not a loadable Hub-layout dataset ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(raw, datasets.DatasetDict):
        raw = datasets.DatasetDict({"train": raw})
    facts = _card_facts(folder)
    upstream.update({k: v for k, v in facts.items() if k != "ferdata"})
    if facts.get("ferdata"):
        upstream["provenance"] = facts["ferdata"]
    first = next(iter(raw.values()))
    ours = all(c in first.column_names for c in FERDATA_COLUMNS) and isinstance(first.features["label"],
                                                                                  datasets.ClassLabel)
    if ours:
        dd, rejects, limited_out = _verified(raw, ctx, step="import_hub")
    else:
        hf_config = HfConfig(src=str(folder), image_column=config.image_column, label_column=config.label_column,
                             codes=config.codes, classes=config.classes or 7)
        source = f"hf:{upstream.get('repo_id') or upstream['folder']}"
        dd, rejects, limited_out = _convert(raw, hf_config, ctx, source=source, step="import_hub",
                                            origin_prefix=prefix)
    if config.classes is not None and (ours or config.classes != 7):
        dd, more = apply_grouping(dd, config.classes, step="import_hub")  # type: ignore[arg-type]
        rejects += more
    manifest: dict[str, Any] = {"upstream": upstream}
    weights = (facts.get("ferdata") or {}).get("class_weights")
    if weights and not rejects and ctx.limit is None and config.classes is None:
        manifest["class_weights"] = weights  # facts about exactly these rows
    info = {k: upstream[k] for k in ("repo_id", "revision", "commit", "folder") if k in upstream}
    info.update(layout="ferdata" if ours else "converted", limited_out=limited_out)
    return StepOutput(dd, rejects, info=info, manifest=manifest)
