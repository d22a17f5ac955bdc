"""Invariants every registered step must satisfy, and the kill-safety of ``ferdata build``.

One table (``CASES``) gives every registered step at least one minimal configuration on a tiny
generated dataset (train/validation/test of 48x48 gray images, with an exact duplicate inside
train, and one image twice in train as happy and once in test as sad: a label conflict).
``test_every_step_is_covered`` fails when a step is registered without an entry here, so the
next step added cannot escape.

Invariants (each a parametrised test over ``CASES``):

* conservation: per split, the input rows are the rows kept plus the step's new ledger rows
  (every one with step, reason and id); the input's ledger is carried over unchanged;
* the input directory's files (names and bytes) are unchanged after the command;
* test/validation rows are never relabelled, nor moved into another split, unless the case's
  flag names it (``split --resplit``; ``classes`` maps whole classes);
* determinism: the same command twice gives identical data (columns, features, every value per
  split) and ledger; ``num_proc=2`` gives the same as 1 (in a subprocess without TensorFlow);
* token safety: with ``HF_TOKEN`` set, no file the command writes and no log line contains it.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import CRAFTED, write_fer_csv

TOKEN = "hf_INTEGRITYsentinel0123456789abcdef"
CLASSES4 = ["angry", "happy", "neutral", "sad"]
EVAL_SPLITS = ("test", "validation")
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    """One minimal configuration of a step for the harness."""

    id: str
    step: str
    params: dict[str, Any] = field(default_factory=dict)
    #: a step run first to make this case's input (e.g. ``quality`` before ``drop_flagged``)
    prepare: tuple[str, dict[str, Any]] | None = None
    #: the step makes rows (oversampling, supplements): every output row must trace to an input
    #: row of the same split (or to the supplement), but the counts do not balance
    adds_rows: bool = False
    #: the step computes new pixels: output rows trace to input rows by ``parent_id``
    changes_pixels: bool = False
    #: the flag that allows moving rows between splits (``resplit``)
    moves_rows: bool = False
    #: "grouping": labels change by a whole-class mapping (the same old class -> the same new one)
    relabels: str | None = None
    #: the case's num_proc=2 run is compared with num_proc=1 (a few representative cases: forking
    #: pools costs seconds each)
    num_proc: bool = False
    #: the input dataset ("@base", or "@small" for the MTCNN steps, ~0.15 s an image)
    input: str = "@base"
    #: columns whose values may legitimately differ between two runs
    volatile: tuple[str, ...] = ()
    #: known violations: {invariant: reason} -> xfail(strict=True) for that invariant
    known: dict[str, str] = field(default_factory=dict)


# Placeholders in params: "@base" (the generated dataset), "@folder", "@csv", "@affectnet",
# "@review" (a review.csv rejecting one train and one test row).
CASES: list[Case] = [
    # sources: conservation counts the source's items
    Case("import_folder", "import_folder", {"src": "@folder"}, num_proc=True),
    Case("import_fer2013", "import_fer2013", {"csv": "@csv"}),
    Case("import_hf", "import_hf", {"src": "@base"}),
    Case("import_affectnet", "import_affectnet", {"src": "@affectnet"}),
    # dataset steps
    Case("balance-undersample", "balance", {"strategy": "undersample"}),
    Case("balance-target", "balance", {"strategy": "target", "per_class": 3}),
    Case("balance-oversample", "balance", {"strategy": "oversample"}, adds_rows=True),
    Case("balance-supplement", "balance", {"strategy": "target", "per_class": 6, "supplement": "@base"},
         adds_rows=True),
    Case("split-keep", "split", {"ratios": "0.8,0.2"}),
    Case("split-resplit", "split", {"ratios": "0.5,0.5", "resplit": True}, moves_rows=True),
    Case("classes-3", "classes", {"classes": 3}, relabels="grouping"),
    Case("quality-annotate", "quality", {}, num_proc=True),
    Case("quality-drop-all", "quality", {"drop": "all"}),
    Case("drop_flagged", "drop_flagged", {"checks": "all"}, prepare=("quality", {})),
    Case("dedupe", "dedupe", {}, num_proc=True),
    Case("dedupe-majority", "dedupe", {"on_conflict": "majority"}),
    Case("dedupe-report-only", "dedupe", {"report_only": True}),
    # six rows of @base are in @small (same pixels): contamination, then the usual within-dataset dedupe
    Case("dedupe-against", "dedupe", {"against": "@small"}),
    Case("dedupe-against-only", "dedupe", {"against": "@small", "within": False}),
    Case("review_exclusions", "review_exclusions", {"review_csv": "@review"}),
    Case("clahe", "clahe", {}, changes_pixels=True),
    Case("crop", "crop", {}, changes_pixels=True, input="@small"),
    Case("align", "align", {}, changes_pixels=True, input="@small"),
    Case("normalize", "normalize", {}, changes_pixels=True, input="@small"),
    Case("upscale", "upscale", {"size": 192}, changes_pixels=True),
]

#: Registered steps the harness does not run, with the reason (each must be tested elsewhere).
NOT_RUN = {
    "crawl": "needs the loopback search server; its conservation (kept + ledger = URLs fetched) and "
             "determinism (re-run from the cache) are tested in tests/test_crawl.py",
    "import_ferplus": "FER+ folder source (issue 14), no harness fixture yet; its conservation (kept + ledger = "
                      "label.csv rows, every reason) is tested in tests/test_fer2013.py::test_ferplus_folder_layout",
    "import_hub": "a published dataset (loopback Hub or Hub-layout folder); its conservation (kept + ledger = rows "
                  "published, id_mismatch) and ids/lineage round trip are tested in tests/test_hub.py",
}

_CASE = {c.id: c for c in CASES}
_SOURCES = {"import_folder", "import_fer2013", "import_hf", "import_affectnet"}


def case_params(invariant: str, cases: list[Case] | None = None) -> list[Any]:
    """pytest params over ``cases``, with the known violations of ``invariant`` as strict xfails."""
    out = []
    for case in cases or CASES:
        marks = [pytest.mark.xfail(strict=True, reason=case.known[invariant])] if invariant in case.known else []
        out.append(pytest.param(case.id, id=case.id, marks=marks))
    return out


def test_every_step_is_covered() -> None:
    """A newly registered step fails here until it has a case in CASES (or a reason in NOT_RUN)."""
    from ferdata.steps import load_steps

    registered = set(load_steps())
    covered = {c.step for c in CASES} | set(NOT_RUN)
    assert registered - covered == set(), f"steps without an integrity case: {sorted(registered - covered)}"
    assert covered - registered == set(), f"cases for steps that no longer exist: {sorted(covered - registered)}"
    sources = {name for name, step in load_steps().items() if step.source}
    assert sources - set(NOT_RUN) == _SOURCES


# ---------------------------------------------------------------- tiny data

def _gray_images(n: int, seed: int) -> list[np.ndarray]:
    """Smooth 48x48 gray images of varied brightness and contrast (distinct perceptual hashes)."""
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        noise = Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).resize((48, 48), Image.BICUBIC)
        arr = np.asarray(noise.filter(ImageFilter.GaussianBlur(1)), dtype=np.float32)
        arr = arr * (0.3 + 0.7 * rng.random()) + rng.integers(0, 60)
        out.append(np.clip(arr, 0, 255).astype(np.uint8))
    out[0] = np.full((48, 48), 3, np.uint8)  # a dark, low-information image for the quality checks
    return out


def _face(i: int) -> np.ndarray:
    from PIL import Image

    from tests.crawl_server import face_photos

    return np.asarray(Image.fromarray(face_photos(i + 1)[i]).convert("L").resize((48, 48), Image.BILINEAR))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The inputs: a class-folder tree, its imported dataset (@base), a CSV, an AffectNet tree, a review."""
    from PIL import Image

    from ferdata.steps import apply_step

    root = tmp_path_factory.mktemp("integrity-data")
    folder = root / "folder"
    images = iter(_gray_images(40, seed=12))
    layout = {"train": 4, "validation": 1, "test": 2}
    for split, per_class in layout.items():
        for name in CLASSES4:
            (folder / split / name).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(next(images)).save(folder / split / name / f"{i}.png")
    Image.fromarray(_face(0)).save(folder / "train" / "happy" / "face.png")
    Image.fromarray(_face(1)).save(folder / "test" / "neutral" / "face.png")
    # an exact duplicate inside train, and one image in train (happy, twice) and test (sad): a label conflict
    (folder / "train" / "angry" / "copy.png").write_bytes((folder / "train" / "angry" / "1.png").read_bytes())
    for name in ("leak.png", "leak2.png"):  # two train copies: a majority vote would relabel the test copy
        (folder / "train" / "happy" / name).write_bytes((folder / "test" / "sad" / "0.png").read_bytes())
    (folder / "train" / "sad" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # to the ledger
    base = root / "base"
    apply_step("import_folder", {"src": str(folder), "name": "tiny"}, out=base)
    small_folder = root / "small"
    for rel in ("train/happy/face.png", "train/happy/0.png", "train/sad/1.png", "test/neutral/face.png",
                "test/angry/0.png", "validation/sad/0.png"):
        (small_folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (small_folder / rel).write_bytes((folder / rel).read_bytes())
    small = root / "small-ds"
    apply_step("import_folder", {"src": str(small_folder), "name": "small"}, out=small)

    csv_path = write_fer_csv(root / "fer2013.csv", 2, usages=("Training", "PrivateTest"),
                             extra_lines=("3,1 2 3,Training", "9," + " ".join(["0"] * 2304) + ",Training"))

    aff = root / "affectnet"
    for split_dir, codes in (("train_set", [0, 1, 3, 7]), ("val_set", [2, 6])):
        (aff / split_dir / "images").mkdir(parents=True)
        (aff / split_dir / "annotations").mkdir(parents=True)
        for i, code in enumerate(codes):
            Image.fromarray(next(images)).save(aff / split_dir / "images" / f"{i}.png")
            np.save(aff / split_dir / "annotations" / f"{i}_exp.npy", np.array(str(code)))
        Image.fromarray(_face(2)).save(aff / split_dir / "images" / "99.png")  # no annotation: to the ledger

    from ferdata.dataset import open_dataset

    dd = open_dataset(base)
    review = root / "review.csv"
    with review.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "label", "origin", "decision"])
        for split in ("train", "test"):
            for i, row in enumerate(dd[split].select_columns(["id", "label", "origin"])):
                writer.writerow([row["id"], row["label"], row["origin"], "reject" if i == 2 else "keep"])
    return {"@base": base, "@small": small, "@folder": folder, "@csv": csv_path, "@affectnet": aff, "@review": review}


def _resolve(params: dict[str, Any], data: dict[str, Path]) -> dict[str, Any]:
    return {k: str(data[v]) if isinstance(v, str) and v in data else v for k, v in params.items()}


def digest(path: Path) -> str:
    """sha256 over every file name and content under ``path`` (or of the file itself)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in files:
        h.update(str(p.relative_to(path.parent if path.is_file() else path)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


@contextlib.contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """Everything the ``ferdata`` logger says (INFO and up) while the block runs."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger("ferdata")
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


# ---------------------------------------------------------------- running the cases

@dataclass
class Run:
    case: Case
    input: Path          # the dataset directory (or source) the step read
    outs: list[Path]     # two outputs of the same command
    entry: dict[str, Any]
    logs: str
    digest_before: str
    digest_after: str


class Runner:
    """Runs each case twice (with HF_TOKEN set) on first use and keeps the results for every test."""

    def __init__(self, data: dict[str, Path], root: Path) -> None:
        self.data, self.root, self.runs, self.prepared = data, root, {}, {}

    def input_of(self, case: Case) -> Path:
        if case.step in _SOURCES:
            key = next(v for v in case.params.values() if isinstance(v, str) and v.startswith("@"))
            return self.data[key]
        if case.prepare is None:
            return self.data[case.input]
        name, params = case.prepare
        if (name, json.dumps(params)) not in self.prepared:
            from ferdata.steps import apply_step

            out = self.root / f"prepared-{name}-{len(self.prepared)}"
            apply_step(name, _resolve(params, self.data), inputs=[self.data[case.input]], out=out)
            self.prepared[(name, json.dumps(params))] = out
        return self.prepared[(name, json.dumps(params))]

    def get(self, case_id: str) -> Run:
        if case_id not in self.runs:
            self.runs[case_id] = self._run(_CASE[case_id])
        return self.runs[case_id]

    def _run(self, case: Case) -> Run:
        from ferdata.steps import StepContext, apply_step

        source = case.step in _SOURCES
        inp = self.input_of(case)
        before = digest(inp)
        outs, entry = [], {}
        old = os.environ.get("HF_TOKEN")
        os.environ["HF_TOKEN"] = TOKEN
        try:
            with captured_logs() as logs:
                for k in range(2):
                    out = self.root / f"{case.id}-{k}"
                    _, entry = apply_step(case.step, _resolve(case.params, self.data), inputs=[] if source else [inp],
                                          out=out, ctx=StepContext(seed=3))
                    outs.append(out)
        finally:
            if old is None:
                os.environ.pop("HF_TOKEN", None)
            else:
                os.environ["HF_TOKEN"] = old
        return Run(case, inp, outs, entry, logs.getvalue(), before, digest(inp))


@pytest.fixture(scope="module")
def runner(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Runner:
    return Runner(data, tmp_path_factory.mktemp("integrity-runs"))


def _rows(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Per split: id, label name, parent_id of every row (images undecoded)."""
    from ferdata.dataset import open_dataset

    out = {}
    for split, ds in open_dataset(path).items():
        names = ds.features["label"].names if hasattr(ds.features.get("label"), "names") else None
        cols = [c for c in ("id", "label", "parent_id") if c in ds.column_names]
        rows = ds.select_columns(cols).to_list() if len(ds) else []
        for r in rows:
            if names is not None and r.get("label") is not None and r["label"] >= 0:
                r["label"] = names[r["label"]]
        out[split] = rows
    return out


def _new_ledger(run: Run, out: Path) -> list[dict[str, str]]:
    from ferdata.dataset import read_rejects

    old = [] if run.case.step in _SOURCES else read_rejects(run.input)
    rows = read_rejects(out)
    assert rows[: len(old)] == old, "the input's ledger must be carried over unchanged, in order"
    return rows[len(old):]


def _source_items(case: Case, data: dict[str, Path]) -> int:
    if case.step == "import_folder":
        return sum(1 for p in data["@folder"].rglob("*") if p.is_file())
    if case.step == "import_affectnet":
        return sum(1 for p in data["@affectnet"].rglob("images/*") if p.is_file())
    if case.step == "import_fer2013":
        return len(data["@csv"].read_text().splitlines()) - 1
    if case.step == "import_hf":
        from ferdata.dataset import open_dataset

        return sum(len(ds) for ds in open_dataset(data["@base"]).values())
    raise AssertionError(f"no item count for source {case.step}")


# ---------------------------------------------------------------- the invariants

@pytest.mark.parametrize("case_id", case_params("conservation"))
def test_conservation(runner: Runner, case_id: str) -> None:
    run = runner.get(case_id)
    case, out = run.case, run.outs[0]
    new = _new_ledger(run, out)
    for r in new:  # an item a source could not decode has no pixel id yet: its origin names it
        ident = r["id"] or (case.step in _SOURCES and r["origin"])
        assert r["step"] == case.step and r["reason"] and ident, f"ledger row without step, reason or id: {r}"
    rows = _rows(out)
    entry = run.entry
    kept = sum(len(v) for v in rows.values())
    assert entry["kept"] == kept and entry["rejected"] == len(new) and entry["limited_out"] == 0
    if case.step in _SOURCES:
        assert _source_items(case, runner.data) == kept + len(new)
        return
    before = _rows(run.input)
    key = "parent_id" if case.changes_pixels else "id"
    if case.adds_rows:
        # every output row comes from the same input split (or, for supplements, from the supplement)
        for split, out_rows in rows.items():
            known = {r["id"] for r in before.get(split, [])}
            if case.params.get("supplement"):
                known |= {r["id"] for r in _rows(runner.data["@base"]).get("train", [])}
            assert {r[key] for r in out_rows} <= known, f"{split}: rows that trace to no input row of {split}"
        return
    if case.moves_rows:
        assert Counter(r[key] for v in rows.values() for r in v) + Counter(r["id"] for r in new) \
            == Counter(r["id"] for v in before.values() for r in v)
        return
    assert entry["input_rows"] == entry["kept"] + entry["rejected"] + entry["limited_out"]
    removed: Counter[str] = Counter()
    for split in before:
        ins, outs = Counter(r["id"] for r in before[split]), Counter(r[key] for r in rows.get(split, []))
        assert outs <= ins, f"{split}: rows appeared that were not in the input's {split}: {sorted(outs - ins)}"
        removed += ins - outs
    assert set(rows) <= set(before), f"new splits: {sorted(set(rows) - set(before))}"
    assert Counter(r["id"] for r in new) == removed, "rows removed without a ledger row, or ledger rows for rows kept"


@pytest.mark.parametrize("case_id", case_params("input_unchanged"))
def test_input_unchanged(runner: Runner, case_id: str) -> None:
    run = runner.get(case_id)
    assert run.digest_after == run.digest_before, f"{run.input} was modified by {run.case.step}"


@pytest.mark.parametrize("case_id", case_params("eval_untouched", [c for c in CASES if c.step not in _SOURCES]))
def test_eval_splits_untouched(runner: Runner, case_id: str) -> None:
    run = runner.get(case_id)
    case = run.case
    before, after = _rows(run.input), _rows(run.outs[0])
    key = "parent_id" if case.changes_pixels else "id"
    mapping: dict[str, str] = {}
    for split in EVAL_SPLITS:
        if split not in before:
            continue
        labels: dict[str, set[str]] = {}
        for r in before[split]:
            labels.setdefault(r["id"], set()).add(r["label"])
        for r in after.get(split, []):
            if r[key] not in labels:
                continue
            if case.relabels == "grouping":
                (old,) = labels[r[key]] if len(labels[r[key]]) == 1 else (sorted(labels[r[key]])[0],)
                assert mapping.setdefault(old, r["label"]) == r["label"], f"{old} mapped to two classes"
            else:
                assert r["label"] in labels[r[key]], f"{split} row {r[key][:12]} relabelled {labels[r[key]]} -> {r['label']}"
        if case.moves_rows:
            continue
        for other, rows in after.items():
            if other == split:
                continue
            native = {r["id"] for r in before.get(other, [])}
            moved = {r[key] for r in rows if r[key] in labels and r[key] not in native}
            assert not moved, f"{len(moved)} {split} rows moved into {other}"


@pytest.mark.parametrize("case_id", case_params("deterministic"))
def test_deterministic(runner: Runner, case_id: str) -> None:
    run = runner.get(case_id)
    _assert_same_output(run.outs[0], run.outs[1], volatile=run.case.volatile)


def _assert_same_output(a: Path, b: Path, *, volatile: tuple[str, ...] = ()) -> None:
    from ferdata.dataset import open_dataset, read_rejects

    da, db = open_dataset(a), open_dataset(b)
    assert list(da) == list(db)
    for split in da:
        x, y = da[split], db[split]
        assert x.column_names == y.column_names and x.features == y.features, split
        cols = [c for c in x.column_names if c not in volatile]
        tx = x.with_format("arrow")[:].select(cols)
        ty = y.with_format("arrow")[:].select(cols)
        for c in cols:
            assert tx[c].equals(ty[c]), f"{split}: column {c!r} differs between two runs"
    assert read_rejects(a) == read_rejects(b), "ledgers differ between two runs"


@pytest.mark.parametrize("case_id", case_params("token_safe"))
def test_token_never_written(runner: Runner, case_id: str) -> None:
    run = runner.get(case_id)
    needle = TOKEN.encode()
    for out in run.outs:
        leaked = [p for p in out.rglob("*") if p.is_file() and needle in p.read_bytes()]
        assert not leaked, f"HF_TOKEN written to {leaked}"
    assert TOKEN not in run.logs


def test_token_not_in_debug_traceback(fer_dir: Path, monkeypatch: pytest.MonkeyPatch, run_cli) -> None:
    """A failing command with the debug traceback on never prints the token."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("FERDATA_VERBOSITY", "debug")
    code, out, err = run_cli("push", fer_dir, "me/fer-integrity")
    assert code != 0, "push must fail offline"
    assert TOKEN not in out + err and err.strip()


# ---------------------------------------------------------------- num_proc 2 == 1

_NUM_PROC_SCRIPT = """
import json, sys
from ferdata.dataset import new_manifest, open_dataset, read_rejects, save_dataset
from ferdata.progress import disable_progress_bars
from ferdata.steps import StepContext, get_step, run_step
disable_progress_bars()
for job in json.loads(sys.argv[1]):
    step = get_step(job["step"])
    data = open_dataset(job["inputs"][0]) if job["inputs"] else None
    result, entry = run_step(step, data, step.make_config(job["params"]), StepContext(seed=3, num_proc=2))
    ledger = read_rejects(job["inputs"][0]) if job["inputs"] else []
    # the step's own pools run with 2 processes; the save (spawned workers, slow to start) with 1
    save_dataset(result.data, job["out"], manifest=new_manifest(), rejects=[*ledger, *result.rejects], num_proc=1)
print("forked" if "tensorflow" not in sys.modules else "tensorflow loaded")
"""


@pytest.fixture(scope="module")
def num_proc_runs(runner: Runner, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The num_proc cases run with num_proc=2 in one fresh process (no TensorFlow, so pools do fork)."""
    root = tmp_path_factory.mktemp("integrity-np2")
    jobs, outs = [], {}
    for case in CASES:
        if not case.num_proc:
            continue
        inputs = [] if case.step in _SOURCES else [str(runner.input_of(case))]
        outs[case.id] = root / case.id
        jobs.append({"step": case.step, "params": _resolve(case.params, runner.data), "inputs": inputs,
                     "out": str(outs[case.id])})
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(root / "hf"), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", _NUM_PROC_SCRIPT, json.dumps(jobs)], capture_output=True, text=True,
                          cwd=REPO, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "forked", proc.stdout
    return outs


@pytest.mark.parametrize("case_id", case_params("num_proc", [c for c in CASES if c.num_proc]))
def test_num_proc_2_equals_1(runner: Runner, num_proc_runs: dict[str, Path], case_id: str) -> None:
    run = runner.get(case_id)
    _assert_same_output(run.outs[0], num_proc_runs[case_id], volatile=run.case.volatile)


def test_no_fork_after_tensorflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once TensorFlow is imported, worker pools fall back to one process, and the log says so."""
    from ferdata.steps import safe_num_proc

    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    assert safe_num_proc(4, what="t1") == 4
    import types

    import datasets

    from ferdata.engines import map_batches

    fake = types.ModuleType("tensorflow")  # only the name is looked up (datasets also checks tf.Tensor)
    fake.Tensor = type("Tensor", (), {})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorflow", fake)
    with captured_logs() as logs:
        assert safe_num_proc(4, what="t2") == 1 and safe_num_proc(1, what="t2") == 1
        # every per-row step maps through the engine: its workers are not forked either
        ds = datasets.Dataset.from_dict({"a": list(range(8))})
        out = map_batches(ds, lambda b: {"pid": [os.getpid()] * len(b["a"])}, batched=True, num_proc=2)
    assert set(out["pid"]) == {os.getpid()}
    assert "TensorFlow is loaded" in logs.getvalue() and "--num-proc 4 runs as 1" in logs.getvalue()
    assert "Dataset.map: TensorFlow is loaded" in logs.getvalue()


# ---------------------------------------------------------------- --limit: recorded, or refused

def test_limit_is_recorded_as_a_trial(data: dict[str, Path], tmp_path: Path, run_cli) -> None:
    from ferdata.dataset import read_manifest, read_rejects

    code, _, err = run_cli("filter", data["@base"], "--out", tmp_path / "q", "--limit", "2", "--drop", "all", "-q")
    assert code == 0, err
    manifest = read_manifest(tmp_path / "q")
    entry = manifest["steps"][-1]
    assert manifest["trial"] is True and entry["limit"] == 2 and entry["seed"] == 0
    assert entry["limited_out"] == entry["input_rows"] - 2 * len(manifest["splits"])
    new = len(read_rejects(tmp_path / "q")) - len(read_rejects(data["@base"]))
    assert entry["input_rows"] == entry["kept"] + new + entry["limited_out"]
    assert "trial" not in read_manifest(data["@base"])
    # a later command on a trial output stays a trial
    code, _, err = run_cli("split", tmp_path / "q", "--out", tmp_path / "s", "-q")
    assert code == 0, err
    assert read_manifest(tmp_path / "s")["trial"] is True and read_manifest(tmp_path / "s")["steps"][-1]["limit"] is None


_LIMIT_CASES = [c for c in CASES if c.step not in _SOURCES and c.input == "@base" and c.step != "upscale"]


@pytest.mark.parametrize("case_id", case_params("limit", _LIMIT_CASES))
def test_limit_cuts_every_split_and_says_so(runner: Runner, case_id: str, tmp_path: Path) -> None:
    """--limit 2 on every (cheap) step: the step sees 2 rows of each split, whatever it reads (the
    cut is central, so a step reading Arrow columns directly must honour it too), and the rows
    left out are counted."""
    from ferdata.dataset import open_dataset, read_manifest, read_rejects
    from ferdata.steps import StepContext, apply_step

    case = _CASE[case_id]
    inp = runner.input_of(case)
    _, entry = apply_step(case.step, _resolve(case.params, runner.data), inputs=[inp], out=tmp_path / "l",
                          ctx=StepContext(seed=3, limit=2))
    sizes = {split: len(ds) for split, ds in open_dataset(inp).items()}
    assert entry["limit"] == 2 and entry["limited_out"] == sum(max(0, n - 2) for n in sizes.values())
    assert read_manifest(tmp_path / "l")["trial"] is True
    new = len(read_rejects(tmp_path / "l")) - len(read_rejects(inp))
    if not case.adds_rows:
        assert entry["input_rows"] == entry["kept"] + new + entry["limited_out"]
    if not (case.adds_rows or case.moves_rows):
        out = open_dataset(tmp_path / "l")
        assert all(len(out[split]) <= min(2, n) for split, n in sizes.items() if split in out)


def test_commands_that_cannot_limit_refuse_it(data: dict[str, Path], tmp_path: Path, run_cli) -> None:
    code, _, err = run_cli("evaluate", tmp_path, data["@base"], "--limit", "3")
    assert code == 2 and "--limit" in err and err.count("\n") == 1
    code, _, err = run_cli("refine", data["@base"], "--out", tmp_path / "r", "--limit", "3")
    assert code == 2 and "--limit" in err


# ---------------------------------------------------------------- builds: fingerprint, state, kills

RECIPE = CRAFTED / "tiny-recipe.yaml"


def _build(run_cli, csv_path: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli("build", RECIPE, "--source", csv_path, "--out", out, "-q", *extra)


def _interrupt_at(monkeypatch: pytest.MonkeyPatch, name: str):
    from ferdata import steps

    real = steps.get_step(name)

    def killed(*a: Any, **k: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setitem(steps._REGISTRY, name, steps.Step(name, killed, real.config_cls, real.source, ""))
    return lambda: monkeypatch.setitem(steps._REGISTRY, name, real)


@pytest.fixture(scope="module")
def full_build(fer_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from click.testing import CliRunner

    from ferdata.cli import cli

    out = tmp_path_factory.mktemp("integrity-build") / "full"
    result = CliRunner().invoke(cli, ["build", str(RECIPE), "--source", str(fer_csv), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    return out


def test_changed_settings_start_over(fer_csv: Path, full_build: Path, tmp_path: Path, run_cli, monkeypatch) -> None:
    """A build killed under --limit and run again without it starts over (with a warning); so does --seed."""
    from ferdata.dataset import read_manifest

    out = tmp_path / "b"
    restore = _interrupt_at(monkeypatch, "split")
    code, _, _ = _build(run_cli, fer_csv, out, "--limit", "2")
    assert code == 130 and (tmp_path / ".b.build" / "state.json").exists()
    restore()
    with captured_logs() as logs:
        code, _, err = _build(run_cli, fer_csv, out)
    assert code == 0, err
    assert "other settings (limit 2 -> None)" in logs.getvalue() and "resuming" not in logs.getvalue()
    manifest = read_manifest(out)
    assert "trial" not in manifest and all(e["limit"] is None and e["seed"] == 0 for e in manifest["steps"])
    _assert_same_output(out, full_build)
    # the seed is part of the fingerprint too
    out2 = tmp_path / "c"
    restore = _interrupt_at(monkeypatch, "split")
    assert _build(run_cli, fer_csv, out2, "--seed", "5")[0] == 130
    restore()
    with captured_logs() as logs:
        assert _build(run_cli, fer_csv, out2)[0] == 0
    assert "other settings (seed 5 -> 0)" in logs.getvalue()
    _assert_same_output(out2, full_build)


def test_limit_build_is_a_trial(fer_csv: Path, tmp_path: Path, run_cli) -> None:
    from ferdata.dataset import read_manifest

    code, _, err = _build(run_cli, fer_csv, tmp_path / "t", "--limit", "3")
    assert code == 0, err
    manifest = read_manifest(tmp_path / "t")
    assert manifest["trial"] is True and [e["limit"] for e in manifest["steps"]] == [3, 3, 3]
    lines = len(fer_csv.read_text().splitlines()) - 1
    assert [e["limited_out"] for e in manifest["steps"]] == [lines - 3, 0, 0]  # import reads 3 lines


@pytest.mark.parametrize("source", ["folder", "fer2013", "hf", "affectnet"])
def test_source_limit_counts_what_it_left_out(data: dict[str, Path], tmp_path: Path, run_cli, source: str) -> None:
    from ferdata.dataset import read_manifest, read_rejects

    src = {"folder": "@folder", "fer2013": "@csv", "hf": "@base", "affectnet": "@affectnet"}[source]
    code, _, err = run_cli("import", source, data[src], "--out", tmp_path / "i", "--limit", "2", "-q")
    assert code == 0, err
    manifest = read_manifest(tmp_path / "i")
    entry = manifest["steps"][0]
    items = _source_items(Case(source, f"import_{source}"), data)
    assert manifest["trial"] is True and entry["limit"] == 2
    assert entry["kept"] + len(read_rejects(tmp_path / "i")) + entry["limited_out"] == items
    per = 2 * len(read_manifest(data["@base"])["splits"]) if source == "hf" else 2  # hf: 2 of each split
    assert entry["limited_out"] == items - per


@pytest.mark.parametrize("damage", ["truncated", "not-json", "wrong-shape"])
def test_corrupt_state_starts_over(fer_csv: Path, full_build: Path, tmp_path: Path, run_cli, monkeypatch,
                                   damage: str) -> None:
    out = tmp_path / "b"
    restore = _interrupt_at(monkeypatch, "split")
    assert _build(run_cli, fer_csv, out)[0] == 130
    restore()
    state = tmp_path / ".b.build" / "state.json"
    text = state.read_text()
    assert json.loads(text)["done"] == ["step-00-import_fer2013", "step-01-balance"]
    state.write_text({"truncated": text[: len(text) // 2], "not-json": "\x00\x00garbage",
                      "wrong-shape": json.dumps({"fingerprint": 3, "done": "all"})}[damage])
    with captured_logs() as logs:
        code, _, err = _build(run_cli, fer_csv, out)
    assert code == 0, err
    assert "starting over" in logs.getvalue() and "resuming" not in logs.getvalue()
    _assert_same_output(out, full_build)
    assert not (tmp_path / ".b.build").exists()


def test_final_output_replaced_only_by_rename(fer_csv: Path, tmp_path: Path, run_cli, monkeypatch) -> None:
    """--overwrite: when the final rename fails, the old output is still there, whole (it is never
    deleted before the new one is in place)."""
    out = tmp_path / "o"
    assert _build(run_cli, fer_csv, out)[0] == 0
    before = digest(out)
    real_replace = os.replace

    def failing_replace(src: Any, dst: Any) -> None:
        if Path(dst) == out and ".old-" not in Path(src).name:
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    code, _, err = _build(run_cli, fer_csv, out, "--overwrite", "--seed", "1")
    assert code == 1 and "disk full" in err
    monkeypatch.setattr(os, "replace", real_replace)
    assert digest(out) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".o.tmp") or p.name.startswith(".o.old")] == []


def test_dedupe_report_is_inside_the_output(data: dict[str, Path], tmp_path: Path, run_cli) -> None:
    """dedupe --report-only: the groups report is written into the output before it is renamed into
    place (from the library as from the CLI), and the manifest names it."""
    from ferdata.dataset import read_manifest
    from ferdata.steps import apply_step

    _, entry = apply_step("dedupe", {"report_only": True}, inputs=[data["@base"]], out=tmp_path / "d")
    manifest = read_manifest(tmp_path / "d")
    assert (tmp_path / "d" / "dedupe_groups.csv").read_text().startswith("group,")
    assert manifest["files"] == ["dedupe_groups.csv"] and entry["params"]["report"] == "dedupe_groups.csv"
    code, _, err = run_cli("dedupe", data["@base"], "--out", tmp_path / "c", "--report-only", "-q")
    assert code == 0, err
    assert (tmp_path / "c" / "dedupe_groups.csv").read_text() == (tmp_path / "d" / "dedupe_groups.csv").read_text()
    # a later command does not claim the report it did not copy
    code, _, err = run_cli("split", tmp_path / "c", "--out", tmp_path / "s", "-q")
    assert code == 0, err
    assert "files" not in read_manifest(tmp_path / "s") and not (tmp_path / "s" / "dedupe_groups.csv").exists()


def _kill_when(cmd: list[str], condition: Any, *, timeout: float = 120) -> str:
    """Start ``cmd``; SIGKILL it as soon as ``condition()`` holds. Returns 'killed' or 'finished'."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if condition():
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return "killed"
            time.sleep(0.002)
        assert proc.poll() is not None, "build did not finish in time"
        return "finished"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_kill_anywhere_then_resume_is_identical(fer_csv: Path, full_build: Path, tmp_path: Path) -> None:
    """SIGKILL a subprocess build at a random moment, mid checkpoint save and mid final assembly,
    rerunning it each time: the result equals an uninterrupted build, and no junk is left."""
    from ferdata.dataset import read_manifest

    out, state = tmp_path / "k", tmp_path / ".k.build"
    cmd = [sys.executable, "-m", "ferdata", "build", str(RECIPE), "--source", str(fer_csv), "--out", str(out), "-q"]
    delay, started = random.Random(12).uniform(0.5, 3.0), {}  # the clock starts with the process
    moments = {
        "random": lambda: time.monotonic() >= started.setdefault("t", time.monotonic()) + delay,
        "mid-save": lambda: state.exists() and any(p.name.startswith(".step-") for p in state.iterdir()),
        "final-assembly": lambda: any(p.name.startswith(".k.tmp-") for p in tmp_path.iterdir()),
    }
    strip = lambda m: [{k: v for k, v in e.items() if k != "seconds"} for e in m["steps"]]  # noqa: E731
    outcomes = {}
    for name, condition in moments.items():  # each moment on a build of its own, then its rerun
        outcomes[name] = _kill_when(cmd, condition)
        if not out.exists():  # killed before the output was renamed into place: the rerun resumes and cleans up
            assert subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=120).returncode == 0, name
            assert not state.exists() and not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
        else:  # killed (or finished) after the rename: only the checkpoints may be left behind
            shutil.rmtree(state, ignore_errors=True)
        # an output that exists is complete: the very same as the uninterrupted one
        _assert_same_output(out, full_build)
        assert strip(read_manifest(out)) == strip(read_manifest(full_build)), name
        shutil.rmtree(out)
    assert list(outcomes.values()).count("killed") >= 2, outcomes


# ---------------------------------------------------------------- ledger lineage (issue 22)

@pytest.mark.parametrize("case_id", case_params("ledger_lineage"))
def test_ledger_rows_carry_lineage(runner: Runner, case_id: str) -> None:
    """Every ledger row a step writes names the photo it came from: ``root_id`` (its own id at entry)."""
    run = runner.get(case_id)
    for r in _new_ledger(run, run.outs[0]):
        if r["id"]:  # a source item that could not be decoded has no pixel id: its origin names it
            assert r.get("root_id"), f"ledger row without root_id: {r}"


# ---------------------------------------------------------------- commands that are not one step (issue 22)
# They write dataset directories through the same commit path as the steps (ferdata.commit), so they
# must keep the same invariants: conservation, ledger lineage, input untouched, determinism.

def _upscale_csv(data: dict[str, Path], out: Path) -> tuple[Path, int]:
    """``ferdata upscale`` from a FER2013 CSV: import + upscale in one command."""
    from ferdata.sr.step import upscale_input
    from ferdata.steps import StepContext

    upscale_input(data["@csv"], out=out, params={"size": 96}, ctx=StepContext(seed=3))
    return out, len(data["@csv"].read_text().splitlines()) - 1


def _refine_prune(data: dict[str, Path], out: Path) -> tuple[Path, int]:
    """``ferdata refine --mode prune`` (a tiny model, one round): its output dataset is RUN/dataset."""
    from ferdata.dataset import open_dataset
    from ferdata.refine import RefineConfig, refine

    config = RefineConfig(mode="prune", model="shallow-cnn", epochs=1, rounds=1, cv=2, batch_size=8, seed=3,
                          augment="none", compare=False, top=3, force=True)
    refine(data["@base"], out, config)
    return out / "dataset", sum(len(ds) for ds in open_dataset(data["@base"]).values())


COMMANDS = {"upscale-csv": _upscale_csv, "refine-prune": _refine_prune}


@pytest.fixture(scope="module")
def command_runs(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    root = tmp_path_factory.mktemp("integrity-commands")

    def get(name: str) -> tuple[list[Path], int, str, str]:
        if name not in runs:
            inp = data["@csv"] if name == "upscale-csv" else data["@base"]
            before = digest(inp)
            outs = []
            for k in range(2):
                out, n_in = COMMANDS[name](data, root / f"{name}-{k}")
                outs.append(out)
            runs[name] = (outs, n_in, before, digest(inp))
        return runs[name]

    return get  # type: ignore[return-value]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_invariants(command_runs: Any, data: dict[str, Path], name: str) -> None:
    from ferdata.dataset import read_manifest, read_rejects

    outs, n_in, before, after = command_runs(name)
    assert after == before, f"{name} modified its input"
    out = outs[0]
    base_ledger = [] if name == "upscale-csv" else read_rejects(data["@base"])
    ledger = read_rejects(out)
    assert ledger[: len(base_ledger)] == base_ledger, "the input's ledger must be carried over unchanged"
    new = ledger[len(base_ledger):]
    assert new, f"{name}: the case must remove rows, or its ledger lineage is not tested"
    kept = sum(len(v) for v in _rows(out).values())
    assert kept + len(new) == n_in, f"{name}: {n_in} rows in, {kept} kept + {len(new)} in the ledger"
    for r in new:
        assert r["step"] and r["reason"], r
        if r["id"]:
            assert r.get("root_id"), f"{name}: ledger row without root_id: {r}"
    entries = read_manifest(out)["steps"]
    assert entries[-1]["kept"] == kept and entries[-1]["input_rows"] == entries[-1]["kept"] + entries[-1]["rejected"]
    _assert_same_output(outs[0], outs[1], volatile=("relabel_confidence", "label_confidence", "label_margin",
                                                     "top1_confidence", "top2_confidence"))
