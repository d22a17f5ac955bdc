"""``ferdata build --engine ray``: the same recipes on Ray give the same datasets as the local engine.

One small Ray instance serves the module (2 CPUs, 512 MB object store, no dashboard, servers on
127.0.0.1 only); the last test replaces it with a two-node ``ray.cluster_utils.Cluster`` of one CPU
each. Everything skips with a reason when Ray is not installed (``pip install 'ferdata[ray]'``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# A Ray started by the tests serves this process only: its servers listen on 127.0.0.1.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'ferdata[ray]'")

from ferdata.dataset import open_dataset, read_manifest, read_rejects  # noqa: E402

from .conftest import CRAFTED, shared_data, write_fer_csv  # noqa: E402

pytestmark = pytest.mark.slow
TINY = CRAFTED / "tiny-recipe.yaml"
USAGES = ("Training", "Training", "Training", "Training", "PublicTest", "PrivateTest")


@pytest.fixture(scope="module")
def ray_local():
    """One small Ray instance for the module."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, object_store_memory=512 * 1024**2, include_dashboard=False,
             log_to_driver=False)
    yield ray
    ray.shutdown()


def _build(run_cli, recipe: str | Path, csv: Path, out: Path, *extra: str) -> dict:
    code, stdout, err = run_cli("build", recipe, "--source", csv, "--out", out, "-q", *extra)
    assert code == 0, err
    return read_manifest(out)


def _same_dataset(a: Path, b: Path) -> None:
    """Identical ids and labels per split, identical sorted ledgers, identical per-step counts."""
    da, db = open_dataset(a), open_dataset(b)
    assert list(da) == list(db)
    for split in da:
        assert da[split]["id"] == db[split]["id"], split
        assert da[split]["label"] == db[split]["label"], split
        assert da[split].features == db[split].features, split
    def key(r: dict) -> str:
        return json.dumps(r, sort_keys=True, default=repr)

    assert sorted(map(key, read_rejects(a))) == sorted(map(key, read_rejects(b)))
    counts = ("step", "params", "input_rows", "kept", "rejected", "rejected_by_reason", "class_counts")
    ma, mb = read_manifest(a), read_manifest(b)
    assert [{k: e.get(k) for k in counts} for e in ma["steps"]] == [{k: e.get(k) for k in counts} for e in mb["steps"]]
    assert ma["splits"] == mb["splits"]


def test_engine_options_are_validated(run_cli, tmp_path: Path, fer_csv: Path) -> None:
    code, _, err = run_cli("build", TINY, "--source", fer_csv, "--out", tmp_path / "x", "--engine", "spark")
    assert code == 2 and "spark" in err and "local" in err and "ray" in err
    code, _, err = run_cli("build", TINY, "--source", fer_csv, "--out", tmp_path / "x", "--ray-address", "auto")
    assert code == 2 and err.strip() == "Error: --ray-address auto needs --engine ray"
    code, _, err = run_cli("build", TINY, "--source", fer_csv, "--out", tmp_path / "x", "--engine", "ray",
                           "--ray-address", "10.0.0.1:6379")
    assert code == 2 and "10.0.0.1:6379" in err and "ray://HOST:PORT" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_missing_ray_is_a_usage_error(run_cli, tmp_path: Path, fer_csv: Path, monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    code, _, err = run_cli("build", TINY, "--source", fer_csv, "--out", tmp_path / "x", "--engine", "ray")
    assert code == 2 and err.strip() == "Error: --engine ray needs Ray Data: pip install 'ferdata[ray]'"


def test_tiny_recipe_ray_equals_local(ray_local, run_cli, tmp_path: Path, fer_csv: Path) -> None:
    local = _build(run_cli, TINY, fer_csv, tmp_path / "local")
    on_ray = _build(run_cli, TINY, fer_csv, tmp_path / "ray", "--engine", "ray")
    _same_dataset(tmp_path / "local", tmp_path / "ray")
    assert local["engine"] == {"name": "local"}
    assert on_ray["engine"]["name"] == "ray" and on_ray["engine"]["nodes"] == 1
    import datasets

    assert set(datasets.load_from_disk(str(tmp_path / "ray"))) == set(on_ray["splits"])
    assert ray.is_initialized()  # an engine that joined a running Ray leaves it running


def test_fer2013_improved_ray_equals_local(ray_local, run_cli, tmp_path: Path, monkeypatch) -> None:
    """Per-row steps on Ray (phash and quality as tasks, ESPCN in an actor pool), bad rows in the
    ledger, a killed Ray build resumed from its checkpoints, the Hub export readable."""
    import numpy as np

    from ferdata import steps

    blank = " ".join(["128"] * 48 * 48)
    csv = write_fer_csv(tmp_path / "fer.csv", 3, seed=3, extra_lines=("3,1 2 3,Training", f"4,{blank},Training"))
    _build(run_cli, "fer2013-improved", csv, tmp_path / "local")

    quality = steps.get_step("quality")

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setitem(steps._REGISTRY, "quality", steps.Step("quality", killed, quality.config_cls, False, ""))
    code, _, err = run_cli("build", "fer2013-improved", "--source", csv, "--out", tmp_path / "ray", "-q",
                           "--engine", "ray")
    assert code == 130 and not (tmp_path / "ray").exists()
    monkeypatch.setitem(steps._REGISTRY, "quality", quality)
    manifest = _build(run_cli, "fer2013-improved", csv, tmp_path / "ray", "--engine", "ray")
    _same_dataset(tmp_path / "local", tmp_path / "ray")
    assert len({r["reason"] for r in read_rejects(tmp_path / "ray")}) >= 2
    ds = open_dataset(tmp_path / "ray")["train"]
    assert np.asarray(ds[0]["image"]).shape == (224, 224)
    engine = manifest["engine"]
    assert set(engine["rows_per_node"]) == {"quality train", "upscale train"}  # resumed after dedupe
    assert sum(engine["rows_per_node"]["upscale train"].values()) == len(ds)
    import datasets

    hub = datasets.load_dataset("parquet", data_dir=str(tmp_path / "ray" / "hub" / "data"), split="train")
    assert isinstance(hub.features["label"], datasets.ClassLabel) and isinstance(hub.features["image"], datasets.Image)


def test_bad_row_becomes_a_reject_not_a_failed_job(ray_local) -> None:
    """A batch function that raises on one row: that row is marked ``step_error``, the rest go on."""
    import datasets

    from ferdata.dataset import REJECT_DETAILS, REJECT_REASON
    from ferdata.engines.ray import RayEngine

    def fragile(values: list[int]) -> dict[str, list]:
        if 13 in values:
            raise RuntimeError("unlucky row")
        return {"double": [2 * v for v in values], REJECT_REASON: [""] * len(values), REJECT_DETAILS: [""] * len(values)}

    ds = datasets.Dataset.from_dict({"id": [str(i) for i in range(40)], "x": list(range(40))})
    features = ds.features.copy()
    features["double"] = datasets.Value("int64")
    features[REJECT_REASON] = datasets.Value("string")
    features[REJECT_DETAILS] = datasets.Value("string")
    engine = RayEngine()
    out = engine.map(ds, fragile, input_columns=["x"], batched=True, batch_size=8, features=features, desc="fragile")
    assert out["id"] == ds["id"]  # every row back, in order
    reasons = out[REJECT_REASON]
    assert [i for i, r in enumerate(reasons) if r] == [13] and reasons[13] == "step_error"
    assert "unlucky row" in json.loads(out[13][REJECT_DETAILS])["error"]
    assert out["double"][12] == 24 and out["double"][14] == 28
    engine.close()


@pytest.mark.shared_data
def test_fer2013_dev_ray_equals_local(ray_local, run_cli, tmp_path: Path) -> None:
    """The issue's done-when command on the real dev CSV (first 300 rows of each step: --limit)."""
    csv = shared_data("fer2013-dev.csv")
    _build(run_cli, "fer2013-improved", csv, tmp_path / "local", "--limit", "300")
    _build(run_cli, "fer2013-improved", csv, tmp_path / "ray", "--limit", "300", "--engine", "ray")
    _same_dataset(tmp_path / "local", tmp_path / "ray")


def test_two_node_cluster_runs_on_both_nodes_and_equals_local(ray_local, run_cli, tmp_path: Path) -> None:
    """Last in the module: replaces the module's Ray with a two-node cluster (1 CPU each)."""
    from ray.cluster_utils import Cluster

    recipe = tmp_path / "hash-and-score.yaml"
    recipe.write_text("name: hash-and-score\nvariables:\n  source: null\nsteps:\n  - step: import_fer2013\n"
                      "    csv: \"{source}\"\n  - step: dedupe\n    method: phash\n  - step: quality\n"
                      "    drop: [low_information]\n")
    csv = write_fer_csv(tmp_path / "fer.csv", 44, seed=5, usages=USAGES)  # 308 rows: 2 phash blocks in train
    _build(run_cli, recipe, csv, tmp_path / "local")
    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 200 * 1024**2,
                                                            "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1, object_store_memory=200 * 1024**2)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        manifest = _build(run_cli, recipe, csv, tmp_path / "ray", "--engine", "ray", "--ray-address", "auto")
        assert manifest["engine"]["nodes"] == 2 and manifest["engine"]["cpus"] == 2
        nodes = set().union(*(set(c) for c in manifest["engine"]["rows_per_node"].values()))
        assert len(nodes) == 2, manifest["engine"]["rows_per_node"]
        _same_dataset(tmp_path / "local", tmp_path / "ray")
    finally:
        ray.shutdown()
        cluster.shutdown()
