"""Export a dataset directory to the Hugging Face Hub layout, to class folders, and push it.

Hub layout (``ferdata export DIR --out HUBDIR``)::

    HUBDIR/README.md                               dataset card: YAML metadata + body
    HUBDIR/data/{split}-00000-of-0000N.parquet     rows with their features (ClassLabel names kept)

``datasets.load_dataset(HUBDIR)`` loads it back to the same rows. The card's YAML carries
``license``, ``task_categories: [image-classification]``, ``size_categories``, ``pretty_name``,
``configs``, ``dataset_info.features`` and ``ferdata`` (the provenance, machine-readable: recipe,
seed, every step with the parameters it applied and its counts). The body says the same for people,
between ``<!-- ferdata:begin -->`` and ``<!-- ferdata:end -->`` markers. The card is provenance:
parameters a step did not apply are not written, local paths are reduced to file names (unless
``full_paths``), and the load line names the repository or the folder the user chose.

``--format imagefolder`` writes ``OUT/{split}/{class}/{id}.{png|jpg}`` for tools that read
folders (Keras ``image_dataset_from_directory``).

``ferdata push DIR REPO_ID`` makes one commit on the Hub (see :func:`push`): it adds the new
export and deletes every file under ``data/`` the new export lacks, so the repository never holds
stale shards; the card's own fields are rewritten and the fields a user added on the Hub are kept.
The token (``--token`` or ``HF_TOKEN``) is never printed, logged or written to disk; errors from the
Hub are reported on one line with the token redacted.
"""

from __future__ import annotations

import json
import math
import os
import re
import string
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferdata.errors import FerdataError, UsageError

#: Largest parquet shard written, in bytes of Arrow data.
MAX_SHARD_BYTES = 500 * 1024 * 1024
FORMATS = ("hub", "imagefolder")
#: The folder of the Hub layout that ferdata owns: a push replaces it whole.
DATA_DIR = "data"
CARD_FILE = "README.md"
#: Card metadata keys ferdata writes (a push rewrites them; every other key on the Hub is kept).
CARD_FIELDS = ("license", "task_categories", "tags", "size_categories", "pretty_name", "configs", "dataset_info",
               "ferdata")
BODY_BEGIN = "<!-- ferdata:begin: written by ferdata; a push rewrites what is between these markers -->"
BODY_END = "<!-- ferdata:end -->"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[A-Za-z0-9][\w.\-]*$")
_REF_NAME = re.compile(r"^[\w.\-/]+$")


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` value for ``n`` rows."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                        (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "10M<n<100M"


# ---------------------------------------------------------------- provenance: what the card may say

def _local_value(value: str) -> str:
    """A string reduced for a reader elsewhere: a local path to its file name, a loopback URL to a note."""
    if "://" in value:
        host = value.split("://", 1)[1].split("/", 1)[0].split(":")[0]
        return "(a local server)" if host in ("127.0.0.1", "localhost", "::1", "[::1]") else value
    if os.path.isabs(value) or value.startswith("~") or "/" in value or "\\" in value:
        return Path(value.replace("\\", "/")).name or value
    return value


def public_value(value: Any, *, full_paths: bool = False) -> Any:
    """``value`` (nested dicts and lists too) with local paths reduced to file names.

    Example:
        >>> public_value({"csv": "/home/me/data/fer2013.csv", "classes": 7})
        {'csv': 'fer2013.csv', 'classes': 7}
    """
    if full_paths:
        return value
    if isinstance(value, str):
        return _local_value(value)
    if isinstance(value, dict):
        return {k: public_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [public_value(v) for v in value]
    return value


def applied_params(step: str, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters a step used: empty values and the ones its config marks as conditional on
    another parameter that was not given (``APPLIES_WHEN``, e.g. FER+ options without a FER+ file)
    are left out.

    Example:
        >>> applied_params("import_fer2013", {"csv": "f.csv", "ferplus": "", "label_source": "ferplus"})
        {'csv': 'f.csv'}
    """
    conditions: dict[str, str] = {}
    try:
        from ferdata.steps import get_step

        conditions = dict(getattr(get_step(step).config_cls, "APPLIES_WHEN", {}))
    except Exception:  # a step this version does not know: keep what was recorded
        conditions = {}
    return {k: v for k, v in params.items()
            if v not in (None, "", [], {}) and (k not in conditions or params.get(conditions[k]) not in (None, "", False))}


def provenance(manifest: dict[str, Any], *, full_paths: bool = False) -> dict[str, Any]:
    """The card's machine-readable ``ferdata`` block: facts about these rows, from their manifest."""
    recipe = manifest.get("recipe")
    steps = []
    for e in manifest.get("steps", []):
        entry = {"step": e["step"], "params": public_value(applied_params(e["step"], e.get("params", {})),
                                                             full_paths=full_paths)}
        for key in ("input_rows", "kept", "rejected", "rejected_by_reason", "limit", "limited_out"):
            if e.get(key) not in (None, {}) and not (key == "limited_out" and not e[key]):
                entry[key] = e[key]
        if _is_source(e["step"]):
            entry.pop("input_rows", None)  # a source reads files, not rows
        if e["step"] == "import_hub" and (e.get("info") or {}).get("commit"):
            entry["commit"] = e["info"]["commit"]
        steps.append(entry)
    block: dict[str, Any] = {
        "built_with": (manifest.get("versions") or {}).get("ferdata"),
        "created": manifest.get("created"),
        "recipe": {"name": recipe["name"], "variables": public_value(recipe.get("variables") or {},
                                                                     full_paths=full_paths)} if recipe else None,
        "seed": manifest.get("seed"),
        "trial": bool(manifest.get("trial")),
        "steps": steps,
    }
    if manifest.get("upstream"):
        block["upstream"] = manifest["upstream"]
    return {k: v for k, v in block.items() if v is not None}


def _is_source(step: str) -> bool:
    try:
        from ferdata.steps import get_step

        return bool(get_step(step).source)
    except Exception:
        return False


def _steps_table(steps: list[dict[str, Any]], manifest: dict[str, Any]) -> str:
    seconds = [e.get("seconds", "") for e in manifest.get("steps", [])]
    rows = []
    for i, entry in enumerate(steps):
        params = ", ".join(f"{k}={v}" for k, v in entry.get("params", {}).items())
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(entry.get("rejected_by_reason", {}).items()))
        rows.append(f"| {entry['step']} | {params.replace('|', '/')} | {entry.get('input_rows', '')} | "
                    f"{entry.get('kept', '')} | {entry.get('rejected', '')}{f' ({reasons})' if reasons else ''} | "
                    f"{seconds[i] if i < len(seconds) else ''} |")
    return "\n".join(rows) or "| (none) | | | | | |"


def _load_line(repo_id: str | None, load_path: str | None, name: str) -> str:
    if repo_id:
        return f'datasets.load_dataset("{repo_id}")'
    if load_path:
        return f'datasets.load_dataset("{load_path}")'
    return f'datasets.load_from_disk("{name}")'


def dataset_card(path: str | Path, *, pretty_name: str | None = None, license: str = "other",
                 repo_id: str | None = None, description: str | None = None, name: str | None = None,
                 load_path: str | None = None, full_paths: bool = False) -> str:
    """Render the dataset card (README.md) of a dataset directory.

    Args:
        path: the dataset directory (may be a temporary build folder: pass ``name``).
        pretty_name: the card's title (default: ``name``).
        license: the card's license.
        repo_id: the Hub repository the card is published in (the load line names it).
        description: the first paragraph.
        name: the dataset's name as its user knows it (default: the directory's name).
        load_path: the folder a reader loads the Hub layout from, when not published.
        full_paths: keep local paths in the parameters (default: file names only).

    Example:
        >>> print(dataset_card("fer2013")[:3])   # doctest: +SKIP
        ---
    """
    from huggingface_hub import DatasetCard

    from ferdata import __version__
    from ferdata.balance import all_class_weights
    from ferdata.dataset import label_names, open_dataset, read_manifest
    from ferdata.resources import manifest_path

    path = Path(path)
    dd = open_dataset(path)
    manifest = read_manifest(path)
    names = label_names(dd)
    total = sum(len(ds) for ds in dd.values())
    name = name or (repo_id.split("/")[-1] if repo_id else path.name)
    pretty = pretty_name or name
    facts = provenance(manifest, full_paths=full_paths)
    # class weights computed from these rows (a manifest's may predate a later split or filter)
    weights = all_class_weights(dd)
    facts["class_weights"] = weights
    meta = _card_data(dd, license=license, pretty=pretty, total=total, facts=facts)
    recipe = facts.get("recipe")
    origin_lines = _origin_lines(dd, manifest.get("upstream") or {})
    built = facts.get("built_with") or __version__
    template = string.Template(manifest_path("dataset-card", suffix=".md").read_text(encoding="utf-8"))
    body = template.safe_substitute(
        pretty_name=pretty,
        description=description or f"A facial-expression-recognition dataset of {total} images in "
                                   f"{len(names)} classes, built with ferdata.",
        ferdata_version=built if built == __version__ else f"{built} (card written by ferdata {__version__})",
        load_line=_load_line(repo_id, load_path, name),
        label_names=", ".join(names),
        provenance="\n".join(origin_lines),
        recipe=f"`{recipe['name']}` ({json.dumps(recipe.get('variables', {}))})" if recipe else "single commands",
        seed=facts.get("seed"),
        trial=" A trial build (`--limit`): not the whole input." if facts.get("trial") else "",
        steps_table=_steps_table(facts["steps"], manifest),
        class_header=" | ".join(names),
        class_rule="---|" * len(names),
        distribution_table=_distribution_table(dd, names),
        class_weights=_weights_table(weights, names),
        license=license,
    )
    return str(DatasetCard(f"---\n{meta.to_yaml()}\n---\n\n{BODY_BEGIN}\n{body.strip()}\n{BODY_END}\n"))


def _card_data(dd: Any, *, license: str, pretty: str, total: int, facts: dict[str, Any]) -> Any:
    """The card's YAML metadata: licence, task, tags, size, configs, ferdata's provenance and dataset_info."""
    from datasets.info import DatasetInfo, DatasetInfosDict
    from datasets.splits import SplitDict, SplitInfo
    from huggingface_hub import DatasetCardData

    meta = DatasetCardData(
        license=license,
        task_categories=["image-classification"],
        tags=["facial-expression-recognition", "ferdata"],
        size_categories=[size_category(total)],
        pretty_name=pretty,
        configs=[{"config_name": "default", "data_files": [{"split": s, "path": f"{DATA_DIR}/{s}-*.parquet"}
                                                          for s in dd]}],
        ferdata=facts,
    )
    splits = SplitDict()
    for s, ds in dd.items():
        splits.add(SplitInfo(name=s, num_examples=len(ds), num_bytes=int(ds.data.nbytes) if ds._indices is None else 0))
    # dataset_info (features and splits) in the YAML form push_to_hub writes, through datasets' public API
    first = next(iter(dd.values()))
    DatasetInfosDict({"default": DatasetInfo(features=first.features, splits=splits)}).to_dataset_card_data(meta)
    return meta


def _origin_lines(dd: Any, upstream: dict[str, Any]) -> list[str]:
    """Where the rows came from: images per source, and the Hub dataset they were imported from."""
    from ferdata.dataset import column_values

    sources: Counter[str] = Counter()
    for ds in dd.values():
        sources.update(column_values(ds, "source"))
    lines = [f"- `{s}`: {n} images" for s, n in sorted(sources.items())]
    if upstream.get("repo_id"):
        lines.append(f"- imported from the Hub dataset `{upstream['repo_id']}` at revision "
                     f"`{upstream.get('revision', 'main')}` (commit `{str(upstream.get('commit', ''))[:12]}`)")
    return lines


def _distribution_table(dd: Any, names: list[str]) -> str:
    """Rows of the class-distribution table, one per split."""
    from ferdata.dataset import class_counts

    rows = []
    for split, ds in dd.items():
        counts = class_counts(ds)
        rows.append(f"| {split} | {' | '.join(str(counts[n]) for n in names)} | {len(ds)} |")
    return "\n".join(rows)


def _weights_table(weights: dict[str, dict[str, dict[str, float]]], names: list[str]) -> str:
    """The class-weights table: one row per split and method."""
    lines = ["| split | method | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for split, methods in weights.items():
        for method, w in methods.items():
            lines.append(f"| {split} | {method} | " + " | ".join(f"{w.get(n, 0):.3g}" for n in names) + " |")
    return "\n".join(lines)


def _default_load_path(out: Path) -> str:
    """Where a reader loads an export from: the folder as the user named it (a file name when absolute)."""
    return out.name if out.is_absolute() else out.as_posix()


def export_hub(path: str | Path, out: str | Path, *, overwrite: bool = False, license: str = "other",
               pretty_name: str | None = None, repo_id: str | None = None, name: str | None = None,
               load_path: str | None = None, full_paths: bool = False,
               max_shard_bytes: int | None = None) -> Path:
    """Write the Hub layout (parquet shards + README.md card) of a dataset directory.

    Args:
        path: the dataset directory.
        out: the folder to write.
        name: the dataset's name for the card (default: ``path``'s name; a build passes its final
            output's name, never the temporary folder's).
        load_path: the folder named by the card's load line (default: ``out`` as given).
        repo_id: the Hub repository, when the export is for a push (the load line names it).
        full_paths: keep local paths in the card's parameters.
        max_shard_bytes: largest parquet shard, in bytes of Arrow data (default :data:`MAX_SHARD_BYTES`).

    Returns:
        The output directory.

    Example:
        >>> export_hub("fer2013", "fer2013-hub")   # doctest: +SKIP
    """
    from ferdata.dataset import atomic_dir, open_dataset, prepare_output

    dd = open_dataset(path)
    out = prepare_output(out, overwrite=overwrite, inputs=[path])
    load_path = load_path or _default_load_path(Path(out))
    max_shard_bytes = max_shard_bytes or MAX_SHARD_BYTES
    with atomic_dir(out) as tmp:
        (tmp / DATA_DIR).mkdir()
        for split, ds in dd.items():
            shards = max(1, math.ceil(ds.data.nbytes / max_shard_bytes))
            _write_parquet_shards(ds, shards, [tmp / DATA_DIR / f"{split}-{i:05d}-of-{shards:05d}.parquet"
                                               for i in range(shards)])
        card = dataset_card(path, license=license, pretty_name=pretty_name, repo_id=repo_id, name=name,
                            load_path=load_path, full_paths=full_paths)
        (tmp / CARD_FILE).write_text(card, encoding="utf-8")
    return out


def _write_parquet_shards(ds: Any, shards: int, paths: list[Path]) -> None:
    """``ds.shard(shards, i, contiguous=True).to_parquet(paths[i])`` for each ``i``: the same files.

    When the rows can be read with plain file reads (:func:`ferdata.dataset.contiguous_parts`), each
    shard is written as its record batches are read, with the settings ``datasets``'
    ``ParquetDatasetWriter`` takes for that shard (schema, content-defined chunking, page index,
    per-column options, row groups of the rows its size estimate gives). Neither the memory map
    (whose pages stay resident: ~9 GB of 224 px faces at 300k rows) nor a whole shard read into
    fresh memory (most of an export's time, in the kernel, on fer2013-train) is needed; other
    datasets are written by ``to_parquet`` from their shards.
    """
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets.arrow_writer import (
        get_parquet_column_options,
        get_writer_batch_size_from_data_size,
        get_writer_batch_size_from_features,
    )

    from ferdata.dataset import RowStream, contiguous_parts, plain_readable

    if not plain_readable(ds):
        for i, path in enumerate(paths):
            ds.shard(shards, i, contiguous=True).to_parquet(str(path))
        return
    schema, cdc = ds.features.arrow_schema, datasets.config.DEFAULT_CDC_OPTIONS
    for i, (part, path) in enumerate(zip(contiguous_parts(ds, shards), paths, strict=True)):
        shard = ds.shard(shards, i, contiguous=True)  # its size estimate sets the row groups, as in to_parquet
        batch = (get_writer_batch_size_from_features(ds.features)
                 or get_writer_batch_size_from_data_size(len(shard), shard._estimate_nbytes()))
        rows = RowStream(part)
        with pq.ParquetWriter(str(path), schema=schema, use_content_defined_chunking=cdc, write_page_index=True,
                              **get_parquet_column_options(ds.features, schema)) as writer:
            for start in range(0, len(shard), batch):
                writer.write_table(pa.concat_tables(rows.take(min(batch, len(shard) - start))))
            writer.add_key_value_metadata({"content_defined_chunking": json.dumps(cdc)})


def export_imagefolder(path: str | Path, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``OUT/{split}/{class}/{id}.{ext}`` class folders (image bytes as stored)."""
    import datasets

    from ferdata.dataset import atomic_dir, label_names, open_dataset, prepare_output
    from ferdata.progress import progress

    dd = open_dataset(path)
    names = label_names(dd)
    out = prepare_output(out, overwrite=overwrite, inputs=[path])
    with atomic_dir(out) as tmp:
        for split, ds in dd.items():
            ds = ds.cast_column("image", datasets.Image(decode=False))
            for name in names:
                (tmp / split / name).mkdir(parents=True, exist_ok=True)
            for row in progress(ds.select_columns(["image", "label", "id"]), desc=f"export {split}", total=len(ds)):
                data = row["image"]["bytes"]
                ext = "jpg" if data[:3] == b"\xff\xd8\xff" else "png"
                (tmp / split / names[row["label"]] / f"{row['id']}.{ext}").write_bytes(data)
    return out


def export(path: str | Path, out: str | Path, *, format: str = "hub", overwrite: bool = False, **options: Any) -> Path:
    """Export in ``format`` ``hub`` or ``imagefolder`` (``options`` go to :func:`export_hub`).

    Raises:
        UsageError: for another format.
    """
    if format == "hub":
        return export_hub(path, out, overwrite=overwrite, **options)
    if format == "imagefolder":
        return export_imagefolder(path, out, overwrite=overwrite)
    raise UsageError(f"--format {format!r} is not allowed; allowed: {', '.join(FORMATS)}")


# ---------------------------------------------------------------- the card on the Hub: merge, never clobber

@dataclass
class CardMerge:
    """What a push did to the card already on the Hub."""

    text: str
    #: ferdata's own metadata keys, rewritten
    rewritten: list[str]
    #: other metadata keys found on the Hub, kept as they were
    kept: list[str]
    #: ``markers`` (the text outside ferdata's markers kept), ``new`` (no card before) or
    #: ``replaced`` (a card without ferdata's markers: its body is replaced)
    body: str


def merge_card(new: str, old: str | None) -> CardMerge:
    """The card to publish: ``new`` (ferdata's) merged into ``old`` (the Hub's, if any).

    ferdata's keys (:data:`CARD_FIELDS`) take the new values, except that tags a user added are
    kept beside ferdata's and configs other than ``default`` are kept; every other metadata key of
    the old card is kept. In the body, the text between ferdata's markers is replaced and the text
    around them kept.

    Example:
        >>> merge_card(new_text, old_text).kept        # doctest: +SKIP
        ['language']
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    fresh = DatasetCard(new)
    meta = fresh.data.to_dict()
    if old is None:
        return CardMerge(new, [k for k in CARD_FIELDS if k in meta], [], "new")
    previous = DatasetCard(old)
    before = previous.data.to_dict()
    merged = dict(before)
    for key in CARD_FIELDS:
        if key in meta:
            merged[key] = meta[key]
        else:
            merged.pop(key, None)
    extra_tags = [t for t in before.get("tags") or [] if t not in (meta.get("tags") or [])]
    if extra_tags:
        merged["tags"] = [*(meta.get("tags") or []), *extra_tags]
    other_configs = [c for c in before.get("configs") or [] if isinstance(c, dict) and c.get("config_name") != "default"]
    if other_configs:
        merged["configs"] = [*(meta.get("configs") or []), *other_configs]
    old_text, new_text = previous.text, fresh.text
    if BODY_BEGIN in old_text and BODY_END in old_text.split(BODY_BEGIN, 1)[1]:
        head, rest = old_text.split(BODY_BEGIN, 1)
        tail = rest.split(BODY_END, 1)[1]
        block = new_text[new_text.index(BODY_BEGIN):new_text.index(BODY_END) + len(BODY_END)]
        body, how = f"{head}{block}{tail}", "markers"
    else:
        body, how = new_text, "replaced"
    card = DatasetCard(f"---\n{DatasetCardData(**merged).to_yaml()}\n---\n\n{body.lstrip()}")
    return CardMerge(str(card), [k for k in CARD_FIELDS if k in merged], sorted(k for k in before if k not in CARD_FIELDS),
                     how)


# ---------------------------------------------------------------- push

@dataclass
class PushResult:
    """What :func:`push` did."""

    repo_id: str
    #: the branch written (or the branch a pull request was opened against)
    revision: str
    commit: str
    commit_url: str
    pr_url: str | None = None
    #: ``refs/pr/N`` when a pull request was opened
    pr_revision: str | None = None
    tag: str | None = None
    branch_created: bool = False
    #: False when the revision already held this export: no commit made (and no pull request opened)
    committed: bool = False
    #: files written by the commit (new or changed)
    added: list[str] = field(default_factory=list)
    #: files of the export the revision already held, byte for byte
    unchanged: list[str] = field(default_factory=list)
    #: files of the previous export that the new one lacks, deleted in the same commit
    deleted: list[str] = field(default_factory=list)
    card: CardMerge | None = None


def _redact(text: str, token: str) -> str:
    return text.replace(token, "***") if token else text


def _one_line(e: BaseException, token: str) -> str:
    """An exception as one line, token redacted (the Hub client's messages span several lines)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return _redact(f"{type(e).__name__}: {' '.join(lines[:3])}" if lines else type(e).__name__, token)


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` if it looks like ``user/name``.

    Raises:
        UsageError: otherwise, naming the form allowed.
    """
    if not _REPO_ID.match(repo_id or ""):
        raise UsageError(f"repo id {repo_id!r} must look like user/name (letters, digits, '-', '_', '.')")
    return repo_id


def _hub_endpoint(endpoint: str | None) -> str | None:
    """The endpoint to use: the argument, else ``HF_ENDPOINT`` read now (not at import time)."""
    return (endpoint or os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None


def push(path: str | Path, repo_id: str, *, token: str | None = None, private: bool = False,
         revision: str | None = None, create_pr: bool = False, tag: str | None = None, license: str | None = None,
         endpoint: str | None = None, commit_message: str | None = None, full_paths: bool = False,
         api: Any = None) -> PushResult:
    """Publish a dataset directory to a Hub dataset repository in one commit.

    The commit adds the new export (``README.md`` and ``data/``) and deletes every file under
    ``data/`` that the new export lacks (stale shards of a previous push), so
    ``load_dataset(repo_id)`` returns exactly the new rows; it is made with ``parent_commit`` set to
    the revision's head read at the start, so a concurrent change makes it fail whole instead of
    mixing two versions. Files outside ``data/`` and ``README.md`` (``.gitattributes``, a user's
    images ...) are never touched. The card is merged with the Hub's (:func:`merge_card`).

    Args:
        path: the dataset directory.
        repo_id: ``user/name`` on the Hub.
        token: a Hub token (default: ``HF_TOKEN``); never printed or stored.
        private: create the repository as private (an existing one keeps its visibility).
        revision: the branch to write (created from ``main`` when missing; default ``main``), or an
            open pull request's ``refs/pr/N`` to add a commit to it.
        create_pr: open a pull request against ``revision`` instead of writing it.
        tag: tag the new commit (fails before any commit when the tag exists).
        license: the card's license (default: the license already on the Hub, else ``other``).
        endpoint: another Hub endpoint (default ``HF_ENDPOINT``), e.g. :mod:`ferdata.demo.hub_server`.
        commit_message: the commit's title.
        full_paths: keep local paths in the card's parameters.
        api: an ``HfApi``-compatible client (default: ``huggingface_hub.HfApi``).

    Returns:
        A :class:`PushResult`: commit, pull request, files added and deleted, card fields rewritten and kept.

    Raises:
        UsageError: without a token, with a malformed repo id or tag, a tag that exists, a revision
            that is a tag or a missing pull request.
        FerdataError: when the Hub refuses (one line, token redacted); nothing was committed then,
            unless the message says the commit was made and only the tag failed.

    Example:
        >>> push("fer2013-224", "me/fer2013-224", revision="v2-candidate", create_pr=True)  # doctest: +SKIP
    """
    token = token or os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if not token:
        raise UsageError("no Hub token: set HF_TOKEN or pass --token")
    check_repo_id(repo_id)
    if tag is not None and not re.fullmatch(r"[\w.\-]+", tag):
        raise UsageError(f"tag {tag!r} must be a plain name such as v1.0 (letters, digits, '.', '-', '_')")
    if tag and create_pr:
        raise UsageError("--tag with --create-pr is not allowed: tag the commit once the pull request is merged")
    branch = revision or "main"
    if not _REF_NAME.match(branch) or (branch.startswith("refs/") and not re.fullmatch(r"refs/pr/\d+", branch)):
        raise UsageError(f"--revision {branch!r} must be a branch name or an open pull request refs/pr/N")
    if create_pr and branch.startswith("refs/pr/"):
        raise UsageError(f"--create-pr opens a new pull request; to add to {branch}, pass --revision {branch} alone")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(endpoint=_hub_endpoint(endpoint), token=token)
    try:
        return _push(api, Path(path), repo_id, token=token, private=private, branch=branch, create_pr=create_pr,
                     tag=tag, license=license, commit_message=commit_message, full_paths=full_paths)
    except FerdataError:
        raise
    except Exception as e:  # the Hub client raises many types; report one line, token redacted
        raise FerdataError(f"push to {repo_id} failed, nothing was committed: {_one_line(e, token)}") from None


def _push(api: Any, path: Path, repo_id: str, *, token: str, private: bool, branch: str, create_pr: bool,
          tag: str | None, license: str | None, commit_message: str | None, full_paths: bool) -> PushResult:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, DatasetCard
    from huggingface_hub.errors import HfHubHTTPError

    api.create_repo(repo_id=repo_id, repo_type="dataset", private=private, exist_ok=True)
    refs = api.list_repo_refs(repo_id, repo_type="dataset", include_pull_requests=True)
    branches = {r.name for r in refs.branches}
    created = False
    if tag and tag in {r.name for r in refs.tags}:
        raise UsageError(f"tag {tag!r} already exists in {repo_id}; tags: {', '.join(sorted(r.name for r in refs.tags))}")
    if branch.startswith("refs/pr/"):
        if branch not in {r.ref for r in refs.pull_requests or []}:
            raise UsageError(f"no pull request {branch} in {repo_id}; open ones: "
                             f"{', '.join(r.ref for r in refs.pull_requests or []) or 'none'}")
    elif branch not in branches:
        if branch in {r.name for r in refs.tags}:
            raise UsageError(f"--revision {branch!r} is a tag of {repo_id}; push to a branch (branches: "
                             f"{', '.join(sorted(branches))})")
        api.create_branch(repo_id, branch=branch, repo_type="dataset", exist_ok=True)
        created = True
    head = api.dataset_info(repo_id, revision=branch).sha
    remote = {f.path: f for f in api.list_repo_tree(repo_id, repo_type="dataset", revision=head, recursive=True)
              if hasattr(f, "blob_id")}
    with tempfile.TemporaryDirectory(prefix="ferdata-push-") as tmp:
        old_card = None
        if CARD_FILE in remote:
            local = api.hf_hub_download(repo_id, CARD_FILE, repo_type="dataset", revision=head,
                                        cache_dir=str(Path(tmp) / "cache"))
            old_card = Path(local).read_text(encoding="utf-8")
        if license is None:
            license = (DatasetCard(old_card).data.get("license") if old_card else None) or "other"
        folder = export_hub(path, Path(tmp) / "hub", license=license, repo_id=repo_id, full_paths=full_paths)
        merge = merge_card((folder / CARD_FILE).read_text(encoding="utf-8"), old_card)
        (folder / CARD_FILE).write_text(merge.text, encoding="utf-8")
        new_files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        changed = [p for p in new_files if p not in remote or not _same_content(folder / p, remote[p])]
        stale = sorted(p for p in remote if p.startswith(f"{DATA_DIR}/") and p not in new_files)
        result = PushResult(repo_id=repo_id, revision=branch, commit=head, commit_url="", branch_created=created,
                            added=changed, unchanged=[p for p in new_files if p not in changed], deleted=stale,
                            card=merge)
        if changed or stale:
            operations: list[Any] = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(folder / p))
                                     for p in changed]
            operations += [CommitOperationDelete(path_in_repo=p) for p in stale]
            message = commit_message or (f"ferdata push: {path.name} ({len(changed)} files written, {len(stale)} "
                                         "stale deleted)")
            try:
                info = api.create_commit(repo_id, operations, commit_message=message, repo_type="dataset",
                                         revision=branch, create_pr=create_pr, parent_commit=head)
            except HfHubHTTPError as e:
                if e.response is not None and e.response.status_code == 412:
                    raise FerdataError(f"{repo_id}@{branch} changed while pushing (another commit landed); nothing "
                                       "was committed; run the push again") from None
                raise
            result.committed, result.commit, result.commit_url = True, info.oid, info.commit_url
            result.pr_url, result.pr_revision = info.pr_url, info.pr_revision
    if tag:
        try:
            api.create_tag(repo_id, tag=tag, revision=result.commit, repo_type="dataset",
                           tag_message=f"ferdata push of {path.name}")
        except Exception as e:
            raise FerdataError(f"pushed commit {result.commit[:12]} to {repo_id}@{branch}, but tagging it {tag!r} "
                               f"failed: {_one_line(e, token)}; tag it again with ferdata push --tag") from None
        result.tag = tag
    return result


def _same_content(local: Path, remote: Any) -> bool:
    """Whether a local file holds what a Hub file entry describes (LFS: sha256; regular: git blob id)."""
    import hashlib

    size = local.stat().st_size
    if getattr(remote, "size", None) is not None and remote.size != size:
        return False
    git, sha = hashlib.sha1(b"blob %d\0" % size), hashlib.sha256()
    with local.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            git.update(chunk)
            sha.update(chunk)
    lfs = getattr(remote, "lfs", None)
    if lfs is not None:
        return bool(lfs.sha256 == sha.hexdigest())
    return bool(remote.blob_id == git.hexdigest())


# ---------------------------------------------------------------- fetch (for ferdata import hub)

def parse_hub_ref(ref: str) -> tuple[str, str | None]:
    """``user/name@revision`` -> (``user/name``, revision or None).

    Raises:
        UsageError: for a malformed repo id.
    """
    repo_id, _, revision = ref.partition("@")
    check_repo_id(repo_id)
    if "@" in ref and not revision:
        raise UsageError(f"{ref!r}: give a revision after @ (a branch, tag, refs/pr/N or commit id)")
    return repo_id, revision or None


def fetch(repo_id: str, revision: str | None = None, *, endpoint: str | None = None,
          cache_dir: str | Path | None = None) -> Path:
    """Download (or find in the local cache, offline) a Hub dataset's files; returns the snapshot folder,
    named by its commit id.

    Works with ``HF_HUB_OFFLINE=1`` from the cache. The token, if any, comes from ``HF_TOKEN``.

    Raises:
        UsageError: one line when the repository or the revision does not exist, or is not cached offline.
        FerdataError: when the Hub cannot be reached or fails.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id}@{revision}" if revision else repo_id
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or ""
    try:
        folder = snapshot_download(repo_id, repo_type="dataset", revision=revision, endpoint=_hub_endpoint(endpoint),
                                   cache_dir=str(cache_dir) if cache_dir else None)
    except RevisionNotFoundError:
        raise UsageError(f"revision {revision!r} not found in dataset {repo_id} (give a branch, tag, refs/pr/N or "
                         "commit id)") from None
    except RepositoryNotFoundError:
        raise UsageError(f"dataset repository {repo_id!r} not found on the Hub (or private without a token)") from None
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            raise UsageError(f"{where} is not in the local Hub cache and HF_HUB_OFFLINE=1; import it once online") \
                from None
        raise FerdataError(f"cannot reach the Hub for {where}: {_one_line(e, token)}") from None
    except Exception as e:
        raise FerdataError(f"download of {where} failed: {_one_line(e, token)}") from None
    return Path(folder)
