"""Publishing through the real Hugging Face client, against ferdata's loopback Hub on 127.0.0.1.

`huggingface_hub` and `datasets` are pointed at :mod:`ferdata.demo.hub_server` (HF_ENDPOINT and the module
constants they read at import); a socket guard fails the test if anything resolves a host other
than 127.0.0.1. Data: the tiny generated FER2013 datasets of conftest.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

TOKEN = "hf_loopbackSECRET0123456789"
REPO = "me/fer"


@pytest.fixture(name="hub")
def hub_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """A loopback Hub that needs ``TOKEN`` to write; the client points at it; no other host is reachable."""
    from ferdata.demo.hub_server import LoopbackHub, pointed_at

    blocked: list[str] = []
    real = socket.getaddrinfo

    def loopback_only(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host not in ("127.0.0.1", b"127.0.0.1"):
            blocked.append(str(host))
            raise OSError(f"test network guard: {host} is not 127.0.0.1")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    with LoopbackHub(tmp_path / "hub-repos", token=TOKEN) as server, \
            pointed_at(server.url, cache_dir=tmp_path / "hf-hub-cache"):
        yield server
    assert not blocked, f"something tried to leave 127.0.0.1: {blocked}"


def _ids(dd) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    return {split: list(ds["id"]) for split, ds in dd.items()}


def _load(repo: str = REPO, **kwargs):  # type: ignore[no-untyped-def]
    import datasets

    return datasets.load_dataset(repo, **kwargs)


def _smaller(src: Path, out: Path, run_cli, per_class: int = 2) -> Path:  # type: ignore[no-untyped-def]
    code, _, err = run_cli("balance", src, "--out", out, "--strategy", "undersample", "--per-class", per_class,
                           "--splits", "train,validation,test", "-q")
    assert code == 0, err
    return out


def test_repush_deletes_stale_shards_load_dataset_returns_new_rows(hub, fer_dir: Path, tmp_path: Path, run_cli,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from ferdata import hub as hub_module
    from ferdata.dataset import open_dataset

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(hub_module, "MAX_SHARD_BYTES", 20_000)  # the 28 train rows span several shards
    code, out, err = run_cli("push", fer_dir, REPO)
    assert code == 0, err
    first = hub.files(REPO)
    old_shards = sorted(p for p in first if p.startswith("data/train-"))
    assert len(old_shards) >= 2 and all(p.endswith(f"-of-{len(old_shards):05d}.parquet") for p in old_shards)
    assert _ids(_load()) == _ids(open_dataset(fer_dir))

    smaller = _smaller(fer_dir, tmp_path / "smaller", run_cli)
    monkeypatch.setattr(hub_module, "MAX_SHARD_BYTES", 10**9)  # rebuilt smaller: one shard per split
    code, out, err = run_cli("push", smaller, REPO)
    assert code == 0, err
    files = hub.files(REPO)
    assert sorted(p for p in files if p.startswith("data/")) == [
        "data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet",
        "data/validation-00000-of-00001.parquet"]
    assert ".gitattributes" in files  # not ferdata's: kept
    for shard in old_shards:
        assert shard in out  # the command says what it deleted
    assert f"{len(old_shards)} stale deleted" in out
    loaded, new = _load(), open_dataset(smaller)
    assert _ids(loaded) == _ids(new)  # exactly the new rows, 1:1, in order: no stale shard
    assert sum(len(ds) for ds in loaded.values()) == sum(len(ds) for ds in new.values()) < 42
    assert all(loaded[s]["label"] == new[s]["label"] for s in new)
    # one commit per push, after the repository's initial commit
    from huggingface_hub import HfApi

    commits = HfApi(endpoint=hub.url, token=TOKEN).list_repo_commits(REPO, repo_type="dataset")
    assert len(commits) == 3 and commits[0].title.startswith("ferdata push: smaller")
    code, out, err = run_cli("push", smaller, REPO)  # the same export again: nothing to commit
    assert code == 0 and "nothing to push" in out, err
    assert len(HfApi(endpoint=hub.url, token=TOKEN).list_repo_commits(REPO, repo_type="dataset")) == 3


def test_push_to_pr_branch_and_tag_leave_main_unchanged(hub, fer_dir: Path, tmp_path: Path, run_cli,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from ferdata.dataset import open_dataset

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    code, out, err = run_cli("push", fer_dir, REPO, "--tag", "v1")
    assert code == 0, err
    assert "tagged v1" in out
    main_before = hub.files(REPO)
    smaller = _smaller(fer_dir, tmp_path / "smaller", run_cli)
    code, out, err = run_cli("push", smaller, REPO, "--create-pr")
    assert code == 0, err
    assert "pull request refs/pr/1 against main" in out and "/discussions/1" in out
    assert hub.files(REPO) == main_before  # main untouched
    assert _ids(_load()) == _ids(open_dataset(fer_dir))
    assert _ids(_load(revision="refs/pr/1")) == _ids(open_dataset(smaller))
    assert _ids(_load(revision="v1")) == _ids(open_dataset(fer_dir))

    code, out, err = run_cli("push", fer_dir, REPO, "--revision", "refs/pr/1")  # one more commit on the PR
    assert code == 0, err
    assert hub.files(REPO) == main_before and _ids(_load(revision="refs/pr/1")) == _ids(open_dataset(fer_dir))

    code, out, err = run_cli("push", smaller, REPO, "--revision", "dev")
    assert code == 0, err
    assert "dev (branch created)" in out
    assert hub.files(REPO) == main_before
    assert _ids(_load(revision="dev")) == _ids(open_dataset(smaller))
    refs = hub.refs(REPO)
    assert {"refs/heads/main", "refs/heads/dev", "refs/tags/v1", "refs/pr/1"} <= set(refs)

    # refused before any commit: an existing tag, a tag as the branch, a PR that does not exist
    before = hub.refs(REPO)
    for args, expected in ((("--tag", "v1"), "already exists"), (("--revision", "v1"), "is a tag"),
                           (("--revision", "refs/pr/7"), "no pull request refs/pr/7"),
                           (("--tag", "v2", "--create-pr"), "--create-pr")):
        code, _, err = run_cli("push", smaller, REPO, *args)
        assert code == 2 and expected in err and err.count("\n") == 1, (args, err)
    assert hub.refs(REPO) == before


def test_server_error_mid_commit_leaves_previous_version_whole(hub, fer_dir: Path, tmp_path: Path, run_cli,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from ferdata.dataset import open_dataset

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    code, _, err = run_cli("push", fer_dir, REPO)
    assert code == 0, err
    before, refs = hub.files(REPO), hub.refs(REPO)
    smaller = _smaller(fer_dir, tmp_path / "smaller", run_cli)
    hub.fail_next("commit", status=500)
    code, out, err = run_cli("push", smaller, REPO)
    assert code == 1 and "nothing was committed" in err and "500" in err and err.count("\n") == 1, err
    assert hub.files(REPO) == before and hub.refs(REPO) == refs
    assert _ids(_load()) == _ids(open_dataset(fer_dir))
    code, _, err = run_cli("push", smaller, REPO)  # the same command again succeeds
    assert code == 0, err
    assert _ids(_load()) == _ids(open_dataset(smaller))


def test_push_never_leaks_the_token(hub, fer_dir: Path, tmp_path: Path, run_cli, caplog,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    code, out, err = run_cli("push", fer_dir, REPO, "--token", TOKEN, "--private")
    assert code == 0, err
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    code, out2, err2 = run_cli("push", fer_dir, REPO, "--tag", "v1")
    assert code == 0, err2
    wrong = "hf_wrongTOKEN987654321"
    code, out3, err3 = run_cli("push", fer_dir, REPO, "--token", wrong)
    assert code == 1 and "401" in err3 and wrong not in err3
    code, _, err4 = run_cli("push", fer_dir, "not-a-repo-id", "--token", wrong)
    assert code == 2 and "user/name" in err4 and wrong not in err4
    monkeypatch.delenv("HF_TOKEN")
    code, _, err5 = run_cli("push", fer_dir, REPO)
    assert code == 2 and "HF_TOKEN" in err5
    text = "".join([out, err, out2, err2, out3, err3, err4, err5, caplog.text])
    assert TOKEN not in text and wrong not in text
    secret = TOKEN.encode()
    for root in (tmp_path, hub.root, fer_dir):
        for file in root.rglob("*"):
            if file.is_file():
                assert secret not in file.read_bytes(), file
    assert hub.files(REPO)  # the private repository was written with the token


def test_card_keeps_fields_and_text_a_user_added_on_the_hub(hub, fer_dir: Path, tmp_path: Path, run_cli,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import DatasetCard, HfApi

    from ferdata.dataset import open_dataset
    from ferdata.hub import BODY_BEGIN, BODY_END

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    code, out, err = run_cli("push", fer_dir, REPO, "--license", "cc-by-4.0")
    assert code == 0, err
    assert "text new" in out
    card = DatasetCard(hub.files(REPO)["README.md"].decode())
    card.data.language = ["en"]
    card.data.tags = [*card.data.tags, "my-tag"]
    card.text = f"Notes by the maintainer.\n\n{card.text.strip()}\n\n## Citation\n\nPlease cite us.\n"
    HfApi(endpoint=hub.url, token=TOKEN).upload_file(path_or_fileobj=str(card).encode(), path_in_repo="README.md",
                                                     repo_id=REPO, repo_type="dataset", commit_message="edit card")
    smaller = _smaller(fer_dir, tmp_path / "smaller", run_cli)
    code, out, err = run_cli("push", smaller, REPO)
    assert code == 0, err
    assert "kept fields: language" in out and "rewrote license, task_categories, tags" in out
    assert "text rewritten between the ferdata markers, the rest kept" in out
    text = hub.files(REPO)["README.md"].decode()
    after = DatasetCard(text)
    assert after.data.language == ["en"] and "my-tag" in after.data.tags and "ferdata" in after.data.tags
    assert after.data.license == "cc-by-4.0"  # no --license: the Hub's license stays
    splits = {s["name"]: s["num_examples"] for s in after.data.dataset_info["splits"]}
    assert splits == {split: len(ds) for split, ds in open_dataset(smaller).items()}  # rewritten: the new rows
    assert text.index("Notes by the maintainer.") < text.index(BODY_BEGIN) < text.index(BODY_END) \
        < text.index("Please cite us.")
    assert text.count(BODY_BEGIN) == 1 and "| balance |" in text


def test_import_hub_round_trip_offline_and_errors(hub, fer_dir: Path, tmp_path: Path, run_cli,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from ferdata.dataset import open_dataset, read_manifest
    from ferdata.demo.hub_server import pointed_at

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    code, _, err = run_cli("push", fer_dir, REPO, "--tag", "v1")
    assert code == 0, err
    monkeypatch.delenv("HF_TOKEN")  # a public repository reads without a token
    code, out, err = run_cli("import", "hub", f"{REPO}@v1", "--out", tmp_path / "back", "-q")
    assert code == 0, err
    original, back = open_dataset(fer_dir), open_dataset(tmp_path / "back")
    assert list(back) == list(original)
    for split in original:
        for column in ("id", "label", "root_id", "parent_id", "source", "origin"):
            assert back[split][column] == original[split][column], (split, column)
        assert back[split].features["label"].names == original[split].features["label"].names
    manifest = read_manifest(tmp_path / "back")
    upstream = manifest["upstream"]
    assert upstream["repo_id"] == REPO and upstream["revision"] == "v1" and len(upstream["commit"]) == 40
    assert upstream["commit"] == hub.refs(REPO)["refs/tags/v1"]
    steps = upstream["provenance"]["steps"]
    assert [s["step"] for s in steps] == [s["step"] for s in read_manifest(fer_dir)["steps"]]
    assert steps[0]["params"]["csv"] == "fer2013.csv"
    assert manifest["steps"][-1]["step"] == "import_hub" and manifest["steps"][-1]["params"]["repo"] == f"{REPO}@v1"

    # offline, from the local cache only
    with pointed_at(hub.url, cache_dir=tmp_path / "hf-hub-cache", offline=True):
        before = len(hub.requests)
        code, _, err = run_cli("import", "hub", f"{REPO}@v1", "--out", tmp_path / "offline", "-q")
        assert code == 0, err
        assert len(hub.requests) == before  # nothing asked of the Hub
        assert _ids(open_dataset(tmp_path / "offline")) == _ids(original)
        code, _, err = run_cli("import", "hub", "me/never-fetched", "--out", tmp_path / "x", "-q")
        assert code == 2 and "HF_HUB_OFFLINE=1" in err and err.count("\n") == 1, err

    for ref, expected in (("me/missing", "not found"), (f"{REPO}@no-such-branch", "revision 'no-such-branch'"),
                          ("not a repo", "user/name")):
        code, _, err = run_cli("import", "hub", ref, "--out", tmp_path / "x", "-q")
        assert code == 2 and expected in err and err.count("\n") == 1, (ref, err)
    assert not (tmp_path / "x").exists()


def test_import_hub_from_a_local_hub_layout_folder(fer_dir: Path, tmp_path: Path, run_cli) -> None:
    from ferdata.dataset import open_dataset, read_manifest

    code, _, err = run_cli("export", fer_dir, "--out", tmp_path / "hubdir", "-q")
    assert code == 0, err
    code, _, err = run_cli("import", "hub", tmp_path / "hubdir", "--out", tmp_path / "back", "-q")
    assert code == 0, err
    original, back = open_dataset(fer_dir), open_dataset(tmp_path / "back")
    for split in original:
        assert back[split]["id"] == original[split]["id"] and back[split]["root_id"] == original[split]["root_id"]
    manifest = read_manifest(tmp_path / "back")
    assert manifest["upstream"]["folder"] == "hubdir" and manifest["upstream"]["provenance"]["steps"]

    # a row whose id does not match its pixels goes to the ledger; kept + ledger = rows published
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ferdata.dataset import read_rejects

    shard = tmp_path / "hubdir" / "data" / "train-00000-of-00001.parquet"
    table = pq.read_table(shard)
    ids = table.column("id").to_pylist()
    pq.write_table(table.set_column(table.schema.get_field_index("id"), "id", pa.array(["f" * 64, *ids[1:]])),
                   shard)
    code, out, err = run_cli("import", "hub", tmp_path / "hubdir", "--out", tmp_path / "tampered")
    assert code == 0, err
    assert "rejected 1 (id_mismatch 1)" in out
    tampered = open_dataset(tmp_path / "tampered")
    assert sum(len(ds) for ds in tampered.values()) == sum(len(ds) for ds in original.values()) - 1
    assert tampered["train"]["id"] == ids[1:]
    ledger = read_rejects(tmp_path / "tampered")
    assert [(r["id"], r["reason"], r["step"]) for r in ledger] == [("f" * 64, "id_mismatch", "import_hub")]
    assert ids[0] in ledger[0]["details"]


def test_loopback_hub_answers_the_client_in_the_hubs_shapes(hub) -> None:
    """The server itself, through the client's own calls: file metadata headers, ranges, HfFileSystem,
    typed errors for a missing repository, revision and file, and the token check on writes."""
    from huggingface_hub import CommitOperationAdd, HfApi, HfFileSystem, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from ferdata.demo.hub_store import git_blob_id

    api = HfApi(endpoint=hub.url, token=TOKEN)
    api.create_repo(REPO, repo_type="dataset")
    data = bytes(range(256)) * 40
    info = api.create_commit(REPO, [CommitOperationAdd("data/blob.bin", data)], commit_message="add",
                             repo_type="dataset")
    meta = get_hf_file_metadata(hf_hub_url(REPO, "data/blob.bin", repo_type="dataset", endpoint=hub.url))
    assert (meta.commit_hash, meta.etag, meta.size) == (info.oid, git_blob_id(data), len(data))
    fs = HfFileSystem(endpoint=hub.url, token=TOKEN)
    assert fs.ls(f"datasets/{REPO}/data", detail=False) == [f"datasets/{REPO}/data/blob.bin"]
    with fs.open(f"datasets/{REPO}/data/blob.bin", "rb", block_size=100) as f:
        f.seek(1000)
        assert f.read(10) == data[1000:1010]  # a Range request answered with 206
    assert fs.read_bytes(f"datasets/{REPO}@{info.oid}/data/blob.bin") == data
    with pytest.raises(RepositoryNotFoundError):
        api.dataset_info("me/none")
    with pytest.raises(RevisionNotFoundError):
        api.list_repo_files(REPO, repo_type="dataset", revision="nope")
    with pytest.raises(EntryNotFoundError):
        get_hf_file_metadata(hf_hub_url(REPO, "data/missing.bin", repo_type="dataset", endpoint=hub.url))
    with pytest.raises(HfHubHTTPError) as e:
        HfApi(endpoint=hub.url, token="hf_wrong").create_commit(
            REPO, [CommitOperationAdd("x.txt", b"x")], commit_message="x", repo_type="dataset")
    assert e.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as e:  # parentCommit is checked: a moved branch refuses the commit
        api.create_commit(REPO, [CommitOperationAdd("y.txt", b"y")], commit_message="y", repo_type="dataset",
                          parent_commit="0" * 40)
    assert e.value.response.status_code == 412
    assert set(hub.files(REPO)) == {".gitattributes", "data/blob.bin"}
