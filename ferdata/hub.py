"""Export a dataset directory to the Hugging Face Hub layout, to class folders, and push it.

Hub layout (``ferdata export DIR --out HUBDIR``)::

    HUBDIR/README.md                               dataset card: YAML metadata + body
    HUBDIR/data/{split}-00000-of-0000N.parquet     rows with their features (ClassLabel names kept)

``datasets.load_dataset(HUBDIR)`` loads it back to the same rows. The card's YAML carries
``license``, ``task_categories: [image-classification]``, ``size_categories``, ``pretty_name``,
``configs`` and ``dataset_info.features`` (``push_to_hub`` does not write license or task
metadata, so ferdata writes the card itself from ``manifests/dataset-card.md``). The body gives
provenance, the recipe, per-step counts, the class distribution per split and class weights.

``--format imagefolder`` writes ``OUT/{split}/{class}/{id}.{png|jpg}`` for tools that read
folders (Keras ``image_dataset_from_directory``).

``ferdata push DIR REPO_ID`` exports to a temporary folder and uploads it with ``huggingface_hub``
using ``--token`` or ``HF_TOKEN``. The token is never printed, logged or written to disk; errors
from the Hub are reported with the token redacted.
"""

from __future__ import annotations

import json
import math
import os
import string
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from ferdata.errors import FerdataError, UsageError

#: Largest parquet shard written, in bytes of Arrow data.
MAX_SHARD_BYTES = 500 * 1024 * 1024
FORMATS = ("hub", "imagefolder")


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` value for ``n`` rows."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                        (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "10M<n<100M"


def _steps_table(manifest: dict[str, Any]) -> str:
    rows = []
    for entry in manifest.get("steps", []):
        params = ", ".join(f"{k}={v}" for k, v in entry.get("params", {}).items() if v not in (None, "", [], {}))
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(entry.get("rejected_by_reason", {}).items()))
        rows.append(f"| {entry['step']} | {params.replace('|', '/')} | {entry.get('input_rows', '')} | {entry['kept']} | "
                    f"{entry['rejected']}{f' ({reasons})' if reasons else ''} | {entry.get('seconds', '')} |")
    return "\n".join(rows) or "| (none) | | | | | |"


def dataset_card(path: str | Path, *, pretty_name: str | None = None, license: str = "other",
                 repo_id: str | None = None, description: str | None = None) -> str:
    """Render the dataset card (README.md) of a dataset directory.

    Example:
        >>> print(dataset_card("fer2013")[:3])   # doctest: +SKIP
        ---
    """
    from datasets.info import DatasetInfo, DatasetInfosDict
    from datasets.splits import SplitDict, SplitInfo
    from huggingface_hub import DatasetCard, DatasetCardData

    from ferdata import __version__
    from ferdata.dataset import class_counts, label_names, open_dataset, read_manifest
    from ferdata.resources import manifest_path

    path = Path(path)
    dd = open_dataset(path)
    manifest = read_manifest(path)
    names = label_names(dd)
    first = next(iter(dd.values()))
    total = sum(len(ds) for ds in dd.values())
    pretty = pretty_name or (manifest.get("recipe") or {}).get("name") or path.name
    meta = DatasetCardData(
        license=license,
        task_categories=["image-classification"],
        tags=["facial-expression-recognition", "ferdata"],
        size_categories=[size_category(total)],
        pretty_name=pretty,
        configs=[{"config_name": "default", "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in dd]}],
    )
    splits = SplitDict()
    for s, ds in dd.items():
        splits.add(SplitInfo(name=s, num_examples=len(ds), num_bytes=int(ds.data.nbytes) if ds._indices is None else 0))
    # dataset_info (features and splits) in the YAML form push_to_hub writes, through datasets' public API
    DatasetInfosDict({"default": DatasetInfo(features=first.features, splits=splits)}).to_dataset_card_data(meta)
    sources = Counter()
    for ds in dd.values():
        sources.update(ds["source"])
    distribution = []
    for split, ds in dd.items():
        counts = class_counts(ds)
        distribution.append(f"| {split} | {' | '.join(str(counts[n]) for n in names)} | {len(ds)} |")
    weights = manifest.get("class_weights") or {}
    if weights:
        lines = ["| split | method | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        for split, methods in weights.items():
            for method, w in methods.items():
                lines.append(f"| {split} | {method} | " + " | ".join(f"{w.get(n, 0):.3g}" for n in names) + " |")
        weights_text = "\n".join(lines)
    else:
        weights_text = "Not computed (run `ferdata balance` to store them)."
    recipe = manifest.get("recipe")
    template = string.Template(manifest_path("dataset-card", suffix=".md").read_text(encoding="utf-8"))
    body = template.safe_substitute(
        pretty_name=pretty,
        description=description or f"A facial-expression-recognition dataset of {total} images in "
                                   f"{len(names)} classes, built with ferdata.",
        ferdata_version=__version__,
        repo_or_dir=repo_id or str(path),
        label_names=", ".join(names),
        provenance="\n".join(f"- `{s}`: {n} images" for s, n in sorted(sources.items())),
        recipe=f"`{recipe['name']}` ({json.dumps(recipe.get('variables', {}))})" if recipe else "single commands",
        seed=manifest.get("seed"),
        steps_table=_steps_table(manifest),
        class_header=" | ".join(names),
        class_rule="---|" * len(names),
        distribution_table="\n".join(distribution),
        class_weights=weights_text,
        license=license,
    )
    return str(DatasetCard(f"---\n{meta.to_yaml()}\n---\n\n{body}"))


def export_hub(path: str | Path, out: str | Path, *, overwrite: bool = False, license: str = "other",
               pretty_name: str | None = None, repo_id: str | None = None,
               max_shard_bytes: int = MAX_SHARD_BYTES) -> Path:
    """Write the Hub layout (parquet shards + README.md card) of a dataset directory.

    Returns:
        The output directory.

    Example:
        >>> export_hub("fer2013", "fer2013-hub")   # doctest: +SKIP
    """
    from ferdata.dataset import atomic_dir, open_dataset, prepare_output

    dd = open_dataset(path)
    out = prepare_output(out, overwrite=overwrite, inputs=[path])
    with atomic_dir(out) as tmp:
        (tmp / "data").mkdir()
        for split, ds in dd.items():
            shards = max(1, math.ceil(ds.data.nbytes / max_shard_bytes))
            for i in range(shards):
                part = ds.shard(shards, i, contiguous=True)
                part.to_parquet(str(tmp / "data" / f"{split}-{i:05d}-of-{shards:05d}.parquet"))
        card = dataset_card(path, license=license, pretty_name=pretty_name, repo_id=repo_id)
        (tmp / "README.md").write_text(card, encoding="utf-8")
    return out


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
    """Export in ``format`` ``hub`` or ``imagefolder``.

    Raises:
        UsageError: for another format.
    """
    if format == "hub":
        return export_hub(path, out, overwrite=overwrite, **options)
    if format == "imagefolder":
        return export_imagefolder(path, out, overwrite=overwrite)
    raise UsageError(f"--format {format!r} is not allowed; allowed: {', '.join(FORMATS)}")


def _redact(text: str, token: str) -> str:
    return text.replace(token, "***") if token else text


def push(path: str | Path, repo_id: str, *, token: str | None = None, private: bool = False, api: Any = None,
         license: str = "other", endpoint: str | None = None) -> str:
    """Export a dataset directory and upload it to the Hub as a dataset repository.

    Args:
        path: the dataset directory.
        repo_id: ``user/name`` on the Hub.
        token: a Hub token (default: ``HF_TOKEN``); never printed or stored.
        private: create the repository as private.
        api: an object with ``create_repo`` and ``upload_folder`` (default ``huggingface_hub.HfApi``);
            tests inject one.
        license: the card's license.
        endpoint: another Hub endpoint (e.g. a loopback stand-in).

    Returns:
        The URL or identifier the Hub returned for the commit.

    Raises:
        UsageError: without a token or with a malformed repo id.
        FerdataError: when the Hub refuses the upload (message redacted).
    """
    token = token or os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if not token:
        raise UsageError("no Hub token: set HF_TOKEN or pass --token")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise UsageError(f"repo id {repo_id!r} must look like user/name")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token, endpoint=endpoint)
    with tempfile.TemporaryDirectory(prefix="ferdata-push-") as tmp:
        folder = export_hub(path, Path(tmp) / "hub", license=license, repo_id=repo_id)
        try:
            api.create_repo(repo_id=repo_id, repo_type="dataset", private=private, exist_ok=True, token=token)
            result = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset", token=token,
                                       commit_message="Upload dataset with ferdata")
        except Exception as e:  # the Hub client raises many types; report one line, token redacted
            raise FerdataError(f"push to {repo_id} failed: {type(e).__name__}: {_redact(str(e), token)}") from None
    return str(getattr(result, "commit_url", result))
