"""Import class-per-folder datasets (NHFI, FER2013 image folders, RAF-DB ...).

Layouts: ``SRC/<class>/<image>`` (everything goes to ``train``) or ``SRC/<split>/<class>/<image>``
when every top-level folder is a split name (train/training, val/valid/validation/PublicTest,
test/testing/PrivateTest). Folder names map to classes through the synonyms of
``manifests/labels.yaml`` (anger -> angry, happiness -> happy, ...) or a user ``--label-map`` YAML;
unknown folder names are one error naming every one with its closest known name, before any work.
A folder the ``--label-map`` maps to ``null`` (``contempt: null``) is dropped: its files go to the
rejects ledger with reason ``class_dropped_by_label_map``.

``classes`` means what it means for every importer: 7 is the canonical seven, so a ``contempt``
folder's images go to the ledger (``class_not_in_grouping``) as the FER2013 importer does; 8 keeps
contempt; 6 and 3 regroup (paper 003).

Every file is read and decoded (any format PIL reads); an unusable file (zero bytes, not an image,
truncated, too many pixels) goes to the rejects ledger with its path. CMYK, 16-bit, palette and RGBA
images are converted (see :mod:`ferdata.images`); PNG/JPEG files that need no conversion are stored
byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferdata.errors import UsageError
from ferdata.labels import GROUPINGS, LabelMaps, load_label_mapping
from ferdata.labels.maps import dropped_names
from ferdata.sources import SPLIT_NAMES, check_input, file_row, reject_row, rows_to_dataset
from ferdata.steps import StepContext, StepOutput, register_step


@dataclass
class FolderConfig:
    """Options of the class-folder importer."""

    src: str = ""
    #: YAML file mapping folder names to canonical classes (default: the synonyms of labels.yaml)
    label_map: str | None = None
    #: dataset name recorded in ``source`` as ``folder:NAME`` (default: the folder's name)
    name: str | None = None
    #: class grouping (paper 003): 7 the canonical seven (contempt to the ledger), 8 keeps contempt, 6 or 3 regroup
    classes: int = 7

    def __post_init__(self) -> None:
        if not self.src:
            raise UsageError("import_folder needs src: a directory of class folders")
        if self.classes not in GROUPINGS:
            raise UsageError(f"classes must be one of {', '.join(map(str, GROUPINGS))}, got {self.classes}")


def split_names_help() -> str:
    """The accepted split-folder names, grouped: ``train (training), validation (val, valid, ...), test (...)``."""
    groups: dict[str, list[str]] = {}
    for name, split in SPLIT_NAMES.items():
        groups.setdefault(split, [])
        if name != split:
            groups[split].append(name)
    return ", ".join(f"{split} ({', '.join(alts)})" if alts else split for split, alts in groups.items())


def _suggestion(name: str, known: list[str]) -> str:
    """`` (did you mean happy?)`` for the closest known name, or a split hint, or nothing."""
    import difflib

    close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]}?)"
    lowered = name.lower()
    if any(word in lowered for word in ("train", "test", "val", "dev", "eval")):
        return " (a split folder? not a split folder name)"
    return ""


def unknown_folders_message(src: Path, unknown: list[Path], known: list[str], *, label_map: bool,
                            split_mix: Sequence[Path] = ()) -> str:
    """One line naming every unknown class folder (with its closest known name) and, when split and
    class folders are mixed at the top of ``src``, what split folders are.

    Example:
        >>> unknown_folders_message(Path("src"), [Path("src/happyy"), Path("src/sadd")], ["happy", "sad"],
        ...                         label_map=False)     # doctest: +ELLIPSIS
        "unknown class folders in src: 'happyy' (did you mean happy?), 'sadd' (did you mean sad?); known names: ..."
    """
    parts = []
    if unknown:
        named = ", ".join(f"{str(p.relative_to(src))!r}{_suggestion(p.name, known)}" for p in unknown)
        what = "unknown class folder" if len(unknown) == 1 else "unknown class folders"
        fix = "add them to the --label-map file" if label_map else "rename them or pass --label-map FILE.yaml"
        parts.append(f"{what} in {src}: {named}; known names: {', '.join(known)} ({fix})")
    if split_mix:
        splits = ", ".join(repr(p.name) for p in split_mix)
        parts.append(f"{splits} {'is a split folder' if len(split_mix) == 1 else 'are split folders'}, but {src} "
                     "also holds other folders: use SRC/<class>/<image>, or SRC/<split>/<class>/<image> with only "
                     f"split folders at the top (split folder names: {split_names_help()})")
    elif unknown and any("(a split folder?" in _suggestion(p.name, known) for p in unknown):
        parts.append(f"split folder names: {split_names_help()}")
    return "; ".join(parts)


def scan_folders(src: Path, mapping: dict[str, str | None] | None) -> list[tuple[str, str, str]]:
    """Return ``(path, class_name, split)`` for every file, in sorted order; ``class_name`` is ``""``
    for a folder the ``mapping`` drops (mapped to null).

    Every folder name is checked before any file is listed: all unknown ones are named in one error,
    each with its closest known name.

    Raises:
        UsageError: for folder names that map to no class (all of them), split folders mixed with
            other folders at the top, or no class folders at all.
    """
    maps = LabelMaps.load()
    top = sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not top:
        raise UsageError(f"{src} has no class folders (expected SRC/<class>/<image> or SRC/<split>/<class>/<image>)")
    split_dirs = [p for p in top if p.name.lower() in SPLIT_NAMES]
    if len(split_dirs) == len(top):
        roots = [(SPLIT_NAMES[p.name.lower()], p) for p in top]
        split_mix: list[Path] = []
    else:
        roots = [("train", src)]
        split_mix = split_dirs
    classes: list[tuple[Path, str, str]] = []
    unknown: list[Path] = []
    dropped = dropped_names(mapping)
    for split, root in roots:
        for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if class_dir in split_mix:
                continue
            name = maps.canonical_name(class_dir.name, mapping=mapping)
            if class_dir.name.strip().lower() in dropped:
                classes.append((class_dir, "", split))
            elif name is None:
                unknown.append(class_dir)
            else:
                classes.append((class_dir, name, split))
    if unknown or split_mix:
        known = sorted(k.lower() for k in mapping) if mapping else sorted(maps.synonyms)
        raise UsageError(unknown_folders_message(src, unknown, known, label_map=mapping is not None,
                                                 split_mix=split_mix))
    files = []
    for class_dir, name, split in classes:
        for file in sorted(class_dir.rglob("*")):
            if file.is_file() and not file.name.startswith("."):
                files.append((str(file), name, split))
    return files


def generate_rows(files: list[tuple[str, str, str]], src: str, names: tuple[str, ...], source: str) -> Iterator[dict[str, Any]]:
    """Yield one row per file (a reject row for an unusable one)."""
    for path, class_name, split in files:
        origin = str(Path(path).relative_to(src))
        if not class_name:
            yield reject_row("class_dropped_by_label_map", json.dumps({"folder": Path(path).parent.name}),
                             origin=origin, source=source, split=split)
            continue
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            yield reject_row("unreadable", str(e), origin=origin, source=source, split=split)
            continue
        yield file_row(data, names.index(class_name), origin=origin, source=source, split=split)


@register_step("import_folder", FolderConfig, source=True)
def import_folder(data: None, config: FolderConfig, ctx: StepContext) -> StepOutput:
    """Import a class-per-folder dataset (SRC/<class>/* or SRC/<split>/<class>/*)."""
    from ferdata.labels.step import apply_grouping

    src = check_input(config.src, kind="source folder", is_dir=True)
    mapping = load_label_mapping(config.label_map) if config.label_map else None
    files = scan_folders(src, mapping)
    if not files:
        raise UsageError(f"no files found in the class folders of {src}")
    limited_out = max(0, len(files) - ctx.limit) if ctx.limit is not None else 0  # recorded (a trial)
    if ctx.limit is not None:
        files = files[: ctx.limit]
    names = LabelMaps.load().names_for({name for _, name, _ in files if name})
    source = f"folder:{config.name or src.resolve().name}"
    # datasets shards list-valued gen_kwargs (files) over the processes; names is a tuple so it is not sharded
    gen_kwargs = {"files": files, "src": str(src), "names": tuple(names), "source": source}
    dd, rejects = rows_to_dataset(generate_rows, gen_kwargs, names, cache_dir=ctx.scratch(),
                                  num_proc=max(1, min(ctx.num_proc, len(files))), step="import_folder")
    if config.classes != 7 or len(names) != 7:  # --classes 7 drops contempt, as import fer2013 does
        dd, more = apply_grouping(dd, config.classes, step="import_folder")
        rejects += more
    return StepOutput(dd, rejects, info={"source": str(src), "files": len(files), "limited_out": limited_out})

