"""Import AffectNet's layout: ``images/<id>.jpg`` + ``annotations/<id>_exp.npy``.

``SRC`` is either one such folder (everything goes to ``train``) or holds ``train_set/`` and
``val_set/`` (AffectNet's release layout) which become ``train`` and ``validation``. The
expression code in ``<id>_exp.npy`` is read with ``numpy.load(allow_pickle=False)`` and mapped by
the ``affectnet`` label map (0 neutral, 1 happy, 2 sad, 3 surprise, 4 fear, 5 disgust, 6 anger,
7 contempt). Codes 8-10 (none, uncertain, no-face in the full release) and missing or unreadable
annotations go to the rejects ledger. Contempt is kept as an 8th class; ``--classes 7`` drops it
(paper 000 does).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ferdata.errors import UsageError
from ferdata.labels import GROUPINGS, LabelMaps
from ferdata.sources import check_input, file_row, reject_row, rows_to_dataset
from ferdata.steps import StepContext, StepOutput, register_step

SOURCE = "affectnet"
_SPLIT_DIRS = {"train_set": "train", "val_set": "validation", "test_set": "test"}


@dataclass
class AffectNetConfig:
    """Options of the AffectNet importer."""

    src: str = ""
    #: 8 keeps contempt; 7 drops it (to the ledger), 6 and 3 as in paper 003
    classes: int = 8

    def __post_init__(self) -> None:
        if not self.src:
            raise UsageError("import_affectnet needs src: a folder with images/ and annotations/")
        if self.classes not in GROUPINGS:
            raise UsageError(f"classes must be one of {', '.join(map(str, GROUPINGS))}, got {self.classes}")


def read_code(path: Path) -> int:
    """Read one ``<id>_exp.npy`` annotation (a 0-d string or number array) without pickle."""
    value = np.load(path, allow_pickle=False)
    return int(np.asarray(value).reshape(-1)[0])


def _layout(src: Path) -> list[tuple[str, Path]]:
    roots = [(_SPLIT_DIRS[p.name], p) for p in sorted(src.iterdir()) if p.is_dir() and p.name in _SPLIT_DIRS]
    if not roots:
        roots = [("train", src)]
    for _, root in roots:
        if not (root / "images").is_dir() or not (root / "annotations").is_dir():
            raise UsageError(f"{root} is not an AffectNet folder: it needs images/ and annotations/ subfolders")
    return roots


def generate_rows(files: list[tuple[str, str, str]], names: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """Yield one row per image: ``files`` holds ``(image path, annotation dir, split)``."""
    code_map = LabelMaps.load().sources[SOURCE]
    for path_str, ann_dir, split in files:
        path = Path(path_str)
        origin = f"{path.parent.parent.name}/images/{path.name}"
        ann = Path(ann_dir) / f"{path.stem}_exp.npy"

        def bad(reason: str, details: str, origin: str = origin, split: str = split) -> dict[str, Any]:
            return reject_row(reason, details, origin=origin, source=SOURCE, split=split)

        if not ann.exists():
            yield bad("no_annotation", f"missing {ann.name}")
            continue
        try:
            code = read_code(ann)
        except (ValueError, OSError, IndexError) as e:
            yield bad("bad_annotation", f"{ann.name}: {e}")
            continue
        if code not in code_map:
            yield bad("unknown_code", f"expression code {code}; known: {sorted(code_map)}")
            continue
        try:
            data = path.read_bytes()
        except OSError as e:
            yield bad("unreadable", str(e))
            continue
        yield file_row(data, names.index(code_map[code]), origin=origin, source=SOURCE, split=split)


@register_step("import_affectnet", AffectNetConfig, source=True)
def import_affectnet(data: None, config: AffectNetConfig, ctx: StepContext) -> StepOutput:
    """Import AffectNet (images/ + annotations/<id>_exp.npy), contempt kept unless --classes 7."""
    from ferdata.labels.step import apply_grouping

    src = check_input(config.src, kind="AffectNet folder", is_dir=True)
    files = [(str(p), str(root / "annotations"), split) for split, root in _layout(src)
             for p in sorted((root / "images").iterdir()) if p.is_file() and not p.name.startswith(".")]
    limited_out = max(0, len(files) - ctx.limit) if ctx.limit is not None else 0  # recorded (a trial)
    if ctx.limit is not None:
        files = files[: ctx.limit]
    if not files:
        raise UsageError(f"no images found in {src}")
    names = LabelMaps.load().names_for({"contempt"})
    dd, rejects = rows_to_dataset(generate_rows, {"files": files, "names": tuple(names)}, names,
                                  cache_dir=ctx.scratch(), num_proc=max(1, min(ctx.num_proc, len(files))),
                                  step="import_affectnet")
    if config.classes != 8:
        dd, more = apply_grouping(dd, config.classes, step="import_affectnet")
        rejects += more
    return StepOutput(dd, rejects, info={"source": str(src), "files": len(files), "limited_out": limited_out})
