"""ferdata report: the HTML parsed without a browser, and the same page in headless Chromium."""

from __future__ import annotations

import csv
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_fer_csv

HOSTILE = 'http://evil.example/a.png?q="><script>alert(1)</script>'
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-background-networking", "--disable-gpu"]


class PageParser(HTMLParser):
    """Ids, links, image sources, images per section, script count."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.srcs: list[str] = []
        self.hrefs: list[str] = []
        self.scripts = 0
        self.section: str | None = None
        self.images_in: dict[str, int] = {}
        self.lazy = 0
        self.tiles_with_alt = 0
        self.imgs_without_alt = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "section":
            self.section = a.get("id")
        if tag == "img":
            self.srcs.append(a.get("src") or "")
            self.images_in[self.section or ""] = self.images_in.get(self.section or "", 0) + 1
            self.lazy += a.get("loading") == "lazy"
            if a.get("alt"):
                self.tiles_with_alt += 1
            else:
                self.imgs_without_alt += 1
        if tag == "image":  # inside inline SVG
            self.srcs.append(a.get("href") or "")
        if tag in ("a", "link") and "href" in a:
            self.hrefs.append(a["href"] or "")
        if tag == "script":
            self.scripts += 1
            assert "src" not in a, "no external scripts"


def parse(path: Path) -> PageParser:
    p = PageParser()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def _with_extras(src: Path, out: Path) -> Path:
    """A copy of ``src`` with refine's flag columns, a hostile crawled URL and an old-style ledger row."""
    import datasets

    from ferdata.dataset import open_dataset, read_manifest, read_rejects, save_dataset

    dd = open_dataset(src)
    names = dd["train"].features["label"].names
    cl = dd["train"].features["label"]

    def flag(batch: dict, idx: list[int]) -> dict:
        n = len(idx)
        top1 = [(lab + 1) % len(names) if i % 3 == 0 else lab for lab, i in zip(batch["label"], idx, strict=True)]
        return {"suspect_label": [t != lab for t, lab in zip(top1, batch["label"], strict=True)],
                "label_confidence": [0.2] * n, "top1_label": top1,
                "top1_confidence": [0.5 + (i % 5) / 10 for i in idx], "top2_label": list(batch["label"]),
                "top2_confidence": [0.2] * n}

    out_splits = {}
    for split, ds in dd.items():
        ds = ds.map(flag, batched=True, with_indices=True)
        ds = ds.cast_column("top1_label", cl).cast_column("top2_label", cl)
        if split == "train":
            origins = list(ds["origin"])
            origins[0] = HOSTILE
            ds = ds.remove_columns("origin").add_column("origin", origins)
        out_splits[split] = ds
    rejects = read_rejects(src)
    rejects.append({"id": "0" * 64, "origin": HOSTILE, "step": "crawl", "reason": "http_404", "details": "{}"})
    save_dataset(datasets.DatasetDict(out_splits), out, manifest=read_manifest(src), rejects=rejects)
    return out


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Import (with exact duplicates, one across splits) -> dedupe -> quality, plus suspect columns."""
    from ferdata.steps import apply_step

    root = tmp_path_factory.mktemp("report")
    csv_path = write_fer_csv(root / "fer.csv", 6, usages=("Training", "Training", "Training", "Training",
                                                          "PublicTest", "PrivateTest"))
    lines = csv_path.read_text().splitlines()
    dup_lines = [lines[1], lines[2], lines[8].rsplit(",", 1)[0] + ",PrivateTest"]  # 2 in train, 1 train->test
    csv_path.write_text("\n".join(lines + dup_lines) + "\n")
    apply_step("import_fer2013", {"csv": str(csv_path)}, out=root / "a")
    apply_step("dedupe", {}, inputs=[root / "a"], out=root / "b")
    apply_step("quality", {"drop": ["low_information"], "low_information_threshold": 7.9126}, inputs=[root / "b"],
               out=root / "c")
    return _with_extras(root / "c", root / "d")


@pytest.fixture(scope="module")
def report_html(report_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ferdata.report import write_report

    out = tmp_path_factory.mktemp("html") / "report.html"
    write_report(report_dir, out, per_class=2)
    return out


def test_cli_writes_report_with_sections_and_only_inline_resources(report_dir: Path, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "r.html"
    code, stdout, stderr = run_cli("report", report_dir, "--out", out, "--per-class", "2")
    assert code == 0, stderr
    assert "report:" in stdout and "MB" in stdout and str(out) in stdout
    page = parse(out)
    for sid in ("card", "funnel", "distribution", "samples", "duplicates", "rejects", "quality", "suspects"):
        assert sid in page.ids, sid
    assert "sr" not in page.ids and "faces" not in page.ids and "run" not in page.ids  # no such columns/files
    assert page.srcs and all(s.startswith("data:image/") for s in page.srcs)
    assert all(h.startswith("#") and h[1:] in page.ids for h in page.hrefs), [h for h in page.hrefs if h[1:] not in page.ids]
    assert page.scripts == 1
    assert page.imgs_without_alt == 0


def test_sample_grid_image_count_is_per_class_times_classes_and_splits(report_dir: Path, report_html: Path) -> None:
    from ferdata.dataset import class_counts, open_dataset

    dd = open_dataset(report_dir)
    expected = sum(min(2, n) for ds in dd.values() for n in class_counts(ds).values())
    assert parse(report_html).images_in["samples"] == expected


def test_hostile_origin_is_escaped(report_html: Path) -> None:
    text = report_html.read_text(encoding="utf-8")
    assert "<script>alert(1)" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_duplicates_cross_split_first_and_survivor_marked(report_html: Path) -> None:
    text = report_html.read_text(encoding="utf-8")
    section = text[text.index('<section id="duplicates"'):text.index("</section>", text.index('<section id="duplicates"'))]
    groups = section.split('<div class="group')[1:]
    assert len(groups) == 3
    # the train copy of a test row: spanned splits when deduped (no split step after: the names hold), first
    assert "CROSS-SPLIT</strong> when deduped: train copy of a test survivor removed" in groups[0]
    assert not any("CROSS-SPLIT" in g for g in groups[1:]) and "LEAKAGE" not in section
    assert section.count(">SURVIVOR (kept)<") == 3 and section.count("figure class=\"tile survivor\"") == 3
    assert section.count(">removed (exact)<") == 3 and "1 members" not in section


def test_rejects_and_quality_sections(report_dir: Path, report_html: Path) -> None:
    from ferdata.dataset import read_rejects

    ledger = read_rejects(report_dir)
    text = report_html.read_text(encoding="utf-8")
    assert f"{len(ledger)} rows in rejects.parquet" in text
    assert 'id="rejects-quality-low_information"' in text and 'id="rejects-crawl-http_404"' in text
    assert "no image kept" in text  # the hand-made http_404 row has no thumbnail
    assert all(r.get("thumbnail") for r in ledger if r["step"] in ("dedupe", "quality"))
    assert 'id="quality-low_information"' in text and "threshold 7.91" in text


def test_suspect_matrix_links_to_galleries(report_html: Path) -> None:
    page = parse(report_html)
    cells = [h for h in page.hrefs if h.startswith("#suspects-")]
    assert cells and all(h[1:] in page.ids for h in cells)


def test_refine_columns_without_suspects_say_so(report_dir: Path, tmp_path: Path) -> None:
    import datasets

    from ferdata.dataset import open_dataset, read_manifest, save_dataset
    from ferdata.report import write_report

    dd = open_dataset(report_dir)
    clean = datasets.DatasetDict({k: ds.map(lambda b: {"suspect_label": [False] * len(b["id"])}, batched=True)
                                  for k, ds in dd.items()})
    save_dataset(clean, tmp_path / "clean", manifest=read_manifest(report_dir))
    result = write_report(tmp_path / "clean", per_class=0)
    text = result.path.read_text(encoding="utf-8")
    assert "suspects" in result.sections and "0 rows whose label" in text and 'class="cm"' not in text


def test_similar_groups_section(report_dir: Path, tmp_path: Path) -> None:
    import datasets

    from ferdata.dataset import open_dataset, read_manifest, save_dataset
    from ferdata.report import write_report

    dd = open_dataset(report_dir)
    marked = datasets.DatasetDict({k: ds.map(lambda b, idx, k=k: {"similar_group": [
        ("g-cross" if i == 0 else "g-train" if k == "train" and i in (1, 2, 3) else None) for i in idx]},
        batched=True, with_indices=True) for k, ds in dd.items()})
    save_dataset(marked, tmp_path / "sim", manifest=read_manifest(report_dir))
    text = write_report(tmp_path / "sim", per_class=0).path.read_text(encoding="utf-8")
    section = text[text.index('<section id="similar"'):text.index("</section>", text.index('<section id="similar"'))]
    assert "2 groups of kept rows" in section and section.count('class="group') == 2
    assert section.index("CROSS-SPLIT") < section.index("g-train")  # the group spanning splits comes first


def test_same_inputs_same_bytes_and_the_seed_changes_the_sample(report_dir: Path, tmp_path: Path) -> None:
    from ferdata.report import write_report

    a = write_report(report_dir, tmp_path / "a.html", per_class=2).path.read_bytes()
    b = write_report(report_dir, tmp_path / "b.html", per_class=2).path.read_bytes()
    c = write_report(report_dir, tmp_path / "c.html", per_class=2, seed=1).path.read_bytes()
    assert a == b and a != c


def test_assets_mode_writes_lazy_files(report_dir: Path, tmp_path: Path) -> None:
    from ferdata.report import write_report

    result = write_report(report_dir, tmp_path / "big.html", per_class=1, assets=True)
    page = parse(result.path)
    files = sorted((tmp_path / "big_files").iterdir())
    assert files and len(files) == result.images
    assert all(s.startswith("big_files/") for s in page.srcs)
    assert page.lazy == len([s for s in page.srcs if s]) and page.lazy > 0


def test_size_budget_warns(report_dir: Path, tmp_path: Path, run_cli) -> None:
    from ferdata.report import write_report

    result = write_report(report_dir, tmp_path / "r.html", per_class=2, budget_mb=0.001)
    assert any("over the 0.001 MB budget" in w for w in result.warnings)
    assert result.bytes == (tmp_path / "r.html").stat().st_size < 2_000_000
    code, _, stderr = run_cli("report", report_dir, "--out", tmp_path / "s.html", "--budget-mb", "0.001")
    assert code == 0 and "warning: report is" in stderr


def test_old_ledger_without_thumbnail_column_still_reports(report_dir: Path, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ferdata.dataset import read_rejects
    from ferdata.report import write_report

    old = tmp_path / "old"
    shutil.copytree(report_dir, old)
    table = pq.read_table(old / "rejects.parquet").drop(["thumbnail"])
    pq.write_table(table, old / "rejects.parquet")
    assert "thumbnail" not in pq.read_schema(old / "rejects.parquet").names
    rows = read_rejects(old)
    assert rows and "thumbnail" not in rows[0]
    text = write_report(old, per_class=1).path.read_text(encoding="utf-8")
    assert "no image kept" in text and 'id="rejects"' in text
    assert isinstance(pa.table({"x": [1]}), pa.Table)


def test_bad_usage_is_one_line_exit_2(tmp_path: Path, report_dir: Path, run_cli) -> None:
    (tmp_path / "empty").mkdir()
    code, _, stderr = run_cli("report", tmp_path / "empty")
    assert code == 2 and "neither a dataset directory" in stderr and "Traceback" not in stderr
    code, _, stderr = run_cli("report", report_dir, "--per-class", "-1")
    assert code == 2 and "--per-class" in stderr
    code, _, stderr = run_cli("report", report_dir, "--out", tmp_path / "x.txt")
    assert code == 2 and "must be an .html file" in stderr


def test_run_directory_report(tmp_path: Path) -> None:
    from ferdata.report import write_report
    from ferdata.train.metrics import write_confusion_csv

    run = tmp_path / "run"
    run.mkdir()
    names = ["angry", "happy", "sad"]
    write_confusion_csv([[5, 1, 0], [0, 7, 1], [2, 0, 4]], names, run / "confusion.csv")
    with (run / "history.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "accuracy", "loss", "val_accuracy", "val_loss"])
        for e in range(4):
            w.writerow([e, 0.4 + 0.1 * e, 1.5 - 0.2 * e, 0.35 + 0.08 * e, 1.6 - 0.15 * e])
    (run / "metrics.json").write_text(json.dumps({"accuracy": 0.8, "macro_f1": 0.77, "per_class": {
        n: {"precision": 0.8, "recall": 0.7, "f1": 0.75, "support": 6} for n in names}}))
    (run / "run.json").write_text(json.dumps({"model": "tiny-cnn", "input_shape": [48, 48, 1]}))
    with (run / "rounds.csv").open("w", newline="") as f:
        f.write("round,total,val_accuracy,kept,stop\n1,30,0.61,20,\n2,20,0.9,19,precision\n")
    result = write_report(run)
    page = parse(result.path)
    assert result.sections == ["run"]
    assert {"run", "per-class", "confusion", "rounds"} <= page.ids
    text = result.path.read_text(encoding="utf-8")
    assert text.count("<svg") == 2 and "val_accuracy" in text  # accuracy and loss curves, train vs val


def test_recipe_report_option(tmp_path: Path) -> None:
    from ferdata.errors import RecipeError
    from ferdata.pipeline import build, load_recipe

    src = write_fer_csv(tmp_path / "fer.csv", 3)
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text("name: r\nvariables:\n  source: null\nsteps:\n  - step: import_fer2013\n"
                           "    csv: \"{source}\"\n  - step: dedupe\nreport: true\n")
    build(load_recipe(recipe_file, {"source": str(src)}), tmp_path / "out")
    page = parse(tmp_path / "out" / "report.html")
    assert {"card", "funnel", "samples"} <= page.ids
    recipe_file.write_text(recipe_file.read_text().replace("report: true", "report: 3"))
    with pytest.raises(RecipeError, match="report must be true or false"):
        load_recipe(recipe_file, {"source": str(src)})


def test_face_crop_and_super_resolution_sections(tmp_path: Path) -> None:
    """Columns as crop and upscale write them: boxes over the source photo, 48 px input beside the output."""
    import datasets
    from PIL import Image

    from ferdata.dataset import open_dataset, read_manifest, save_dataset
    from ferdata.images import pixel_id
    from ferdata.report import write_report
    from ferdata.steps import apply_step
    from tests.conftest import write_class_folders

    src = write_class_folders(tmp_path / "photos", 2, size=120, mode="RGB", classes=["happy", "sad"])
    apply_step("import_folder", {"src": str(src)}, out=tmp_path / "imp")
    dd, manifest = open_dataset(tmp_path / "imp"), read_manifest(tmp_path / "imp")

    def crop(batch: dict) -> dict:
        n = len(batch["id"])
        return {"face_box": [[30, 20, 60, 70]] * n, "face_confidence": [0.99] * n,
                "face_keypoints": [{"left_eye": [45, 45], "right_eye": [75, 45], "nose": [60, 60],
                                    "mouth_left": [48, 75], "mouth_right": [72, 75]}] * n}

    faces = datasets.DatasetDict({k: ds.map(crop, batched=True) for k, ds in dd.items()})
    save_dataset(faces, tmp_path / "faces", manifest=manifest)
    page = parse(write_report(tmp_path / "faces", per_class=1).path)
    assert "faces" in page.ids
    text = (tmp_path / "faces" / "report.html").read_text(encoding="utf-8")
    assert text.count("<svg role=\"img\"") == 4 and text.count("<circle") == 20  # 4 photos, 5 landmarks each

    def upscale(batch: dict) -> dict:
        images = [im.convert("L").resize((48, 48)).resize((192, 192), Image.Resampling.BICUBIC) for im in batch["image"]]
        return {"image": images, "parent_id": list(batch["id"]),
                "id": [pixel_id(__import__("numpy").asarray(im)) for im in images]}

    small = datasets.DatasetDict({k: ds.map(lambda b: {"image": [im.convert("L").resize((48, 48)) for im in b["image"]]},
                                            batched=True) for k, ds in dd.items()})
    small = datasets.DatasetDict({k: ds.map(lambda b: {"id": [pixel_id(__import__("numpy").asarray(im))
                                                              for im in b["image"]]}, batched=True)
                                  for k, ds in small.items()})
    save_dataset(small, tmp_path / "small", manifest=manifest)
    big = datasets.DatasetDict({k: ds.map(upscale, batched=True) for k, ds in open_dataset(tmp_path / "small").items()})
    up_manifest = dict(manifest, steps=[*manifest["steps"], {"step": "upscale", "params": {"size": 192, "scale": 4},
                                                             "input_rows": 4, "kept": 4, "rejected": 0}])
    save_dataset(big, tmp_path / "up", manifest=up_manifest)
    result = write_report(tmp_path / "up", tmp_path / "up.html", before=tmp_path / "small", per_class=0)
    assert "sr" in result.sections and "samples" not in result.sections
    text = result.path.read_text(encoding="utf-8")
    assert text.count('<figure class="pair">') == 4 and text.count('class="px"') == 4
    assert "the dataset before the upscale step" in text
    alone = write_report(tmp_path / "up", tmp_path / "alone.html", per_class=0)  # no inputs: said, not faked
    assert "--before DIR" in alone.path.read_text(encoding="utf-8")


# ---------------------------------------------------------------- duplicates at the end of a chain

def _dedupe_chain(root: Path, *, evidence: bool) -> tuple[Path, dict[str, str]]:
    """import -> dedupe -> clahe (new pixels, new ids) -> split (validation carved from train) ->
    review_exclusions (removes two survivors). Four groups, named by what the test expects of them:
    ``kept-conflict`` (exact copy, other label; survivor kept), ``gone`` (near copy; survivor removed
    later), ``gone-conflict`` (exact copy, other label; survivor removed later) and ``cross`` (a test
    row's train copy). ``evidence``: the dedupe ledger rows hold the survivor's picture at dedupe time
    (:func:`ferdata.dedupe.report.add_survivor_evidence` on the step's output); without it they hold
    none, as a ledger written before the step stored them (whatever the step does today).

    Returns:
        The final directory, and the group id of each name.
    """
    import numpy as np

    from ferdata.commit import Chain, commit
    from ferdata.dataset import open_dataset, read_rejects
    from ferdata.dedupe.report import add_survivor_evidence
    from ferdata.steps import StepContext, apply_step, get_step, run_step

    csv_path = write_fer_csv(root / "fer.csv", 4)  # 28 train rows: lines 2..29, 4 per class in class order
    lines = csv_path.read_text().splitlines()

    def pixels(line: str) -> list[int]:
        return [int(v) for v in line.split(",")[1].split()]

    near = np.array(pixels(lines[5]))
    near[:40] = np.clip(near[:40] + 3, 0, 255)  # class 1, a few pixels off: the same photograph
    extra = {30: f"3,{lines[1].split(',')[1]},Training",            # class 0's first row labelled happy
             31: f"1,{' '.join(map(str, near))},Training",
             32: f"4,{lines[9].split(',')[1]},Training",            # class 2's first row labelled sad
             33: f"5,{lines[21].split(',')[1]},PrivateTest"}        # class 5's first row, in test
    csv_path.write_text("\n".join(lines + list(extra.values())) + "\n")
    apply_step("import_fer2013", {"csv": str(csv_path)}, out=root / "a")
    step, data = get_step("dedupe"), open_dataset(root / "a")
    out, entry = run_step(step, data, step.make_config({}), StepContext())
    if evidence:
        assert add_survivor_evidence(out.rejects, data) == 4
        assert add_survivor_evidence(out.rejects, data) == 4  # a second run changes nothing
    else:  # a ledger written before the step stored its survivors' pictures
        for r in out.rejects:
            d = json.loads(r["details"])
            r["details"] = json.dumps({k: v for k, v in d.items() if k not in ("survivor_thumbnail", "survivor_root_id")})
    chain = Chain.of(root / "a")
    chain.add(out, entry)
    commit(out.data, root / "b", chain)
    by_line = {}
    for r in read_rejects(root / "b"):
        if r["step"] == "dedupe":
            by_line[int(r["origin"].rsplit("#L", 1)[1])] = json.loads(r["details"])
    names = {"kept-conflict": by_line[30], "gone": by_line[31], "gone-conflict": by_line[32], "cross": by_line[22]}
    apply_step("clahe", {}, inputs=[root / "b"], out=root / "c")
    apply_step("split", {"ratios": "0.5,0.5", "names": ["train", "validation"]}, inputs=[root / "c"], out=root / "d")
    gone = {names["gone"]["duplicate_of"], names["gone-conflict"]["duplicate_of"]}
    review = root / "review.csv"
    with review.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label", "origin", "decision"])
        for ds in open_dataset(root / "d").values():
            for row in ds.select_columns(["id", "root_id"]):
                if row["root_id"] in gone:
                    w.writerow([row["id"], "", "", "reject"])
    apply_step("review_exclusions", {"review_csv": str(review)}, inputs=[root / "d"], out=root / "e")
    return root / "e", {name: d["group"] for name, d in names.items()}


def _duplicates_section(path: Path) -> dict:
    from ferdata.dataset import open_dataset, read_manifest, read_rejects
    from ferdata.report import collect
    from ferdata.report.images import ImageStore

    ctx = collect.Context(open_dataset(path), read_manifest(path), read_rejects(path), ImageStore())
    return collect.duplicates(ctx)


@pytest.mark.parametrize("evidence", [False, True], ids=["ledger-without-survivor-pictures", "with-survivor-pictures"])
def test_duplicates_are_computed_at_the_end_of_the_chain(tmp_path: Path, evidence: bool) -> None:
    """Fast, no browser: splits, leakage, conflicts and survivors from the final dataset plus its ledger."""
    final, names = _dedupe_chain(tmp_path, evidence=evidence)
    section = _duplicates_section(final)
    groups = {g["group"]: g for g in section["groups"]}
    assert set(groups) == set(names.values()) and section["total"] == 4
    by = {name: groups[g] for name, g in names.items()}
    # survivors: kept (in its final split) or the later step that removed it, named
    assert by["kept-conflict"]["state"] == by["cross"]["state"] == "kept"
    assert by["cross"]["now_split"] == "test" and by["kept-conflict"]["now_split"] in ("train", "validation")
    for name in ("gone", "gone-conflict"):
        assert by[name]["state"] == "removed later" and by[name]["fate"] == "review_exclusions (review)", by[name]
    assert section["survivors_gone"] == 2 and section["survivors_missing"] == 0
    # splits: the train copy of a test survivor spanned splits; the others never did, wherever split put them
    assert by["cross"]["cross_split"] and by["cross"]["away_splits"] == ["train"] and by["cross"]["cross_ref"] == "test"
    assert not any(by[n]["cross_split"] for n in ("kept-conflict", "gone", "gone-conflict"))
    assert section["leaks"] == 0 and section["cross_split"] == 1
    # conflicts counted whatever happened to the survivor
    assert by["kept-conflict"]["labels"] == ["angry", "happy"] and by["gone-conflict"]["labels"] == ["fear", "sad"]
    assert not by["gone"]["conflict"] and section["conflicts"] == 2
    for g in section["groups"]:
        survivor, *members = g["tiles"]
        assert "survivor" in survivor["cls"] and survivor["src"], g
        assert g["size"] == 2 and [m["cls"] for m in members] == ["removed"]
        assert members[0]["src"] and members[0]["lines"][0].startswith("train · ") and members[0]["review"] is False
        assert survivor["lines"][0].startswith("SURVIVOR") and survivor["lines"][1].startswith(("train · ", "test · "))
    # both sides at the same stage: an exact pair's two pictures are the same picture
    exact = [by["kept-conflict"], by["gone-conflict"], by["cross"]]
    if evidence:
        assert section["now_only"] == 0
        assert all(g["tiles"][0]["src"] == g["tiles"][1]["src"] for g in exact)
        assert not any(line.startswith("picture:") for g in section["groups"] for line in g["tiles"][0]["lines"])
    else:  # the survivor is shown as it is now (after clahe), and its caption says so
        assert section["now_only"] == 4
        assert not any(g["tiles"][0]["src"] == g["tiles"][1]["src"] for g in exact)
        assert "picture: now" in by["kept-conflict"]["tiles"][0]["lines"]
        assert "picture: at review_exclusions" in by["gone"]["tiles"][0]["lines"]


def test_groups_report_pictures_go_to_a_parquet_beside_the_csv(fer_dir: Path, tmp_path: Path) -> None:
    import datasets

    from ferdata.dataset import open_dataset
    from ferdata.dedupe import DedupeConfig, dedupe_dataset
    from ferdata.dedupe.report import add_report_pictures, read_groups_report, write_groups_report

    dd = open_dataset(fer_dir)
    train = dd["train"]
    dd = datasets.DatasetDict({"train": datasets.concatenate_datasets([train, train.select([0, 1])])})
    rows = dedupe_dataset(dd, DedupeConfig(report_only=True)).groups
    add_report_pictures(rows, dd)
    write_groups_report(rows, tmp_path / "g.csv")
    text = (tmp_path / "g.csv").read_text(encoding="utf-8")
    assert text.isprintable() or all(line.isprintable() for line in text.splitlines())  # no bytes in the CSV
    assert text.splitlines()[0].endswith(",survivor_split,root_id") and "thumbnail" not in text.splitlines()[0]
    table = read_groups_report(tmp_path / "g.parquet")
    assert len(table) == len(rows) == 4 and all(r["thumbnail"][:2] == b"\xff\xd8" for r in table)  # JPEGs
    for group in {r["group"] for r in table}:  # exact copies: the same picture on both sides
        assert len({r["thumbnail"] for r in table if r["group"] == group}) == 1
    assert {r["root_id"] for r in table} == {r["id"] for r in table}  # imported rows are their own roots
    write_groups_report(rows, tmp_path / "g.json")
    assert "thumbnail" not in json.loads((tmp_path / "g.json").read_text())[0]


def test_packaged_recipes_write_a_report() -> None:
    from ferdata.pipeline import load_recipe, recipe_names

    for name in recipe_names():
        assert load_recipe(name, {"source": "x.csv"} if name == "fer2013-improved" else {}).report, name


# ---------------------------------------------------------------- a real headless browser

def _browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium fonts-liberation)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[report]')")
    return chromium, sync_playwright


@pytest.fixture(scope="module")
def chromium_browser():
    """One headless chromium for the module (playwright's sync API allows one running instance)."""
    chromium, sync_playwright = _browser()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def browser_page(report_html: Path, chromium_browser):
    context = chromium_browser.new_context(viewport={"width": 1200, "height": 800}, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    requests: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("request", lambda r: requests.append(r.url))
    page.goto(report_html.as_uri())
    page.wait_for_load_state("load")
    yield page, errors, requests
    context.close()


@pytest.mark.browser
def test_browser_loads_offline_with_every_image_decoded(browser_page, tmp_path: Path) -> None:
    page, errors, requests = browser_page
    assert errors == []
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    n = page.evaluate("document.images.length")
    broken = page.evaluate("Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length")
    assert n > 20 and broken == 0
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


@pytest.mark.browser
def test_browser_confusion_link_scrolls_to_gallery(browser_page) -> None:
    page, _, _ = browser_page
    link = page.locator("a.cm").first
    target = link.get_attribute("href")
    assert page.evaluate(f"document.getElementById('{target[1:]}').getBoundingClientRect().top") > 800
    link.click()
    page.wait_for_function(f"location.hash === '{target}'")
    top = page.evaluate(f"document.getElementById('{target[1:]}').getBoundingClientRect().top")
    assert 0 <= top < 200


@pytest.mark.browser
def test_browser_review_clicks_save_a_review_csv_that_apply_review_reads(browser_page, report_dir: Path,
                                                                        tmp_path: Path) -> None:
    from ferdata.dataset import open_dataset, read_rejects
    from ferdata.review import read_review_csv
    from ferdata.steps import apply_step

    page, errors, _ = browser_page
    tiles = page.locator("#samples figure[data-id]")
    ids = [tiles.nth(i).get_attribute("data-id") for i in (0, 3)]
    tiles.nth(0).click()
    tiles.nth(3).click()
    assert "REJECT" in tiles.nth(0).inner_text()
    keep = page.locator("#suspects figure[data-id] button.keep").first
    kept_id = keep.locator("xpath=ancestor::figure[1]").get_attribute("data-id")
    keep.click()
    with page.expect_download() as info:
        page.click("#review-save")
    saved = tmp_path / "review.csv"
    info.value.save_as(str(saved))
    decisions = read_review_csv(saved)
    assert {i for i, d in decisions.items() if d == "reject"} == set(ids) - {kept_id}
    assert decisions[kept_id] == "keep" or kept_id in ids
    assert errors == []
    apply_step("review_exclusions", {"review_csv": str(saved)}, inputs=[report_dir], out=tmp_path / "reviewed")
    gone = {r["id"] for r in read_rejects(tmp_path / "reviewed") if r["step"] == "review_exclusions"}
    assert gone == set(ids) - {kept_id}
    left = {x for ds in open_dataset(tmp_path / "reviewed").values() for x in ds["id"]}
    assert not gone & left


@pytest.fixture(scope="module")
def btfer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The btfer recipe as ``ferdata demo`` runs it (crawl -> dedupe -> crop -> quality -> review_exclusions
    -> split -> balance, against the demo's loopback engine, 3 classes), with the same photographs served
    again re-encoded: one under its own class's query, one under another class's (a label conflict).
    The review rejects the first group's survivor (by its crawl id), so a later step removes it."""
    _browser()  # skip before the build when no browser can look at it
    import dataclasses

    from ferdata.demo.search_server import btfer_demo_engine, face_photos, jpeg, scene
    from ferdata.images import decode_image, pixel_id
    from ferdata.pipeline import build, load_recipe
    from ferdata.steps import StepContext

    root = tmp_path_factory.mktemp("btfer")
    classes, n = ["angry", "happy", "sad"], 4
    with btfer_demo_engine(root / "engine", per_class_photos=n, classes=classes) as (server, queries):
        faces = face_photos(len(classes) * n)
        happy0, happy1 = jpeg(scene(faces[n], seed=100)), jpeg(scene(faces[n + 1], seed=101))  # as the engine serves them
        server.add_image("happy0-again", jpeg(decode_image(happy0)[0], quality=60))
        server.add_image("happy1-as-sad", jpeg(decode_image(happy1)[0], quality=70))
        for name, extra in (("happy", "happy0-again"), ("sad", "happy1-as-sad")):
            server.set_results(f"{name} face", [f"{server.base_url}/img/{x}.jpg" for x in
                                                [f"{name}{i}" for i in range(n)] + [extra]])
        review = root / "review.csv"
        review.write_text(f"id,label,origin,decision\n{pixel_id(decode_image(happy0)[0])},happy,,reject\n")
        recipe = load_recipe("btfer", {"per_class": 2, "engine": "loopback", "base_url": server.base_url,
                                       "queries": str(queries), "review": str(review)})
        step, config = recipe.steps[0]
        recipe.steps[0] = (step, dataclasses.replace(config, cache=str(root / "fetch-cache")))
        build(recipe, root / "out", ctx=StepContext(seed=0))
    return root / "out"


@pytest.mark.browser
@pytest.mark.slow
def test_browser_duplicates_are_true_after_crop_and_split(btfer_dir: Path, chromium_browser, tmp_path: Path) -> None:
    """Each group on the page against the final dataset and the ledger: a split claim only where the
    splits say so, and every group shows its survivor or the later step that removed it."""
    from ferdata.dataset import open_dataset, read_manifest, read_rejects

    steps = [s["step"] for s in read_manifest(btfer_dir)["steps"]]
    assert steps.index("dedupe") < steps.index("crop") < steps.index("split")
    ledger = read_rejects(btfer_dir, thumbnails=False)
    dedupe = [(k, json.loads(r["details"])) for k, r in enumerate(ledger) if r["step"] == "dedupe"]
    assert len(dedupe) == 2 and any(d["label"] != d["survivor_label"] for _, d in dedupe)
    final: dict[str, list[str]] = {}  # group -> final splits of its rows still in the dataset
    for split, ds in open_dataset(btfer_dir).items():
        for row in ds.select_columns(["group", "group_size"]):
            if row["group_size"] > 1:
                final.setdefault(row["group"], []).append(split)
    expected = {}
    for k, d in dedupe:
        splits = final.get(d["group"], [])
        later = [r for r in ledger[k + 1:] if d["duplicate_of"] in (r["id"], r["root_id"], r["parent_id"])]
        fate = "" if splits else f"by {later[0]['step']} ({later[0]['reason']})" if later else "not found"
        spans = len(set(splits)) > 1 or (len(splits) == 1 and d["split"] != splits[0] == d["survivor_split"])
        expected[d["group"]] = (fate, spans)

    page = chromium_browser.new_page(viewport={"width": 1200, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((btfer_dir / "report.html").as_uri())
    page.wait_for_load_state("load")
    groups = page.locator("#duplicates .group")
    seen = {}
    for i in range(groups.count()):
        g = groups.nth(i)
        heading = g.locator("h3").inner_text()
        first = g.locator("figure").first
        seen[g.get_attribute("data-group")] = heading
        fate, spans = expected[g.get_attribute("data-group")]
        assert ("CROSS-SPLIT" in heading or "LEAKAGE" in heading) == spans, heading
        assert "survivor" in (first.get_attribute("class") or "").split(), heading
        assert not re.search(r"\b1 members\b", heading)
        if fate:  # the survivor is gone: the page names the step that removed it, the tile says so
            assert fate in heading and "SURVIVOR, removed" in first.inner_text(), heading
        else:
            assert "SURVIVOR (kept)" in first.inner_text(), heading
        assert first.evaluate("f => { const i = f.querySelector('img'); return !!i && i.complete && i.naturalWidth > 0 }")
    assert set(seen) == set(expected)
    assert not any(spans for _, spans in expected.values())  # split ran after dedupe: no claim at all
    assert any(fate.startswith("by review_exclusions") for fate, _ in expected.values())  # a survivor gone
    section = page.locator("#duplicates")
    section.screenshot(path=str(tmp_path / "duplicates.png"))
    assert (tmp_path / "duplicates.png").stat().st_size > 5_000 and errors == []
    assert "1 members" not in section.inner_text()
    page.close()


def test_sr_pairs_read_the_source_csv_compressed_or_plain(tmp_path: Path) -> None:
    """The super-resolution section finds its 48 px inputs in a .csv.gz as in the plain CSV (same line numbers)."""
    import gzip

    from ferdata.report.collect import _fer_csv_pixels

    rng = np.random.default_rng(3)
    faces = [rng.integers(0, 256, (48, 48), dtype=np.uint8) for _ in range(3)]
    text = "emotion,pixels,Usage\n" + "".join(f"3,{' '.join(map(str, f.ravel()))},Training\n" for f in faces)
    plain = tmp_path / "fer.csv"
    plain.write_text(text)
    packed = tmp_path / "fer.csv.gz"
    packed.write_bytes(gzip.compress(text.encode()))
    for path in (plain, packed):
        got = _fer_csv_pixels(path, {2, 4})
        assert sorted(got) == [2, 4]
        assert np.array_equal(np.asarray(got[2]), faces[0]) and np.array_equal(np.asarray(got[4]), faces[2])
