"""The registered ``dedupe`` step: hash, group, decide, write.

:func:`dedupe_dataset` runs the parts in order: :func:`~ferdata.dedupe.hashing.hash_dataset`,
:func:`~ferdata.dedupe.grouping.gather_rows` and :func:`~ferdata.dedupe.grouping.survivor_rank`,
the survivor-first :func:`~ferdata.dedupe.grouping._group_rows`, the decisions of
:class:`~ferdata.dedupe.grouping.DuplicateGroups`; then it writes the output dataset
(:func:`_output_dataset`), the counts (:func:`_info`) and the groups report
(:mod:`ferdata.dedupe.report`). :func:`dedupe_step` registers it as ``dedupe``.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ferdata.columns import (
    DUPLICATE_DISTANCE,
    DUPLICATE_MARK_COLUMNS,
    DUPLICATE_OF,
    DUPLICATE_REASON,
    DUPLICATE_SCORE,
    GROUP,
    GROUP_SIZE,
    IS_DUPLICATE,
    LABEL,
    SIMILAR_GROUP,
)
from ferdata.dedupe.against import check_not_input, find_contamination
from ferdata.dedupe.config import CONTAMINATION, STEP, DedupeConfig
from ferdata.dedupe.grouping import DuplicateGroups, _group_rows, gather_rows, survivor_rank
from ferdata.dedupe.hashing import hash_dataset
from ferdata.dedupe.report import REPORT_NAME, add_survivor_evidence, report_rows, write_groups_report
from ferdata.steps import StepContext, StepOutput, register_step

if TYPE_CHECKING:
    import datasets

    from ferdata.dedupe.against import Contamination


@dataclass
class DedupeResult:
    """What :func:`dedupe_dataset` returns."""

    data: datasets.DatasetDict
    rejects: list[dict[str, str]]
    info: dict[str, Any]
    #: one row per member of every group of two or more rows (see REPORT_FIELDS)
    groups: list[dict[str, Any]]


def dedupe_dataset(dd: datasets.DatasetDict, config: DedupeConfig | None = None, *, num_proc: int = 1,
                   step: str = STEP) -> DedupeResult:
    """Find exact and near duplicates of ``dd`` and remove (or, with ``report_only``, mark) them.

    Rows with the same ``id`` (identical decoded pixels) are always one group (``exact_duplicate``).
    Near duplicates are found survivor-first, without chaining (see :func:`_group_rows`): in keep
    order, each row not yet grouped becomes a survivor and takes the candidates within
    ``config.threshold`` of its hash that the verifier confirms (``verify_score >= min_score``, plus
    ``score_rise`` per hash bit beyond 10).
    The others go to the ledger (reason ``exact_duplicate`` or ``near_duplicate``, details with
    ``duplicate_of``, ``distance`` to the survivor, ``verify_score``, ``group_diameter``, splits and
    labels). Kept rows linked by a score of at least ``similar_score`` share a ``similar_group``.
    Groups whose members carry different labels follow ``config.on_conflict``.

    Returns:
        A :class:`DedupeResult`; its ``info`` holds the counts for ``ferdata.json``.

    Example:
        >>> result = dedupe_dataset(open_dataset("fer"), DedupeConfig(threshold=4))  # doctest: +SKIP
        >>> result.info["leakage"]  # doctest: +SKIP
        {'train/test': 12}
    """
    config = config or DedupeConfig()
    check_not_input(dd, config.against_paths)
    if not config.within and not config.against_paths:
        return DedupeResult(dd, [], {"within": False, "against": [], "rows": sum(len(x) for x in dd.values())}, [])
    dd, rejects, reused = hash_dataset(dd, method=config.method, num_proc=num_proc, step=step)
    rows = gather_rows(dd, config.method)
    contamination = (find_contamination(dd, rows, config, num_proc=num_proc, step=step)
                     if config.against_paths else None)
    if not config.within:
        return _against_only(dd, config, rows, contamination, rejects, reused=reused, step=step)
    rank = survivor_rank(dd, rows, config.keep)
    grouping = _group_rows(dd, rows.splits, config, rank=rank, id_keys=rows.id_keys, hashes=rows.hashes,
                           const=rows.const, exclude=None if contamination is None else contamination.matched,
                           workers=num_proc)
    groups = DuplicateGroups(rows, grouping, config, contamination)
    new_rejects = groups.ledger_rows(step)
    add_survivor_evidence(new_rejects, dd)  # the survivor as the step compared it, for reports after crop/upscale
    report = report_rows(groups, data=dd if config.report else None)
    result = _output_dataset(dd, config, groups)
    info = _info(config, groups, hashes_reused=reused, undecodable=len(rejects))
    if contamination is not None:
        info["against"] = contamination.info
    if config.report:
        write_groups_report(report, config.report)
    return DedupeResult(result, rejects + ([] if config.report_only else new_rejects), info, report)


def _against_only(dd: datasets.DatasetDict, config: DedupeConfig, rows: Any, contamination: Contamination | None,
                  rejects: list[dict[str, str]], *, reused: bool, step: str) -> DedupeResult:
    """``within=False``: remove (or, with ``report_only``, mark) the contaminated rows; nothing else changes."""
    from ferdata.dedupe.grouping import contamination_reject

    matched = contamination.matched if contamination is not None else np.zeros(rows.n, dtype=bool)
    offsets = np.concatenate([[0], np.cumsum(rows.sizes)])
    out = {}
    for k, split in enumerate(rows.splits):
        ds = dd[split]
        hit = matched[offsets[k]:offsets[k + 1]]
        if config.report_only:
            ds = ds.remove_columns([c for c in DUPLICATE_MARK_COLUMNS if c in ds.column_names])
            fingerprint = json.dumps([dataclasses.asdict(config), ds._fingerprint], default=str)
            got = [contamination.details[int(r)] if h and contamination else None
                   for r, h in zip(range(offsets[k], offsets[k + 1]), hit, strict=True)]
            ds = _add_column(ds, fingerprint, IS_DUPLICATE, hit.tolist())
            ds = _add_column(ds, fingerprint, DUPLICATE_OF, [g["against_id"] if g else "" for g in got])
            ds = _add_column(ds, fingerprint, DUPLICATE_DISTANCE, [int(g["distance"]) if g else -1 for g in got])
            ds = _add_column(ds, fingerprint, DUPLICATE_REASON, [CONTAMINATION if g else "" for g in got])
            ds = _add_column(ds, fingerprint, DUPLICATE_SCORE,
                             [float(g["verify_score"]) if g and g["verify_score"] is not None else -2.0 for g in got])
        elif hit.any():
            ds = ds.select(np.nonzero(~hit)[0].tolist())
        out[split] = ds
    new = [contamination_reject(rows, int(r), contamination, step) for r in np.nonzero(matched)[0]]
    info = {"within": False, "method": config.method, "threshold": config.threshold, "verify": config.verify,
            "min_score": config.min_score, "score_rise": config.score_rise, "report_only": config.report_only,
            "hashes_reused": reused, "rows": rows.n, "undecodable": len(rejects),
            "removed" if not config.report_only else "would_remove":
                {CONTAMINATION: int(matched.sum())} if matched.any() else {},
            "against": contamination.info if contamination is not None else []}
    import datasets

    return DedupeResult(datasets.DatasetDict(out), rejects + ([] if config.report_only else new), info, [])


def _output_dataset(dd: datasets.DatasetDict, config: DedupeConfig, groups: DuplicateGroups) -> datasets.DatasetDict:
    """Every split with its ``group``, ``group_size`` and ``similar_group`` columns, and the decisions.

    With ``config.report_only`` the decisions are columns (:func:`_add_marks`); otherwise the
    relabels are applied and the removed rows left out (:func:`_apply_decisions`).
    """
    import datasets

    rows = groups.rows
    offsets = np.concatenate([[0], np.cumsum(rows.sizes)])
    # the new columns are a function of the input and the config: fingerprint them from those
    # (datasets would otherwise pickle every value list to fingerprint it, seconds per 100k rows)
    fingerprint = json.dumps([dataclasses.asdict(config), [dd[x]._fingerprint for x in rows.splits]], default=str)
    out = {}
    for k, split in enumerate(rows.splits):
        ds = dd[split]
        stale = [c for c in (GROUP, GROUP_SIZE, SIMILAR_GROUP, *DUPLICATE_MARK_COLUMNS) if c in ds.column_names]
        if stale:  # a previous dedupe run: its groups are recomputed
            ds = ds.remove_columns(stale)
        part = slice(offsets[k], offsets[k + 1])
        ds = _add_column(ds, fingerprint, GROUP, [str(g) for g in groups.group_id[groups.comp[part]]])
        ds = _add_column(ds, fingerprint, GROUP_SIZE, groups.size[part].astype(np.int64).tolist())
        ds = _add_column(ds, fingerprint, SIMILAR_GROUP, [str(g) for g in groups.similar_id[groups.comp[part]]])
        if config.report_only:
            ds = _add_marks(ds, fingerprint, groups, part)
        else:
            ds = _apply_decisions(ds, split, groups, part)
        out[split] = ds
    return datasets.DatasetDict(out)


def _add_marks(ds: datasets.Dataset, fingerprint: str, groups: DuplicateGroups, part: slice) -> datasets.Dataset:
    """The ``report_only`` columns of the split holding rows ``part``: what would be removed, and why."""
    ids = groups.rows.ids
    removing = groups.action[part] == "remove"
    of = [ids[s] if r else "" for s, r in zip(groups.survivor[part], removing, strict=True)]
    distance = [int(d) if r else -1 for d, r in zip(groups.distance[part], removing, strict=True)]
    score = [-2.0 if np.isnan(x) else float(x) for x in groups.score[part]]
    found = groups.contamination.details if groups.contamination is not None else {}
    for k, row in enumerate(range(part.start, part.stop)):
        if row in found:  # the other dataset's row, not a survivor of this one
            of[k], distance[k] = found[row]["against_id"], int(found[row]["distance"])
            score[k] = -2.0 if found[row]["verify_score"] is None else float(found[row]["verify_score"])
    ds = _add_column(ds, fingerprint, IS_DUPLICATE, removing.tolist())
    ds = _add_column(ds, fingerprint, DUPLICATE_OF, of)
    ds = _add_column(ds, fingerprint, DUPLICATE_DISTANCE, distance)
    ds = _add_column(ds, fingerprint, DUPLICATE_REASON, [str(x) for x in groups.reason[part]])
    return _add_column(ds, fingerprint, DUPLICATE_SCORE, score)


def _apply_decisions(ds: datasets.Dataset, split: str, groups: DuplicateGroups, part: slice) -> datasets.Dataset:
    """The split holding rows ``part`` with its survivors relabelled and its removed rows left out."""
    lo, hi = part.start, part.stop
    changed = {int(i - lo): int(groups.new_label[i]) for i in range(lo, hi) if groups.action[i] == "relabel"}
    if changed:
        features = ds.features.copy()
        ds = ds.map(_relabel, input_columns=[LABEL], with_indices=True, batched=True, features=features,
                    fn_kwargs={"changed": changed}, desc=f"relabel {split}")
    keep_rows = np.nonzero(groups.action[part] != "remove")[0]
    if len(keep_rows) < hi - lo:
        ds = ds.select(keep_rows.tolist())
    return ds


def _add_column(ds: datasets.Dataset, fingerprint: str, name: str, values: list[Any]) -> datasets.Dataset:
    import hashlib

    digest = hashlib.sha256(f"{fingerprint}|{ds._fingerprint}|{name}".encode()).hexdigest()[:32]
    return ds.add_column(name, values, new_fingerprint=digest)


def _relabel(labels: list[int], indices: list[int], *, changed: dict[int, int]) -> dict[str, list[int]]:
    return {LABEL: [changed.get(i, v) for i, v in zip(indices, labels, strict=True)]}


def _info(config: DedupeConfig, groups: DuplicateGroups, *, hashes_reused: bool, undecodable: int) -> dict[str, Any]:
    """The step's counts, recorded in ``ferdata.json`` and printed by :func:`~ferdata.dedupe.report.summary_lines`."""
    rows, grouping = groups.rows, groups.grouping
    n = rows.n
    leakage, leak_rows = groups.split_leakage()
    similar, similar_leakage = groups.similar_groups()
    by_reason = Counter(str(groups.reason[r]) for r in groups.removed())
    info = {
        "method": config.method, "threshold": config.threshold, "keep": config.keep, "on_conflict": config.on_conflict,
        "report_only": config.report_only, "hashes_reused": hashes_reused, "rows": n,
        "undecodable": undecodable, "constant_images": int(rows.const.sum()),
        "groups": len(groups.members_of), "rows_in_groups": int(groups.in_group.sum()),
        "near_hash_pairs": grouping.info["candidate_pairs"],
        "removed" if not config.report_only else "would_remove": {k: v for k, v in sorted(by_reason.items())},
        "label_conflict_groups": groups.conflict_groups, "relabelled": groups.relabelled,
        "eval_survivors_not_relabelled": groups.eval_not_relabelled,
        "leakage_groups": dict(sorted(leakage.items())), "leakage_rows": leak_rows,
        "verify": config.verify, "min_score": config.min_score, "score_rise": config.score_rise,
        "similar_score": config.similar_score, "largest_similar_group": int(max(map(len, similar.values()), default=0)),
        "verified_pairs": grouping.info["verified_pairs"], "rejected_by_verifier": grouping.info["rejected_by_verifier"],
        "max_group_diameter": int(groups.diameter.max()) if len(groups.diameter) else 0,
        "similar_groups": len(similar), "similar_rows": int(sum(len(v) for v in similar.values())),
        "similar_leakage_groups": dict(sorted(similar_leakage.items())),
    }
    info["exact_duplicate_rows"] = int(n - (grouping.id_inv.max() + 1)) if n else 0
    return info


@register_step("dedupe", DedupeConfig)
def dedupe_step(data: datasets.DatasetDict, config: DedupeConfig, ctx: StepContext) -> StepOutput:
    """Exact and perceptual duplicates: groups, split leakage, label conflicts."""
    files = {}
    if config.report_only and config.report is None:
        # the report goes inside the output, which appears (atomically) with it or not at all
        import tempfile

        files[REPORT_NAME] = str(Path(tempfile.mkdtemp(dir=ctx.scratch())) / REPORT_NAME)
        result = dedupe_dataset(data, dataclasses.replace(config, report=files[REPORT_NAME]), num_proc=ctx.num_proc)
        config.report = REPORT_NAME  # recorded relative to the output directory
    else:
        result = dedupe_dataset(data, config, num_proc=ctx.num_proc)
    return StepOutput(result.data, result.rejects, info=result.info, files=files)
