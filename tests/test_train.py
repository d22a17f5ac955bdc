"""Training and evaluation (issue 7): models, tf.data import, metrics, class weights, commands."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from ferdata.errors import UsageError
from ferdata.train.metrics import classification_report, confusion_matrix, normalize_rows, top_k_accuracy
from ferdata.train.weights import class_weights

NAMES4 = ["angry", "happy", "sad", "surprise"]


def make_oriented(n: int, *, seed: int, size: int = 32, names: list[str] = NAMES4):
    """A learnable task: class k = noisy stripes at angle k*180/C degrees, random phase and frequency."""
    import datasets

    from ferdata.dataset import core_features
    from ferdata.images import encode_png, pixel_id

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    rows: dict[str, list] = {"image": [], "label": [], "id": [], "source": [], "origin": []}
    for i in range(n):
        c = i % len(names)
        angle = np.pi * c / len(names)
        wave = np.sin(rng.uniform(0.5, 0.8) * (np.cos(angle) * xx + np.sin(angle) * yy) + rng.uniform(0, 6.3))
        img = np.clip(128 + 80 * wave + rng.normal(0, 20, (size, size)), 0, 255).astype(np.uint8)
        rows["image"].append({"bytes": encode_png(img), "path": None})
        rows["label"].append(c)
        rows["id"].append(pixel_id(img))
        rows["source"].append("synthetic")
        rows["origin"].append(f"{seed}:{i}")
    return datasets.Dataset.from_dict(rows, features=core_features(names))


def save_dir(path: Path, **splits) -> Path:
    import datasets

    from ferdata.dataset import new_manifest, save_dataset

    return save_dataset(datasets.DatasetDict(splits), path, manifest=new_manifest(seed=0))


@pytest.fixture(scope="module")
def stripes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train 200 (no validation split) / test 40, 32x32 gray, 4 classes."""
    root = tmp_path_factory.mktemp("stripes")
    return save_dir(root / "stripes", train=make_oriented(200, seed=0), test=make_oriented(40, seed=1))


@pytest.fixture(scope="module")
def trained_run(stripes_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str, str]:
    """`ferdata train` on the stripes dataset with tiny-cnn (the expensive step, shared)."""
    from click.testing import CliRunner

    from ferdata.cli import cli
    from ferdata.progress import disable_progress_bars

    disable_progress_bars()
    run = tmp_path_factory.mktemp("runs") / "tiny"
    result = CliRunner().invoke(cli, ["train", str(stripes_dir), "--model", "tiny-cnn", "--epochs", "10",
                                      "--batch-size", "16", "--lr", "3e-3", "--class-weights", "simple",
                                      "--out", str(run), "-q"], catch_exceptions=False)
    return run, result.exit_code, result.stdout, result.stderr


# ------------------------------------------------------------------ pure functions


def test_class_weights_match_the_papers() -> None:
    # paper 003, Table 1 (8 classes): happy 134,412 -> 0.1250, anger 24,882 -> 0.6752, contempt 3,750 -> 4.4804
    counts = {"anger": 24882, "contempt": 3750, "disgust": 3803, "fear": 6378, "happy": 134412, "neutral": 74874,
              "sad": 25460, "surprise": 14090}
    inverse = class_weights(counts, "inverse")
    assert inverse["happy"] == 0.125 and inverse["anger"] == 0.6752 and inverse["contempt"] == 4.4804
    assert inverse["surprise"] == 1.1924 and inverse["sad"] == 0.6599
    # paper 001: simple = (1/n)/min(1/n) (largest class 1.0); conservative capped at 3
    assert class_weights([100, 50, 10], "simple") == {0: 1.0, 1: 2.0, 2: 10.0}
    assert class_weights([100, 50, 10], "conservative") == {0: 1.0, 1: 2.0, 2: 3.0}
    assert class_weights([100, 0, 10], "none") == {0: 1.0, 1: 0.0, 2: 1.0}
    with pytest.raises(UsageError, match="allowed: none, simple, conservative, inverse"):
        class_weights([1, 2], "balanced")
    with pytest.raises(UsageError, match="every class has 0"):
        class_weights([0, 0], "simple")


def test_metrics_on_a_hand_built_prediction_set() -> None:
    # 3 classes; class 2 ("sad") absent from y_true, predicted once
    y_true = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    y_pred = [0, 0, 0, 1, 1, 1, 1, 1, 0, 2]
    probs = np.array([[0.6, 0.3, 0.1]] * 3 + [[0.4, 0.5, 0.1]] + [[0.1, 0.8, 0.1]] * 4
                     + [[0.5, 0.4, 0.1]] + [[0.3, 0.2, 0.5]])
    cm = confusion_matrix(y_true, y_pred, 3)
    assert cm.tolist() == [[3, 1, 0], [1, 4, 1], [0, 0, 0]]  # rows true, columns predicted
    r = classification_report(y_true, y_pred, probs, ["angry", "happy", "sad"])
    assert r["accuracy"] == 0.7
    assert r["top2_accuracy"] == 0.9  # only the last row's true class (happy, 0.2) is third
    assert r["per_class"]["angry"] == {"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4}
    assert r["per_class"]["happy"] == {"precision": 0.8, "recall": 0.6667, "f1": 0.7273, "support": 6}
    assert r["per_class"]["sad"]["support"] == 0 and r["per_class"]["sad"]["precision"] == 0.0
    assert r["macro_f1"] == round((0.75 + 8 / 11) / 2, 4)  # the absent class is not averaged
    assert any("'sad' has no example" in w for w in r["warnings"])
    assert normalize_rows(cm)[1].tolist() == pytest.approx([1 / 6, 4 / 6, 1 / 6])
    assert top_k_accuracy([2], np.array([[0.5, 0.1, 0.4]]), k=1) == 0.0
    with pytest.raises(UsageError, match="outside 0..2"):
        confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(UsageError, match="3 labels but y_pred has 2"):
        confusion_matrix([0, 1, 2], [0, 1], 3)


# ------------------------------------------------------------------ models


def test_shallow_cnn_layer_parameters_follow_paper_004() -> None:
    from ferdata.train import build_model

    model = build_model("shallow-cnn", (224, 224, 1), 7)
    params = {layer.name: layer.count_params() for layer in model.layers if layer.count_params()}
    # paper 004, Table 1: conv1 320, conv2 18,496, conv3 73,856, fc2 3,591, flatten 100,352
    assert params["conv1"] == 320 and params["conv2"] == 18_496 and params["conv3"] == 73_856
    assert params["fc2"] == 3_591
    assert model.get_layer("flatten").output.shape[-1] == 100_352
    # Table 1 prints 51,795,456 for fc1, which contradicts its own 100,352 -> 512 shapes;
    # the arithmetic (100,352 x 512 weights + 512 biases) gives 51,380,736 (docs/training.md).
    assert params["fc1"] == 100_352 * 512 + 512 == 51_380_736
    assert list(params) == ["conv1", "conv2", "conv3", "fc1", "fc2"]
    assert model.output.shape[-1] == 7


def test_build_model_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ferdata.train import WeightsUnavailable, build_model

    with pytest.raises(UsageError, match="unknown model 'resnet'; allowed: shallow-cnn, fer-cnn, efficientnet-b0, tiny-cnn"):
        build_model("resnet", (48, 48, 1), 7)
    with pytest.raises(UsageError, match="channels must be 1 or 3, got 2"):
        build_model("tiny-cnn", (48, 48, 2), 7)
    with pytest.raises(UsageError, match="at least 16x16"):
        build_model("fer-cnn", (8, 8, 1), 7)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # an empty cache: offline, no weights
    with pytest.raises(WeightsUnavailable, match="--allow-download"):
        build_model("efficientnet-b0", (224, 224, 3), 7)
    with pytest.raises(WeightsUnavailable, match="weights file not found"):
        build_model("efficientnet-b0", (224, 224, 3), 7, weights=tmp_path / "missing.h5")
    model = build_model("fer-cnn", (48, 48, 1), 7)
    assert [layer.name for layer in model.layers if layer.name.startswith("conv")] == ["conv1", "conv2", "conv3", "conv4"]
    assert model.get_layer("conv2").kernel.shape == (5, 5, 64, 128)


# ------------------------------------------------------------------ tf.data import


def test_to_tf_dataset_resizes_converts_and_one_hots(fer_dir: Path, tmp_path: Path) -> None:
    import datasets

    from ferdata.train import to_tf_dataset

    ds = to_tf_dataset(fer_dir, split="test", image_size=(64, 56), channels=3, batch_size=4)
    batches = list(ds)
    assert [b[0].shape[0] for b in batches] == [4, 3] and len(ds) == 2
    x, y = batches[0]
    assert x.shape[1:] == (64, 56, 3) and x.dtype.name == "float32"
    # raw 0..255 pixel values (the models rescale), gray repeated to 3 identical channels
    assert 0.0 <= float(x.numpy().min()) and 1.0 < float(x.numpy().max()) <= 255.0
    assert np.array_equal(x.numpy()[..., 0], x.numpy()[..., 2])
    # at the images' own size and channels the values are exactly the stored pixels
    native = next(iter(to_tf_dataset(fer_dir, split="test", channels=1, batch_size=4)))[0].numpy()
    stored = datasets.load_from_disk(str(fer_dir))["test"]["image"][:4]
    assert np.array_equal(native[..., 0], np.stack([np.asarray(im.convert("L"), np.float32) for im in stored]))
    labels = np.concatenate([b[1].numpy().argmax(1) for b in batches])
    assert labels.tolist() == datasets.load_from_disk(str(fer_dir))["test"]["label"]
    assert np.allclose(np.concatenate([b[1].numpy() for b in batches]).sum(1), 1.0)
    # shuffle: seeded, reshuffled per epoch, same multiset
    shuffled = to_tf_dataset(fer_dir, split="train", batch_size=32, shuffle=True, seed=3, augment="paper001")
    e1 = next(iter(shuffled))[1].numpy().argmax(1)
    e2 = next(iter(shuffled))[1].numpy().argmax(1)
    again = next(iter(to_tf_dataset(fer_dir, split="train", batch_size=32, shuffle=True, seed=3)))[1].numpy().argmax(1)
    assert sorted(e1) == sorted(e2) and e1.tolist() != e2.tolist() and e1.tolist() == again.tolist()
    # augmentation is seeded and drawn in batch order: the same batches in two runs
    runs = [[b[0].numpy() for b in to_tf_dataset(fer_dir, split="train", batch_size=8, shuffle=True, seed=3,
                                                 augment="light")] for _ in range(2)]
    assert all(np.array_equal(a, b) for a, b in zip(*runs, strict=True))
    # a Dataset loaded back from parquet (the Hub layout) works the same
    datasets.load_from_disk(str(fer_dir))["validation"].to_parquet(str(tmp_path / "validation.parquet"))
    hub = datasets.load_dataset("parquet", data_files={"validation": str(tmp_path / "validation.parquet")})
    x, y = next(iter(to_tf_dataset(hub["validation"], batch_size=8)))
    assert x.shape == (7, 48, 48, 1) and y.shape == (7, 7)
    with pytest.raises(UsageError, match="split 'dev' not found; splits: test, train, validation|split 'dev' not found"):
        to_tf_dataset(fer_dir, split="dev")
    with pytest.raises(UsageError, match="allowed: none, paper001, paper002"):
        to_tf_dataset(fer_dir, augment="mixup")


def _colour_dataset(n: int, *, sizes: list[int] | None = None):
    """n RGB PNGs (random pixels), sizes cycling through ``sizes`` (default 20), labels 0..3."""
    import datasets

    from ferdata.dataset import core_features
    from ferdata.images import encode_png, pixel_id

    rng = np.random.default_rng(5)
    sizes = sizes or [20]
    images = [rng.integers(0, 256, (sizes[i % len(sizes)], sizes[i % len(sizes)] + 2, 3), dtype=np.uint8)
              for i in range(n)]
    return datasets.Dataset.from_dict({"image": [{"bytes": encode_png(im), "path": None} for im in images],
                                       "label": [i % 4 for i in range(n)], "id": [pixel_id(im) for im in images],
                                       "source": ["t"] * n, "origin": ["t"] * n}, features=core_features(NAMES4))


def _all_batches(ds) -> tuple[np.ndarray, np.ndarray]:
    batches = list(ds)
    return np.concatenate([b[0].numpy() for b in batches]), np.concatenate([b[1].numpy() for b in batches])


@pytest.mark.parametrize("image_size,channels", [(None, 1), (None, 3), (30, 1), ((24, 16), 3)])
def test_in_memory_and_streaming_give_the_same_batches(fer_dir: Path, image_size, channels,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoded once in memory or streamed (FERDATA_TRAIN_MEMORY_MB=0): the same pixels, gray<->RGB included."""
    import datasets

    from ferdata.quality import to_gray
    from ferdata.rows import read_pixels
    from ferdata.train import to_tf_dataset

    for source in (_colour_dataset(11), datasets.load_from_disk(str(fer_dir))["test"]):
        kwargs = {"image_size": image_size, "channels": channels, "batch_size": 4}
        memory = _all_batches(to_tf_dataset(source, **kwargs))
        monkeypatch.setenv("FERDATA_TRAIN_MEMORY_MB", "0")
        streamed = _all_batches(to_tf_dataset(source, **kwargs))
        monkeypatch.delenv("FERDATA_TRAIN_MEMORY_MB")
        assert memory[0].shape == streamed[0].shape and memory[0].shape[-1] == channels
        np.testing.assert_array_equal(memory[0], streamed[0])
        np.testing.assert_array_equal(memory[1], streamed[1])
        monkeypatch.setenv("FERDATA_TRAIN_MEMORY_MB", "0")  # the same seeded order per epoch on both paths
        streamed_order = to_tf_dataset(source, shuffle=True, seed=3, **kwargs)
        streamed_epochs = [_all_batches(streamed_order)[0] for _ in range(2)]
        monkeypatch.delenv("FERDATA_TRAIN_MEMORY_MB")
        memory_order = to_tf_dataset(source, shuffle=True, seed=3, **kwargs)
        for epoch in streamed_epochs:
            np.testing.assert_array_equal(_all_batches(memory_order)[0], epoch)
        assert not np.array_equal(*streamed_epochs)
        if image_size is None:  # the stored pixels through the one reader: ITU-R 601 gray, or gray repeated
            raw = read_pixels(source.cast_column("image", datasets.Image(decode=False))[0]["image"])
            expected = to_gray(raw) if channels == 1 else (np.repeat(raw[:, :, None], 3, 2) if raw.ndim == 2 else raw)
            np.testing.assert_array_equal(memory[0][0], expected.reshape(memory[0][0].shape))


def test_mixed_sizes_stream_and_a_bad_budget_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from ferdata.train import to_tf_dataset
    from ferdata.train.data import memory_budget_mb

    mixed = _colour_dataset(6, sizes=[20, 28])
    x, y = _all_batches(to_tf_dataset(mixed, image_size=16, channels=1, batch_size=4))
    assert x.shape == (6, 16, 16, 1) and y.argmax(1).tolist() == [0, 1, 2, 3, 0, 1]
    x, _ = _all_batches(to_tf_dataset(mixed, channels=1, batch_size=4))  # no size: the first image's
    assert x.shape == (6, 20, 22, 1)
    monkeypatch.setenv("FERDATA_TRAIN_MEMORY_MB", "lots")
    with pytest.raises(UsageError, match="FERDATA_TRAIN_MEMORY_MB must be a number of MB >= 0"):
        memory_budget_mb()


# ------------------------------------------------------------------ commands


def test_train_learns_and_writes_every_output(trained_run: tuple[Path, int, str, str]) -> None:
    run, code, out, err = trained_run
    assert code == 0, err
    assert "no validation split" in err and "stratified 20%" in err  # said on screen
    for name in ("model.keras", "history.csv", "accuracy.png", "loss.png", "confusion.png", "confusion_normalized.png",
                 "confusion.csv", "metrics.json", "labels.json", "run.json"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "validation" and metrics["num_examples"] == 40
    assert metrics["accuracy"] >= 0.9, metrics  # the synthetic task is learnable: training works
    assert set(metrics["per_class"]) == set(NAMES4)
    assert metrics["top2_accuracy"] >= metrics["accuracy"] and 0 < metrics["inference_ms_per_image"] < 50
    assert json.loads((run / "labels.json").read_text()) == NAMES4
    config = json.loads((run / "run.json").read_text())
    assert config["validation_split"] == "created" and config["input_shape"] == [32, 32, 1]
    assert config["class_weights"] == "simple" and config["train_examples"] == 160
    assert config["schedule"] == "plateau"   # ferdata train's default (refine's flag/prune use cosine)
    with (run / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == config["epochs_run"] and {"accuracy", "val_accuracy", "val_loss"} <= set(rows[0])
    assert max(float(r["val_accuracy"]) for r in rows) == pytest.approx(metrics["accuracy"], abs=1e-3)
    with (run / "confusion.csv").open() as f:
        table = list(csv.reader(f))
    assert table[0] == ["true\\predicted", *NAMES4]
    assert sum(int(v) for row in table[1:] for v in row[1:]) == 40
    assert "accuracy" in out and "macro F1" in out


def test_evaluate_with_saliency_and_label_mapping(trained_run, stripes_dir: Path, tmp_path: Path, run_cli) -> None:
    run = trained_run[0]
    code, out, err = run_cli("evaluate", run, stripes_dir, "--split", "test", "--saliency", "2", "--out", tmp_path / "ev")
    assert code == 0, err
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["num_examples"] == 40 and metrics["accuracy"] >= 0.8
    assert sorted(p.name for p in (tmp_path / "ev" / "saliency").iterdir()) == [f"{n}.png" for n in NAMES4]
    # a dataset with other class names / order: mapped by name through the label maps
    other = save_dir(tmp_path / "other", test=make_oriented(8, seed=2, names=["Anger", "Happiness", "Sadness", "Surprise"]))
    code, out, err = run_cli("evaluate", run, other, "--out", tmp_path / "ev2")
    assert code == 0, err
    assert json.loads((tmp_path / "ev2" / "metrics.json").read_text())["num_examples"] == 8
    # a class the model does not know: one-line error, exit 2
    bad = save_dir(tmp_path / "bad", test=make_oriented(8, seed=2, names=["angry", "happy", "sad", "contempt"]))
    code, out, err = run_cli("evaluate", run, bad, "--out", tmp_path / "ev3")
    assert code == 2 and err.startswith("Error: dataset classes ['contempt'] are not classes of the model")
    assert err.count("\n") == 1
    code, out, err = run_cli("evaluate", run, stripes_dir, "--split", "validation")
    assert code == 2 and "split 'validation' not found" in err


def test_export_tflite_matches_keras(trained_run, stripes_dir: Path, run_cli) -> None:
    import keras

    from ferdata.train import to_tf_dataset
    from ferdata.train.run import tflite_predict

    run = trained_run[0]
    code, out, err = run_cli("export-tflite", run)
    assert code == 0, err
    assert (run / "model.tflite").stat().st_size > 1000
    images = next(iter(to_tf_dataset(stripes_dir, split="test", batch_size=6)))[0].numpy()
    keras_probs = keras.models.load_model(run / "model.keras").predict(images, verbose=0)
    lite_probs = tflite_predict(run / "model.tflite", images)
    assert lite_probs.shape == (6, 4)
    assert np.abs(lite_probs - keras_probs).max() < 1e-4
    assert (lite_probs.argmax(1) == keras_probs.argmax(1)).all()
    code, out, err = run_cli("export-tflite", run)
    assert code == 2 and "already exists; pass --overwrite" in err


def test_train_bad_input_is_one_line(fer_dir: Path, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # no cached ImageNet weights
    code, out, err = run_cli("train", tmp_path / "nope", "--out", tmp_path / "r")
    assert code == 2 and err.startswith("Error:") and "does not exist" in err
    code, out, err = run_cli("train", fer_dir, "--model", "resnet", "--out", tmp_path / "r")
    assert code == 2 and "'resnet' is not one of" in err
    code, out, err = run_cli("train", fer_dir, "--image-size", "big", "--out", tmp_path / "r")
    assert code == 2 and "use N or HxW" in err
    code, out, err = run_cli("train", fer_dir, "--model", "efficientnet-b0", "--out", tmp_path / "r")
    assert code == 2 and "--allow-download" in err and err.count("\n") == 1
    code, out, err = run_cli("evaluate", fer_dir, fer_dir)
    assert code == 2 and "not a training run directory" in err


def _digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> digest)."""
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_train_limit_never_writes_into_its_input(stripes_dir: Path, tmp_path: Path, run_cli) -> None:
    # issue 12, defect 5: Dataset.shuffle wrote an indices cache file into the input directory
    import shutil

    src = shutil.copytree(stripes_dir, tmp_path / "input")
    before = _digest(src)
    code, out, err = run_cli("train", src, "--model", "tiny-cnn", "--epochs", "1", "--limit", "40",
                             "--out", tmp_path / "run", "-q")
    assert code == 0, err
    assert _digest(src) == before
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["train_examples"] + run["validation_examples"] == 40


def test_soft_labels_are_the_ferplus_vote_distribution(tmp_path: Path, run_cli) -> None:
    import datasets

    from ferdata.dataset import core_features
    from ferdata.images import encode_png, pixel_id
    from ferdata.train import to_tf_dataset

    names = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    #          neutral happy surprise sad angry disgust fear contempt unknown NF
    votes = [[6, 0, 0, 0, 4, 0, 0, 0, 0, 0],   # neutral 0.6, angry 0.4
             [0, 9, 1, 0, 0, 0, 0, 0, 0, 0],   # happy 1.0 (the single surprise vote is an outlier)
             [0, 0, 0, 0, 0, 0, 0, 0, 0, 10]]  # no usable vote: its one-hot label (sad)
    features = core_features(names)
    features["ferplus_votes"] = datasets.Sequence(datasets.Value("int32"), length=10)
    images = [np.full((8, 8), 40 * i, np.uint8) for i in range(3)]
    ds = datasets.Dataset.from_dict({"image": [{"bytes": encode_png(im), "path": None} for im in images],
                                     "label": [4, 3, 5], "id": [pixel_id(im) for im in images],
                                     "source": ["t"] * 3, "origin": ["t"] * 3, "ferplus_votes": votes},
                                    features=features)
    _, targets = next(iter(to_tf_dataset(ds, batch_size=3, soft_labels="ferplus_votes")))
    expected = np.zeros((3, 7), np.float32)
    expected[0, names.index("neutral")], expected[0, names.index("angry")] = 0.6, 0.4
    expected[1, names.index("happy")] = 1.0
    expected[2, names.index("sad")] = 1.0
    np.testing.assert_allclose(targets.numpy(), expected, atol=1e-6)
    save_dir(tmp_path / "d", train=ds)
    code, _, err = run_cli("train", tmp_path / "d", "--model", "tiny-cnn", "--soft-labels", "votes",
                           "--out", tmp_path / "r")
    assert code == 2 and "'votes' not found" in err and err.count("\n") == 1


def test_shallow_cnn_std_standardises_each_image_and_saves(tmp_path: Path) -> None:
    """shallow-cnn-std = shallow-cnn's layers after per-image standardisation; the custom layer reloads from .keras."""
    import keras

    from ferdata.train import build_model

    model = build_model("shallow-cnn-std", (16, 16, 1), 4)
    assert [layer.count_params() for layer in model.layers if layer.count_params()] == \
        [layer.count_params() for layer in build_model("shallow-cnn", (16, 16, 1), 4).layers if layer.count_params()]
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (3, 16, 16, 1)).astype("float32")
    x[2] = 7.0                                                   # a flat image stays finite
    z = np.asarray(model.get_layer("standardize")(x))
    std = x.reshape(3, -1).std(1)
    assert np.allclose(z.reshape(3, -1).mean(1), 0, atol=1e-4)
    assert np.allclose(z.reshape(3, -1).std(1), std / (std + 1), atol=1e-4)
    # brightness no longer matters: the same face 50 gray levels brighter gives the same prediction
    assert np.allclose(model.predict(x[:2], verbose=0), model.predict(x[:2] + 50, verbose=0), atol=1e-5)
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", compile=False)
    assert np.allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


# ------------------------------------------------------------------ seen rows and dropped classes (issue 26)


def test_evaluate_leaves_out_the_rows_the_run_trained_on(trained_run, stripes_dir: Path, tmp_path: Path,
                                                         run_cli) -> None:
    """The stripes dataset has no validation split: train held out 20 %; evaluate on it scores only those."""
    from collections import Counter

    import pyarrow.parquet as pq

    run = trained_run[0]
    seen = pq.read_table(run / "seen.parquet").to_pydict()
    assert Counter(seen["role"]) == {"train": 160, "validation": 40} and set(seen["split"]) == {"train"}
    assert json.loads((run / "run.json").read_text())["seen_rows"]["validation_split"] == "train"
    code, out, err = run_cli("evaluate", run, stripes_dir, "--split", "train", "--out", tmp_path / "ev")
    assert code == 0, err
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["num_examples"] == 40 and metrics["rows_in_split"] == 200
    assert metrics["excluded_seen"] == 160 and metrics["validation_rows_scored"] == 40
    assert "left out 160 rows of split 'train' the model was trained on" in err and "160 seen in training" in out
    with (tmp_path / "ev" / "predictions.csv").open() as f:
        scored = {r["id"] for r in csv.DictReader(f)}
    validation_ids = {i for i, role in zip(seen["id"], seen["role"], strict=True) if role == "validation"}
    assert scored == validation_ids
    # --include-seen scores every row and says the score is not a test score
    code, out, err = run_cli("evaluate", run, stripes_dir, "--split", "train", "--include-seen", "--out", tmp_path / "all")
    assert code == 0, err
    assert json.loads((tmp_path / "all" / "metrics.json").read_text())["num_examples"] == 200
    assert "not a test score" in err


def test_evaluate_leaves_out_derived_copies_of_training_rows(trained_run, tmp_path: Path, run_cli) -> None:
    """An upscaled or cropped copy has new pixels (a new id) but its training row's root_id: it is seen too."""
    import pyarrow.parquet as pq

    run = trained_run[0]
    seen = pq.read_table(run / "seen.parquet").to_pydict()
    train_ids = [i for i, role in zip(seen["id"], seen["role"], strict=True) if role == "train"]
    ds = make_oriented(16, seed=7)
    roots = train_ids[:8] + ds["id"][8:]  # 8 copies of training rows, 8 new rows
    other = save_dir(tmp_path / "copies", test=ds.add_column("root_id", roots))
    code, out, err = run_cli("evaluate", run, other, "--out", tmp_path / "ev")
    assert code == 0, err
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["excluded_seen"] == 8 and metrics["num_examples"] == 8
    # only copies: nothing to score is one line, exit 2
    only = save_dir(tmp_path / "only", test=make_oriented(4, seed=8).add_column("root_id", train_ids[:4]))
    code, out, err = run_cli("evaluate", run, only, "--out", tmp_path / "ev2")
    assert code == 2 and "nothing to score" in err and "4 were training rows" in err and err.count("\n") == 1


def test_a_label_map_can_drop_a_class(trained_run, tmp_path: Path, run_cli) -> None:
    run = trained_run[0]
    bad = save_dir(tmp_path / "bad", test=make_oriented(8, seed=2, names=["angry", "happy", "sad", "contempt"]))
    (tmp_path / "map.yaml").write_text("contempt: null\n")
    code, out, err = run_cli("evaluate", run, bad, "--label-map", tmp_path / "map.yaml", "--out", tmp_path / "ev")
    assert code == 0, err
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["num_examples"] == 6 and metrics["dropped_rows"] == 2 and metrics["dropped_by_class"] == {"contempt": 2}
    assert "left out 2 rows of classes the model cannot output: contempt 2" in err
    assert "2 of classes the model cannot output" in out


def test_cosine_schedule_decays_the_rate_to_zero_over_all_steps() -> None:
    """``schedule="cosine"`` sets the rate before every batch: lr at the first step, about 0 at the last,
    half of lr at the middle; the plateau schedule leaves it at lr while the loss falls; a bad name is refused."""
    import tensorflow as tf

    from ferdata.train import build_model, fit_model

    rng = np.random.default_rng(0)
    x = rng.random((64, 16, 16, 1), dtype=np.float32)
    y = tf.one_hot(rng.integers(0, 4, 64), 4)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)  # 4 steps per epoch, 16 in all
    seen: list[float] = []

    import keras

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            seen.append(float(self.model.optimizer.learning_rate.numpy()))

    model = build_model("tiny-cnn", (16, 16, 1), 4)
    fit_model(model, data, data, epochs=4, lr=0.01, patience=0, progress=None, schedule="cosine", callbacks=[Record()])
    assert len(seen) == 16
    assert seen[0] == pytest.approx(0.01)
    assert seen[8] == pytest.approx(0.005, rel=1e-4)
    assert seen[-1] < 0.0002
    assert all(a > b for a, b in zip(seen, seen[1:], strict=False))
    with pytest.raises(UsageError, match="unknown learning-rate schedule 'linear'; allowed: plateau, cosine"):
        fit_model(build_model("tiny-cnn", (16, 16, 1), 4), data, None, epochs=1, schedule="linear", progress=None)
    from ferdata.train.config import TrainConfig

    with pytest.raises(UsageError, match="allowed: plateau, cosine"):
        TrainConfig(schedule="step")
