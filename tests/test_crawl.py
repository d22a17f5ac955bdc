"""The crawler against a loopback search server, query manifests, and the review tool."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from ferdata.dataset import open_dataset, read_manifest, read_rejects
from ferdata.errors import ManifestError
from ferdata.sources.queries import QueryGrid
from tests.crawl_server import LoopbackSearchServer, face_photos, jpeg, no_face_photo, three_faces_photo

MANIFEST = """\
template: "{gender} {expression} face"
demographics:
  gender: [man, woman]
classes:
  happy: [happy]
  sad: [sad]
"""
FAST = ("--timeout", "0.5")


@pytest.fixture(scope="module")
def server():
    with LoopbackSearchServer(slow_seconds=2.0) as srv:
        faces = [jpeg(p) for p in face_photos(6)]
        for i, data in enumerate(faces):
            srv.add_image(f"face{i}", data)
        srv.add_image("dup-a", faces[5])
        srv.add_image("dup-b", faces[5])
        srv.add_image("noface", jpeg(no_face_photo()))
        srv.add_image("three", jpeg(three_faces_photo()))
        hostile = srv.add_hostile_set()
        srv.hostile = hostile
        srv.set_results("man happy face", ["face0", "404", "500", "slow", "loop-a", "huge", "html", "trunc", "bomb"])
        srv.set_results("woman happy face", ["face1", "dup-a", "dup-b", "noface", "three", "stream", "face2"])
        srv.set_results("man sad face", ["face3", "face4", "http://example.com/elsewhere.jpg"])
        srv.set_results("woman sad face", ["face0", "face4"])
        yield srv


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "queries.yaml"
    path.write_text(MANIFEST)
    return path


def crawl(run_cli, server, manifest: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli("crawl", "--queries", manifest, "--engine", "loopback", "--base-url", server.base_url,
                   "--out", out, "--cache", out.parent / "cache", "-q", *FAST, *extra)


def test_hostile_web_ends_in_dataset_or_ledger(tmp_path: Path, run_cli, server, manifest: Path) -> None:
    code, out, err = crawl(run_cli, server, manifest, tmp_path / "c", "--per-class", "50")
    assert code == 0, err
    assert out.startswith("crawl: kept 8, rejected 11")
    dd = open_dataset(tmp_path / "c")
    ds = dd["train"]
    names = ds.features["label"].names
    kept = {Path(u).stem: names[lab] for u, lab in zip(ds["url"], ds["label"], strict=True)}
    assert kept == {"face0": "happy", "face1": "happy", "dup-a": "happy", "noface": "happy", "three": "happy",
                    "face2": "happy", "face3": "sad", "face4": "sad"}
    assert len(ds) == 8  # face0 listed again for sad and face4 twice: same URL, fetched once
    reasons = {Path(r["origin"]).stem: r["reason"] for r in read_rejects(tmp_path / "c")}
    expected = dict(server.hostile) | {"dup-b": "duplicate", "elsewhere": "bad_url"}
    assert reasons == expected
    row = ds[0]
    assert row["source"] == "crawl:loopback" and row["origin"] == row["url"] and row["engine"] == "loopback"
    assert row["query"] == "man happy face" and row["rank"] == 1 and row["fetched_at"].endswith("+00:00")
    assert len(set(ds["id"])) == len(ds)
    # bounded retries: the 500 was asked 1 + 2 times, never more; the non-loopback URL never at all
    assert server.hits["/img/500.jpg"] == 3
    rejects = read_rejects(tmp_path / "c")
    detail = json.loads(next(r for r in rejects if r["reason"] == "duplicate")["details"])
    assert detail["url"].endswith("dup-b.jpg") and "dup-a.jpg" in detail["message"]
    info = read_manifest(tmp_path / "c")["steps"][0]["info"]
    assert info["per_class"]["happy"]["kept"] == 6 and info["per_class"]["sad"]["short_by"] == 48
    assert info["stats"]["repeated_urls"] == 2


def test_per_class_stops_and_rerun_uses_cache(tmp_path: Path, run_cli, server, manifest: Path) -> None:
    before = Counter(server.hits)
    code, out, err = crawl(run_cli, server, manifest, tmp_path / "a", "--per-class", "2")
    assert code == 0, err
    ds = open_dataset(tmp_path / "a")["train"]
    assert Counter(ds["label"]) == {ds.features["label"].names.index("happy"): 2,
                                    ds.features["label"].names.index("sad"): 2}
    fetched = {p for p, n in (server.hits - before).items() if p.startswith("/img/")}
    # round-robin over the two queries of a class: rank 1 of each, nothing more
    assert fetched == {"/img/face0.jpg", "/img/face1.jpg", "/img/face3.jpg", "/img/face4.jpg"}
    before = Counter(server.hits)
    code, _, err = crawl(run_cli, server, manifest, tmp_path / "b", "--per-class", "2")
    assert code == 0, err
    assert not server.hits - before, "a re-run with the same cache must not touch the network"
    again = open_dataset(tmp_path / "b")["train"]
    assert again["id"] == ds["id"] and again["fetched_at"] == ds["fetched_at"]


def test_rerun_retries_only_transient_failures(tmp_path: Path, run_cli, server, manifest: Path) -> None:
    opts = ("--per-class", "50", "--limit", "6", "--retries", "0")
    code, _, err = crawl(run_cli, server, manifest, tmp_path / "a", *opts)
    assert code == 0, err
    before = Counter(server.hits)
    code, _, err = crawl(run_cli, server, manifest, tmp_path / "b", *opts)
    assert code == 0, err
    new = {p for p in (server.hits - before) if p.startswith("/img/")}
    assert new == {"/img/500.jpg"}  # 404, faces and duplicates come from the cache
    assert len(read_rejects(tmp_path / "b")) + len(open_dataset(tmp_path / "b")["train"]) == 6
    manifest = read_manifest(tmp_path / "b")  # --limit is a trial, and says so
    assert manifest["trial"] is True and manifest["steps"][0]["limit"] == 6


def test_urls_engine(tmp_path: Path, run_cli, server) -> None:
    manifest = tmp_path / "urls.yaml"
    manifest.write_text(f"urls:\n  fear: [{server.url('face0')}, {server.url('html')}]\n"
                        f"  contempt: [{server.url('face1')}]\n")
    code, out, err = run_cli("crawl", "--queries", manifest, "--engine", "urls", "--out", tmp_path / "u", "-q",
                             "--cache", tmp_path / "cache")
    assert code == 0, err
    ds = open_dataset(tmp_path / "u")["train"]
    names = ds.features["label"].names
    assert "contempt" in names and sorted(names[x] for x in ds["label"]) == ["contempt", "fear"]
    assert ds["source"] == ["crawl:urls", "crawl:urls"] and ds["rank"] == [1, 1]
    assert [r["reason"] for r in read_rejects(tmp_path / "u")] == ["not_an_image"]


def test_crawl_usage_errors(tmp_path: Path, run_cli, server, manifest: Path, monkeypatch) -> None:
    monkeypatch.delenv("FERDATA_CRAWL_BASE_URL", raising=False)
    code, _, err = run_cli("crawl", "--queries", manifest, "--engine", "loopback", "--out", tmp_path / "x")
    assert code == 2 and "loopback base URL" in err and err.count("\n") == 1
    code, _, err = run_cli("crawl", "--queries", manifest, "--engine", "loopback", "--base-url",
                           "http://10.1.2.3:80", "--out", tmp_path / "x")
    assert code == 2 and "10.1.2.3" in err
    code, _, err = run_cli("crawl", "--queries", manifest, "--engine", "altavista", "--out", tmp_path / "x")
    assert code == 2 and "altavista" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes:\n  joyful: [happy]\n")
    code, _, err = crawl(run_cli, server, bad, tmp_path / "x")
    assert code == 2 and "joyful" in err and "angry" in err
    code, _, err = run_cli("crawl", "--queries", manifest, "--engine", "urls", "--out", tmp_path / "x")
    assert code == 2 and "urls" in err
    # env var works as the base URL; a server that is down fails the run (exit 1), one line
    monkeypatch.setenv("FERDATA_CRAWL_BASE_URL", "http://127.0.0.1:9")
    code, _, err = run_cli("crawl", "--queries", manifest, "--engine", "loopback", "--out", tmp_path / "x",
                           "--cache", tmp_path / "cache", "-q", "--timeout", "0.2", "--retries", "0")
    assert code == 1 and "no result page" in err and "127.0.0.1:9" in err and err.count("\n") == 1


def test_query_grid_expansion_and_spread() -> None:
    grid = QueryGrid.load("btfer-queries")
    assert set(grid.classes) == {"angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"}
    cells = {label: Counter(q.cell() for q in grid.queries(label)) for label in grid.classes}
    spreads = {label: set(c) for label, c in cells.items()}
    assert len({frozenset(s) for s in spreads.values()}) == 1 and len(spreads["happy"]) == 36
    for label, counter in cells.items():  # every cell gets every phrase of the class once
        assert set(counter.values()) == {len(grid.classes[label])}
    happy = grid.queries("happy")
    assert happy[0].text == "young asian man happy face" and happy[1].text == "young asian man smiling face"
    assert [q.text for q in QueryGrid.load("btfer-queries").queries("happy")] == [q.text for q in happy]


@pytest.mark.parametrize("text, message", [
    ("classes:\n  happy: [happy]\n  sad: []\n", "non-empty list"),
    ("template: '{age} {expression}'\ndemographics:\n  gender: [man]\nclasses:\n  happy: [happy]\n", "{age}"),
    ("template: '{expression}'\ndemographics:\n  gender: [man]\nclasses:\n  happy: [happy]\n", "gender"),
    ("template: '{gender} face'\ndemographics:\n  gender: [man]\nclasses:\n  happy: [happy]\n", "{expression}"),
    ("classes:\n  happy: [happy, happy]\n", "more than once"),
    ("clases:\n  happy: [happy]\n", "clases"),
    ("urls:\n  happy: [ftp://x/y.jpg]\n", "ftp://"),
    ("- a\n- b\n", "mapping"),
])
def test_manifest_validation(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(ManifestError, match=None) as info:
        QueryGrid.load(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_review_sheets_and_exclusions(tmp_path: Path, run_cli, server, manifest: Path) -> None:
    code, _, err = crawl(run_cli, server, manifest, tmp_path / "c", "--per-class", "3")
    assert code == 0, err
    code, out, err = run_cli("review", tmp_path / "c", "-q")
    assert code == 0, err
    review = tmp_path / "c-review"
    assert (review / "index.html").exists() and (review / "happy.html").exists()
    with (review / "review.csv").open() as f:
        lines = list(csv.DictReader(f))
    ds = open_dataset(tmp_path / "c")["train"]
    assert [r["id"] for r in lines] == ds["id"] and {r["decision"] for r in lines} == {"keep"}
    assert list(lines[0]) == ["id", "label", "origin", "decision"]
    page = (review / "happy.html").read_text()
    assert lines[0]["id"][:12] in page and f"thumbs/{lines[0]['id']}.jpg" in page
    from PIL import Image

    with Image.open(review / "thumbs" / f"{lines[0]['id']}.jpg") as thumb:  # a decodable thumbnail of the image
        thumb.load()
        assert thumb.format == "JPEG" and max(thumb.size) == min(128, max(ds[0]["image"].size))
    # a reviewer rejects two images
    lines[0]["decision"] = "reject"
    lines[2]["decision"] = "REJECT"
    with (review / "review.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(lines[0]))
        writer.writeheader()
        writer.writerows(lines)
    code, out, err = run_cli("apply-review", tmp_path / "c", review, "--out", tmp_path / "r", "-q")
    assert code == 0, err
    assert "rejected 2 (review 2)" in out
    kept = open_dataset(tmp_path / "r")["train"]
    assert len(kept) == len(ds) - 2 and lines[0]["id"] not in kept["id"]
    ledger = [r for r in read_rejects(tmp_path / "r") if r["step"] == "review_exclusions"]
    assert sorted(r["id"] for r in ledger) == sorted([lines[0]["id"], lines[2]["id"]])
    assert {r["reason"] for r in ledger} == {"review"}
    # regenerating the sheets keeps the decisions; without --overwrite it refuses
    code, _, err = run_cli("review", tmp_path / "c", "-q")
    assert code == 2 and "--overwrite" in err
    code, _, err = run_cli("review", tmp_path / "c", "-q", "--overwrite")
    assert code == 0, err
    with (review / "review.csv").open() as f:
        assert [r["decision"] for r in csv.DictReader(f)][:3] == ["reject", "keep", "reject"]


def test_review_csv_errors(tmp_path: Path, run_cli, fer_dir: Path) -> None:
    bad = tmp_path / "review.csv"
    bad.write_text("id,label,origin,decision\nabc,happy,x,maybe\n")
    code, _, err = run_cli("apply-review", fer_dir, bad, "--out", tmp_path / "o")
    assert code == 2 and "maybe" in err and "line 2" in err and "keep, reject" in err
    bad.write_text("name,verdict\nabc,reject\n")
    code, _, err = run_cli("apply-review", fer_dir, bad, "--out", tmp_path / "o")
    assert code == 2 and "id and decision" in err
    code, _, err = run_cli("review", tmp_path / "nope")
    assert code == 2 and "nope" in err
